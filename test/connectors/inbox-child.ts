/**
 * The ingesting process of the inbox crash test: reads an inbox into its own embedded
 * ClickHouse directory, or reports what that directory holds.
 *
 *   node inbox-child.js ingest <inbox> <chdb dir> [checkpointMs] [slowMs]   prints its stats when done
 *   node inbox-child.js count <chdb dir> [after]             prints the tables' counts, with plain count(); with
 *                                                            `after`, also the rows of records past that one
 */
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromInbox } from '../../connectors/files';
import type { Envelope } from '../../lib/envelope';
import { Pipeline } from '../../lib/pipeline';
import type { Batch, Sink, WriteContext } from '../../lib/sink';

// Plain MergeTrees, not the ReplacingMergeTrees real tables would be: no merge, in the
// background or by FINAL, folds a row written twice, so count() shows every repeat.
const TABLE = `
CREATE TABLE IF NOT EXISTS inbox_rows
(
    position String,
    file     String,
    record   UInt64,
    ref      String,
    n        UInt64
)
ENGINE = MergeTree
ORDER BY position
SETTINGS non_replicated_deduplication_window = 10000`;

const DEAD_LETTERS = `
CREATE TABLE IF NOT EXISTS dead_letters
(
    pipeline String, source String, position String, vendor String, stage String, code String,
    message String, path String, raw String, raw_encoding String,
    received_at DateTime64(3, 'UTC'), failed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (pipeline, source, position)
SETTINGS non_replicated_deduplication_window = 10000`;

/** Slows each write so the parent can kill the process mid-file. */
function slowed<T>(sink: Sink<T>, ms: number): Sink<T> {
  return {
    name: sink.name,
    open: () => sink.open?.() ?? Promise.resolve(),
    async write(batch: Batch<T>, context: WriteContext) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      await sink.write(batch, context);
    },
    close: () => sink.close?.() ?? Promise.resolve(),
  };
}

async function main(): Promise<void> {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'count') {
    const clickhouse = embeddedClickHouse({ path: args[0]! });
    const after = Number(args[1] ?? 0);
    const [row] = await clickhouse.query<Record<string, string>>(`
      SELECT (SELECT count() FROM inbox_rows) AS raw,
             (SELECT uniqExact(record) FROM inbox_rows) AS records,
             (SELECT min(record) FROM inbox_rows) AS first,
             (SELECT max(record) FROM inbox_rows) AS last,
             (SELECT countIf(record > ${after}) FROM inbox_rows) AS past,
             (SELECT count() FROM dead_letters) AS dead_letters,
             (SELECT uniqExact(position) FROM dead_letters) AS dead_letter_positions`);
    await clickhouse.close();
    process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(row!).map(([k, v]) => [k, Number(v)]))) + '\n');
    return;
  }
  const [inbox, path, checkpointMs, slowMs] = args;
  const clickhouse = embeddedClickHouse({ path: path! });
  await clickhouse.exec(TABLE);
  await clickhouse.exec(DEAD_LETTERS);
  const sink = toClickHouse<Record<string, unknown>>({ client: clickhouse, table: 'inbox_rows' });
  const pipeline = new Pipeline({
    name: 'inbox-crash',
    source: fromInbox({ dir: inbox!, once: true, checkpointMs: Number(checkpointMs ?? 10) }),
    transform: map((e: Envelope<any>) => e.map({ position: e.meta.position, file: e.meta.file, record: e.meta.record, ref: e.value.ref, n: Number(e.value.n) })),
    sink: slowMs ? slowed(sink, Number(slowMs)) : sink,
    deadLetters: toClickHouse({ client: clickhouse, table: 'dead_letters' }),
    batch: { rows: 500, maxWaitMs: 1000 },
    inFlight: { records: 2000 },
  });
  const stats = await pipeline.run();
  await clickhouse.close();
  process.stdout.write(JSON.stringify(stats) + '\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
