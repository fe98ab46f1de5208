import { expect } from 'chai';
import { Observable } from 'rxjs';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { recordOperator } from '../../../operators/recordOperator';
import { MemorySink } from '../../helpers';

/**
 * A source with replay-stable batches (a `batchKey`) has its dead letters batched like its
 * records; what it reads still counts once per record: read = written + dead-lettered.
 */
describe('a source with a batchKey: records read are counted once', () => {
  it('counts the records it emits and the ones it refuses itself, and each ends in one place', async () => {
    // 30 records in three files: every 5th refused by the source, every 7th by the transform.
    const source: Source<number> = {
      name: 'aligned',
      batchKey: (envelope) => envelope.meta.file ?? '',
      replayedBatch: () => undefined,
      open: (context) =>
        new Observable((subscriber) => {
          void (async () => {
            for (let i = 1; i <= 30; i++) {
              const wait = context.credits.take(8);
              if (wait) await wait;
              const meta = { source: 'aligned', position: `f${i % 3}@${i}`, file: `f${i % 3}`, record: i, receivedAt: 0, attempt: 1 };
              if (i % 5 === 0) context.reject(meta, String(i), 8, { stage: 'source', code: 'BAD', message: `record ${i}`, path: '' });
              else subscriber.next(context.envelope(i, meta, undefined, 8));
            }
            subscriber.complete();
          })();
        }),
    };
    const sink = new MemorySink<number>();
    const letters = new MemorySink<DeadLetter>();
    const refuseSevenths = recordOperator<number, number>('refuse', (value) => {
      if (value % 7 === 0) throw new Error('a 7th');
      return value;
    });
    const stats = await new Pipeline<number>({ name: 'aligned', source, transform: refuseSevenths, sink, deadLetters: letters, batch: { rows: 4, maxWaitMs: 5 } }).run();
    const refused = Array.from({ length: 30 }, (_, i) => i + 1).filter((i) => i % 5 === 0 || i % 7 === 0);
    expect(stats.read).to.equal(30);
    expect(stats.deadLettered).to.equal(refused.length);
    expect(stats.written).to.equal(30 - refused.length);
    expect(sink.rows.length).to.equal(30 - refused.length);
    const byStage = (stage: string) => letters.rows.filter((l) => l.stage === stage).length;
    expect([byStage('source'), byStage('refuse')]).to.deep.equal([6, 4]);
  });
});
