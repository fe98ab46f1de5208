import { randomUUID } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { Readable } from 'node:stream';
import type { ClickHouseClient as HttpClient } from '@clickhouse/client';
import { ConfigError } from '../../lib/errors';
import { positiveInteger } from '../../lib/options';
import { clickhouseErrorOf, quoteIdentifier, type ClickHouseClient } from './client';
import { loadPackage } from '../../lib/packages';

export interface ServerClickHouseOptions {
  /** The server's HTTP interface. @default 'http://127.0.0.1:8123' */
  url?: string;
  /** @default 'default' */
  username?: string;
  /** @default '' */
  password?: string;
  /** Database of unqualified table names. @default 'default' */
  database?: string;
  /** One HTTP request's limit; a timed-out insert may still land, and is retried with the same token. @default 30000 */
  requestTimeoutMs?: number;
  /**
   * Compress insert bodies (gzip). Worth it across a network; on loopback it only costs
   * CPU (about 1.85 s per million booking rows, measured), so the default follows the
   * address: off for `localhost`, `*.localhost`, 127.0.0.0/8 and `::1`, on for any other host.
   * @default false on a loopback host, true otherwise
   */
  compressInserts?: boolean;
  /** HTTP connections kept open. @default 4 */
  maxOpenConnections?: number;
}

/**
 * A ClickHouse server over HTTP (`@clickhouse/client`), the production target.
 *
 * What the server can do is read from its version once: `insert_deduplication_token`
 * (22.2 and later) makes a retried insert a no-op; older servers rely on the table's
 * natural-key replacement (ReplacingMergeTree) instead.
 *
 * ## Example
 * ```ts
 * import { serverClickHouse, toClickHouse } from 'tributary';
 * const clickhouse = serverClickHouse({ url: 'http://clickhouse:8123', password: process.env.CH_PASSWORD });
 * const sink = toClickHouse({ client: clickhouse, table: 'bookings' });
 * ```
 */
export function serverClickHouse(options: ServerClickHouseOptions = {}): ClickHouseClient & { version(): Promise<string> } {
  const url = options.url ?? 'http://127.0.0.1:8123';
  try {
    new URL(url);
  } catch {
    throw new ConfigError(`url must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  const requestTimeoutMs = positiveInteger(options.requestTimeoutMs, 30_000, 'requestTimeoutMs');
  // Loaded on first use, so importing tributary does not pay for the HTTP client.
  const { createClient, ClickHouseLogLevel } = loadPackage<typeof import('@clickhouse/client')>('@clickhouse/client', 'serverClickHouse');
  const http: HttpClient = createClient({
    url,
    username: options.username ?? 'default',
    password: options.password ?? '',
    database: options.database ?? 'default',
    request_timeout: requestTimeoutMs,
    max_open_connections: options.maxOpenConnections ?? 4,
    compression: { request: options.compressInserts ?? !isLoopbackHost(new URL(url).hostname), response: false },
    // Every failure reaches the caller as a typed error; the client's own log would say it twice.
    log: { level: ClickHouseLogLevel.OFF },
  });
  let version: Promise<string> | undefined;
  const serverVersion = () => {
    version ??= (async () => {
      const result = await http.query({ query: 'SELECT version() AS version', format: 'JSONEachRow' });
      const [row] = await result.json<{ version: string }>();
      return row!.version;
    })().catch((cause: unknown) => {
      version = undefined;
      throw clickhouseErrorOf(cause);
    });
    return version;
  };
  return {
    kind: 'http',
    version: serverVersion,
    async exec(sql) {
      try {
        await http.command({ query: sql });
      } catch (cause) {
        throw clickhouseErrorOf(cause);
      }
    },
    async query<R>(sql: string) {
      try {
        const result = await http.query({ query: sql, format: 'JSONEachRow' });
        return await result.json<R>();
      } catch (cause) {
        throw clickhouseErrorOf(cause);
      }
    },
    async queryText(sql, format) {
      try {
        return await (await http.query({ query: sql, format: format as never })).text();
      } catch (cause) {
        throw clickhouseErrorOf(cause);
      }
    },
    async *stream(sql, { format, params, signal }) {
      // A server runs a query on after its client has gone, until it next writes to it
      // (unless cancel_http_readonly_queries_on_client_close, which older servers lack):
      // an aborted stream kills its query by id.
      const queryId = randomUUID();
      const giveUp = () => void http.command({ query: `KILL QUERY WHERE query_id = '${queryId}' ASYNC` }).catch(() => undefined);
      signal?.addEventListener('abort', giveUp, { once: true });
      try {
        const result = await http.exec({ query: `${sql}\nFORMAT ${format}`, query_id: queryId, query_params: { ...params }, abort_signal: signal });
        try {
          for await (const chunk of result.stream) yield chunk as Buffer;
        } finally {
          result.stream.destroy();
        }
      } catch (cause) {
        throw clickhouseErrorOf(cause);
      } finally {
        signal?.removeEventListener('abort', giveUp);
      }
    },
    async insert(table, rows, settings) {
      try {
        const result = await http.exec({
          query: `INSERT INTO ${quoteIdentifier(table)} FORMAT JSONEachRow`,
          values: Readable.from([rows]),
          clickhouse_settings: settings as never,
        });
        result.stream.resume();
      } catch (cause) {
        throw clickhouseErrorOf(cause);
      }
    },
    async supportsDeduplicationToken() {
      return atLeast(await serverVersion(), 22, 2);
    },
    async readsDecimalStrings() {
      return atLeast(await serverVersion(), 20, 1);
    },
    async close() {
      await http.close();
    },
  };
}

/**
 * Whether `hostname` (as `URL.hostname` gives it: lower case, IPv4 in dotted form, IPv6
 * compressed in brackets) names this machine's loopback. From the text alone: a name that
 * merely resolves to loopback counts as remote, which errs on the side of compressing.
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIPv4(host)) return host.startsWith('127.');
  // ::1, and IPv4-mapped 127.x.y.z, which URL writes as ::ffff:7fxx:yyzz.
  return host === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(host);
}

function atLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}
