import { positiveInteger, positiveNumber } from '../../lib/options';
import { sleep } from '../../lib/sleep';

/**
 * Spaces request starts at least `1 / requestsPerSecond` apart and keeps at most
 * `concurrency` under way: what vendor APIs publish as their limits.
 *
 * Not p-queue: its interval limit counts starts in fixed windows (a window's last starts
 * and the next one's first may come together, twice the rate within one second), it spaces
 * nothing, and it is an ES module this CommonJS package could load only asynchronously.
 */
export class RateLimit {
  readonly #intervalMs: number;
  readonly #concurrency: number;
  #nextStart = 0;
  /** Start times of the last `#perSecond` requests: a late timer must not let a burst through. */
  readonly #recent: number[] = [];
  readonly #perSecond: number;
  #running = 0;
  #waiting: Array<() => void> = [];

  constructor(requestsPerSecond: number, concurrency: number) {
    positiveNumber(requestsPerSecond, NaN, 'requestsPerSecond');
    positiveInteger(concurrency, NaN, 'concurrency');
    this.#intervalMs = 1000 / requestsPerSecond;
    this.#concurrency = concurrency;
    this.#perSecond = Math.max(1, Math.floor(requestsPerSecond));
  }

  /** Runs `request` when both limits allow it. */
  async run<T>(request: () => Promise<T>, signal: AbortSignal): Promise<T> {
    if (this.#running >= this.#concurrency) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    try {
      const now = Date.now();
      const windowFull = this.#recent.length >= this.#perSecond ? this.#recent[this.#recent.length - this.#perSecond]! + 1000 : 0;
      const start = Math.max(now, this.#nextStart, windowFull);
      this.#nextStart = start + this.#intervalMs;
      this.#recent.push(start);
      if (this.#recent.length > this.#perSecond) this.#recent.shift();
      if (start > now) await sleep(start - now, signal);
      return await request();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }
}
