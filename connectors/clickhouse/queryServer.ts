import { timingSafeEqual, createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AccessControl } from '../../lib/access';
import { ConfigError } from '../../lib/errors';
import type { ClickHouseClient } from './client';

export interface QueryServerOptions {
  /** The store to read: typically the embedded ClickHouse a running pipeline holds. */
  client: ClickHouseClient;
  /** Users allowed to query, name → key. A request without a known name and its key is refused. Needed unless `access` is given. */
  users?: Readonly<Record<string, string>>;
  /**
   * API keys and roles instead of (or besides) `users`: the key presented as the password
   * (`X-ClickHouse-Key`, basic auth, `password=`) must grant `permission`. A known key
   * without it gets 403 (code 497, ACCESS_DENIED); every decision reaches `access`'s
   * `onDecision`, hence an audit log (`auditAccess`). @default none
   */
  access?: AccessControl;
  /** The permission a query needs under `access`. @default 'query:read' */
  permission?: string;
  /** @default '127.0.0.1' */
  host?: string;
  /** 0 picks a free port. @default 8123 */
  port?: number;
  /** Longest query text accepted, in bytes. @default 1 MiB */
  maxQueryBytes?: number;
}

/** Statements a reader may run. */
const READ_STATEMENT = /^\s*(?:\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b/i;
/** Table functions and clauses that would reach beyond the store (files, the network, other servers). */
const OUTSIDE = /\b(file|url|s3|s3Cluster|hdfs|remote|remoteSecure|mysql|postgresql|odbc|jdbc|executable|input|azureBlobStorage|gcs|iceberg|deltaLake|hudi|cluster|clusterAllReplicas)\s*\(|\bINTO\s+OUTFILE\b/i;
const FORMAT_CLAUSE = /\bFORMAT\s+(\w+)\s*;?\s*$/i;

/**
 * A read-only query endpoint over the store of a running pipeline, speaking the part
 * of ClickHouse's HTTP interface that clients use for SELECTs: the query in the URL
 * (`?query=`) or the body, `FORMAT` or `default_format`, users by basic auth,
 * `X-ClickHouse-User`/`X-ClickHouse-Key` or `user`/`password` parameters, and errors
 * as ClickHouse writes them (`Code: N. DB::Exception: …`, `X-ClickHouse-Exception-Code`).
 *
 * Embedded ClickHouse locks its directory to one process; this is how analysts, curl,
 * `@clickhouse/client` or Grafana read it while the pipeline writes. Only reading
 * statements pass; writes, DDL, several statements and table functions that reach files
 * or the network are refused with code 164 (READONLY).
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
  const users = Object.entries(options.users ?? {});
  if (options.access !== undefined && !(options.access instanceof AccessControl)) throw new ConfigError('access must be an AccessControl');
  if (users.length === 0 && !options.access) throw new ConfigError('users must name at least one user and key, or access must be given');
  const permission = options.permission ?? 'query:read';
  if (typeof permission !== 'string' || permission === '') throw new ConfigError(`permission must be a non-empty string, got ${JSON.stringify(options.permission)}`);
  for (const [name, key] of users) {
    if (typeof key !== 'string' || key.length < 8) throw new ConfigError(`users.${name} must be a key of at least 8 characters`);
  }
  const digests = new Map(users.map(([name, key]) => [name, digest(key)]));
  const maxQueryBytes = options.maxQueryBytes ?? 1024 * 1024;
  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => reply(response, 500, 1001, `Code: 1001. DB::Exception: ${String(error)}`));
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (url.pathname === '/ping') return reply(response, 200, 0, 'Ok.\n');
    if (url.pathname !== '/') return reply(response, 404, 0, 'Not found\n');
    const verdict = authorized(request, url);
    if (verdict === 'forbidden') {
      return reply(response, 403, 497, `Code: 497. DB::Exception: the key lacks permission ${permission}. (ACCESS_DENIED)\n`);
    }
    if (verdict !== 'ok') {
      return reply(response, 403, 516, 'Code: 516. DB::Exception: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)\n');
    }
    const body = await readBody(request, maxQueryBytes);
    if (body === undefined) return reply(response, 413, 1001, `Code: 1001. DB::Exception: query is longer than ${maxQueryBytes} bytes\n`);
    const query = [url.searchParams.get('query'), body].filter((part) => part).join('\n').trim();
    if (query === '') return reply(response, 400, 62, 'Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)\n');
    const refusal = refuse(query);
    if (refusal) return reply(response, 403, 164, `Code: 164. DB::Exception: ${refusal}: cannot execute query in readonly mode. (READONLY)\n`);
    const format = FORMAT_CLAUSE.exec(query)?.[1] ?? url.searchParams.get('default_format') ?? 'TabSeparated';
    const sql = query.replace(FORMAT_CLAUSE, '').trim();
    try {
      const rows = await options.client.queryText(sql, format);
      response.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8', 'X-ClickHouse-Format': format });
      response.end(rows);
    } catch (error) {
      const code = (error as { clickhouseCode?: number }).clickhouseCode ?? 1001;
      reply(response, 400, code, `${(error as Error).message}\n`);
    }
  }

  function authorized(request: IncomingMessage, url: URL): 'ok' | 'forbidden' | 'unauthenticated' {
    let user = request.headers['x-clickhouse-user'] as string | undefined;
    let key = request.headers['x-clickhouse-key'] as string | undefined;
    const basic = /^Basic (.+)$/i.exec(request.headers.authorization ?? '');
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      user = decoded.slice(0, colon);
      key = decoded.slice(colon + 1);
    }
    user ??= url.searchParams.get('user') ?? undefined;
    key ??= url.searchParams.get('password') ?? undefined;
    const expected = user === undefined ? undefined : digests.get(user);
    if (expected !== undefined && key !== undefined && timingSafeEqual(expected, digest(key))) return 'ok';
    if (!options.access) return 'unauthenticated';
    const decision = options.access.decide(key, permission, `${request.method ?? 'GET'} ${url.pathname}`);
    return decision.allowed ? 'ok' : decision.outcome === 'FORBIDDEN' ? 'forbidden' : 'unauthenticated';
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8123, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address}:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Why a query is not for a reader, or undefined when it may run. */
function refuse(query: string): string | undefined {
  const withoutTrailing = query.replace(/;\s*$/, '');
  if (withoutTrailing.includes(';')) return 'several statements';
  if (!READ_STATEMENT.test(withoutTrailing)) return 'only SELECT, WITH, SHOW, DESCRIBE, EXISTS and EXPLAIN are allowed';
  if (OUTSIDE.test(withoutTrailing)) return 'table functions that reach files or the network are not allowed';
  return undefined;
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

async function readBody(request: IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function reply(response: ServerResponse, status: number, code: number, text: string): void {
  if (response.headersSent) return void response.end();
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=UTF-8' };
  if (code !== 0) headers['X-ClickHouse-Exception-Code'] = String(code);
  response.writeHead(status, headers);
  response.end(text);
}
