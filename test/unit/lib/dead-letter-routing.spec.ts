import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { fromIterable } from '../../../connectors/iterable';
import { DeadLetterRouting, type ProtectDeadLetter } from '../../../lib/deadLetters';
import { Envelope, type RecordFailure, type Settlement } from '../../../lib/envelope';
import { SinkError, TributaryError, ValidationError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { recordOperator } from '../../../operators/recordOperator';
import { delay, MemorySink, observed } from '../../helpers';

/**
 * DeadLetterRouting turns a refused record into a dead letter on `letters$` and settles the
 * record once that letter's write lands: every `done` is called exactly once, with the
 * reason when the letter cannot be made durable, and `letters$` ends only after the letters
 * still being protected are sent.
 */
describe('DeadLetterRouting: every refused record is settled once, the letters stream ends after them', () => {
  const failure: RecordFailure = { stage: 'validate', code: 'VALIDATION', message: 'refused', path: '/id' };
  const unused: Settlement = { deadLetters: { route: () => undefined }, ack: () => undefined, nack: () => undefined, reject: () => undefined };
  const recordOf = (position: string, value: unknown, raw?: string) => new Envelope(value, { source: 'test', position, receivedAt: 0, attempt: 1 }, raw, 1, unused);
  const record = (position: string) => recordOf(position, { id: position });

  /** A routing with its letters as they come out, whether the stream ended, and each record's outcome. */
  function routing(protect?: ProtectDeadLetter) {
    const stats = { deadLettered: 0 };
    const router = new DeadLetterRouting('p', protect, 1024, stats);
    const letters: Envelope<DeadLetter>[] = [];
    let ended = false;
    router.letters$.subscribe({ next: (letter) => letters.push(letter), complete: () => (ended = true) });
    const outcomes = new Map<string, (Error | undefined)[]>();
    const route = (envelope: Envelope<unknown>) => {
      outcomes.set(envelope.meta.position, []);
      router.route(envelope, failure, (error) => outcomes.get(envelope.meta.position)!.push(error));
    };
    return { router, stats, letters, ended: () => ended, outcomes, route };
  }

  /** A protection that waits until released. */
  function held() {
    const releases: (() => void)[] = [];
    const protect: ProtectDeadLetter = (letter) => new Promise<DeadLetter>((resolve) => releases.push(() => resolve({ ...letter, raw: `sealed ${letter.position}` })));
    return { protect, release: (i: number) => releases[i]!() };
  }

  it('counts a letter by stage once its write is acked; a nacked or refused letter nacks its record with the reason', () => {
    const { router, stats, letters, outcomes, route } = routing();
    for (const position of ['a', 'b', 'c']) route(record(position));
    expect(letters.map((l) => l.value.position)).to.deep.equal(['a', 'b', 'c']);
    letters[0]!.ack();
    const down = new SinkError('dead letters down', { retriable: true });
    letters[1]!.nack(down);
    letters[2]!.reject({ stage: 'sink', code: 'ENCODE', message: 'cannot encode the record: too deep', path: '' });
    expect(stats.deadLettered).to.equal(1);
    expect([...router.byStage]).to.deep.equal([['validate', 1]]);
    expect(outcomes.get('a')).to.deep.equal([undefined]);
    expect(outcomes.get('b')).to.deep.equal([down]);
    const refused = outcomes.get('c')!;
    expect(refused).to.have.length(1);
    expect(refused[0]).to.be.instanceOf(SinkError).and.include({ message: 'dead-letter sink refused the record: cannot encode the record: too deep' });
  });

  it('refuses a record routed after the letters stream ended, without protecting it', async () => {
    const protected_: string[] = [];
    const { router, letters, outcomes, route, ended } = routing((letter) => (protected_.push(letter.position), letter));
    router.complete();
    await delay(0);
    expect(ended()).to.equal(true);
    route(record('late'));
    const [error] = outcomes.get('late')!;
    expect(outcomes.get('late')).to.have.length(1);
    expect(error).to.be.instanceOf(TributaryError).and.include({ code: 'STOPPED', message: 'dead-letter sink already closed' });
    expect(protected_).to.deep.equal([]);
    expect(letters).to.deep.equal([]);
  });

  it('ends the letters stream only after the letters being protected are sent, one routed while it waits included', async () => {
    const { protect, release } = held();
    const { router, letters, outcomes, route, ended } = routing(protect);
    route(record('first'));
    router.complete();
    // Routed after complete() but before the stream ended: it holds the stream open too.
    route(record('second'));
    await delay(5);
    expect([letters.length, ended()]).to.deep.equal([0, false]);
    release(0);
    await delay(5);
    expect(letters.map((l) => l.value.raw)).to.deep.equal(['sealed first']);
    expect(ended()).to.equal(false);
    release(1);
    await delay(5);
    expect(letters.map((l) => l.value.raw)).to.deep.equal(['sealed first', 'sealed second']);
    expect(ended()).to.equal(true);
    for (const letter of letters) letter.ack();
    expect([...outcomes.values()]).to.deep.equal([[undefined], [undefined]]);
  });

  for (const [how, protect, reason] of [
    ['throws', () => { throw new Error('no key for this subject'); }, 'no key for this subject'],
    ['rejects', () => Promise.reject(new Error('key service down')), 'key service down'],
    ['rejects with a string', () => Promise.reject('key service down'), 'key service down'],
  ] as const) {
    it(`nacks the record when protectDeadLetter ${how}, sending no letter, and still ends the stream`, async () => {
      const { router, letters, outcomes, route, ended } = routing(protect as ProtectDeadLetter);
      route(record('a'));
      router.complete();
      await delay(5);
      const errors = outcomes.get('a')!;
      expect(errors).to.have.length(1);
      expect(errors[0]).to.be.instanceOf(Error).and.include({ message: reason });
      expect(letters).to.deep.equal([]);
      expect(ended()).to.equal(true);
    });
  }

  it('names the vendor of the record, empty when it has none', () => {
    const { letters, route } = routing();
    route(record('anonymous'));
    route(new Envelope({ id: 1 }, { source: 'test', position: 'acme', vendor: 'acme', receivedAt: 0, attempt: 1 }, undefined, 1, unused));
    expect(letters.map((l) => l.value.vendor)).to.deep.equal(['', 'acme']);
  });

  it('writes a record with nothing to show as an empty payload: length 0 and the hash of nothing', () => {
    const { letters, route } = routing();
    // A source's reject with no payload (an unreadable file): no value, no raw.
    route(recordOf('unreadable', undefined));
    route(recordOf('text', { id: 1 }, 'as received'));
    route(recordOf('value', { id: 1 }));
    expect(letters.map((l) => [l.value.raw, l.value.raw_encoding, l.value.raw_bytes, l.value.raw_sha256])).to.deep.equal([
      ['', 'utf8', 0, createHash('sha256').digest('hex')],
      ['as received', 'utf8', 11, createHash('sha256').update('as received').digest('hex')],
      ['{"id":1}', 'utf8', 8, createHash('sha256').update('{"id":1}').digest('hex')],
    ]);
  });

  it('in a pipeline, a dead letter its sink cannot encode nacks the refused record with the reason', async () => {
    const source = observed(fromIterable(['good', 'bad']));
    const deadLetters = Object.assign(new MemorySink<DeadLetter>('letters'), {
      encode: (letter: DeadLetter): string => {
        if (letter.position === 'iterable@2') throw new Error('letter too deep');
        return JSON.stringify(letter);
      },
    });
    const refuse = recordOperator<string, string>('validate', (value) => {
      if (value === 'bad') throw new ValidationError([{ path: '', message: 'refused' }]);
      return value;
    });
    const stats = await new Pipeline<string>({ source, transform: (records$) => records$.pipe(refuse), sink: new MemorySink<string>(), deadLetters }).run();
    expect(stats).to.include({ read: 2, written: 1, deadLettered: 0, nacked: 1 });
    expect(source.nacked.map((n) => [n.position, n.error.message])).to.deep.equal([['iterable@2', 'dead-letter sink refused the record: cannot encode the record: letter too deep']]);
  });
});
