import { randomUUID } from 'node:crypto';
import { Counter, Gauge, register as globalRegistry, Registry } from 'prom-client';
import { MAX_TIME_MS } from '../../lib/dates';
import { ConfigError, TributaryError } from '../../lib/errors';
import { nonNegativeInteger } from '../../lib/options';
import { quoteIdentifier, type ClickHouseClient } from '../../lib/store';
import { CacheKeys, execPuts, onPipeline, queuePuts, redisClient, resolveLayout, storedBooking, TAG_LENGTH, timeMs, type RedisCacheLayoutOptions, type RedisConnectionOptions } from './cache';

export interface RecentBookingsOptions extends RedisCacheLayoutOptions {
  /** The cache's Redis: `{ url }`, `{ url, redis: { username, password, tls } }` or `{ client }`. Same layout options as the `toRedisCache` that fills it. */
  redis: RedisConnectionOptions;
  /** Where bookings are read through to on a miss or a stale cache (read with FINAL). */
  clickhouse: ClickHouseClient;
  /** The ClickHouse table. @default 'bookings' */
  table?: string;
  /** Whether a booking read through to ClickHouse is put into the cache. @default true */
  fill?: boolean;
  /**
   * Also stale while this says so, e.g. `() => sinks.stale` of the `fanOut` in this
   * process, which knows of batches the cache missed before Redis does. @default none
   */
  stale?: () => boolean;
  /** Where the cache metrics go: a prom-client Registry, or `'global'`. @default a new Registry, in `.registry` */
  registry?: Registry | 'global';
  /** Names the cache in the metrics' `cache` label. @default the prefix */
  name?: string;
  /**
   * How long reads trust the last look at whether Redis holds a complete cache, ms: a
   * lost Redis is noticed this late, and reads cost one round trip instead of two. `isStale()`
   * always looks. @default 1000
   */
  staleCheckMs?: number;
}

/** A time range, inclusive, as epoch ms, `Date`s or ISO 8601 text. */
export interface TimeRange {
  from: number | Date | string;
  to: number | Date | string;
}

/** Reads recent bookings from the cache, through to ClickHouse when the cache cannot answer. */
export interface RecentBookings<R = Record<string, unknown>> {
  readonly registry: Registry;
  /** The booking named by its key parts (vendor first, as `keyFields`), or undefined. */
  get(...key: string[]): Promise<R | undefined>;
  /** A vendor's bookings whose time is in `range`, by time. */
  byVendor(vendor: string, range: TimeRange): Promise<R[]>;
  /** A customer token's bookings whose time is in `range`, by time (needs `customerField`). */
  byCustomer(customer: string, range: TimeRange): Promise<R[]>;
  /** Whether reads now go to ClickHouse: the cache was not warmed, lost data, or `stale()` says so. */
  isStale(): Promise<boolean>;
  /** Rebuilds the bookings of the last TTL from ClickHouse (streamed: memory stays flat for any number) and marks the cache complete; resolves with the rows put. */
  warm(): Promise<number>;
  readonly counts: { hits: number; misses: number };
  close(): Promise<void>;
}

/** The first and last times a ClickHouse DateTime64 holds, epoch ms. */
const CLICKHOUSE_FIRST = Date.UTC(1900, 0, 1);
const CLICKHOUSE_LAST = Date.UTC(2299, 11, 31, 23, 59, 59, 999);

/** Rows warm() puts in one round trip. */
const WARM_ROWS = 5000;

/**
 * Reads the bookings a `toRedisCache` keeps: by key, or by vendor or customer token and
 * time range. A miss, a range older than the TTL or touching a booking too far ahead to
 * cache (`maxAheadMs`), or a stale cache reads through to
 * ClickHouse (`FINAL`, so the latest version), and by default fills the cache. The cache
 * counts as complete only after `warm()`; a Redis that lost its data, or a cache sink
 * that missed a batch, makes it stale again until the next `warm()`.
 *
 * Metrics: `tributary_cache_hits_total`, `tributary_cache_misses_total` and
 * `tributary_cache_stale` (1 while reads go to ClickHouse), labelled `cache`.
 *
 * ## Example
 * ```ts
 * import { recentBookings } from 'tributary/redis';
 * const bookings = recentBookings({ redis: { url: 'redis://127.0.0.1:6379' }, clickhouse });
 * await bookings.warm();
 * const booking = await bookings.get('acme', 'B-1001');
 * const today = await bookings.byVendor('acme', { from: Date.now() - 86_400_000, to: Date.now() });
 * ```
 */
export function recentBookings<R = Record<string, unknown>>(options: RecentBookingsOptions): RecentBookings<R> {
  if (!options?.clickhouse) throw new ConfigError('clickhouse is required: embeddedClickHouse() or a server client');
  if (!options.redis) throw new ConfigError('redis is required: { url } or { client }');
  const layout = resolveLayout(options);
  const table = options.table ?? 'bookings';
  if (typeof table !== 'string' || !/^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)?$/.test(table)) {
    throw new ConfigError(`table must be a name like bookings or db.bookings, got ${JSON.stringify(options.table)}`);
  }
  if (options.stale !== undefined && typeof options.stale !== 'function') throw new ConfigError('stale must be a function returning a boolean');
  const staleCheckMs = nonNegativeInteger(options.staleCheckMs, 1000, 'staleCheckMs');
  const registry = options.registry === 'global' ? globalRegistry : (options.registry ?? new Registry());
  if (!(registry instanceof Registry)) throw new ConfigError(`registry must be a prom-client Registry or 'global', got ${String(options.registry)}`);
  const { client, close: closeClient } = redisClient(options.redis, 'recentBookings redis');
  const keys = new CacheKeys(layout);
  const clickhouse = options.clickhouse;
  const fill = options.fill ?? true;
  const label = { cache: options.name ?? layout.prefix };
  const counts = { hits: 0, misses: 0 };

  const metric = <M>(name: string, make: () => M): M => (registry.getSingleMetric(name) as M | undefined) ?? make();
  const hits = metric('tributary_cache_hits_total', () => new Counter({ name: 'tributary_cache_hits_total', help: 'Cache reads answered by Redis', labelNames: ['cache'], registers: [registry] }));
  const misses = metric('tributary_cache_misses_total', () => new Counter({ name: 'tributary_cache_misses_total', help: 'Cache reads answered by ClickHouse: a miss, a range the cache does not hold (older than the TTL, or where a booking too far ahead to cache lies), or a stale cache', labelNames: ['cache'], registers: [registry] }));
  const staleGauge = metric('tributary_cache_stale', () => new Gauge({ name: 'tributary_cache_stale', help: '1 while the cache is known incomplete and reads go to ClickHouse', labelNames: ['cache'], registers: [registry] }));
  const hit = () => {
    counts.hits++;
    hits.inc(label);
  };
  const miss = () => {
    counts.misses++;
    misses.inc(label);
  };

  /** What Redis said last: whether it holds a complete cache, and when it was asked. */
  let looked = { at: -Infinity, complete: false };
  /** What this reader last set the stale gauge to: between looks it is set only when that changes. */
  let shown: boolean | undefined;
  const isStale = async (): Promise<boolean> => {
    let complete: boolean;
    try {
      complete = (await client.exists(keys.fresh)) === 1;
    } catch {
      complete = false; // Redis cannot be reached: ClickHouse answers
    }
    looked = { at: performance.now(), complete };
    const stale = !complete || options.stale?.() === true;
    staleGauge.set(label, stale ? 1 : 0);
    shown = stale;
    return stale;
  };
  /** Synchronous while the last look is recent: a read then awaits nothing but its own command. */
  const staleForRead = (): boolean | Promise<boolean> => {
    if (performance.now() - looked.at >= staleCheckMs) return isStale();
    const stale = !looked.complete || options.stale?.() === true;
    if (stale !== shown) {
      staleGauge.set(label, stale ? 1 : 0);
      shown = stale;
    }
    return stale;
  };

  /** The latest version of the bookings `where` picks, as JSON rows (JSONEachRow), by time when `byTime`. */
  const rowsWhere = (where: string, params: Record<string, string>, byTime: boolean): AsyncIterable<Uint8Array> => {
    const sql = `SELECT * FROM ${quoteIdentifier(table)} FINAL WHERE ${where}${byTime ? ` ORDER BY ${quoteIdentifier(layout.timeField)}` : ''} SETTINGS date_time_output_format = 'iso'`;
    return clickhouse.stream(sql, { format: 'JSONEachRow', params });
  };
  /** The rows `where` picks, by time: parsed, and as ClickHouse wrote them (JSONEachRow). */
  const select = async (where: string, params: Record<string, string>): Promise<{ rows: Record<string, unknown>[]; body: Buffer }> => {
    const chunks: Buffer[] = [];
    for await (const chunk of rowsWhere(where, params, true)) chunks.push(Buffer.from(chunk));
    const body = Buffer.concat(chunks);
    const rows = body
      .toString('utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    return { rows, body };
  };

  /** Puts JSON rows as ClickHouse wrote them (whole JSONEachRow rows, a newline last), without parsing them, WARM_ROWS a round trip; resolves with the rows put. */
  const putRows = async (body: Buffer, now: number): Promise<number> => {
    let queued = 0;
    for (let from = 0; from < body.length; ) {
      const ends: number[] = [];
      let end = from;
      while (end < body.length && ends.length < WARM_ROWS) {
        end = body.indexOf(10, end) + 1;
        ends.push(end - from);
      }
      const pipeline = client.pipeline();
      const unqueued = queuePuts(onPipeline(pipeline), keys, [], now, { body: body.subarray(from, end), ends });
      queued += ends.length - unqueued.expired - unqueued.ahead - unqueued.unkeyed;
      await execPuts(client, pipeline, 'recentBookings');
      from = end;
    }
    return queued;
  };
  /** Puts rows as ClickHouse streams them, each stretch as it comes: memory stays flat for any number of rows. Resolves with the rows put. */
  const putStream = async (chunks: AsyncIterable<Uint8Array>): Promise<number> => {
    let queued = 0;
    const now = Date.now();
    /** The start of a row the last chunk cut (its own copy: the chunk goes). */
    let carry = Buffer.alloc(0);
    for await (const chunk of chunks) {
      const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      const last = bytes.lastIndexOf(10);
      if (last < 0) {
        carry = Buffer.concat([carry, bytes]);
        continue;
      }
      const body = carry.length === 0 ? bytes.subarray(0, last + 1) : Buffer.concat([carry, bytes.subarray(0, last + 1)]);
      carry = Buffer.from(bytes.subarray(last + 1));
      queued += await putRows(body, now);
    }
    // ClickHouse ends every row with a newline: bytes after the last one are a row cut short.
    if (carry.length > 0) throw new TributaryError(`ClickHouse's answer ended inside a row (${carry.length} bytes after the last newline)`, { code: 'CACHE_WARM' });
    return queued;
  };
  /** Puts rows read through to ClickHouse into the cache as ClickHouse wrote them (unless `fill: false`). */
  const fillQuietly = async (body: Buffer) => {
    // A cache that cannot be filled still answers from ClickHouse.
    if (fill) await putRows(body, Date.now()).catch(() => undefined);
  };

  /** Column lists of array rows by tag, as read from Redis (a list never changes under its tag). */
  const columnsByTag = new Map<string, readonly string[]>();
  /** Reads the column lists of `tags` not known yet. */
  const learnColumns = async (tags: Iterable<string>): Promise<void> => {
    const unknown = [...new Set(tags)].filter((tag) => !columnsByTag.has(tag));
    if (unknown.length === 0) return;
    const lists = await client.hmget(keys.columns, ...unknown);
    // Bounded, whatever Redis holds.
    if (columnsByTag.size + unknown.length > 1024) columnsByTag.clear();
    unknown.forEach((tag, i) => {
      const columns = JSON.parse(lists[i] ?? 'null') as unknown;
      if (!Array.isArray(columns) || !columns.every((c) => typeof c === 'string')) throw new TributaryError(`the cache holds no column list for tag ${tag}`, { code: 'CACHE_COLUMNS' });
      columnsByTag.set(tag, columns as string[]);
    });
  };
  /** The tag of a stored row written as an array of its columns, or undefined for a JSON object. */
  const tagOf = (row: string): string | undefined => (row.charCodeAt(0) === 123 /* { */ ? undefined : row.slice(0, TAG_LENGTH));
  /** A stored row as its object: an array row's values named by its columns (learnt first). */
  const rowOf = (row: string): Record<string, unknown> => {
    const tag = tagOf(row);
    if (tag === undefined) return JSON.parse(row) as Record<string, unknown>;
    const columns = columnsByTag.get(tag)!;
    const values = JSON.parse(row.slice(TAG_LENGTH)) as unknown;
    if (!Array.isArray(values) || values.length !== columns.length) throw new TributaryError(`a cached row does not match its ${columns.length} columns`, { code: 'CACHE_COLUMNS' });
    const object: Record<string, unknown> = {};
    columns.forEach((name, i) => {
      if (name === '__proto__') Object.defineProperty(object, name, { value: values[i], enumerable: true, writable: true, configurable: true });
      else object[name] = values[i];
    });
    return object;
  };

  const column = (name: string) => quoteIdentifier(name);
  const rangeOf = (range: TimeRange): [number, number] => {
    const from = timeMs(range?.from);
    const to = timeMs(range?.to);
    // Past what a Date holds (±8.64e15 ms) no booking has a time, and ClickHouse is not asked.
    if (from === undefined || to === undefined || !(Math.abs(from) <= MAX_TIME_MS && Math.abs(to) <= MAX_TIME_MS)) throw new TributaryError(`range needs from and to as epoch ms, Dates or ISO 8601, within what a Date holds (±8.64e15 ms), got ${JSON.stringify(range)}`, { code: 'BAD_RANGE' });
    return [from, to];
  };
  /** A time as a DateTime64(3, 'UTC') parameter, within the years it holds (1900-2299): no stored booking lies beyond. */
  const chTime = (ms: number) => new Date(Math.min(Math.max(ms, CLICKHOUSE_FIRST), CLICKHOUSE_LAST)).toISOString().replace('T', ' ').replace('Z', '');

  /** The entries a vendor's time buckets list for the range: the buckets from the set of all, one LRANGE each. */
  const vendorEntries = async (vendor: string, from: number, to: number): Promise<string[]> => {
    const lists = (await client.zrangebyscore(keys.buckets, `(${from}`, to + keys.bucketMs)).filter((list) => list.startsWith(keys.vendorBucket(vendor, 0).slice(0, -1)));
    if (lists.length === 0) return [];
    const pipeline = client.pipeline();
    for (const list of lists) pipeline.lrange(list, 0, -1);
    return (await pipeline.exec())!.flatMap(([error, entries]) => {
      if (error) throw error;
      return entries as string[];
    });
  };

  /** The entries the customer's time buckets list for the range: the buckets from the set of all, one ZRANGEBYLEX each. */
  const customerEntries = async (customer: string, from: number, to: number): Promise<string[]> => {
    const buckets = await client.zrangebyscore(keys.customerBuckets, `(${from}`, to + keys.bucketMs);
    if (buckets.length === 0) return [];
    const start = keys.customerFrom(customer, from);
    const pipeline = client.pipeline();
    for (const bucket of buckets) pipeline.zrangebylex(bucket, `[${start}`, `(${keys.customerFrom(customer, Math.floor(to) + 1)}`);
    return (await pipeline.exec())!.flatMap(([error, members]) => {
      if (error) throw error;
      return (members as string[]).map((member) => member.slice(start.length + 1));
    });
  };

  /** The bookings of `entries` still there, once each, as stored: one HMGET per shard. */
  const bookingsOf = async (entries: readonly string[]): Promise<{ time: number; row: string }[]> => {
    const byShard = new Map<string, string[]>();
    for (const entry of new Set(entries)) {
      const shard = keys.shardOf(entry);
      const group = byShard.get(shard);
      if (group) group.push(entry);
      else byShard.set(shard, [entry]);
    }
    if (byShard.size === 0) return [];
    const pipeline = client.pipeline();
    for (const [shard, group] of byShard) pipeline.hmget(shard, ...group);
    const now = Date.now();
    return (await pipeline.exec())!.flatMap(([error, values]) => {
      if (error) throw error;
      return (values as (string | null)[]).flatMap((value) => storedBooking(value, layout.ttlMs, now) ?? []);
    });
  };

  /** Whether bookings lying too far ahead to cache when they were written may lie in [from, to] (marked by the writes: `CacheKeys.aheadMark`). */
  const notCachedIn = async (from: number, to: number): Promise<boolean> => {
    const marks = await client.zrangebyscore(keys.ahead, `(${from}`, '+inf', 'WITHSCORES');
    for (let i = 0; i < marks.length; i += 2) if (keys.aheadSpan(marks[i]!, Number(marks[i + 1]))[0] <= to) return true;
    return false;
  };

  const list = async (entriesOf: (from: number, to: number) => Promise<string[]>, field: string, value: string, range: TimeRange): Promise<R[]> => {
    const [from, to] = rangeOf(range);
    // Older than the TTL: the cache no longer holds all of it.
    const stale = from >= Date.now() - layout.ttlMs ? staleForRead() : true;
    if (!(typeof stale === 'boolean' ? stale : await stale)) {
      try {
        // Bookings written when they lay too far ahead to cache may lie in the range by now.
        // Asked beside the index (no round trip of its own): most ranges touch no mark.
        const [notCached, entries] = await Promise.all([notCachedIn(from, to), entriesOf(from, to)]);
        if (!notCached) {
          const stored = await bookingsOf(entries);
          await learnColumns(stored.flatMap((booking) => tagOf(booking.row) ?? []));
          hit();
          // An entry may outlive a change of the booking's customer or time, and a newer
          // version may land between the index read and the HMGET: the row as read decides.
          return stored
            .filter((booking) => booking.time >= from && booking.time <= to)
            .sort((a, b) => a.time - b.time)
            .map((booking) => rowOf(booking.row))
            .filter((row) => String(row[field]) === value) as R[];
        }
      } catch {
        // Redis failed: ClickHouse answers below.
      }
    }
    miss();
    const { rows, body } = await select(`${column(field)} = {value:String} AND ${column(layout.timeField)} BETWEEN {from:DateTime64(3, 'UTC')} AND {to:DateTime64(3, 'UTC')}`, { value, from: chTime(from), to: chTime(to) });
    await fillQuietly(body);
    return rows as R[];
  };

  return {
    registry,
    counts,
    isStale,
    async get(...key: string[]) {
      if (key.length !== layout.keyFields.length || key.some((part) => typeof part !== 'string')) {
        throw new TributaryError(`get needs ${layout.keyFields.length} key parts (${layout.keyFields.join(', ')}), got ${key.length}`, { code: 'BAD_KEY' });
      }
      const stale = staleForRead();
      if (!(typeof stale === 'boolean' ? stale : await stale)) {
        try {
          const entry = keys.entry(keys.member(key));
          const found = storedBooking(await client.hget(keys.shardOf(entry), entry), layout.ttlMs, Date.now());
          if (found !== undefined) {
            const tag = tagOf(found.row);
            if (tag !== undefined && !columnsByTag.has(tag)) await learnColumns([tag]);
            const row = rowOf(found.row);
            hit();
            return row as R;
          }
        } catch {
          // Redis failed: ClickHouse answers below.
        }
      }
      miss();
      const params: Record<string, string> = {};
      const where = layout.keyFields.map((field, i) => {
        params[`k${i}`] = key[i]!;
        return `${column(field)} = {k${i}:String}`;
      });
      const { rows, body } = await select(where.join(' AND '), params);
      await fillQuietly(body);
      return rows[0] as R | undefined;
    },
    byVendor(vendor: string, range: TimeRange) {
      return list((from, to) => vendorEntries(vendor, from, to), layout.keyFields[0]!, vendor, range);
    },
    byCustomer(customer: string, range: TimeRange) {
      if (layout.customerField === undefined) return Promise.reject(new ConfigError('byCustomer needs customerField'));
      return list((from, to) => customerEntries(customer, from, to), layout.customerField, customer, range);
    },
    async warm() {
      const id = randomUUID();
      await client.set(keys.warming, id);
      const since = Date.now() - layout.ttlMs;
      // Streamed in, a block at a time: the last TTL's bookings can be more than memory holds.
      // Bookings too far ahead are not put, but where they lie is marked (`CacheKeys.aheadMark`).
      const put_ = await putStream(rowsWhere(`${column(layout.timeField)} >= {since:DateTime64(3, 'UTC')}`, { since: chTime(since) }, false));
      await client.tributaryCacheFresh(keys.warming, keys.fresh, id);
      await isStale();
      return put_;
    },
    close: closeClient,
  };
}
