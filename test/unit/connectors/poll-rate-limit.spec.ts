import { expect } from 'chai';
import { RateLimit, type RateClock } from '../../../connectors/poll/rateLimit';

/**
 * Virtual time: `sleep` wakes when `run` moves the clock to its due time, plus a lateness
 * the test chooses (a loaded machine's late timers), so the limit is checked without any
 * real waiting or timing.
 */
class VirtualClock implements RateClock {
  #now = 0;
  #timers: { at: number; wake: () => void }[] = [];
  constructor(private readonly lateness: () => number) {}

  now = (): number => this.#now;

  sleep = (ms: number, signal: AbortSignal): Promise<void> =>
    new Promise((wake) => {
      if (signal.aborted) return wake();
      this.#timers.push({ at: this.#now + ms + this.lateness(), wake });
    });

  /** Runs until `done` settles: wakes the earliest timer whenever everything else waits. */
  async run(done: Promise<unknown>): Promise<void> {
    let finished = false;
    void done.finally(() => (finished = true));
    while (!finished) {
      await new Promise((settle) => setImmediate(settle));
      if (finished) break;
      this.#timers.sort((a, b) => a.at - b.at);
      const next = this.#timers.shift();
      if (!next) throw new Error('nothing to wake, but the requests have not finished');
      this.#now = Math.max(this.#now, next.at);
      next.wake();
    }
  }
}

/** A seeded generator, so a failure repeats. */
function random(seed: number): () => number {
  return () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
}

/** When each of `count` requests started under the limit, in virtual ms. */
async function starts(requestsPerSecond: number, concurrency: number, count: number, lateness: () => number): Promise<number[]> {
  const clock = new VirtualClock(lateness);
  const limit = new RateLimit(requestsPerSecond, concurrency, clock);
  const signal = new AbortController().signal;
  const seen: number[] = [];
  const all = Promise.all(Array.from({ length: count }, () => limit.run(async () => void seen.push(clock.now()), signal)));
  await clock.run(all);
  return seen;
}

/** The most starts within any `windowMs` (a window opening at a start). */
function densest(times: readonly number[], windowMs: number): number {
  return Math.max(...times.map((t) => times.filter((u) => u >= t && u < t + windowMs).length));
}

/** The shortest gap between two starts, in the order they happened. */
function closest(times: readonly number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  return Math.min(...sorted.slice(1).map((t, i) => t - sorted[i]!));
}

describe('fromPoll: the request rate limit, in virtual time', () => {
  it('spaces starts 1/rate apart and keeps to the rate in every second, timers on time', async () => {
    const times = await starts(20, 4, 100, () => 0);
    expect(times).to.have.length(100);
    expect(closest(times)).to.be.at.least(50);
    expect(densest(times, 1000)).to.equal(20);
  });

  it('keeps both when timers fire late, by up to three intervals, in any order', async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const late = random(seed);
      const times = await starts(20, 4, 100, () => Math.floor(late() * 150));
      expect(times, `seed ${seed}`).to.have.length(100);
      expect(closest(times), `seed ${seed}: the closest starts`).to.be.at.least(50);
      expect(densest(times, 1000), `seed ${seed}: the most starts in a second`).to.be.at.most(20);
    }
  });

  it('keeps a rate with a fraction to its whole requests in any second (2.5/s: 2, not 3 at 400 ms apart)', async () => {
    const times = await starts(2.5, 3, 12, () => 0);
    expect(closest(times)).to.be.at.least(400);
    expect(densest(times, 1000)).to.equal(2);
  });

  it('keeps to a rate below one a second', async () => {
    const times = await starts(0.5, 2, 5, () => 0);
    expect(closest(times)).to.be.at.least(2000);
  });
});
