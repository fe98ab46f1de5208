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

  it('dead-letters half a character at the end of a UTF-16 NDJSON or JSON file, never drops it', async () => {
    const ndjson = Buffer.concat([Buffer.from('\ufeff{"n":1}\n{"n":2}', 'utf16le'), Buffer.of(0x7b)]);
    const n = await ingestFiles({ paths: file('half.ndjson', ndjson), chunkBytes: 5 });
    expect(n.rows).to.deep.equal([{ n: 1 }]);
    expect(n.letters.map((l) => [l.code, l.raw])).to.deep.equal([['PARSE_JSON', '{"n":2}\ufffd']]);
    // A high surrogate with nothing after it.
    const json = Buffer.from('\ufeff[{"n":1},{"n":"\ud83c"}]\ud83c', 'utf16le');
    const j = await ingestFiles({ paths: file('half.json', json), chunkBytes: 7 });
    expect(j.rows).to.deep.equal([{ n: 1 }, { n: '\ufffd' }]);
    expect(j.letters.map((l) => [l.code, l.raw])).to.deep.equal([['NOT_ARRAY', '\ufffd']]);
  });
});
