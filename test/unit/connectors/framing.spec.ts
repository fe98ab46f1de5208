import { expect } from 'chai';
import fc from 'fast-check';
import { LineFramer, type Frame } from '../../../formats/framing';

/** What a frame says, whichever way the framer carried the record. */
function seen(frames: Frame[]) {
  return frames.map((f) => ({
    text: f.text ?? f.bytes.toString('utf8'),
    offset: f.offset,
    line: f.line,
    size: f.size ?? f.bytes.length,
    error: f.error?.code,
  }));
}

/** The frames of `input` fed in chunks cut at `cuts`. */
function framed(input: Buffer, cuts: number[], maxRecordBytes = 64): ReturnType<typeof seen> {
  const framer = new LineFramer({ maxRecordBytes, maxDepth: 64 });
  const frames: Frame[] = [];
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b).concat(input.length)) {
    if (cut < at) continue;
    frames.push(...framer.push(input.subarray(at, cut)));
    at = cut;
  }
  frames.push(...framer.end());
  return seen(frames);
}

describe('LineFramer', () => {
  it('frames every line with its byte offset and line number, however the input is cut', () => {
    const line = fc.oneof(
      fc.stringMatching(/^[ -~]{0,80}$/), // ASCII, some longer than the limit
      fc.string({ unit: 'grapheme', maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, '')), // any Unicode
      fc.constantFrom('', ' \t', '{"a":1}\r'),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 30 }), fc.array(fc.nat(3000), { maxLength: 6 }), fc.boolean(), (lines, cuts, bom) => {
        const input = Buffer.concat([Buffer.from(bom ? [0xef, 0xbb, 0xbf] : []), Buffer.from(lines.join('\n'))]);
        const frames = framed(input, cuts.map((c) => c % (input.length + 1)));
        // The same input in one piece frames the same.
        expect(frames).to.deep.equal(framed(input, []));
        // Each frame is its line: offsets point at it, blank lines and CRs dropped, long lines refused.
        let offset = bom ? 3 : 0;
        const expected: ReturnType<typeof seen> = [];
        lines.forEach((text, i) => {
          const bytes = Buffer.byteLength(text);
          const body = text.endsWith('\r') ? text.slice(0, -1) : text;
          const size = Buffer.byteLength(body);
          if (size > 64) expected.push({ text: Buffer.from(body).subarray(0, 1024).toString('utf8'), offset, line: i + 1, size: Math.min(size, 1024), error: 'RECORD_TOO_LARGE' });
          else if (/[^ \t\r]/.test(body)) expected.push({ text: body, offset, line: i + 1, size, error: undefined });
          offset += bytes + 1;
        });
        const comparable = (list: ReturnType<typeof seen>) => list.map((f) => (f.error ? { offset: f.offset, line: f.line, error: f.error } : f));
        expect(comparable(frames)).to.deep.equal(comparable(expected));
      }),
      { numRuns: 500 },
    );
  });

  it('drops only a whole byte order mark: a first line starting with part of one keeps every byte', () => {
    for (const head of [[0x61, 0x62, 0xbf], [0x61, 0xbb, 0xbf], [0xef, 0x62, 0xbf], [0xef, 0xbb, 0x63]]) {
      const record = Buffer.concat([Buffer.from(head), Buffer.from('x')]);
      const framer = new LineFramer({ maxRecordBytes: 64, maxDepth: 64 });
      const frames = [...framer.push(Buffer.concat([record, Buffer.from('\n')])), ...framer.end()];
      expect(frames.map((f) => ({ bytes: f.bytes, offset: f.offset, line: f.line }))).to.deep.equal([{ bytes: record, offset: 0, line: 1 }]);
    }
  });
});
