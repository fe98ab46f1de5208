import { expect } from 'chai';
import { getEventListeners } from 'node:events';
import { NEVER, of, Subject, VirtualTimeScheduler } from 'rxjs';
import { AlignedDeadLetters, SourceAlignedDeadLetters } from '../../../lib/alignedDeadLetters';
import { Envelope } from '../../../lib/envelope';
import { TributaryError } from '../../../lib/errors';
import type { Batch, DeadLetter } from '../../../lib/sink';
import { Recorder } from '../../helpers';

/** A recorder that keeps the error each nack came with. */
class NackRecorder extends Recorder {
  readonly errors: Error[] = [];
  override nack(envelope: Envelope<unknown>, error?: Error): void {
    super.nack(envelope);
    this.errors.push(error!);
  }
}

/**
 * Dead-letter batches of a source with replay-stable batches: cut where the records'
 * batches are cut, in the order the records were read, and never held for ever.
 */
describe('AlignedDeadLetters', () => {
  const setup = (options: { rows?: number; bytes?: number; maxWaitMs?: number; encode?: (value: any) => string; signal?: AbortSignal } = {}) => {
    const scheduler = new VirtualTimeScheduler();
    const recorder = new NackRecorder();
    const letters = new AlignedDeadLetters({
      rows: options.rows ?? 100,
      bytes: options.bytes ?? 1 << 20,
      maxWaitMs: options.maxWaitMs ?? 30_000,
      scheduler,
      ...(options.encode && { encode: options.encode }),
      ...(options.signal && { signal: options.signal }),
    });
    const input = new Subject<Envelope<DeadLetter>>();
    const batches: string[][] = [];
    const encoded: string[][] = [];
    const sizes: number[] = [];
    const events: string[] = [];
    const subscription = letters.batches(input).subscribe({
      next: (b: Batch<DeadLetter>) => {
        batches.push(b.envelopes.map((e) => e.meta.position));
        sizes.push(b.bytes);
        if (b.encoded) encoded.push(b.encoded.body.toString('utf8').split('\n').slice(0, -1));
      },
      error: (error: Error) => events.push(`error: ${error.message}`),
      complete: () => events.push('complete'),
    });
    /** A letter of `key`'s record read as `order` (untagged without a key), of `bytes` bytes. */
    const send = (key: string | undefined, order: number, bytes = 1) => {
      const letter = new Envelope({ position: `r${order}` } as unknown as DeadLetter, { source: 'test', position: `r${order}`, receivedAt: 0, attempt: 1 }, undefined, bytes, recorder);
      if (key !== undefined) letters.tag(letter, key, order);
      input.next(letter);
      return letter;
    };
    return { scheduler, recorder, letters, input, batches, encoded, sizes, events, subscription, send };
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

  it('a cut takes a letter read as its last record; a cut before every letter sends nothing and keeps them', () => {
    const { letters, batches, send } = setup();
    send('a', 10);
    send('a', 12);
    letters.cut('a', 10);
    expect(batches).to.deep.equal([['r10']]);
    letters.cut('a', 11);
    expect(batches, 'no letter read by the cut').to.deep.equal([['r10']]);
    send('a', 14);
    letters.cut('a', 13);
    expect(batches).to.deep.equal([['r10'], ['r12']]);
  });

  it('closes at the dead-letter byte limit, counting only the letters still gathering after a cut', () => {
    const { letters, batches, sizes, send } = setup({ bytes: 10 });
    send('a', 1, 4);
    send('a', 12, 4);
    letters.cut('a', 10);
    expect(batches).to.deep.equal([['r1']]);
    expect(sizes).to.deep.equal([4]);
    // r12 (4 bytes) gathering: 8 bytes stay under the limit, 12 reach it.
    send('a', 13, 4);
    expect(batches).to.have.length(1);
    send('a', 14, 2);
    expect(batches).to.deep.equal([['r1'], ['r12', 'r13', 'r14']]);
    expect(sizes).to.deep.equal([4, 10]);
  });

  it('waits maxWaitMs from the first letter of a batch: once, and anew after a cut took every letter', () => {
    const { scheduler, letters, batches, send } = setup({ maxWaitMs: 30_000 });
    send('a', 1);
    scheduler.schedule(() => send('a', 2), 10_000);
    scheduler.maxFrames = 40_000;
    scheduler.flush();
    expect(batches, 'one batch at 30 s, no second when a later letter joined it').to.deep.equal([['r1', 'r2']]);
    // A cut taking every letter leaves no wait behind: the next letter waits its full 30 s.
    const now = scheduler.frame;
    scheduler.schedule(() => send('a', 3), 0);
    scheduler.schedule(() => letters.cut('a', 3), 1000);
    scheduler.schedule(() => send('a', 4), 20_000);
    scheduler.maxFrames = now + 20_000 + 29_999;
    scheduler.flush();
    expect(batches).to.deep.equal([['r1', 'r2'], ['r3']]);
    scheduler.maxFrames = Infinity;
    scheduler.flush();
    expect(batches).to.deep.equal([['r1', 'r2'], ['r3'], ['r4']]);
  });

  it('a held cut is sent once, however often it is released, and nacked when the letters end before its release', () => {
    const { letters, input, batches, recorder, send } = setup();
    send('a', 1);
    const release = letters.cut('a', 1, true);
    release(true);
    release(true);
    release(false);
    expect(batches).to.deep.equal([['r1']]);
    expect(recorder.nacked).to.deep.equal([]);
    const late = send('a', 2);
    const never = letters.cut('a', 2, true);
    input.complete();
    expect(recorder.nacked).to.deep.equal([late]);
    never(true);
    expect(batches, 'released after the end').to.deep.equal([['r1']]);
    expect(letters.cut('a', 3, true), 'a cut with no letter').to.be.a('function');
  });

  it('each letter encoded as it joins: a batch carries its rows in read order, a letter that cannot be encoded is refused', () => {
    const { letters, batches, encoded, recorder, send } = setup({
      encode: (value: { position: string }) => {
        if (value.position === 'r7') throw new Error('no JSON for r7');
        return JSON.stringify(value);
      },
    });
    send('a', 5);
    send('a', 3);
    send('a', 7);
    send('a', 12);
    letters.cut('a', 10);
    letters.cut('a', 20);
    expect(batches).to.deep.equal([['r3', 'r5'], ['r12']]);
    expect(encoded).to.deep.equal([['{"position":"r3"}', '{"position":"r5"}'], ['{"position":"r12"}']]);
    expect(recorder.rejected.map((r) => [r.envelope.meta.position, r.failure])).to.deep.equal([
      ['r7', { stage: 'sink', code: 'ENCODE', message: 'cannot encode the record: no JSON for r7', path: '' }],
    ]);
  });

  it('untagged letters (read order unknown) keep the order they came in', () => {
    const { letters, batches, send } = setup();
    send(undefined, 101);
    send(undefined, 102);
    send(undefined, 103);
    letters.keyChanged('a');
    expect(batches).to.deep.equal([['r101', 'r102', 'r103']]);
  });

  it('stopping (the signal aborted) nacks the letters gathering and every letter after, retriable', () => {
    const controller = new AbortController();
    const { letters, batches, recorder, send } = setup({ signal: controller.signal });
    const gathering = send('a', 1);
    controller.abort();
    expect(recorder.nacked).to.deep.equal([gathering]);
    const after = send('a', 2);
    expect(recorder.nacked).to.deep.equal([gathering, after]);
    const other = send('b', 3);
    letters.cut('b', 3);
    letters.keyChanged('c');
    expect(batches).to.deep.equal([]);
    expect(recorder.nacked).to.deep.equal([gathering, after, other]);
    for (const error of recorder.errors) {
      expect(error).to.be.instanceOf(TributaryError);
      expect(error).to.include({ code: 'STOPPED', retriable: true });
      expect(error.message).to.match(/^stopped before its dead-letter batch closed/);
    }
  });

  it('passes an error of the letters on; unsubscribing lets go of the letters and of the signal', () => {
    const controller = new AbortController();
    const { input, events, subscription, send, recorder } = setup({ signal: controller.signal });
    expect(getEventListeners(controller.signal, 'abort')).to.have.length(1);
    send('a', 1);
    input.error(new Error('the records failed'));
    expect(events).to.deep.equal(['error: the records failed']);

    const other = setup({ signal: controller.signal });
    other.send('a', 1);
    other.subscription.unsubscribe();
    expect(other.input.observed, 'still subscribed to the letters').to.equal(false);
    expect(getEventListeners(controller.signal, 'abort'), 'abort listeners left behind').to.have.length(0);
    expect(subscription.closed).to.equal(true);
    controller.abort();
    expect(other.recorder.nacked).to.deep.equal([]);
    expect(recorder.nacked).to.deep.equal([]);
  });

  it("a refused record of another key between records of one key: its letter waits for its own key's records, not the next record", () => {
    const recorder = new NackRecorder();
    const aligned = new SourceAlignedDeadLetters<string>({ name: 'partitions', open: () => NEVER }, (envelope) => envelope.value.slice(0, 1), { rows: 100, bytes: 1 << 20, scheduler: new VirtualTimeScheduler() });
    const input = new Subject<Envelope<DeadLetter>>();
    const batches: string[][] = [];
    aligned.batches(input).subscribe((b) => batches.push(b.envelopes.map((e) => e.meta.position)));
    const read = (id: string) => {
      const envelope = recorder.envelope(id, { position: id });
      aligned.onRead(envelope);
      return envelope;
    };
    aligned.key(read('B1'));
    const refused = read('A2');
    const letter = recorder.envelope({} as DeadLetter, { position: 'A2' });
    aligned.tag(letter, refused);
    input.next(letter);
    aligned.key(read('B3'));
    expect(batches, 'closed by a record of B').to.deep.equal([]);
    const a4 = read('A4');
    aligned.key(a4);
    of({ envelopes: [a4], bytes: 1 }).pipe(aligned.cuts()).subscribe();
    expect(batches).to.deep.equal([['A2']]);
  });
});
