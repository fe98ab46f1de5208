import { expect } from 'chai';
import { Credits } from '../../../lib/credits';
import { ConfigError } from '../../../lib/errors';

describe('Credits', () => {
  it('hands out credit up to the record limit, then waits for a release', async () => {
    const credits = new Credits({ records: 2, bytes: 100 });
    expect(credits.take(1)).to.equal(undefined);
    expect(credits.take(1)).to.equal(undefined);
    let taken = false;
    const wait = credits.take(1)!.then(() => (taken = true));
    await Promise.resolve();
    expect(taken).to.equal(false);
    credits.release(1);
    await wait;
    expect([credits.inFlightRecords, credits.inFlightBytes]).to.deep.equal([2, 2]);
  });

  it('released() resolves at the next release without taking credit', async () => {
    const credits = new Credits({ records: 1, bytes: 100 });
    expect(credits.tryTake(10)).to.equal(true);
    let woken = 0;
    const waits = [credits.released().then(() => woken++), credits.released().then(() => woken++)];
    await Promise.resolve();
    expect(woken).to.equal(0);
    credits.release(10);
    await Promise.all(waits);
    expect([woken, credits.inFlightRecords, credits.inFlightBytes]).to.deep.equal([2, 0, 0]);
  });

  it('limits bytes, and lets one oversized record through when nothing else is in flight', () => {
    const credits = new Credits({ records: 10, bytes: 100 });
    expect(credits.tryTake(500)).to.equal(true);
    expect(credits.tryTake(1)).to.equal(false);
    credits.release(500);
    expect(credits.tryTake(60)).to.equal(true);
    expect(credits.tryTake(60)).to.equal(false);
    expect(credits.tryTake(40)).to.equal(true);
  });

  it('refuses limits below one', () => {
    expect(() => new Credits({ records: 0 })).to.throw(ConfigError, 'inFlight.records must be an integer >= 1, got 0');
    expect(() => new Credits({ bytes: 0.5 })).to.throw(ConfigError, 'inFlight.bytes must be an integer >= 1, got 0.5');
  });
});
