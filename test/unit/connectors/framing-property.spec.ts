import { expect } from 'chai';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { FileFormat } from '../../../connectors/files';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { MemorySink, scratchDir, seeded } from '../../helpers';
import { ingestFiles } from '../../files-ingest';

/**
 * Every input byte accounted for, whatever the corruption: files are generated from
 * well-formed records and random damage (unterminated and stray quotes, truncation,
 * invalid bytes, deep nesting, huge fields, CR/LF mixes, BOMs; in XML also undeclared
 * entities, mismatched and unclosed tags, stray text; in UTF-16 NDJSON and JSON lone
 * surrogates and an odd last byte, either byte order, BOM or declared), and for every run:
 * - each well-formed record is either stored as written or inside exactly one dead
 *   letter's span (its position's offset, `raw_bytes` long), never both; in CSV and
 *   NDJSON, where a line break always ends a bad record's damage, it is stored. In a JSON
 *   array, a record that begins inside a string some damage left open is read as the
 *   rest of that string: it may be cut in two (its head in that string, stored or refused,
 *   the rest in what follows), so it and those after it are only checked for being
 *   stored at most once and as written;
 * - each dead letter's `raw` is the file's bytes at that span (or their head), and its
 *   `raw_sha256` is the hash of the whole span;
 * - no stored record holds U+FFFD, which no file holds: it would be a lone surrogate or
 *   bytes that are not UTF-8, replaced;
 * - read = written + dead-lettered + nacked, and every read record is one of them.
 */

const SEED = 15;
const RUNS = 120;
const MAX_RECORD_BYTES = 300;
const MAX_DEPTH = 8;

interface Piece {
  /** Bytes of the piece, without its line break or separator. */
  bytes: Buffer;
  /** Set for a well-formed record: what it must be stored as. */
  value?: Record<string, unknown>;
}

interface Written {
  bytes: Buffer;
  /** Well-formed records that made it whole into the file, with their byte ranges. */
  records: { id: string; start: number; end: number; value: Record<string, unknown>; loose?: boolean }[];
  /** The encoding to declare (a UTF-16 file without a BOM). */
  encoding?: 'utf-16le' | 'utf-16be';
}

const text = (s: string) => Buffer.from(s, 'utf8');

/** How a file's text becomes bytes. */
interface TextEncoding {
  encode(s: string): Buffer;
  bom: Buffer;
  /** Bytes of a code unit (2 in UTF-16), and the unit at a byte index. */
  unit: number;
  unitAt(bytes: Buffer, i: number): number;
}

const UTF8: TextEncoding = { encode: text, bom: Buffer.from([0xef, 0xbb, 0xbf]), unit: 1, unitAt: (b, i) => b[i]! };
const UTF16: Record<'utf-16le' | 'utf-16be', TextEncoding> = {
  'utf-16le': { encode: (s) => Buffer.from(s, 'utf16le'), bom: Buffer.from([0xff, 0xfe]), unit: 2, unitAt: (b, i) => b.readUInt16LE(i) },
  'utf-16be': { encode: (s) => Buffer.from(s, 'utf16le').swap16(), bom: Buffer.from([0xfe, 0xff]), unit: 2, unitAt: (b, i) => b.readUInt16BE(i) },
};
const word = fc.stringMatching(/^[a-z]{0,8}$/);
const lineBreak = fc.constantFrom('\n', '\r\n');
const deepJson = fc.integer({ min: MAX_DEPTH + 1, max: 60 }).map((n) => '['.repeat(n) + ']'.repeat(n));
const invalidBytes = fc.uint8Array({ minLength: 1, maxLength: 4 }).map((a) => Buffer.from([0xff, ...a, 0xc3]));
const huge = fc.integer({ min: MAX_RECORD_BYTES + 1, max: 3 * MAX_RECORD_BYTES }).map((n) => 'h'.repeat(n));

/** Lays out pieces: an optional BOM, a header, pieces each ended by a random line break, then maybe cut short. */
function layout(header: string | undefined, pieces: Piece[], breaks: string[], bom: boolean, cut: number | undefined, encoding = UTF8): Written {
  const parts: Buffer[] = [];
  const records: Written['records'] = [];
  let at = 0;
  const add = (b: Buffer) => {
    parts.push(b);
    at += b.length;
  };
  if (bom) add(encoding.bom);
  if (header !== undefined) add(encoding.encode(`${header}\n`));
  pieces.forEach((piece, i) => {
    if (piece.value) records.push({ id: String(piece.value.id ?? piece.value['@id']), start: at, end: at + piece.bytes.length, value: piece.value });
    add(piece.bytes);
    add(encoding.encode(breaks[i % breaks.length]!));
  });
  let bytes = Buffer.concat(parts);
  if (cut !== undefined && bytes.length > 0) {
    const end = Math.floor(cut * bytes.length);
    bytes = bytes.subarray(0, end);
    return { bytes, records: records.filter((r) => r.end <= end) };
  }
  return { bytes, records };
}

/**
 * Lays out a JSON array: elements separated by commas and random whitespace. A record that
 * begins inside a string left open by damage before it (an unterminated one, a quote among
 * random bytes), and every record after it, is loose: see the spec's description.
 */
function arrayLayout(pieces: Piece[], spaces: string[], bom: boolean, cut: number | undefined, encoding = UTF8): Written {
  const parts: Buffer[] = [];
  const records: Written['records'] = [];
  let at = 0;
  const add = (b: Buffer) => {
    parts.push(b);
    at += b.length;
  };
  const strings = new StringTracker(encoding);
  let loose = false;
  if (bom) add(encoding.bom);
  add(encoding.encode('['));
  pieces.forEach((piece, i) => {
    if (i > 0) add(encoding.encode(`,${spaces[i % spaces.length]}`));
    loose ||= strings.inString;
    if (piece.value) records.push({ id: String(piece.value.id ?? piece.value['@id']), start: at, end: at + piece.bytes.length, value: piece.value, ...(loose && { loose }) });
    strings.read(piece.bytes);
    add(piece.bytes);
  });
  add(encoding.encode(']\n'));
  let bytes = Buffer.concat(parts);
  if (cut !== undefined) {
    const end = Math.floor(cut * bytes.length);
    bytes = bytes.subarray(0, end);
    return { bytes, records: records.filter((r) => r.end <= end) };
  }
  return { bytes, records };
}

/** Follows JSON strings over the pieces of a file, as a framer does: whether the next piece begins inside one. */
class StringTracker {
  inString = false;
  #escaped = false;
  readonly #encoding: TextEncoding;

  constructor(encoding: TextEncoding) {
    this.#encoding = encoding;
  }

  read(bytes: Buffer): void {
    for (let i = 0; i + this.#encoding.unit <= bytes.length; i += this.#encoding.unit) {
      const c = this.#encoding.unitAt(bytes, i);
      if (this.#escaped) this.#escaped = false;
      else if (this.inString && c === 0x5c) this.#escaped = true;
      else if (c === 0x22) this.inString = !this.inString;
    }
  }
}

/** Well-formed records are numbered so that corruption can never look like one. */
function numbered(pieces: (Piece | ((id: string) => Piece))[]): Piece[] {
  return pieces.map((p, i) => (typeof p === 'function' ? p(`K${i}Z`) : p));
}

const jsonRecord = fc
  .tuple(word, fc.oneof(fc.integer(), word, fc.array(fc.integer(), { maxLength: 3 }), fc.record({ a: word, b: fc.boolean() })))
  .map(([name, v]) => (id: string): Piece => {
    const value = { id, name, v };
    return { bytes: text(JSON.stringify(value)), value };
  });

const jsonDamage = fc.oneof(
  fc.constantFrom('{"a":', '{"a":}', 'not json', '{"a":1', '"unterminated', '}{', '{"id":"x"}]').map((s) => ({ bytes: text(s) })),
  deepJson.map((s) => ({ bytes: text(s) })),
  invalidBytes.map((b) => ({ bytes: Buffer.concat([text('{"x":"'), b, text('"}')]) })),
  huge.map((s) => ({ bytes: text(`"${s}"`) })),
);

const ndjsonFile = fc
  .record({
    pieces: fc.array(fc.oneof({ weight: 3, arbitrary: jsonRecord }, { weight: 1, arbitrary: jsonDamage }), { maxLength: 25 }),
    breaks: fc.array(lineBreak, { minLength: 1, maxLength: 5 }),
    bom: fc.boolean(),
    cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
  })
  .map(({ pieces, breaks, bom, cut }) => layout(undefined, numbered(pieces), breaks, bom, cut ?? undefined));

const jsonFile = fc
  .record({
    pieces: fc.array(fc.oneof({ weight: 3, arbitrary: jsonRecord }, { weight: 1, arbitrary: jsonDamage }), { maxLength: 25 }),
    spaces: fc.array(fc.constantFrom('', ' ', '\n', '\r\n', '\t'), { minLength: 1, maxLength: 5 }),
    bom: fc.boolean(),
    cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
  })
  .map(({ pieces, spaces, bom, cut }) => arrayLayout(numbered(pieces), spaces, bom, cut ?? undefined));

/** Records with characters of 2, 3 and 4 bytes in UTF-8 (a surrogate pair in UTF-16). */
const wideRecord = fc.tuple(fc.constantFrom('', 'Zoë', '語', 'a😀b'), fc.oneof(fc.integer(), word)).map(([name, v]) => (id: string): Piece => {
  const value = { id, name, v };
  return { bytes: text(JSON.stringify(value)), value };
});

/** Damage in UTF-16: the JSON damage that is text, and lone surrogates (high or low, alone or in a string). */
const utf16Damage = fc.oneof(
  fc.constantFrom('{"a":', '{"a":}', 'not json', '{"a":1', '"unterminated', '}{', '{"id":"x"}]').map((s) => ({ bytes: text(s) })),
  deepJson.map((s) => ({ bytes: text(s) })),
  huge.map((s) => ({ bytes: text(`"${s}"`) })),
  fc.constantFrom('\ud800', '\udbff', '\udc00', '\udfff', '\udc00\ud800').map((lone) => ({ text: `{"x":"${lone}"}` })),
  fc.constantFrom('\ud83c', '\ude00').map((lone) => ({ text: lone })),
);

/** A piece in UTF-16: its UTF-8 bytes read as text, or its text (which may hold lone surrogates), encoded. */
function inUtf16(piece: Piece | { text: string }, encoding: TextEncoding): Piece {
  if ('text' in piece) return { bytes: encoding.encode(piece.text) };
  return { ...piece, bytes: encoding.encode(piece.bytes.toString('utf8')) };
}

/** A UTF-16 file, LE or BE, with a BOM or a declared encoding, its last byte maybe odd (cut short, or one byte more). */
function utf16File(lay: (pieces: Piece[], separators: string[], bom: boolean, cut: number | undefined, encoding: TextEncoding) => Written, separators: fc.Arbitrary<string>) {
  return fc
    .record({
      pieces: fc.array(fc.oneof({ weight: 3, arbitrary: wideRecord }, { weight: 1, arbitrary: utf16Damage }), { maxLength: 25 }),
      separators: fc.array(separators, { minLength: 1, maxLength: 5 }),
      order: fc.constantFrom('utf-16le' as const, 'utf-16be' as const),
      bom: fc.boolean(),
      cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
      oddByte: fc.option(fc.integer({ min: 0, max: 255 }), { freq: 4 }),
    })
    .map(({ pieces, separators, order, bom, cut, oddByte }): Written => {
      const encoding = UTF16[order];
      const numberedPieces = numbered(pieces.map((p) => (typeof p === 'function' ? (id: string) => inUtf16(p(id), encoding) : inUtf16(p, encoding))));
      const written = lay(numberedPieces, separators, bom, cut ?? undefined, encoding);
      // Only after a whole unit: with the first byte of a cut one it would make a character that may join the last line.
      const bytes = oddByte === null || written.bytes.length % 2 === 1 ? written.bytes : Buffer.concat([written.bytes, Buffer.of(oddByte)]);
      return { ...written, bytes, ...(!bom && { encoding: order }) };
    });
}

const utf16NdjsonFile = utf16File((pieces, breaks, bom, cut, encoding) => layout(undefined, pieces, breaks, bom, cut, encoding), lineBreak);
const utf16JsonFile = utf16File(arrayLayout, fc.constantFrom('', ' ', '\n', '\r\n', '\t'));

/** A CSV field: bare, or quoted with delimiters, doubled quotes and line breaks inside (never first). */
const csvField = fc.oneof(
  word.map((w) => ({ raw: w, value: w })),
  fc
    .tuple(fc.constantFrom('a', 'b', 'z'), fc.array(fc.constantFrom('x', ' ', ';', '""', '\n', '\r\n'), { maxLength: 6 }))
    .map(([first, rest]) => ({ raw: `"${first}${rest.join('')}"`, value: first + rest.join('').replaceAll('""', '"') })),
);

const csvRecord = fc.tuple(csvField, csvField).map(([a, b]) => (id: string): Piece => ({ bytes: text(`${id};${a.raw};${b.raw}`), value: { id, a: a.value, b: b.value } }));

const csvDamage = fc.oneof(
  // An unterminated quote, a quote closed inside a field, one opened inside a field, a ragged row.
  fc.tuple(word, word).map(([a, b]) => ({ bytes: text(`q;"Hotel ${a};${b}`) })),
  fc.tuple(word, word).map(([a, b]) => ({ bytes: text(`q;"${a}"x${b};c`) })),
  fc.tuple(word, word).map(([a, b]) => ({ bytes: text(`q;${a}"${b};c`) })),
  word.map((a) => ({ bytes: text(`q;${a}`) })),
  invalidBytes.map((b) => ({ bytes: Buffer.concat([text('q;'), b, text(';c')]) })),
  huge.map((s) => ({ bytes: text(`q;${s};c`) })),
  huge.map((s) => ({ bytes: text(`q;"${s}`) })),
);

const csvFile = fc
  .record({
    pieces: fc.array(fc.oneof({ weight: 3, arbitrary: csvRecord }, { weight: 1, arbitrary: csvDamage }), { maxLength: 25 }),
    breaks: fc.array(fc.constantFrom('\n', '\r\n'), { minLength: 1, maxLength: 5 }),
    bom: fc.boolean(),
    cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
  })
  .map(({ pieces, breaks, bom, cut }) => layout('id;a;b', numbered(pieces), breaks, bom, cut ?? undefined));

const xmlRecord = fc.tuple(word, word).map(([name, v]) => (id: string): Piece => ({ bytes: text(`<B id="${id}"><name>${name}</name><v>${v}</v></B>`), value: { '@id': id, name, v } }));

const xmlDamage = fc.oneof(
  fc.integer({ min: MAX_DEPTH + 1, max: 40 }).map((n) => ({ bytes: text(`<B id="deep">${'<a>'.repeat(n)}x${'</a>'.repeat(n)}</B>`) })),
  huge.map((h) => ({ bytes: text(`<B id="huge">${h}</B>`) })),
  fc.constantFrom('<B id="e">&undeclared;</B>', '<B id="m"><x></B>', '<B id="open"><x>1</x>', 'stray text', '<B id="a" id="b"/>', '</B>', '<B id="lt"><x>a < b</x></B>').map((d) => ({ bytes: text(d) })),
);

const xmlFile = fc
  .record({
    pieces: fc.array(fc.oneof({ weight: 3, arbitrary: xmlRecord }, { weight: 1, arbitrary: xmlDamage }), { maxLength: 20 }),
    breaks: fc.array(fc.constantFrom('', '\n', '\r\n', ' '), { minLength: 1, maxLength: 5 }),
    bom: fc.boolean(),
    cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
  })
  .map(({ pieces, breaks, bom, cut }) => {
    // A stray </B> after an unclosed <B id="open"> closes it: the records between are then
    // children of a well-formed record, stored inside it, which the reference does not model.
    const open = pieces.findIndex((p) => typeof p !== 'function' && p.bytes.toString() === '<B id="open"><x>1</x>');
    if (open >= 0) pieces = pieces.filter((p, i) => i <= open || typeof p === 'function' || p.bytes.toString() !== '</B>');
    const written = layout('<?xml version="1.0" encoding="UTF-8"?>\n<root>', numbered(pieces), breaks, bom, undefined);
    const bytes = Buffer.concat([written.bytes, text('</root>\n')]);
    if (cut === null) return { bytes, records: written.records };
    const end = Math.floor(cut * bytes.length);
    return { bytes: bytes.subarray(0, end), records: written.records.filter((r) => r.end <= end) };
  });

const chunkBytes = fc.constantFrom(1, 2, 3, 7, 64, 4096);

describe('framing: every input byte accounted for (property, seeded)', function () {
  this.timeout(300_000);
  const dir = scratchDir();

  async function check(format: FileFormat, written: Written, chunk: number, allStored: boolean): Promise<void> {
    const path = dir.file(`file.${format}`, written.bytes);
    const { rows, letters, stats, error } = await ingestFiles({ paths: path, format, chunkBytes: chunk, maxRecordBytes: MAX_RECORD_BYTES, maxDepth: MAX_DEPTH, csv: { delimiter: ';' }, xml: { record: 'B' }, ...(written.encoding && { encoding: written.encoding }) });
    expect(error).to.equal(undefined);
    const spans = letters.map((letter) => spanOf(letter, written.bytes));
    const stored = new Map<string, unknown[]>();
    for (const row of rows as Record<string, unknown>[]) {
      const id = String(row?.id ?? row?.['@id']);
      stored.set(id, [...(stored.get(id) ?? []), row]);
    }
    for (const record of written.records) {
      const copies = stored.get(record.id) ?? [];
      const holding = spans.filter((s) => s.start <= record.start && record.end <= s.end);
      const where = `record ${record.id} at ${record.start}..${record.end}`;
      if (record.loose) expect(copies.length + holding.length, `${where} (loose): stored ${copies.length}×, in ${holding.length} dead letters`).to.be.at.most(1);
      else expect(copies.length + holding.length, `${where}: stored ${copies.length}×, in ${holding.length} dead letters ${JSON.stringify(holding)}`).to.equal(1);
      if (allStored) expect(copies.length, `${where}: not stored`).to.equal(1);
      if (copies.length === 1) expect(copies[0], where).to.deep.equal(record.value);
    }
    // No file holds U+FFFD: one stored is a lone surrogate or bytes not UTF-8 replaced, a silent change.
    expect(JSON.stringify(rows), 'a stored record holds U+FFFD').not.to.include('\ufffd');
    expect(stats.read, 'read = written + dead-lettered + nacked').to.equal(stats.written + stats.deadLettered + stats.nacked);
    expect(stats.nacked).to.equal(0);
    expect([stats.written, stats.deadLettered]).to.deep.equal([rows.length, letters.length]);
  }

  it('NDJSON', async () => {
    await fc.assert(fc.asyncProperty(ndjsonFile, chunkBytes, (file, chunk) => check('ndjson', file, chunk, true)), seeded(SEED, RUNS));
  });

  it('JSON arrays', async () => {
    await fc.assert(fc.asyncProperty(jsonFile, chunkBytes, (file, chunk) => check('json', file, chunk, false)), seeded(SEED, RUNS));
  });

  it('UTF-16 NDJSON', async () => {
    await fc.assert(fc.asyncProperty(utf16NdjsonFile, chunkBytes, (file, chunk) => check('ndjson', file, chunk, true)), seeded(SEED, RUNS));
  });

  it('UTF-16 JSON arrays', async () => {
    await fc.assert(fc.asyncProperty(utf16JsonFile, chunkBytes, (file, chunk) => check('json', file, chunk, false)), seeded(SEED, RUNS));
  });

  it('XML', async () => {
    await fc.assert(fc.asyncProperty(xmlFile, chunkBytes, (file, chunk) => check('xml', file, chunk, false)), seeded(SEED, RUNS));
  });

  it('CSV', async () => {
    await fc.assert(fc.asyncProperty(csvFile, chunkBytes, (file, chunk) => check('csv', file, chunk, true)), seeded(SEED, RUNS));
  });
});

/**
 * The same files as payloads through `parse`, the path of Kafka messages and webhook bodies:
 * each well-formed record is stored as written or inside exactly one dead letter, whose
 * `raw` is a stretch of the payload with its length and SHA-256; in NDJSON and CSV every
 * well-formed record is stored, unless (NDJSON) the payload is not UTF-8 at all, when it
 * is one dead letter whole; read = written + dead-lettered + nacked.
 */
describe('parse: every payload byte accounted for (property, seeded)', function () {
  this.timeout(300_000);

  async function check(format: 'ndjson' | 'csv' | 'xml', written: Written): Promise<void> {
    const payload = written.bytes;
    const sink = new MemorySink<unknown>();
    const deadLetters = new MemorySink<DeadLetter>();
    const pipeline = new Pipeline({
      source: fromIterable([payload]),
      transform: parse({ format, maxRecordBytes: MAX_RECORD_BYTES, maxDepth: MAX_DEPTH, csv: { delimiter: ';' }, xml: { record: 'B' } }),
      sink,
      deadLetters,
      batch: { rows: 7, maxWaitMs: 5 },
      deadLetterBatch: { maxWaitMs: 1 },
    });
    const stats = await pipeline.run();
    const spans = deadLetters.rows.map((letter) => payloadSpanOf(letter, payload));
    const stored = new Map<string, unknown[]>();
    for (const row of sink.rows as Record<string, unknown>[]) {
      const id = String(row?.id ?? row?.['@id']);
      stored.set(id, [...(stored.get(id) ?? []), row]);
    }
    const allStored = format === 'csv' || (format === 'ndjson' && isUtf8(payload));
    for (const record of written.records) {
      const copies = stored.get(record.id) ?? [];
      const holding = spans.filter((span) => span.start <= record.start && record.end <= span.end).length;
      const where = `record ${record.id} at ${record.start}..${record.end}`;
      expect(copies.length + holding, `${where}: stored ${copies.length}×, in ${holding} dead letters`).to.equal(1);
      if (allStored) expect(copies.length, `${where}: not stored`).to.equal(1);
      if (copies.length === 1) expect(copies[0], where).to.deep.equal(record.value);
    }
    if (format === 'ndjson' && !isUtf8(payload)) expect(spans, 'a payload that is not UTF-8: one dead letter, whole').to.deep.equal([{ start: 0, end: payload.length }]);
    expect(stats.read, 'read = written + dead-lettered + nacked').to.equal(stats.written + stats.deadLettered + stats.nacked);
    expect(stats.nacked).to.equal(0);
    expect([stats.written, stats.deadLettered]).to.deep.equal([sink.rows.length, deadLetters.rows.length]);
  }

  it('NDJSON', async () => {
    await fc.assert(fc.asyncProperty(ndjsonFile, (file) => check('ndjson', file)), seeded(SEED, RUNS));
  });

  it('CSV', async () => {
    await fc.assert(fc.asyncProperty(csvFile, (file) => check('csv', file)), seeded(SEED, RUNS));
  });

  it('XML', async () => {
    await fc.assert(fc.asyncProperty(xmlFile, (file) => check('xml', file)), seeded(SEED, RUNS));
  });
});

/**
 * Where a dead letter of a payload lies in it: a payload's dead letters carry no offset, so
 * the span is found where `raw` (the whole span or its head) occurs and the `raw_bytes`
 * from there hash to `raw_sha256`.
 */
function payloadSpanOf(letter: DeadLetter, payload: Buffer): { start: number; end: number } {
  const raw = letter.raw_encoding === 'base64' ? Buffer.from(letter.raw, 'base64') : Buffer.from(letter.raw, 'utf8');
  for (let at = payload.indexOf(raw); at >= 0; at = payload.indexOf(raw, at + 1)) {
    const whole = payload.subarray(at, at + letter.raw_bytes);
    if (whole.length === letter.raw_bytes && createHash('sha256').update(whole).digest('hex') === letter.raw_sha256) return { start: at, end: at + letter.raw_bytes };
  }
  throw new Error(`dead letter ${letter.code} ${letter.position}: no ${letter.raw_bytes} bytes of the payload start with its raw and hash to its raw_sha256`);
}

/** Where a dead letter's bytes lie in the file, checked against the file itself. */
function spanOf(letter: DeadLetter, file: Buffer): { start: number; end: number } {
  const start = Number(letter.position.slice(letter.position.lastIndexOf('@') + 1));
  const end = start + letter.raw_bytes;
  const whole = file.subarray(start, end);
  const raw = letter.raw_encoding === 'base64' ? Buffer.from(letter.raw, 'base64') : Buffer.from(letter.raw, 'utf8');
  const what = `dead letter ${letter.code} at ${start} (${letter.raw_bytes} bytes)`;
  expect(end, what).to.be.at.most(file.length);
  if (raw.length === letter.raw_bytes) expect(raw.equals(whole), `${what}: raw is not the file's bytes`).to.equal(true);
  else expect(raw.equals(whole.subarray(0, raw.length)), `${what}: raw is not the head of the file's bytes`).to.equal(true);
  expect(letter.raw_sha256, what).to.equal(createHash('sha256').update(whole).digest('hex'));
  return { start, end };
}
