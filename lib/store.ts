/**
 * The store's contract: what the pipeline's ClickHouse sink, migrations, queries and the
 * Redis cache's read-through need of a ClickHouse connection, embedded or server
 * (implemented in connectors/clickhouse).
 */

/** How {@link ClickHouseClient.stream} runs a read. */
export interface StreamQueryOptions {
  /** A ClickHouse output format: `TabSeparated`, `JSONEachRow`, `RowBinary`, `Native`, `Parquet`, … */
  format: string;
  /** Values for the query's `{name:Type}` placeholders, as text (as `param_<name>` in ClickHouse's HTTP interface). */
  params?: Readonly<Record<string, string>>;
  /** Cancels the query. */
  signal?: AbortSignal;
}

/** What the ClickHouse sink, migrations and queries need of a ClickHouse connection. */
export interface ClickHouseClient {
  /** `embedded` (chDB in this process) or `http` (a ClickHouse server). */
  readonly kind: 'embedded' | 'http';
  /** Runs a statement that returns no rows (DDL, INSERT … SELECT). */
  exec(sql: string): Promise<void>;
  /** Runs a SELECT and returns its rows. */
  query<R = Record<string, unknown>>(sql: string): Promise<R[]>;
  /** Runs a SELECT and returns its result as text in a ClickHouse output `format`. */
  queryText(sql: string, format: string): Promise<string>;
  /**
   * Runs a read and yields its result as raw bytes in an output `format`, chunk by chunk,
   * so memory stays flat for any result size. `params` fill `{name:Type}` placeholders (bound
   * by the engine, never spliced into the text). Aborting `signal` cancels the query; on the
   * embedded store the stream then ends once the engine has stopped it. There a stream runs
   * beside inserts instead of queueing them behind itself.
   */
  stream(sql: string, options: StreamQueryOptions): AsyncIterable<Uint8Array>;
  /**
   * Inserts rows already serialized: JSONEachRow (one object per line), or with `columns`
   * JSONCompactEachRow (one array per line: the values of `columns`, in their order), for a
   * client whose `readsCompactRows` says so.
   */
  insert(table: string, rows: Buffer, settings: Readonly<Record<string, string | number | boolean>>, columns?: readonly string[]): Promise<void>;
  /** Whether `insert` takes `columns`. @default false when absent */
  readsCompactRows?(): Promise<boolean>;
  /** Whether `insert_deduplication_token` makes a repeated insert a no-op. */
  supportsDeduplicationToken(): Promise<boolean>;
  /** Whether JSONEachRow accepts decimals written as strings (`"12.50"`); old servers need bare numbers. */
  readsDecimalStrings(): Promise<boolean>;
  close(): Promise<void>;
}

/** Quotes an identifier (`db.table` stays two parts). */
export function quoteIdentifier(name: string): string {
  return name.split('.').map(quoteName).join('.');
}

/** One name quoted as it is, dots and all: a database or a table name read from the engine. */
export function quoteName(name: string): string {
  return '`' + name.replace(/\\/g, '\\\\').replace(/`/g, '\\`') + '`';
}
