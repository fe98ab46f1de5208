import { expect } from 'chai';
import { createHash } from 'node:crypto';
import type { FileEncoding } from '../../../formats/encoding';
import type { Frame } from '../../../formats/framing';
import { resolveXmlOptions, XmlFramer, type XmlOptions } from '../../../formats/xml';

type FramingOptions = { xml?: Partial<XmlOptions>; maxRecordBytes?: number; maxDepth?: number; chunk?: number; encoding?: FileEncoding; bom?: number };

/** Every frame of `input` pushed in `chunk`-byte pieces. */
function framed(input: string | Buffer, { xml = {}, maxRecordBytes = 1024 * 1024, maxDepth = 64, chunk = Infinity, encoding = 'utf-8', bom = 0 }: FramingOptions = {}): Frame[] {
  const framer = new XmlFramer(resolveXmlOptions({ record: 'B', ...xml }), { maxRecordBytes, maxDepth }, encoding, bom);
  const bytes = typeof input === 'string' ? Buffer.from(input) : input;
  const out: Frame[] = [];
  for (let at = 0; at < bytes.length; at += chunk) out.push(...framer.push(bytes.subarray(at, at + chunk)));
  out.push(...framer.end());
  return out;
}

/** Every frame of `input`, refused bytes as text. */
function frames(input: string | Buffer, options: FramingOptions = {}) {
  return framed(input, options).map((frame) => ({ ...frame, bytes: frame.bytes.toString() }));
}

/**
 * Each frame of `file` as [code or value, line, the file's bytes at its offset and size
 * (hex)], after checking that a dead letter's bytes are those very bytes.
 */
function sliced(file: Buffer, options: FramingOptions): [unknown, number, string][] {
  return framed(file, options).map((frame) => {
    const bytes = file.subarray(frame.offset, frame.offset + frame.size!);
    if (frame.error) expect(frame.bytes.toString('hex'), frame.error.message).to.equal(bytes.toString('hex'));
    return [frame.error ? [frame.error.code, frame.error.message] : frame.value, frame.line, bytes.toString('hex')];
  });
}

const hex = (...parts: (string | number[])[]) => Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part)))).toString('hex');

const record = (offset: number, line: number, size: number, value: unknown) => ({ bytes: '', offset, line, utf8: true, size, value });
const fileError = (offset: number, line: number, code: string, message: string) => ({ bytes: '', offset, line, utf8: true, size: 1, error: { code, message } });
const refused = (bytes: string, offset: number, line: number, code: string, message: string) => ({ bytes, offset, line, utf8: true, size: Buffer.byteLength(bytes), error: { code, message } });

describe('XML framer', () => {
  it('makes each record element an object: attributes but namespace declarations, children, repeats as arrays, text beside children', () => {
    const input = '<r>\n<B a="1" xmlns="u" xmlns:p="v" p:c="2">t<x>1</x><x>2</x><x>3</x><p:y/> </B>\n<p:B>z</p:B><MyB>no</MyB><p:C>no</p:C><B><e> </e>\n</B></r>';
    const b1 = input.indexOf('<B a');
    const b2 = input.indexOf('<p:B>');
    const b3 = input.lastIndexOf('<B>');
    expect(frames(input)).to.deep.equal([
      record(b1, 2, input.indexOf('\n<p:B') - b1, { '@a': '1', '@c': '2', x: ['1', '2', '3'], y: '', '#text': 't' }),
      record(b2, 3, '<p:B>z</p:B>'.length, 'z'),
      record(b3, 3, '<B><e> </e>\n</B>'.length, { e: '' }),
    ]);
  });

  it('keeps elements named __proto__, repeated too, as own keys', () => {
    const [frame] = frames('<r><B><__proto__>a</__proto__><__proto__>b</__proto__></B></r>');
    expect(JSON.stringify(frame!.value)).to.equal('{"__proto__":["a","b"]}');
    expect(Object.getPrototypeOf(frame!.value)).to.equal(Object.prototype);
  });

  it('refuses a record whose start tag sax had to mend', () => {
    const input = '<r><B a>1</B><B>2</B></r>';
    expect(frames(input)).to.deep.equal([refused('<B a>1</B>', 3, 1, 'PARSE_XML', 'record at line 1: Attribute without value'), record(13, 1, 8, '2')]);
  });

  it('takes an element named as the record inside a record as a child, and nothing after it as a record', () => {
    expect(frames('<r><B><B>x</B></B><C>y</C></r>')).to.deep.equal([record(3, 1, '<B><B>x</B></B>'.length, { B: 'x' })]);
    expect(frames('<r><B>&foo;<B>x</B></B><C>y</C></r>').map((f) => f.error?.code ?? f.value)).to.deep.equal(['XML_ENTITY']);
  });

  it('keeps prefixes, makes named elements arrays, keeps whitespace, and names keys as asked', () => {
    const input = '<r><p:B p:c="2" d="3">\n<p:x>1</p:x><y> 2 </y></p:B><B>no</B><q:B>no</q:B></r>';
    expect(frames(input, { xml: { record: 'p:B', keepPrefixes: true, arrays: ['p:x'], trim: false, attributePrefix: '_', textKey: 'v' } }).map((f) => f.value)).to.deep.equal([
      { '_p:c': '2', _d: '3', 'p:x': ['1'], y: ' 2 ', v: '\n' },
    ]);
  });

  it('counts offsets in bytes across chunks: multi-byte UTF-8, and UTF-16 after a BOM', () => {
    const text = '<r>é€<B>𝄞</B>\n<B x="ü">2</B></r>';
    const utf8 = Buffer.from(text);
    for (const chunk of [1, 2, 5, Infinity]) {
      expect(frames(utf8, { chunk }).map((f) => [f.offset, f.line, f.size]), `${chunk}-byte chunks`).to.deep.equal([
        [utf8.indexOf('<B>'), 1, Buffer.byteLength('<B>𝄞</B>')],
        [utf8.indexOf('<B x'), 2, Buffer.byteLength('<B x="ü">2</B>')],
      ]);
    }
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    expect(frames(utf16, { encoding: 'utf-16le', bom: 2, chunk: 3 }).map((f) => [f.offset, f.size, f.value])).to.deep.equal([
      [2 + 2 * text.indexOf('<B>'), 2 * '<B>𝄞</B>'.length, '𝄞'],
      [2 + 2 * text.indexOf('<B x'), 2 * '<B x="ü">2</B>'.length, { '@x': 'ü', '#text': '2' }],
    ]);
  });

  it('refuses a record over maxRecordBytes whole, by its text or its attributes, and reads the next', () => {
    const big = `<B>${'y'.repeat(50)}</B>`;
    const attr = `<B a="${'v'.repeat(30)}"/>`;
    const input = `<r>\n<B>x</B>${big}\n${attr}<B>ok</B></r>`;
    for (const chunk of [1, 16, Infinity]) {
      const [first, ...rest] = frames(input, { maxRecordBytes: 20, chunk });
      expect(first, `${chunk}-byte chunks`).to.deep.equal(record(4, 2, 8, 'x'));
      expect(rest.map(({ sha256, ...frame }) => frame)).to.deep.equal([
        refused(big, input.indexOf(big), 2, 'RECORD_TOO_LARGE', 'record at line 2 is longer than 20 bytes'),
        refused(attr, input.indexOf(attr), 3, 'RECORD_TOO_LARGE', 'record at line 3 is longer than 20 bytes'),
        record(input.lastIndexOf('<B>'), 3, 9, 'ok'),
      ]);
      expect(rest[0]!.sha256).to.equal(createHash('sha256').update(big).digest('hex'));
    }
  });

  it('gives up on a document nested deeper than four times maxDepth, refusing the rest of the file from the open record or where it stopped', () => {
    const outside = `<r>${'<a>'.repeat(8)}<B>1</B>${'</a>'.repeat(8)}</r>`;
    expect(frames(outside, { maxDepth: 2 })).to.deep.equal([
      refused(outside.slice(3 + 8 * 3), 3 + 8 * 3, 1, 'FILE_TOO_DEEP', 'line 1: elements nested deeper than 8 levels: the rest of the file is not read'),
    ]);
    const inside = `<r>\n<B>1</B><B>${'<a>'.repeat(9)}1${'</a>'.repeat(9)}</B><B>3</B></r>`;
    expect(frames(inside, { maxDepth: 2, chunk: 4 })).to.deep.equal([
      record(4, 2, 8, '1'),
      refused(inside.slice(12), 12, 2, 'FILE_TOO_DEEP', 'record at line 2: elements nested deeper than 8 levels: the rest of the file is not read'),
    ]);
  });

  it('counts the content of a record against maxRecordBytes, up to the limit itself', () => {
    const input = `<r><B>${'y'.repeat(20)}</B><B>${'y'.repeat(21)}</B></r>`;
    expect(frames(input, { maxRecordBytes: 20 }).map((f) => f.error?.code ?? f.value)).to.deep.equal(['y'.repeat(20), 'RECORD_TOO_LARGE']);
  });

  it('counts depth over open elements only: records side by side never nest', () => {
    expect(frames(`<r>${'<B>1</B>'.repeat(6)}</r>`, { maxDepth: 1 }).map((f) => f.value)).to.deep.equal(['1', '1', '1', '1', '1', '1']);
  });

  it('refuses a record nested deeper than maxDepth and reads on', () => {
    const deep = '<B><a><a>x</a></a></B>';
    const input = `<r>${deep}<B><a>y</a></B></r>`;
    expect(frames(input, { maxDepth: 2 })).to.deep.equal([
      refused(deep, 3, 1, 'TOO_DEEP', 'record at line 1 nests deeper than 2 levels'),
      record(3 + deep.length, 1, '<B><a>y</a></B>'.length, { a: 'y' }),
    ]);
  });

  it('reports an over-long sax buffer outside records once per kind, and in a record start tag as the record refused', () => {
    const comment = `<!-- ${'c'.repeat(70_000)} -->`;
    const start = `<B a="${'v'.repeat(70_000)}">2</B>`;
    const input = `<r>${comment}${comment}<B>1</B>${comment}${start}<B>3</B></r>`;
    const got = frames(input, { chunk: 4096 });
    expect(got.map((f) => [f.error?.code ?? f.value, f.offset, f.error?.message])).to.deep.equal([
      ['XML_LIMIT', 69_632, 'line 1: XML comment longer than 65536 characters'],
      ['1', input.indexOf('<B>1'), undefined],
      ['RECORD_TOO_LARGE', input.indexOf('<B a='), 'record at line 1: XML attribValue longer than 65536 characters'],
      ['3', input.indexOf('<B>3'), undefined],
    ]);
    expect(got[2]!.size).to.equal(start.length);
    // Inside a record: the record is refused.
    const inside = `<r><B>1${comment}</B><B>2</B></r>`;
    expect(frames(inside, { chunk: 4096 }).map((f) => [f.error?.code ?? f.value, f.offset, f.size, f.error?.message])).to.deep.equal([
      ['RECORD_TOO_LARGE', 3, `<B>1${comment}</B>`.length, 'record at line 1: XML comment longer than 65536 characters'],
      ['2', inside.indexOf('<B>2'), 8, undefined],
    ]);
  });

  it('reports problems outside records once each, at most ten, and each problem in a record once', () => {
    const input = '<r><B>a&foo;b&baz;</B>&bar;&bar;<B>2</B></r>';
    expect(frames(input)).to.deep.equal([
      refused('<B>a&foo;b&baz;</B>', 3, 1, 'XML_ENTITY', "record at line 1: entity &foo; is not one of XML's own and is not expanded (DTDs are never read)"),
      fileError(27, 1, 'XML_ENTITY', "line 1: entity &bar; is not one of XML's own and is not expanded (DTDs are never read)"),
      record(32, 1, 8, '2'),
    ]);
    // The first problem of a record is its dead letter's: nesting past maxDepth after it changes nothing.
    expect(frames('<r><B>&foo;<a><a><a>x</a></a></a></B></r>', { maxDepth: 2 }).map((f) => f.error?.code)).to.deep.equal(['XML_ENTITY']);
    const entities = Array.from({ length: 12 }, (_, i) => `&e${i};`).join('');
    expect(frames(`<r>${entities}</r>`).map((f) => f.error!.message)).to.deep.equal(Array.from({ length: 10 }, (_, i) => `line 1: entity &e${i}; is not one of XML's own and is not expanded (DTDs are never read)`));
  });

  it('refuses the record a truncated file cuts off, once', () => {
    expect(frames('<r><B>1</B><B><x>2')).to.deep.equal([record(3, 1, 8, '1'), refused('<B><x>2', 11, 1, 'TRUNCATED', 'record at line 1: the file ends before its root element closes')]);
    expect(frames('<r><B>1</B><x>')).to.deep.equal([record(3, 1, 8, '1'), fileError(14, 1, 'TRUNCATED', 'line 1: the file ends before its root element closes')]);
    expect(frames('<r><B>1</B><B><x a="')).to.deep.equal([record(3, 1, 8, '1'), refused('<B><x a="', 11, 1, 'TRUNCATED', 'record at line 1: the file ends before its root element closes')]);
    expect(frames('<r><B>1</B>\n<B a="x')).to.deep.equal([record(3, 1, 8, '1'), fileError(19, 2, 'TRUNCATED', 'line 2: the file ends before its root element closes')]);
  });

  it('tells an empty file from one without a root element', () => {
    expect(frames('')).to.deep.equal([fileError(0, 1, 'NOT_XML', 'empty file: expected an XML document')]);
    expect(frames(Buffer.from([0xef, 0xbb, 0xbf]), { bom: 3 })).to.deep.equal([fileError(3, 1, 'NOT_XML', 'empty file: expected an XML document')]);
    expect(frames('  ')).to.deep.equal([fileError(2, 1, 'NOT_XML', 'no root element: not an XML document')]);
    // At the end of the file, in bytes: two per character in UTF-16, one in Latin-1.
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('  é', 'utf16le')]);
    expect(frames(utf16, { encoding: 'utf-16le', bom: 2 }).map((f) => [f.error!.code, f.offset])).to.deep.equal([
      ['PARSE_XML', 8],
      ['NOT_XML', 8],
    ]);
    expect(frames(Buffer.from(' é', 'latin1'), { encoding: 'latin1' }).map((f) => [f.error!.code, f.offset])).to.deep.equal([
      ['PARSE_XML', 2],
      ['NOT_XML', 2],
    ]);
  });

  it('refuses a record with bytes that are not UTF-8, in its text or an attribute, as a CSV or NDJSON line is', () => {
    const bad = Buffer.from([0xfc]);
    for (const [name, input] of [
      ['text', Buffer.concat([Buffer.from('<r><B>Z'), bad, Buffer.from('</B><B>ok</B></r>')])],
      ['attribute', Buffer.concat([Buffer.from('<r><B a="Z'), bad, Buffer.from('"/><B>ok</B></r>')])],
    ] as const) {
      for (const chunk of [4, Infinity]) {
        expect(frames(input, { chunk }).map((f) => [f.error?.code ?? f.value, f.error?.message]), `${name}, ${chunk}-byte chunks`).to.deep.equal([
          ['INVALID_UTF8', 'line 1 is not valid UTF-8'],
          ['ok', undefined],
        ]);
      }
    }
  });

  it('keeps offsets, sizes and dead letters the file\'s bytes after bytes that are not UTF-8, and stores a real U+FFFD', () => {
    const parts: (string | number[])[] = [
      '<r>\n', [0xff], ' <B>1</B>', [0xe2, 0x82], '\n<B a="é', [0xc0, 0xaf], '">x</B><B>\ufffd€</B>', [0xed, 0xa0, 0x80],
      '<B>t', [0xf4, 0x90, 0x80, 0x80], '</B>\n<B>ok</B>', [0xf0, 0x9f], '</r>',
    ];
    const file = Buffer.from(hex(...parts), 'hex');
    for (const chunk of [1, 2, 3, 5, Infinity]) {
      expect(sliced(file, { chunk }), `${chunk}-byte chunks`).to.deep.equal([
        ['1', 2, hex('<B>1</B>')],
        [['INVALID_UTF8', 'line 3 is not valid UTF-8'], 3, hex('<B a="é', [0xc0, 0xaf], '">x</B>')],
        ['\ufffd€', 3, hex('<B>\ufffd€</B>')],
        [['INVALID_UTF8', 'line 3 is not valid UTF-8'], 3, hex('<B>t', [0xf4, 0x90, 0x80, 0x80], '</B>')],
        ['ok', 4, hex('<B>ok</B>')],
      ]);
    }
  });

  it('refuses a record for bytes that are not UTF-8 when they come before its other problem', () => {
    const input = (...parts: (string | number[])[]) => Buffer.from(hex(...parts), 'hex');
    expect(frames(input('<r><B>', [0xff], '&foo;</B></r>')).map((f) => f.error?.code)).to.deep.equal(['INVALID_UTF8']);
    expect(frames(input('<r><B>&foo;', [0xff], '</B></r>')).map((f) => f.error?.code)).to.deep.equal(['XML_ENTITY']);
    expect(frames(input('<r><B a', [0xff], '>1</B></r>')).map((f) => f.error?.code)).to.deep.equal(['INVALID_UTF8']);
  });

  it('remembers a bad byte to the end of its record, when the record\'s markup runs past maxRecordBytes', () => {
    // Its content stays within the limit: only its bytes pass it, so it is read to its end.
    const record = hex('<B>', [0xff], '<x/>'.repeat(6), '</B>');
    const file = Buffer.from(hex('<r>', [0xff], '<B>1</B>') + record + hex('<B>2</B></r>'), 'hex');
    for (const chunk of [4, Infinity]) {
      expect(framed(file, { chunk, maxRecordBytes: 20 }).map((f) => [f.error?.code ?? f.value, f.offset, f.size]), `${chunk}-byte chunks`).to.deep.equal([
        ['1', 4, 8],
        ['INVALID_UTF8', 12, record.length / 2],
        ['2', 12 + record.length / 2, 8],
      ]);
    }
  });

  it('refuses a UTF-16 record with an unpaired surrogate and the odd last byte, LE and BE, with the file\'s bytes', () => {
    const text = '<r>\n<B>𝄞</B><B>a\ud800b</B>\n<B x="\udc00"/><B>\ufffd</B>\ud800</r>';
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    const be = Buffer.from(le).swap16();
    for (const [encoding, units] of [['utf-16le', le], ['utf-16be', be]] as const) {
      const file = Buffer.concat([units, Buffer.from([0x41])]);
      const at = (part: string) => units.subarray(2 + 2 * text.indexOf(part), 2 + 2 * (text.indexOf(part) + part.length)).toString('hex');
      for (const chunk of [1, 3, 4, Infinity]) {
        expect(sliced(file, { encoding, bom: 2, chunk }), `${encoding}, ${chunk}-byte chunks`).to.deep.equal([
          ['𝄞', 2, at('<B>𝄞</B>')],
          [['INVALID_ENCODING', 'line 2 is not valid UTF-16: a surrogate without its pair'], 2, at('<B>a\ud800b</B>')],
          [['INVALID_ENCODING', 'line 3 is not valid UTF-16: a surrogate without its pair'], 3, at('<B x="\udc00"/>')],
          ['\ufffd', 3, at('<B>\ufffd</B>')],
          [['TRUNCATED', 'the file ends inside a UTF-16 character'], 3, '41'],
        ]);
      }
    }
    // A file given up holds its odd last byte in the dead letter of its rest, not twice.
    const deep = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`<r>${'<a>'.repeat(9)}`, 'utf16le'), Buffer.from([0x41])]);
    expect(sliced(deep, { encoding: 'utf-16le', bom: 2, maxDepth: 2 }).map(([error, , bytes]) => [error, bytes])).to.deep.equal([
      [['FILE_TOO_DEEP', 'line 1: elements nested deeper than 8 levels: the rest of the file is not read'], deep.subarray(2 + 2 * 27).toString('hex')],
    ]);
    // A high surrogate last, before the odd byte: the record it cuts off is refused for it.
    const cut = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('<r><B>1</B><B>\ud800', 'utf16le'), Buffer.from([0x41])]);
    for (const chunk of [1, 3, Infinity]) {
      expect(sliced(cut, { encoding: 'utf-16le', bom: 2, chunk }), `${chunk}-byte chunks`).to.deep.equal([
        ['1', 1, Buffer.from('<B>1</B>', 'utf16le').toString('hex')],
        [['INVALID_ENCODING', 'line 1 is not valid UTF-16: a surrogate without its pair'], 1, Buffer.from('<B>\ud800', 'utf16le').toString('hex')],
        [['TRUNCATED', 'the file ends inside a UTF-16 character'], 1, '41'],
      ]);
    }
  });
});
