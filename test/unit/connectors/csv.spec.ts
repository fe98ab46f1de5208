import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { fromFiles } from '../../../connectors/files';
import { ConfigError } from '../../../lib/errors';
import { scratchDir } from '../../helpers';
import { fixture, ingestFiles } from '../../files-ingest';

describe('fromFiles: CSV', () => {
  const dir = scratchDir();
  const file = dir.file;

  for (const chunkBytes of [1, 7, 64, 256 * 1024]) {
    it(`reads a BOM, semicolons, CRLF, quoted line breaks and dead-letters ragged rows by line (${chunkBytes}-byte reads)`, async () => {
      const path = fixture('bookings-semicolon.csv');
      const bytes = readFileSync(path);
      const { rows, letters, metas, source } = await ingestFiles({ paths: path, csv: { delimiter: ';' }, chunkBytes });
      expect(rows).to.deep.equal([
        { ref: 'A-1', vendor: 'acme', note: 'plain', amount: '12.50' },
        { ref: 'A-2', vendor: 'acme', note: 'two\r\nlines; and "quotes"', amount: '7' },
        { ref: 'A-5', vendor: 'acme', note: 'café', amount: '3' },
      ]);
      // Byte offsets are of the file as stored (BOM included), lines of each record's first byte.
      const offsetOf = (text: string) => bytes.indexOf(Buffer.from(text));
      expect(metas.map((m) => [m.record, m.line, m.offset, m.position])).to.deep.equal([
        [1, 2, offsetOf('A-1'), `${path}@${offsetOf('A-1')}`],
        [2, 4, offsetOf('A-2'), `${path}@${offsetOf('A-2')}`],
        [5, 8, offsetOf('A-5'), `${path}@${offsetOf('A-5')}`],
      ]);
      expect(letters.map((l) => [l.code, l.message, l.position, l.raw])).to.deep.equal([
        ['PARSE_CSV', 'line 6: 3 fields, expected 4', `${path}@${offsetOf('A-3')}`, 'A-3;acme;ragged\r\n'],
        ['PARSE_CSV', 'line 7: 5 fields, expected 4', `${path}@${offsetOf('A-4')}`, 'A-4;acme;"x";1;extra\r\n'],
      ]);
      expect(source.acked).to.have.length(5);
    });
  }

  it('takes explicit columns (every row is data), another quote and a tab delimiter', async () => {
    const path = file('no-header.tsv', "1\t'a\tb'\t'it''s'\n2\tc\td\n");
    const { rows, letters } = await ingestFiles({ paths: path, format: 'csv', csv: { delimiter: '\t', quote: "'", columns: ['id', 'x', 'y'] } });
    expect(rows).to.deep.equal([
      { id: '1', x: 'a\tb', y: "it's" },
      { id: '2', x: 'c', y: 'd' },
    ]);
    expect(letters).to.deep.equal([]);
  });

  it('keeps ragged rows when relaxColumnCount is set, trims and skips comments', async () => {
    const path = file('relax.csv', '# exported\na,b\n 1 , 2 \n3\n');
    const { rows, letters } = await ingestFiles({ paths: path, csv: { relaxColumnCount: true, trim: true, comment: '#' } });
    expect(rows).to.deep.equal([{ a: '1', b: '2' }, { a: '3' }]);
    expect(letters).to.deep.equal([]);
  });

  it('dead-letters the first line of a record whose quote is never closed, and reads the rows after it', async () => {
    const path = fixture('unclosed-quote.csv');
    const { rows, letters, stats } = await ingestFiles({ paths: path });
    expect(rows).to.deep.equal([{ ref: 'Q-2', name: 'x' }]);
    expect(letters.map((l) => [l.code, l.message, l.position, l.raw, l.raw_bytes])).to.deep.equal([
      ['PARSE_CSV', 'line 2: Quote Not Closed: the parsing is finished with an opening quote', `${path}@9`, 'Q-1,"never closed\n', 18],
    ]);
    expect(stats.read).to.equal(2);
    // On the last line, the open quote runs to the end of the file: the file is cut off.
    const more = await ingestFiles({ paths: file('late.csv', 'ref,name\nQ-0,ok\nQ-1,"open\n') });
    expect(more.rows).to.deep.equal([{ ref: 'Q-0', name: 'ok' }]);
    expect(more.letters.map((l) => [l.code, l.raw])).to.deep.equal([['TRUNCATED', 'Q-1,"open\n']]);
  });

  // A vendor file: semicolons, BOM, CRLF, and one hotel name whose quote is never closed.
  for (const [name, row] of [
    ['rows quoted after it', (i: number) => `R-${i};"Hotel ${i}";Paris;${i},00`],
    ['a quote further down', (i: number) => `R-${i};Hotel ${i};${i % 7 === 0 ? '"Paris"' : 'Paris'};${i},00`],
    ['no other quote in the file', (i: number) => `R-${i};Hotel ${i};Paris;${i},00`],
  ] as const) {
    for (const chunkBytes of [3, 4096]) {
      it(`loses no row after a field with an unterminated quote, ${name} (${chunkBytes}-byte reads)`, async () => {
        const lines = Array.from({ length: 1000 }, (_, k) => (k === 499 ? `R-500;"Hotel X;Paris;500,00` : row(k + 1)));
        const text = `\ufeffref;hotel;city;amount\r\n${lines.join('\r\n')}\r\n`;
        const path = file('vendor.csv', text);
        const { rows, letters, stats } = await ingestFiles({ paths: path, csv: { delimiter: ';' }, chunkBytes });
        expect(rows.map((r) => (r as { ref: string }).ref)).to.deep.equal(lines.flatMap((_, k) => (k === 499 ? [] : [`R-${k + 1}`])));
        const bad = 'R-500;"Hotel X;Paris;500,00\r\n';
        expect(letters.map((l) => [l.code, l.position, l.raw, l.raw_bytes])).to.deep.equal([['PARSE_CSV', `${path}@${Buffer.from(text).indexOf(bad)}`, bad, bad.length]]);
        expect(stats).to.include({ read: 1000, written: 999, deadLettered: 1, nacked: 0 });
      });
    }
  }

  it('dead-letters a record over maxRecordBytes without holding it, then reads on from the next line', async () => {
    const huge = 'x'.repeat(300_000);
    const path = file('huge.csv', `ref,note\nH-1,ok\nH-2,"${huge}\nH-3,after\n`);
    const { rows, letters } = await ingestFiles({ paths: path, maxRecordBytes: 10_000, chunkBytes: 4096 });
    expect(letters.map((l) => [l.code, l.message, l.position])).to.deep.equal([
      ['RECORD_TOO_LARGE', 'record at line 3 is longer than 10000 bytes', `${path}@16`],
    ]);
    expect(letters[0]!.raw.length).to.be.at.most(1024);
    expect(rows).to.deep.equal([{ ref: 'H-1', note: 'ok' }, { ref: 'H-3', note: 'after' }]);
  });

  it('gives the same positions on every run (insert tokens and dead-letter keys depend on them)', async () => {
    const path = fixture('bookings-semicolon.csv');
    const first = await ingestFiles({ paths: path, csv: { delimiter: ';' }, chunkBytes: 5 });
    const second = await ingestFiles({ paths: path, csv: { delimiter: ';' }, chunkBytes: 4096 });
    expect(first.metas.map((m) => m.position)).to.deep.equal(second.metas.map((m) => m.position));
    expect(first.letters.map((l) => l.position)).to.deep.equal(second.letters.map((l) => l.position));
  });

  it('refuses bad CSV options at construction, with the rule', () => {
    expect(() => fromFiles({ paths: 'a.csv', csv: { delimiter: '' } })).to.throw(ConfigError, "csv.delimiter must be one character other than a line break, got ''");
    expect(() => fromFiles({ paths: 'a.csv', csv: { delimiter: ';;' } })).to.throw(ConfigError, "csv.delimiter must be one character other than a line break, got ';;'");
    expect(() => fromFiles({ paths: 'a.csv', csv: { quote: ',' } })).to.throw(ConfigError, "csv.quote must differ from csv.delimiter, both are ','");
    expect(() => fromFiles({ paths: 'a.csv', csv: { columns: [] } })).to.throw(ConfigError, 'csv.columns must be true or a non-empty list of non-empty names, got []');
    expect(() => fromFiles({ paths: 'a.csv', csv: { columns: ['a', 'a'] } })).to.throw(ConfigError, 'csv.columns names "a" twice');
    expect(() => fromFiles({ paths: 'a.csv', encoding: 'ebcdic' as never })).to.throw(ConfigError, /^encoding must be one of utf-8, utf8, utf-16le, utf-16be, latin1, iso-8859-1, windows-1252, cp1252, got "ebcdic"$/);
  });
});
