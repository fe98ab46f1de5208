import type { Redis } from 'ioredis';
import { ConfigError, SinkError } from '../../lib/errors';
import { integerAtLeast } from '../../lib/options';
import { connectRedis, redisFailure, type RedisConnectionOptions } from '../../lib/redis';
import type { Batch, EncodedRows, Sink, WriteContext } from '../../lib/sink';

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

/** Rows per call of the put script: long scripts hold up every other client of Redis. */
const ROWS_PER_CALL = 500;
/** Expired bookings a put call removes at most: twice what it puts, so removal keeps up. */
const SWEEP = 2 * ROWS_PER_CALL;

/**
 * Puts rows given as one MessagePack array (ARGV[1]), seven items a row: the booking's
 * entry (its shard, ':' and its key parts as JSON), its version (a number), the value to
 * store (`<version>|<time>|<row>`), its time (a number), the number of its vendor's time
 * bucket among the list keys ARGV[5], ARGV[7]… (1 for ARGV[5]; ARGV[6] is that bucket's
 * end, epoch ms), the customer index ('' for none) and its shard (a number). ARGV[2] is
 * the cut (now - TTL, epoch ms), ARGV[3] the prefix, ARGV[4] the TTL (ms).
 *
 * Rows go into one hash per shard (`<prefix>h:<shard>`, field = entry): a shard's rows of
 * the call cost one HMGET (the versions there) and one HSET, instead of a GET and a SET
 * with its expiry a row. A row is stored unless the version there is later; a row equal to
 * the one there (a replay) is left alone. A stored row's entry goes to its vendor's time
 * bucket (a list, registered in the `<prefix>buckets` sorted set by its end) and to its
 * customer's sorted set (scored by its time, kept as long as its latest booking). Hash
 * fields have no TTL of their own (Redis 7.0): each call first removes up to SWEEP
 * bookings of buckets whose end is past the cut, when their time still is. Returns
 * { stored, older }.
 *
 * Many rows a call, packed into one argument: ioredis spent more per argument than Redis
 * spent on the row, and cmsgpack unpacks in C. Every multi-value command carries at most
 * 2 * ROWS_PER_CALL values, far below the limit of Lua's unpack (8000).
 */
const PUT = `
local a = cmsgpack.unpack(ARGV[1])
local cut = tonumber(ARGV[2])
local prefix = ARGV[3]
local ttl = tonumber(ARGV[4])
local bucketSet = prefix .. 'buckets'
-- Sweep: bookings of buckets past the TTL, unless a later version moved their time on.
local budget = ${SWEEP}
for _, list in ipairs(redis.call('ZRANGEBYSCORE', bucketSet, '-inf', cut, 'LIMIT', 0, 16)) do
  if budget <= 0 then break end
  local entries = redis.call('LPOP', list, budget)
  if entries then
    budget = budget - #entries
    local byShard = {}
    for _, entry in ipairs(entries) do
      local shard = string.match(entry, '^(%d+):')
      local group = byShard[shard]
      if not group then
        group = {}
        byShard[shard] = group
      end
      group[#group + 1] = entry
    end
    for shard, group in pairs(byShard) do
      local hash = prefix .. 'h:' .. shard
      local values = redis.call('HMGET', hash, unpack(group))
      local gone = {}
      for j = 1, #group do
        local time = values[j] and tonumber(string.match(values[j], '^[^|]*|([^|]*)|'))
        if time and math.floor(time) <= cut then gone[#gone + 1] = group[j] end
      end
      if #gone > 0 then redis.call('HDEL', hash, unpack(gone)) end
    end
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', bucketSet, list) end
end
-- Put.
local n = #a
local shards = {}
for i = 1, n, 7 do
  local shard = a[i + 6]
  local rows = shards[shard]
  if not rows then
    rows = {}
    shards[shard] = rows
  end
  rows[#rows + 1] = i
end
local stored = 0
local lists = {}
local customers = {}
local expiries = {}
for shard, rows in pairs(shards) do
  local hash = prefix .. 'h:' .. shard
  local entries = {}
  for j = 1, #rows do entries[j] = a[rows[j]] end
  local current = redis.call('HMGET', hash, unpack(entries))
  -- What this call put, for an entry given twice.
  local put = {}
  local fields = {}
  for j = 1, #rows do
    local i = rows[j]
    local entry = a[i]
    local there = put[entry] or current[j]
    local version = there and tonumber(string.match(there, '^([^|]*)|'))
    local value = a[i + 2]
    if not (version and version > a[i + 1]) then
      stored = stored + 1
      if there ~= value then
        put[entry] = value
        fields[#fields + 1] = entry
        fields[#fields + 1] = value
        local list = a[i + 4]
        local listed = lists[list]
        if not listed then
          listed = {}
          lists[list] = listed
        end
        listed[#listed + 1] = entry
        local customer = a[i + 5]
        if customer ~= '' then
          local scored = customers[customer]
          if not scored then
            scored = {}
            customers[customer] = scored
          end
          scored[#scored + 1] = a[i + 3]
          scored[#scored + 1] = entry
          local expireAt = math.floor(a[i + 3]) + ttl
          local known = expiries[customer]
          if not (known and known >= expireAt) then expiries[customer] = expireAt end
        end
      end
    end
  end
  if #fields > 0 then redis.call('HSET', hash, unpack(fields)) end
end
local ends = {}
for list, listed in pairs(lists) do
  local key = ARGV[3 + 2 * list]
  redis.call('RPUSH', key, unpack(listed))
  ends[#ends + 1] = ARGV[4 + 2 * list]
  ends[#ends + 1] = key
end
if #ends > 0 then redis.call('ZADD', bucketSet, unpack(ends)) end
for customer, scored in pairs(customers) do
  redis.call('ZADD', customer, unpack(scored))
  redis.call('ZREMRANGEBYSCORE', customer, '-inf', '(' .. ARGV[2])
  local expireAt = expiries[customer]
  if redis.call('PEXPIRETIME', customer) < expireAt then redis.call('PEXPIREAT', customer, expireAt) end
end
return { stored, n / 7 - stored }
`;

/** Shards of the booking hashes: a put call's rows of one shard share an HMGET and an HSET. Changing it needs a `warm()`. */
export const SHARDS = 64;
/** Time buckets of the vendor index per TTL (at least 1 ms each): a vendor's range read lists the buckets it covers. */
const BUCKETS_PER_TTL = 24;

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

  /** A string of `prefix` then the UTF-8 bytes `body[start, end)`, copied as they are. */
  prefixed(prefix: string, body: Buffer, start: number, end: number): void {
    this.#count++;
    const length = end - start;
    const most = 3 * prefix.length + length;
    const buffer = this.#room(most + 5);
    const at = this.#at;
    const written = buffer.write(prefix, at + 5);
    body.copy(buffer, at + 5 + written, start, end);
    buffer[at] = 0xdb; // str 32: the header's size is known before the prefix is measured
    buffer.writeUInt32BE(written + length, at + 1);
    this.#at = at + 5 + written + length;
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
  tributaryCachePut(rows: Buffer, cut: string, prefix: string, ttlMs: string, ...bucketLists: string[]): Promise<[number, number]>;
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

/**
 * The keys of one cache. Key parts are JSON-quoted so no vendor value can reach into
 * another's keys. A booking is a field of one of SHARDS hashes, named by its entry:
 * `<shard>:<key parts as JSON>`; the indexes list entries.
 */
export class CacheKeys {
  /** The width of a vendor index's time bucket, ms. */
  readonly bucketMs: number;
  constructor(readonly layout: ResolvedLayout) {
    this.bucketMs = Math.max(1, Math.floor(layout.ttlMs / BUCKETS_PER_TTL));
  }
  member(parts: readonly string[]): string {
    return JSON.stringify(parts);
  }
  /** The shard of a booking: FNV-1a of its member's UTF-16 units. */
  shard(member: string): number {
    let hash = 0x811c9dc5;
    for (let i = 0; i < member.length; i++) hash = Math.imul(hash ^ member.charCodeAt(i), 0x01000193);
    return (hash >>> 0) % SHARDS;
  }
  /** The booking's entry: its shard, ':', its member. */
  entry(member: string): string {
    return `${this.shard(member)}:${member}`;
  }
  /** The hash holding the booking of `entry`. */
  shardOf(entry: string): string {
    return `${this.layout.prefix}h:${entry.slice(0, entry.indexOf(':'))}`;
  }
  /** The list of a vendor's entries whose time falls in `bucket` (time / bucketMs, floored). */
  vendorBucket(vendor: string, bucket: number): string {
    return `${this.layout.prefix}v:${JSON.stringify(vendor)}:${bucket}`;
  }
  /** Every vendor bucket list, scored by its end (epoch ms). */
  get buckets(): string {
    return `${this.layout.prefix}buckets`;
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

/** A stored booking: its version, its time and its row (JSON), or undefined for none or one past its TTL at `now`. */
export function storedBooking(value: string | null, ttlMs: number, now: number): { time: number; row: string } | undefined {
  if (value === null) return undefined;
  const first = value.indexOf('|');
  const second = value.indexOf('|', first + 1);
  const time = Number(value.slice(first + 1, second));
  if (!(Math.floor(time) + ttlMs > now)) return undefined;
  return { time, row: value.slice(second + 1) };
}

export type PutOutcome = 'stored' | 'older' | 'expired' | 'unkeyed';

/** Rows not queued, by why. */
export type Unqueued = Record<Exclude<PutOutcome, 'stored' | 'older'>, number>;

/**
 * Queues the puts of `rows` on `pipeline`, ROWS_PER_CALL rows a call. Rows are stored as
 * JSON as they are given (encrypted fields stay encrypted): their `encoded` rows when
 * given (JSON.stringify of each, in order), copied as bytes.
 */
export function queuePuts(pipeline: ReturnType<Redis['pipeline']>, keys: CacheKeys, rows: readonly Record<string, unknown>[], now: number, encoded?: EncodedRows): Unqueued {
  const { layout, bucketMs } = keys;
  const unqueued: Unqueued = { expired: 0, unkeyed: 0 };
  const commands = pipeline as unknown as CacheRedis;
  /** Each vendor bucket's list key: a few vendors and buckets, many rows each. */
  const lists = new Map<string, string>();
  /** The bucket lists of the call being packed (key, end), and each one's number among them. */
  let callLists = new Map<string, number>();
  let listArguments: string[] = [];
  const cut = String(now - layout.ttlMs);
  const ttl = String(layout.ttlMs);
  const packer = new Packer();
  let bytes = 0;
  const flush = () => {
    if (packer.count > 0) commands.tributaryCachePut(packer.take(), cut, layout.prefix, ttl, ...listArguments);
    callLists = new Map();
    listArguments = [];
    bytes = 0;
  };
  const keyFields = layout.keyFields;
  const parts: string[] = [];
  for (let index = 0; index < rows.length; index++) {
    const row = rows[index]!;
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
    if (Math.floor(time) + layout.ttlMs <= now) {
      unqueued.expired++;
      continue;
    }
    const vendor = parts[0]!;
    const bucket = Math.floor(time / bucketMs);
    const bucketName = `${bucket}:${vendor}`;
    let listNumber = callLists.get(bucketName);
    if (listNumber === undefined) {
      let list = lists.get(bucketName);
      if (list === undefined) lists.set(bucketName, (list = keys.vendorBucket(vendor, bucket)));
      listArguments.push(list, String((bucket + 1) * bucketMs));
      callLists.set(bucketName, (listNumber = listArguments.length / 2));
    }
    const customer = layout.customerField === undefined ? undefined : row[layout.customerField];
    const member = keys.member(parts);
    const shard = keys.shard(member);
    packer.string(`${shard}:${member}`);
    packer.number(version);
    if (encoded) {
      const start = index === 0 ? 0 : encoded.ends[index - 1]!;
      const end = encoded.ends[index]! - 1; // without its newline
      packer.prefixed(`${version}|${time}|`, encoded.body, start, end);
      bytes += end - start;
    } else {
      const value = `${version}|${time}|${JSON.stringify(row)}`;
      packer.string(value);
      bytes += value.length;
    }
    packer.number(time);
    packer.number(listNumber);
    packer.string(typeof customer === 'string' && customer !== '' ? keys.customerIndex(customer) : '');
    packer.number(shard);
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
 * Keeps recent bookings in Redis (7.0 or later) under their natural key, for as long as
 * their TTL counted from the booking's time, with indexes by vendor (time buckets) and
 * (optionally) customer token (sorted sets scored by that time). Idempotent: a Lua script
 * stores a row only when no later version is there, so a replayed or older row never
 * replaces a newer one. One pipelined round trip per batch. Rows are stored as the sink
 * receives them (JSON): fields encrypted upstream stay encrypted.
 *
 * Bookings live as fields of a few hashes (one HMGET and one HSET per hash and call, not
 * two commands a booking): a booking past its TTL is no longer read at once, and removed
 * by the writes that follow (each removes up to twice the rows it puts).
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
    encoding: 'json',
    encode: (value: T) => JSON.stringify(value) ?? 'null',
    // The key, time and version columns are read from the values.
    keepsValues: true,
    async write(batch: Batch<T>, context: WriteContext) {
      // A sink written beside this one (ClickHouse) starts its insert before this one packs.
      await new Promise(setImmediate);
      const pipeline = client.pipeline();
      // Another batch failed and was not written since: this cache is no longer complete,
      // whatever a warm-up said. (The same batch retried is not a loss.)
      const lost = missed.size > (missed.has(context.token) ? 1 : 0);
      if (lost) pipeline.del(keys.fresh, keys.warming);
      const unqueued = queuePuts(pipeline, keys, batch.envelopes.map((envelope) => envelope.value as Record<string, unknown>), Date.now(), batch.encoded);
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
