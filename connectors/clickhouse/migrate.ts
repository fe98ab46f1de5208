import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, TributaryError } from '../../lib/errors';
import { quoteIdentifier, type ClickHouseClient } from './client';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * Reads `NNN_name.sql` files from a directory, ordered by version. Statements within a
 * file are separated by a `;` at the end of a line.
 */
export async function loadMigrations(directory: string): Promise<Migration[]> {
  const migrations: Migration[] = [];
  for (const file of (await readdir(directory)).sort()) {
    if (!file.endsWith('.sql')) continue;
    const match = /^(\d+)_(.+)\.sql$/.exec(file);
    if (!match) throw new ConfigError(`migration file names must look like 001_name.sql, got ${file}`);
    migrations.push({ version: Number(match[1]), name: match[2]!, sql: await readFile(join(directory, file), 'utf8') });
  }
  const seen = new Set<number>();
  for (const m of migrations) {
    if (seen.has(m.version)) throw new ConfigError(`two migrations have version ${m.version}`);
    seen.add(m.version);
  }
  return migrations.sort((a, b) => a.version - b.version);
}

/**
 * Applies the migrations not yet recorded in the `tributary_migrations` table, in
 * version order, and records each. Returns the versions applied now.
 */
export async function migrate(client: ClickHouseClient, migrations: readonly Migration[] | string, table = 'tributary_migrations'): Promise<number[]> {
  const list = typeof migrations === 'string' ? await loadMigrations(migrations) : [...migrations].sort((a, b) => a.version - b.version);
  const ledger = quoteIdentifier(table);
  await client.exec(`CREATE TABLE IF NOT EXISTS ${ledger} (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version`);
  const done = new Set((await client.query<{ version: number }>(`SELECT version FROM ${ledger}`)).map((r) => Number(r.version)));
  const applied: number[] = [];
  for (const migration of list) {
    if (done.has(migration.version)) continue;
    for (const statement of statementsOf(migration.sql)) {
      try {
        await client.exec(statement);
      } catch (cause) {
        throw new TributaryError(`migration ${migration.version}_${migration.name} failed: ${(cause as Error).message}`, { code: 'MIGRATION', cause });
      }
    }
    await client.insert(table, Buffer.from(JSON.stringify({ version: migration.version, name: migration.name, applied_at: Math.floor(Date.now() / 1000) }) + '\n'), {});
    applied.push(migration.version);
  }
  return applied;
}

function statementsOf(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');
}
