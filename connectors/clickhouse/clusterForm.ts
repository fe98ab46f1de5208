import { ConfigError } from '../../lib/errors';

/** How `migrate` writes migrations for a ClickHouse cluster (`migrate(client, dir, { cluster })`). */
export interface ClusterOptions {
  /** The cluster's name, as in the servers' `remote_servers`. */
  name: string;
  /**
   * ZooKeeper path under which each replicated table keeps its replicas' state; the
   * table's name is appended. Use one per database. @default '/clickhouse/tables/{shard}'
   */
  zooKeeperPath?: string;
  /** Suffix of the replicated table on each server; the Distributed table keeps the migration's name. @default '_local' */
  localSuffix?: string;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const NAME = '((?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)(?:\\.(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*))?)';
const CREATE_TABLE = new RegExp(`^CREATE\\s+TABLE\\s+(IF\\s+NOT\\s+EXISTS\\s+)?${NAME}\\s*(\\([\\s\\S]*\\))\\s*ENGINE\\s*=\\s*([A-Za-z]*)(\\s*\\(([^()]*(?:\\([^()]*\\)[^()]*)*)\\))?([\\s\\S]*)$`, 'i');
const CREATE_VIEW = new RegExp(`^CREATE\\s+(MATERIALIZED\\s+)?VIEW\\s+(IF\\s+NOT\\s+EXISTS\\s+)?${NAME}([\\s\\S]*)$`, 'i');
const ALTER_TABLE = new RegExp(`^ALTER\\s+TABLE\\s+${NAME}([\\s\\S]*)$`, 'i');
const MERGE_TREES = new Set(['MergeTree', 'ReplacingMergeTree', 'SummingMergeTree', 'AggregatingMergeTree', 'CollapsingMergeTree', 'VersionedCollapsingMergeTree']);

/** Checks cluster options; returns them with defaults filled in. */
export function clusterOptions(cluster: string | ClusterOptions): Required<ClusterOptions> {
  const options = typeof cluster === 'string' ? { name: cluster } : cluster;
  if (typeof options?.name !== 'string' || !IDENTIFIER.test(options.name)) throw new ConfigError(`cluster name must be an identifier, got ${JSON.stringify(options?.name)}`);
  const zooKeeperPath = options.zooKeeperPath ?? '/clickhouse/tables/{shard}';
  if (!/^\/[A-Za-z0-9_{}./-]*$/.test(zooKeeperPath)) throw new ConfigError(`zooKeeperPath must be an absolute path of letters, digits, _ - . / and {macros}, got ${JSON.stringify(zooKeeperPath)}`);
  const localSuffix = options.localSuffix ?? '_local';
  if (!/^[A-Za-z0-9_]+$/.test(localSuffix)) throw new ConfigError(`localSuffix must be letters, digits and _, got ${JSON.stringify(localSuffix)}`);
  return { name: options.name, zooKeeperPath: zooKeeperPath.replace(/\/$/, ''), localSuffix };
}

/** The tables of a set of statements that the cluster form turns into replicated local tables plus a Distributed table. */
export function replicatedTables(statements: readonly string[]): Set<string> {
  const names = new Set<string>();
  for (const statement of statements) {
    const m = CREATE_TABLE.exec(statement);
    if (m && MERGE_TREES.has(m[4]!)) names.add(unquote(m[2]!));
  }
  return names;
}

/**
 * One single-server statement in its cluster form, as one or more statements:
 * - `CREATE TABLE t … ENGINE = XMergeTree(args) …` becomes `t_local`, a
 *   `ReplicatedXMergeTree('<zooKeeperPath>/t_local', '{replica}', args)` on every server
 *   (`ON CLUSTER`), and `t`, a `Distributed` table over them sharded by
 *   `cityHash64(<sorting key>)`, so every version of a row lands on the same shard and
 *   `FINAL` still sees them together. Clients keep reading and writing `t`.
 * - other `CREATE TABLE`s and plain views: the same statement `ON CLUSTER`;
 * - materialized views `ON CLUSTER`, reading from and writing to the local tables (a
 *   materialized view sees the inserts made on its own server);
 * - `ALTER TABLE` of a table that is not replicated: `ON CLUSTER`.
 * Anything else (an `ALTER` of a replicated table, `INSERT`, `DROP`, …) is refused with a
 * ConfigError rather than guessed at: write that migration for the cluster by hand.
 *
 * @param statement One statement, without its `;`.
 * @param replicated The names {@link replicatedTables} found in all the migrations.
 */
export function clusterForm(statement: string, replicated: ReadonlySet<string>, cluster: Required<ClusterOptions>): string[] {
  const on = `ON CLUSTER ${cluster.name}`;
  const local = (name: string) => `${name}${cluster.localSuffix}`;
  const table = CREATE_TABLE.exec(statement);
  if (table) {
    const [, ifNotExists = '', rawName, columns, engine, , args, rest] = table as unknown as string[];
    const name = unquote(rawName!);
    if (/^Replicated/i.test(engine!) || engine === 'Distributed') throw new ConfigError(`the cluster form is made from single-server migrations; ${name} already uses ${engine}`);
    if (!MERGE_TREES.has(engine!)) return [statement.replace(CREATE_TABLE, (all) => all.replace(rawName!, `${rawName} ${on}`))];
    const replicatedArgs = [`'${cluster.zooKeeperPath}/${local(name)}'`, `'{replica}'`, ...(args?.trim() ? [args.trim()] : [])].join(', ');
    return [
      `CREATE TABLE ${ifNotExists}${local(name)} ${on} ${columns} ENGINE = Replicated${engine}(${replicatedArgs})${rest}`,
      `CREATE TABLE ${ifNotExists}${name} ${on} AS ${local(name)} ENGINE = Distributed(${cluster.name}, ${name.includes('.') ? name.split('.')[0] : 'currentDatabase()'}, ${local(name).split('.').pop()}, ${shardingKey(rest!)})`,
    ];
  }
  const view = CREATE_VIEW.exec(statement);
  if (view) {
    const [, materialized, ifNotExists = '', rawName, rest] = view as unknown as string[];
    let body = rest!;
    if (materialized) {
      // Its source and target are the replicated tables of this server, not the Distributed ones.
      body = body.replace(/\b(TO|FROM)\s+([A-Za-z_][A-Za-z0-9_.]*)/gi, (all, word: string, target: string) => (replicated.has(target) ? `${word} ${local(target)}` : all));
    }
    return [`CREATE ${materialized ?? ''}VIEW ${ifNotExists}${rawName} ${on}${body}`];
  }
  const alter = ALTER_TABLE.exec(statement);
  if (alter) {
    const name = unquote(alter[1]!);
    if (replicated.has(name)) throw new ConfigError(`the cluster form cannot translate an ALTER of the replicated table ${name} (its local and Distributed tables both need it): write it for the cluster`);
    return [`ALTER TABLE ${alter[1]} ${on}${alter[2]}`];
  }
  throw new ConfigError(`the cluster form translates CREATE TABLE, CREATE [MATERIALIZED] VIEW and ALTER TABLE; got: ${statement.slice(0, 80)}`);
}

/** `cityHash64` of the ORDER BY key, so rows with one key share a shard; rand() without one. */
function shardingKey(rest: string): string {
  const order = /\bORDER\s+BY\s+(\(([^()]*(?:\([^()]*\)[^()]*)*)\)|[A-Za-z_][A-Za-z0-9_]*(?:\([^()]*\))?)/i.exec(rest);
  if (!order) return 'rand()';
  const key = (order[2] ?? order[1]!).trim();
  return key === '' || /^tuple\(\s*\)$/i.test(key) ? 'rand()' : `cityHash64(${key})`;
}

function unquote(name: string): string {
  return name.replace(/`/g, '');
}
