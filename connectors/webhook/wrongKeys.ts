import { positiveInteger, positiveNumber } from '../../lib/options';

/** How many requests without a valid API key one client may make before it waits. */
export interface WrongKeyLimit {
  /** Failed attempts a client may make at once (the bucket). @default 10 */
  attempts?: number;
  /** Seconds in which a client earns `attempts` new tries back. @default 60 */
  perSeconds?: number;
}

/** Clients remembered at most; past it the one seen longest ago is forgotten. */
const MAX_CLIENTS = 10_000;

/**
 * A token bucket per client address for requests that present no valid API key: each
 * costs a token; with none left every request of that client is refused until tokens
 * come back, a right key included, so guessing keys gains one try per refill. Clients
 * that never fail cost nothing: only failing addresses are remembered, at most
 * {@link MAX_CLIENTS} of them.
 */
export class WrongKeyLimiter {
  readonly attempts: number;
  readonly perSeconds: number;
  readonly #clients = new Map<string, { tokens: number; at: number }>();

  constructor(limit: WrongKeyLimit = {}) {
    this.attempts = positiveInteger(limit.attempts, 10, 'wrongKeyLimit.attempts');
    this.perSeconds = positiveNumber(limit.perSeconds, 60, 'wrongKeyLimit.perSeconds');
  }

  /** Seconds `client` must wait before its next try; 0 when it may try now. */
  waitSeconds(client: string, now = Date.now()): number {
    const bucket = this.#refilled(client, now);
    if (!bucket || bucket.tokens >= 1) return 0;
    return Math.ceil(((1 - bucket.tokens) * this.perSeconds) / this.attempts);
  }

  /** Takes a token from `client` for a request without a valid key. */
  failed(client: string, now = Date.now()): void {
    const bucket = this.#refilled(client, now) ?? { tokens: this.attempts, at: now };
    bucket.tokens -= 1;
    // Re-inserted so the map's order is that of the last failure: the front is forgotten first.
    this.#clients.delete(client);
    this.#clients.set(client, bucket);
    if (this.#clients.size > MAX_CLIENTS) this.#clients.delete(this.#clients.keys().next().value!);
  }

  #refilled(client: string, now: number): { tokens: number; at: number } | undefined {
    const bucket = this.#clients.get(client);
    if (!bucket) return undefined;
    bucket.tokens = Math.min(this.attempts, bucket.tokens + ((now - bucket.at) / 1000) * (this.attempts / this.perSeconds));
    bucket.at = now;
    if (bucket.tokens >= this.attempts) {
      this.#clients.delete(client);
      return undefined;
    }
    return bucket;
  }
}
