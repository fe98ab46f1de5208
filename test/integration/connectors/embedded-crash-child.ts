/**
 * The process of the embedded crash spec: opens one embedded store, makes its table, runs
 * the inserts asked for, and prints what the table holds and what opening the store logged.
 *
 *   node embedded-crash-child.js <chdb dir> '<Job as JSON>'
 *       prints {"count","sum","warnings":[{message, fields}]}
 */
import { embeddedClickHouse } from '../../../connectors/clickhouse';
import { quoteName } from '../../../lib/store';
import type { LogFields } from '../../../lib/logger';

export interface Job {
  database: string;
  table: string;
  /** Each inserts the 10 rows `n = from … from + 9` with this token. */
  inserts: { from: number; token: string }[];
  /** Merges the table's parts into one once the inserts are in. */
  optimize?: boolean;
}

async function main(): Promise<void> {
  const [dir, json] = process.argv.slice(2);
  const job = JSON.parse(json!) as Job;
  const warnings: { message: string; fields?: LogFields }[] = [];
  const logger = { debug() {}, info() {}, error() {}, warn: (message: string, fields?: LogFields) => warnings.push({ message, ...(fields && { fields }) }) };
  const clickhouse = embeddedClickHouse({ path: dir!, logger });
  const table = `${quoteName(job.database)}.${quoteName(job.table)}`;
  await clickhouse.exec(`CREATE DATABASE IF NOT EXISTS ${quoteName(job.database)}`);
  await clickhouse.exec(`CREATE TABLE IF NOT EXISTS ${table} (n UInt32) ENGINE = MergeTree ORDER BY n SETTINGS non_replicated_deduplication_window = 1000`);
  for (const { from, token } of job.inserts) {
    // Rows inline: the driver's insert() takes plain names only, and this table's are not.
    const rows = Array.from({ length: 10 }, (_, i) => `{"n":${from + i}}`).join('\n');
    await clickhouse.exec(`INSERT INTO ${table} SETTINGS insert_deduplication_token = '${token}' FORMAT JSONEachRow\n${rows}`);
  }
  if (job.optimize) await clickhouse.exec(`OPTIMIZE TABLE ${table} FINAL`);
  const [counted] = await clickhouse.query<{ count: string; sum: string }>(`SELECT count() AS count, sum(n) AS sum FROM ${table}`);
  process.stdout.write(JSON.stringify({ count: Number(counted!.count), sum: Number(counted!.sum), warnings }) + '\n');
  await clickhouse.close();
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
