import { expect } from 'chai';
import { setTimeout as wait } from 'node:timers/promises';
import { SinkBreaker } from '../../../lib/breaker';
import { ConfigError, SinkError } from '../../../lib/errors';

const down = () => Promise.reject(new SinkError('connection refused', { retriable: true }));
const fails = (breaker: SinkBreaker) => breaker.call(down).then(
  () => undefined,
  (e: SinkError) => e,
);

describe('SinkBreaker', () => {
  it('refuses a threshold outside (0, 100], naming the option', () => {
    for (const bad of [0, -1, 100.5, Number.NaN]) {
      expect(() => new SinkBreaker('s', { errorThresholdPercentage: bad })).to.throw(ConfigError, `breaker.errorThresholdPercentage must be a number in (0, 100], got ${bad}`);
    }
    for (const good of [0.5, 50, 100]) new SinkBreaker('s', { errorThresholdPercentage: good }).shutdown();
    expect(() => new SinkBreaker('s', { resetTimeoutMs: 0 })).to.throw(ConfigError).with.property('message', 'breaker.resetTimeoutMs must be an integer >= 1, got 0');
  });

  it('opens on retriable failures and then fails at once with BREAKER_OPEN naming the last failure', async () => {
    const breaker = new SinkBreaker('bookings', { volumeThreshold: 2, resetTimeoutMs: 60_000 });
    try {
      await fails(breaker);
      await fails(breaker);
      expect(breaker.state).to.equal('open');
      let called = false;
      const error = await breaker.call(async () => void (called = true)).then(() => undefined, (e: SinkError) => e);
      expect(called).to.equal(false);
      expect(error).to.be.instanceOf(SinkError);
      expect([error!.code, error!.retriable, error!.message]).to.deep.equal([
        'BREAKER_OPEN',
        true,
        'sink bookings is unavailable (circuit breaker open): connection refused',
      ]);
      expect((error!.cause as Error).message, 'the cause is the last failure').to.equal('connection refused');
    } finally {
      breaker.shutdown();
    }
  });

  it('counts failures only inside its rolling window', async () => {
    // Two failures 300 ms apart: inside a 10 s window they open the breaker, in a 100 ms one they never meet.
    const short = new SinkBreaker('short', { volumeThreshold: 2, rollingCountTimeoutMs: 100 });
    const long = new SinkBreaker('long', { volumeThreshold: 2 });
    try {
      await Promise.all([fails(short), fails(long)]);
      await wait(300);
      await Promise.all([fails(short), fails(long)]);
      expect([short.state, long.state]).to.deep.equal(['closed', 'open']);
    } finally {
      short.shutdown();
      long.shutdown();
    }
  });

  it('lets no call through once shut down', async () => {
    const breaker = new SinkBreaker('s');
    breaker.shutdown();
    let called = false;
    const error = await breaker.call(async () => void (called = true)).then(() => undefined, (e: Error) => e);
    expect(called).to.equal(false);
    expect(error).to.be.instanceOf(Error);
  });
});
