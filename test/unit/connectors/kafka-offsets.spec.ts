import { expect } from 'chai';
import fc from 'fast-check';
import { compareCuts, cutsMetadata, cutsOfMetadata, PartitionOffsets } from '../../../connectors/kafka/partitionOffsets';
import { cutOf, KafkaRecordMeta, MessageText, partPosition, safeOffset, shortText } from '../../../connectors/kafka/record';
import { Envelope } from '../../../lib/envelope';
import { ConnectorError } from '../../../lib/errors';
import { Recorder, seeded } from '../../helpers';

describe('PartitionOffsets: the commit point of one partition', () => {
  it('is always just past the longest settled prefix, whatever the settlement order and offset gaps', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 300 }), fc.integer(), (gaps, seed) => {
        const offsets: number[] = [];
        let next = 7;
        for (const gap of gaps) offsets.push((next += gap));
        const tracker = new PartitionOffsets('t', 0);
        for (const offset of offsets) tracker.emitted(offset);
        const order = [...offsets];
        let state = seed >>> 0;
        for (let i = order.length - 1; i > 0; i--) {
          state = (state * 1103515245 + 12345) >>> 0;
          const j = state % (i + 1);
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        const settled = new Set<number>();
        for (const offset of order) {
          tracker.settled(offset);
          settled.add(offset);
          const firstUnsettled = offsets.find((o) => !settled.has(o));
          const expected = firstUnsettled ?? offsets[offsets.length - 1]! + 1;
          // Nothing settled at the front yet: the commit point stays where reading began.
          const point = tracker.toCommit() ?? tracker.committed;
          expect(point).to.equal(settled.has(offsets[0]!) ? expected : offsets[0]);
        }
        expect(tracker.inFlight).to.equal(0);
      }),
      { numRuns: 200 },
    );
  });

  it('never passes a nacked record, and a retired tracker ignores settlements and commits nothing', () => {
    const tracker = new PartitionOffsets('t', 3);
    for (let offset = 0; offset < 10; offset++) tracker.emitted(offset);
    for (const offset of [0, 1, 2, 4, 5, 6, 7, 8, 9]) tracker.settled(offset);
    tracker.nacked(3);
    expect(tracker.toCommit()).to.equal(3);
    expect(tracker.settled(3)).to.equal(false);
    expect(tracker.toCommit()).to.equal(3);
    expect(tracker.retire()).to.equal(3);
    expect(tracker.toCommit()).to.equal(undefined);
    expect(tracker.accepts(10)).to.equal(false);
  });

  it('settles an offset only for the record emitted with it: another record carrying that offset moves nothing', () => {
    const tracker = new PartitionOffsets('t', 0);
    const first = { offset: 0 };
    const second = { offset: 1 };
    tracker.emitted(0, first);
    tracker.emitted(1, second);
    // The same offsets read under an earlier tracker of the partition: other envelopes.
    expect(tracker.emittedAs(0, { offset: 0 })).to.equal(false);
    expect(tracker.settled(0, { offset: 0 })).to.equal(false);
    expect(tracker.toCommit()).to.equal(0);
    expect(tracker.emittedAs(0, first)).to.equal(true);
    expect(tracker.settled(0, first)).to.equal(true);
    expect(tracker.toCommit()).to.equal(1);
    expect(tracker.settled(1, second)).to.equal(true);
    expect(tracker.toCommit()).to.equal(2);
    tracker.retire();
    expect(tracker.emittedAs(1, second)).to.equal(false);
  });

  it('does not emit an offset twice', () => {
    const tracker = new PartitionOffsets('t', 0);
    tracker.emitted(5);
    expect(tracker.accepts(5)).to.equal(false);
    expect(tracker.accepts(4)).to.equal(false);
    expect(tracker.accepts(6)).to.equal(true);
  });
});

describe('PartitionOffsets past its compaction point (10,000+ offsets)', () => {
  it('property: emitting and settling interleaved in random order, the commit point is always just past the settled prefix', () => {
    fc.assert(
      fc.property(fc.integer({ min: 10_000, max: 14_000 }), fc.integer(), (count, seed) => {
        let state = seed >>> 0;
        // Math.imul: a 32-bit product, so the low bits stay random.
        const random = (n: number) => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0), (state >>> 8) % n);
        const offsets: number[] = [];
        let next = 0;
        for (let i = 0; i < count; i++) offsets.push((next += 1 + random(3)));
        const tracker = new PartitionOffsets('t', 0);
        const settled = new Set<number>();
        let firstUnsettled = 0;
        let emitted = 0;
        let inFlight: number[] = [];
        while (firstUnsettled < offsets.length) {
          // Emit a batch, then settle a random share of what is in flight, in random order.
          const batch = Math.min(offsets.length - emitted, 1 + random(1500));
          for (const offset of offsets.slice(emitted, emitted + batch)) tracker.emitted(offset);
          inFlight.push(...offsets.slice(emitted, emitted + batch));
          emitted += batch;
          const settleNow = emitted === offsets.length ? inFlight.length : random(inFlight.length + 1);
          for (let k = 0; k < settleNow; k++) {
            const pick = random(inFlight.length);
            const offset = inFlight[pick]!;
            inFlight[pick] = inFlight[inFlight.length - 1]!;
            inFlight.pop();
            tracker.settled(offset);
            settled.add(offset);
            while (firstUnsettled < offsets.length && settled.has(offsets[firstUnsettled]!)) firstUnsettled++;
            if (firstUnsettled === 0) continue;
            // Never past the first record not settled, and past every settled record before it
            // (offsets between two records hold none: either end of the gap commits the same).
            const point = (tracker.toCommit() ?? tracker.committed)!;
            const ceiling = firstUnsettled < emitted ? offsets[firstUnsettled]! : offsets[emitted - 1]! + 1;
            if (!(point <= ceiling && point > offsets[firstUnsettled - 1]!)) {
              expect.fail(`after settling ${offset}: commit point ${point}, must be in (${offsets[firstUnsettled - 1]}, ${ceiling}]`);
            }
          }
          inFlight = [...inFlight];
        }
        expect(tracker.inFlight).to.equal(0);
      }),
      seeded(15, 20),
    );
  });
});

describe('batch cuts in offset commit metadata', () => {
  it('orders cuts by offset, then part (a message split into records), the whole before its parts', () => {
    const order = ([[4, 't/0/4'], [5, 't/0/5'], [5, 't/0/5#1'], [5, 't/0/5#1#2'], [5, 't/0/5#2'], [5, 't/0/5#10'], [6, 't/0/6']] as const).map(([offset, position]) => cutOf(offset, position));
    for (let i = 1; i < order.length; i++) expect(compareCuts(order[i - 1]!, order[i]!), `${i}`).to.be.lessThan(0);
    expect(cutOf(340, 'my.topic/12/340#3')).to.deep.equal({ offset: 340, part: '#3' });
  });

  it('round-trips the cuts at or past the committed offset, as distances from it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.uniqueArray(fc.integer({ min: 0, max: 100_000 }), { maxLength: 40 }), fc.array(fc.constantFrom('', '#1', '#2#3'), { maxLength: 40 }), (offset, distances, parts) => {
        const cuts = [...distances].sort((a, b) => a - b).map((d, i) => ({ offset: offset + d, part: parts[i] ?? '' }));
        const metadata = cutsMetadata(cuts, offset);
        expect(cutsOfMetadata(metadata, offset)).to.deep.equal(cuts);
        // A cut behind the commit is left out.
        expect(cutsMetadata([{ offset: offset - 1, part: '' }, ...cuts], offset)).to.equal(metadata);
      }),
      seeded(7, 200),
    );
  });

  it('reads no cuts from metadata it did not write, or that is out of order or malformed', () => {
    for (const metadata of [null, undefined, '', 'someone else', 'tributary-cuts/2:1', 'tributary-cuts/1:2,1', 'tributary-cuts/1:1,1', 'tributary-cuts/1:-1', 'tributary-cuts/1:1e3', 'tributary-cuts/1:1#0', 'tributary-cuts/1:1#', 'tributary-cuts/1:9999999999999999', 'tributary-cuts/1:1,,2']) {
      expect(cutsOfMetadata(metadata, 10), String(metadata)).to.deep.equal([]);
    }
    expect(cutsOfMetadata('tributary-cuts/1:', 10)).to.deep.equal([]);
    expect(cutsOfMetadata('tributary-cuts/1:0,3#2', 10)).to.deep.equal([{ offset: 10, part: '' }, { offset: 13, part: '#2' }]);
  });

  it('a tracker tells the replayed batch a record ends in, notes new cuts once, and drops those behind a commit', () => {
    const tracker = new PartitionOffsets('t', 0, 1, [{ offset: 9, part: '' }, { offset: 20, part: '#2' }]);
    expect(tracker.replayCut(cutOf(3, 't/0/3'))).to.deep.equal({ offset: 9, part: '' });
    expect(tracker.replayCut(cutOf(9, 't/0/9'))).to.deep.equal({ offset: 9, part: '' });
    expect(tracker.replayCut(cutOf(20, 't/0/20#1'))).to.deep.equal({ offset: 20, part: '#2' });
    expect(tracker.replayCut(cutOf(20, 't/0/20#3'))).to.equal(undefined);
    // Replayed cuts are known to the commit already; a new one needs a commit.
    expect(tracker.addCut({ offset: 9, part: '' })).to.equal(0);
    expect(tracker.cutsPending).to.equal(false);
    const version = tracker.addCut({ offset: 30, part: '' });
    expect(version).to.equal(1);
    expect(tracker.addCut({ offset: 30, part: '' })).to.equal(1);
    expect(tracker.cutsPending).to.equal(true);
    expect(tracker.cutsFrom(10)).to.deep.equal([{ offset: 20, part: '#2' }, { offset: 30, part: '' }]);
  });
});

describe('Kafka record positions and text', () => {
  it('takes offsets as numbers up to 2^53 - 1 and refuses any past it (a commit must name the exact record)', () => {
    expect(safeOffset('0', 'p')).to.equal(0);
    expect(safeOffset('9007199254740991', 'p')).to.equal(2 ** 53 - 1);
    // 2^53 + 1 reads as 2^53: two offsets would be one number.
    for (const text of ['9007199254740992', '9007199254740993', '9223372036854775807', '-1', 'x']) {
      expect(() => safeOffset(text, 'partition t/0'), text).to.throw(ConnectorError, `partition t/0: offset ${text} is past what this source tracks exactly`);
    }
    // Not retriable: reading the partition again meets the same offset.
    expect(() => safeOffset('9007199254740992', 'p')).to.throw(ConnectorError).with.property('retriable', false);
  });

  it("cuts a whole message at its offset and a part of one at its part, reading a message's position only for a part", () => {
    expect(cutOf(4, 't/0/4')).to.deep.equal({ offset: 4, part: '' });
    expect(cutOf(5, 't/0/5#2')).to.deep.equal({ offset: 5, part: '#2' });
    // From the first '#' on, wherever it is.
    expect(cutOf(5, '#1')).to.deep.equal({ offset: 5, part: '#1' });
    const tracker = new PartitionOffsets('t', 0);
    const recorder = new Recorder();
    const meta = new KafkaRecordMeta('test', 't/0/', 0, 1, tracker, 5);
    Object.defineProperty(meta, 'position', { get: () => expect.fail('a whole message has no part: its position is not read') });
    const whole = new Envelope<unknown>('a\nb', meta, undefined, 3, recorder);
    expect(partPosition(whole)).to.equal('');
    expect(partPosition(whole.map('c'))).to.equal('');
    const parts = new Envelope<unknown>('a\nb', new KafkaRecordMeta('test', 't/0/', 0, 1, tracker, 5), undefined, 3, recorder).split(['a', 'b']);
    expect(parts.map(partPosition)).to.deep.equal(['t/0/5#1', 't/0/5#2']);
  });

  it('decodes keys and headers as UTF-8 text, reusing the text of a header value seen before only when the bytes are the same', () => {
    for (const text of ['', 'k17', 'staylodge', 'é', 'x'.repeat(32), 'y'.repeat(33), 'ü'.repeat(20), '日本']) {
      expect(shortText(Buffer.from(text)), text).to.equal(text);
    }
    expect(shortText(Buffer.from([0x61, 0xff]))).to.equal(Buffer.from([0x61, 0xff]).toString('utf8'));
    const decode = new MessageText();
    expect(decode.headers(undefined)).to.equal(undefined);
    expect(decode.headers({})).to.deep.equal({});
    const values = ['acme', 'acme', 'acmf', 'acm', 'acme', 'é', 'é', 'ée', 'acme'];
    for (const value of values) {
      // A fresh buffer each time, as kafkajs gives: equal bytes, never the same buffer.
      const headers = decode.headers({ vendor: Buffer.from(value), other: [Buffer.from('a'), Buffer.from(value)], text: 'plain', none: undefined });
      expect(headers, value).to.deep.equal({ vendor: value, other: value, text: 'plain' });
    }
    // A byte that is 'é' in Latin-1 but not UTF-8, after 'é' in UTF-8: not the text remembered.
    const latin = new MessageText();
    expect(latin.headers({ vendor: Buffer.from('é') })).to.deep.equal({ vendor: 'é' });
    expect(latin.headers({ vendor: Buffer.from([0xe9]) })).to.deep.equal({ vendor: '\ufffd' });
  });

  it("gives a message the previous message's headers object when they decode alike, name for name, and a new one otherwise", () => {
    const decode = new MessageText();
    // Header sets differing by a value, a byte, a missing or extra name, a repeated name's last value, a non-ASCII value, a name Object.prototype has.
    const pool: (() => Record<string, Buffer | string | (Buffer | string)[] | undefined>)[] = [
      () => ({ vendor: Buffer.from('staylodge') }),
      () => ({ vendor: Buffer.from('staylodgf') }),
      () => ({ vendor: Buffer.from('staylodge'), trace: Buffer.from('t1') }),
      () => ({ trace: Buffer.from('t1') }),
      () => ({ vendor: 'staylodge' }),
      () => ({ vendor: Buffer.from('staylodge'), gone: undefined }),
      () => ({ vendor: [Buffer.from('x'), Buffer.from('staylodge')] }),
      () => ({ vendor: [Buffer.from('staylodge'), Buffer.from('x')] }),
      () => ({ vendor: Buffer.from('é') }),
      () => ({ vendor: Buffer.from([0xff]) }),
      () => ({ constructor: Buffer.from('c') }),
      () => ({}),
    ];
    const expected = (headers: Record<string, Buffer | string | (Buffer | string)[] | undefined>) =>
      Object.fromEntries(
        Object.entries(headers)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => [k, String(Array.isArray(v) ? v[v.length - 1] : v)]),
      );
    let previous: Readonly<Record<string, string>> | undefined;
    let previousExpected: Record<string, string> | undefined;
    let random = 7;
    let reused = 0;
    for (let i = 0; i < 2000; i++) {
      random = (random * 1103515245 + 12345) % 2 ** 31;
      const headers = pool[(random >>> 16) % pool.length]!();
      const text = decode.headers(headers)!;
      const want = expected(headers);
      expect(text, JSON.stringify(want)).to.deep.equal(want);
      expect(Object.isFrozen(text)).to.equal(true);
      // Reused when equal to the previous ones (compared as bytes: values that are ASCII text).
      const same = previousExpected !== undefined && JSON.stringify(previousExpected) === JSON.stringify(want) && Object.keys(want).length > 0 && Object.values(want).every((v) => /^[\x00-\x7f]*$/.test(v));
      if (same) reused++;
      if (same) expect(text, JSON.stringify(want)).to.equal(previous);
      else if (Object.keys(want).length > 0) expect(text, JSON.stringify(want)).to.not.equal(previous);
      previous = text;
      previousExpected = want;
    }
    expect(reused).to.be.greaterThan(50);
  });
});

describe('PartitionOffsets and cuts: edge cases', () => {
  it('compares parts number by number, however many digits, a part with more numbers after its prefix', () => {
    const at = (part: string) => ({ offset: 5, part });
    expect(compareCuts(at('#12'), at('#3'))).to.be.greaterThan(0);
    expect(compareCuts(at('#1#3'), at('#1#2'))).to.be.greaterThan(0);
    expect(compareCuts(at('#1#2'), at('#1'))).to.be.greaterThan(0);
    expect(compareCuts(at('#1'), at('#1#2'))).to.be.lessThan(0);
    expect(compareCuts(at('#2'), at('#2'))).to.equal(0);
  });

  it('reads no cuts for a negative or unsafe commit offset, nor from parts that are not numbers', () => {
    expect(cutsOfMetadata('tributary-cuts/1:0,3', -1)).to.deep.equal([]);
    expect(cutsOfMetadata('tributary-cuts/1:0,3', 2 ** 53)).to.deep.equal([]);
    expect(cutsOfMetadata('tributary-cuts/1:0,3', 1.5)).to.deep.equal([]);
    expect(cutsOfMetadata('tributary-cuts/1:0#1a', 5)).to.deep.equal([]);
    expect(cutsOfMetadata('tributary-cuts/1:0#12', 5)).to.deep.equal([{ offset: 5, part: '#12' }]);
    expect(cutsOfMetadata('tributary-cuts/1:0,3', 0)).to.deep.equal([{ offset: 0, part: '' }, { offset: 3, part: '' }]);
  });

  it('notes a cut before every other in order, and keeps the cut at the commit offset', () => {
    const tracker = new PartitionOffsets('t', 0);
    expect(tracker.addCut({ offset: 8, part: '' })).to.equal(1);
    expect(tracker.addCut({ offset: 3, part: '' })).to.equal(2);
    expect(tracker.addCut({ offset: 3, part: '' })).to.equal(2);
    expect(tracker.addCut({ offset: 5, part: '#2' })).to.equal(3);
    expect(tracker.cutVersion).to.equal(3);
    expect(tracker.cutsFrom(3)).to.deep.equal([{ offset: 3, part: '' }, { offset: 5, part: '#2' }, { offset: 8, part: '' }]);
    expect(tracker.cutsFrom(5)).to.deep.equal([{ offset: 5, part: '#2' }, { offset: 8, part: '' }]);
  });

  it('knows no offset before any is emitted, none missing, and none once retired', () => {
    const tracker = new PartitionOffsets('t', 0);
    expect(tracker.emittedAs(0)).to.equal(false);
    expect(tracker.emittedAs(1)).to.equal(false);
    expect(tracker.toCommit()).to.equal(undefined);
    const records = [{ n: 1 }, { n: 2 }, { n: 3 }];
    records.forEach((r, i) => tracker.emitted(i + 1, r));
    expect(tracker.emittedAs(7)).to.equal(false);
    const bare = new PartitionOffsets('t', 0);
    for (const offset of [1, 2, 3]) bare.emitted(offset);
    expect(bare.emittedAs(7)).to.equal(false);
    expect(bare.emittedAs(2)).to.equal(true);
    expect(tracker.emittedAs(0, records[0])).to.equal(false);
    expect(tracker.emittedAs(2, records[1])).to.equal(true);
    expect(tracker.emittedAs(2, records[0])).to.equal(false);
    // Settled behind the commit point: let go.
    expect(tracker.settled(1, records[0])).to.equal(true);
    expect(tracker.settled(1, records[0])).to.equal(false);
    expect(tracker.toCommit()).to.equal(2);
    tracker.committed = 2;
    expect(tracker.toCommit()).to.equal(undefined);
    expect(tracker.settled(2, records[1])).to.equal(true);
    expect(tracker.toCommit()).to.equal(3);
    expect(tracker.retire()).to.equal(3);
    expect(tracker.emittedAs(3, records[2])).to.equal(false);
    expect(tracker.settled(3, records[2])).to.equal(false);
    expect(tracker.commitPoint).to.equal(3);
    expect(tracker.toCommit()).to.equal(undefined);
  });

  it('holds the commit at a nacked record, first or later, and never nacks a settled one', () => {
    const first = new PartitionOffsets('t', 0);
    first.emitted(1);
    first.emitted(2);
    first.nacked(1);
    expect(first.settled(1)).to.equal(false);
    expect(first.settled(2)).to.equal(false);
    expect(first.commitPoint).to.equal(1);
    const later = new PartitionOffsets('t', 0);
    for (const offset of [1, 2, 3]) later.emitted(offset);
    expect(later.settled(2)).to.equal(false);
    later.nacked(2);
    later.nacked(9);
    expect(later.settled(1)).to.equal(true);
    expect(later.commitPoint).to.equal(3);
    later.nacked(3);
    expect(later.settled(3)).to.equal(false);
    expect(later.commitPoint).to.equal(3);
  });
});
