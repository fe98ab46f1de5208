import type { Redis } from 'ioredis';
import { TributaryError } from '../lib/errors';
import { integerAtLeast, positiveInteger } from '../lib/options';
import { connectRedis, redisFailure, redisPrefix, type RedisConnection, type RedisConnectionOptions } from '../lib/redis';

/**
 * Where `dedupe` remembers the keys it has seen. A key is claimed by an owner (the
 * record's source and position) for `ttlMs`; a record may pass when its key was free or
 * is already held by the same owner (the same record delivered again after a nack or a
 * restart), and is a duplicate otherwise.
 */
export interface DedupeStore {
  /**
   * Claims `keys[i]` for `owners[i]`, in order (a key twice in one call: the second is a
   * duplicate unless the owner is the same). `result[i]` is true when record i may pass.
   */
  claim(keys: readonly string[], owners: readonly string[], ttlMs: number): boolean[] | Promise<boolean[]>;
  /** One key at once, for stores in this process: `dedupe` then needs no batching. */
  claimNow?(key: string, owner: string, ttlMs: number): boolean;
  close?(): Promise<void>;
}

export interface MemoryDedupeStoreOptions {
  /** Keys held at most; past it the oldest are forgotten (counted in `evicted`). @default 1_000_000 */
  maxEntries?: number;
  /** Estimated bytes held at most (keys, owners and ~96 bytes of overhead each). @default 256 MiB */
  maxBytes?: number;
  /** The clock, for tests. @default Date.now */
  now?: () => number;
}

interface Held {
  owner: string;
  expiresAt: number;
  bytes: number;
}

const ENTRY_OVERHEAD = 96;

/**
 * A bounded dedupe store in this process's memory.
 *
 * It forgets everything when the process ends: after a restart, a duplicate of a record
 * seen before passes (the sink's ReplacingMergeTree is the backstop). At its bounds it
 * forgets the oldest keys before their time, so a late duplicate of those passes too;
 * `evicted` counts them. Use a {@link redisDedupeStore} to share keys between processes
 * and restarts.
 *
 * A Map in claim order rather than lru-cache: lru-cache allocates its arrays for `max`
 * entries up front (~34 MB and a few hundred ms for the default million, per store), leaves
 * expired keys in place until the bounds push them out (or scans them all in
 * `purgeStale`), and would save some forty lines.
 */
export class MemoryDedupeStore implements DedupeStore {
  readonly maxEntries: number;
  readonly maxBytes: number;
  /** Keys forgotten before their time to stay within the bounds. */
  evicted = 0;
  #held = new Map<string, Held>();
  #bytes = 0;
  /** When the front key expires, as last seen; 0 when it must be looked at again. */
  #frontExpiresAt = 0;
  readonly #now: () => number;

  constructor(options: MemoryDedupeStoreOptions = {}) {
    this.maxEntries = positiveInteger(options.maxEntries, 1_000_000, 'maxEntries');
    this.maxBytes = integerAtLeast(options.maxBytes, 256 * 1024 * 1024, 'maxBytes', 1024);
    this.#now = options.now ?? Date.now;
  }

  /** Keys held now (expired ones included until they are swept). */
  get size(): number {
    return this.#held.size;
  }

  /** Estimated bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  claimNow(key: string, owner: string, ttlMs: number): boolean {
    const now = this.#now();
    this.#sweep(now);
    const held = this.#held.get(key);
    if (held !== undefined) {
      if (held.expiresAt > now) return held.owner === owner;
      this.#forget(key, held); // expired: claimed anew below, at the back of the order
    }
    const bytes = 2 * (key.length + owner.length) + ENTRY_OVERHEAD;
    this.#held.set(key, { owner, expiresAt: now + ttlMs, bytes });
    this.#bytes += bytes;
    while (this.#held.size > this.maxEntries || (this.#bytes > this.maxBytes && this.#held.size > 1)) {
      const [oldest, entry] = this.#held.entries().next().value as [string, Held];
      this.#forget(oldest, entry);
      this.evicted++;
    }
    return true;
  }

  claim(keys: readonly string[], owners: readonly string[], ttlMs: number): boolean[] {
    const result = new Array<boolean>(keys.length);
    for (let i = 0; i < keys.length; i++) result[i] = this.claimNow(keys[i]!, owners[i]!, ttlMs);
    return result;
  }

  async close(): Promise<void> {
    this.#held.clear();
    this.#bytes = 0;
    this.#frontExpiresAt = 0;
  }

  /**
   * Forgets a few expired keys from the front (keys are held in claim order). Until the
   * front key expires there is nothing to look at: most claims skip the iterator.
   */
  #sweep(now: number): void {
    if (now < this.#frontExpiresAt) return;
    for (let i = 0; i < 4; i++) {
      const first = this.#held.entries().next();
      if (first.done) return;
      if (first.value[1].expiresAt > now) {
        this.#frontExpiresAt = first.value[1].expiresAt;
        return;
      }
      this.#forget(first.value[0], first.value[1]);
    }
  }

  #forget(key: string, held: Held): void {
    this.#held.delete(key);
    this.#bytes -= held.bytes;
    // The front may have changed: the next sweep looks again.
    this.#frontExpiresAt = 0;
  }
}

export interface RedisDedupeStoreOptions extends RedisConnectionOptions {
  /** Prefix of every key, naming the dedupe domain. @default 'tributary:dedupe:' */
  prefix?: string;
}

/**
 * A dedupe store in Redis (7.0 or later), shared by every process that uses the same
 * Redis and prefix. Each call is one pipelined round trip of `SET key owner PX ttl NX GET`
 * per key: atomic per key, so of two processes claiming one key at once exactly one wins.
 *
 * Keys live as long as the TTL says, across restarts of the pipelines; a restart of a
 * Redis without persistence forgets them. Keys are stored as given: make them tokens
 * (see `tokenize`) rather than plaintext customer data. The ioredis client is loaded
 * only when a store is made.
 *
 * ## Example
 * ```ts
 * import { dedupe, redisDedupeStore } from 'tributary';
 * const store = redisDedupeStore({ url: 'redis://127.0.0.1:6379' });
 * records$.pipe(dedupe({ key: (b) => `${b.vendor}/${b.booking_id}/${b.updated_at}`, ttlMs: 86_400_000, store }));
 * await store.close();
 * ```
 */
export function redisDedupeStore(options: RedisDedupeStoreOptions): DedupeStore & { close(): Promise<void> } {
  const connection = connectRedis(options, 'redisDedupeStore');
  return new RedisDedupeStore(connection, redisPrefix(options.prefix, 'tributary:dedupe:'));
}

class RedisDedupeStore implements DedupeStore {
  readonly #connection: RedisConnection;
  readonly #client: Redis;
  readonly #prefix: string;

  constructor(connection: RedisConnection, prefix: string) {
    this.#connection = connection;
    this.#client = connection.client;
    this.#prefix = prefix;
  }

  async claim(keys: readonly string[], owners: readonly string[], ttlMs: number): Promise<boolean[]> {
    const pipeline = this.#client.pipeline();
    for (let i = 0; i < keys.length; i++) pipeline.set(this.#prefix + keys[i], owners[i]!, 'PX', ttlMs, 'NX', 'GET');
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await pipeline.exec();
    } catch (cause) {
      throw new TributaryError(redisFailure(this.#client, `dedupe store: Redis failed: ${(cause as Error).message}`), { code: 'DEDUPE_STORE', retriable: true, cause });
    }
    if (!replies || replies.length !== keys.length) throw new TributaryError('dedupe store: Redis answered a different number of replies', { code: 'DEDUPE_STORE', retriable: true });
    const result = new Array<boolean>(keys.length);
    for (let i = 0; i < replies.length; i++) {
      const [error, previous] = replies[i]!;
      if (error) throw new TributaryError(redisFailure(this.#client, `dedupe store: Redis failed: ${error.message}`), { code: 'DEDUPE_STORE', retriable: !/ERR syntax|WRONGTYPE/.test(error.message), cause: error });
      result[i] = previous === null || previous === owners[i];
    }
    return result;
  }

  close(): Promise<void> {
    return this.#connection.close();
  }
}
