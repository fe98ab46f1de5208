import { expect } from 'chai';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError, SinkError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { Envelope } from '../../../lib/envelope';
import type { DeadLetter, Sink } from '../../../lib/sink';
import type { SourceContext } from '../../../lib/source';
import { normalize } from '../../../operators/normalize';
import { delay, MemorySink, observed, until } from '../../helpers';

const noRetry = { retries: 0 };

async function* slowly<T>(items: T[]) {
  for (const item of items) {
    yield item;
    await delay(20);
  }
}

describe('Pipeline', () => {
  it('acks a record only after the sink write resolves', async () => {
    const source = observed(fromIterable([1, 2, 3]));
    const sink = new MemorySink<number>();
    let release!: () => void;
    sink.gate = () => new Promise<void>((resolve) => (release = resolve));
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 } });
    await pipeline.start();
    await until(() => sink.writes.length === 1, 2000, 'the write');
    await delay(20);
    expect(source.acked).to.deep.equal([]);
    expect(pipeline.stats.inFlightRecords).to.equal(3);
    release();
    const stats = await pipeline.finished();
    expect(source.acked).to.deep.equal(['iterable@1', 'iterable@2', 'iterable@3']);
    expect(stats).to.include({ read: 3, written: 3, deadLettered: 0, nacked: 0, inFlightRecords: 0 });
  });

  it('nacks and never acks when the sink keeps failing, and reports the failure', async () => {
    const source = observed(fromIterable([1, 2, 3, 4]));
    const sink = new MemorySink<number>();
    sink.gate = async () => {
      throw new SinkError('disk on fire', { retriable: true });
    };
    const pipeline = new Pipeline({
      source,
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 2 },
      retry: { retries: 2, initialDelayMs: 1, maxDelayMs: 2 },
      breaker: { volumeThreshold: 100 },
    });
    const error = await pipeline.run().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(SinkError).with.property('message', 'disk on fire');
    expect(source.acked).to.deep.equal([]);
    expect(source.nacked.map((n) => n.position)).to.include.members(['iterable@1', 'iterable@2']);
    expect(sink.writes.filter((w) => w.token === sink.writes[0]!.token).map((w) => w.attempt)).to.deep.equal([1, 2, 3]);
    expect(pipeline.stats.inFlightRecords).to.equal(0);
  });

  it('holds writes while the breaker is open and writes everything once the sink is back', async () => {
    const source = observed(fromIterable(Array.from({ length: 40 }, (_, i) => i)));
    const sink = new MemorySink<number>();
    let failures = 0;
    sink.gate = async () => {
      if (failures++ < 6) throw new SinkError('connection refused', { retriable: true });
    };
    const states: string[] = [];
    const pipeline = new Pipeline({
      source,
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 1 },
      inFlight: { records: 20 },
      retry: { initialDelayMs: 5, maxDelayMs: 20 },
      breaker: { volumeThreshold: 2, resetTimeoutMs: 50 },
    });
    await pipeline.start();
    await until(() => pipeline.breakerState === 'open', 5000, 'the breaker to open');
    states.push(pipeline.breakerState);
    expect(source.acked).to.deep.equal([]);
    expect(pipeline.stats.inFlightRecords).to.equal(20); // the source is held at its budget
    const stats = await pipeline.finished();
    states.push(pipeline.breakerState);
    expect(states).to.deep.equal(['open', 'closed']);
    expect(stats).to.include({ read: 40, written: 40, nacked: 0 });
    expect([...sink.rows].sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 40 }, (_, i) => i));
  });

  it('gives up on a sink that stays down when stop() runs out of time, nacking what it holds', async () => {
    const source = observed(fromIterable([1, 2, 3]));
    const sink = new MemorySink<number>();
    sink.gate = async () => {
      throw new SinkError('connection refused', { retriable: true });
    };
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { maxWaitMs: 1 }, retry: { initialDelayMs: 1, maxDelayMs: 5 } });
    await pipeline.start();
    await until(() => sink.writes.length > 2, 2000, 'a few attempts');
    const error = await pipeline.stop({ timeoutMs: 20 }).catch((e: unknown) => e);
    expect(String(error)).to.match(/connection refused/);
    expect(source.acked).to.deep.equal([]);
    expect(source.nacked).to.have.length(3);
  });

  it('isolates rows the sink refuses: splits the batch, dead-letters them, writes the rest', async () => {
    const source = observed(fromIterable(Array.from({ length: 1000 }, (_, i) => i)));
    const sink = new MemorySink<number>();
    const poison = new Set([3, 500, 999]);
    sink.gate = async (batch) => {
      const bad = batch.envelopes.find((e) => poison.has(e.value));
      if (bad) throw new SinkError(`Cannot parse input: row with ${bad.value}`, { rowsAtFault: true, code: 'CLICKHOUSE_27' });
    };
    const deadLetters = new MemorySink<DeadLetter>();
    const stats = await new Pipeline({ source, sink, deadLetters, batch: { rows: 1000 } }).run();
    expect(stats).to.include({ read: 1000, written: 997, deadLettered: 3, nacked: 0 });
    expect(sink.rows).to.have.length(997);
    expect(sink.rows.some((v) => poison.has(v))).to.equal(false);
    expect(deadLetters.rows.map((l) => [l.position, l.stage, l.code])).to.have.deep.members([
      ['iterable@4', 'sink', 'CLICKHOUSE_27'],
      ['iterable@501', 'sink', 'CLICKHOUSE_27'],
      ['iterable@1000', 'sink', 'CLICKHOUSE_27'],
    ]);
    expect(source.acked).to.have.length(1000);
  });

  it('writes encoded rows, splits them with their records, and dead-letters a refused row from its raw payload', async () => {
    const records = Array.from({ length: 1000 }, (_, i) => ({ id: i }));
    const poison = new Set([3, 500, 501, 999]);
    const received: string[] = [];
    // A source whose records keep their payload as received, as files and Kafka do.
    const base = fromIterable(records);
    const source = observed({
      name: base.name,
      open: (context) => base.open({ ...context, envelope: (value, meta, _raw, bytes) => context.envelope(value, meta, `raw:${(value as { id: number }).id}`, bytes) }),
    });
    const bodies: string[][] = [];
    const sink: Sink<{ id: number }> = {
      name: 'encoded',
      encode: (value) => `row ${value.id}`,
      async write(batch) {
        expect(batch.encoded, 'every batch arrives encoded').to.not.equal(undefined);
        const rows = batch.encoded!.body.toString().split('\n').slice(0, -1);
        // The rows are exactly the batch's records, in order, whatever the split.
        expect(rows).to.have.length(batch.envelopes.length);
        expect(batch.encoded!.ends.at(-1)).to.equal(batch.encoded!.body.length);
        bodies.push(rows);
        // The sink refuses record 10 itself first: the rest of its batch is no longer one stretch of rows.
        const ten = rows.indexOf('row 10');
        if (ten >= 0) batch.envelopes[ten]!.reject({ stage: 'sink', code: 'REFUSED', message: 'ten', path: '' });
        const bad = rows.find((row) => poison.has(Number(row.slice(4))));
        if (bad) throw new SinkError(`Cannot parse input: ${bad}`, { rowsAtFault: true, code: 'CLICKHOUSE_27' });
        received.push(...rows.filter((row) => row !== 'row 10'));
        // Values were let go once encoded: the batch holds bytes.
        expect(batch.envelopes.every((e) => e.value === undefined)).to.equal(true);
      },
    };
    const deadLetters = new MemorySink<DeadLetter>();
    const stats = await new Pipeline({ source, sink, deadLetters, batch: { rows: 1000 }, inFlight: { records: 1000 } }).run();
    expect(stats).to.include({ read: 1000, written: 995, deadLettered: 5, nacked: 0 });
    expect(received.map((row) => Number(row.slice(4))).sort((a, b) => a - b)).to.deep.equal(records.map((r) => r.id).filter((id) => !poison.has(id) && id !== 10));
    expect(deadLetters.rows.map((l) => [l.raw, l.code])).to.have.deep.members([...[...poison].map((id) => [`raw:${id}`, 'CLICKHOUSE_27']), ['raw:10', 'REFUSED']]);
    expect(bodies.length).to.be.greaterThan(4);
  });

  it('keeps values for protectDeadLetter, which may read them', async () => {
    const base = fromIterable([{ id: 1, subject: 'ada' }]);
    const source = { name: base.name, open: (context: SourceContext) => base.open({ ...context, envelope: (value, meta, _raw, bytes) => context.envelope(value, meta, 'raw', bytes) }) };
    const seen: unknown[] = [];
    const sink: Sink<unknown> = {
      name: 'refusing',
      encode: (value) => JSON.stringify(value),
      async write() {
        throw new SinkError('Cannot parse input', { rowsAtFault: true, code: 'CLICKHOUSE_27' });
      },
    };
    const deadLetters = new MemorySink<DeadLetter>();
    const protectDeadLetter = (letter: DeadLetter, envelope: Envelope<unknown>) => {
      seen.push(envelope.value);
      return letter;
    };
    expect(await new Pipeline({ source, sink, deadLetters, protectDeadLetter }).run()).to.include({ deadLettered: 1 });
    expect(seen).to.deep.equal([{ id: 1, subject: 'ada' }]);
  });

  it('does not retry an error that is not retriable', async () => {
    const sink = new MemorySink<number>();
    sink.gate = async () => {
      throw new SinkError('unknown column', { retriable: false });
    };
    const pipeline = new Pipeline({ source: fromIterable([1]), sink, deadLetters: new MemorySink<DeadLetter>(), retry: { retries: 5, initialDelayMs: 1 } });
    await pipeline.run().catch(() => undefined);
    expect(sink.writes).to.have.length(1);
    expect(pipeline.stats.nacked).to.equal(1);
  });

  it('pauses the source at the in-flight limit while the sink is slow, then goes on', async () => {
    let pulled = 0;
    function* numbers() {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield i;
      }
    }
    const sink = new MemorySink<number>();
    let open = false;
    const waiting: Array<() => void> = [];
    sink.gate = () => (open ? Promise.resolve() : new Promise<void>((resolve) => waiting.push(resolve)));
    const pipeline = new Pipeline({
      source: fromIterable(numbers()),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 5 },
      inFlight: { records: 50 },
    });
    await pipeline.start();
    await delay(100);
    // The source took one more item from its iterator and waits for credit to emit it.
    expect(pulled).to.be.at.most(51);
    expect(pipeline.stats.inFlightRecords).to.equal(50);
    expect(sink.rows).to.have.length(0);
    open = true;
    waiting.forEach((resolve) => resolve());
    const stats = await pipeline.finished();
    expect(pulled).to.equal(1000);
    expect(stats.written).to.equal(1000);
    expect(sink.rows).to.have.length(1000);
  });

  it('bounds in-flight bytes as well as records', async () => {
    const sink = new MemorySink<string>();
    const waiting: Array<() => void> = [];
    sink.gate = () => new Promise<void>((resolve) => waiting.push(resolve));
    const items = Array.from({ length: 100 }, () => 'x'.repeat(100));
    const pipeline = new Pipeline({
      source: fromIterable(items),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 5, maxWaitMs: 5 },
      inFlight: { records: 100, bytes: 1000 },
    });
    await pipeline.start();
    await delay(50);
    expect(pipeline.stats.inFlightBytes).to.equal(1000);
    expect(pipeline.stats.inFlightRecords).to.equal(10);
    const drain = setInterval(() => waiting.splice(0).forEach((r) => r()), 2);
    await pipeline.finished();
    clearInterval(drain);
    expect(sink.rows).to.have.length(100);
  });

  it('routes refused records to the dead-letter sink and acks them only after that write', async () => {
    const source = observed(fromIterable([{ id: '1' }, { nope: true }, { id: '3' }], { vendor: 'acme' }));
    const sink = new MemorySink<Record<string, unknown>>();
    const deadLetters = new MemorySink<DeadLetter>();
    let release!: () => void;
    deadLetters.gate = () => new Promise<void>((resolve) => (release = resolve));
    const pipeline = new Pipeline({
      name: 'p1',
      source,
      transform: normalize({ mappings: { acme: { fields: { id: { required: true } } } } }),
      sink,
      deadLetters,
      deadLetterBatch: { maxWaitMs: 1 },
    });
    await pipeline.start();
    await until(() => deadLetters.writes.length === 1, 2000, 'the dead-letter write');
    await until(() => source.acked.length === 2, 2000, 'the sink acks');
    expect(source.acked).to.not.include('iterable@2');
    release();
    const stats = await pipeline.finished();
    expect(source.acked).to.include('iterable@2');
    expect(sink.rows).to.deep.equal([{ id: '1', vendor: 'acme' }, { id: '3', vendor: 'acme' }]);
    expect(deadLetters.rows).to.have.length(1);
    expect(deadLetters.rows[0]).to.include({
      pipeline: 'p1',
      position: 'iterable@2',
      vendor: 'acme',
      stage: 'normalize',
      code: 'MAPPING',
      path: '/id',
      raw: '{"nope":true}',
      raw_encoding: 'utf8',
    });
    expect(stats.read).to.equal(stats.written + stats.deadLettered);
  });

  it('writes dead letters 1,000 to a batch by default, whatever the records\' batches', async () => {
    const deadLetters = new MemorySink<DeadLetter>();
    const refused = Array.from({ length: 2500 }, (_, i) => ({ nope: i }));
    const stats = await new Pipeline({ source: fromIterable(refused, { vendor: 'acme' }), transform: normalize({ mappings: { acme: { fields: { id: { required: true } } } } }), sink: new MemorySink(), deadLetters }).run();
    expect(stats.deadLettered).to.equal(2500);
    expect(deadLetters.writes.map((w) => w.size)).to.deep.equal([1000, 1000, 500]);
  });

  it('nacks a refused record whose dead-letter write fails', async () => {
    const source = observed(fromIterable([{ nope: true }], { vendor: 'acme' }));
    const deadLetters = new MemorySink<DeadLetter>();
    deadLetters.gate = async () => {
      throw new SinkError('dead letters down');
    };
    const pipeline = new Pipeline({
      source,
      transform: normalize({ mappings: { acme: { fields: { id: { required: true } } } } }),
      sink: new MemorySink(),
      deadLetters,
      retry: noRetry,
    });
    const error = await pipeline.run().catch((e: unknown) => e);
    expect(error).to.be.instanceOf(SinkError);
    expect(source.acked).to.deep.equal([]);
    expect(source.nacked.map((n) => n.position)).to.deep.equal(['iterable@1']);
  });

  it('stop() stops reading, flushes the partial batch, settles everything, and is safe to call twice', async () => {
    async function* endless() {
      for (let i = 0; ; i++) {
        yield i;
        if (i % 10 === 0) await delay(1);
      }
    }
    const source = observed(fromIterable(endless()));
    const sink = new MemorySink<number>();
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 1000, maxWaitMs: 60_000 } });
    await pipeline.start();
    await until(() => pipeline.stats.read > 200, 2000, 'records to flow');
    const first = pipeline.stop();
    const second = pipeline.stop();
    expect(second).to.equal(first);
    const stats = await first;
    expect(stats.read).to.be.greaterThan(200);
    expect(stats.written).to.equal(stats.read);
    expect(sink.rows).to.have.length(stats.read);
    expect(source.acked).to.have.length(stats.read);
    expect(stats.inFlightRecords).to.equal(0);
    expect(sink.closed).to.equal(1);
    await pipeline.stop();
    expect(sink.closed).to.equal(1);
  });

  it('stops through Symbol.asyncDispose', async () => {
    const sink = new MemorySink<number>();
    const pipeline = new Pipeline({ source: fromIterable(slowly([1, 2, 3])), sink, deadLetters: new MemorySink<DeadLetter>() });
    await pipeline.start();
    await until(() => pipeline.stats.read === 1, 2000, 'the first record');
    await pipeline[Symbol.asyncDispose]();
    expect(sink.closed).to.equal(1);
    expect(sink.rows).to.have.length(pipeline.stats.read);
    expect(pipeline.stats.written).to.equal(pipeline.stats.read);
  });

  it('fails with the source error after settling what was already read', async () => {
    async function* broken() {
      yield 1;
      yield 2;
      throw new Error('connection reset');
    }
    const source = observed(fromIterable(broken()));
    const sink = new MemorySink<number>();
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>() });
    const error = await pipeline.run().catch((e: unknown) => e);
    expect(String(error)).to.match(/connection reset/);
    expect(source.acked).to.deep.equal(['iterable@1', 'iterable@2']);
    expect(sink.rows).to.deep.equal([1, 2]);
  });

  it('gives the same insert token to the same records', async () => {
    const tokens = async () => {
      const sink = new MemorySink<number>();
      await new Pipeline({ source: fromIterable([1, 2, 3, 4, 5]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2 } }).run();
      return sink.writes.map((w) => w.token);
    };
    const first = await tokens();
    expect(first).to.have.length(3);
    expect(new Set(first).size).to.equal(3);
    expect(await tokens()).to.deep.equal(first);
  });

  it('refuses bad configuration at construction with the rule', () => {
    const base = { source: fromIterable([]), sink: new MemorySink(), deadLetters: new MemorySink<DeadLetter>() };
    expect(() => new Pipeline({ ...base, batch: { rows: 0 } })).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 0');
    expect(() => new Pipeline({ ...base, inFlight: { records: 10 } })).to.throw(ConfigError, 'inFlight.records must be >= batch.rows (20000), got 10');
    expect(() => new Pipeline({ ...base, sinkConcurrency: 0 })).to.throw(ConfigError, 'sinkConcurrency must be an integer >= 1, got 0');
    expect(() => new Pipeline({ ...base, sinkConcurrency: 1.5 })).to.throw(ConfigError, 'sinkConcurrency must be an integer >= 1, got 1.5');
    expect(() => new Pipeline({ ...base, batch: { bytes: 0.5 } })).to.throw(ConfigError, 'batch.bytes must be an integer >= 1, got 0.5');
    expect(() => new Pipeline({ ...base, deadLetterBatch: { rows: 0 } })).to.throw(ConfigError, 'deadLetterBatch.rows must be an integer >= 1, got 0');
    expect(() => new Pipeline({ ...base, deadLetterRawBytes: 1.5 })).to.throw(ConfigError, 'deadLetterRawBytes must be an integer >= 1 or Infinity, got 1.5');
    expect(() => new Pipeline({ ...base, retry: { retries: -1 } })).to.throw(ConfigError, 'retry.retries must be an integer >= 0 or Infinity, got -1');
    expect(() => new Pipeline({ ...base, deadLetters: undefined as never })).to.throw(ConfigError, /deadLetters is required/);
    // What the pipeline sets itself (callers without types could still pass them): refused, not dropped or let in.
    const given = (options: Record<string, unknown>) => options as never;
    expect(() => new Pipeline({ ...base, batch: given({ encode: String }) })).to.throw(ConfigError, 'batch.encode is not a pipeline option: its sink encodes the records (Sink.encode)');
    expect(() => new Pipeline({ ...base, batch: given({ encodeInto: () => {} }) })).to.throw(ConfigError, 'batch.encodeInto is not a pipeline option');
    expect(() => new Pipeline({ ...base, batch: given({ columns: () => ['a'] }) })).to.throw(ConfigError, 'batch.columns is not a pipeline option');
    expect(() => new Pipeline({ ...base, batch: given({ releaseValues: true }) })).to.throw(ConfigError, 'batch.releaseValues is not a pipeline option');
    expect(() => new Pipeline({ ...base, deadLetterBatch: given({ signal: new AbortController().signal }) })).to.throw(ConfigError, 'deadLetterBatch.signal is not a pipeline option: stop() ends its batches');
  });
});
