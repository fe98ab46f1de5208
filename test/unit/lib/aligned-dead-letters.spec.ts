import { expect } from 'chai';
import { Subject, VirtualTimeScheduler } from 'rxjs';
import { AlignedDeadLetters } from '../../../lib/alignedDeadLetters';
import type { Envelope } from '../../../lib/envelope';
import type { Batch, DeadLetter } from '../../../lib/sink';
import { Recorder } from '../../helpers';

/**
 * Dead-letter batches of a source with replay-stable batches: cut where the records'
 * batches are cut, in the order the records were read, and never held for ever.
 */
describe('AlignedDeadLetters', () => {
  const setup = (options: { rows?: number; maxWaitMs?: number } = {}) => {
    const scheduler = new VirtualTimeScheduler();
    const recorder = new Recorder();
    const letters = new AlignedDeadLetters({ rows: options.rows ?? 100, bytes: 1 << 20, maxWaitMs: options.maxWaitMs ?? 30_000, scheduler });
    const input = new Subject<Envelope<DeadLetter>>();
    const batches: string[][] = [];
    letters.batches(input).subscribe((b: Batch<DeadLetter>) => batches.push(b.envelopes.map((e) => e.meta.position)));
    const send = (key: string, order: number) => {
      const letter = recorder.envelope({ position: `r${order}` } as unknown as DeadLetter, { position: `r${order}` }) as Envelope<DeadLetter>;
      letters.tag(letter, key, order);
      input.next(letter);
      return letter;
    };
    return { scheduler, recorder, letters, input, batches, send };
  };

  it('a records batch cut takes the letters read before its last record, in read order; the rest wait for the next cut', () => {
    const { letters, batches, send } = setup();
    // A transform's refusals may arrive after the source's: 5 before 3.
    send('a', 5);
    send('a', 3);
    send('a', 12);
    letters.cut('a', 10);
    expect(batches).to.deep.equal([['r3', 'r5']]);
    letters.cut('a', 20);
    expect(batches).to.deep.equal([['r3', 'r5'], ['r12']]);
  });

  it('the records moving to another key close every other key; a held cut is sent or nacked as its records batch is', () => {
    const { letters, batches, recorder, send } = setup();
    send('a', 1);
    send('b', 2);
    letters.keyChanged('b');
    expect(batches).to.deep.equal([['r1']]);
    const release = letters.cut('b', 3, true);
    expect(batches, 'held until the records batch may be written').to.have.length(1);
    release(true);
    expect(batches).to.deep.equal([['r1'], ['r2']]);
    const refused = send('b', 4);
    letters.cut('b', 5, true)(false);
    expect(batches).to.have.length(2);
    expect(recorder.nacked).to.have.length(1);
    expect(recorder.nacked[0]).to.equal(refused);
  });

  it('never waits for ever: a gathering batch no records batch closes goes after maxWaitMs', () => {
    const { scheduler, batches, send } = setup({ maxWaitMs: 30_000 });
    send('a', 1);
    scheduler.maxFrames = 29_999;
    scheduler.flush();
    expect(batches).to.deep.equal([]);
    scheduler.maxFrames = Infinity;
    scheduler.flush();
    expect(batches).to.deep.equal([['r1']]);
  });

  it('closes at the dead-letter row limit', () => {
    const { batches, send } = setup({ rows: 2 });
    send('a', 1);
    send('a', 2);
    send('a', 3);
    expect(batches).to.deep.equal([['r1', 'r2']]);
  });
});
