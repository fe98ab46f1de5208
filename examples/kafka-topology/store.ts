/**
 * Stage 3 of 3, storage: `<prefix>.clean` → the bookings table, `<prefix>.dead` → the
 * dead_letters table (the booking example's migrations), in embedded ClickHouse or, with
 * `--clickhouse-url`, on a ClickHouse server (22.2 or later for the booking schema). chDB
 * lets one process hold its data directory, so embedded storage runs as one instance; on
 * a server, start as many as the other stages.
 *
 *   node dist/examples/kafka-topology/store.js --brokers 127.0.0.1:19092 [--clickhouse-url http://host:8123] [--until-idle]   (--help: every option)
 */
import { map, pipe } from 'rxjs';
import { Option } from 'commander';
import { embeddedClickHouse, migrate, serverClickHouse, parse, Pipeline, toClickHouse, type DeadLetter, type Envelope, type Sink } from '../../index';
import { fromKafka } from '../../connectors/kafka';
import { migrationsDir } from '../bookings/paths';
import type { Booking } from '../bookings/schema';
import { oncePerOrigin, originOf, topologyMigrationsDir, type Origin } from './oncePerOrigin';
import { ensureTopics, groups, parseStage, runUntilStopped, stageCommand, topics } from './topology';

const command = stageCommand('store', 'Stage 3 of 3: reads <prefix>.clean (group <prefix>.store) into the bookings table and <prefix>.dead (group <prefix>.store-dead) into dead_letters, in embedded ClickHouse or, with --clickhouse-url, on a ClickHouse server. Embedded storage runs as one instance.', { consumer: true })
  .addOption(new Option('--clickhouse-url <url>', 'a ClickHouse server (22.2 or later for the booking schema) instead of embedded storage').env('TOPOLOGY_CLICKHOUSE_URL'))
  .addOption(new Option('--clickhouse-path <dir>', 'the embedded ClickHouse data directory (one process at a time)').env('TOPOLOGY_CLICKHOUSE_PATH').default('.tributary/topology'))
  .addOption(new Option('--migrations <dir>', 'another migrations directory with the same tables (e.g. one written for an older server); the origin columns and vendor_quality_exact are then not made').env('TOPOLOGY_MIGRATIONS'));


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

/** Rows of a batch of bookings and of dead letters: also where their sources cut batches for a replay. */
const BOOKING_ROWS = 10_000;
const LETTER_ROWS = 1000;

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
  // Batches cut where a crashed reader cut them: a batch read again carries its insert token (see oncePerOrigin).
  const cleanSource = fromKafka({ brokers: settings.brokers, groupId: bookingsGroup, topics: names.clean, fromBeginning: true, ...settings.consumer, batchAlignment: BOOKING_ROWS });
  const deadSource = fromKafka({ brokers: settings.brokers, groupId: lettersGroup, topics: names.dead, fromBeginning: true, ...settings.consumer, batchAlignment: LETTER_ROWS });
  const replayedFrom = (source: typeof cleanSource) => (first: Envelope<unknown>) => source.replayedBatch?.(first as Envelope<Uint8Array>) !== undefined;
  const bookings = new Pipeline<Booking & Origin>({
    name: 'store',
    source: cleanSource,
    transform: pipe(parse(), map((e: Envelope<unknown>) => e.map({ ...(e.value as Booking), ...originOf(e) }))) as never,
    // travellers and segments are not columns of bookings; servers before 23.x refuse
    // unknown fields unless told to skip them.
    sink: exact ? oncePerOrigin<Booking & Origin>(clickhouse, 'bookings', ['vendor', 'booking_id'], skipUnknown, replayedFrom(cleanSource)) : toClickHouse<Booking & Origin>({ client: clickhouse, table: 'bookings', settings: skipUnknown }),
    deadLetters,
    batch: { rows: BOOKING_ROWS, maxWaitMs: 500 },
    sinkConcurrency: 1,
  });
  const letters = new Pipeline<DeadLetter & Origin>({
    name: 'store-dead',
    source: deadSource,
    transform: map((e: Envelope<Uint8Array>) => e.map(letterOf(e))),
    sink: exact ? oncePerOrigin<DeadLetter & Origin>(clickhouse, 'dead_letters', [], skipUnknown, replayedFrom(deadSource)) : toClickHouse<DeadLetter & Origin>({ client: clickhouse, table: 'dead_letters', settings: skipUnknown }),
    deadLetters,
    batch: { rows: LETTER_ROWS, maxWaitMs: 500 },
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
