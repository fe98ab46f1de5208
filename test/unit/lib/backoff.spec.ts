import { expect } from 'chai';
import fc from 'fast-check';
import { performance } from 'node:perf_hooks';
import { fromIterable } from '../../../connectors/iterable';
import { SinkError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import { backoffDelay, resolveRetryOptions, retry } from '../../../lib/retry';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';

describe('backoff: growth, jitter bounds, and real waits', () => {
  it('property: every delay lies in [0, min(max, initial·factor^(attempt-1))], and the ceiling is reached', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.double({ min: 1, max: 4, noNaN: true }),
        fc.integer({ min: 1, max: 30 }),
        fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        (initial, extra, factor, attempt, random) => {
          const options = resolveRetryOptions({ initialDelayMs: initial, maxDelayMs: initial + extra, factor });
          const ceiling = Math.min(initial + extra, initial * factor ** (attempt - 1));
          const delay = backoffDelay(attempt, options, () => random);
          expect(delay).to.be.at.least(0).and.at.most(Math.round(ceiling));
          expect(backoffDelay(attempt, options, () => 1)).to.equal(Math.round(ceiling));
        },
      ),
      { seed: 15, numRuns: 500 },
    );
  });

  it('retry waits the backoff it reports, growing it each attempt (the wait is never skipped)', async () => {
    const random = Math.random;
    // The top of each jitter range, so the growth is exact.
    Math.random = () => 1;
    const delays: number[] = [];
    const attemptsAt: number[] = [];
    try {
      await retry(
        async () => {
          attemptsAt.push(performance.now());
          if (attemptsAt.length < 6) throw new SinkError('busy', { retriable: true });
        },
        { initialDelayMs: 4, maxDelayMs: 40, factor: 2, onRetry: (_e, _a, delayMs) => delays.push(delayMs) },
      );
    } finally {
      Math.random = random;
    }
    expect(delays).to.deep.equal([4, 8, 16, 32, 40]);
    // Timers never fire early: each gap is at least the delay announced (1 ms for clock rounding).
    delays.forEach((delay, i) => expect(attemptsAt[i + 1]! - attemptsAt[i]!, `wait before attempt ${i + 2}`).to.be.at.least(delay - 1));
  });
});

describe('circuit breaker: bad rows are not failures of the sink', () => {
  it('stays closed through many batches refused for their rows, and dead-letters only those rows', async () => {
    const sink = new MemorySink<number>();
    // Every multiple of 5 is a row the sink refuses: each batch of 5 holds one.
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => !e.settled && e.value % 5 === 0)) throw new SinkError('cannot parse row', { rowsAtFault: true });
    };
    const deadLetters = new MemorySink<DeadLetter>();
    const pipeline = new Pipeline({
      source: fromIterable(Array.from({ length: 200 }, (_, i) => i)),
      sink,
      deadLetters,
      batch: { rows: 5, maxWaitMs: 1 },
      deadLetterBatch: { maxWaitMs: 1 },
      breaker: { volumeThreshold: 2, errorThresholdPercentage: 10 },
      retry: { retries: 0 },
    });
    const opened: unknown[] = [];
    pipeline.on('breaker.open', (event) => opened.push(event));
    const stats = await pipeline.run();
    expect(opened).to.deep.equal([]);
    expect(stats).to.include({ read: 200, written: 160, deadLettered: 40, nacked: 0 });
    expect(deadLetters.rows.every((l) => Number(l.raw) % 5 === 0 && l.stage === 'sink')).to.equal(true);
  });
});
