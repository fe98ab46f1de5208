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
/** Time as the limit sees it: the wall clock and an abortable sleep, or a test's own. */
export interface RateClock {
  now(): number;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export class RateLimit {
  readonly #intervalMs: number;
  readonly #concurrency: number;
  /** When the last `#perSecond` requests started (by the clock, as they did). */
  readonly #recent: number[] = [];
  readonly #perSecond: number;
  #running = 0;
  #waiting: Array<() => void> = [];
  readonly #clock: RateClock;

  constructor(requestsPerSecond: number, concurrency: number, clock: RateClock = { now: Date.now, sleep }) {
    positiveNumber(requestsPerSecond, NaN, 'requestsPerSecond');
    positiveInteger(concurrency, NaN, 'concurrency');
    this.#intervalMs = 1000 / requestsPerSecond;
    this.#concurrency = concurrency;
    this.#perSecond = Math.max(1, Math.floor(requestsPerSecond));
    this.#clock = clock;
  }

  /** Runs `request` when both limits allow it. */
  async run<T>(request: () => Promise<T>, signal: AbortSignal): Promise<T> {
    if (this.#running >= this.#concurrency) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    try {
      // A start is taken when the clock says it is due, and recorded as it happens: a timer
      // that fires late delays its own request, and the next waits from when it really went.
      for (let now = this.#clock.now(), due = this.#due(); due > now && !signal.aborted; now = this.#clock.now(), due = this.#due()) {
        await this.#clock.sleep(due - now, signal);
      }
      this.#recent.push(this.#clock.now());
      if (this.#recent.length > this.#perSecond) this.#recent.shift();
      return await request();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }

  /** When the next request may start: an interval after the last start, and a second after the start `#perSecond` starts ago. */
  #due(): number {
    const recent = this.#recent;
    if (recent.length === 0) return -Infinity;
    const spaced = recent[recent.length - 1]! + this.#intervalMs;
    return recent.length < this.#perSecond ? spaced : Math.max(spaced, recent[recent.length - this.#perSecond]! + 1000);
  }
}
