/**
 * The polling process of the poller crash test: polls the fake vendor API into its own
 * embedded ClickHouse directory, or reports what that directory holds.
 *
 *   node poll-child.js poll <chdb dir> <api url> <cursor file>   prints its stats when the sync is done
 *   node poll-child.js count <chdb dir>                          prints the table's counts (and merges it)
 */
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromPoll } from '../../connectors/poll';
import type { Envelope } from '../../lib/envelope';
import { Pipeline } from '../../lib/pipeline';

const TABLE = `
CREATE TABLE IF NOT EXISTS bookings
(
    id         String,
    updated_at DateTime64(3, 'UTC'),
    price      Float64
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id`;

async function main(): Promise<void> {
  const [mode, path, url, cursorFile] = process.argv.slice(2);
  const clickhouse = embeddedClickHouse({ path: path! });
  if (mode === 'count') {
    const [row] = await clickhouse.query<Record<string, string>>(`
      SELECT (SELECT count() FROM bookings) AS raw,
             (SELECT count() FROM bookings FINAL) AS final,
             (SELECT uniqExact(id) FROM bookings) AS ids,
             (SELECT min(id) FROM bookings) AS first,
             (SELECT max(id) FROM bookings) AS last`);
    // Then let ReplacingMergeTree merge everything: what is left is one row per id.
    await clickhouse.exec('OPTIMIZE TABLE bookings FINAL');
    const [merged] = await clickhouse.query<{ n: string }>('SELECT toString(count()) AS n FROM bookings');
    await clickhouse.close();
    process.stdout.write(JSON.stringify({ ...row, merged: merged!.n }) + '\n');
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
