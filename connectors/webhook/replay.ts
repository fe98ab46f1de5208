import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, TributaryError } from '../../lib/errors';

/**
 * Remembers the webhook ids already taken, so a replayed request is refused. The default
 * keeps them in memory; several instances behind one address need a shared store (Redis
 * `SET id 1 NX PXAT expiresAt` implements `claim` in one call).
 */
export interface ReplayStore {
  /**
   * Takes `id` until `expiresAt` (epoch ms): `true` if it was free, `false` if it was
   * already taken, `undefined` if the store is full and cannot safely take it.
   */
  claim(id: string, expiresAt: number): boolean | undefined | Promise<boolean | undefined>;
  /** Frees `id` again: its request failed, and the vendor's retry must be accepted. */
  release(id: string): void | Promise<void>;
}

export interface MemoryReplayStoreOptions {
  /** Ids held at most; when all are unexpired, new requests are refused (503) rather than an id forgotten early. @default 100000 */
  maxEntries?: number;
}

/**
 * Ids in a Map in the order they were taken. Every id lives for the same tolerance, so the
 * oldest entries expire first and are dropped from the front.
 */
export class MemoryReplayStore implements ReplayStore {
  readonly maxEntries: number;
  readonly #ids = new Map<string, number>();

  constructor(options: MemoryReplayStoreOptions = {}) {
    this.maxEntries = options.maxEntries ?? 100_000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new ConfigError(`replay.maxEntries must be an integer >= 1, got ${options.maxEntries}`);
    }
  }

  get size(): number {
    return this.#ids.size;
  }

  claim(id: string, expiresAt: number): boolean | undefined {
    const now = Date.now();
    const held = this.#ids.get(id);
    if (held !== undefined && held > now) return false;
    if (held !== undefined) this.#ids.delete(id);
    for (const [oldest, expiry] of this.#ids) {
      if (expiry > now) break;
      this.#ids.delete(oldest);
    }
    // Forgetting an unexpired id would let its request be replayed: refuse instead.
    if (this.#ids.size >= this.maxEntries) return undefined;
    this.#ids.set(id, expiresAt);
    return true;
  }

  release(id: string): void {
    this.#ids.delete(id);
  }
}

export interface RedisReplayStoreOptions {
  /** `redis://host:port/db`; or pass `client`. */
  url?: string;
  /** Options for the client made from `url`. */
  redis?: RedisOptions;
  /** A client of your own (ioredis); `close()` leaves it open. */
  client?: Redis;
  /** Prefix of every key. @default 'tributary:webhook:' */
  prefix?: string;
}

/**
 * Webhook ids in Redis (6.2 or later), shared by every instance behind one address: `SET
 * key 1 PXAT expiresAt NX` takes an id atomically, so of two instances receiving the same
 * request exactly one accepts it. The ioredis client is loaded only when a store is made.
 *
 * ## Example
 * ```ts
 * import { fromWebhook, redisReplayStore } from 'tributary/webhook';
 * const replay = redisReplayStore({ url: 'redis://127.0.0.1:6379' });
 * const source = fromWebhook({ vendors, access, replay });
 * ```
 */
export function redisReplayStore(options: RedisReplayStoreOptions): ReplayStore & { close(): Promise<void> } {
  if (!options || (options.url === undefined) === (options.client === undefined)) throw new ConfigError('redisReplayStore needs exactly one of url or client');
  if (options.url !== undefined && (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url))) {
    throw new ConfigError(`url must start with redis:// or rediss://, got ${JSON.stringify(options.url)}`);
  }
  const prefix = options.prefix ?? 'tributary:webhook:';
  if (typeof prefix !== 'string') throw new ConfigError(`prefix must be a string, got ${JSON.stringify(prefix)}`);
  let client = options.client;
  const owned = client === undefined;
  if (!client) {
    // Loaded here, not at import: webhooks without Redis never load ioredis.
    const { Redis: RedisClient } = require('ioredis') as typeof import('ioredis');
    client = new RedisClient(options.url!, { maxRetriesPerRequest: 2, connectTimeout: 5000, ...options.redis });
    client.on('error', () => undefined); // failures surface through claim(); the client reconnects
  }
  const redis = client;
  const failed = (cause: unknown) =>
    new TributaryError(`replay store: Redis failed: ${(cause as Error).message}`, { code: 'REPLAY_STORE', retriable: true, cause });
  return {
    async claim(id, expiresAt) {
      try {
        return (await redis.set(prefix + id, '1', 'PXAT', expiresAt, 'NX')) === 'OK';
      } catch (cause) {
        throw failed(cause);
      }
    },
    async release(id) {
      try {
        await redis.del(prefix + id);
      } catch (cause) {
        throw failed(cause);
      }
    },
    async close() {
      if (owned && redis.status !== 'end') await redis.quit().catch(() => redis.disconnect());
    },
  };
}
