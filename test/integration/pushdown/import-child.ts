/**
 * The importing process of the bulk import crash test: imports an NDJSON file into its
 * own embedded ClickHouse directory, or reports what that directory holds.
 *
 *   node import-child.js import <file> <chdb dir>   a line of JSON per chunk, then the result
 *   node import-child.js count <chdb dir>           plain count() and distinct counts of the tables
 */
import { join } from 'node:path';
import { embeddedClickHouse, migrate } from '../../../index';
import { bookingTransform } from '../../../examples/bookings/pipeline';
import { migrationsDir } from '../../../examples/bookings/paths';
import { bulkImport } from '../../../pushdown/import';
import { globetrekPlan } from '../../fixtures/globetrekPlan';

// A plain MergeTree: no merge, in the background or by FINAL, folds a row stored twice.
const TABLE = `CREATE TABLE IF NOT EXISTS crash_bookings AS bookings ENGINE = MergeTree ORDER BY (vendor, booking_id) SETTINGS non_replicated_deduplication_window = 10000`;

async function main(): Promise<void> {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'count') {
    const clickhouse = embeddedClickHouse({ path: args[0]! });
    const [rows] = await clickhouse.query<Record<string, string>>(`SELECT count() AS rows, uniqExact(booking_id) AS bookings FROM crash_bookings`);
    const [letters] = await clickhouse.query<Record<string, string>>(`SELECT uniqExact(position) AS positions FROM dead_letters`);
    process.stdout.write(JSON.stringify({ rows: Number(rows!.rows), bookings: Number(rows!.bookings), deadLetterPositions: Number(letters!.positions) }) + '\n');
    await clickhouse.close();
    return;
  }
  const [file, dir] = args as [string, string];
  const clickhouse = embeddedClickHouse({ path: dir });
  await migrate(clickhouse, migrationsDir);
  await clickhouse.exec(TABLE);
  const result = await bulkImport({
    client: clickhouse,
    files: [file],
    table: 'crash_bookings',
    plan: globetrekPlan,
    transform: bookingTransform(),
    vendor: 'globetrek',
    name: 'bookings',
    chunkBytes: 1024 * 1024,
    maxRecordBytes: 256 * 1024,
    // Beside the store: the chunk files a killed run leaves go when the test removes its directory.
    tempDir: join(dir, '..'),
    progressEveryMs: 0,
    onProgress: (progress) => process.stdout.write(JSON.stringify({ progress }) + '\n'),
  });
  process.stdout.write(JSON.stringify({ result }) + '\n');
  await clickhouse.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
