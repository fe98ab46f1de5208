import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as TlsServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createGzip, type Gzip } from 'node:zlib';
import { AccessControl, bearerToken } from '../../lib/security/access';
import type { AuditLog } from '../../lib/security/audit';
import { ConfigError } from '../../lib/errors';
import { header, readBody } from '../../lib/http';
import { integerInRange, positiveInteger } from '../../lib/options';
import type { ClickHouseClient } from './client';
import { compressedBlock } from './compressedBlocks';
import { framingOf } from './embedded';
import { nativeForRevision } from './nativeRevision';
import { admitQuery, QueryRefusedError, type TablePolicy } from './queryGuard';

/** A reader given by name: its key and, if narrower than the server's, its tables. */
export interface QueryUser {
  key: string;
  /** Tables and views this user may read (`name` or `db.name`). @default the server's `tables` */
  tables?: readonly string[];
}

/** Bounds every query runs under. A reader may lower them with URL settings, never raise them. */
export interface QueryLimits {
  /** `max_execution_time`, seconds. @default 60 */
  maxExecutionTimeS?: number;
  /** `max_result_rows`, with `result_overflow_mode=throw`. @default 1_000_000_000 */
  maxResultRows?: number;
  /** `max_result_bytes`. @default 64 GiB */
  maxResultBytes?: number;
  /** `max_memory_usage`, bytes. @default 2 GiB */
  maxMemoryUsage?: number;
  /** `max_threads` a query may use, so readers leave cores to the pipeline. @default 1 */
  maxThreads?: number;
}

/** The limits a server runs with when none are given. */
export const DEFAULT_QUERY_LIMITS: Readonly<Required<QueryLimits>> = {
  maxExecutionTimeS: 60,
  maxResultRows: 1_000_000_000,
  maxResultBytes: 64 * 1024 ** 3,
  maxMemoryUsage: 2 * 1024 ** 3,
  maxThreads: 1,
};

export interface QueryServerOptions {
  /** The store to read: typically the embedded ClickHouse a running pipeline holds. */
  client: ClickHouseClient;
  /** Users allowed to query, name → key (or key and tables). Needed unless `access` is given. */
  users?: Readonly<Record<string, string | QueryUser>>;
  /**
   * API keys and roles instead of (or besides) `users`: the key presented as the password
   * (`X-ClickHouse-Key`, basic auth) must grant `permission`. A known key without it gets
   * 403 (code 497, ACCESS_DENIED); every decision reaches `access`'s `onDecision`.
   * @default none
   */
  access?: AccessControl;
  /** The permission a query needs under `access`. @default 'query:read' */
  permission?: string;
  /**
   * Tables and views readers may read (`name` or `db.name`, `db.*` for a whole database).
   * @default every table and view of the `default` database except the library's own
   * bookkeeping (`tributary_migrations`, `subject_keys`, `audit_log`)
   */
  tables?: readonly string[];
  /** @default {} (see {@link QueryLimits}) */
  limits?: QueryLimits;
  /**
   * Queries running at once; more wait, and past `maxQueuedQueries` get 503 (code 202). On
   * the embedded store a running query holds one of libuv's pool threads while the engine
   * computes its next chunk, and the sink's inserts need that pool too: keep this below
   * `UV_THREADPOOL_SIZE`. @default UV_THREADPOOL_SIZE (4) less 2, at least 1
   */
  maxConcurrentQueries?: number;
  /** @default 64 */
  maxQueuedQueries?: number;
  /**
   * CPU priority (`os_thread_priority`, a nice value 0-19) of the engine threads running
   * readers' queries: above 0 they give way to the pipeline's inserts when the CPUs are
   * busy. Needs CAP_SYS_NICE, else the engine ignores it. @default 10
   */
  readerPriority?: number;
  /**
   * On the embedded store, formats that frame a whole result (JSON, XML, Pretty, Parquet,
   * Arrow, …) are built in memory before they are sent: their `max_result_bytes` is at most
   * this. Row formats stream and are bound by `limits.maxResultBytes` only. @default 256 MiB
   */
  maxBufferedResultBytes?: number;
  /** Longest query text accepted, in bytes (after decompression). @default 1 MiB */
  maxQueryBytes?: number;
  /** Time to receive a request's headers and body, ms. @default 30000 */
  requestTimeoutMs?: number;
  /** Failed authentications a client address may make per minute before 429. @default 20 */
  maxFailedAuthPerMinute?: number;
  /** Accept `user=`/`password=` in the URL (logged by proxies; off unless a tool needs it). @default false */
  allowKeyInUrl?: boolean;
  /** Records every refusal (`query.denied`): wrong keys, missing permission, refused queries, rate limits. @default none */
  audit?: AuditLog;
  /** Serve HTTPS with these `node:https` options (`key`, `cert`, …). @default plain HTTP */
  tls?: TlsServerOptions;
  /** @default '127.0.0.1' */
  host?: string;
  /** 0 picks a free port. @default 8123 */
  port?: number;
}

/** Largest block of a `compress=1` answer, as a server cuts them. */
const FRAME_BYTES = 1024 * 1024;

/** What readers may read unless told: the default database less the library's own tables. */
const DEFAULT_POLICY: TablePolicy = {
  tables: new Set(),
  databases: new Set(['default']),
  except: new Set(['default.tributary_migrations', 'default.subject_keys', 'default.audit_log']),
};

/** Settings a reader may give in the URL that only shape the output. */
const OUTPUT_SETTINGS = new Set([
  'output_format_json_quote_64bit_integers',
  'output_format_json_quote_64bit_floats',
  'output_format_json_quote_denormals',
  'output_format_json_quote_decimals',
  'output_format_json_named_tuples_as_objects',
  'output_format_json_escape_forward_slashes',
  'output_format_decimal_trailing_zeros',
  'output_format_arrow_string_as_string',
  'output_format_parquet_string_as_string',
  'output_format_native_encode_types_in_binary_format',
  'output_format_binary_encode_types_in_binary_format',
  'output_format_write_statistics',
  'output_format_pretty_max_rows',
  'date_time_output_format',
  'session_timezone',
  'extremes',
  'join_use_nulls',
  'result_overflow_mode',
  'max_block_size',
]);

/** Bounds a reader may lower: URL name → the limit it lowers. */
const LOWERABLE: Readonly<Record<string, keyof Required<QueryLimits>>> = {
  max_execution_time: 'maxExecutionTimeS',
  max_result_rows: 'maxResultRows',
  max_result_bytes: 'maxResultBytes',
  max_memory_usage: 'maxMemoryUsage',
  max_threads: 'maxThreads',
};

/** URL parameters of ClickHouse's HTTP interface that are not settings, and what we do with them. */
const PROTOCOL_PARAMS = new Set([
  'query',
  'database',
  'default_format',
  'user',
  'password',
  'query_id',
  'session_id',
  'session_timeout',
  'session_check',
  'enable_http_compression',
  'http_zlib_compression_level',
  'wait_end_of_query',
  'send_progress_in_http_headers',
  'http_headers_progress_interval_ms',
  'buffer_size',
  'cancel_http_readonly_queries_on_client_close',
  'client_protocol_version',
  'readonly',
  'compress',
  'decompress',
  'add_http_cors_header',
]);

/** ClickHouse's HTTP status for an exception code, as its own server answers. */
function statusOf(code: number): number {
  if (code === 194) return 401;
  // READONLY is 500 on a server; 403 says what it is here, a refusal.
  if ([192, 193, 516, 512, 497, 164].includes(code)) return 403;
  if ([36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321, 456, 457].includes(code)) return 400;
  if ([60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511].includes(code)) return 404;
  if (code === 229) return 413;
  if (code === 48) return 501;
  if (code === 209 || code === 76 || code === 439 || code === 202) return 503;
  if (code === 381) return 411;
  if (code === 159) return 408;
  if (code === 779) return 415;
  return 500;
}

/** The Content-Type a ClickHouse server sends for an output format. */
function contentTypeOf(format: string): string {
  const name = format.toLowerCase();
  if (name.startsWith('json') || name === 'ndjson') return 'application/json; charset=UTF-8';
  if (name.startsWith('tabseparated') || name.startsWith('tsv')) return 'text/tab-separated-values; charset=UTF-8';
  if (name.startsWith('csv')) return `text/csv; charset=UTF-8; header=${name.includes('names') ? 'present' : 'absent'}`;
  if (name === 'xml') return 'application/xml; charset=UTF-8';
  if (name.startsWith('pretty') || ['vertical', 'values', 'markdown', 'null', 'lineasstring', 'raw', 'prometheus', 'sqlinsert'].includes(name)) return 'text/plain; charset=UTF-8';
  return 'application/octet-stream';
}

/**
 * A read-only query endpoint over the store of a running pipeline, speaking ClickHouse's
 * HTTP interface so its drivers, Grafana, DBeaver and curl work unchanged: the query in the
 * URL (`?query=`) or the body (plain, gzip or deflate), `FORMAT` or `default_format`, every
 * output format passed through byte for byte (RowBinary, Native, Parquet, Arrow, …),
 * `param_<name>` query parameters, allowlisted settings in the URL, gzip responses with
 * `enable_http_compression=1`, `X-ClickHouse-*` headers, ClickHouse's statuses and codes,
 * `/ping` and `/replicas_status`.
 *
 * Two locks, neither a pattern over the text. The engine's own parser reads each query
 * and only reads of allowed tables pass (see `admitQuery`); and every query runs with
 * `readonly=1` and the server's limits in its SETTINGS, so the engine refuses writes and
 * table functions on its own. Results stream in the engine's chunks, so memory stays flat
 * for any result size, and on the embedded store a streamed read runs beside the
 * pipeline's inserts instead of ahead of them. A query is cancelled when its client goes.
 *
 * ## Example
 * ```ts
 * import { embeddedClickHouse, serveQueries } from 'tributary';
 * const server = await serveQueries({ client: embeddedClickHouse(), users: { analyst: process.env.ANALYST_KEY! }, port: 8123 });
 * // curl -u analyst:$ANALYST_KEY 'http://127.0.0.1:8123/?query=SELECT+count()+FROM+bookings'
 * await server.close();
 * ```
 */
export async function serveQueries(options: QueryServerOptions): Promise<{ url: string; close(): Promise<void> }> {
  if (!options?.client) throw new ConfigError('client is required');
  const users = Object.entries(options.users ?? {}).map(([name, given]) => {
    const user = typeof given === 'string' ? { key: given } : given;
    if (typeof user?.key !== 'string' || user.key.length < 8) throw new ConfigError(`users.${name} must be a key of at least 8 characters`);
    return { name, digest: digest(user.key), tables: user.tables === undefined ? undefined : tablePolicy(user.tables, `users.${name}.tables`) };
  });
  if (options.access !== undefined && !(options.access instanceof AccessControl)) throw new ConfigError('access must be an AccessControl');
  if (users.length === 0 && !options.access) throw new ConfigError('users must name at least one user and key, or access must be given');
  const permission = options.permission ?? 'query:read';
  if (typeof permission !== 'string' || permission === '') throw new ConfigError(`permission must be a non-empty string, got ${JSON.stringify(options.permission)}`);
  const serverTables = options.tables === undefined ? undefined : tablePolicy(options.tables, 'tables');
  const limits: Required<QueryLimits> = {
    maxExecutionTimeS: positiveInteger(options.limits?.maxExecutionTimeS, DEFAULT_QUERY_LIMITS.maxExecutionTimeS, 'limits.maxExecutionTimeS'),
    maxResultRows: positiveInteger(options.limits?.maxResultRows, DEFAULT_QUERY_LIMITS.maxResultRows, 'limits.maxResultRows'),
    maxResultBytes: positiveInteger(options.limits?.maxResultBytes, DEFAULT_QUERY_LIMITS.maxResultBytes, 'limits.maxResultBytes'),
    maxMemoryUsage: positiveInteger(options.limits?.maxMemoryUsage, DEFAULT_QUERY_LIMITS.maxMemoryUsage, 'limits.maxMemoryUsage'),
    maxThreads: positiveInteger(options.limits?.maxThreads, DEFAULT_QUERY_LIMITS.maxThreads, 'limits.maxThreads'),
  };
  const maxConcurrent = positiveInteger(options.maxConcurrentQueries, defaultConcurrency(), 'maxConcurrentQueries');
  const maxQueued = positiveInteger(options.maxQueuedQueries, 64, 'maxQueuedQueries');
  const readerPriority = integerInRange(options.readerPriority, 10, 'readerPriority', 0, 19);
  const maxBuffered = positiveInteger(options.maxBufferedResultBytes, 256 * 1024 * 1024, 'maxBufferedResultBytes');
  const maxQueryBytes = positiveInteger(options.maxQueryBytes, 1024 * 1024, 'maxQueryBytes');
  const requestTimeoutMs = positiveInteger(options.requestTimeoutMs, 30_000, 'requestTimeoutMs');
  const maxFailedAuth = positiveInteger(options.maxFailedAuthPerMinute, 20, 'maxFailedAuthPerMinute');
  const client = options.client;

  const failures = new Map<string, { count: number; since: number }>();
  let running = 0;
  const waiting: (() => void)[] = [];
  const slot = async (): Promise<() => void> => {
    if (running >= maxConcurrent) {
      if (waiting.length >= maxQueued) throw new QueryError(202, `Too many simultaneous queries. Maximum: ${maxConcurrent}. (TOO_MANY_SIMULTANEOUS_QUERIES)`);
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      running--;
      waiting.shift()?.();
    };
  };

  const handler = (request: IncomingMessage, response: ServerResponse) => {
    handle(request, response).catch((error: unknown) => fail(response, error));
  };
  const server: Server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);
  server.headersTimeout = requestTimeoutMs;
  server.requestTimeout = requestTimeoutMs;

  function deny(request: IncomingMessage, actor: string, outcome: string, reason: string): void {
    options.audit?.record({ type: 'query.denied', actor, target: 'query', outcome, details: { remote: request.socket.remoteAddress ?? '', reason } });
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (url.pathname === '/ping' || url.pathname === '/replicas_status') return reply(response, 200, 0, 'Ok.\n');
    if (url.pathname !== '/') return reply(response, 404, 0, 'There is no handle ' + url.pathname + '\n');
    if (request.method !== 'GET' && request.method !== 'POST' && request.method !== 'HEAD') return reply(response, 405, 0, 'Only GET and POST are allowed\n');
    const remote = request.socket.remoteAddress ?? '';
    const failed = failures.get(remote);
    if (failed && Date.now() - failed.since < 60_000 && failed.count >= maxFailedAuth) {
      deny(request, 'anonymous', 'RATE_LIMITED', 'too many failed authentications');
      response.setHeader('Retry-After', String(Math.ceil((failed.since + 60_000 - Date.now()) / 1000)));
      return reply(response, 429, 516, 'Code: 516. DB::Exception: too many failed authentications from this address; try again later. (AUTHENTICATION_FAILED)\n');
    }
    const who = authorized(request, url);
    if (who.outcome !== 'ok') {
      const entry = failed && Date.now() - failed.since < 60_000 ? failed : { count: 0, since: Date.now() };
      entry.count++;
      failures.set(remote, entry);
      if (failures.size > 10_000) failures.delete(failures.keys().next().value!);
      deny(request, who.actor, who.outcome, who.reason);
      if (who.outcome === 'FORBIDDEN') return reply(response, 403, 497, `Code: 497. DB::Exception: ${who.reason}. (ACCESS_DENIED)\n`);
      return reply(response, 403, 516, `Code: 516. DB::Exception: ${who.reason}. (AUTHENTICATION_FAILED)\n`);
    }
    const body = await queryBody(request, maxQueryBytes);
    const given = url.searchParams.get('query');
    const query = given && body ? `${given}\n${body}` : (given ?? body);
    if (query.trim() === '') {
      if (request.method === 'GET' && !given) return reply(response, 200, 0, 'Ok.\n');
      throw new QueryError(62, 'Empty query. (SYNTAX_ERROR)');
    }
    const params: Record<string, string> = {};
    const settings: Record<string, string> = {};
    for (const [name, value] of url.searchParams) {
      if (name.startsWith('param_')) params[name.slice('param_'.length)] = unescapeParam(value);
      else if (LOWERABLE[name] !== undefined || OUTPUT_SETTINGS.has(name)) settings[name] = value;
      else if (!PROTOCOL_PARAMS.has(name)) throw new QueryRefusedError(`setting ${name} is not allowed for readers`);
    }
    if (url.searchParams.get('readonly') === '0') throw new QueryRefusedError('readers cannot turn readonly off');
    // Echoed in a header: printable ASCII only (a line break would end the header, and Node
    // refuses it only once the query runs). None or an empty one: one is made, as a server does.
    const queryId = url.searchParams.get('query_id') || randomUUID();
    if (!/^[\x20-\x7e]{1,256}$/.test(queryId)) throw new QueryError(36, 'query_id must be at most 256 printable ASCII characters. (BAD_ARGUMENTS)');
    const database = url.searchParams.get('database') ?? request.headers['x-clickhouse-database'];
    if (database !== undefined && database !== '' && database !== 'default') throw new QueryError(81, `Database ${database} does not exist. (UNKNOWN_DATABASE)`);

    const release = await slot();
    // A client that left while its query waited for a slot gets nothing run for it.
    if (response.destroyed || request.socket.destroyed) return release();
    const abort = new AbortController();
    const cancel = () => abort.abort();
    response.once('close', cancel);
    const timer = setTimeout(cancel, (limits.maxExecutionTimeS + 5) * 1000);
    try {
      const admitted = await admitQuery(client, query, params, who.tables ?? serverTables ?? DEFAULT_POLICY, { settings: analysisClause(limits, readerPriority), signal: abort.signal });
      const format = admitted.format ?? url.searchParams.get('default_format') ?? request.headers['x-clickhouse-format']?.toString() ?? 'TabSeparated';
      if (!/^[A-Za-z][A-Za-z0-9]*$/.test(format)) throw new QueryError(73, `Unknown format ${format}. (UNKNOWN_FORMAT)`);
      // A result built whole in memory is bounded by what memory can hold, not by bandwidth.
      const bounds = client.kind === 'embedded' && framingOf(format) === 'whole' ? { ...limits, maxResultBytes: Math.min(limits.maxResultBytes, maxBuffered) } : limits;
      const clause = `${admitted.settings}, ${settingsClause(settings, bounds, readerPriority)}`;
      const sql = admitted.kind === 'select' ? `SELECT * FROM (${admitted.sql}) SETTINGS ${clause}` : `${admitted.sql} SETTINGS ${clause}`;
      const chunks = client.stream(sql, { format, params, signal: abort.signal })[Symbol.asyncIterator]();
      // The first chunk (or the error) comes before any header, so a failed query gets its
      // own status, as from a server.
      let next = await chunks.next();
      const headers: Record<string, string> = {
        'Content-Type': contentTypeOf(format),
        'X-ClickHouse-Format': format,
        'X-ClickHouse-Query-Id': queryId,
        'X-ClickHouse-Timezone': 'UTC',
        'X-ClickHouse-Server-Display-Name': 'tributary',
        'X-ClickHouse-Summary': '{"read_rows":"0","read_bytes":"0","written_rows":"0","written_bytes":"0","total_rows_to_read":"0","result_rows":"0","result_bytes":"0"}',
      };
      let out: ServerResponse | Gzip = response;
      if (url.searchParams.get('enable_http_compression') === '1' && /\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) {
        headers['Content-Encoding'] = 'gzip';
        const level = Number(url.searchParams.get('http_zlib_compression_level') ?? 3);
        const gzip: Gzip = createGzip({ level: Number.isInteger(level) && level >= 1 && level <= 9 ? level : 3 });
        gzip.pipe(response);
        out = gzip;
      }
      // compress=1: ClickHouse's own framing, checksummed, which some drivers ask for.
      const framed = url.searchParams.get('compress') === '1';
      // The embedded engine writes Native as for protocol revision 0; a driver that names
      // its revision reads the blocks of that revision.
      const revision = client.kind === 'embedded' && format.toLowerCase() === 'native' ? Number(url.searchParams.get('client_protocol_version') ?? 0) || 0 : 0;
      response.writeHead(200, headers);
      try {
        while (!next.done && !abort.signal.aborted) {
          const data = revision > 0 ? nativeForRevision(next.value, revision) : next.value;
          let written = true;
          if (!framed) written = out.write(data);
          else for (let at = 0; at < data.length; at += FRAME_BYTES) written = out.write(compressedBlock(data.subarray(at, at + FRAME_BYTES))) && written;
          if (!written) await drained(out, abort.signal);
          if (abort.signal.aborted) break;
          next = await chunks.next();
        }
      } catch (error) {
        // Headers are gone: say what failed in the body, as a server does, and cut the
        // connection so no client takes a partial binary result for a whole one.
        out.end(`\n${messageOf(error)}\n`);
        setImmediate(() => response.destroy());
        return;
      }
      // A client that went away leaves the engine's stream to be cancelled, not run out.
      if (abort.signal.aborted) await chunks.return?.();
      out.end();
    } finally {
      clearTimeout(timer);
      response.off('close', cancel);
      release();
    }
  }

  function fail(response: ServerResponse, error: unknown): void {
    const code = (error as { clickhouseCode?: number }).clickhouseCode ?? 1001;
    if (error instanceof QueryRefusedError) deny(response.req, 'reader', 'READONLY', error.message);
    reply(response, code === 1001 ? 500 : statusOf(code), code, `${messageOf(error)}\n`);
  }

  function authorized(request: IncomingMessage, url: URL): { outcome: 'ok' | 'FORBIDDEN' | 'UNAUTHENTICATED'; actor: string; reason: string; tables?: TablePolicy } {
    let user = header(request, 'x-clickhouse-user');
    let key = header(request, 'x-clickhouse-key');
    const basic = /^Basic (.+)$/i.exec(request.headers.authorization ?? '');
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      user = colon < 0 ? decoded : decoded.slice(0, colon);
      key = colon < 0 ? '' : decoded.slice(colon + 1);
    }
    key = bearerToken(request.headers.authorization) ?? key;
    if (options.allowKeyInUrl) {
      user ??= url.searchParams.get('user') ?? undefined;
      key ??= url.searchParams.get('password') ?? undefined;
    } else if (url.searchParams.has('password')) {
      return { outcome: 'UNAUTHENTICATED', actor: user ?? 'anonymous', reason: 'Authentication failed: keys are not accepted in the URL; send them as basic auth or X-ClickHouse-Key' };
    }
    const known = users.find((candidate) => candidate.name === (user ?? 'default'));
    if (known && key !== undefined && timingSafeEqual(known.digest, digest(key))) return { outcome: 'ok', actor: known.name, reason: '', tables: known.tables };
    const failed = 'Authentication failed: password is incorrect, or there is no user with such name';
    if (!options.access) return { outcome: 'UNAUTHENTICATED', actor: user ?? 'anonymous', reason: failed };
    const decision = options.access.decide(key, permission, `${request.method ?? 'GET'} ${url.pathname}`);
    if (decision.allowed) return { outcome: 'ok', actor: decision.keyId ?? 'anonymous', reason: '' };
    return decision.outcome === 'FORBIDDEN'
      ? { outcome: 'FORBIDDEN', actor: decision.keyId ?? 'anonymous', reason: `the key lacks permission ${permission}` }
      : { outcome: 'UNAUTHENTICATED', actor: user ?? 'anonymous', reason: failed };
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8123, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const shown = address.includes(':') ? `[${address}]` : address;
  return {
    url: `${options.tls ? 'https' : 'http'}://${shown}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Resolves when `out` can take more, or the request was given up. */
function drained(out: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      out.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    out.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** An error the endpoint answers itself, with ClickHouse's code. */
class QueryError extends Error {
  constructor(
    readonly clickhouseCode: number,
    text: string,
  ) {
    super(`Code: ${clickhouseCode}. DB::Exception: ${text}`);
  }
}

/**
 * The SETTINGS of the guard's analysis of a query, which runs its scalar subqueries: the
 * time, memory, thread and priority bounds of every reader's query. Not its result limits:
 * the analysis's result is the guard's tree, and the analyzer caps a scalar subquery at a row.
 */
export function analysisClause(limits: Required<QueryLimits>, priority = 10): string {
  return `max_execution_time = ${limits.maxExecutionTimeS}, timeout_overflow_mode = 'throw', max_memory_usage = ${limits.maxMemoryUsage}, max_threads = ${limits.maxThreads}, os_thread_priority = ${priority}, readonly = 1`;
}

/** The SETTINGS every reader's query runs under: its own lowerings, then the bounds, then readonly=1 last. */
export function settingsClause(given: Readonly<Record<string, string>>, limits: Required<QueryLimits>, priority = 10): string {
  const effective: Record<string, string> = {};
  for (const [name, value] of Object.entries(given)) {
    const bound = LOWERABLE[name];
    if (bound !== undefined) {
      if (!/^\d+$/.test(value)) throw new QueryError(72, `Cannot parse ${name}=${JSON.stringify(value)} as a number. (CANNOT_PARSE_NUMBER)`);
      // 0 means "no limit" to ClickHouse: never lower than the bound, so it keeps the bound.
      if (Number(value) > 0 && Number(value) < limits[bound]) effective[name] = value;
    } else {
      effective[name] = /^-?\d+(?:\.\d+)?$/.test(value) ? value : `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
    }
  }
  effective['max_execution_time'] ??= String(limits.maxExecutionTimeS);
  effective['max_result_rows'] ??= String(limits.maxResultRows);
  effective['max_result_bytes'] ??= String(limits.maxResultBytes);
  effective['max_memory_usage'] ??= String(limits.maxMemoryUsage);
  effective['max_threads'] ??= String(limits.maxThreads);
  effective['result_overflow_mode'] ??= "'throw'";
  // Fewer, larger blocks: each one is a hand-over from the engine's threads to the socket,
  // and at the engine's defaults (65,536 rows, reads of a table cut at about 1 MB) those
  // hand-overs cost as much CPU as the rows. 100M UInt64 rows through the endpoint, paired
  // on a busy 2-core machine: 1.74-1.76x the CPU of the engine writing them to /dev/null
  // itself at the defaults, 1.55-1.74x at 1 MB blocks, 1.60x at 4 MB. Reads of a table stay
  // bounded in bytes (blocks of 1.5 MB here); rows too wide for that keep the size they had.
  effective['max_block_size'] ??= '262144';
  effective['preferred_block_size_bytes'] = '4000000';
  // A server's default (the embedded engine's is 0): 64-bit integers quoted in JSON, so no
  // JavaScript client rounds them.
  effective['output_format_json_quote_64bit_integers'] ??= '1';
  effective['timeout_overflow_mode'] = "'throw'";
  // Readers' engine threads run at a lower CPU priority than the pipeline's (no effect
  // without CAP_SYS_NICE).
  effective['os_thread_priority'] = String(priority);
  effective['readonly'] = '1';
  return Object.entries(effective)
    .map(([name, value]) => `${name} = ${value}`)
    .join(', ');
}

function tablePolicy(tables: readonly string[], option: string): TablePolicy {
  if (!Array.isArray(tables) || tables.some((table) => typeof table !== 'string' || table === '')) throw new ConfigError(`${option} must be an array of table names`);
  return {
    tables: new Set(tables.filter((table) => !table.endsWith('.*')).map((table) => (table.includes('.') ? table : `default.${table}`))),
    databases: new Set(tables.filter((table) => table.endsWith('.*')).map((table) => table.slice(0, -2))),
    except: new Set(),
  };
}

/**
 * A `param_<name>` value as ClickHouse reads it: in its escaped text form (`\t`, `\n`,
 * `\'`, `\\`, …). The store binds plain values and escapes them itself.
 */
function unescapeParam(value: string): string {
  const named: Readonly<Record<string, string>> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', '0': '\0', a: '\x07', v: '\v' };
  return value.replace(/\\(x[0-9A-Fa-f]{2}|[\s\S])/g, (_, escaped: string) => (escaped.length === 3 ? String.fromCharCode(parseInt(escaped.slice(1), 16)) : (named[escaped] ?? escaped)));
}

/** libuv's pool less two threads, for the pipeline's inserts and file reads. */
function defaultConcurrency(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE);
  return Math.max(1, (Number.isInteger(pool) && pool > 0 ? pool : 4) - 2);
}

function messageOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.startsWith('Code: ') ? message : `Code: 1001. DB::Exception: ${message}`;
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/** The request body as text, decompressed per Content-Encoding, refused past `limit` bytes. */
async function queryBody(request: IncomingMessage, limit: number): Promise<string> {
  const body = await readBody(request, { limit, decompress: true });
  if (body === 'tooLarge') throw new QueryError(229, `query is longer than ${limit} bytes. (QUERY_IS_TOO_LARGE)`);
  if (body === 'unsupportedEncoding') throw new QueryError(48, `Unknown Content-Encoding ${String(request.headers['content-encoding']).toLowerCase()}. (NOT_IMPLEMENTED)`);
  if (typeof body === 'string') throw new QueryError(27, `cannot read the request body: ${body === 'corrupt' ? 'it does not decompress' : 'the client went away'}. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)`);
  return body.toString('utf8');
}

function reply(response: ServerResponse, status: number, code: number, text: string): void {
  if (response.headersSent) return void response.end();
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=UTF-8' };
  if (code !== 0) headers['X-ClickHouse-Exception-Code'] = String(code);
  // A body left unread (refused before or while reading it) would be read as the next
  // request on this connection: close it instead.
  if (!response.req.complete) headers['Connection'] = 'close';
  response.writeHead(status, headers);
  response.end(text);
}
