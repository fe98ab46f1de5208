/** What the ClickHouse sink, migrations and queries need of a ClickHouse connection. */
export interface ClickHouseClient {
  /** `embedded` (chDB in this process) or `http` (a ClickHouse server). */
  readonly kind: 'embedded' | 'http';
  /** Runs a statement that returns no rows (DDL, INSERT … SELECT). */
  exec(sql: string): Promise<void>;
  /** Runs a SELECT and returns its rows. */
  query<R = Record<string, unknown>>(sql: string): Promise<R[]>;
  /** Inserts rows already serialized as JSONEachRow (one object per line). */
  insert(table: string, rows: Buffer, settings: Readonly<Record<string, string | number | boolean>>): Promise<void>;
  /** Whether `insert_deduplication_token` makes a repeated insert a no-op. */
  supportsDeduplicationToken(): Promise<boolean>;
  close(): Promise<void>;
}

/** ClickHouse error codes worth another attempt: overload, timeouts, the network. */
export const RETRIABLE_CLICKHOUSE_CODES = new Set([
  3, // UNEXPECTED_END_OF_FILE (a cut connection)
  159, // TIMEOUT_EXCEEDED
  164, // READONLY (a replica in read-only mode)
  202, // TOO_MANY_SIMULTANEOUS_QUERIES
  209, // SOCKET_TIMEOUT
  210, // NETWORK_ERROR
  241, // MEMORY_LIMIT_EXCEEDED
  242, // TABLE_IS_READ_ONLY
  252, // TOO_MANY_PARTS
  319, // UNKNOWN_STATUS_OF_INSERT
  425, // SYSTEM_ERROR
]);

/** The numeric code in a ClickHouse message (`Code: 62. DB::Exception: …`). */
export function clickhouseCodeOf(message: string): number | undefined {
  const match = /Code: (\d+)/.exec(message);
  return match ? Number(match[1]) : undefined;
}

/** Quotes an identifier (`db.table` stays two parts). */
export function quoteIdentifier(name: string): string {
  return name
    .split('.')
    .map((part) => '`' + part.replace(/\\/g, '\\\\').replace(/`/g, '\\`') + '`')
    .join('.');
}
