import { expect } from 'chai';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError, SinkError } from '../../../lib/errors';
import { fanOut } from '../../../lib/fanOut';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { delay, MemorySink, observed, until } from '../../helpers';

const fastRetry = { retries: Infinity, initialDelayMs: 1, maxDelayMs: 5 };

describe('fanOut', () => {
  it('acks a record only once every required sink has it, with the same token in each', async () => {
    const source = observed(fromIterable([1, 2, 3, 4]));
    const a = new MemorySink<number>('a');
    const b = new MemorySink<number>('b');
    let release!: () => void;
    b.gate = () => new Promise<void>((resolve) => (release = resolve));
    const sink = fanOut([{ sink: a, required: true }, { sink: b, required: true }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    await pipeline.start();
    await until(() => a.rows.length === 4 && b.writes.length === 1, 2000, 'both writes');
    await delay(20);
    expect(source.acked, 'b has not written yet').to.deep.equal([]);
    release();
    await pipeline.finished();
    expect(source.acked).to.have.length(4);
    expect(b.rows).to.deep.equal([1, 2, 3, 4]);
    expect(a.writes[0]!.token).to.equal(b.writes[0]!.token);
  });

  it('retries only the required sink that failed, with the same token, and nothing is lost', async () => {
    const source = observed(fromIterable([1, 2, 3]));
    const a = new MemorySink<number>('a');
    const b = new MemorySink<number>('b');
    let failures = 0;
    b.gate = async () => {
      if (failures++ < 3) throw new SinkError('connection refused', { retriable: true });
    };
    const sink = fanOut([{ sink: a, required: true }, { sink: b, required: true }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 }, retry: fastRetry, breaker: { volumeThreshold: 100 } });
    await pipeline.run();
    expect(source.acked).to.have.length(3);
    expect(a.writes, 'a already had the batch').to.have.length(1);
    expect(b.writes.map((w) => w.attempt)).to.deep.equal([1, 2, 3, 4]);
    expect(new Set(b.writes.map((w) => w.token))).to.deep.equal(new Set([a.writes[0]!.token]));
    expect(b.rows).to.deep.equal([1, 2, 3]);
  });

  it('nacks when a required sink fails for good, and the best-effort sink never sees the batch', async () => {
    const source = observed(fromIterable([1, 2]));
    const a = new MemorySink<number>('a');
    const cache = new MemorySink<number>('cache');
    a.gate = async () => {
      throw new SinkError('table gone', { retriable: false });
    };
    const sink = fanOut([{ sink: a, required: true }, { sink: cache, bestEffort: true }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    const error = await pipeline.run().then(() => undefined, (e: unknown) => e);
    expect(error).to.be.instanceOf(SinkError).with.property('message', 'table gone');
    expect(source.nacked).to.have.length(2);
    expect(cache.writes).to.have.length(0);
  });

  it('never holds records back for a best-effort sink: its failures are counted and mark it stale', async () => {
    const source = observed(fromIterable([1, 2, 3, 4, 5, 6]));
    const store = new MemorySink<number>('store');
    const cache = new MemorySink<number>('cache');
    cache.gate = async () => {
      throw new SinkError('redis down', { retriable: true });
    };
    const sink = fanOut([{ sink: store, required: true }, { sink: cache, bestEffort: true, retry: { retries: 1, initialDelayMs: 1, maxDelayMs: 1 }, breaker: { volumeThreshold: 100 } }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2, maxWaitMs: 1 } });
    const stats = await pipeline.run();
    expect(stats).to.include({ written: 6, nacked: 0 });
    expect(source.acked).to.have.length(6);
    expect(sink.stale).to.equal(true);
    const cacheStats = sink.stats()[1]!;
    expect(cacheStats).to.include({ name: 'cache', required: false, written: 0, failed: 3, stale: true, lastError: 'redis down' });
    expect(cache.writes).to.have.length(6, 'each batch tried twice');
    sink.markFresh('cache');
    expect(sink.stale).to.equal(false);
  });

  it('skips a best-effort batch past maxPending instead of waiting, and writes it after the required sinks', async () => {
    const source = observed(fromIterable([1, 2, 3, 4]));
    const store = new MemorySink<number>('store');
    const cache = new MemorySink<number>('cache');
    const order: string[] = [];
    store.gate = async () => void order.push('store');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    cache.gate = async () => {
      order.push('cache');
      await held;
    };
    const sink = fanOut([{ sink: store, required: true }, { sink: cache, bestEffort: true, maxPending: 1 }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2, maxWaitMs: 1 }, sinkConcurrency: 1 });
    await pipeline.start();
    await until(() => pipeline.stats.written === 4, 5000, 'every record acked while the cache write hangs');
    release();
    await pipeline.finished();
    expect(order.slice(0, 2)).to.deep.equal(['store', 'cache']);
    await sink.idle();
    expect(sink.stats()[1]).to.include({ written: 1, skipped: 1, stale: true });
    expect(cache.writes.map((w) => w.size), 'the first batch only').to.deep.equal([2]);
  });

  it('refuses bad configuration with the rule', () => {
    const a = new MemorySink<number>('a');
    expect(() => fanOut([])).to.throw(ConfigError, 'fanOut needs at least one sink');
    expect(() => fanOut([{ sink: a, bestEffort: true }])).to.throw(ConfigError, 'fanOut needs at least one required sink: a best-effort sink cannot ack records');
    expect(() => fanOut([{ sink: a }])).to.throw(ConfigError, 'sinks[0] must set exactly one of required and bestEffort');
    expect(() => fanOut([{ sink: a, required: true, bestEffort: true }])).to.throw(ConfigError, 'sinks[0] must set exactly one of required and bestEffort');
    expect(() => fanOut([{ sink: a, required: true, retry: { retries: 1 } }])).to.throw(ConfigError, "sinks[0].retry is for best-effort sinks; a required sink uses the pipeline's");
    expect(() => fanOut([{ sink: a, required: true }, { sink: new MemorySink<number>('b'), bestEffort: true, maxPending: 0 }])).to.throw(ConfigError, 'sinks[1].maxPending must be an integer >= 1, got 0');
    expect(() => fanOut([{ sink: a, required: true }, { sink: a, bestEffort: true }])).to.throw(ConfigError, 'fanOut sink names must differ, "a" is given twice');
  });
});
