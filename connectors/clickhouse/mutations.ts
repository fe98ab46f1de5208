import { TributaryError } from '../../lib/errors';
import { sleep } from '../../lib/sleep';
import { quoteIdentifier, type ClickHouseClient } from './client';

/** What the server can do, read from its version once per client. */
export interface ClickHouseFeatures {
  version: string;
  /** `DELETE FROM … WHERE` (lightweight delete), 23.3 and later. */
  lightweightDelete: boolean;
  /** Table and column TTL, 19.6 and later. */
  ttl: boolean;
  /** The `mutations_sync` setting, 19.11 and later (older servers are polled). */
  mutationsSync: boolean;
}

const features = new WeakMap<ClickHouseClient, Promise<ClickHouseFeatures>>();

/** Reads (once per client) what the server supports: deletes, TTL, synchronous mutations. */
export function clickhouseFeatures(client: ClickHouseClient): Promise<ClickHouseFeatures> {
  let known = features.get(client);
  if (!known) {
    known = client.query<{ v: string }>('SELECT version() AS v').then(([row]) => {
      const version = row?.v ?? '0';
      return { version, lightweightDelete: atLeast(version, 23, 3), ttl: atLeast(version, 19, 6), mutationsSync: atLeast(version, 19, 11) };
    });
    known.catch(() => features.delete(client));
    features.set(client, known);
  }
  return known;
}

/** A ClickHouse string literal. */
export function literal(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * Deletes the rows matching `where` and resolves once they are gone for readers:
 * lightweight `DELETE FROM` where the server has it, else `ALTER TABLE … DELETE` waited
 * for. `physical` forces the mutation, which rewrites the parts instead of masking rows:
 * for key material, whose bytes must leave the table's live data.
 */
export async function deleteRows(client: ClickHouseClient, table: string, where: string, options: { physical?: boolean } = {}): Promise<void> {
  const can = await clickhouseFeatures(client);
  if (can.lightweightDelete && !options.physical) {
    await client.exec(`DELETE FROM ${quoteIdentifier(table)} WHERE ${where} SETTINGS lightweight_deletes_sync = 2`);
    return;
  }
  await mutate(client, table, `DELETE WHERE ${where}`);
}

/** `ALTER TABLE … UPDATE` of the rows matching `where`, resolved once applied. */
export async function updateRows(client: ClickHouseClient, table: string, assignments: string, where: string): Promise<void> {
  await mutate(client, table, `UPDATE ${assignments} WHERE ${where}`);
}

async function mutate(client: ClickHouseClient, table: string, command: string): Promise<void> {
  const can = await clickhouseFeatures(client);
  const settings = can.mutationsSync ? ' SETTINGS mutations_sync = 2' : '';
  await client.exec(`ALTER TABLE ${quoteIdentifier(table)} ${command}${settings}`);
  if (can.mutationsSync) return;
  // Old servers run mutations in the background: wait until none of this table's is pending.
  const [database, name] = table.includes('.') ? table.split('.') : [undefined, table];
  const where = `${database ? `database = ${literal(database)}` : 'database = currentDatabase()'} AND table = ${literal(name!)} AND is_done = 0`;
  for (let waited = 0; ; waited += 50) {
    const [row] = await client.query<{ n: string | number }>(`SELECT count() AS n FROM system.mutations WHERE ${where}`);
    if (Number(row?.n ?? 0) === 0) return;
    if (waited > 120_000) throw new TributaryError(`mutation on ${table} did not finish within 120 s`, { code: 'MUTATION_TIMEOUT', retriable: true });
    await sleep(50);
  }
}

function atLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}
