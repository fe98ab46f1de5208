import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, SinkError } from '../../lib/errors';
import type { Batch, Sink, WriteContext } from '../../lib/sink';

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

export interface RedisConnectionOptions {
  /** `redis://host:port/db` or `rediss://` (TLS); or pass `client`. */
  url?: string;
  /** Options for the client made from `url`, passed to ioredis as they are: `username` and `password` of an ACL user, `tls`, timeouts. */
  redis?: RedisOptions;
  /** A client of your own (ioredis); `close()` leaves it open. */
  client?: Redis;
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
 * Stores `value` at KEYS[1] unless the version there is later, indexes it in KEYS[2] (vendor)
 * and KEYS[3] (customer, when ARGV[6] is '1'), and drops index entries past their TTL. The
 * value is `<version>|<row>`. Returns 1 when stored, 0 when a later version was there.
 */
const PUT = `
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^([^|]*)|'))
  if version and version > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. ARGV[1], 'PXAT', ARGV[3])
local function index(key)
  redis.call('ZADD', key, ARGV[5], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[7])
  if redis.call('PEXPIRETIME', key) < tonumber(ARGV[3]) then redis.call('PEXPIREAT', key, ARGV[3]) end
end
index(KEYS[2])
if ARGV[6] == '1' then index(KEYS[3]) end
return 1
`;

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
  tributaryCachePut(k1: string, k2: string, k3: string, row: string, version: number, expireAt: number, member: string, time: number, customer: string, floor: number): Promise<number>;
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
  const ttlMs = options.ttlMs ?? 86_400_000;
  if (!Number.isInteger(ttlMs) || ttlMs < 1000) throw new ConfigError(`ttlMs must be an integer >= 1000, got ${options.ttlMs}`);
  return {
    prefix,
    keyFields,
    timeField: field('timeField', options.timeField, 'booked_at')!,
    versionField: field('versionField', options.versionField, 'updated_at')!,
    customerField: field('customerField', options.customerField, undefined),
    ttlMs,
  };
}

/** The last connection failure of each client made here, for the errors of the commands it then fails. */
const lastConnectionErrors = new WeakMap<Redis, Error>();

/** `message` with the client's last connection failure when it has one. */
export function redisFailure(client: Redis, message: string): string {
  const last = lastConnectionErrors.get(client);
  return last && !message.includes(last.message) ? `${message} (last connection error: ${last.message})` : message;
}

/** Makes or takes the ioredis client, loading ioredis only now: tributary without Redis never loads it. */
export function redisClient(options: RedisConnectionOptions, what: string): { client: CacheRedis; owned: boolean } {
  if (!options || (options.url === undefined) === (options.client === undefined)) throw new ConfigError(`${what} needs exactly one of url or client`);
  if (options.url !== undefined && (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url))) {
    throw new ConfigError(`url must start with redis:// or rediss://, got ${JSON.stringify(options.url)}`);
  }
  let client = options.client;
  const owned = client === undefined;
  if (!client) {
    const { Redis: RedisClient } = require('ioredis') as typeof import('ioredis');
    client = new RedisClient(options.url!, { maxRetriesPerRequest: 2, connectTimeout: 5000, ...options.redis });
    // Failures surface through writes and reads, which name the last one (a refused login); the client reconnects.
    client.on('error', (error: Error) => lastConnectionErrors.set(client!, error));
  }
  if (typeof (client as unknown as Partial<CacheRedis>).tributaryCachePut !== 'function') {
    client.defineCommand('tributaryCachePut', { numberOfKeys: 3, lua: PUT });
    client.defineCommand('tributaryCacheFresh', { numberOfKeys: 2, lua: FRESH });
  }
  return { client: client as unknown as CacheRedis, owned };
}

/** Milliseconds since the epoch of a time column: epoch ms, or ISO 8601 / ClickHouse text (UTC when it names no zone). */
export function timeMs(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.getTime() : undefined;
  if (typeof value !== 'string' || value === '') return undefined;
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

/**
 * Queues the put of one row on `pipeline`; returns why it was not queued, or undefined.
 * The row is stored as JSON as it is given: encrypted fields stay encrypted.
 */
export function queuePut(pipeline: ReturnType<Redis['pipeline']>, keys: CacheKeys, row: Record<string, unknown>, now: number): Exclude<PutOutcome, 'stored' | 'older'> | undefined {
  const { layout } = keys;
  const parts: string[] = [];
  for (const field of layout.keyFields) {
    const part = row?.[field];
    if ((typeof part !== 'string' && typeof part !== 'number') || part === '') return 'unkeyed';
    parts.push(String(part));
  }
  const time = timeMs(row[layout.timeField]);
  const version = timeMs(row[layout.versionField]) ?? (typeof row[layout.versionField] === 'number' ? (row[layout.versionField] as number) : undefined);
  if (time === undefined || version === undefined) return 'unkeyed';
  const expireAt = time + layout.ttlMs;
  if (expireAt <= now) return 'expired';
  const member = keys.member(parts);
  const customer = layout.customerField === undefined ? undefined : row[layout.customerField];
  const hasCustomer = typeof customer === 'string' && customer !== '';
  (pipeline as unknown as CacheRedis).tributaryCachePut(
    keys.booking(member),
    keys.vendorIndex(parts[0]!),
    hasCustomer ? keys.customerIndex(customer) : keys.vendorIndex(parts[0]!),
    JSON.stringify(row),
    version,
    expireAt,
    member,
    time,
    hasCustomer ? '1' : '0',
    now - layout.ttlMs,
  );
  return undefined;
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
    if (reply === 1) stored++;
    else if (reply === 0) older++;
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
  const { client, owned } = redisClient(options, 'toRedisCache');
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
      const now = Date.now();
      let skipped = 0;
      for (const envelope of batch.envelopes) {
        const outcome = queuePut(pipeline, keys, envelope.value as Record<string, unknown>, now);
        if (outcome) {
          stats[outcome]++;
          skipped++;
        }
      }
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
    async close() {
      if (owned && client.status !== 'end') await client.quit().catch(() => client.disconnect());
    },
  };
}
