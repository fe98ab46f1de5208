import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, TributaryError } from '../../lib/errors';
import { quoteIdentifier, type ClickHouseClient } from './client';
import { clusterForm, clusterOptions, replicatedTables, type ClusterOptions } from './clusterForm';

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

export interface MigrateOptions {
  /** The ledger table of applied versions. @default 'tributary_migrations' */
  table?: string;
  /**
   * Apply the migrations in their cluster form (see `clusterForm`): MergeTree tables become
   * replicated tables on every server of this cluster behind a Distributed table of the
   * migration's name, every statement runs `ON CLUSTER`, and the ledger is one replicated
   * table shared by all servers. The migration files stay written for one server.
   * @default none: one server
   */
  cluster?: string | ClusterOptions;
}

/**
 * Applies the migrations not yet recorded in the `tributary_migrations` table, in
 * version order, and records each. Returns the versions applied now. The third argument
 * is the ledger table's name or {@link MigrateOptions}.
 */
export async function migrate(client: ClickHouseClient, migrations: readonly Migration[] | string, options: string | MigrateOptions = {}): Promise<number[]> {
  const { table = 'tributary_migrations', cluster: clusterOption } = typeof options === 'string' ? { table: options } : options;
  const cluster = clusterOption === undefined ? undefined : clusterOptions(clusterOption);
  const list = typeof migrations === 'string' ? await loadMigrations(migrations) : [...migrations].sort((a, b) => a.version - b.version);
  const ledger = quoteIdentifier(table);
  await client.exec(
    cluster
      ? // One ledger replicated to every server of every shard, so any of them knows what was applied.
        `CREATE TABLE IF NOT EXISTS ${ledger} ON CLUSTER ${cluster.name} (version UInt32, name String, applied_at DateTime) ENGINE = ReplicatedMergeTree('/clickhouse/tributary/${table}', '{shard}-{replica}') ORDER BY version`
      : `CREATE TABLE IF NOT EXISTS ${ledger} (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version`,
  );
  const done = new Set((await client.query<{ version: number }>(`SELECT version FROM ${ledger}`)).map((r) => Number(r.version)));
  const replicated = cluster ? replicatedTables(list.flatMap((m) => statementsOf(m.sql))) : new Set<string>();
  const applied: number[] = [];
  for (const migration of list) {
    if (done.has(migration.version)) continue;
    // Translated before anything runs, so a statement the cluster form refuses applies nothing of its migration.
    const statements = statementsOf(migration.sql).flatMap((s) => (cluster ? clusterForm(s, replicated, cluster) : [s]));
    for (const statement of statements) {
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
