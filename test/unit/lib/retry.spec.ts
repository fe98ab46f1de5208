import { expect } from 'chai';
import { ConfigError, SinkError, VendorApiError } from '../../../lib/errors';
import { backoffDelay, resolveRetryOptions, retry } from '../../../lib/retry';

describe('retry', () => {
  const fast = { initialDelayMs: 1, maxDelayMs: 2 };

  it('retries retriable errors until the operation succeeds', async () => {
    let calls = 0;
    const result = await retry(async () => {
      if (++calls < 3) throw new SinkError('busy', { retriable: true });
      return 'done';
    }, fast);
    expect([result, calls]).to.deep.equal(['done', 3]);
  });

  it('gives up after the retries and rethrows the last error', async () => {
    let calls = 0;
    const error = await retry(async () => {
      throw new SinkError(`busy ${++calls}`, { retriable: true });
    }, { ...fast, retries: 2 }).catch((e: Error) => e);
    expect(error.message).to.equal('busy 3');
  });

  it('does not retry an error that is not retriable, nor a plain Error', async () => {
    for (const thrown of [new SinkError('bad row', { retriable: false }), new Error('bug')]) {
      let calls = 0;
      await retry(async () => {
        calls++;
        throw thrown;
      }, fast).catch(() => undefined);
      expect(calls).to.equal(1);
    }
  });

  it('stops at once when bail is called', async () => {
    let calls = 0;
    const error = await retry(async (_attempt, bail) => {
      calls++;
      return bail(new Error('stop'));
    }, fast).catch((e: Error) => e);
    expect([error.message, calls]).to.deep.equal(['stop', 1]);
  });

  it('stops waiting when aborted', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 20);
    const started = Date.now();
    let calls = 0;
    // The wait is a uniform pick up to 10 s (full jitter): pinned at 7.5 s, so that it cannot
    // come out shorter than the 20 ms before the abort (1 run in 500 did).
    const random = Math.random;
    Math.random = () => 0.75;
    let error: unknown;
    try {
      error = await retry(async () => {
        calls++;
        throw new SinkError('down', { retriable: true });
      }, { retries: 100, initialDelayMs: 10_000, maxDelayMs: 10_000, signal: abort.signal }).catch((e: Error) => e);
    } finally {
      Math.random = random;
    }
    expect(Date.now() - started).to.be.below(5_000);
    // Aborted during the wait: the last error, and no further attempt after the wait.
    expect([(error as Error).message, calls]).to.deep.equal(['down', 1]);
  });

  it('ignores a Retry-After that is not a positive number of milliseconds', async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        calls++;
        if (calls <= 3) throw new VendorApiError('429', 429, 'http://vendor/x', { retryAfterMs: [Number.NaN, -5, 0][calls - 1] });
      },
      { ...fast, onRetry: (_error, _attempt, delayMs) => delays.push(delayMs) },
    );
    expect(delays).to.have.length(3);
    for (const delay of delays) expect(delay).to.be.within(0, 2);
  });

  it("waits at least a server's Retry-After, carried by the error as retryAfterMs", async () => {
    const delays: number[] = [];
    let calls = 0;
    await retry(
      async () => {
        if (++calls === 1) throw new VendorApiError('429', 429, 'http://vendor/x', { retryAfterMs: 30 });
        if (calls === 2) throw new VendorApiError('503', 503, 'http://vendor/x');
      },
      { ...fast, onRetry: (_error, _attempt, delayMs) => delays.push(delayMs) },
    );
    expect(delays[0]).to.equal(30);
    expect(delays[1]).to.be.at.most(2);
    // 429 and 5xx are worth retrying; other 4xx are not.
    expect([429, 500, 503, 0, 404, 401].map((status) => new VendorApiError('x', status, 'u').retriable)).to.deep.equal([true, true, true, true, false, false]);
  });

  it('grows the delay ceiling exponentially up to the maximum, with full jitter', () => {
    const options = resolveRetryOptions({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2 });
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay(a, options, () => 1))).to.deep.equal([100, 200, 400, 800, 1000]);
    expect(backoffDelay(3, options, () => 0)).to.equal(0);
  });

  it('refuses options that make no sense', () => {
    expect(() => resolveRetryOptions({ factor: 0.5 })).to.throw(ConfigError, 'retry.factor must be a number >= 1, got 0.5');
    expect(() => resolveRetryOptions({ initialDelayMs: -1 })).to.throw(ConfigError).with.property('message', 'retry.initialDelayMs must be a number >= 0, got -1');
    expect(() => resolveRetryOptions({ initialDelayMs: 100, maxDelayMs: 10 })).to.throw(ConfigError, 'retry.maxDelayMs must be >= initialDelayMs (100), got 10');
  });
});
