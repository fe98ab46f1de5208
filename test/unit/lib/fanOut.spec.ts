import { expect } from 'chai';
import { register as globalRegistry, Registry } from 'prom-client';
import { map } from 'rxjs';
import { fromIterable } from '../../../connectors/iterable';
import { Envelope } from '../../../lib/envelope';
import { ConfigError, SinkError } from '../../../lib/errors';
import { fanOut } from '../../../lib/fanOut';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, RowBytes, Sink, WriteContext } from '../../../lib/sink';
import { delay, MemorySink, observed, Recorder, rejection, until } from '../../helpers';

const fastRetry = { retries: Infinity, initialDelayMs: 1, maxDelayMs: 5 };

/** A sink that encodes as JSON (or only says it takes JSON rows) and records what it was given. */
class JsonSink implements Sink<{ id: number }> {
  encodes = 0;
  readonly bodies: (string | undefined)[] = [];
  readonly values: unknown[] = [];
  readonly encoding = 'json';
  constructor(
    readonly name: string,
    readonly keepsValues = false,
  ) {}
  encode(value: { id: number }): string {
    this.encodes++;
    return JSON.stringify(value);
  }
  async write(batch: Batch<{ id: number }>, _context: WriteContext): Promise<void> {
    this.bodies.push(batch.encoded?.body.toString());
    for (const envelope of batch.envelopes) this.values.push(envelope.value);
  }
}

/** Records as JSON text, parsed by the transform: each envelope keeps its text as received, so a pipeline may let go of the value once encoded. */
const jsonRecords = (n: number) => ({
  source: fromIterable(Array.from({ length: n }, (_, i) => JSON.stringify({ id: i + 1 }))),
  transform: map((envelope: Envelope<unknown>) => envelope.map(JSON.parse(envelope.value as string) as { id: number })),
});

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
    const error = await rejection(pipeline.run());
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

  it('encodes each record once, for every sink of the same encoding; a sink of none gets values', async () => {
    const store = new JsonSink('store');
    const cache = new JsonSink('cache', true);
    const other = new MemorySink<{ id: number }>('other');
    const bodies: (Buffer | undefined)[] = [];
    other.gate = async (batch) => void bodies.push(batch.encoded?.body);
    const sink = fanOut([{ sink: store, required: true }, { sink: cache, required: true }, { sink: other, required: true }]);
    const pipeline = new Pipeline({ ...jsonRecords(5), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    expect((await pipeline.run()).written).to.equal(5);
    const rows = [1, 2, 3, 4, 5].map((id) => JSON.stringify({ id }) + '\n').join('');
    expect(store.encodes, 'once a record').to.equal(5);
    expect(cache.encodes).to.equal(0);
    expect(store.bodies).to.deep.equal([rows]);
    expect(cache.bodies, 'the same rows').to.deep.equal([rows]);
    expect(cache.values, 'kept for the sink that reads them').to.deep.equal([1, 2, 3, 4, 5].map((id) => ({ id })));
    expect(bodies, 'no rows of an encoding it did not declare').to.deep.equal([undefined]);
    expect(other.rows).to.deep.equal([1, 2, 3, 4, 5].map((id) => ({ id })));
  });

  it('writes rows with its encoder\'s encodeInto when it has one, and has none when it does not', async () => {
    const store = new JsonSink('store');
    const into: unknown[] = [];
    const withInto = Object.assign(store, {
      encodeInto(value: { id: number }, out: RowBytes) {
        into.push(value);
        const row = `{"id":${value.id}}`;
        const buffer = out.room(row.length);
        out.at += buffer.write(row, out.at);
      },
    });
    const cache = new JsonSink('cache');
    const pipeline = new Pipeline({ ...jsonRecords(3), sink: fanOut([{ sink: withInto, required: true }, { sink: cache, required: true }]), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    expect((await pipeline.run()).written).to.equal(3);
    expect(into).to.deep.equal([{ id: 1 }, { id: 2 }, { id: 3 }]);
    expect(store.encodes).to.equal(0);
    expect(cache.bodies).to.deep.equal(['{"id":1}\n{"id":2}\n{"id":3}\n']);
    expect(fanOut([{ sink: new JsonSink('plain'), required: true }]).encodeInto).to.equal(undefined);
  });

  it('lets go of values once encoded when every sink takes the encoded rows', async () => {
    const store = new JsonSink('store');
    const copy = new JsonSink('copy');
    const pipeline = new Pipeline({ ...jsonRecords(3), sink: fanOut([{ sink: store, required: true }, { sink: copy, required: true }]), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    await pipeline.run();
    expect(copy.bodies).to.deep.equal(store.bodies);
    expect(copy.values).to.deep.equal([undefined, undefined, undefined]);
  });

  it("writes a sink with its own batch limits in parts, each with the batch's token and its number, the same on a retry", async () => {
    const source = observed(fromIterable([1, 2, 3, 4, 5, 6, 7]));
    const store = new MemorySink<number>('store');
    const cache = new MemorySink<number>('cache');
    let failures = 0;
    cache.gate = async (batch) => {
      if (batch.envelopes[0]!.value === 4 && failures++ === 0) throw new SinkError('busy', { retriable: true });
    };
    const sink = fanOut([{ sink: store, required: true }, { sink: cache, required: true, batch: { rows: 3 } }]);
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 }, retry: fastRetry, breaker: { volumeThreshold: 100 } });
    await pipeline.run();
    expect(source.acked).to.have.length(7);
    expect(store.writes.map((w) => w.size)).to.deep.equal([7]);
    const token = store.writes[0]!.token;
    expect(cache.writes.map((w) => [w.size, w.token, w.attempt])).to.deep.equal([
      [3, `${token}:0`, 1],
      [3, `${token}:1`, 1],
      [3, `${token}:0`, 2],
      [3, `${token}:1`, 2],
      [1, `${token}:2`, 2],
    ]);
    expect(cache.rows).to.deep.equal([1, 2, 3, 1, 2, 3, 4, 5, 6, 7]);
    expect(() => fanOut([{ sink: store, required: true, batch: { rows: 0 } }])).to.throw(ConfigError, 'sinks[0].batch.rows must be an integer >= 1, got 0');
  });

  it('reports rows per sink and outcome, and whether a best-effort sink is stale, in its registry', async () => {
    const store = new MemorySink<number>('store');
    const cache = new MemorySink<number>('cache');
    let storeFailures = 0;
    store.gate = async () => {
      if (storeFailures++ === 0) throw new SinkError('busy', { retriable: true });
    };
    cache.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.value === 3)) throw new SinkError('redis down', { retriable: true });
    };
    const registry = new Registry();
    const sink = fanOut([{ sink: store, required: true }, { sink: cache, bestEffort: true, retry: { retries: 0 }, breaker: { volumeThreshold: 100 } }], { name: 'bookings', registry });
    expect(sink.registry).to.equal(registry);
    const pipeline = new Pipeline({ source: fromIterable([1, 2, 3, 4, 5, 6]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2, maxWaitMs: 1 }, sinkConcurrency: 1, retry: fastRetry, breaker: { volumeThreshold: 100 } });
    await pipeline.run();
    await sink.idle();
    const text = await registry.metrics();
    const line = (labels: string) => text.split('\n').find((l) => l.startsWith(`tributary_fanout_rows_total{${labels}}`));
    expect(line('fanout="bookings",sink="store",required="true",outcome="written"')).to.match(/ 6$/);
    expect(line('fanout="bookings",sink="store",required="true",outcome="failed"'), 'the first attempt').to.match(/ 2$/);
    expect(line('fanout="bookings",sink="cache",required="false",outcome="written"')).to.match(/ 4$/);
    expect(line('fanout="bookings",sink="cache",required="false",outcome="failed"')).to.match(/ 2$/);
    expect(line('fanout="bookings",sink="cache",required="false",outcome="skipped"')).to.match(/ 0$/);
    expect(text).to.include('tributary_fanout_stale{fanout="bookings",sink="cache"} 1');
    expect(text, 'only best-effort sinks can be stale').to.not.include('tributary_fanout_stale{fanout="bookings",sink="store"}');
    expect(sink.stats()[1]).to.include({ rowsWritten: 4, rowsFailed: 2, rowsSkipped: 0 });
    sink.markFresh();
    expect(await registry.metrics()).to.include('tributary_fanout_stale{fanout="bookings",sink="cache"} 0');
    const live = fanOut([{ sink: store, required: true }], { name: 'live', registry });
    expect(() => fanOut([{ sink: store, required: true }], { name: 'live', registry })).to.throw(ConfigError, 'a fan-out named "live" already reports to this registry: give it another name');
    await live.close();
    // Closed (as the pipeline above closed "bookings"): one of the same name takes its place, counting from zero.
    fanOut([{ sink: store, required: true }], { name: 'bookings', registry });
    expect(await registry.metrics()).to.include('tributary_fanout_rows_total{fanout="bookings",sink="store",required="true",outcome="written"} 0');
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

  describe('written directly, as the pipeline writes it', () => {
    const recorder = new Recorder();
    /** A batch of `values`, each of `bytes` bytes. */
    const batchOf = (values: number[], bytes = 1): Batch<number> => ({
      envelopes: values.map((v) => new Envelope(v, { source: 'test', position: `p${v}`, receivedAt: 0, attempt: 1 }, undefined, bytes, recorder)),
      bytes: values.length * bytes,
    });
    /** A memory sink counting its opens; its first `failing` opens fail. */
    const opening = (name: string, failing = 0) => {
      const sink = Object.assign(new MemorySink<number>(name), {
        opens: 0,
        async open() {
          if (++sink.opens <= failing) throw new Error(`${name} cannot open`);
        },
      });
      return sink;
    };

    it('a sink with its own limits takes a batch within them whole, with its token, and cuts parts by bytes alone when it sets only bytes', async () => {
      const store = new MemorySink<number>('store');
      const rows = new MemorySink<number>('rows');
      const bytes = new MemorySink<number>('bytes');
      const sink = fanOut([
        { sink: store, required: true },
        { sink: rows, required: true, batch: { rows: 3 } },
        { sink: bytes, required: true, batch: { bytes: 6 } },
      ]);
      await sink.write(batchOf([1, 2, 3], 2), { token: 't1', attempt: 1 });
      expect(rows.writes, 'rows at the limit').to.deep.equal([{ size: 3, token: 't1', attempt: 1 }]);
      expect(bytes.writes, 'bytes at the limit').to.deep.equal([{ size: 3, token: 't1', attempt: 1 }]);
      await sink.write(batchOf([4, 5, 6, 7, 8, 9, 10], 2), { token: 't2', attempt: 1 });
      expect(bytes.writes.slice(1).map((w) => [w.size, w.token])).to.deep.equal([
        [3, 't2:0'],
        [3, 't2:1'],
        [1, 't2:2'],
      ]);
      await sink.write(batchOf([11, 12, 13, 14, 15], 1), { token: 't3', attempt: 1 });
      expect(bytes.writes.at(-1), 'five 1-byte rows fit 6 bytes').to.deep.equal({ size: 5, token: 't3', attempt: 1 });
      await sink.write(batchOf([16, 17], 7), { token: 't4', attempt: 1 });
      expect(bytes.writes.slice(-2).map((w) => [w.size, w.token]), 'a row past the limit alone').to.deep.equal([
        [1, 't4:0'],
        [1, 't4:1'],
      ]);
      expect(bytes.rows).to.deep.equal(store.rows);
      expect(() => fanOut([{ sink: store, required: true, batch: { bytes: 0 } }])).to.throw(ConfigError, 'sinks[0].batch.bytes must be an integer >= 1, got 0');
    });

    it('opens every sink; a best-effort sink that could not open is opened by its next write, once', async () => {
      const store = opening('store');
      const cache = opening('cache', 1);
      const copy = opening('copy');
      const sink = fanOut([
        { sink: store, required: true },
        { sink: cache, bestEffort: true, retry: { retries: 0 } },
        { sink: copy, bestEffort: true, retry: { retries: 0 } },
      ]);
      expect(sink.stale).to.equal(false);
      expect(sink.stats().map((s) => s.stale)).to.deep.equal([false, false, false]);
      await sink.open!();
      expect([store.opens, cache.opens, copy.opens]).to.deep.equal([1, 1, 1]);
      expect(sink.stale, 'cache did not open').to.equal(true);
      expect(sink.stats()[1]).to.include({ stale: true, lastError: 'cache cannot open' });
      await sink.write(batchOf([1]), { token: 't1', attempt: 1 });
      await sink.write(batchOf([2]), { token: 't2', attempt: 1 });
      await sink.idle();
      expect([store.opens, cache.opens, copy.opens]).to.deep.equal([1, 2, 1]);
      expect(cache.rows).to.deep.equal([1, 2]);
      expect(copy.rows).to.deep.equal([1, 2]);
      expect(sink.stats().map((s) => s.written)).to.deep.equal([2, 2, 2]);
    });

    it('a best-effort sink written before open() is opened by its first write', async () => {
      const cache = opening('cache');
      const sink = fanOut([{ sink: new MemorySink<number>('store'), required: true }, { sink: cache, bestEffort: true }]);
      await sink.write(batchOf([1]), { token: 't1', attempt: 1 });
      await sink.idle();
      expect(cache.opens).to.equal(1);
      expect(cache.rows).to.deep.equal([1]);
    });

    it('is stale while any best-effort sink is; markFresh(name) freshens that one only; a skipped batch counts its rows', async () => {
      const slow = new MemorySink<number>('slow');
      let release!: () => void;
      slow.gate = () => new Promise<void>((resolve) => (release = resolve));
      const fine = new MemorySink<number>('fine');
      const sink = fanOut([
        { sink: new MemorySink<number>('store'), required: true },
        { sink: slow, bestEffort: true, maxPending: 1 },
        { sink: fine, bestEffort: true },
      ]);
      await sink.write(batchOf([1]), { token: 't1', attempt: 1 });
      await sink.write(batchOf([2, 3]), { token: 't2', attempt: 1 });
      expect(sink.stale).to.equal(true);
      expect(sink.stats()[1]).to.include({ skipped: 1, rowsSkipped: 2, stale: true, lastError: '1 writes were under way' });
      expect(sink.stats()[2]).to.include({ stale: false });
      sink.markFresh('fine');
      expect(sink.stale).to.equal(true);
      sink.markFresh('slow');
      expect(sink.stale).to.equal(false);
      release();
      await sink.idle();
    });

    it('keeps values while a sink of the same encoding asks for them; an encoder without an encoding gets its own rows', async () => {
      const store = new JsonSink('store');
      const copy = new JsonSink('copy', true);
      expect(fanOut([{ sink: store, required: true }, { sink: copy, required: true }]).keepsValues).to.equal(true);
      expect(fanOut([{ sink: store, required: true }, { sink: new JsonSink('copy') , required: true }]).keepsValues).to.equal(false);
      const plain: Sink<{ id: number }> & { bodies: (string | undefined)[] } = {
        name: 'plain',
        bodies: [],
        encode: (value) => JSON.stringify(value),
        async write(batch) {
          plain.bodies.push(batch.encoded?.body.toString());
        },
      };
      const sink = fanOut([{ sink: plain, required: true }]);
      expect(sink.encoding).to.equal(undefined);
      await sink.write({ ...batchOf([1]), encoded: { body: Buffer.from('{"id":1}\n'), ends: [9] } } as unknown as Batch<{ id: number }>, { token: 't', attempt: 1 });
      expect(plain.bodies).to.deep.equal(['{"id":1}\n']);
    });

    it('a required sink that landed is not written again on the retry; the oldest of more than 1024 such tokens is forgotten', async () => {
      const store = new MemorySink<number>('store');
      const cache = new MemorySink<number>('cache');
      let down = true;
      cache.gate = async () => {
        if (down) throw new SinkError('busy', { retriable: true });
      };
      const sink = fanOut([{ sink: store, required: true }, { sink: cache, required: true }]);
      for (let i = 1; i <= 1025; i++) {
        const failed = await sink.write(batchOf([i]), { token: `t${i}`, attempt: 1 }).then(() => undefined, (error: Error) => error);
        expect(failed).to.be.instanceOf(SinkError);
      }
      expect(sink.stats()[0]).to.include({ written: 1025, rowsWritten: 1025 });
      down = false;
      await sink.write(batchOf([2]), { token: 't2', attempt: 2 });
      expect(store.writes.length, 't2 remembered: the store is not written again').to.equal(1025);
      await sink.write(batchOf([1]), { token: 't1', attempt: 2 });
      expect(store.writes.length, 't1 forgotten: written again').to.equal(1026);
      expect(sink.stats()[0]).to.include({ written: 1026 });
    });

    it('fails a write with the failure the pipeline must not retry, when there is one', async () => {
      const busy = new MemorySink<number>('busy');
      busy.gate = async () => {
        throw new SinkError('busy', { retriable: true });
      };
      const broken = new MemorySink<number>('broken');
      broken.gate = async () => {
        throw new SinkError('schema mismatch', { retriable: false });
      };
      const sink = fanOut([{ sink: busy, required: true }, { sink: broken, required: true }]);
      const failed = await sink.write(batchOf([1]), { token: 't', attempt: 1 }).then(() => undefined, (error: Error) => error);
      expect(failed?.message).to.equal('schema mismatch');
    });

    it('closes every sink, and fails with the first close that failed', async () => {
      const store = new MemorySink<number>('store');
      const cache = new MemorySink<number>('cache');
      cache.close = async () => {
        cache.closed++;
        throw new Error('cache would not close');
      };
      const sink = fanOut([{ sink: store, required: true }, { sink: cache, bestEffort: true }]);
      const failed = await sink.close().then(() => undefined, (error: Error) => error);
      expect(failed?.message).to.equal('cache would not close');
      expect([store.closed, cache.closed]).to.deep.equal([1, 1]);
    });

    it('names itself after its sinks, reports to the global registry when asked, and other names share a registry', async () => {
      const a = new MemorySink<number>('a');
      const b = new MemorySink<number>('b');
      const registry = new Registry();
      const one = fanOut([{ sink: a, required: true }, { sink: b, bestEffort: true }], { registry });
      expect(one.name).to.equal('fanOut(a,b)');
      const two = fanOut([{ sink: a, required: true }], { name: 'other', registry });
      await one.write(batchOf([1, 2]), { token: 't', attempt: 1 });
      await one.idle();
      const text = await registry.metrics();
      expect(text).to.include('tributary_fanout_rows_total{fanout="fanOut(a,b)",sink="b",required="false",outcome="skipped"} 0');
      expect(text, 'a required sink is never skipped').to.not.include('sink="a",required="true",outcome="skipped"');
      await Promise.all([one.close(), two.close()]);
      const global = fanOut([{ sink: a, required: true }], { name: 'in the global registry', registry: 'global' });
      expect(global.registry).to.equal(globalRegistry);
      await global.close();
      expect(() => fanOut([{ sink: a, required: true }], { registry: {} as Registry })).to.throw(ConfigError, "registry must be a prom-client Registry or 'global', got [object Object]");
    });

    it('refuses what is not a sink, and bad retry options of a best-effort sink, with where they are', () => {
      const a = new MemorySink<number>('a');
      expect(() => fanOut([undefined as never])).to.throw(ConfigError, 'sinks[0].sink must be a sink');
      expect(() => fanOut([{ sink: { name: 'x' } as never, required: true }])).to.throw(ConfigError, 'sinks[0].sink must be a sink');
      expect(() => fanOut([{ sink: a, required: true }, { sink: new MemorySink<number>('b'), bestEffort: true, retry: { retries: -1 } }])).to.throw(ConfigError, 'sinks[1].retry.retries');
    });
  });

  it('shares its rows with a sink that reads their encoding, columns and all, and asks the encoder for nothing then', async () => {
    const asked: string[] = [];
    let columns: readonly string[] = ['id'];
    const arrays: Sink<{ id: number }> = {
      name: 'arrays',
      encoding: 'json-compact',
      get encodedColumns() {
        return columns;
      },
      encode(value) {
        // The table changes after the second record: the third goes by the new list.
        if (value.id === 2) columns = ['id', 'extra'];
        return value.id === 3 ? JSON.stringify(value) : `[${value.id}]`;
      },
      preferEncoding: (wanted) => void asked.push(wanted),
      write: async () => undefined,
    };
    const cache = Object.assign(new JsonSink('cache', true), { reads: ['json-compact'] });
    const columnsSeen: (readonly string[] | undefined)[] = [];
    const write = cache.write.bind(cache);
    cache.write = async (batch, context) => {
      columnsSeen.push(batch.encoded?.columns);
      await write(batch, context);
    };
    const sink = fanOut([{ sink: arrays, required: true }, { sink: cache, required: true }]);
    expect(sink.encodedColumns, "its encoder's").to.equal(columns);
    const pipeline = new Pipeline({ ...jsonRecords(4), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    expect((await pipeline.run()).written).to.equal(4);
    expect(asked, 'the cache reads its rows').to.deep.equal([]);
    expect(cache.encodes).to.equal(0);
    expect(cache.bodies, 'a batch a column list').to.deep.equal(['[1]\n[2]\n', '{"id":3}\n[4]\n']);
    expect(columnsSeen).to.deep.equal([['id'], ['id', 'extra']]);
    await fanOut([{ sink: arrays, required: true }, { sink: new JsonSink('objects only'), required: true }]).open!();
    expect(asked, 'a sink reading only JSON objects').to.deep.equal(['json']);
  });

  it('asks its encoder, once opened, for the first encoding another sink reads, past sinks of none', async () => {
    const asked: string[][] = [];
    const encoderOf = (encoding: string | undefined, name: string): Sink<number> & { encoding?: string } => ({
      name,
      encoding,
      encode: (value) => String(value),
      preferEncoding(wanted: string) {
        asked.push([name, wanted]);
      },
      write: async () => undefined,
    });
    const of = (name: string, encoding?: string): Sink<number> => ({ name, ...(encoding !== undefined && { encoding }), write: async () => undefined });
    await fanOut([{ sink: encoderOf(undefined, 'arrays'), required: true }, { sink: of('plain'), required: true }, { sink: of('cache', 'json'), bestEffort: true }]).open!();
    await fanOut([{ sink: encoderOf('json', 'objects'), required: true }, { sink: of('same', 'json'), required: true }, { sink: of('plain'), required: true }]).open!();
    await fanOut([{ sink: encoderOf('json', 'shared'), required: true }, { sink: of('none'), required: true }, { sink: of('other', 'csv'), required: true }]).open!();
    expect(asked).to.deep.equal([
      ['arrays', 'json'],
      ['shared', 'csv'],
    ]);
  });
});
