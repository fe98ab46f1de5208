/**
 * A fake vendor REST API, our own fixture, for the poller's tests: bookings listed with
 * page, offset, cursor or Link-header pagination, filtered by `updated_since`, with the
 * faults real vendor APIs have.
 *
 *   GET /page?page=1&per_page=50     GET /offset?offset=0&limit=50
 *   GET /cursor?cursor=…&limit=50    GET /link?page=1&per_page=50   (Link: <…>; rel="next")
 *   every one takes updated_since=<ISO time> (inclusive) and answers { data: [...] }
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Item {
  id: string;
  updated_at: string;
  /** Renamed `amount` for items past `renameAfter`. */
  price?: number;
  amount?: number;
  guest: string;
}

export interface VendorFaults {
  /** Delay of every page answer, ms. */
  slowMs?: number;
  /** After every `every` answered requests, the next `count` get 429 with `Retry-After: retryAfterSeconds`. */
  burst429?: Burst;
  /** The same with 503 (down for maintenance, `Retry-After: retryAfterSeconds`). */
  burst503?: Burst;
  /** Every `every`-th request gets a 500. */
  error500Every?: number;
  /** Each page after the first starts with the last item of the page before (an item shown on two pages). */
  duplicates?: boolean;
  /** Items numbered above this carry `amount` instead of `price` (a field renamed mid-stream). */
  renameAfter?: number;
  /** Pages (by number, or by offset ÷ limit + 1) answered 404, permanently. */
  missingPages?: readonly number[];
  /** Pages answered 200 with a damaged body, the first `times` times they are asked for (Infinity: always). */
  corruptPages?: ReadonlyMap<number, { kind: Corruption; times: number }>;
  /** Items (by number, 1-based) whose `guest` is nested deeper than any limit, or longer than 1 MiB. */
  hostileItems?: ReadonlyMap<number, 'deep' | 'huge'>;
}

/** The body with bytes that are not UTF-8 inside its first string value (where a lenient decoder would hide them as U+FFFD). */
function withInvalidUtf8(body: Buffer): Buffer {
  const at = body.indexOf('"guest":"');
  const cut = at < 0 ? 9 : at + '"guest":"'.length;
  return Buffer.concat([body.subarray(0, cut), Buffer.from([0xff, 0xfe, 0xc3]), body.subarray(cut)]);
}

/** How a page's body is damaged: cut mid-way, bytes that are not UTF-8 inside a string, HTML from a proxy, or JSON without the record array. */
export type Corruption = 'truncated' | 'invalid-utf8' | 'html' | 'no-array';

/** After every `every` answered requests, the next `count` are refused with a `Retry-After`. */
export interface Burst {
  every: number;
  count: number;
  retryAfterSeconds: number;
}

export interface ServedRequest {
  at: number;
  path: string;
  status: number;
  /** Requests being answered at this one's start, this one included. */
  concurrent: number;
  /** Items in the answer's data (200 answers only; 0 for a damaged one). */
  items?: number;
  /** Set when the answer's body was damaged. */
  corrupted?: Corruption;
}

const BASE_TIME = Date.parse('2026-01-01T00:00:00Z');

export class VendorApi {
  readonly items: Item[] = [];
  readonly served: ServedRequest[] = [];
  faults: VendorFaults;
  /** The bearer token every request must carry. */
  readonly token = 'vendor-token';
  #server: Server | undefined;
  #running = 0;
  /** Per burst status: answers since the last burst, and refusals left in the current one. */
  #bursts = { 429: { since: 0, left: 0 }, 503: { since: 0, left: 0 } };
  #clock = 0;
  /** Damaged answers given per page so far. */
  #corrupted = new Map<number, number>();

  constructor(count: number, faults: VendorFaults = {}) {
    this.faults = faults;
    for (let i = 1; i <= count; i++) this.add();
  }

  /** A new booking, changed last now (in the fixture's own clock: a second per change). */
  add(): Item {
    const n = this.items.length + 1;
    const item: Item = { id: `BK-${String(n).padStart(6, '0')}`, updated_at: this.#tick(), guest: `guest ${n}` };
    if (this.faults.renameAfter !== undefined && n > this.faults.renameAfter) item.amount = n * 1.5;
    else item.price = n * 1.5;
    const hostile = this.faults.hostileItems?.get(n);
    if (hostile === 'deep') (item as unknown as { guest: unknown }).guest = JSON.parse('['.repeat(200) + ']'.repeat(200));
    if (hostile === 'huge') item.guest = 'g'.repeat(1024 * 1024 + 1);
    this.items.push(item);
    return item;
  }

  /** Changes an item: it moves to the end of the list ordered by update time. */
  touch(id: string): void {
    const index = this.items.findIndex((i) => i.id === id);
    const [item] = this.items.splice(index, 1);
    item!.updated_at = this.#tick();
    item!.guest += ' (changed)';
    this.items.push(item!);
  }

  #tick(): string {
    return new Date(BASE_TIME + ++this.#clock * 1000).toISOString();
  }

  async start(): Promise<string> {
    this.#server = createServer((request, response) => {
      this.#running++;
      const entry: ServedRequest = { at: Date.now(), path: request.url ?? '', status: 200, concurrent: this.#running };
      this.served.push(entry);
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        entry.status = status;
        const send = () => {
          this.#running--;
          response.writeHead(status, { 'content-type': 'application/json', ...headers });
          response.end(JSON.stringify(body));
        };
        if (this.faults.slowMs && status === 200) setTimeout(send, this.faults.slowMs);
        else send();
      };
      if (request.headers.authorization !== `Bearer ${this.token}`) return answer(401, { error: 'unauthorized' });
      const bursts = [
        [429, this.faults.burst429, 'slow down'],
        [503, this.faults.burst503, 'down for maintenance'],
      ] as const;
      for (const [status, burst, error] of bursts) {
        if (burst && this.#bursts[status].left > 0) {
          this.#bursts[status].left--;
          return answer(status, { error }, { 'retry-after': String(burst.retryAfterSeconds) });
        }
      }
      if (this.faults.error500Every && this.served.length % this.faults.error500Every === 0) return answer(500, { error: 'oops' });
      const url = new URL(request.url ?? '/', 'http://vendor');
      const since = url.searchParams.get('updated_since');
      const listed = since === null ? this.items : this.items.filter((i) => i.updated_at >= since);
      const route = url.pathname;
      let page: number;
      let size: number;
      let next: Record<string, unknown> = {};
      let headers: Record<string, string> = {};
      if (route === '/page' || route === '/link') {
        page = Number(url.searchParams.get('page') ?? 1);
        size = Number(url.searchParams.get('per_page') ?? 50);
      } else if (route === '/offset') {
        size = Number(url.searchParams.get('limit') ?? 50);
        page = Number(url.searchParams.get('offset') ?? 0) / size + 1;
      } else if (route === '/cursor') {
        size = Number(url.searchParams.get('limit') ?? 50);
        const cursor = url.searchParams.get('cursor');
        page = cursor === null ? 1 : Number(Buffer.from(cursor, 'base64url').toString().slice('p'.length));
      } else return answer(404, { error: `no route ${route}` });
      if (this.faults.missingPages?.includes(page)) return answer(404, { error: `page ${page} is gone` });
      const start = (page - 1) * size;
      const data = listed.slice(this.faults.duplicates && page > 1 ? start - 1 : start, start + size);
      const more = start + size < listed.length;
      if (route === '/cursor' && more) next = { next_cursor: Buffer.from(`p${page + 1}`).toString('base64url') };
      if (route === '/link' && more) {
        const following = new URL(url);
        following.searchParams.set('page', String(page + 1));
        headers = { link: `<${following.pathname}${following.search}>; rel="next", </link?page=1>; rel="first"` };
      }
      for (const [status, burst] of bursts) {
        if (burst && ++this.#bursts[status].since >= burst.every) {
          this.#bursts[status].since = 0;
          this.#bursts[status].left = burst.count;
        }
      }
      entry.items = data.length;
      const damage = this.faults.corruptPages?.get(page);
      const given = this.#corrupted.get(page) ?? 0;
      if (damage && given < damage.times) {
        this.#corrupted.set(page, given + 1);
        entry.items = 0;
        entry.corrupted = damage.kind;
        const whole = Buffer.from(JSON.stringify({ data, ...next }));
        const body =
          damage.kind === 'truncated' ? whole.subarray(0, Math.max(1, whole.length >> 1))
          : damage.kind === 'invalid-utf8' ? withInvalidUtf8(whole)
          : damage.kind === 'html' ? Buffer.from('<html><body>502 Bad Gateway</body></html>')
          : Buffer.from(JSON.stringify({ data: { items: data }, ...next }));
        this.#running--;
        response.writeHead(200, { 'content-type': 'application/json', ...headers });
        response.end(body);
        return;
      }
      answer(200, { data, ...next }, headers);
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}
