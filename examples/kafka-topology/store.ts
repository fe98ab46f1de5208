/**
 * Stage 3 of 3, storage: `<prefix>.clean` → the bookings table, `<prefix>.dead` → the
 * dead_letters table (the booking example's migrations), in embedded ClickHouse or, with
 * `--clickhouse-url`, on a ClickHouse server (22.2 or later for the booking schema). chDB
 * lets one process hold its data directory, so embedded storage runs as one instance; on
 * a server, start as many as the other stages.
 *
 *   node dist/examples/kafka-topology/store.js --brokers 127.0.0.1:19092 [--clickhouse-url http://host:8123] [--until-idle]
 *   (TOPOLOGY_CLICKHOUSE_PATH picks the embedded data directory; default .tributary/topology;
 *   TOPOLOGY_CLICKHOUSE_URL is the same as --clickhouse-url; TOPOLOGY_MIGRATIONS names another
 *   migrations directory with the same tables, e.g. one written for an older server)
 */
import { map } from 'rxjs';
import { embeddedClickHouse, migrate, serverClickHouse, parse, Pipeline, toClickHouse, type DeadLetter, type Envelope } from '../../index';
import { fromKafka } from '../../connectors/kafka';
import { migrationsDir } from '../bookings/paths';
import type { Booking } from '../bookings/schema';
import { ensureTopics, runUntilStopped, settingsFromArgs, topics } from './topology';

/** A dead-letter message back into a row: the payload is the record, the headers say why. */
function letterOf(envelope: Envelope<Uint8Array>): DeadLetter {
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
  };
}

async function main(): Promise<void> {
  const settings = settingsFromArgs();
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const flag = process.argv.indexOf('--clickhouse-url');
  const url = flag >= 0 ? process.argv[flag + 1] : process.env.TOPOLOGY_CLICKHOUSE_URL;
  const clickhouse = url ? serverClickHouse({ url }) : embeddedClickHouse({ path: process.env.TOPOLOGY_CLICKHOUSE_PATH ?? '.tributary/topology' });
  await migrate(clickhouse, process.env.TOPOLOGY_MIGRATIONS ?? migrationsDir);
  const deadLetters = toClickHouse<DeadLetter>({ client: clickhouse, table: 'dead_letters' });
  const bookingsGroup = `${settings.prefix}.store`;
  const lettersGroup = `${settings.prefix}.store-dead`;
  const bookings = new Pipeline<Booking>({
    name: 'store',
    source: fromKafka({ brokers: settings.brokers, groupId: bookingsGroup, topics: names.clean, fromBeginning: true }),
    transform: parse() as never,
    // travellers and segments are not columns of bookings; servers before 23.x refuse
    // unknown fields unless told to skip them.
    sink: toClickHouse<Booking>({ client: clickhouse, table: 'bookings', settings: { input_format_skip_unknown_fields: 1 } }),
    deadLetters,
    batch: { rows: 10_000, maxWaitMs: 500 },
  });
  const letters = new Pipeline<DeadLetter>({
    name: 'store-dead',
    source: fromKafka({ brokers: settings.brokers, groupId: lettersGroup, topics: names.dead, fromBeginning: true }),
    transform: map((e: Envelope<Uint8Array>) => e.map(letterOf(e))),
    sink: deadLetters,
    deadLetters,
    batch: { rows: 1000, maxWaitMs: 500 },
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

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
