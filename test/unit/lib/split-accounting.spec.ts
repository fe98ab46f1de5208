import { expect } from 'chai';
import { Observable, pipe, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../../../lib/envelope';
import { SinkError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline, type PipelineStats } from '../../../lib/pipeline';
import type { Batch, DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { recordOperator } from '../../../operators/recordOperator';
import { MemorySink } from '../../helpers';
import { metricValue, parseMetrics } from '../../metricsText';

const RECORDS = 60;

/**
 * Records `r1` … `r60`, from three files of 20; every 10th is refused by the source itself. With
 * `aligned`, the source has replay-stable batches (a `batchKey`) and its dead letters are
 * batched with its records.
 */
function numbered(aligned: boolean): Source<string> & { emitted: number[] } {
  const emitted: number[] = [];
  return {
    name: 'numbered',
    emitted,
    ...(aligned && { batchKey: (envelope: Envelope<string>) => envelope.meta.file ?? '', replayedBatch: () => undefined }),
    open: (context) =>
      new Observable((subscriber) => {
        void (async () => {
          for (let i = 1; i <= RECORDS && !context.signal.aborted; i++) {
            const wait = context.credits.take(8);
            if (wait) await wait;
            if (context.signal.aborted) {
              context.credits.release(8);
              break;
            }
            emitted.push(i);
            const file = `f${Math.ceil(i / 20)}`;
            const meta = { source: 'numbered', position: `${file}@${i}`, file, record: i, receivedAt: 0, attempt: 1 };
            if (i % 10 === 0) context.reject(meta, `r${i}`, 8, { stage: 'source', code: 'BAD', message: `record ${i}`, path: '' });
            else subscriber.next(context.envelope(`r${i}`, meta, `r${i}`, 8));
          }
          subscriber.complete();
        })();
      }),
  };
}

/**
 * The records record `i` becomes: split in three (i % 4 = 1, 3; the second part of the
 * latter refused by the splitting step), filtered out (i % 4 = 2), or kept whole.
 */
function leaves(i: number): string[] {
  if (i % 10 === 0) return [`r${i}`];
  if (i % 4 === 1 || i % 4 === 3) return [1, 2, 3].map((part) => `r${i}.${part}`);
  if (i % 4 === 2) return [];
  return [`r${i}`];
}

/** A step written with `Envelope.split`: one record into several, or into none. */
const splitting: OperatorFunction<Envelope<string>, Envelope<string>> = (records$) =>
  new Observable((subscriber) =>
    records$.subscribe({
      next(envelope) {
        const i = Number(envelope.value.slice(1));
        if (i % 4 === 2) {
          envelope.split([]);
          return;
        }
        if (i % 4 !== 1 && i % 4 !== 3) return subscriber.next(envelope);
        for (const part of envelope.split([1, 2, 3].map((n) => `${envelope.value}.${n}`))) {
          if (i % 4 === 3 && part.value.endsWith('.2')) part.reject({ stage: 'split', code: 'PART', message: `part of ${i}`, path: '' });
          else subscriber.next(part);
        }
      },
      error: (error: unknown) => subscriber.error(error),
      complete: () => subscriber.complete(),
    }),
  );

/** Refuses every record whose digits sum to 7 after the split: some whole, some parts. */
const refuseSevens = recordOperator<string, string>('validate', (value) => {
  if ([...value].reduce((sum, c) => sum + (c >= '0' && c <= '9' ? Number(c) : 0), 0) === 7) throw new Error('sums to 7');
  return value;
});

/** The sink stores each value, refuses (dead-letters) those ending in `.3` of records 25 to 40, and fails for good from write `failFrom` on. */
class SplitSink extends MemorySink<string> {
  #writes = 0;
  constructor(readonly failFrom = Infinity) {
    super('split');
  }
  override async write(batch: Batch<string>, context: Parameters<MemorySink<string>['write']>[1]): Promise<void> {
    if (++this.#writes >= this.failFrom) throw new SinkError('disk full', { retriable: false });
    for (const envelope of batch.envelopes) {
      const i = Number(envelope.value.slice(1).split('.')[0]);
      if (envelope.value.endsWith('.3') && i >= 25 && i <= 40) envelope.reject({ stage: 'sink', code: 'REFUSED', message: 'refused by the sink', path: '' });
    }
    await super.write(batch, context);
  }
}

async function run(aligned: boolean, failFrom?: number): Promise<{ stats: PipelineStats; source: ReturnType<typeof numbered>; sink: SplitSink; letters: MemorySink<DeadLetter>; metrics: (labels: Record<string, string>) => number }> {
  const source = numbered(aligned);
  const sink = new SplitSink(failFrom);
  const letters = new MemorySink<DeadLetter>();
  // Batches of 4: the parts of one record land in two batches, and some batches fail while their neighbours are written.
  const pipeline = new Pipeline<string>({ name: 'split', source, transform: pipe(splitting, refuseSevens), sink, deadLetters: letters, batch: { rows: 4, maxWaitMs: 60_000 }, deadLetterBatch: { rows: 3, maxWaitMs: 1 }, inFlight: { records: 16 } });
  const metrics = pipelineMetrics(pipeline);
  const stats = await pipeline.run().catch(() => pipeline.stats);
  const samples = parseMetrics(await metrics.registry.metrics());
  metrics.close();
  const sum = (labels: Record<string, string>) =>
    samples.filter((s) => s.name === 'tributary_records_total' && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((total, s) => total + s.value, 0);
  expect(metricValue(samples, 'tributary_records_total', { stage: 'source', outcome: 'in' }), 'records in, in tributary_records_total').to.equal(stats.read);
  return { stats, source, sink, letters, metrics: sum };
}

/** Each record the source emitted became its leaves; each leaf has one outcome, counted once. */
function expectOneOutcomeEach({ stats, source, sink, letters, metrics }: Awaited<ReturnType<typeof run>>): { nacked: number } {
  const expected = source.emitted.flatMap(leaves);
  const written = sink.rows;
  const deadLettered = letters.rows.map((l) => (l.raw.startsWith('"') ? (JSON.parse(l.raw) as string) : l.raw));
  expect(new Set(written).size, 'a record written twice').to.equal(written.length);
  expect(new Set(deadLettered).size, 'a record dead-lettered twice').to.equal(deadLettered.length);
  expect(written.filter((id) => deadLettered.includes(id)), 'written and dead-lettered').to.deep.equal([]);
  expect([...written, ...deadLettered].filter((id) => !expected.includes(id)), 'not a record read').to.deep.equal([]);
  const nacked = expected.length - written.length - deadLettered.length;
  expect(stats).to.include({ read: expected.length, written: written.length, deadLettered: deadLettered.length, nacked });
  expect(stats.read, 'read = written + dead-lettered + nacked').to.equal(stats.written + stats.deadLettered + stats.nacked);
  expect([metrics({ outcome: 'written' }), metrics({ outcome: 'dead_lettered' }), metrics({ outcome: 'nacked' })], 'in tributary_records_total').to.deep.equal([stats.written, stats.deadLettered, stats.nacked]);
  expect(stats).to.include({ inFlightRecords: 0, inFlightBytes: 0 });
  return { nacked };
}

/**
 * A step that splits one record into several, or filters one out, mid-batch: every record
 * (each part of a split one) has exactly one outcome, and read = written + dead-lettered +
 * nacked in stats and in tributary_records_total.
 */
describe('records split or filtered out by a step keep exact accounting', () => {
  for (const aligned of [false, true]) {
    describe(aligned ? 'a source with a batchKey (dead letters batched with the records)' : 'a source without a batchKey', () => {
      it('every part is written or dead-lettered once; a record filtered out is not counted as read', async () => {
        const result = await run(aligned);
        expect(result.source.emitted).to.have.length(RECORDS);
        expect(expectOneOutcomeEach(result).nacked).to.equal(0);
        // Refused by the source, by the splitting step, by validate (whole records and parts), by the sink.
        const byStage = new Map<string, number>();
        for (const letter of result.letters.rows) byStage.set(letter.stage, (byStage.get(letter.stage) ?? 0) + 1);
        expect([...byStage.keys()].sort()).to.deep.equal(['sink', 'source', 'split', 'validate']);
      });

      it('when the sink fails for good mid-run, the parts of a split record in the failed batches are each nacked once, those written stay written', async () => {
        const result = await run(aligned, 4);
        const { nacked } = expectOneOutcomeEach(result);
        expect(nacked).to.be.above(0);
        expect(result.stats.written).to.be.above(0);
        // A split record with parts on both sides of the failure: its written and its nacked parts are each counted.
        const settled = new Set([...result.sink.rows, ...result.letters.rows.map((l) => l.raw)]);
        const straddling = result.source.emitted.filter((i) => leaves(i).length === 3 && result.sink.rows.includes(leaves(i)[0]!) && !settled.has(leaves(i)[2]!) && !settled.has(JSON.stringify(leaves(i)[2])));
        expect(straddling, 'no split record with a part written and a part nacked').not.to.deep.equal([]);
      });
    });
  }
});
