/**
 * Stage 3 of 3, storage: `<prefix>.clean` → the bookings table, `<prefix>.dead` → the
 * dead_letters table (the booking example's migrations), in embedded ClickHouse or, with
 * `--clickhouse-url`, on a ClickHouse server (22.2 or later for the booking schema). chDB
 * lets one process hold its data directory, so embedded storage runs as one instance; on
 * a server, start as many as the other stages.
 *
 *   node dist/examples/kafka-topology/store.js --brokers 127.0.0.1:19092 [--clickhouse-url http://host:8123] [--until-idle]   (--help: every option)
 */
import { join, resolve } from 'node:path';
import { map, pipe } from 'rxjs';
import { Option } from 'commander';
import { embeddedClickHouse, migrate, serverClickHouse, parse, Pipeline, toClickHouse, type ClickHouseClient, type DeadLetter, type Envelope, type Sink } from '../../index';
import { quoteIdentifier } from '../../connectors/clickhouse/client';
import { fromKafka } from '../../connectors/kafka';
import { migrationsDir } from '../bookings/paths';
import type { Booking } from '../bookings/schema';
import { ensureTopics, groups, ORIGIN_POSITION, ORIGIN_TIME, originHeaders, parseStage, runUntilStopped, stageCommand, topics } from './topology';

const command = stageCommand('store', 'Stage 3 of 3: reads <prefix>.clean (group <prefix>.store) into the bookings table and <prefix>.dead (group <prefix>.store-dead) into dead_letters, in embedded ClickHouse or, with --clickhouse-url, on a ClickHouse server. Embedded storage runs as one instance.', { consumer: true })
  .addOption(new Option('--clickhouse-url <url>', 'a ClickHouse server (22.2 or later for the booking schema) instead of embedded storage').env('TOPOLOGY_CLICKHOUSE_URL'))
  .addOption(new Option('--clickhouse-path <dir>', 'the embedded ClickHouse data directory (one process at a time)').env('TOPOLOGY_CLICKHOUSE_PATH').default('.tributary/topology'))
  .addOption(new Option('--migrations <dir>', 'another migrations directory with the same tables (e.g. one written for an older server); the origin columns and vendor_quality_exact are then not made').env('TOPOLOGY_MIGRATIONS'));

/** This stage's own migrations (origin columns, counts replays cannot inflate), beside its sources. */
const topologyMigrationsDir = join(resolve(__dirname, __dirname.includes(`${'/'}dist${'/'}`) ? '../../../examples/kafka-topology' : '.'), 'migrations');

/** A record's identity (see `originHeaders`); a message without the headers is its own origin. */
interface Origin {
  origin_position: string;
  origin_time: string;
}

function originOf(envelope: Envelope<unknown>): Origin {
  const headers = originHeaders(envelope);
  return { origin_position: headers[ORIGIN_POSITION]!, origin_time: headers[ORIGIN_TIME]! };
}

/** A dead-letter message back into a row: the payload is the record, the headers say why. */
function letterOf(envelope: Envelope<Uint8Array>): DeadLetter & Origin {
  const h = envelope.meta.headers ?? {};
  const bytes = Buffer.from(envelope.value);
  const text = bytes.toString('utf8');
  const utf8 = Buffer.from(text, 'utf8').equals(bytes);
  return {
    pipeline: h['tributary-pipeline'] ?? '',
    source: h['tributary-source'] ?? '',
    position: h['tributary-position'] ?? envelope.meta.position,
    vendor: h['tributary-vendor'] ?? '',
    stage: h['tributary-stage'] ?? '',
    code: h['tributary-code'] ?? '',
    message: h['tributary-message'] ?? '',
    path: h['tributary-path'] ?? '',
    raw: utf8 ? text : bytes.toString('base64'),
    raw_encoding: utf8 ? 'utf8' : 'base64',
    raw_bytes: Number(h['tributary-raw-bytes'] ?? bytes.length),
    raw_sha256: h['tributary-raw-sha256'] ?? '',
    received_at: h['tributary-received-at'] ?? new Date(envelope.meta.receivedAt).toISOString(),
    failed_at: h['tributary-failed-at'] ?? new Date(envelope.meta.receivedAt).toISOString(),
    ...originOf(envelope),
  };
}

/**
 * `table`'s sink, writing each origin once: before a batch is inserted, the rows whose
 * `origin_position` the table already holds are dropped, and so is a second row of one
 * origin within the batch. A copy of a record made again by normalization after a crash
 * (same origin, new offset in the clean or dead topic) and a batch read again by this
 * stage after a crash (its rows already inserted, or not at all: one insert is one block)
 * then add nothing, so the table and the views it feeds hold one row per origin without
 * FINAL. `keys` are columns of the table's sorting key the lookup narrows by, so it reads
 * the rows of the batch's keys, not the table: for bookings, vendor and booking id (the
 * same in every copy). Dead letters have none a copy shares (`position` is where the copy
 * was read, new when a file is ingested again), so a lookup reads the origin column of
 * dead_letters, a table of refusals kept 30 days. Exact while one writer at a time inserts
 * the copies of an origin: they share a message key, hence a partition, and the pipeline
 * writes its batches one at a time (`sinkConcurrency: 1`).
 */
function oncePerOrigin<R extends Origin>(client: ClickHouseClient, table: 'bookings' | 'dead_letters', keys: readonly (keyof R & string)[], settings: Record<string, number>): Sink<R> {
  const sink = toClickHouse<R>({ client, table, settings });
  // Sent as hex of newline-joined text: bound by the engine, never spliced into the SQL. A
  // value holding a newline only widens the set asked for; what is dropped is decided here.
  const list = (values: Iterable<string>) => Buffer.from([...new Set(values)].join('\n')).toString('hex');
  const inList = (column: string, param: string) => `${quoteIdentifier(column)} IN splitByChar('\\n', unhex({${param}:String}))`;
  const sql = `SELECT DISTINCT origin_position FROM ${quoteIdentifier(table)} WHERE ${[...keys.map((k, i) => inList(k, `k${i}`)), inList('origin_position', 'origins')].join(' AND ')}`;
  return {
    name: sink.name,
    open: () => sink.open!(),
    async write(batch, context) {
      const pending = batch.envelopes.filter((e) => !e.settled);
      if (pending.length === 0) return;
      // A dead letter of this stage's own comes without identity: it takes its record's.
      for (const e of pending) if (e.value.origin_position === undefined) e.map({ ...e.value, ...originOf(e) });
      const params: Record<string, string> = { origins: list(pending.map((e) => e.value.origin_position)) };
      keys.forEach((key, i) => (params[`k${i}`] = list(pending.map((e) => String(e.value[key])))));
      const chunks: Buffer[] = [];
      for await (const chunk of client.stream(sql, { format: 'JSONEachRow', params })) chunks.push(Buffer.from(chunk));
      const stored = new Set(
        Buffer.concat(chunks)
          .toString('utf8')
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => (JSON.parse(line) as { origin_position: string }).origin_position),
      );
      const fresh: Envelope<R>[] = [];
      let bytes = 0;
      for (const envelope of pending) {
        if (stored.has(envelope.value.origin_position)) continue;
        stored.add(envelope.value.origin_position);
        fresh.push(envelope);
        bytes += envelope.bytes;
      }
      if (fresh.length === 0) return;
      await sink.write({ envelopes: fresh, bytes }, context);
    },
  };
}

async function main(): Promise<void> {
  const settings = parseStage(command);
  const options = command.opts<{ clickhouseUrl?: string; clickhousePath: string; migrations?: string }>();
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const clickhouse = options.clickhouseUrl ? serverClickHouse({ url: options.clickhouseUrl }) : embeddedClickHouse({ path: options.clickhousePath });
  await migrate(clickhouse, options.migrations ?? migrationsDir);
  // Another migrations directory (an older server's) has no origin columns: rows keep
  // their origin fields, skipped on insert.
  if (!options.migrations) await migrate(clickhouse, topologyMigrationsDir, { table: 'tributary_topology_migrations' });
  // Without the origin columns, rows cannot be told apart by origin: replays are absorbed at merges (FINAL).
  const exact = !options.migrations;
  const skipUnknown = { input_format_skip_unknown_fields: 1 };
  // What this stage refuses itself (a message it cannot parse, a row ClickHouse refuses)
  // is a dead letter of the record's identity too (the letter keeps the message's headers).
  const deadLetters = exact
    ? (oncePerOrigin<DeadLetter & Origin>(clickhouse, 'dead_letters', [], skipUnknown) as unknown as Sink<DeadLetter>)
    : toClickHouse<DeadLetter>({ client: clickhouse, table: 'dead_letters', settings: skipUnknown });
  const { store: bookingsGroup, storeDead: lettersGroup } = groups(settings.prefix);
  const bookings = new Pipeline<Booking & Origin>({
    name: 'store',
    source: fromKafka({ brokers: settings.brokers, groupId: bookingsGroup, topics: names.clean, fromBeginning: true, ...settings.consumer }),
    transform: pipe(parse(), map((e: Envelope<unknown>) => e.map({ ...(e.value as Booking), ...originOf(e) }))) as never,
    // travellers and segments are not columns of bookings; servers before 23.x refuse
    // unknown fields unless told to skip them.
    sink: exact ? oncePerOrigin<Booking & Origin>(clickhouse, 'bookings', ['vendor', 'booking_id'], skipUnknown) : toClickHouse<Booking & Origin>({ client: clickhouse, table: 'bookings', settings: skipUnknown }),
    deadLetters,
    batch: { rows: 10_000, maxWaitMs: 500 },
    sinkConcurrency: 1,
  });
  const letters = new Pipeline<DeadLetter & Origin>({
    name: 'store-dead',
    source: fromKafka({ brokers: settings.brokers, groupId: lettersGroup, topics: names.dead, fromBeginning: true, ...settings.consumer }),
    transform: map((e: Envelope<Uint8Array>) => e.map(letterOf(e))),
    sink: exact ? oncePerOrigin<DeadLetter & Origin>(clickhouse, 'dead_letters', [], skipUnknown) : toClickHouse<DeadLetter & Origin>({ client: clickhouse, table: 'dead_letters', settings: skipUnknown }),
    deadLetters,
    batch: { rows: 1000, maxWaitMs: 500 },
    sinkConcurrency: 1,
  });
  await runUntilStopped(settings, [
    { name: 'store', pipeline: bookings, groupId: bookingsGroup, topic: names.clean },
    { name: 'store-dead', pipeline: letters, groupId: lettersGroup, topic: names.dead },
  ]);
  const [counts] = await clickhouse.query(`
    SELECT (SELECT count() FROM bookings FINAL) AS bookings, (SELECT count() FROM dead_letters FINAL) AS dead_letters`);
  console.log(`stored: ${JSON.stringify(counts)}`);
  await clickhouse.close();
}

// Exit once stopped: a group join still pending in kafkajs must not hold the process past its drain.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
