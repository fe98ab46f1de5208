import { expect } from 'chai';
import { gzipSync } from 'node:zlib';
import { scratchDir } from '../../helpers';
import { fixture, ingestFiles } from '../../files-ingest';

describe('fromFiles: gzip and encodings', () => {
  const dir = scratchDir();
  const file = dir.file;

  it('reads Windows-1252 and Latin-1 CSV when the encoding is declared', async () => {
    const cp1252 = await ingestFiles({ paths: fixture('latin1.csv'), encoding: 'windows-1252' });
    expect(cp1252.rows).to.deep.equal([
      { ref: 'L-1', city: 'Zürich', price: '€ 12' },
      { ref: 'L-2', city: 'Málaga', price: 'Š' },
    ]);
    const latin1 = await ingestFiles({ paths: fixture('latin1.csv'), encoding: 'iso-8859-1' });
    expect(latin1.rows).to.deep.equal([
      { ref: 'L-1', city: 'Zürich', price: '\u0080 12' },
      { ref: 'L-2', city: 'Málaga', price: '\u008a' },
    ]);
  });

  for (const chunkBytes of [1, 3, 4096]) {
    it(`reads UTF-16 LE and BE CSV by their BOM, with offsets in the file's bytes (${chunkBytes}-byte reads)`, async () => {
      for (const name of ['utf16le.csv', 'utf16be.csv']) {
        const { rows, metas, letters } = await ingestFiles({ paths: fixture(name), chunkBytes });
        expect(letters).to.deep.equal([]);
        expect(rows).to.deep.equal([
          { ref: 'U-1', name: 'Zoë' },
          { ref: 'U-2', name: 'Ørsted, A/S' },
        ]);
        const text = 'ref,name\r\nU-1,Zoë\r\nU-2,"Ørsted, A/S"\r\n';
        expect(metas.map((m) => [m.offset, m.line])).to.deep.equal([
          [2 + 2 * text.indexOf('U-1'), 2],
          [2 + 2 * text.indexOf('U-2'), 3],
        ]);
      }
    });
  }

  it('gunzips by magic bytes, whatever the name, and positions count uncompressed bytes', async () => {
    const gz = await ingestFiles({ paths: fixture('bookings.ndjson.gz'), chunkBytes: 1000 });
    expect(gz.rows).to.have.length(1000);
    expect(gz.rows[999]).to.deep.equal({ id: 1000, name: 'café 1000' });
    expect(gz.letters).to.deep.equal([]);
    const line = (i: number) => JSON.stringify({ id: i, name: `café ${i}` });
    expect(gz.metas[1]!.offset).to.equal(Buffer.byteLength(line(1)) + 1);
    const disguised = await ingestFiles({ paths: file('plain-name.csv', gzipSync('a,b\n1,2\n')) });
    expect(disguised.rows).to.deep.equal([{ a: '1', b: '2' }]);
  });

  it('dead-letters a corrupt or cut-off gzip file after the records before the damage, and reads the next file', async () => {
    const corrupt = await ingestFiles({ paths: [fixture('corrupt.ndjson.gz'), file('next.ndjson', '{"next":true}\n')] });
    expect(corrupt.letters.map((l) => l.code)).to.deep.equal(['GZIP']);
    expect(corrupt.letters[0]!.message).to.match(/^gzip data is corrupt or cut off after \d+ uncompressed bytes: /);
    expect(corrupt.rows.length).to.be.greaterThan(0).and.below(1000);
    expect(corrupt.rows[corrupt.rows.length - 1]).to.deep.equal({ next: true });
    const cut = await ingestFiles({ paths: fixture('truncated.csv.gz') });
    expect(cut.letters.map((l) => l.code)).to.deep.equal(['GZIP']);
    expect(cut.rows.length).to.be.greaterThan(0).and.below(5000);
    expect(cut.rows[0]).to.deep.equal({ ref: 'T-0', n: '0' });
  });

  it('reads NDJSON in a declared single-byte encoding, and UTF-16 NDJSON by its BOM', async () => {
    const latin1 = file('l.ndjson', Buffer.from('{"city":"Z\xfcrich"}\n{"p":"\x80"}\n', 'latin1'));
    const l = await ingestFiles({ paths: latin1, encoding: 'windows-1252' });
    expect([l.rows, l.letters]).to.deep.equal([[{ city: 'Zürich' }, { p: '€' }], []]);
    const utf16 = file('u.ndjson', Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from('{"n":"Ø"}\n{"n":2}\n', 'utf16le').swap16()]));
    const u = await ingestFiles({ paths: utf16, chunkBytes: 3 });
    expect([u.rows, u.letters]).to.deep.equal([[{ n: 'Ø' }, { n: 2 }], []]);
  });

  /** `text` in UTF-16 of either byte order. */
  const utf16 = (text: string, order: 'le' | 'be') => (order === 'le' ? Buffer.from(text, 'utf16le') : Buffer.from(text, 'utf16le').swap16());
  /** Each dead letter as [code, offset, bytes, raw as hex]. */
  const lettersOf = (letters: { code: string; position: string; raw_bytes: number; raw: string; raw_encoding: string }[]) =>
    letters.map((l) => [l.code, Number(l.position.slice(l.position.lastIndexOf('@') + 1)), l.raw_bytes, Buffer.from(l.raw, l.raw_encoding === 'base64' ? 'base64' : 'utf8').toString('hex')]);

  for (const order of ['le', 'be'] as const) {
    it(`dead-letters a UTF-16${order.toUpperCase()} NDJSON or JSON record with a lone surrogate (INVALID_ENCODING, its file bytes), never stores U+FFFD`, async () => {
      // Lone surrogates at the ends of both ranges, a high one before a quote or a character
      // above the surrogates, two low ones; pairs at the ends of the low range (U+10000,
      // U+10FFFF) and characters above the surrogates are whole. Offsets count the BOM and two bytes a unit.
      const good = ['{"n":1}', '{"n":"é"}', '{"n":"\u{10000}\u{10ffff}\ue000\ufb00"}'];
      const bad = ['{"n":"\ud83cx"}', '{"n":"\ud800"}', '{"n":"\udbff"}', '{"n":"\udc00"}', '{"n":"\udfff"}', '{"n":"\udc00\udc01"}', '{"n":"\ud800\ue000"}'];
      const lines = [good[0]!, ...bad.slice(0, 3), good[1]!, ...bad.slice(3), good[2]!];
      const at = (text: string, line: string) => 2 + 2 * text.indexOf(line);
      const refused = (text: string) => bad.map((line) => ['INVALID_ENCODING', at(text, line), 2 * line.length, utf16(line, order).toString('hex')]);
      const ndjsonText = lines.join('\r\n');
      const jsonText = `[${lines.join(', ')}]`;
      const ndjson = utf16(`\ufeff${ndjsonText}\n`, order);
      const json = utf16(`\ufeff${jsonText}`, order);
      for (const chunkBytes of [1, 3, 4096]) {
        const n = await ingestFiles({ paths: file(`lone.${order}.ndjson`, ndjson), chunkBytes });
        expect(n.rows, `${chunkBytes}-byte reads`).to.deep.equal(good.map((line) => JSON.parse(line)));
        expect(lettersOf(n.letters)).to.deep.equal(refused(ndjsonText));
        expect(n.letters[0]!.message).to.equal('line 2 is not valid UTF-16: a surrogate without its pair');
        const j = await ingestFiles({ paths: file(`lone.${order}.json`, json), format: 'json', chunkBytes });
        expect(j.rows).to.deep.equal(good.map((line) => JSON.parse(line)));
        expect(lettersOf(j.letters)).to.deep.equal(refused(jsonText));
      }
    });

    it(`counts a UTF-16${order.toUpperCase()} record's offset, size and limit in the file's bytes, and its dead letter holds them`, async () => {
      const bad = '{"city":"Zürich",}';
      const ndjson = utf16(`\ufeff{"n":"ø"}\n${bad}\n${'a'.repeat(44)}\n"${'語'.repeat(40)}"\n`, order);
      const n = await ingestFiles({ paths: file(`sizes.${order}.ndjson`, ndjson), chunkBytes: 7, maxRecordBytes: 84 });
      // 42 units are 84 bytes in the file (within the limit) and 122 in UTF-8; 44 ASCII ones are 88 and 44.
      expect(n.rows).to.deep.equal([{ n: 'ø' }, '語'.repeat(40)]);
      const badAt = 2 + 2 * '{"n":"ø"}\n'.length;
      const longAt = badAt + 2 * (bad.length + 1);
      expect(lettersOf(n.letters).map(([code, offset, bytes]) => [code, offset, bytes])).to.deep.equal([
        ['PARSE_JSON', badAt, 2 * bad.length],
        ['RECORD_TOO_LARGE', longAt, 88],
      ]);
      expect(lettersOf(n.letters).map((l) => l[3])).to.deep.equal([utf16(bad, order).toString('hex'), utf16('a'.repeat(44), order).toString('hex')]);
    });

    it(`reads UTF-16${order.toUpperCase()} characters whose bytes look like a line feed, CR, quote, backslash, bracket or space as the characters they are`, async () => {
      // Ċ ਊ ഊ, a hair space, ∀ ≛ 孝 筽 ⰬⰬ 屜, and ੁ between two Ā: a 0x0A byte beside a 0 byte of another character.
      const tricky = '\u010a\u0a0a\u0d0a\u200a\u2200\u225b\u5b5d\u7b7d\u2c2c\u5c5c\u0100\u0a41\u0100';
      const ndjsonText = `{"s":"${tricky}"}\n\u2020\r\n{"n":2}\n`;
      const ndjson = utf16(`\ufeff${ndjsonText}`, order);
      const json = utf16(`\ufeff[{"s":"${tricky}"},"${tricky}"\u000d\u000a,3]`, order);
      for (const chunkBytes of [1, 3, 4096]) {
        const n = await ingestFiles({ paths: file(`tricky.${order}.ndjson`, ndjson), chunkBytes });
        expect(n.rows, `${chunkBytes}-byte reads`).to.deep.equal([{ s: tricky }, { n: 2 }]);
        // A dagger (20 20) is not a blank line: its line is read, and refused.
        expect(lettersOf(n.letters).map(([code, offset, bytes]) => [code, offset, bytes])).to.deep.equal([['PARSE_JSON', 2 + 2 * ndjsonText.indexOf('\u2020'), 2]]);
        const j = await ingestFiles({ paths: file(`tricky.${order}.json`, json), format: 'json', chunkBytes });
        expect([j.rows, j.letters], `${chunkBytes}-byte reads`).to.deep.equal([[{ s: tricky }, tricky, 3], []]);
      }
    });

    it(`finds a line feed at the first byte of a UTF-16${order.toUpperCase()} file without a BOM (its encoding declared)`, async () => {
      const n = await ingestFiles({ paths: file(`first-lf.${order}.ndjson`, utf16('\n{"n":1}\n', order)), encoding: `utf-16${order}`, chunkBytes: 4096 });
      expect([n.rows, n.metas.map((m) => [m.offset, m.line]), n.letters]).to.deep.equal([[{ n: 1 }], [[2, 2]], []]);
    });

    it(`skips blank UTF-16${order.toUpperCase()} NDJSON lines (spaces, tabs, CRs, nothing) and keeps what is cut off in a JSON file with an odd last byte`, async () => {
      const n = await ingestFiles({ paths: file(`blanks.${order}.ndjson`, utf16('\ufeff{"n":1}\n  \n\t\n\n \r\n{"n":2}\n', order)), chunkBytes: 4096 });
      expect([n.rows, n.letters]).to.deep.equal([[{ n: 1 }, { n: 2 }], []]);
      // Whitespace then half a character: no array (NOT_ARRAY), then that byte; an element cut off, then that byte.
      const spaces = await ingestFiles({ paths: file(`spaces-half.${order}.json`, Buffer.concat([utf16('\ufeff  ', order), Buffer.of(0x5b)])), format: 'json' });
      expect(spaces.letters.map((l) => l.code)).to.deep.equal(['NOT_ARRAY', 'TRUNCATED']);
      const cut = Buffer.concat([utf16('\ufeff[{"n":1},{"n":', order), Buffer.of(0x32)]);
      const c = await ingestFiles({ paths: file(`cut-half.${order}.json`, cut), format: 'json', chunkBytes: 5 });
      expect([c.rows, lettersOf(c.letters).map(([code, offset, bytes]) => [code, offset, bytes])]).to.deep.equal([
        [{ n: 1 }],
        [
          ['TRUNCATED', 20, 10],
          ['TRUNCATED', 30, 1],
        ],
      ]);
    });

    it(`dead-letters the odd last byte of a UTF-16${order.toUpperCase()} NDJSON or JSON file alone (1 byte, TRUNCATED), never drops it`, async () => {
      const ndjson = Buffer.concat([utf16('\ufeff{"n":1}\n{"n":2}', order), Buffer.of(0x7b)]);
      const n = await ingestFiles({ paths: file(`half.${order}.ndjson`, ndjson), chunkBytes: 5 });
      expect(n.rows).to.deep.equal([{ n: 1 }, { n: 2 }]);
      expect(lettersOf(n.letters)).to.deep.equal([['TRUNCATED', ndjson.length - 1, 1, '7b']]);
      const json = Buffer.concat([utf16('\ufeff[{"n":1},{"n":"x"}]', order), Buffer.of(0x20)]);
      const j = await ingestFiles({ paths: file(`half.${order}.json`, json), format: 'json', chunkBytes: 7 });
      expect(j.rows).to.deep.equal([{ n: 1 }, { n: 'x' }]);
      expect(lettersOf(j.letters)).to.deep.equal([['TRUNCATED', json.length - 1, 1, '20']]);
    });

    it(`reads a UTF-16${order.toUpperCase()} file of a BOM and whitespace as empty (EMPTY_FILE), and one of a BOM and half a character as that byte`, async () => {
      const bom = utf16('\ufeff', order);
      for (const format of ['ndjson', 'json'] as const) {
        const blank = await ingestFiles({ paths: file(`blank.${order}.${format}`, Buffer.concat([bom, utf16(' \r\n\t', order)])), format, chunkBytes: 3 });
        expect([blank.rows, blank.letters.map((l) => [l.code, l.position])], format).to.deep.equal([[], [['EMPTY_FILE', `${blank.letters[0]?.position.split('@')[0]}@0`]]]);
        const half = await ingestFiles({ paths: file(`half-blank.${order}.${format}`, Buffer.concat([bom, Buffer.of(0x20)])), format });
        expect([half.rows, lettersOf(half.letters)], format).to.deep.equal([[], [['TRUNCATED', 2, 1, '20']]]);
      }
    });
  }
});
