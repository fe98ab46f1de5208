import { expect } from 'chai';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';

/**
 * A source's `beforeWrite` (the inbox and Kafka record where a batch ends there) decides
 * whether a batch may be written: refused or failing, its records are nacked, never written.
 */
describe('Pipeline: a source that refuses a batch before its write', () => {
  const run = async (beforeWrite: () => boolean | Promise<boolean>) => {
    const sink = new MemorySink<{ id: number }>('rows');
    const pipeline = new Pipeline({
      source: { ...fromIterable(Array.from({ length: 5 }, (_, i) => ({ id: i }))), beforeWrite },
      sink,
      deadLetters: new MemorySink<DeadLetter>('dead-letters'),
      batch: { rows: 5, maxWaitMs: 10 },
    });
    const outcome = await pipeline.run().then((stats) => ({ stats, error: undefined }), (error: unknown) => ({ stats: pipeline.stats, error }));
    return { written: sink.rows.length, ...outcome };
  };

  it('writes the batch when beforeWrite allows it', async () => {
    const { written, stats } = await run(() => true);
    expect([written, stats.written, stats.nacked]).to.deep.equal([5, 5, 0]);
  });

  for (const [how, beforeWrite] of [
    ['says no', () => false],
    ['throws', () => { throw new Error('checkpoint disk full'); }],
    ['rejects', () => Promise.reject(new Error('checkpoint disk full'))],
  ] as const) {
    it(`nacks the batch, writing nothing, when beforeWrite ${how}`, async () => {
      const { written, stats } = await run(beforeWrite);
      expect(written).to.equal(0);
      expect([stats.written, stats.nacked]).to.deep.equal([0, 5]);
    });
  }
});
