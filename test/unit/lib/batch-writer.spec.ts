import { expect } from 'chai';
import { performance } from 'node:perf_hooks';
import { fromIterable } from '../../../connectors/iterable';
import type { Envelope } from '../../../lib/envelope';
import { SinkError, TributaryError, ValidationError } from '../../../lib/errors';
import type { PipelineEvent, PipelineEventType } from '../../../lib/events';
import type { LogFields, Logger } from '../../../lib/logger';
import { insertToken, Pipeline, type PipelineOptions } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { recordOperator } from '../../../operators/recordOperator';
import { MemorySink, observed, Recorder } from '../../helpers';

/**
 * What the batch writer tells the one who runs a pipeline: a `sink.write` event per
 * attempt and a `sink.split` event per split (metrics and logs are built from them), the
 * reason a refused row carries into its dead letter, the error a batch is nacked with, and
 * the warning when a source cannot prepare a batch.
 */
describe('BatchWriter: the events, errors and log lines a write reports', () => {
  /** Records as strings: each one's byte count is its length. */
  const records = (n: number) => Array.from({ length: n }, (_, i) => `r${i}`);

  async function run<T>(options: PipelineOptions<T>, types: readonly PipelineEventType[] = ['sink.write', 'sink.split']) {
    const pipeline = new Pipeline<T>(options);
    const events: PipelineEvent[] = [];
    for (const type of types) pipeline.on(type, (event) => events.push(event));
    const started = performance.now();
    const error = await pipeline.run().then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsedMs = performance.now() - started;
    const payloads = <K extends PipelineEventType>(type: K) => events.filter((e): e is PipelineEvent<K> => e.type === type).map((e) => e.payload);
    return { pipeline, stats: pipeline.stats, error, elapsedMs, payloads };
  }

  it('reports each attempt as sink.write with its stage, sink, rows, bytes and attempt; a failed one with its error, each lasting within the run', async () => {
    const sink = new MemorySink<string>('rows');
    sink.gate = async (_batch, { attempt }) => {
      if (attempt === 1) throw new SinkError('connection reset', { retriable: true });
    };
    const deadLetters = new MemorySink<DeadLetter>('letters');
    const refuseR3 = recordOperator<string, string>('validate', (value) => {
      if (value === 'r3') throw new ValidationError([{ path: '', message: 'refused' }]);
      return value;
    });
    const { stats, error, elapsedMs, payloads } = await run<string>({
      name: 'reported',
      source: fromIterable(records(6)),
      transform: (records$) => records$.pipe(refuseR3),
      sink,
      deadLetters,
      batch: { rows: 5, maxWaitMs: 1000 },
      retry: { initialDelayMs: 1, maxDelayMs: 1 },
    });
    expect(error).to.equal(undefined);
    expect(stats).to.include({ read: 6, written: 5, deadLettered: 1, nacked: 0 });
    const writes = payloads('sink.write');
    const { durationMs: _d0, ...first } = writes[0]!;
    expect(first).to.deep.equal({
      pipeline: 'reported',
      stage: 'sink',
      sink: 'rows',
      rows: 5,
      bytes: 10,
      attempt: 1,
      error: { name: 'SinkError', code: 'SINK', retriable: true, message: 'connection reset' },
    });
    expect(writes.slice(1).map(({ durationMs: _d, ...rest }) => rest)).to.deep.equal([
      { pipeline: 'reported', stage: 'sink', sink: 'rows', rows: 5, bytes: 10, attempt: 2 },
      { pipeline: 'reported', stage: 'dead_letters', sink: 'letters', rows: 1, bytes: 2, attempt: 1 },
    ]);
    // A duration is a span inside the run: never negative, never longer than the run.
    for (const write of writes) expect(write.durationMs).to.be.within(0, elapsedMs);
    expect(payloads('sink.split')).to.deep.equal([]);
  });

  it('splits a batch the sink refuses for its rows, reporting each split, and dead-letters the row alone with the sink’s reason', async () => {
    const sink = new MemorySink<string>('rows');
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.value === 'r5')) throw new SinkError('Cannot parse input: r5', { rowsAtFault: true, code: 'CLICKHOUSE_27' });
    };
    const deadLetters = new MemorySink<DeadLetter>('letters');
    const asked: string[][] = [];
    const source = observed(fromIterable(records(7)));
    const beforeWrite = (envelopes: readonly Envelope<string>[]) => {
      asked.push(envelopes.map((e) => e.meta.position));
      return true;
    };
    const { stats, error, payloads } = await run<string>({ name: 'split', source: { ...source, beforeWrite }, sink, deadLetters, batch: { rows: 7, maxWaitMs: 1000 } });
    expect(error).to.equal(undefined);
    expect(stats).to.include({ read: 7, written: 6, deadLettered: 1, nacked: 0 });
    expect(sink.rows).to.deep.equal(records(7).filter((r) => r !== 'r5'));
    // 7 rows → r0-r3 written + r4-r6 → r4-r5 + r6 written → r4 written, r5 alone (the first half takes the odd row).
    expect(payloads('sink.split')).to.deep.equal([7, 3, 2].map((rows) => ({ pipeline: 'split', stage: 'sink', sink: 'rows', rows })));
    expect(deadLetters.rows.map((l) => ({ position: l.position, stage: l.stage, code: l.code, message: l.message, path: l.path, raw: l.raw }))).to.deep.equal([
      { position: 'iterable@6', stage: 'sink', code: 'CLICKHOUSE_27', message: 'Cannot parse input: r5', path: '', raw: 'r5' },
    ]);
    // The source is asked once for the batch as read: not for its parts, not for dead letters.
    expect(asked).to.deep.equal([records(7).map((_, i) => `iterable@${i + 1}`)]);
    expect(source.nacked).to.deep.equal([]);
  });

  it('never splits a batch whose rows the sink already settled itself: the sink’s error ends the pipeline', async () => {
    const sink = new MemorySink<string>('rows');
    sink.gate = async (batch) => {
      for (const envelope of batch.envelopes) envelope.reject({ stage: 'sink', code: 'REFUSED', message: 'each row refused', path: '' });
      throw new SinkError('Cannot parse input', { rowsAtFault: true, code: 'CLICKHOUSE_27' });
    };
    const { error, payloads } = await run<string>({ source: fromIterable(records(3)), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 3, maxWaitMs: 1000 }, retry: { retries: 0 } });
    expect(error).to.be.instanceOf(SinkError).and.include({ message: 'Cannot parse input', code: 'CLICKHOUSE_27' });
    expect(payloads('sink.split')).to.deep.equal([]);
    expect(sink.writes.map((w) => w.size)).to.deep.equal([3]);
  });

  it('turns a sink’s own error into a SinkError naming the sink, with the original as its cause, and nacks the batch with it', async () => {
    const sink = new MemorySink<string>('rows');
    const thrown = new Error('disk on fire');
    sink.gate = async () => {
      throw thrown;
    };
    const source = observed(fromIterable(records(2)));
    const { stats, error, payloads } = await run<string>({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2, maxWaitMs: 1000 } }, ['sink.write', 'pipeline.crash']);
    expect(error).to.be.instanceOf(SinkError).and.include({ message: 'sink rows failed: Error: disk on fire', code: 'SINK', retriable: false });
    expect((error as SinkError).cause).to.equal(thrown);
    expect(source.nacked.map((n) => [n.position, n.error])).to.deep.equal([
      ['iterable@1', error],
      ['iterable@2', error],
    ]);
    expect(stats).to.include({ read: 2, written: 0, nacked: 2 });
    // Not retriable: one attempt.
    expect(payloads('sink.write').map((w) => [w.attempt, w.error?.message])).to.deep.equal([[1, 'disk on fire']]);
    expect(payloads('pipeline.crash').map((c) => c.error)).to.deep.equal([{ name: 'SinkError', code: 'SINK', retriable: false, message: 'sink rows failed: Error: disk on fire' }]);
  });

  it('counts every record of a payload split into several as nacked when their batch fails', async () => {
    const sink = new MemorySink<unknown>('rows');
    sink.gate = async () => {
      throw new SinkError('table dropped');
    };
    const { stats, error } = await run<unknown>({ source: fromIterable(['{"a":1}\n{"a":2}\n{"a":3}']), transform: (records$) => records$.pipe(parse({ format: 'ndjson' }) as never), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 3, maxWaitMs: 1000 } });
    expect(error).to.be.instanceOf(SinkError);
    expect(stats).to.include({ read: 3, written: 0, deadLettered: 0, nacked: 3 });
  });

  it('gives a batch the insert token it had in every earlier version: a replay after an upgrade is still absorbed', () => {
    const recorder = new Recorder();
    const batch = { envelopes: ['a', 'b', 'c'].map((value, i) => recorder.envelope(value, { source: 'files', position: `in.ndjson@${i * 2}` })), bytes: 3 };
    expect(insertToken('bookings', 'clickhouse', batch)).to.equal('1b3a64a9955857f8cd096c7df312976d');
  });

  for (const [how, beforeWrite, logged] of [
    ['says no', () => false, []],
    ['throws', () => { throw new Error('checkpoint disk full'); }, ['checkpoint disk full']],
    ['rejects with a string', () => Promise.reject('checkpoint lost'), ['checkpoint lost']],
  ] as const) {
    it(`nacks a batch whose source ${how} before the write with a retriable NOT_OURS, and logs why when it failed`, async () => {
      const warnings: [string, LogFields | undefined][] = [];
      const logger: Logger = { debug() {}, info() {}, error() {}, warn: (message, fields) => void warnings.push([message, fields]) };
      const source = observed(fromIterable(records(3)));
      const sink = new MemorySink<string>('rows');
      const { stats, error } = await run<string>({ name: 'refused', source: { ...source, beforeWrite }, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 3, maxWaitMs: 1000 }, logger });
      expect(error).to.equal(undefined);
      expect(sink.writes).to.deep.equal([]);
      expect(stats).to.include({ read: 3, written: 0, nacked: 3 });
      expect(source.nacked.map((n) => n.position)).to.deep.equal(['iterable@1', 'iterable@2', 'iterable@3']);
      for (const { error: nack } of source.nacked) {
        expect(nack).to.be.instanceOf(TributaryError).and.include({ code: 'NOT_OURS', retriable: true, message: 'source iterable no longer holds these records: left for their next reader' });
      }
      expect(warnings).to.deep.equal(logged.map((cause) => ['the source could not prepare a batch for writing: its records are nacked and read again', { pipeline: 'refused', error: cause }]));
    });
  }
});
