import { ConfigError } from '../../lib/errors';

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
