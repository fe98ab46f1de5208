import { expect } from 'chai';
import { WrongKeyLimiter } from '../../../connectors/webhook/wrongKeys';
import { ConfigError } from '../../../lib/errors';

describe('WrongKeyLimiter: a token bucket per client for requests without a valid key', () => {
  const start = 1_800_000_000_000;

  it('lets a client try while it has a whole token, then makes it wait for the next one', () => {
    const limiter = new WrongKeyLimiter({ attempts: 3, perSeconds: 60 });
    expect(limiter.waitSeconds('10.0.0.1', start)).to.equal(0);
    limiter.failed('10.0.0.1', start);
    expect(limiter.waitSeconds('10.0.0.1', start), 'two tokens left').to.equal(0);
    limiter.failed('10.0.0.1', start);
    expect(limiter.waitSeconds('10.0.0.1', start), 'one token left').to.equal(0);
    limiter.failed('10.0.0.1', start);
    // A token comes back every 20 s.
    expect(limiter.waitSeconds('10.0.0.1', start)).to.equal(20);
    expect(limiter.waitSeconds('10.0.0.1', start + 10_000), 'half a token back').to.equal(10);
    expect(limiter.waitSeconds('10.0.0.1', start + 20_000)).to.equal(0);
    // Full again after 60 s: a fresh start, three tries.
    expect(limiter.waitSeconds('10.0.0.1', start + 60_000)).to.equal(0);
    for (let i = 0; i < 3; i++) limiter.failed('10.0.0.1', start + 60_000);
    expect(limiter.waitSeconds('10.0.0.1', start + 60_000)).to.equal(20);
    expect(limiter.waitSeconds('10.0.0.2', start), 'another client').to.equal(0);
  });

  it('forgets the client that failed longest ago past 10,000, never one that failed since', () => {
    const limiter = new WrongKeyLimiter({ attempts: 1, perSeconds: 60 });
    const client = (i: number) => `192.0.2.${i}`;
    for (let i = 0; i < 10_000; i++) limiter.failed(client(i), start);
    // Failing again moves a client to the back (and costs it another token).
    limiter.failed(client(0), start);
    expect([limiter.waitSeconds(client(0), start), limiter.waitSeconds(client(1), start)]).to.deep.equal([120, 60]);
    limiter.failed('198.51.100.1', start);
    expect([limiter.waitSeconds(client(0), start), limiter.waitSeconds(client(1), start), limiter.waitSeconds(client(2), start)]).to.deep.equal([120, 0, 60]);
  });

  it('refuses limits that are not positive', () => {
    expect(() => new WrongKeyLimiter({ attempts: 0 })).to.throw(ConfigError, 'wrongKeyLimit.attempts must be an integer >= 1, got 0');
    expect(() => new WrongKeyLimiter({ perSeconds: 0 })).to.throw(ConfigError, 'wrongKeyLimit.perSeconds must be a number > 0, got 0');
  });
});
