import { expect } from 'chai';
import { basename } from 'node:path';
import { tap, VirtualTimeScheduler } from 'rxjs';
import { fromInbox } from '../../../connectors/files';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, scratchDir } from '../../helpers';

/**
 * A source that says a batch key ended (`batchKeyEnded`: an inbox file read to its end)
 * closes that key's dead-letter batch there, not when the next key's records come nor when
 * the dead-letter timer fires.
 */
describe('a batch key ended by the source closes its dead-letter batch', () => {
  const dir = scratchDir();

  it("an inbox file's dead letters are written once the file is read to its end, before the next file is read, with no timer", async () => {
    // a.csv's last record is refused by the source: its dead-letter batch has nothing after it to close it
    // but the end of a.csv. The dead-letter timer runs on a clock that never moves.
    dir.file('a.csv', 'ref,n\nR-1,1\nR-2,2\nR-3,3\nragged\n');
    dir.file('b.csv', 'ref,n\nR-4,4\nR-5,5\nR-6,6\n');
    const seen: string[] = [];
    const deadLetters = new MemorySink<DeadLetter>();
    deadLetters.gate = async (batch) => void seen.push(...batch.envelopes.map((e) => `dead letter ${basename(e.meta.file!)}:${e.meta.record!}`));
    const noteRead = tap<Envelope<unknown>>((e) => seen.push(`read ${basename(e.meta.file!)}:${e.meta.record!}`));
    const clock = new VirtualTimeScheduler();
    const source = fromInbox({ dir: dir.path, once: true });
    const pipeline = new Pipeline({ source, transform: noteRead, sink: new MemorySink<unknown>(), deadLetters, batch: { rows: 100, maxWaitMs: 5 }, deadLetterBatch: { scheduler: clock } });
    const stats = await pipeline.run();
    expect(seen).to.deep.equal(['read a.csv:1', 'read a.csv:2', 'read a.csv:3', 'dead letter a.csv:4', 'read b.csv:1', 'read b.csv:2', 'read b.csv:3']);
    expect(stats).to.include({ read: 7, written: 6, deadLettered: 1, nacked: 0 });
    expect(source.inbox.moved.map((m) => basename(m.to)).sort()).to.deep.equal(['a.csv', 'b.csv']);
  });
});
