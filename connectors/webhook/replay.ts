import { createHash, hash, randomBytes } from 'node:crypto';
import { TributaryError } from '../../lib/errors';
import { positiveInteger, positiveNumber } from '../../lib/options';
import { connectRedis, redisFailure, redisPrefix, type RedisConnectionOptions } from '../../lib/redis';

/** What a claim found: see {@link ReplayStore.claim}. */
export type ClaimResult = boolean | 'pending' | undefined;

/**
 * Remembers the webhook ids already taken, so a replayed request is refused. The default
 * keeps them in memory; several instances behind one address need a shared store (Redis
 * `SET id 1 NX PXAT expiresAt` implements `claim` in one call).
 */
export interface ReplayStore {
  /**
   * Takes `id` until `expiresAt` (epoch ms) for a request whose records are not stored yet:
   * `true` if it was free, `false` if its records were stored (see `confirm`), `'pending'`
   * if another request holds it and is still in progress, `undefined` if the store is full
   * and cannot safely take it. A store without `confirm` answers `false` for any held id.
   */
  claim(id: string, expiresAt: number): ClaimResult | Promise<ClaimResult>;
  /**
   * The records of `id`'s request are stored: hold it until `expiresAt`, a replay now
   * answered 409. A claim is held only briefly until then (the webhook's `replayHoldMs`),
   * so the id of a request whose process died before storing is soon free for the
   * vendor's retry.
   */
  confirm?(id: string, expiresAt: number): void | Promise<void>;
  /** Frees `id` again: its request failed, and the vendor's retry must be accepted. */
  release(id: string): void | Promise<void>;
  /**
   * Share of the store's capacity that unexpired ids take, 0 to 1, reported as
   * `tributary_webhook_replay_fill_ratio`: at 1 new requests are refused. Stores without a
   * capacity of their own (Redis: its `maxmemory`) leave it out.
   */
  fill?(): number;
}

export interface MemoryReplayStoreOptions {
  /**
   * Ids held at most; when all are unexpired, new requests are refused (503) rather than an
   * id forgotten early. Give it, or let it follow from `peakRequestsPerSecond` and
   * `toleranceSeconds` ({@link replayCapacity}). Memory: at most 40 bytes per id of this
   * capacity (40 MB per million), taken as ids come, not up front (while the ids move to a
   * table twice as large, both are held: up to 60 bytes per id for that while).
   * @default replayCapacity({ peakRequestsPerSecond, toleranceSeconds }): 602,000
   */
  maxEntries?: number;
  /** The highest rate of accepted requests to plan for, per second. @default 1000 */
  peakRequestsPerSecond?: number;
  /** The webhook source's `toleranceSeconds`: how long an id must be held. @default 300 */
  toleranceSeconds?: number;
  /** The clock, epoch ms (for tests). @default Date.now */
  now?: () => number;
  /**
   * The key of the ids' digests (for tests, which then know the slot each id takes).
   * Leave it out: a key nobody knows keeps senders from picking ids that crowd one part
   * of the table. @default 32 random bytes
   */
  digestKey?: string;
}

/**
 * The ids a replay store must hold to never refuse a sender at `peakRequestsPerSecond`:
 * an id is held until its timestamp leaves the tolerance, about `toleranceSeconds` + 1 s
 * after it arrives, and up to twice that for a sender whose clock runs ahead; so twice
 * what a steady peak holds.
 */
export function replayCapacity(options: { peakRequestsPerSecond?: number; toleranceSeconds?: number } = {}): number {
  const peak = positiveNumber(options.peakRequestsPerSecond, 1000, 'peakRequestsPerSecond');
  const tolerance = positiveNumber(options.toleranceSeconds, 300, 'toleranceSeconds');
  return Math.ceil(peak * (tolerance + 1) * 2);
}

/** Words of the digest kept per id: 128 bits, so two ids sharing one is never expected. */
const WORDS = 4;
const FIRST_SLOTS = 1024;
/** The bit of an expiry set while the id's request is in progress; the bits below it are seconds. */
const PENDING = 0x80000000;
const SECONDS = 0x7fffffff;
/** A slot of a table being moved whose id was released there: taken (its run stays whole), holding nothing. */
const RELEASED = PENDING;
/** Slots of a table being replaced by a larger one that each claim moves over. */
const MOVED_PER_CLAIM = 64;

/**
 * Ids as 16-byte digests in an open-addressing table of typed arrays (20 bytes a slot, at
 * most half the slots used): no strings and no objects per id, whatever the ids' length.
 * The digest is keyed with a random key of this store, so nobody (a vendor included) can
 * pick ids that crowd one part of the table. Expired ids are swept out when the table
 * would otherwise grow or refuse, and when its fill is read; the table doubles as it
 * fills, up to twice `maxEntries` slots, its ids moving to the new table a few slots per
 * claim (moved all at once, they held up the request that made it grow for as long as
 * there were ids: tens of milliseconds past 100,000).
 */
export class MemoryReplayStore implements ReplayStore {
  readonly maxEntries: number;
  readonly #now: () => number;
  readonly #key: string;
  readonly #maxSlots: number;
  #slots = FIRST_SLOTS;
  /** The digests, WORDS per slot. */
  #digests = new Uint32Array(FIRST_SLOTS * WORDS);
  /**
   * Seconds until which each slot's id is held, counted from #epoch, with PENDING set while
   * its request is in progress (not confirmed); 0 for an empty slot.
   */
  #expiries = new Uint32Array(FIRST_SLOTS);
  #size = 0;
  /** Epoch seconds that #expiries count from, minus one so that no held id stores 0. */
  readonly #epoch: number;
  /** The earliest expiry in the table (in #expiries' terms): before it, a sweep frees nothing. */
  #nextExpiry = Infinity;
  /**
   * The table this one replaces, while its ids move over (`next`: its first slot not moved
   * yet). Ids not moved yet are looked up, confirmed and released there; its slots keep
   * their ids until it is dropped, so each id stays reachable from its home slot, and an
   * id found before `next` has moved (or was dropped, expired or released).
   */
  #moving: { digests: Uint32Array; expiries: Uint32Array; slots: number; next: number } | undefined;
  // An id is digested again to confirm or release it. Keeping each claimed id's digest in a
  // Map until then saved that hash (1.5 us) but churned the Map with every request: the
  // tables its rehashes left behind held the requests then in flight through young
  // collections. Under the webhook benchmark's senders: 127 KB promoted a scavenge with
  // it, 2 KB without; scavenges 2.9 ms against 1.6 (median).

  constructor(options: MemoryReplayStoreOptions = {}) {
    this.maxEntries = options.maxEntries === undefined ? replayCapacity(options) : positiveInteger(options.maxEntries, 0, 'replay.maxEntries');
    this.#now = options.now ?? Date.now;
    this.#key = options.digestKey ?? randomBytes(32).toString('base64');
    this.#epoch = Math.floor(this.#now() / 1000) - 1;
    this.#maxSlots = Math.max(FIRST_SLOTS, this.maxEntries * 2);
  }

  /** Ids held, expired ones not yet swept out included. */
  get size(): number {
    return this.#size;
  }

  /** Bytes the table takes now. */
  get bytes(): number {
    const moving = this.#moving ? this.#moving.digests.byteLength + this.#moving.expiries.byteLength : 0;
    return this.#digests.byteLength + this.#expiries.byteLength + moving;
  }

  /** Share of `maxEntries` held by unexpired ids, 0 to 1. */
  fill(): number {
    this.#sweepIfDue(this.#seconds(this.#now()));
    return this.#size / this.maxEntries;
  }

  claim(id: string, expiresAt: number): ClaimResult {
    const now = this.#seconds(this.#now());
    if (this.#moving) this.#move(now, MOVED_PER_CLAIM);
    const digest = this.#digest(id);
    const found = this.#locate(digest);
    if (found) {
      const { expiries, slot } = found;
      const held = expiries[slot]!;
      if ((held & SECONDS) > now) return held & PENDING ? 'pending' : false;
      // Held before and expired since (or released while its table moves): taken again in place.
      if (held === RELEASED) this.#size++;
      this.#hold(expiries, slot, expiresAt, true);
      return true;
    }
    if (this.#size >= this.maxEntries || this.#size >= this.#slots >> 1) {
      if (this.#moving) this.#move(now, Infinity);
      this.#sweepIfDue(now);
      // Forgetting an unexpired id would let its request be replayed: refuse instead.
      if (this.#size >= this.maxEntries) return undefined;
      if (this.#size >= this.#slots >> 1) this.#resize(Math.min(this.#maxSlots, this.#slots * 2));
    }
    const slot = this.#emptySlotFor(digest);
    this.#digests.set(digest, slot * WORDS);
    this.#hold(this.#expiries, slot, expiresAt, true);
    this.#size++;
    return true;
  }

  confirm(id: string, expiresAt: number): void {
    const found = this.#locate(this.#digest(id));
    // An id no longer held (released, or expired though not swept yet) stays free.
    if (!found || (found.expiries[found.slot]! & SECONDS) <= this.#seconds(this.#now())) return;
    this.#hold(found.expiries, found.slot, expiresAt, false);
  }

  /** Where `digest` is held: in the table or, while it moves, in the old one; `undefined` when in neither. */
  #locate(digest: Uint32Array): { expiries: Uint32Array; slot: number } | undefined {
    const slot = this.#find(digest);
    if (slot >= 0) return { expiries: this.#expiries, slot };
    const old = this.#moving ? this.#findMoving(digest) : -1;
    return old >= 0 ? { expiries: this.#moving!.expiries, slot: old } : undefined;
  }

  release(id: string): void {
    const found = this.#locate(this.#digest(id));
    if (!found) return;
    if (found.expiries === this.#expiries) return this.#remove(found.slot);
    // In the table being moved: marked, and skipped when its turn to move comes.
    if (found.expiries[found.slot] !== RELEASED) {
      found.expiries[found.slot] = RELEASED;
      this.#size--;
    }
  }

  #seconds(ms: number): number {
    return Math.floor(ms / 1000) - this.#epoch;
  }

  #hold(expiries: Uint32Array, slot: number, expiresAt: number, pending: boolean): void {
    // Rounded up: an id is never forgotten before its time.
    const expiry = Math.min(SECONDS, Math.max(1, Math.ceil(expiresAt / 1000) - this.#epoch));
    expiries[slot] = pending ? expiry + PENDING : expiry;
    if (expiry < this.#nextExpiry) this.#nextExpiry = expiry;
  }

  #digest(id: string): Uint32Array {
    // SHA-256 of the secret prefix and the id: unpredictable without the prefix, and half
    // the cost of an HMAC (no length extension matters for a table index).
    const bytes = hash('sha256', this.#key + id, 'buffer');
    return new Uint32Array(bytes.buffer, bytes.byteOffset, WORDS);
  }

  /** The slot holding `digest`, or -1. */
  #find(digest: Uint32Array): number {
    const digests = this.#digests;
    for (let slot = digest[0]! % this.#slots; this.#expiries[slot] !== 0; slot = (slot + 1) % this.#slots) {
      const at = slot * WORDS;
      if (digests[at] === digest[0] && digests[at + 1] === digest[1] && digests[at + 2] === digest[2] && digests[at + 3] === digest[3]) return slot;
    }
    return -1;
  }

  /** The slot of the table being moved that holds `digest` and has not moved yet, or -1. */
  #findMoving(digest: Uint32Array): number {
    const { digests, expiries, slots, next } = this.#moving!;
    for (let slot = digest[0]! % slots; expiries[slot] !== 0; slot = (slot + 1) % slots) {
      const at = slot * WORDS;
      if (digests[at] === digest[0] && digests[at + 1] === digest[1] && digests[at + 2] === digest[2] && digests[at + 3] === digest[3]) return slot >= next ? slot : -1;
    }
    return -1;
  }

  /** Moves the ids of up to `count` more slots of the table being replaced; expired and released ones are dropped. */
  #move(now: number, count: number): void {
    const moving = this.#moving!;
    const { digests, expiries } = moving;
    const slots = this.#slots;
    const end = Math.min(moving.slots, moving.next + count);
    for (let slot = moving.next; slot < end; slot++) {
      const expiry = expiries[slot]!;
      if (expiry === 0 || expiry === RELEASED) continue;
      if ((expiry & SECONDS) <= now) {
        this.#size--;
        continue;
      }
      const from = slot * WORDS;
      let to = digests[from]! % slots;
      while (this.#expiries[to] !== 0) to = (to + 1) % slots;
      const at = to * WORDS;
      this.#digests[at] = digests[from]!;
      this.#digests[at + 1] = digests[from + 1]!;
      this.#digests[at + 2] = digests[from + 2]!;
      this.#digests[at + 3] = digests[from + 3]!;
      this.#expiries[to] = expiry;
      if ((expiry & SECONDS) < this.#nextExpiry) this.#nextExpiry = expiry & SECONDS;
    }
    moving.next = end;
    if (end === moving.slots) this.#moving = undefined;
  }

  #emptySlotFor(digest: Uint32Array): number {
    let slot = digest[0]! % this.#slots;
    while (this.#expiries[slot] !== 0) slot = (slot + 1) % this.#slots;
    return slot;
  }

  /** Empties `slot` and moves later ids of its run back, so every id stays reachable from its home slot. */
  #remove(slot: number): void {
    const slots = this.#slots;
    let hole = slot;
    for (let next = (hole + 1) % slots; this.#expiries[next] !== 0; next = (next + 1) % slots) {
      const home = this.#digests[next * WORDS]! % slots;
      // The id at `next` may fill the hole unless its home lies cyclically in (hole, next].
      const reachable = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (reachable) continue;
      this.#digests.copyWithin(hole * WORDS, next * WORDS, next * WORDS + WORDS);
      this.#expiries[hole] = this.#expiries[next]!;
      hole = next;
    }
    this.#expiries[hole] = 0;
    this.#size--;
  }

  /** Removes every expired id, when one may have expired since the last sweep. */
  #sweepIfDue(now: number): void {
    if (now < this.#nextExpiry) return;
    let next = Infinity;
    for (let slot = 0; slot < this.#slots; ) {
      const expiry = this.#expiries[slot]! & SECONDS;
      if (expiry !== 0 && expiry <= now) {
        // An id moved back into this slot is looked at next.
        this.#remove(slot);
        continue;
      }
      if (expiry !== 0 && expiry < next) next = expiry;
      slot++;
    }
    this.#nextExpiry = next;
  }

  /** Starts moving the ids to a table of `slots` (never while a move is under way: a claim finishes it first). */
  #resize(slots: number): void {
    if (slots === this.#slots) return;
    this.#moving = { digests: this.#digests, expiries: this.#expiries, slots: this.#slots, next: 0 };
    this.#slots = slots;
    this.#digests = new Uint32Array(slots * WORDS);
    this.#expiries = new Uint32Array(slots);
  }

}

export interface RedisReplayStoreOptions extends RedisConnectionOptions {
  /** Prefix of every key. @default 'tributary:webhook:' */
  prefix?: string;
}

/** An id's Redis key after the prefix: 22 characters whatever the id (base64url of 16 bytes of its SHA-256). */
function redisKeyOf(id: string): string {
  return createHash('sha256').update(id).digest().subarray(0, 16).toString('base64url');
}

/**
 * Webhook ids in Redis (7.0 or later), shared by every instance behind one address: the
 * store to use when the webhook runs as several replicas. `SET key p PXAT expiresAt NX GET`
 * takes an id atomically (and tells a request in progress from one stored), so of two instances receiving the same request exactly one
 * accepts it. Keys are a fixed-size digest of the id (prefix + 22 characters) and expire
 * with it; size Redis for them (`maxmemory` with `noeviction`: an evicted id could be
 * replayed). The ioredis client is loaded only when a store is made.
 *
 * ## Example
 * ```ts
 * import { fromWebhook, redisReplayStore } from 'tributary/webhook';
 * const replay = redisReplayStore({ url: 'redis://127.0.0.1:6379' });
 * const source = fromWebhook({ vendors, access, replay });
 * ```
 */
export function redisReplayStore(options: RedisReplayStoreOptions): ReplayStore & { close(): Promise<void> } {
  const { client: redis, close } = connectRedis(options, 'redisReplayStore');
  const prefix = redisPrefix(options.prefix, 'tributary:webhook:');
  const failed = (cause: unknown) =>
    new TributaryError(redisFailure(redis, `replay store: Redis failed: ${(cause as Error).message}`), { code: 'REPLAY_STORE', retriable: true, cause });
  return {
    async claim(id, expiresAt) {
      let previous: string | null;
      try {
        // 'p' while the request is in progress, '1' once its records are stored.
        previous = await redis.set(prefix + redisKeyOf(id), 'p', 'PXAT', expiresAt, 'NX', 'GET');
      } catch (cause) {
        throw failed(cause);
      }
      return previous === null ? true : previous === 'p' ? 'pending' : false;
    },
    async confirm(id, expiresAt) {
      try {
        await redis.set(prefix + redisKeyOf(id), '1', 'PXAT', expiresAt);
      } catch (cause) {
        throw failed(cause);
      }
    },
    async release(id) {
      try {
        await redis.del(prefix + redisKeyOf(id));
      } catch (cause) {
        throw failed(cause);
      }
    },
    close,
  };
}
