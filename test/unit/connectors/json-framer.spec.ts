import { expect } from 'chai';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { JsonArrayFramer, LineFramer, refusedFrame, RefusedBytes, type Frame } from '../../../formats/framing';
import { seeded } from '../../helpers';

const MAX = 40;
const DEPTH = 3;

interface Expected {
  start: number;
  end: number;
  code?: string;
}

/** A JSON value's text, with how deep it nests. */
const jsonValue: fc.Arbitrary<{ text: string; depth: number }> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(fc.integer(), fc.constantFrom(true, false, null), fc.double({ noNaN: true, noDefaultInfinity: true })).map((v) => ({ text: JSON.stringify(v), depth: 0 })),
    fc.string({ unit: fc.constantFrom('a', '"', '\\', '[', ']', '{', '}', ',', '\n', 'é', '𝄞') }).map((s) => ({ text: JSON.stringify(s), depth: 0 })),
    fc.array(tie('value') as fc.Arbitrary<{ text: string; depth: number }>, { maxLength: 3 }).chain((items) =>
      fc.constantFrom(' ', '\n', '', '\r\n').map((space) => ({ text: `[${space}${items.map((i) => i.text).join(`,${space}`)}]`, depth: 1 + Math.max(0, ...items.map((i) => i.depth)) })),
    ),
    fc.array(tie('value') as fc.Arbitrary<{ text: string; depth: number }>, { maxLength: 3 }).map((items) => ({ text: `{${items.map((i, k) => `"k${k}":${i.text}`).join(',')}}`, depth: 1 + Math.max(0, ...items.map((i) => i.depth)) })),
  ),
})).value;

const space = fc.constantFrom('', ' ', '\n', '\r\n', '\t');

/** A JSON array, maybe cut short, maybe with something after it; the frames it must give. */
const arrayFile = fc
  .record({
    bom: fc.boolean(),
    lead: space,
    items: fc.array(fc.tuple(jsonValue, space, space), { maxLength: 8 }),
    tail: fc.constantFrom('', '\n', ' x', '\n]', ''),
    cut: fc.option(fc.nat(), { freq: 3 }),
  })
  .map(({ bom, lead, items, tail, cut }) => {
    const parts: string[] = [bom ? '\ufeff' : '', lead, '['];
    const elements: Expected[] = [];
    let at = Buffer.byteLength(parts.join(''));
    items.forEach(([value, before, after], i) => {
      if (i > 0) {
        parts.push(',');
        at += 1;
      }
      parts.push(before);
      at += Buffer.byteLength(before);
      const bytes = Buffer.byteLength(value.text);
      // Both too long and too deep: too long, however it is cut into reads.
      elements.push({ start: at, end: at + bytes, code: bytes > MAX ? 'RECORD_TOO_LARGE' : value.depth > DEPTH ? 'TOO_DEEP' : undefined });
      parts.push(value.text, after);
      at += bytes + Buffer.byteLength(after);
    });
    parts.push(']', tail);
    let bytes = Buffer.from(parts.join(''));
    if (cut !== null) bytes = bytes.subarray(0, cut % (bytes.length + 1));
    return { bytes, elements, closedAt: at, tail };
  });

function frameAll(framer: { push(b: Buffer): Frame[]; end(): Frame[] }, bytes: Buffer, cuts: number[]): Frame[] {
  const frames: Frame[] = [];
  let at = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b).concat(bytes.length)) {
    if (cut < at) continue;
    frames.push(...framer.push(Buffer.from(bytes.subarray(at, cut))));
    at = cut;
  }
  frames.push(...framer.end());
  return frames;
}

const lineOf = (bytes: Buffer, offset: number) => bytes.subarray(0, offset).toString('latin1').split('\n').length;

describe('JsonArrayFramer: elements against a reference, however the input is cut (property, seeded)', () => {
  it('frames each element with its offset and line, refuses the deep and the long, and says how the array ends', () => {
    fc.assert(
      fc.property(arrayFile, fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), ({ bytes, elements, closedAt, tail }, cuts, bytewise) => {
        const n = bytes.length;
        const chunked = frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), bytes, bytewise ? Array.from({ length: n }, (_, i) => i) : cuts.map((c) => c % (n + 1)));
        const whole = frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), bytes, []);
        const seen = (frames: Frame[]) => frames.map((f) => ({ offset: f.offset, line: f.line, size: f.size ?? f.bytes.length, code: f.error?.code, message: f.error?.message, bytes: f.bytes.toString('hex'), sha: f.sha256, utf8: f.utf8 }));
        expect(seen(chunked)).to.deep.equal(seen(whole));
        const complete = elements.filter((e) => e.end <= n && bytes.subarray(e.end).toString().trimStart() !== '');
        const cutShort = n < closedAt + 1;
        // Every element the file holds whole, as written or refused.
        complete.forEach((e, i) => {
          const f = chunked[i]!;
          expect({ offset: f.offset, line: f.line, code: f.error?.code }, `element ${i}`).to.deep.equal({ offset: e.start, line: lineOf(bytes, e.start), code: e.code });
          const raw = bytes.subarray(e.start, e.end);
          expect(f.size ?? f.bytes.length).to.equal(raw.length);
          if (raw.length > MAX) {
            expect(f.bytes.equals(raw.subarray(0, 1024))).to.equal(true);
            expect(f.sha256).to.equal(createHash('sha256').update(raw).digest('hex'));
          } else {
            expect(f.bytes.equals(raw), `element ${i} bytes`).to.equal(true);
            expect(f.utf8).to.equal(true);
          }
          if (e.code === 'TOO_DEEP') expect(f.error!.message).to.equal(`element at byte ${e.start} nests deeper than ${DEPTH} levels`);
          if (e.code === 'RECORD_TOO_LARGE') expect(f.error!.message).to.equal(`element at byte ${e.start} is longer than ${MAX} bytes`);
        });
        const rest = chunked.slice(complete.length);
        const after = bytes.subarray(closedAt + 1).toString();
        void tail;
        if (!cutShort) {
          if (after.trim() === '') expect(rest).to.deep.equal([]);
          else {
            const at = closedAt + 1 + after.indexOf(after.trim()[0]!);
            expect(rest.map((f) => [f.offset, f.line, f.error?.code, f.error?.message, f.bytes.toString()])).to.deep.equal([[at, lineOf(bytes, at), 'NOT_ARRAY', `unexpected data after the closing ']' at byte ${at}`, bytes.subarray(at).toString()]]);
          }
        } else {
          // Cut short: the element cut off (its bytes), then or else the missing ']'.
          const last = rest[rest.length - 1]!;
          expect(last.error?.code, JSON.stringify(rest.map((f) => f.error))).to.be.oneOf(['TRUNCATED', 'EMPTY_FILE', 'NOT_ARRAY']);
          if (n === 0) expect(rest.map((f) => [f.offset, f.line, f.error?.code, f.error?.message])).to.deep.equal([[0, 1, 'EMPTY_FILE', 'empty file: expected a JSON array']]);
        }
      }),
      seeded(21, 300),
    );
  });

  it('refuses what is not a JSON array from its first byte, and an empty file as such', () => {
    const frames = (text: string | Buffer) => frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), Buffer.from(text), []).map((f) => [f.offset, f.line, f.error?.code, f.error?.message, f.bytes.toString()]);
    expect(frames('')).to.deep.equal([[0, 1, 'EMPTY_FILE', 'empty file: expected a JSON array', '']]);
    expect(frames('\ufeff')).to.deep.equal([[3, 1, 'EMPTY_FILE', 'empty file: expected a JSON array', '']]);
    expect(frames(' \n')).to.deep.equal([[2, 2, 'NOT_ARRAY', 'no JSON array found', '']]);
    expect(frames('\n {"a":1}\n')).to.deep.equal([[2, 2, 'NOT_ARRAY', "expected '[' at byte 2: not a JSON array", '{"a":1}\n']]);
    // A BOM's bytes only count as one at the very start.
    expect(frames(Buffer.from([0x20, 0xef, 0xbb, 0xbf, 0x5b, 0x5d]))).to.deep.equal([[1, 1, 'NOT_ARRAY', "expected '[' at byte 1: not a JSON array", Buffer.from([0xef, 0xbb, 0xbf, 0x5b, 0x5d]).toString()]]);
    // Part of a BOM is not one: the file is no JSON array, and its bytes all go to the dead letter.
    expect(frames(Buffer.from([0xef, 0x5b, 0x5d]))).to.deep.equal([[0, 1, 'NOT_ARRAY', "expected '[' at byte 0: not a JSON array", Buffer.from([0xef, 0x5b, 0x5d]).toString()]]);
    expect(frames(Buffer.from([0xef, 0xbb, 0x5b, 0x31, 0x5d]))).to.deep.equal([[0, 1, 'NOT_ARRAY', "expected '[' at byte 0: not a JSON array", Buffer.from([0xef, 0xbb, 0x5b, 0x31, 0x5d]).toString()]]);
    expect(frames(Buffer.from([0xef, 0xbb]))).to.deep.equal([[0, 1, 'NOT_ARRAY', 'no JSON array found', Buffer.from([0xef, 0xbb]).toString()]]);
    expect(frames(Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0x5b, 0x5d]))).to.deep.equal([[3, 1, 'NOT_ARRAY', "expected '[' at byte 3: not a JSON array", Buffer.from([0xef, 0x5b, 0x5d]).toString()]]);
    // The same, a byte per read.
    const byByte = (bytes: number[]) => frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), Buffer.from(bytes), bytes.map((_, i) => i)).map((f) => [f.offset, f.error?.code, f.bytes.toString('hex')]);
    expect(byByte([0xef, 0xbb, 0x5b, 0x5d])).to.deep.equal([[0, 'NOT_ARRAY', 'efbb5b5d']]);
    expect(byByte([0xef, 0xbb, 0xbf, 0x5b, 0x31, 0x5d])).to.deep.equal([[4, undefined, '31']]);
    expect(frames('[1 2]')).to.deep.equal([
      [1, 1, undefined, undefined, '1'],
      [3, 1, 'NOT_ARRAY', "expected ',' or ']' at byte 3", '2]'],
    ]);
    expect(frames('[]')).to.deep.equal([]);
    expect(frames('[,]')[0]!.slice(0, 3)).to.deep.equal([1, 1, undefined]);
    expect(frames('[1,\n2')).to.deep.equal([
      [1, 1, undefined, undefined, '1'],
      [4, 2, undefined, undefined, '2'],
      [5, 2, 'TRUNCATED', "truncated JSON array: the closing ']' is missing", ''],
    ]);
    expect(frames('[1,\n')).to.deep.equal([
      [1, 1, undefined, undefined, '1'],
      [4, 2, 'TRUNCATED', "truncated JSON array: the closing ']' is missing", ''],
    ]);
    expect(frames('[1,\n{"a":\n[')).to.deep.equal([
      [1, 1, undefined, undefined, '1'],
      [4, 2, 'TRUNCATED', 'truncated JSON array: the element at byte 4 is cut off', '{"a":\n['],
    ]);
    expect(frames('[\n"a\\"\n')).to.deep.equal([[2, 2, 'TRUNCATED', 'truncated JSON array: the element at byte 2 is cut off', '"a\\"\n']]);
  });

  it('takes an element exactly at the size and depth limits, and refuses one past either, whole or split', () => {
    const at = '"' + 'a'.repeat(MAX - 2) + '"';
    const deep = '[[[1]]]';
    for (const [element, code] of [
      [at, undefined],
      [`"${'a'.repeat(MAX - 1)}"`, 'RECORD_TOO_LARGE'],
      [deep, undefined],
      [`[${deep}]`, 'TOO_DEEP'],
    ] as const) {
      const text = Buffer.from(`[${element}]`);
      for (const cut of [0, 2, text.length - 2]) {
        const framer = new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH });
        const frames = [...framer.push(text.subarray(0, cut)), ...framer.push(text.subarray(cut)), ...framer.end()];
        expect(frames.map((f) => [f.offset, f.error?.code, f.size ?? f.bytes.length]), `${element} cut at ${cut}`).to.deep.equal([[1, code, element.length]]);
      }
    }
    // A comma before the closing bracket does not end the array.
    const trailing = frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), Buffer.from('[1,]'), []);
    expect(trailing.some((f) => f.error !== undefined)).to.equal(true);
    expect(frameAll(new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH }), Buffer.from(''), [])[0]!.utf8).to.equal(true);
  });

  it('keeps every byte of a refused rest pushed after the array broke', () => {
    const framer = new JsonArrayFramer({ maxRecordBytes: MAX, maxDepth: DEPTH });
    expect(framer.push(Buffer.from('[1] x'))).to.have.length(1);
    expect(framer.push(Buffer.from('yz'))).to.deep.equal([]);
    expect(framer.push(Buffer.from('\nw'))).to.deep.equal([]);
    const [rest] = framer.end();
    expect([rest!.offset, rest!.line, rest!.bytes.toString(), rest!.size]).to.deep.equal([4, 1, 'xyz\nw', 5]);
  });
});

describe('RefusedBytes: a refused stretch, whole up to its limit, else its head and hash', () => {
  it('keeps a stretch at the limit whole and one byte over as head, length and hash, however it is added', () => {
    const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    for (const keep of [10, 1024, 2000]) {
      for (const length of [keep - 1, keep, keep + 1, keep + 1500]) {
        const stretch = Buffer.from(Array.from({ length }, (_, i) => (i * 7) % 251));
        for (const parts of [1, 3, 7]) {
          const refused = new RefusedBytes(keep);
          const step = Math.ceil(length / parts);
          for (let at = 0; at <= length; at += step) refused.add(stretch.subarray(at, Math.min(at + step, length)));
          refused.add(Buffer.alloc(0));
          expect(refused.length).to.equal(length);
          const frame = refused.frame(9, 2, { code: 'X', message: 'y' });
          const what = `keep ${keep}, ${length} bytes in ${parts}`;
          expect([frame.offset, frame.line, frame.size, frame.error]).to.deep.equal([9, 2, length, { code: 'X', message: 'y' }]);
          if (length > keep) {
            expect(frame.bytes.equals(stretch.subarray(0, 1024)), what).to.equal(true);
            expect(frame.sha256, what).to.equal(hash(stretch));
          } else {
            expect(frame.bytes.equals(stretch), what).to.equal(true);
            expect(frame.sha256, what).to.equal(undefined);
          }
          expect(refusedFrame(stretch, 9, 2, { code: 'X', message: 'y' }, keep)).to.deep.equal(frame);
        }
      }
    }
    // An empty stretch still stands for one byte of input; its bytes say whether they are UTF-8.
    expect(new RefusedBytes(10).frame(0, 1, { code: 'X', message: 'y' }).size).to.equal(1);
    expect(refusedFrame(Buffer.from([0xff, 0x41]), 0, 1, { code: 'X', message: 'y' }, 10).utf8).to.equal(false);
  });
});

describe('LineFramer: hostile lines', () => {
  const limits = { maxRecordBytes: 64, maxDepth: 8 };
  const seen = (frames: Frame[]) => frames.map((f) => [f.offset, f.line, f.text ?? f.bytes.toString('latin1'), f.size ?? f.bytes.length, f.utf8, f.error?.code, f.sha256 !== undefined]);

  it('refuses a line over the limit with every byte of it but its CR, however it is cut', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.oneof(fc.integer({ min: 60, max: 70 }), fc.integer({ min: 1020, max: 1100 }), fc.nat(5)), fc.constantFrom('\n', '\r\n'), fc.constantFrom('x', '\r', ' ', '\t', 'é')), { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.boolean(),
        (lines, cuts, endBreak) => {
          const texts = lines.map(([n, , c]) => (c === 'é' ? 'é'.repeat(Math.ceil(n / 2)) : c.repeat(n)));
          const text = texts.map((t, i) => t + (i < lines.length - 1 || endBreak ? lines[i]![1] : '')).join('');
          const bytes = Buffer.from(text);
          const frames = frameAll(new LineFramer(limits), bytes, cuts.map((c) => c % (bytes.length + 1)));
          const expected: unknown[] = [];
          let at = 0;
          texts.forEach((t, i) => {
            const body = Buffer.from(t);
            const brk = i < lines.length - 1 || endBreak ? lines[i]![1] : '';
            const line = Buffer.from(t + brk.replace('\n', ''));
            const kept = line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, -1) : line;
            if (kept.length > 64) expected.push([at, i + 1, kept.subarray(0, 1024).toString('latin1'), kept.length, true, 'RECORD_TOO_LARGE', true]);
            else if (/[^ \t\r]/.test(kept.toString())) expected.push([at, i + 1, kept.toString(/é/.test(t) ? 'utf8' : 'latin1'), kept.length, true, undefined, false]);
            at += body.length + Buffer.byteLength(lines[i]![1]);
          });
          const got = seen(frames).map((f) => (typeof f[2] === 'string' && /[^\x00-\x7f]/.test(f[2]) && f[5] === undefined ? [f[0], f[1], Buffer.from(f[2], 'latin1').toString('utf8') === f[2] ? f[2] : Buffer.from(f[2], 'latin1').toString('utf8'), ...f.slice(3)] : f));
          expect(got).to.deep.equal(expected);
          for (const f of frames) if (f.sha256) expect(f.size).to.be.greaterThan(64);
        },
      ),
      seeded(5, 300),
    );
  });

  it('drops a BOM only at the very start, and tells invalid UTF-8 at the end of the file', () => {
    const frames = (...chunks: (string | number[])[]) => {
      const framer = new LineFramer(limits);
      return seen(chunks.flatMap((c) => framer.push(Buffer.from(c as string))).concat(framer.end()));
    };
    expect(frames([0xef, 0xbb, 0xbf, 0x61, 0x0a])).to.deep.equal([[3, 1, 'a', 1, true, undefined, false]]);
    expect(frames([0xef, 0x61, 0x0a])).to.deep.equal([[0, 1, '\xefa', 2, false, undefined, false]]);
    expect(frames([0xef, 0xbb, 0x61, 0x0a])).to.deep.equal([[0, 1, '\xef\xbba', 3, false, undefined, false]]);
    expect(frames([0xef, 0xbb, 0xbf])).to.deep.equal([]);
    expect(frames('a\n', [0xef, 0xbb, 0xbf, 0x62, 0x0a])).to.deep.equal([
      [0, 1, 'a', 1, true, undefined, false],
      [2, 2, '\xef\xbb\xbfb', 4, true, undefined, false],
    ]);
    expect(frames('a\n', [0xff, 0x62])).to.deep.equal([
      [0, 1, 'a', 1, true, undefined, false],
      [2, 2, '\xffb', 2, false, undefined, false],
    ]);
    expect(frames('a\n', 'b')).to.deep.equal([
      [0, 1, 'a', 1, true, undefined, false],
      [2, 2, 'b', 1, true, undefined, false],
    ]);
    expect(frames(' \r \n\r\n\t\n', 'x\r\n')).to.deep.equal([[8, 4, 'x', 1, true, undefined, false]]);
    // At the limit, its CRLF split between reads: the CR is not part of the line.
    const full = 'x'.repeat(64);
    expect(frames(`${full}\r`, '\nz\n')).to.deep.equal([
      [0, 1, full, 64, true, undefined, false],
      [66, 2, 'z', 1, true, undefined, false],
    ]);
    expect(frames(`${full}x\r`, '\nz\n')).to.deep.equal([
      [0, 1, `${full}x`, 65, true, 'RECORD_TOO_LARGE', true],
      [67, 2, 'z', 1, true, undefined, false],
    ]);
    expect(frames(`${full}x\r`, 'y\r')).to.deep.equal([[0, 1, `${full}x\ry`, 67, true, 'RECORD_TOO_LARGE', true]]);
  });

  it('skips whole lines the caller framed, and only between lines', () => {
    const framer = new LineFramer(limits);
    expect(seen(framer.push(Buffer.from('a\n')))).to.deep.equal([[0, 1, 'a', 1, true, undefined, false]]);
    expect(framer.skip(10, 3)).to.equal(2);
    expect(seen(framer.push(Buffer.from('b\nc')))).to.deep.equal([[12, 5, 'b', 1, true, undefined, false]]);
    expect(() => framer.skip(1, 1)).to.throw('LineFramer.skip inside a line');
    const overlong = new LineFramer(limits);
    overlong.push(Buffer.from('y'.repeat(70)));
    expect(() => overlong.skip(1, 1)).to.throw('LineFramer.skip inside a line');
  });
});
