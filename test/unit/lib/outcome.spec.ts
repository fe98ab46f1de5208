import { expect } from 'chai';
import fc from 'fast-check';
import { fromIterable } from '../../../connectors/iterable';
import { SinkError, ValidationError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../../../lib/sink';
import { recordOperator } from '../../../operators/recordOperator';
import { observed } from '../../helpers';

interface Row {
  n: number;
  /** Refused by the transform. */
  bad: boolean;
  /** Refused by the sink, for its row (the whole batch fails until it stands alone). */
  poison: boolean;
  /** Refused by the sink itself, one envelope (`reject()`), the rest of the batch written. */
  refused: boolean;
}

/**
 * A sink like toClickHouse: it encodes, writes the encoded body, and refuses a whole batch
 * when one row is poison (rowsAtFault); transient failures come at random. What it stores
 * is what its bodies held: a row re-sent after a split shows up here twice.
 */
class EncodingSink implements Sink<Row> {
  readonly name = 'encoding';
  readonly stored: number[] = [];
  #flaky: () => boolean;
  constructor(flaky: () => boolean) {
    this.#flaky = flaky;
  }
  encode(row: Row): string {
    return JSON.stringify(row);
  }
  async write(batch: Batch<Row>): Promise<void> {
    const rows = batch.encoded!.body.toString('utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Row);
    if (this.#flaky()) throw new SinkError('connection reset', { retriable: true });
    const envelopeOf = new Map(batch.envelopes.map((e) => [e.value.n, e]));
    const kept: number[] = [];
    for (const row of rows) {
      const envelope = envelopeOf.get(row.n);
      // A row sent again after the sink refused it would be stored this time, as a server would.
      if (row.refused && envelope && !envelope.settled) envelope.reject({ stage: 'sink', code: 'REFUSED', message: 'refused by the sink', path: '' });
      else kept.push(row.n);
    }
    if (rows.some((row) => row.poison)) throw new SinkError('cannot parse row', { rowsAtFault: true });
    this.stored.push(...kept);
  }
}

describe('one outcome per record (property, seeded)', function () {
  this.timeout(120_000);

  it('every record is stored once or dead-lettered once, never both, across random batches, poison rows, refusals and transient failures', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ bad: fc.boolean(), poison: fc.integer({ min: 0, max: 9 }).map((x) => x === 0), refused: fc.integer({ min: 0, max: 7 }).map((x) => x === 0) }), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer(),
        async (shapes, rows, flakyOneIn, seed) => {
          let state = seed >>> 0;
          const flaky = () => flakyOneIn > 0 && ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 8) % (flakyOneIn * 4) === 0;
          const records: Row[] = shapes.map((s, n) => ({ n, bad: s.bad && n % 3 === 0, poison: s.poison, refused: s.refused && !s.poison }));
          const source = observed(fromIterable(records));
          const sink = new EncodingSink(flaky);
          const letters: DeadLetter[] = [];
          const deadLetters: Sink<DeadLetter> = {
            name: 'dead-letters',
            async write(batch) {
              for (const e of batch.envelopes) if (!e.settled) letters.push(e.value);
            },
          };
          const refuseBad = recordOperator('validate', (row: Row) => {
            if (row.bad) throw new ValidationError([{ path: '/bad', message: 'is bad' }]);
            return row;
          });
          const pipeline = new Pipeline<Row>({
            source,
            transform: refuseBad as never,
            sink,
            deadLetters,
            batch: { rows, maxWaitMs: 1 },
            deadLetterBatch: { maxWaitMs: 1 },
            inFlight: { records: Math.max(rows, 50) },
            retry: { initialDelayMs: 0, maxDelayMs: 1 },
            breaker: { volumeThreshold: 1000 },
          });
          const stats = await pipeline.run();
          const dead = letters.map((l) => (JSON.parse(l.raw) as Row).n);
          const outcomes = new Map<number, string[]>();
          for (const n of sink.stored) outcomes.set(n, [...(outcomes.get(n) ?? []), 'stored']);
          for (const n of dead) outcomes.set(n, [...(outcomes.get(n) ?? []), 'dead']);
          for (const record of records) {
            const expected = record.bad || record.poison || record.refused ? 'dead' : 'stored';
            expect(outcomes.get(record.n), `record ${record.n} (${JSON.stringify(record)})`).to.deep.equal([expected]);
          }
          expect(source.acked).to.have.length(records.length);
          expect(new Set(source.acked).size).to.equal(records.length);
          expect(stats).to.include({ read: records.length, written: sink.stored.length, deadLettered: dead.length, nacked: 0 });
        },
      ),
      { seed: 15, numRuns: 60 },
    );
  });
});
