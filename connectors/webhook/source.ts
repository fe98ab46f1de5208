import type { KeyObject } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as TlsServerOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { Observable, type Subscriber } from 'rxjs';
import { presentedKey, type AccessControl, type AccessDecision } from '../../lib/security/access';
import { AuditLog } from '../../lib/security/audit';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConfigError, ConnectorError } from '../../lib/errors';
import { header, readBody } from '../../lib/http';
import { checkJsonBytes, resolveRecordLimits } from '../../lib/limits';
import { portOption, positiveInteger, positiveNumber } from '../../lib/options';
import type { Source, SourceContext, SourceStatus } from '../../lib/source';
import type { CsvOptions } from '../../formats/csv';
import { encodingOf, type FileEncoding } from '../../formats/encoding';
import type { XmlOptions } from '../../formats/xml';
import { documentSplitter, emitNdjson, textOf, type PayloadSplitter } from '../../formats/payload';
import { MemoryReplayStore, type ClaimResult, type ReplayStore } from './replay';
import { secretKey, SIGNATURE_HEADERS, signatureMatches, type WebhookSecret } from './signature';
import { WrongKeyLimiter, type WrongKeyLimit } from './wrongKeys';

/** One vendor's route, `POST <path>/<vendor>`. */
export interface WebhookVendorOptions {
  /** The secrets the vendor may sign with: more than one while a secret is being rotated. */
  secrets: readonly WebhookSecret[];
  /** Layout of `text/csv` bodies. @default header row, ',' and '"' */
  csv?: CsvOptions;
  /** Which elements of an XML body are records; without it XML bodies are refused (415). */
  xml?: XmlOptions;
}

export interface FromWebhookOptions {
  /** Names the source in `meta.source`. @default 'webhook' */
  name?: string;
  /** Port to listen on; 0 picks a free one (see `url()`). @default 8080 */
  port?: number;
  /** Address to listen on. @default '127.0.0.1' */
  host?: string;
  /** Serve HTTPS with these options (`key`, `cert`, `ca`, `minVersion`, …) instead of HTTP. @default plain HTTP */
  tls?: TlsServerOptions;
  /** Prefix of the vendor routes. @default '/webhooks' */
  path?: string;
  /** Vendor name → its secrets and body layouts. Names use letters, digits, `_` and `-`. */
  vendors: Readonly<Record<string, WebhookVendorOptions>>;
  /**
   * API keys and roles: posting to a vendor's route needs `webhook:post:<vendor>`,
   * `GET /admin/status` needs `admin`. The key comes as `Authorization: Bearer <key>` or
   * `X-Api-Key: <key>`.
   */
  access: AccessControl;
  /** How far a request's `webhook-timestamp` may be from now, either way. @default 300 */
  toleranceSeconds?: number;
  /**
   * Where taken webhook ids are remembered (until their timestamp leaves the tolerance).
   * In memory, sized by `peakRequestsPerSecond`; for several replicas behind one address
   * use `redisReplayStore`, so a request replayed to another replica is refused too.
   * @default new MemoryReplayStore({ peakRequestsPerSecond, toleranceSeconds })
   */
  replay?: ReplayStore;
  /**
   * How long a request's id is held before its records are stored (after that, until its
   * timestamp leaves the tolerance). A replay meanwhile gets 503 `IN_PROGRESS`; if the
   * process dies before storing, the vendor's retry gets in once this has passed instead of
   * being refused as a replay. A request whose records take longer than this to store may
   * be stored twice if the vendor retries it meanwhile. @default 60000
   */
  replayHoldMs?: number;
  /**
   * The highest rate of accepted requests to plan for: sizes the default replay store
   * (`replayCapacity`: 602,000 ids, at most 24 MB, at the defaults). Past it for
   * long, the store fills and new requests get 503 `REPLAY_STORE_FULL`; its fill is
   * `tributary_webhook_replay_fill_ratio`. @default 1000
   */
  peakRequestsPerSecond?: number;
  /**
   * Largest body accepted; a larger one gets 413 and is not read further. Bodies are read
   * before their signature is checked and outside the pipeline's in-flight budget, so at
   * most `maxRequestsPerKey` × `maxBodyBytes` of unverified body is held per API key.
   * @default 1 MiB
   */
  maxBodyBytes?: number;
  /**
   * Requests of one API key handled at once, from its headers to its answer; more get 429
   * `KEY_BUSY`. A key whose holder lacks the signing secret can so hold only this many
   * connections and bodies, and never the pipeline's credit, which only signed requests take.
   * @default 64
   */
  maxRequestsPerKey?: number;
  /**
   * Requests without a valid API key each client address may make: past it, every request
   * from that address gets 429 `TOO_MANY_WRONG_KEYS` (a right key too) until the bucket
   * refills. Behind a proxy every client shares the proxy's address.
   * @default { attempts: 10, perSeconds: 60 }
   */
  wrongKeyLimit?: WrongKeyLimit;
  /**
   * Also take the API key from this query parameter (`?api_key=…`), for vendors that cannot
   * set headers. URLs end up in access logs and proxies, so keys there are ignored unless
   * this names the parameter. @default none: only `Authorization` and `X-Api-Key`
   */
  apiKeyQueryParameter?: string;
  /** `Retry-After` sent with 429 (no credit) and 503 (sink unavailable). @default 1 */
  retryAfterSeconds?: number;
  /** Time allowed to send a whole request, against slow senders. @default 30000 */
  requestTimeoutMs?: number;
  /** Time allowed to send the request line and headers (slowloris); then 408 and the connection closed. @default 10000 */
  headersTimeoutMs?: number;
  /** Time allowed for the body once the headers are in; then 408 `BODY_TIMEOUT` and the connection closed. @default 20000 */
  bodyTimeoutMs?: number;
  /**
   * Records every denial ({@link WEBHOOK_DENIALS}: no or a wrong API key, too many of those
   * from one address, a key without the route's permission or with too many requests in
   * progress, a missing, stale or bad signature, a replay, an oversized or too slow body) as a
   * `webhook.denied` event: actor the key id (`anonymous` when none was recognised), target
   * the route, outcome the reason, details the vendor, HTTP status, remote address, webhook
   * id and permission. Never the body, the signature, the key's secret or a vendor secret.
   * Refusals that are not the caller's fault (429 no credit, 503 sink down) are not recorded.
   * @default none
   */
  audit?: AuditLog;
}

/** What a webhook source has done since it started. */
export interface WebhookStats {
  /** Requests answered 2xx: all their records were durable. */
  accepted: number;
  /** Records in accepted requests. */
  records: number;
  /** Requests refused, by reason (`UNAUTHENTICATED`, `BAD_SIGNATURE`, `REPLAY`, `TOO_LARGE`, …). */
  refused: Record<string, number>;
  /** Body bytes read from the network, refused requests included. */
  bodyBytesRead: number;
  /** Requests whose records are on their way to the sink. */
  pending: number;
  /** Denials that could not be recorded in `audit` (closed, failed, or its backlog full); each was still refused. */
  unaudited: number;
  /** Stored requests whose id the replay store could not confirm (a replay of one may get in after `replayHoldMs`). */
  unconfirmed: number;
}

/**
 * The refusals recorded in `audit` as `webhook.denied`: those that say something about who
 * calls (a key, a signature, a replay, a body too large), as opposed to the state of the
 * pipeline (429, 503) or the shape of the data (415, 400 PARSE_JSON).
 */
export const WEBHOOK_DENIALS: ReadonlySet<string> = new Set([
  'TOO_MANY_WRONG_KEYS',
  'UNAUTHENTICATED',
  'KEY_BUSY',
  'BODY_TIMEOUT',
  'FORBIDDEN',
  'MISSING_SIGNATURE',
  'BAD_ID',
  'TIMESTAMP_OUT_OF_TOLERANCE',
  'TOO_LARGE',
  'BAD_SIGNATURE',
  'REPLAY',
]);

/** Who was refused what: the `webhook.denied` audit event of one request. */
interface Caller {
  request: IncomingMessage;
  /** The route: `/webhooks/<vendor>` or `/admin/status`. */
  path: string;
  vendor: string | undefined;
  /** The key the access check recognised. */
  keyId: string | undefined;
  /** The presented key: only its id part (before the dot; not secret) is ever recorded. */
  token: string | undefined;
  permission: string;
  webhookId: string | undefined;
}

/** A webhook source: a {@link Source} that also tells where it listens and what it did. */
export interface WebhookSource extends Source<unknown> {
  /** Resolves with the base URL (`http://127.0.0.1:8080`) once the server listens. */
  url(): Promise<string>;
  readonly stats: WebhookStats;
  status(): SourceStatus;
}

type BodyFormat = 'json' | 'ndjson' | 'csv' | 'xml';
/** The formats split by a vendor's own splitter (its CSV layout, its XML record). */
type ParsedFormat = Exclude<BodyFormat, 'json' | 'ndjson'>;

/** Limits of one record (an NDJSON line, a CSV row, an XML record): those of `parse`. */
const RECORD_LIMITS = resolveRecordLimits();

const MEDIA_TYPES: Readonly<Record<string, BodyFormat>> = {
  'application/json': 'json',
  'application/x-ndjson': 'ndjson',
  'application/ndjson': 'ndjson',
  'application/jsonl': 'ndjson',
  'text/csv': 'csv',
  'application/xml': 'xml',
  'text/xml': 'xml',
};

interface Vendor {
  name: string;
  keys: KeyObject[];
  permission: string;
  /** The splitters of CSV and XML bodies; `xml` only when its record element is known. (JSON and NDJSON are split in the request's handler.) */
  splitters: Partial<Record<ParsedFormat, PayloadSplitter>>;
  /** Their options, for the splitters of bodies in a named charset (made when first asked for). */
  csv: CsvOptions | undefined;
  xml: XmlOptions | undefined;
  byCharset: Map<string, PayloadSplitter>;
}

/** The `charset` parameter of a Content-Type, quoted or not. */
const CHARSET = /;\s*charset\s*=\s*"?([^";\s]+)"?/i;

/** The splitter of a CSV or XML body in `encoding` (the vendor's own when the sender named none, or UTF-8). */
function splitterOf(vendor: Vendor, format: ParsedFormat, encoding: FileEncoding | undefined): PayloadSplitter {
  if (encoding === undefined || encoding === 'utf-8') return vendor.splitters[format]!;
  const key = `${format}:${encoding}`;
  let splitter = vendor.byCharset.get(key);
  if (!splitter) {
    splitter = documentSplitter(format, { ...(format === 'csv' ? { csv: vendor.csv } : { xml: vendor.xml }), encoding }, RECORD_LIMITS);
    vendor.byCharset.set(key, splitter);
  }
  return splitter;
}

/** A request whose records were emitted and whose answer waits for their fate. */
interface Pending {
  response: ServerResponse;
  id: string;
  /** `<vendor>/<id>`: the id in the replay store. */
  replayId: string;
  records: number;
  /** Until when the id is held once the records are stored. */
  heldUntil: number;
}

/** One subscription of the source: where its requests' records go. */
interface Listening {
  context: SourceContext;
  subscriber: Subscriber<Envelope<unknown>>;
  /** Hands a record on (one function for every request, not one per request). */
  emit: (part: Envelope<unknown>) => void;
  closed: boolean;
}

/**
 * Receives signed webhooks over HTTP(S), one route per vendor, and answers 2xx only once
 * every record of the request is durable (written, or dead-lettered).
 *
 * Each request is checked before its body is read: the client's recent wrong keys (429),
 * the API key's role (401/403), the media type (415), the signature headers and timestamp
 * (400/401), the declared size (413), the sink's breaker (503) and the key's requests in
 * progress (429). The body is then read up to `maxBodyBytes` (413 past it, and reading
 * stops) within `bodyTimeoutMs` (408), its HMAC-SHA256 signature checked against each
 * active secret (401), and only then the pipeline's credit taken (429) and its webhook id
 * in the replay store (409 when seen). JSON (an object or an array of them), NDJSON, CSV
 * and XML bodies become one record each per element, line, row or XML record element; bad
 * lines and rows are dead-lettered. A request whose records cannot be made durable gets
 * 503 and its id is freed, so the vendor's retry is accepted.
 *
 * With `audit`, every denial on the caller's account (key, wrong-key limit, key busy,
 * signature, timestamp, replay, size, body timeout) becomes a `webhook.denied` event in
 * the audit log. `access`'s own `onDecision` (e.g. `auditAccess(audit)`) sees the key
 * decisions too, but not signature, timestamp or replay refusals, which come after the key
 * is accepted.
 *
 * With a Kafka sink as buffer the answer works the same way: that sink acks on the
 * broker's acknowledgement, so 2xx means the records are in the topic.
 *
 * ## Example
 * ```ts
 * import { AccessControl, fromWebhook } from 'tributary';
 * const source = fromWebhook({
 *   port: 8443,
 *   tls: { key, cert },
 *   vendors: { acme: { secrets: [process.env.ACME_WEBHOOK_SECRET!] } },
 *   access: new AccessControl({ roles: { 'vendor-acme': ['webhook:post:acme'] }, keys }),
 * });
 * ```
 */
export function fromWebhook(options: FromWebhookOptions): WebhookSource {
  const name = options.name ?? 'webhook';
  const port = portOption(options.port, 8080);
  const host = options.host ?? '127.0.0.1';
  const prefix = options.path ?? '/webhooks';
  if (!/^(\/[A-Za-z0-9_.-]+)+$/.test(prefix)) throw new ConfigError(`path must look like /webhooks (segments of letters, digits, _ . -), got ${JSON.stringify(options.path)}`);
  if (!options.access || typeof options.access.decide !== 'function') throw new ConfigError('access is required: an AccessControl deciding who may post to which vendor');
  const access = options.access;
  const toleranceSeconds = positiveNumber(options.toleranceSeconds, 300, 'toleranceSeconds');
  const maxBodyBytes = positiveInteger(options.maxBodyBytes, 1024 * 1024, 'maxBodyBytes');
  const replayHoldMs = positiveInteger(options.replayHoldMs, 60_000, 'replayHoldMs');
  const retryAfter = String(positiveInteger(options.retryAfterSeconds, 1, 'retryAfterSeconds'));
  const requestTimeoutMs = positiveInteger(options.requestTimeoutMs, 30_000, 'requestTimeoutMs');
  const headersTimeoutMs = positiveInteger(options.headersTimeoutMs, Math.min(10_000, requestTimeoutMs), 'headersTimeoutMs');
  if (headersTimeoutMs > requestTimeoutMs) throw new ConfigError(`headersTimeoutMs must be <= requestTimeoutMs (${requestTimeoutMs}), got ${headersTimeoutMs}`);
  const bodyTimeoutMs = positiveInteger(options.bodyTimeoutMs, 20_000, 'bodyTimeoutMs');
  const maxRequestsPerKey = positiveInteger(options.maxRequestsPerKey, 64, 'maxRequestsPerKey');
  const wrongKeys = new WrongKeyLimiter(options.wrongKeyLimit);
  const keyParameter = options.apiKeyQueryParameter;
  if (keyParameter !== undefined && !(typeof keyParameter === 'string' && /^[A-Za-z0-9_.-]+$/.test(keyParameter))) {
    throw new ConfigError(`apiKeyQueryParameter must be a parameter name (letters, digits, _ . -), got ${JSON.stringify(keyParameter)}`);
  }
  /** Requests of each API key being handled: from accepted headers to the answer. */
  const requestsOfKey = new Map<string, number>();
  /**
   * The last allowed decision on each connection: a keep-alive sender presents the same key
   * for the same route request after request, and its secret is then hashed once. Reused
   * only for the same key (compared in constant time) and the same permission, and only
   * when `access` reports no decisions (its `onDecision` sees each one).
   */
  const allowedOnConnection = new WeakMap<Socket, { token: string; permission: string; decision: AccessDecision }>();
  if (options.replay !== undefined && options.peakRequestsPerSecond !== undefined) {
    throw new ConfigError('peakRequestsPerSecond sizes the default replay store: give it to your own store instead');
  }
  const replay = options.replay ?? new MemoryReplayStore({ peakRequestsPerSecond: options.peakRequestsPerSecond, toleranceSeconds });
  const vendors = resolveVendors(options.vendors);
  if (options.audit !== undefined && !(options.audit instanceof AuditLog)) throw new ConfigError('audit must be an AuditLog');
  const audit = options.audit;

  const stats: WebhookStats = { accepted: 0, records: 0, refused: {}, bodyBytesRead: 0, pending: 0, unaudited: 0, unconfirmed: 0 };
  // Weakly keyed: a Map churned by every request leaves behind, at each of its rehashes, a
  // dead table still holding the requests then in flight; once such a table is in the old
  // generation it keeps them (response, socket state, body) alive through young
  // collections, and they are promoted. Measured in the webhook benchmark: 2.7 KB promoted
  // per request and a full collection about every second with a Map, 0.2 KB with this.
  const pending = new WeakMap<Envelope<unknown>, Pending>();
  let pendingCount = 0;
  let server: Server | undefined;
  let announce!: (url: string) => void;
  const listening = new Promise<string>((resolve) => (announce = resolve));

  const refuse = (response: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}) => {
    stats.refused[code] = (stats.refused[code] ?? 0) + 1;
    if (response.headersSent || response.destroyed) return;
    response.writeHead(status, { 'content-type': 'application/json', ...headers });
    response.end(JSON.stringify({ error: code, message }));
  };

  /** Refuses on the caller's account: counted, answered, and recorded in `audit`. */
  const deny = (caller: Caller, response: ServerResponse, status: number, code: string, message: string, headers?: Record<string, string>) => {
    recordDenial(caller, status, code);
    refuse(response, status, code, message, headers);
  };

  /** A body over the limit, declared or found while reading: denied, and the connection closed. */
  const tooLarge = (caller: Caller, response: ServerResponse) => {
    recordDenial(caller, 413, 'TOO_LARGE');
    refuseAndClose(caller.request, response, 413, 'TOO_LARGE', `bodies are limited to ${maxBodyBytes} bytes`);
  };

  const countBodyBytes = (bytes: number) => {
    stats.bodyBytesRead += bytes;
  };

  /** Answers and then closes the connection, so the rest of an unread body is never read. */
  const refuseAndClose = (request: IncomingMessage, response: ServerResponse, status: number, code: string, message: string) => {
    request.pause();
    response.once('finish', () => request.socket.destroy());
    refuse(response, status, code, message, { connection: 'close' });
  };

  /**
   * Records a denial in `audit`. The request is refused whether or not this succeeds: a
   * full or failed audit log must not turn a refusal into an error, nor let a flood of bad
   * requests stop good ones; the miss is counted in `stats.unaudited` instead.
   */
  const recordDenial = (caller: Caller, status: number, code: string) => {
    if (!audit || !WEBHOOK_DENIALS.has(code)) return;
    const details: Record<string, unknown> = { source: name, method: caller.request.method ?? '', status, remoteAddress: caller.request.socket.remoteAddress ?? '', permission: caller.permission };
    if (caller.vendor !== undefined) details.vendor = caller.vendor;
    if (caller.webhookId !== undefined) details.webhookId = caller.webhookId;
    const presentedKeyId = caller.keyId === undefined ? presentedKeyIdOf(caller.token) : undefined;
    if (presentedKeyId !== undefined) details.presentedKeyId = presentedKeyId;
    try {
      audit.record({ type: 'webhook.denied', actor: caller.keyId ?? 'anonymous', target: caller.path, outcome: code, details });
    } catch {
      stats.unaudited++;
    }
  };

  function open(context: SourceContext): Observable<Envelope<unknown>> {
    return new Observable<Envelope<unknown>>((subscriber) => {
      const listening: Listening = { context, subscriber, emit: (part) => subscriber.next(part), closed: false };
      const handler = (request: IncomingMessage, response: ServerResponse) => {
        handle(request, response, listening).catch((error: unknown) => {
          refuse(response, 500, 'INTERNAL', error instanceof Error ? error.message : String(error));
        });
      };
      // Node checks these timeouts every connectionsCheckingInterval (30 s by default): often
      // enough that a slow sender is cut off near its deadline.
      const timeouts = { requestTimeout: requestTimeoutMs, headersTimeout: headersTimeoutMs, connectionsCheckingInterval: Math.max(100, Math.min(1000, headersTimeoutMs >> 1)) };
      server = options.tls ? createHttpsServer({ ...options.tls, ...timeouts }, handler) : createHttpServer(timeouts, handler);
      server.once('error', (cause: NodeJS.ErrnoException) => {
        subscriber.error(new ConnectorError(`webhook source ${name} cannot listen on ${host}:${port}: ${cause.code ?? cause.message}`, { cause }));
      });
      server.listen(port, host, () => {
        const address = server!.address() as AddressInfo;
        const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        announce(`${options.tls ? 'https' : 'http'}://${shownHost}:${address.port}`);
      });
      const shut = () => {
        if (listening.closed) return;
        listening.closed = true;
        // Requests already emitted are answered when their records settle; new ones get 503.
        server?.close();
        server?.closeIdleConnections();
        subscriber.complete();
      };
      context.signal.addEventListener('abort', shut, { once: true });
      return () => {
        context.signal.removeEventListener('abort', shut);
        shut();
      };
    });
  }

  async function handle(request: IncomingMessage, response: ServerResponse, listening: Listening): Promise<void> {
    const { context, subscriber } = listening;
    const url = request.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    const token = tokenOf(request, keyParameter);
    const caller: Caller = { request, path, vendor: undefined, keyId: undefined, token, permission: 'admin', webhookId: undefined };
    const wait = wrongKeys.waitSeconds(request.socket.remoteAddress ?? '');
    if (wait > 0) return deny(caller, response, 429, 'TOO_MANY_WRONG_KEYS', 'too many requests without a valid API key from this address', { 'retry-after': String(wait) });
    if (path === '/admin/status') {
      if (request.method !== 'GET') return refuse(response, 405, 'METHOD_NOT_ALLOWED', 'use GET', { allow: 'GET' });
      if (!allowed(token, caller, response)) return;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ source: name, ...status(), breaker: context.sinkBreakerState?.() ?? 'unknown', ...stats, pending: pendingCount }));
      return;
    }
    const vendor = path.startsWith(`${prefix}/`) ? vendors.get(path.slice(prefix.length + 1)) : undefined;
    if (!vendor) return refuse(response, 404, 'NOT_FOUND', `no route ${path}`);
    if (request.method !== 'POST') return refuse(response, 405, 'METHOD_NOT_ALLOWED', 'use POST', { allow: 'POST' });
    caller.vendor = vendor.name;
    caller.permission = vendor.permission;
    if (!allowed(token, caller, response)) return;

    const contentType = request.headers['content-type'] ?? '';
    const mediaType = contentType.split(';')[0]!.trim().toLowerCase();
    const format = MEDIA_TYPES[mediaType];
    if (!format || (format !== 'json' && format !== 'ndjson' && !vendor.splitters[format])) {
      return refuse(response, 415, 'UNSUPPORTED_MEDIA_TYPE', `content-type ${JSON.stringify(mediaType)} is not accepted for ${vendor.name}`);
    }
    // The charset the sender names: JSON is UTF-8 (RFC 8259); CSV and XML are read in any encoding files are.
    const charset = CHARSET.exec(contentType)?.[1];
    const encoding = charset === undefined ? undefined : encodingOf(charset);
    if (charset !== undefined && (encoding === undefined || ((format === 'json' || format === 'ndjson') && encoding !== 'utf-8'))) {
      return refuse(response, 415, 'UNSUPPORTED_CHARSET', `charset ${JSON.stringify(charset)} is not accepted for ${mediaType}: send ${format === 'json' || format === 'ndjson' ? 'UTF-8' : 'UTF-8, UTF-16, Latin-1 or Windows-1252'}`);
    }
    let splitter: PayloadSplitter | undefined;
    if (format === 'csv' || format === 'xml') {
      try {
        splitter = splitterOf(vendor, format, encoding);
      } catch (error) {
        // The vendor's CSV options name a character this charset cannot hold.
        return refuse(response, 415, 'UNSUPPORTED_CHARSET', `charset ${JSON.stringify(charset)} is not accepted for ${mediaType}: ${(error as Error).message}`);
      }
    }
    const id = header(request, SIGNATURE_HEADERS.id);
    const timestamp = header(request, SIGNATURE_HEADERS.timestamp);
    const signature = header(request, SIGNATURE_HEADERS.signature);
    if (!id || !timestamp || !signature) {
      return deny(caller, response, 400, 'MISSING_SIGNATURE', `${SIGNATURE_HEADERS.id}, ${SIGNATURE_HEADERS.timestamp} and ${SIGNATURE_HEADERS.signature} are required`);
    }
    if (id.length > 256 || !/^[\x21-\x7e]+$/.test(id)) return deny(caller, response, 400, 'BAD_ID', `${SIGNATURE_HEADERS.id} must be 1 to 256 visible ASCII characters`);
    caller.webhookId = id;
    const sentAt = /^\d{1,12}$/.test(timestamp) ? Number(timestamp) : NaN;
    if (!(Math.abs(Date.now() / 1000 - sentAt) <= toleranceSeconds)) {
      return deny(caller, response, 401, 'TIMESTAMP_OUT_OF_TOLERANCE', `${SIGNATURE_HEADERS.timestamp} must be within ${toleranceSeconds} s of now`);
    }
    const declared = request.headers['content-length'] === undefined ? undefined : Number(request.headers['content-length']);
    if (declared !== undefined && declared > maxBodyBytes) return tooLarge(caller, response);
    if (listening.closed) return refuse(response, 503, 'STOPPING', 'the source is stopping', { 'retry-after': retryAfter });
    if (context.sinkBreakerState?.() === 'open') {
      return refuse(response, 503, 'SINK_UNAVAILABLE', 'the sink is unavailable', { 'retry-after': retryAfter });
    }
    const keyId = caller.keyId!;
    const held = requestsOfKey.get(keyId) ?? 0;
    if (held >= maxRequestsPerKey) return deny(caller, response, 429, 'KEY_BUSY', `this key has ${maxRequestsPerKey} requests in progress`, { 'retry-after': retryAfter });
    requestsOfKey.set(keyId, held + 1);
    response.once('close', () => {
      const left = requestsOfKey.get(keyId)! - 1;
      if (left === 0) requestsOfKey.delete(keyId);
      else requestsOfKey.set(keyId, left);
    });
    // The body is read and its signature checked before any credit is taken: a sender
    // with a key but not the secret holds only its own per-key share, never the budget
    // that signed requests need.
    const body = await readBody(request, { limit: maxBodyBytes, timeoutMs: bodyTimeoutMs, onBytes: countBodyBytes });
    if (body === 'gone') return refuse(response, 400, 'CLIENT_GONE', 'the sender went away before the end of the body');
    if (body === 'tooLarge') return tooLarge(caller, response);
    // Bodies are signed and read as sent: a compressed one is refused before it is read.
    if (body === 'unsupportedEncoding' || body === 'corrupt') return refuseAndClose(request, response, 415, 'UNSUPPORTED_ENCODING', 'bodies are sent without Content-Encoding');
    if (body === 'timeout') {
      recordDenial(caller, 408, 'BODY_TIMEOUT');
      return refuseAndClose(request, response, 408, 'BODY_TIMEOUT', `the body must arrive within ${bodyTimeoutMs} ms`);
    }
    if (!signatureMatches(vendor.keys, id, timestamp, body, signature)) {
      return deny(caller, response, 401, 'BAD_SIGNATURE', 'the signature does not match the body with any active secret');
    }
    let records: unknown[] | undefined;
    if (format === 'json') {
      const refused = checkJsonBytes(body, 'the body');
      if (refused) return refuse(response, 400, refused.code, refused.message);
      records = jsonRecords(body);
      if (!records) return refuse(response, 400, 'PARSE_JSON', 'the body is not valid UTF-8 JSON');
    }
    const bytes = body.length;
    if (!context.credits.tryTake(bytes)) return refuse(response, 429, 'BUSY', 'too many records in flight', { 'retry-after': retryAfter });
    let emitted = false;
    const replayId = `${vendor.name}/${id}`;
    try {
      let claimed: ClaimResult;
      // Held briefly until the records are stored, then until the timestamp leaves the
      // tolerance: the id of a request whose process died before storing comes free for
      // the vendor's retry (with a store that outlives the process) instead of being refused.
      const heldUntil = (sentAt + toleranceSeconds) * 1000 + 1000;
      try {
        // The memory store answers at once: no await (and no extra turn) for it.
        const claim = replay.claim(replayId, replay.confirm ? Math.min(heldUntil, Date.now() + replayHoldMs) : heldUntil);
        claimed = claim instanceof Promise ? await claim : claim;
      } catch {
        // Without the store a replay cannot be told apart: refuse, the vendor retries.
        return refuse(response, 503, 'REPLAY_STORE_UNAVAILABLE', 'the replay store cannot be reached', { 'retry-after': retryAfter });
      }
      if (claimed === false) return deny(caller, response, 409, 'REPLAY', `webhook ${id} was already received`);
      // Not 409: the first request may yet fail, and a sender may take a 4xx as final.
      if (claimed === 'pending') return refuse(response, 503, 'IN_PROGRESS', `webhook ${id} is being received`, { 'retry-after': retryAfter });
      if (claimed === undefined) return refuse(response, 503, 'REPLAY_STORE_FULL', 'too many recent webhook ids', { 'retry-after': retryAfter });
      if (listening.closed || subscriber.closed) {
        await Promise.resolve(replay.release(replayId)).catch(() => undefined);
        return refuse(response, 503, 'STOPPING', 'the source is stopping', { 'retry-after': retryAfter });
      }
      const meta: RecordMeta = { source: name, vendor: vendor.name, key: id, position: replayId, receivedAt: Date.now(), attempt: 1 };
      const whole = context.envelope<unknown>(body, meta, body, bytes);
      emitted = true;
      const waiting: Pending = { response, id, replayId, records: records?.length ?? 0, heldUntil };
      pending.set(whole, waiting);
      pendingCount++;
      if (records) {
        const parts = whole.split(records);
        for (let i = 0; i < parts.length; i++) listening.emit(parts[i]!);
      } else if (format === 'ndjson') {
        // Parsed here, not through a parse step: no stream hop per request.
        waiting.records = emitNdjson(whole as Envelope<Uint8Array>, RECORD_LIMITS, listening.emit);
      } else {
        waiting.records = splitter!(whole as Envelope<Uint8Array>, listening.emit);
      }
    } finally {
      if (!emitted) context.credits.release(bytes);
    }
  }

  /** Asks `access` (which tells its own `onDecision`), keeps the key id for later denials, refuses with 401/403. */
  function allowed(token: string | undefined, caller: Caller, response: ServerResponse): boolean {
    const socket = caller.request.socket;
    const last = allowedOnConnection.get(socket);
    if (last && token !== undefined && last.permission === caller.permission && sameSecret(last.token, token)) {
      caller.keyId = last.decision.keyId;
      return true;
    }
    const decision: AccessDecision = access.decide(token, caller.permission, caller.path);
    caller.keyId = decision.keyId;
    if (decision.allowed) {
      if (token !== undefined && !access.reportsDecisions) allowedOnConnection.set(socket, { token, permission: caller.permission, decision });
      return true;
    }
    if (decision.outcome === 'UNAUTHENTICATED') wrongKeys.failed(caller.request.socket.remoteAddress ?? '');
    if (decision.outcome === 'UNAUTHENTICATED') deny(caller, response, 401, 'UNAUTHENTICATED', 'a valid API key is required', { 'www-authenticate': 'Bearer' });
    else deny(caller, response, 403, 'FORBIDDEN', `this key may not ${caller.permission}`);
    return false;
  }

  function status(): SourceStatus {
    const fill = replay.fill?.();
    return fill === undefined ? { connected: server?.listening ?? false } : { connected: server?.listening ?? false, replayFill: fill };
  }

  return {
    name,
    open,
    // Senders wait for their answer: a batch is written as soon as the sink is free.
    awaitsWrites: true,
    url: () => listening,
    status,
    get stats() {
      return { ...stats, refused: { ...stats.refused }, pending: pendingCount };
    },
    settled(envelope, error) {
      const waiting = pending.get(envelope);
      if (!waiting) return;
      pending.delete(envelope);
      pendingCount--;
      const { response, id } = waiting;
      if (error) {
        // The records were not stored: free the id so the vendor's retry gets in.
        void Promise.resolve(replay.release(waiting.replayId)).catch(() => undefined);
        refuse(response, 503, 'NOT_STORED', `the records could not be stored: ${error.message}`, { 'retry-after': retryAfter });
        return;
      }
      const records = waiting.records;
      stats.accepted++;
      stats.records += records;
      if (!replay.confirm) return accept(response, id, records);
      // Stored: a replay is now refused (409) until the timestamp leaves the tolerance. A
      // confirmation that fails leaves the brief hold, and a later replay may get in (stored
      // twice, never lost); it is counted.
      // The memory store confirms at once: no promise (and no extra turns) for it.
      let confirmed: void | Promise<void> = undefined;
      try {
        confirmed = replay.confirm(waiting.replayId, waiting.heldUntil);
      } catch {
        stats.unconfirmed++;
      }
      if (confirmed instanceof Promise) void confirmed.catch(() => void stats.unconfirmed++).then(() => accept(response, id, records));
      else accept(response, id, records);
    },
  };
}

/** Answers 200 for a request whose records are stored (unless its sender has gone). */
function accept(response: ServerResponse, id: string, records: number): void {
  if (response.destroyed) return;
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end(`{"id":${JSON.stringify(id)},"records":${records}}`);
}

/** The records of a JSON body: the elements of an array, or the one value; `undefined` if it is not JSON. */
function jsonRecords(body: Buffer): unknown[] | undefined {
  try {
    // UTF-8 checked and a leading byte order mark dropped as for every payload.
    const value: unknown = JSON.parse(textOf(body));
    return Array.isArray(value) ? value : [value];
  } catch {
    return undefined;
  }
}

/** Whether two presented keys are the same, in time that depends on their length only. */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

function tokenOf(request: IncomingMessage, queryParameter: string | undefined): string | undefined {
  const presented = presentedKey(request);
  if (presented !== undefined || queryParameter === undefined) return presented;
  return new URL(request.url ?? '/', 'http://webhook').searchParams.get(queryParameter) ?? undefined;
}

/** The id part of a presented `<id>.<secret>` key, when it looks like a key id; never the secret. */
function presentedKeyIdOf(token: string | undefined): string | undefined {
  const dot = token?.indexOf('.') ?? -1;
  if (dot <= 0 || dot > 64) return undefined;
  const id = token!.slice(0, dot);
  return /^[A-Za-z0-9_-]+$/.test(id) ? id : undefined;
}

function resolveVendors(given: FromWebhookOptions['vendors']): Map<string, Vendor> {
  const vendors = new Map<string, Vendor>();
  for (const [name, vendor] of Object.entries(given ?? {})) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new ConfigError(`vendor names use letters, digits, _ and -, got ${JSON.stringify(name)}`);
    if (!Array.isArray(vendor?.secrets) || vendor.secrets.length === 0) throw new ConfigError(`vendors.${name}.secrets must hold at least one secret`);
    const splitters: Vendor['splitters'] = {
      csv: documentSplitter('csv', vendor.csv ? { csv: vendor.csv } : {}, RECORD_LIMITS),
    };
    if (vendor.xml) splitters.xml = documentSplitter('xml', { xml: vendor.xml }, RECORD_LIMITS);
    vendors.set(name, {
      name,
      keys: vendor.secrets.map((secret, i) => secretKey(secret, `vendors.${name}.secrets[${i}]`)),
      permission: `webhook:post:${name}`,
      splitters,
      csv: vendor.csv,
      xml: vendor.xml,
      byCharset: new Map(),
    });
  }
  if (vendors.size === 0) throw new ConfigError('vendors must name at least one vendor');
  return vendors;
}

