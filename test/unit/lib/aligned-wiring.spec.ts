import { expect } from 'chai';
import { Observable, VirtualTimeScheduler } from 'rxjs';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, WriteContext } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { MemorySink } from '../../helpers';

/** Lets every write under way land: a few turns of the event loop, not a clock. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * How a pipeline wires aligned dead letters to a source with a batchKey and a beforeWrite:
 * a records batch cut takes the letters read before its last record (sent once beforeWrite
 * allowed the batch, nacked when it failed), the records moving to another key send the
 * letters of the key before, and no letter goes by time before the replay wait.
 */
describe('aligned dead letters in a pipeline: the source, the batch step and the writer', () => {
  it('sends each letter with the batch cut after it, at the key change, or never when beforeWrite fails', async () => {
    // Batch timers (records: 5 ms; dead letters: the replay wait) on a clock the source moves; it runs timers due within 1 s only.
    const clock = new VirtualTimeScheduler(undefined, 1000);
    const letters = new MemorySink<DeadLetter>();
    const seen: string[][] = [];
    const source: Source<string> = {
      name: 'files',
      batchKey: (envelope) => envelope.meta.file!,
      replayedBatch: () => undefined,
      async beforeWrite(envelopes) {
        if (envelopes[0]!.meta.file === 'B') throw new Error('cannot save the cut');
        return true;
      },
      open: (context) =>
        new Observable((subscriber) => {
          let record = 0;
          const read = (file: string, refused = false) => {
            const id = `${file}${++record}`;
            const meta = { source: 'files', position: id, file, record, receivedAt: 0, attempt: 1 };
            if (refused) context.reject(meta, id, 1, { stage: 'source', code: 'BAD', message: id, path: '' });
            else subscriber.next(context.envelope(id, meta, id, 1));
          };
          const deadLettered = () => letters.rows.map((l) => l.raw);
          void (async () => {
            // A1, A3 kept; A2, A4 refused. The clock cuts [A1 A3] after A4 is read: A2 goes with it, A4 waits.
            read('A');
            read('A', true);
            read('A');
            read('A', true);
            clock.flush();
            await settle();
            seen.push(deadLettered());
            // The records move to B: A4 goes.
            read('B');
            await settle();
            seen.push(deadLettered());
            // B6 refused, then [B5 B7] cut: its beforeWrite fails, so B6's letter is nacked with it, never written.
            read('B', true);
            read('B');
            clock.flush();
            await settle();
            subscriber.complete();
          })();
        }),
    };
    const sink = new MemorySink<string>();
    const stats = await new Pipeline<string>({ name: 'wiring', source, sink, deadLetters: letters, batch: { rows: 100, maxWaitMs: 5, scheduler: clock }, deadLetterBatch: { scheduler: clock } }).run();
    expect(seen).to.deep.equal([['A2'], ['A2', 'A4']]);
    expect(letters.rows.map((l) => l.raw)).to.deep.equal(['A2', 'A4']);
    expect(sink.rows).to.deep.equal(['A1', 'A3']);
    expect(stats).to.include({ read: 7, written: 2, deadLettered: 2, nacked: 3 });
  });

  it("hands the letters to the dead-letter sink encoded by its own encode", async () => {
    class EncodingLetters extends MemorySink<DeadLetter> {
      readonly bodies: string[] = [];
      readonly label = 'letter';
      encode(letter: DeadLetter): string {
        return `${this.label} ${letter.raw}`;
      }
      override async write(batch: Batch<DeadLetter>, context: WriteContext): Promise<void> {
        this.bodies.push(batch.encoded?.body.toString() ?? 'not encoded');
        await super.write(batch, context);
      }
    }
    const letters = new EncodingLetters();
    const source: Source<string> = {
      name: 'files',
      batchKey: (envelope) => envelope.meta.file!,
      open: (context) =>
        new Observable((subscriber) => {
          const meta = (record: number) => ({ source: 'files', position: `A${record}`, file: 'A', record, receivedAt: 0, attempt: 1 });
          subscriber.next(context.envelope('A1', meta(1), 'A1', 1));
          context.reject(meta(2), 'A2', 1, { stage: 'source', code: 'BAD', message: 'A2', path: '' });
          subscriber.complete();
        }),
    };
    const stats = await new Pipeline<string>({ source, sink: new MemorySink<string>(), deadLetters: letters }).run();
    expect(stats).to.include({ written: 1, deadLettered: 1 });
    expect(letters.bodies).to.deep.equal(['letter A2\n']);
  });
});
