import { expect } from 'chai';
import { ConfigError } from '../../../lib/errors';
import { booleanOption, integerAtLeast, integerAtLeastOrInfinity, integerInRange, nonNegativeInteger, numberAtLeast, portOption, positiveInteger, positiveNumber } from '../../../lib/options';
import { sleep } from '../../../lib/sleep';

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

describe('lib/options: integerAtLeast and portOption', () => {
  it('takes the value or the fallback, and refuses what breaks the rule with the rule', () => {
    expect(integerAtLeast(undefined, 86_400_000, 'ttlMs', 1000)).to.equal(86_400_000);
    expect(integerAtLeast(1000, 5, 'ttlMs', 1000)).to.equal(1000);
    expect(() => integerAtLeast(999, 86_400_000, 'ttlMs', 1000)).to.throw(ConfigError, 'ttlMs must be an integer >= 1000, got 999');
    expect(() => integerAtLeast(1000.5, 1, 'ttlMs', 1000)).to.throw(ConfigError, 'ttlMs must be an integer >= 1000, got 1000.5');
    expect(() => integerAtLeast(undefined, NaN, 'days', 1)).to.throw(ConfigError, 'days must be an integer >= 1, got undefined');
  });

  it('takes an integer in a range, its ends included', () => {
    expect(integerInRange(undefined, 10, 'readerPriority', 0, 19)).to.equal(10);
    expect(integerInRange(0, 10, 'readerPriority', 0, 19)).to.equal(0);
    expect(integerInRange(19, 10, 'readerPriority', 0, 19)).to.equal(19);
    expect(() => integerInRange(20, 10, 'readerPriority', 0, 19)).to.throw(ConfigError, 'readerPriority must be an integer from 0 to 19, got 20');
    expect(() => integerInRange(-1, 10, 'readerPriority', 0, 19)).to.throw(ConfigError, 'readerPriority must be an integer from 0 to 19, got -1');
    expect(() => integerInRange(1.5, 10, 'readerPriority', 0, 19)).to.throw(ConfigError, 'readerPriority must be an integer from 0 to 19, got 1.5');
  });

  it('takes ports 0 to 65535', () => {
    expect(portOption(undefined, 8080)).to.equal(8080);
    expect(portOption(0, 8080)).to.equal(0);
    expect(portOption(65535, 8080)).to.equal(65535);
    expect(() => portOption(65536, 8080)).to.throw(ConfigError, 'port must be an integer in [0, 65535], got 65536');
    expect(() => portOption(-1, 8080, 'metrics.port')).to.throw(ConfigError, 'metrics.port must be an integer in [0, 65535], got -1');
    expect(() => portOption(80.5, 8080)).to.throw(ConfigError, 'port must be an integer in [0, 65535], got 80.5');
  });
});

describe('lib/options: one rule for every option', () => {
  it('takes undefined as the default, and refuses null like any other value that breaks the rule', () => {
    expect(positiveInteger(undefined, 4, 'sinkConcurrency')).to.equal(4);
    expect(() => positiveInteger(null as never, 4, 'sinkConcurrency')).to.throw(ConfigError, 'sinkConcurrency must be an integer >= 1, got null');
    expect(() => booleanOption(null as never, true, 'alignBatches')).to.throw(ConfigError, 'alignBatches must be true or false, got null');
    expect(() => positiveNumber(null as never, 5, 'requestsPerSecond')).to.throw(ConfigError, 'requestsPerSecond must be a number > 0, got null');
  });

  it('quotes a string given for a number, so "5" is told from 5', () => {
    expect(() => positiveInteger('5' as never, 1, 'batch.rows')).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got "5"');
    expect(() => numberAtLeast('5' as never, 100, 'retry.initialDelayMs', 0)).to.throw(ConfigError, 'retry.initialDelayMs must be a number >= 0, got "5"');
    expect(() => portOption('8080' as never, 0)).to.throw(ConfigError, 'port must be an integer in [0, 65535], got "8080"');
  });

  it('booleanOption: true or false, the default for undefined, nothing truthy or falsy besides', () => {
    expect(booleanOption(undefined, true, 'cardsByName')).to.equal(true);
    expect(booleanOption(undefined, false, 'pseudonymize')).to.equal(false);
    expect(booleanOption(false, true, 'cardsByName')).to.equal(false);
    expect(booleanOption(true, false, 'pseudonymize')).to.equal(true);
    expect(() => booleanOption('yes' as never, true, 'cardsByName')).to.throw(ConfigError, 'cardsByName must be true or false, got "yes"');
    expect(() => booleanOption('false' as never, true, 'cardsByName')).to.throw(ConfigError, 'cardsByName must be true or false, got "false"');
    expect(() => booleanOption(0 as never, true, 'rules[0].applyNow')).to.throw(ConfigError, 'rules[0].applyNow must be true or false, got 0');
    expect(() => booleanOption(1 as never, true, 'x')).to.throw(ConfigError, 'x must be true or false, got 1');
    expect(() => booleanOption({ on: true } as never, true, 'x')).to.throw(ConfigError, 'x must be true or false, got { on: true }');
    expect(() => booleanOption(10n as never, true, 'x')).to.throw(ConfigError, 'x must be true or false, got 10n');
    // A value given by mistake is shown on one line, its top level only, however large.
    const large = { enabledForEveryVendor: true, theNameOfTheOption: 'cardsByName', nested: { deeper: { deepest: 1 } }, list: [1, 2, 3] };
    expect(() => booleanOption(large as never, true, 'x')).to.throw(ConfigError).with.property('message', `x must be true or false, got { enabledForEveryVendor: true, theNameOfTheOption: 'cardsByName', nested: [Object], list: [Array] }`);
  });

  it('integerAtLeastOrInfinity: an integer from its least, or Infinity for no limit', () => {
    expect(integerAtLeastOrInfinity(undefined, 262_144, 'deadLetterRawBytes', 1)).to.equal(262_144);
    expect(integerAtLeastOrInfinity(Infinity, 262_144, 'deadLetterRawBytes', 1)).to.equal(Infinity);
    expect(integerAtLeastOrInfinity(1, 262_144, 'deadLetterRawBytes', 1)).to.equal(1);
    expect(integerAtLeastOrInfinity(0, 5, 'retry.retries', 0)).to.equal(0);
    for (const [bad, shown] of [[0, '0'], [1.5, '1.5'], [-Infinity, '-Infinity'], [NaN, 'NaN'], ['Infinity', '"Infinity"'], [null, 'null']] as const) {
      expect(() => integerAtLeastOrInfinity(bad as never, 262_144, 'deadLetterRawBytes', 1)).to.throw(ConfigError, `deadLetterRawBytes must be an integer >= 1 or Infinity, got ${shown}`);
    }
  });

  it('positiveNumber: finite and above 0; numberAtLeast: from its least', () => {
    expect(positiveNumber(undefined, 5, 'requestsPerSecond')).to.equal(5);
    expect(positiveNumber(0.5, 5, 'requestsPerSecond')).to.equal(0.5);
    for (const [bad, shown] of [[0, '0'], [-1, '-1'], [Infinity, 'Infinity'], [NaN, 'NaN']] as const) {
      expect(() => positiveNumber(bad, 5, 'requestsPerSecond')).to.throw(ConfigError, `requestsPerSecond must be a number > 0, got ${shown}`);
    }
    expect(numberAtLeast(undefined, 2, 'retry.factor', 1)).to.equal(2);
    expect(numberAtLeast(1, 2, 'retry.factor', 1)).to.equal(1);
    expect(numberAtLeast(1.5, 2, 'retry.factor', 1)).to.equal(1.5);
    expect(() => numberAtLeast(0.5, 2, 'retry.factor', 1)).to.throw(ConfigError, 'retry.factor must be a number >= 1, got 0.5');
    expect(() => numberAtLeast(NaN, 0, 'timeoutMs', 0)).to.throw(ConfigError, 'timeoutMs must be a number >= 0, got NaN');
  });
});
