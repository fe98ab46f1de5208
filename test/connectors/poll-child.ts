/**
 * The polling process of the poller crash test: polls the fake vendor API into its own
 * embedded ClickHouse directory, or reports what that directory holds.
 *
 *   node poll-child.js poll <chdb dir> <api url> <cursor file>   prints its stats when the sync is done
 *   node poll-child.js count <chdb dir>                          prints the table's counts, with plain count()
 */
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromPoll } from '../../connectors/poll';
import type { Envelope } from '../../lib/envelope';
import { Pipeline } from '../../lib/pipeline';

// A plain MergeTree, not the ReplacingMergeTree(updated_at) a real table would be: no
// merge folds a row written twice, so count() shows every write the poller made.
const TABLE = `
CREATE TABLE IF NOT EXISTS bookings
(
    id         String,
    updated_at DateTime64(3, 'UTC'),
    price      Float64
)
ENGINE = MergeTree
ORDER BY id`;

async function main(): Promise<void> {
  const [mode, path, url, cursorFile] = process.argv.slice(2);
  const clickhouse = embeddedClickHouse({ path: path! });
  if (mode === 'count') {
    const [row] = await clickhouse.query<Record<string, string>>(`
      SELECT (SELECT count() FROM bookings) AS raw,
             (SELECT uniqExact(id) FROM bookings) AS ids,
             (SELECT min(id) FROM bookings) AS first,
             (SELECT max(id) FROM bookings) AS last`);
    await clickhouse.close();
    process.stdout.write(JSON.stringify(row) + '\n');
    return;
  }
  await clickhouse.exec(TABLE);
  const source = fromPoll({
    vendor: 'acme',
    url: url!,
    pagination: { type: 'cursor', next: 'next_cursor' },
    key: 'id',
    watermark: { param: 'updated_since', field: 'updated_at' },
    headers: { authorization: 'Bearer vendor-token' },
    requestsPerSecond: 100,
    cursorFile: cursorFile!,
    once: true,
    retry: { initialDelayMs: 10, maxDelayMs: 200 },
  });
  const pipeline = new Pipeline({
    name: 'poll-crash',
    source,
    transform: map((e: Envelope<any>) => e.map({ id: e.value.id, updated_at: e.value.updated_at, price: e.value.price ?? e.value.amount })),
    sink: toClickHouse({ client: clickhouse, table: 'bookings' }),
    deadLetters: toClickHouse({ client: clickhouse, table: 'bookings' }),
    batch: { rows: 120, maxWaitMs: 50 },
  });
  const stats = await pipeline.run();
  await clickhouse.close();
  process.stdout.write(JSON.stringify({ ...stats, poll: source.stats }) + '\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
