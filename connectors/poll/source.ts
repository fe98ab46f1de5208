import { isUtf8 } from 'node:buffer';
import { Observable, type Subscriber } from 'rxjs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConfigError, ConnectorError, VendorApiError } from '../../lib/errors';
import { nonNegativeInteger, positiveInteger } from '../../lib/options';
import { resolveRecordLimits, tooDeep, tooLarge, valueTooDeep, type RecordLimits } from '../../lib/limits';
import { resolveRetryOptions, retry, type ResolvedRetryOptions, type RetryOptions } from '../../lib/retry';
import type { Source, SourceContext, SourceStatus } from '../../lib/source';
import { fileCursorStore, type CursorStore, type PollCursor } from './cursorStore';
import { sleep } from '../../lib/sleep';
import { RateLimit } from './rateLimit';

/** `?page=1&per_page=100`, …: the next page is the next number; a short page is the last. */
export interface PagePagination {
  type: 'page';
  /** @default 'page' */
  param?: string;
  /** @default 'per_page' */
  sizeParam?: string;
  /** @default 100 */
  size?: number;
  /** Number of the first page. @default 1 */
  first?: number;
}

/** `?offset=0&limit=100`, …: a short page is the last. */
export interface OffsetPagination {
  type: 'offset';
  /** @default 'offset' */
  param?: string;
  /** @default 'limit' */
  limitParam?: string;
  /** @default 100 */
  limit?: number;
}

/** `?cursor=<token>` with the next token in the body; no token means the last page. */
export interface CursorPagination {
  type: 'cursor';
  /** @default 'cursor' */
  param?: string;
  /** Dot path of the next token in the response body. @default 'next_cursor' */
  next?: string;
}

/** The next page's URL in the `Link: <…>; rel="next"` header (RFC 8288), as GitHub and Shopify do. */
export interface LinkPagination {
  type: 'link';
}

export type Pagination = PagePagination | OffsetPagination | CursorPagination | LinkPagination;

/** Incremental sync: ask only for records changed since the highest value already stored. */
export interface WatermarkOptions {
  /** Query parameter the API filters on, e.g. `updated_since`. */
  param: string;
  /** The record field holding the change time (ISO 8601 text or a number), e.g. `updated_at`. */
  field: string;
  /** `since` of the very first sync. @default none: the first sync asks for everything */
  initial?: string | number;
}

export interface FromPollOptions extends RecordLimits {
  /** Names the source in `meta.source`. @default 'poll' */
  name?: string;
  /** Stamped on every record's `meta.vendor`. */
  vendor: string;
  /** The list endpoint, with any fixed query parameters. */
  url: string;
  pagination: Pagination;
  /** Dot path of the record array in a page's body. @default the body itself when it is an array, else `data` */
  records?: string;
  /** Record field that identifies it (`meta.key`), e.g. `id`. */
  key?: string;
  watermark?: WatermarkOptions;
  /** Headers of every request (authentication). */
  headers?: Readonly<Record<string, string>>;
  /** Request starts per second at most. @default 5 */
  requestsPerSecond?: number;
  /** Requests under way at once; page and offset pagination fetch that many pages ahead. @default 1 */
  concurrency?: number;
  /** Pause between the end of one sync and the start of the next. @default 60000 */
  intervalMs?: number;
  /** Stop after one complete sync instead of polling on. @default false */
  once?: boolean;
  /** Where the cursor is kept. Give this or `cursorFile`. */
  cursorStore?: CursorStore;
  /** A JSON file for the cursor (see {@link fileCursorStore}). */
  cursorFile?: string;
  /** Retries of a request that failed with a network error, 429 or 5xx; a Retry-After is honoured. @default { retries: 5, initialDelayMs: 500, maxDelayMs: 30000 } */
  retry?: RetryOptions;
  /** Time allowed for one request. @default 30000 */
  timeoutMs?: number;
  /**
   * Largest page body read, in bytes after any Content-Encoding is undone: a bigger page
   * (or a compression bomb) is refused as `PAGE_TOO_LARGE` once this much has arrived,
   * never held whole. @default 64 MiB
   */
  maxPageBytes?: number;
}

/** What a poller has done since it started. */
export interface PollStats {
  requests: number;
  pages: number;
  records: number;
  /** Requests answered 429 or 5xx, or lost, and tried again. */
  retries: number;
  /** Requests answered with a permanent 4xx, stored as dead letters. */
  deadLetteredRequests: number;
  /** Syncs run to their last page. */
  syncs: number;
}

export interface PollSource extends Source<unknown> {
  readonly stats: PollStats;
  status(): SourceStatus;
}

/** Redirects followed for one request (within the vendor's origin). */
const MAX_REDIRECTS = 5;

/** One fetched page, waiting for its records to settle before the cursor may pass it. */
interface PageTicket {
  /** Where the sync resumes after this page; `undefined` when it was the last. */
  next: string | number | undefined;
  /** Highest watermark field on the page. */
  highest: string | number | undefined;
  settled: boolean;
  failed: boolean;
  /** Tells the page's sync, which may move the cursor. */
  onSettled: () => void;
}

interface Fetched {
  items: unknown[];
  bytes: number;
  next: string | number | undefined;
}

/**
 * Polls a vendor's REST API page by page, with page, offset, cursor or Link-header
 * pagination, and an updated-since watermark for incremental syncs.
 *
 * Requests keep to `requestsPerSecond` and `concurrency`; network errors, 429 and 5xx are
 * retried with backoff, never sooner than the server's Retry-After. Any other 4xx is
 * permanent: the request is stored as a dead letter (counted in `stats`) and the sync
 * ends there, to be tried again at the next interval. Each page is one credit and its
 * records settle together; the cursor (resume point, then the new watermark at the end of
 * a sync) is saved only once every page up to it is acked, so a restart resumes without
 * loss. Pages fetched again after a crash, and items the API shows on two pages, arrive
 * twice: store them in a table that keeps one row per key (ReplacingMergeTree) or
 * `dedupe` them. The watermark is inclusive: records changed at exactly that time come again.
 *
 * ## Example
 * ```ts
 * import { fromPoll } from 'tributary';
 * const source = fromPoll({
 *   vendor: 'acme', url: 'https://api.acme.example/v2/bookings',
 *   pagination: { type: 'cursor', next: 'meta.next_cursor' },
 *   watermark: { param: 'updated_since', field: 'updated_at' },
 *   headers: { authorization: `Bearer ${process.env.ACME_TOKEN}` },
 *   requestsPerSecond: 2, cursorFile: './state/acme.cursor.json',
 * });
 * ```
 */
export function fromPoll(options: FromPollOptions): PollSource {
  const name = options.name ?? 'poll';
  if (typeof options.vendor !== 'string' || options.vendor === '') throw new ConfigError('vendor is required');
  let base: URL;
  try {
    base = new URL(options.url);
  } catch {
    throw new ConfigError(`url must be an absolute http(s) URL, got ${JSON.stringify(options.url)}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new ConfigError(`url must be an absolute http(s) URL, got ${JSON.stringify(options.url)}`);
  const pagination = resolvePagination(options.pagination);
  const concurrency = options.concurrency ?? 1;
  const limit = new RateLimit(options.requestsPerSecond ?? 5, concurrency);
  const intervalMs = nonNegativeInteger(options.intervalMs, 60_000, 'intervalMs');
  const limits = resolveRecordLimits(options);
  const timeoutMs = positiveInteger(options.timeoutMs, 30_000, 'timeoutMs');
  const maxPageBytes = positiveInteger(options.maxPageBytes, 64 * 1024 * 1024, 'maxPageBytes');
  if (!options.cursorStore === !options.cursorFile) throw new ConfigError('give exactly one of cursorStore and cursorFile: where the poller remembers its position');
  const store = options.cursorStore ?? fileCursorStore(options.cursorFile!);
  const retryOptions: ResolvedRetryOptions = resolveRetryOptions({ retries: 5, initialDelayMs: 500, maxDelayMs: 30_000, ...options.retry }, 'retry');
  if (options.watermark && (typeof options.watermark.param !== 'string' || typeof options.watermark.field !== 'string')) {
    throw new ConfigError('watermark.param and watermark.field must be strings');
  }
  const recordsPath = options.records === undefined ? undefined : options.records.split('.');
  const keyField = options.key;
  const headers = { accept: 'application/json', ...options.headers };

  const stats: PollStats = { requests: 0, pages: 0, records: 0, retries: 0, deadLetteredRequests: 0, syncs: 0 };
  let connected = false;
  let savedAt = Date.now();
  const tickets = new Map<Envelope<unknown>, PageTicket>();

  async function fetchPage(url: URL, signal: AbortSignal): Promise<{ body: unknown; items: unknown[]; bytes: number; link: string | null }> {
    return retry(
      (attempt) =>
        limit.run(async () => {
          if (attempt > 1) stats.retries++;
          stats.requests++;
          let response: Response;
          let bytes: Buffer;
          try {
            const requestSignal = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
            response = await fetchSameOrigin(url, requestSignal);
            bytes = await bodyOf(response, url);
          } catch (cause) {
            if (cause instanceof VendorApiError) throw cause;
            connected = false;
            throw new VendorApiError(`${url.href}: ${(cause as Error).message}`, 0, url.href, { cause });
          }
          // A lenient decoder would store bytes that are not UTF-8 as U+FFFD: refuse them.
          const utf8 = isUtf8(bytes);
          const text = bytes.toString('utf8');
          if (!response.ok) {
            const retryAfterMs = retryAfterOf(response.headers.get('retry-after'));
            const error = new VendorApiError(`${url.href} answered ${response.status}: ${text.slice(0, 200)}`, response.status, url.href, retryAfterMs === undefined ? {} : { retryAfterMs });
            (error as VendorApiError & { body?: string }).body = text;
            throw error;
          }
          connected = true;
          if (!utf8) throw new VendorApiError(`${url.href} answered with a body that is not UTF-8`, 0, url.href);
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch (cause) {
            throw new VendorApiError(`${url.href} answered with a body that is not JSON`, 0, url.href, { cause });
          }
          // A page without its record array is damaged like one that is not JSON: asked for again.
          const items = recordsPath ? at(body, recordsPath) : Array.isArray(body) ? body : at(body, ['data']);
          if (!Array.isArray(items)) throw new VendorApiError(`${url.href}: no record array at ${options.records ?? 'data'}`, 0, url.href);
          return { body, items, bytes: bytes.length, link: response.headers.get('link') };
        }, signal),
      { ...retryOptions, signal },
    );
  }

  /**
   * Fetches `url`, following redirects within its origin only: the request headers carry
   * the vendor's credentials, and a redirect to another host would hand them over.
   */
  async function fetchSameOrigin(url: URL, requestSignal: AbortSignal): Promise<Response> {
    let at = url;
    for (let redirects = 0; ; redirects++) {
      const response = await fetch(at, { headers, signal: requestSignal, redirect: 'manual' });
      const location = response.status >= 300 && response.status < 400 ? response.headers.get('location') : null;
      if (location === null) return response;
      await response.body?.cancel();
      const next = new URL(location, at);
      if (next.origin !== base.origin) {
        throw new VendorApiError(`${url.href} redirected to ${next.origin}, another origin: the request's headers are not sent there (set url to it if it is the vendor's)`, 0, url.href, { code: 'FOREIGN_REDIRECT', retriable: false });
      }
      if (redirects === MAX_REDIRECTS) throw new VendorApiError(`${url.href}: more than ${MAX_REDIRECTS} redirects`, 0, url.href, { code: 'TOO_MANY_REDIRECTS', retriable: false });
      at = next;
    }
  }

  /** The response body, refused once it passes `maxPageBytes` (counted as it arrives, decompressed). */
  async function bodyOf(response: Response, url: URL): Promise<Buffer> {
    const chunks: Uint8Array[] = [];
    let length = 0;
    if (!response.body) return Buffer.alloc(0);
    for await (const chunk of response.body) {
      length += chunk.byteLength;
      if (length > maxPageBytes) {
        await response.body.cancel().catch(() => undefined);
        throw new VendorApiError(`${url.href}: the page is over maxPageBytes (${maxPageBytes} bytes): ask for smaller pages or raise maxPageBytes`, 0, url.href, { code: 'PAGE_TOO_LARGE', retriable: false });
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, length);
  }

  /** The page at `position` (a page number, an offset, a cursor token or a URL) and where the next one is. */
  async function fetchAt(position: string | number | undefined, since: string | number | undefined, signal: AbortSignal): Promise<Fetched> {
    let url: URL;
    if (pagination.type === 'link' && typeof position === 'string') {
      url = new URL(position);
      // The next link comes from the vendor's answer: it is followed within the vendor's origin only.
      if (url.origin !== base.origin) {
        throw new VendorApiError(`the next page link ${url.href} points to another origin than ${base.origin}: the request's headers are not sent there`, 0, position, { code: 'FOREIGN_LINK', retriable: false });
      }
    } else {
      url = new URL(base);
      if (since !== undefined && options.watermark) url.searchParams.set(options.watermark.param, String(since));
      if (pagination.type === 'page') {
        url.searchParams.set(pagination.param, String(position));
        url.searchParams.set(pagination.sizeParam, String(pagination.size));
      } else if (pagination.type === 'offset') {
        url.searchParams.set(pagination.param, String(position));
        url.searchParams.set(pagination.limitParam, String(pagination.limit));
      } else if (pagination.type === 'cursor' && position !== undefined) {
        url.searchParams.set(pagination.param, String(position));
      }
    }
    const { body, items, bytes, link } = await fetchPage(url, signal);
    let next: string | number | undefined;
    if (pagination.type === 'page') next = items.length < pagination.size ? undefined : (position as number) + 1;
    else if (pagination.type === 'offset') next = items.length < pagination.limit ? undefined : (position as number) + pagination.limit;
    else if (pagination.type === 'cursor') {
      const token = at(body, pagination.next);
      next = token === undefined || token === null || token === '' ? undefined : String(token);
    } else {
      const href = nextLink(link);
      next = href === undefined ? undefined : new URL(href, url).href;
    }
    return { items, bytes, next };
  }

  function open(context: SourceContext): Observable<Envelope<unknown>> {
    return new Observable<Envelope<unknown>>((subscriber) => {
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      context.signal.addEventListener('abort', onAbort, { once: true });
      poll(context, subscriber, stop.signal).then(
        () => subscriber.complete(),
        (error: unknown) => subscriber.error(error instanceof ConnectorError ? error : new ConnectorError(`poller ${name} failed: ${String(error)}`, { cause: error })),
      );
      return () => {
        context.signal.removeEventListener('abort', onAbort);
        stop.abort();
      };
    });
  }

  async function poll(context: SourceContext, subscriber: Subscriber<Envelope<unknown>>, signal: AbortSignal): Promise<void> {
    let cursor: PollCursor = (await store.load()) ?? { savedAt: Date.now() };
    if (cursor.watermark === undefined && options.watermark?.initial !== undefined) cursor.watermark = options.watermark.initial;
    savedAt = cursor.savedAt;
    while (!signal.aborted) {
      const outcome = await sync(cursor, context, subscriber, signal);
      cursor = outcome.cursor;
      if (outcome.error && options.once) throw outcome.error;
      if (options.once && outcome.complete) return;
      if (options.once && outcome.deadLettered) return;
      await sleep(intervalMs, signal);
    }
  }

  /** Runs one sync from `cursor` to the last page, or until a request fails for good. */
  async function sync(
    start: PollCursor,
    context: SourceContext,
    subscriber: Subscriber<Envelope<unknown>>,
    signal: AbortSignal,
  ): Promise<{ cursor: PollCursor; complete: boolean; deadLettered?: boolean; error?: unknown }> {
    const since = start.watermark;
    let position: string | number | undefined = start.resume ?? (pagination.type === 'page' ? pagination.first : pagination.type === 'offset' ? 0 : undefined);
    let highest = start.highest ?? since;
    let saved = start;
    const order: PageTicket[] = [];
    let saving = Promise.resolve();
    let allSettled: (() => void) | undefined;
    let failure: unknown;

    /** Moves the cursor past every leading page whose records are all acked. */
    const advance = () => {
      let moved = false;
      while (order.length > 0 && order[0]!.settled) {
        const ticket = order.shift()!;
        if (ticket.failed) {
          // A page that could not be stored stops the cursor; the pipeline fails anyway.
          order.length = 0;
          break;
        }
        highest = max(highest, ticket.highest);
        saved = ticket.next === undefined ? { watermark: highest, savedAt: Date.now() } : { watermark: since, resume: ticket.next, highest, savedAt: Date.now() };
        if (saved.watermark === undefined) delete saved.watermark;
        if (saved.highest === undefined) delete saved.highest;
        moved = true;
      }
      if (moved) {
        const snapshot = saved;
        saving = saving.then(async () => {
          await store.save(snapshot);
          savedAt = snapshot.savedAt;
        });
        saving.catch((error: unknown) => (failure ??= error));
      }
      if (order.length === 0) allSettled?.();
    };

    const emit = async (fetched: Fetched, at: string | number | undefined) => {
      const wait = context.credits.take(fetched.bytes);
      if (wait) await wait;
      stats.pages++;
      stats.records += fetched.items.length;
      const ticket: PageTicket = { next: fetched.next, highest: highestOf(fetched.items), settled: false, failed: false, onSettled: advance };
      order.push(ticket);
      const label = `${options.vendor}@${since ?? ''}/${at ?? 'start'}`;
      const meta: RecordMeta = { source: name, vendor: options.vendor, position: label, receivedAt: Date.now(), attempt: 1 };
      const page = context.envelope<unknown>(fetched.items, meta, undefined, fetched.bytes);
      tickets.set(page, ticket);
      const parts = page.split(fetched.items);
      if (keyField !== undefined) for (const part of parts) part.meta.key = keyOf(part.value, keyField);
      // No item can be over the size limit when the whole page is not.
      const sizeOf = fetched.bytes > limits.maxRecordBytes ? (item: unknown) => Buffer.byteLength(JSON.stringify(item) ?? '') : () => 0;
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]!;
        const what = `item ${i + 1} of ${label}`;
        if (valueTooDeep(part.value, limits.maxDepth)) {
          // Nothing can write it out without the stack it would exhaust: the dead letter says so, empty.
          part.raw = '';
          part.reject(tooDeep(what, limits));
          continue;
        }
        const refused = tooLarge(what, sizeOf(part.value), limits);
        if (refused) part.reject(refused);
        else subscriber.next(part);
      }
    };

    try {
      if (pagination.type === 'page' || pagination.type === 'offset') {
        // Positions are known ahead: keep `concurrency` pages under way, emit them in order.
        const step = pagination.type === 'page' ? 1 : pagination.limit;
        const ahead: { at: number; page: Promise<Fetched> }[] = [];
        let nextAt = position as number;
        for (;;) {
          while (ahead.length < concurrency) {
            const at = nextAt;
            const page = fetchAt(at, since, signal);
            page.catch(() => undefined);
            ahead.push({ at, page });
            nextAt += step;
          }
          const { at, page } = ahead.shift()!;
          const fetched = await page;
          if (signal.aborted) break;
          await emit(fetched, at);
          if (fetched.next === undefined) break;
        }
      } else {
        for (;;) {
          const fetched = await fetchAt(position, since, signal);
          if (signal.aborted) break;
          await emit(fetched, position);
          if (fetched.next === undefined) break;
          position = fetched.next;
        }
      }
    } catch (error) {
      if (!signal.aborted) failure = error;
    }
    // The cursor moves as pages settle: wait for the pages of this sync, then for their save.
    if (order.length > 0) await new Promise<void>((resolve) => (allSettled = resolve));
    await saving.catch(() => undefined);
    if (failure instanceof VendorApiError && !failure.retriable) {
      stats.deadLetteredRequests++;
      const body = (failure as VendorApiError & { body?: string }).body ?? '';
      const meta: RecordMeta = { source: name, vendor: options.vendor, position: failure.url, receivedAt: Date.now(), attempt: 1 };
      const wait = context.credits.take(body.length);
      if (wait) await wait;
      context.reject(meta, body, body.length, { stage: 'poll', code: failure.code, message: failure.message, path: '' });
      return { cursor: saved, complete: false, deadLettered: true };
    }
    if (failure !== undefined) {
      connected = false;
      return { cursor: saved, complete: false, error: failure };
    }
    if (signal.aborted) return { cursor: saved, complete: false };
    stats.syncs++;
    return { cursor: saved, complete: true };
  }

  function highestOf(items: readonly unknown[]): string | number | undefined {
    if (!options.watermark) return undefined;
    const field = options.watermark.field;
    let highest: string | number | undefined;
    for (let i = 0; i < items.length; i++) {
      const value = (items[i] as Record<string, unknown> | null)?.[field];
      if (typeof value === 'string' || typeof value === 'number') highest = max(highest, value);
    }
    return highest;
  }

  return {
    name,
    open,
    get stats() {
      return { ...stats };
    },
    status() {
      return { connected, cursorAgeSeconds: Math.max(0, (Date.now() - savedAt) / 1000) };
    },
    settled(envelope, error) {
      const ticket = tickets.get(envelope);
      if (!ticket) return;
      tickets.delete(envelope);
      ticket.settled = true;
      ticket.failed = error !== undefined;
      ticket.onSettled();
    },
  };
}

function resolvePagination(given: Pagination): Required<PagePagination> | Required<OffsetPagination> | Required<CursorPagination> | LinkPagination {
  const type = (given as { type?: unknown } | undefined)?.type;
  switch (type) {
    case 'page': {
      const p = given as PagePagination;
      const size = positiveInteger(p.size, 100, 'pagination.size');
      const first = nonNegativeInteger(p.first, 1, 'pagination.first');
      return { type, param: p.param ?? 'page', sizeParam: p.sizeParam ?? 'per_page', size, first } as const;
    }
    case 'offset': {
      const p = given as OffsetPagination;
      return { type, param: p.param ?? 'offset', limitParam: p.limitParam ?? 'limit', limit: positiveInteger(p.limit, 100, 'pagination.limit') } as const;
    }
    case 'cursor': {
      const p = given as CursorPagination;
      return { type, param: p.param ?? 'cursor', next: p.next ?? 'next_cursor' };
    }
    case 'link':
      return { type };
    default:
      throw new ConfigError(`pagination.type must be one of 'page', 'offset', 'cursor', 'link', got ${JSON.stringify(type)}`);
  }
}

function at(body: unknown, path: string | readonly string[]): unknown {
  let value = body;
  for (const step of typeof path === 'string' ? path.split('.') : path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[step];
  }
  return value;
}

function keyOf(item: unknown, field: string): string | undefined {
  const value = (item as Record<string, unknown> | null)?.[field];
  return value === undefined || value === null ? undefined : String(value);
}

function max(a: string | number | undefined, b: string | number | undefined): string | number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b > a ? b : a;
}

/** `Link: <https://…?page=3>; rel="next", <…>; rel="last"` → the next URL. */
function nextLink(header: string | null): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const match = /<([^>]*)>(.*)/.exec(part.trim());
    if (match && /;\s*rel="?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)/i.test(match[2]!)) return match[1];
  }
  return undefined;
}

/** Retry-After as seconds or an HTTP date, in ms. */
function retryAfterOf(header: string | null): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
