import { expect } from 'chai';
import { ConfigError } from '../../lib/errors';
import { nonNegativeInteger, positiveInteger } from '../../lib/options';
import { sleep } from '../../lib/sleep';

/** Which settles first: `promise`, or a 10 s timer (far past anything here that works). */
async function first(promise: Promise<unknown>): Promise<'settled' | 'timer'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timer'>((resolve) => (timer = setTimeout(() => resolve('timer'), 10_000)));
  try {
    return await Promise.race([promise.then(() => 'settled' as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('sleep', function () {
  this.timeout(20_000);
  it('waits out its time when nothing aborts it', async () => {
    expect(await first(sleep(5))).to.equal('settled');
    expect(await first(sleep(5, new AbortController().signal))).to.equal('settled');
  });

  it('ends an hour-long wait at once when its signal aborts, before or during, and never rejects', async () => {
    const before = new AbortController();
    before.abort();
    expect(await first(sleep(3_600_000, before.signal))).to.equal('settled');
    const during = new AbortController();
    const waiting = sleep(3_600_000, during.signal);
    setImmediate(() => during.abort());
    expect(await first(waiting)).to.equal('settled');
  });
});

describe('option checks', () => {
  it('take the value or its fallback, and refuse what breaks the rule with a message that states it', () => {
    expect(positiveInteger(3, 1, 'x')).to.equal(3);
    expect(positiveInteger(undefined, 7, 'x')).to.equal(7);
    expect(nonNegativeInteger(0, 5, 'y')).to.equal(0);
    expect(nonNegativeInteger(undefined, 5, 'y')).to.equal(5);
    expect(() => positiveInteger(0, 1, 'batch.rows')).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 0');
    expect(() => positiveInteger(1.5, 1, 'batch.rows')).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 1.5');
    expect(() => nonNegativeInteger(-1, 0, 'retries')).to.throw(ConfigError, 'retries must be an integer >= 0, got -1');
    expect(() => nonNegativeInteger(Number.NaN, 0, 'retries')).to.throw(ConfigError, 'retries must be an integer >= 0, got NaN');
  });
});
