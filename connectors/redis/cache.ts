import type { Redis } from 'ioredis';
import { ConfigError, SinkError } from '../../lib/errors';
import { integerAtLeast } from '../../lib/options';
import { connectRedis, redisFailure, type RedisConnectionOptions } from '../../lib/redis';
import type { Batch, Sink, WriteContext } from '../../lib/sink';

export type { RedisConnectionOptions };

/** Where and how bookings are laid out in Redis; shared by the cache sink and its reader. */
export interface RedisCacheLayoutOptions {
  /** Prefix of every key. @default 'tributary:bookings:' */
  prefix?: string;
  /** The columns that name a booking, vendor first. @default ['vendor', 'booking_id'] */
  keyFields?: readonly string[];
  /** The booking's time: the TTL and the time indexes count from it. @default 'booked_at' */
  timeField?: string;
  /** The version column: a row never replaces one with a later version. @default 'updated_at' */
  versionField?: string;
  /** A column to index bookings by (a customer token); none when omitted. @default none */
  customerField?: string;
  /** How long a booking stays, from its time. @default 86_400_000 (24 h) */
  ttlMs?: number;
}

export interface ToRedisCacheOptions extends RedisCacheLayoutOptions, RedisConnectionOptions {}

export type ResolvedLayout = Required<Omit<RedisCacheLayoutOptions, 'customerField'>> & { customerField: string | undefined };

/** Stats of a cache sink. */
export interface RedisCacheStats {
  /** Rows stored or replacing an older version. */
  stored: number;
  /** Rows not stored: a newer version was there. */
  older: number;
  /** Rows past their TTL already (time + ttlMs before now). */
  expired: number;
  /** Rows without a key, time or version that can be read. */
  unkeyed: number;
}

/**
 * Puts rows given as one MessagePack array (ARGV[1]), seven items a row: the booking's
 * member (its key parts as JSON; its key is ARGV[3] followed by it), its version (a
 * number), the value to store (`<version>|<row>`), its time (a number, the indexes'
 * score), its expiry (epoch ms), the number of its vendor index among ARGV[4…] (1 for ARGV[4]) and the
 * customer index ('' for none). Stores the row unless the version there is later and adds
 * it to the indexes; then, once per index the call touched, drops the entries past their
 * TTL (scores below ARGV[2]) and keeps the index at least as long as its latest booking.
 * Returns { stored, older }.
 *
 * Many rows a call, packed into one argument: ioredis spent more per argument than Redis
 * spent on the row, and cmsgpack unpacks in C. Numbers travel as MessagePack numbers and
 * the key prefix and vendor indexes once a call, so a row costs the client three strings.
 * One ZADD per vendor index and call, in row order (the last version stored sets the
 * score): at most 2 * ROWS_PER_CALL values, far below the limit of Lua's unpack (8000).
 */
const PUT = `
local a = cmsgpack.unpack(ARGV[1])
local cut = '(' .. ARGV[2]
local bookings = ARGV[3]
local stored = 0
local vendors = {}
local expiries = {}
local n = #a
for i = 1, n, 7 do
  local key = bookings .. a[i]
  local current = redis.call('GET', key)
  local version = current and tonumber(string.match(current, '^([^|]*)|'))
  if not (version and version > a[i + 1]) then
    local expireAt = a[i + 4]
    redis.call('SET', key, a[i + 2], 'PXAT', expireAt)
    local vendor = ARGV[3 + a[i + 5]]
    local entries = vendors[vendor]
    if not entries then
      entries = {}
      vendors[vendor] = entries
    end
    entries[#entries + 1] = a[i + 3]
    entries[#entries + 1] = a[i]
    local known = expiries[vendor]
    if not (known and known >= expireAt) then expiries[vendor] = expireAt end
    local customer = a[i + 6]
    if customer ~= '' then
      redis.call('ZADD', customer, a[i + 3], a[i])
      known = expiries[customer]
      if not (known and known >= expireAt) then expiries[customer] = expireAt end
    end
    stored = stored + 1
  end
end
for index, entries in pairs(vendors) do redis.call('ZADD', index, unpack(entries)) end
for index, expireAt in pairs(expiries) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', cut)
  if redis.call('PEXPIRETIME', index) < expireAt then redis.call('PEXPIREAT', index, expireAt) end
end
return { stored, n / 7 - stored }
`;

/** Rows per call of the put script: long scripts hold up every other client of Redis. */
const ROWS_PER_CALL = 500;
/** Characters of stored rows per call, however few rows: Redis refuses an argument past proto-max-bulk-len (512 MiB by default), and a long script holds up other clients. */
const BYTES_PER_CALL = 4 << 20;

/**
 * Writes a MessagePack array of strings and numbers (what the scripts unpack with
 * cmsgpack) into one reused Buffer: each string is written once, its header sized by the
 * most bytes it can take (3 a UTF-16 unit) and filled in after, so no string is measured
 * first.
 */
class Packer {
  /** Shared by every packer: packing is synchronous, and `take()` copies out. */
  static #scratch = Buffer.allocUnsafe(1 << 20);
  #buffer = Packer.#scratch;
  #at = 5;
  #count = 0;

  get count(): number {
    return this.#count;
  }

  #room(bytes: number): Buffer {
    if (this.#at + bytes > this.#buffer.length) {
      const larger = Buffer.allocUnsafe(Math.max(2 * this.#buffer.length, this.#at + bytes));
      this.#buffer.copy(larger, 0, 0, this.#at);
      this.#buffer = larger;
    }
    return this.#buffer;
  }

  string(text: string): void {
    this.#count++;
    if (text === '') {
      this.#room(1)[this.#at++] = 0xa0;
      return;
    }
    const most = 3 * text.length;
    const buffer = this.#room(most + 5);
    const at = this.#at;
    if (most < 32) {
      const length = buffer.write(text, at + 1);
      buffer[at] = 0xa0 | length; // fixstr
      this.#at = at + 1 + length;
    } else if (most < 0x100) {
      const length = buffer.write(text, at + 2);
      buffer[at] = 0xd9; // str 8
      buffer[at + 1] = length;
      this.#at = at + 2 + length;
    } else if (most < 0x10000) {
      const length = buffer.write(text, at + 3);
      buffer[at] = 0xda; // str 16
      buffer.writeUInt16BE(length, at + 1);
      this.#at = at + 3 + length;
    } else {
      const length = buffer.write(text, at + 5);
      buffer[at] = 0xdb; // str 32
      buffer.writeUInt32BE(length, at + 1);
      this.#at = at + 5 + length;
    }
  }

  number(value: number): void {
    this.#count++;
    if (value >= 0 && value < 0x80 && Number.isInteger(value)) {
      this.#room(1)[this.#at++] = value; // positive fixint
      return;
    }
    const buffer = this.#room(9);
    buffer[this.#at] = 0xcb; // float 64: exact for every integer up to 2^53
    buffer.writeDoubleBE(value, this.#at + 1);
    this.#at += 9;
  }

  /** The packed array, copied out (the scratch buffer is reused); the packer starts again. */
  take(): Buffer {
    const buffer = this.#buffer;
    buffer[0] = 0xdd; // array 32
    buffer.writeUInt32BE(this.#count, 1);
    const packed = Buffer.from(buffer.subarray(0, this.#at));
    // Kept for the next call unless a huge row grew it.
    if (buffer.length <= 16 << 20) Packer.#scratch = buffer;
    this.#buffer = Packer.#scratch;
    this.#at = 5;
    this.#count = 0;
    return packed;
  }
}

/** Marks the cache complete at the end of a warm-up, unless a loss happened meanwhile (`warming` no longer holds ARGV[1]). */
const FRESH = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1')
  return 1
end
return 0
`;

type CacheRedis = Redis & {
  tributaryCachePut(rows: Buffer, cut: string, bookings: string, ...vendorIndexes: string[]): Promise<[number, number]>;
  tributaryCacheFresh(warming: string, fresh: string, id: string): Promise<number>;
};

export function resolveLayout(options: RedisCacheLayoutOptions): ResolvedLayout {
  const prefix = options.prefix ?? 'tributary:bookings:';
  if (typeof prefix !== 'string') throw new ConfigError(`prefix must be a string, got ${JSON.stringify(prefix)}`);
  const keyFields = options.keyFields ?? ['vendor', 'booking_id'];
  if (!Array.isArray(keyFields) || keyFields.length === 0 || keyFields.some((f) => typeof f !== 'string' || f === '')) {
    throw new ConfigError(`keyFields must be a non-empty list of column names, vendor first, got ${JSON.stringify(options.keyFields)}`);
  }
  const field = (name: string, value: unknown, fallback: string | undefined) => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !/^[A-Za-z_]\w*$/.test(value)) throw new ConfigError(`${name} must be a column name, got ${JSON.stringify(value)}`);
    return value;
  };
  for (const name of keyFields) field('keyFields[]', name, undefined);
  const ttlMs = integerAtLeast(options.ttlMs, 86_400_000, 'ttlMs', 1000);
  return {
    prefix,
    keyFields,
    timeField: field('timeField', options.timeField, 'booked_at')!,
    versionField: field('versionField', options.versionField, 'updated_at')!,
    customerField: field('customerField', options.customerField, undefined),
    ttlMs,
  };
}

/** Makes or takes the ioredis client, with the cache's scripts defined on it. */
export function redisClient(options: RedisConnectionOptions, what: string): { client: CacheRedis; close(): Promise<void> } {
  const { client, close } = connectRedis(options, what);
  if (typeof (client as unknown as Partial<CacheRedis>).tributaryCachePut !== 'function') {
    client.defineCommand('tributaryCachePut', { numberOfKeys: 0, lua: PUT });
    client.defineCommand('tributaryCacheFresh', { numberOfKeys: 2, lua: FRESH });
  }
  return { client: client as unknown as CacheRedis, close };
}

/** Milliseconds since the epoch of a time column: epoch ms, or ISO 8601 / ClickHouse text (UTC when it names no zone). */
export function timeMs(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.getTime() : undefined;
  if (typeof value !== 'string' || value === '') return undefined;
  // The common case, ISO 8601 in UTC, without the zone test.
  if (value.charCodeAt(value.length - 1) === 90 /* Z */) {
    const ms = Date.parse(value);
    return Number.isFinite(ms) ? ms : undefined;
  }
  const zoned = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value.replace(' ', 'T')}Z`;
  const ms = Date.parse(zoned);
  return Number.isFinite(ms) ? ms : undefined;
}

/** The keys of one cache. Key parts are JSON-quoted so no vendor value can reach into another's keys. */
export class CacheKeys {
  constructor(readonly layout: ResolvedLayout) {}
  member(parts: readonly string[]): string {
    return JSON.stringify(parts);
  }
  booking(member: string): string {
    return `${this.layout.prefix}b:${member}`;
  }
  vendorIndex(vendor: string): string {
    return `${this.layout.prefix}v:${JSON.stringify(vendor)}`;
  }
  customerIndex(customer: string): string {
    return `${this.layout.prefix}c:${JSON.stringify(customer)}`;
  }
  /** Present only while the cache is known complete (set by `warm()`). */
  get fresh(): string {
    return `${this.layout.prefix}fresh`;
  }
  get warming(): string {
    return `${this.layout.prefix}warming`;
  }
}

export type PutOutcome = 'stored' | 'older' | 'expired' | 'unkeyed';

/** Rows not queued, by why. */
export type Unqueued = Record<Exclude<PutOutcome, 'stored' | 'older'>, number>;

/**
 * Queues the puts of `rows` on `pipeline`, ROWS_PER_CALL rows a call. Rows are
 * stored as JSON as they are given: encrypted fields stay encrypted.
 */
export function queuePuts(pipeline: ReturnType<Redis['pipeline']>, keys: CacheKeys, rows: Iterable<Record<string, unknown>>, now: number): Unqueued {
  const { layout } = keys;
  const unqueued: Unqueued = { expired: 0, unkeyed: 0 };
  const commands = pipeline as unknown as CacheRedis;
  /** Each vendor's index key: a few vendors, many rows each. */
  const vendors = new Map<string, string>();
  /** The vendor indexes of the call being packed, and each one's number among them. */
  let callVendors = new Map<string, number>();
  let vendorIndexes: string[] = [];
  const cut = String(now - layout.ttlMs);
  const bookings = keys.booking('');
  const packer = new Packer();
  let bytes = 0;
  const flush = () => {
    if (packer.count > 0) commands.tributaryCachePut(packer.take(), cut, bookings, ...vendorIndexes);
    callVendors = new Map();
    vendorIndexes = [];
    bytes = 0;
  };
  const keyFields = layout.keyFields;
  const parts: string[] = [];
  for (const row of rows) {
    parts.length = 0;
    for (const field of keyFields) {
      const part = row?.[field];
      if ((typeof part === 'string' || typeof part === 'number') && part !== '') parts.push(String(part));
      else break;
    }
    const time = parts.length === keyFields.length ? timeMs(row[layout.timeField]) : undefined;
    const version = timeMs(row?.[layout.versionField]);
    if (time === undefined || version === undefined) {
      unqueued.unkeyed++;
      continue;
    }
    const expireAt = Math.floor(time) + layout.ttlMs;
    if (expireAt <= now) {
      unqueued.expired++;
      continue;
    }
    const vendor = parts[0]!;
    let vendorNumber = callVendors.get(vendor);
    if (vendorNumber === undefined) {
      let vendorIndex = vendors.get(vendor);
      if (vendorIndex === undefined) vendors.set(vendor, (vendorIndex = keys.vendorIndex(vendor)));
      callVendors.set(vendor, (vendorNumber = vendorIndexes.push(vendorIndex)));
    }
    const customer = layout.customerField === undefined ? undefined : row[layout.customerField];
    const value = `${version}|${JSON.stringify(row)}`;
    packer.string(keys.member(parts));
    packer.number(version);
    packer.string(value);
    packer.number(time);
    packer.number(expireAt);
    packer.number(vendorNumber);
    packer.string(typeof customer === 'string' && customer !== '' ? keys.customerIndex(customer) : '');
    bytes += value.length;
    if (packer.count === 7 * ROWS_PER_CALL || bytes >= BYTES_PER_CALL) flush();
  }
  flush();
  return unqueued;
}

/** Runs a pipeline of puts; counts outcomes. Redis failures become retriable `SinkError`s. */
export async function execPuts(client: Redis, pipeline: ReturnType<Redis['pipeline']>, what: string): Promise<{ stored: number; older: number }> {
  let replies: [Error | null, unknown][] | null;
  try {
    replies = await pipeline.exec();
  } catch (cause) {
    throw new SinkError(redisFailure(client, `${what}: Redis failed: ${(cause as Error).message}`), { code: 'REDIS', retriable: true, cause });
  }
  let stored = 0;
  let older = 0;
  for (const [error, reply] of replies ?? []) {
    if (error) throw new SinkError(redisFailure(client, `${what}: Redis failed: ${error.message}`), { code: 'REDIS', retriable: !/WRONGTYPE|NOPERM|ERR syntax/.test(error.message), cause: error });
    if (Array.isArray(reply)) {
      stored += Number(reply[0]);
      older += Number(reply[1]);
    }
  }
  return { stored, older };
}

/** A cache sink: `stats` counts rows by outcome; `close()` quits a client it made. */
export interface RedisCacheSink<T> extends Sink<T> {
  readonly stats: RedisCacheStats;
  close(): Promise<void>;
}

/**
 * Keeps recent bookings in Redis (7.0 or later), each under its natural key with a TTL
 * counted from the booking's time, plus sorted-set indexes by vendor and (optionally)
 * customer token scored by that time. Idempotent: a Lua script stores a row only when no
 * later version is there, so a replayed or older row never replaces a newer one. One
 * pipelined round trip per batch. Rows are stored as the sink receives them (JSON):
 * fields encrypted upstream stay encrypted.
 *
 * After a failed write, the next write first marks the cache incomplete (the reader then
 * reads through to ClickHouse until `warm()` rebuilds it). Use it in a {@link fanOut}
 * beside ClickHouse; read with `recentBookings`.
 *
 * ## Example
 * ```ts
 * import { fanOut, toClickHouse } from 'tributary';
 * import { toRedisCache } from 'tributary/redis';
 * const cache = toRedisCache({ url: 'redis://127.0.0.1:6379', customerField: 'customer_token' });
 * const sink = fanOut([{ sink: toClickHouse({ client, table: 'bookings' }), required: true }, { sink: cache, bestEffort: true }]);
 * ```
 */
export function toRedisCache<T extends object>(options: ToRedisCacheOptions): RedisCacheSink<T> {
  const layout = resolveLayout(options ?? {});
  const { client, close } = redisClient(options, 'toRedisCache');
  const keys = new CacheKeys(layout);
  const stats: RedisCacheStats = { stored: 0, older: 0, expired: 0, unkeyed: 0 };
  const name = `redis-cache:${layout.prefix}`;
  /** Tokens of batches whose write failed and has not landed since. */
  const missed = new Set<string>();
  return {
    name,
    stats,
    async write(batch: Batch<T>, context: WriteContext) {
      const pipeline = client.pipeline();
      // Another batch failed and was not written since: this cache is no longer complete,
      // whatever a warm-up said. (The same batch retried is not a loss.)
      const lost = missed.size > (missed.has(context.token) ? 1 : 0);
      if (lost) pipeline.del(keys.fresh, keys.warming);
      const unqueued = queuePuts(pipeline, keys, batch.envelopes.map((envelope) => envelope.value as Record<string, unknown>), Date.now());
      stats.expired += unqueued.expired;
      stats.unkeyed += unqueued.unkeyed;
      const skipped = unqueued.expired + unqueued.unkeyed;
      if (skipped === batch.envelopes.length && !lost) return;
      try {
        const { stored, older } = await execPuts(client, pipeline, `sink ${name}`);
        stats.stored += stored;
        stats.older += older;
      } catch (error) {
        missed.add(context.token);
        throw error;
      }
      if (lost) missed.clear();
      else missed.delete(context.token);
    },
    close,
  };
}
