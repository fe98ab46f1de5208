import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { tap } from 'rxjs';
import { fromFiles, type FromFilesOptions } from '../../../connectors/files';
import { ConfigError, ConnectorError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { RecordMeta } from '../../../lib/envelope';
import type { DeadLetter } from '../../../lib/sink';
import { ingestFiles } from '../../files-ingest';
import { MemorySink, observed, tempDir } from '../../helpers';

let dir: ReturnType<typeof tempDir>;

function file(name: string, content: string | Buffer): string {
  const path = join(dir.path, name);
  writeFileSync(path, content);
  return path;
}

async function ingest(options: FromFilesOptions) {
  const source = observed(fromFiles(options));
  const sink = new MemorySink<unknown>();
  const deadLetters = new MemorySink<DeadLetter>();
  const pipeline = new Pipeline({ source, sink, deadLetters, batch: { rows: 7, maxWaitMs: 5 }, deadLetterBatch: { maxWaitMs: 1 } });
  let error: unknown;
  const stats = await pipeline.run().catch((e: unknown) => {
    error = e;
    return pipeline.stats;
  });
  return { rows: sink.rows, letters: deadLetters.rows, stats, error, source };
}

const records = (n: number, from = 1) => Array.from({ length: n }, (_, i) => ({ id: from + i, name: `café ${from + i}` }));

describe('fromFiles', () => {
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());

  for (const chunkBytes of [1, 7, 64, 256 * 1024]) {
    it(`frames NDJSON the same whatever the read size (${chunkBytes} bytes)`, async () => {
      const text = '\ufeff' + records(50).map((r) => JSON.stringify(r)).join('\r\n') + '\n\n  \n';
      const { rows, letters, stats } = await ingest({ paths: file('a.ndjson', text), chunkBytes });
      expect(rows).to.deep.equal(records(50));
      expect(letters).to.deep.equal([]);
      expect(stats.read).to.equal(50);
    });

    it(`streams JSON arrays element by element (${chunkBytes} bytes)`, async () => {
      const nested = { id: 99, note: 'a "quoted" ] and } and \\ inside', list: [1, [2, { x: '[' }]], ok: true };
      const text = `\ufeff [ \n${records(20).map((r) => JSON.stringify(r, null, 2)).join(' ,\n')}, ${JSON.stringify(nested)} , 42, "s", null ]\n`;
      const { rows, letters } = await ingest({ paths: file('a.json', text), chunkBytes });
      expect(rows).to.deep.equal([...records(20), nested, 42, 's', null]);
      expect(letters).to.deep.equal([]);
    });
  }

  it('puts file, record number, line and byte offset in meta and in dead letters', async () => {
    const lines = ['{"id":1}', '{"id":2', '', '{"id":3}'];
    const path = file('pos.ndjson', lines.join('\n'));
    const { rows, letters } = await ingest({ paths: path, vendor: 'acme' });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(letters).to.have.length(1);
    expect(letters[0]).to.include({ position: `${path}@9`, vendor: 'acme', stage: 'parse', code: 'PARSE_JSON', raw: '{"id":2' });
    expect(letters[0]!.message).to.match(/^line 2: /);
  });

  it("gives each record's meta every field by name and in JSON, the position made from file and offset", async () => {
    const path = file('meta.ndjson', '{"id":1}\n\n{"id":2}\n');
    const { metas } = await ingestFiles({ paths: path, vendor: 'acme' });
    const fields = (m: RecordMeta) => [m.source, m.position, m.vendor, m.file, m.record, m.line, m.offset, m.attempt, typeof m.receivedAt];
    expect(metas.map(fields)).to.deep.equal([
      ['files', `${path}@0`, 'acme', path, 1, 1, 0, 1, 'number'],
      ['files', `${path}@10`, 'acme', path, 2, 3, 10, 1, 'number'],
    ]);
    metas[1]!.schemaVersion = '3';
    const json = JSON.parse(JSON.stringify(metas[1])) as RecordMeta;
    expect(json).to.deep.equal({ source: 'files', position: `${path}@10`, vendor: 'acme', file: path, record: 2, line: 3, offset: 10, receivedAt: metas[1]!.receivedAt, attempt: 1, schemaVersion: '3' });
    // Without a vendor, none is named.
    const { metas: plain } = await ingestFiles({ paths: path });
    expect(JSON.parse(JSON.stringify(plain[0]))).to.not.have.property('vendor');
    expect(plain[0]!.vendor).to.equal(undefined);
  });

  it('dead-letters a line that is not UTF-8, keeping its bytes, and goes on', async () => {
    const bad = Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0x5a, 0xfc, 0x72, 0x69, 0x63, 0x68, 0x22, 0x7d]); // {"n":"Z\xfcrich"} in Latin-1
    const content = Buffer.concat([Buffer.from('{"id":1}\n'), bad, Buffer.from('\n{"id":2}\n')]);
    const { rows, letters } = await ingest({ paths: file('latin1.ndjson', content) });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 2 }]);
    expect(letters).to.have.length(1);
    expect(letters[0]).to.include({ code: 'INVALID_UTF8', raw_encoding: 'base64', raw: bad.toString('base64') });
  });

  it('dead-letters the cut-off element of a truncated JSON array, keeping those before it', async () => {
    const text = `[${JSON.stringify({ id: 1 })},${JSON.stringify({ id: 2 })},{"id":3,"na`;
    const { rows, letters, source } = await ingest({ paths: file('cut.json', text), chunkBytes: 5 });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 2 }]);
    expect(letters).to.have.length(1);
    expect(letters[0]).to.include({ code: 'TRUNCATED', raw: '{"id":3,"na' });
    expect(source.acked).to.have.length(3);
    expect(source.nacked).to.deep.equal([]);
  });

  it('reports an array that never closes', async () => {
    const { rows, letters } = await ingest({ paths: file('open.json', '[{"id":1}, {"id":2}\n') });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 2 }]);
    expect(letters.map((l) => l.code)).to.deep.equal(['TRUNCATED']);
  });

  it('reports an empty JSON file, a file that is not an array, and data after the array', async () => {
    const empty = await ingest({ paths: file('empty.json', '') });
    expect(empty.letters.map((l) => [l.code, l.message])).to.deep.equal([['EMPTY_FILE', 'empty file: expected a JSON array']]);
    const object = await ingest({ paths: file('object.json', '{"id":1}') });
    expect(object.rows).to.deep.equal([]);
    expect(object.letters.map((l) => l.code)).to.deep.equal(['NOT_ARRAY']);
    const trailing = await ingest({ paths: file('trailing.json', '[1] [2]') });
    expect(trailing.rows).to.deep.equal([1]);
    expect(trailing.letters.map((l) => l.code)).to.deep.equal(['NOT_ARRAY']);
  });

  describe('an empty file gives one EMPTY_FILE dead letter at its start, whatever its format', () => {
    const formats = [
      { name: 'bookings.ndjson', expected: 'NDJSON records, one per line' },
      { name: 'bookings.json', expected: 'a JSON array' },
      { name: 'bookings.csv', expected: 'CSV records' },
      { name: 'bookings.xml', expected: 'an XML document', xml: { record: 'Booking' } },
    ];
    const contents: [string, string | Buffer][] = [
      ['no bytes', ''],
      ['a byte order mark and blank lines', '\ufeff\n \r\n\t\n'],
      ['gzip of nothing', gzipSync(Buffer.alloc(0))],
    ];
    for (const { name, expected, xml } of formats) {
      for (const [what, content] of contents) {
        it(`${name}: ${what}`, async () => {
          const path = file(name, content);
          const { rows, letters, stats, error, source } = await ingest({ paths: path, ...(xml ? { xml } : {}) });
          expect([rows, stats.read, stats.deadLettered, error]).to.deep.equal([[], 1, 1, undefined]);
          expect(letters).to.have.length(1);
          expect(letters[0]).to.include({ source: 'files', position: `${path}@0`, stage: 'source', code: 'EMPTY_FILE', message: `empty file: expected ${expected}` });
          expect(source.acked).to.deep.equal([`${path}@0`]);
        });
      }
    }

    it('a file with a record, or a CSV file with only its header, is not empty', async () => {
      const one = await ingest({ paths: file('one.ndjson', '\n{"id":1}\n') });
      expect([one.rows, one.letters]).to.deep.equal([[{ id: 1 }], []]);
      const header = await ingest({ paths: file('header.csv', 'id,name\n') });
      expect([header.rows, header.letters, header.stats.read]).to.deep.equal([[], [], 0]);
    });
  });

  it('dead-letters records over the size limit without holding them, and goes on', async () => {
    const huge = JSON.stringify({ id: 2, blob: 'x'.repeat(50_000) });
    const ndjson = await ingest({ paths: file('big.ndjson', `{"id":1}\n${huge}\n{"id":3}\n`), maxRecordBytes: 1000, chunkBytes: 512 });
    expect(ndjson.rows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(ndjson.letters.map((l) => l.code)).to.deep.equal(['RECORD_TOO_LARGE']);
    expect(ndjson.letters[0]!.raw.length).to.be.at.most(1024);
    const array = await ingest({ paths: file('big.json', `[{"id":1},${huge},{"id":3}]`), maxRecordBytes: 1000, chunkBytes: 512 });
    expect(array.rows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(array.letters.map((l) => l.code)).to.deep.equal(['RECORD_TOO_LARGE']);
  });

  it('dead-letters elements nested deeper than the limit', async () => {
    const deep = '['.repeat(100) + ']'.repeat(100);
    const { rows, letters } = await ingest({ paths: file('deep.json', `[{"id":1},${deep},{"id":3}]`), maxDepth: 64 });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(letters.map((l) => l.code)).to.deep.equal(['TOO_DEEP']);
  });

  it('reads a directory in name order, by extension, with a vendor per file', async () => {
    file('b.ndjson', '{"f":"b"}\n');
    file('a.json', '[{"f":"a"}]');
    const source = fromFiles({ paths: dir.path, vendor: (path) => (path.endsWith('.json') ? 'json-vendor' : 'ndjson-vendor') });
    const sink = new MemorySink<unknown>();
    const vendors: string[] = [];
    await new Pipeline({
      source,
      transform: tap((e) => vendors.push(e.meta.vendor!)),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
    }).run();
    expect(sink.rows).to.deep.equal([{ f: 'a' }, { f: 'b' }]);
    expect(vendors).to.deep.equal(['json-vendor', 'ndjson-vendor']);
  });

  it("never skips a directory's file in silence: one no format reads is a dead letter naming the option", async () => {
    file('a.ndjson', '{"f":"a"}\n');
    file('b.xml', '<Bookings><Booking id="1"/></Bookings>');
    file('notes.txt', 'not a record');
    file('.DS_Store', 'hidden files are left alone');
    mkdirSync(join(dir.path, 'done'));
    const { rows, letters, stats } = await ingest({ paths: dir.path, vendor: 'acme' });
    expect(rows).to.deep.equal([{ f: 'a' }]);
    expect(letters.map((l) => [l.position, l.vendor, l.stage, l.code, l.message])).to.deep.equal([
      [`${join(dir.path, 'b.xml')}@0`, 'acme', 'source', 'UNREADABLE_FILE', 'b.xml is XML: set xml.record to the element that holds one record'],
      [`${join(dir.path, 'notes.txt')}@0`, 'acme', 'source', 'UNREADABLE_FILE', `cannot tell the format of notes.txt from its extension: set format (or keep it out of ${dir.path})`],
    ]);
    expect(stats).to.include({ read: 3, written: 1, deadLettered: 2 });
    // With xml set, the XML file is read.
    const withXml = await ingest({ paths: dir.path, xml: { record: 'Booking' } });
    expect(withXml.rows).to.have.length(2);
    expect(withXml.letters.map((l) => l.code)).to.deep.equal(['UNREADABLE_FILE']);
  });

  it('fails with a clear error for an unreadable path, before reading anything', async () => {
    const { error, stats } = await ingest({ paths: [file('ok.ndjson', '{"id":1}\n'), join(dir.path, 'missing.ndjson')] });
    expect(error).to.be.instanceOf(ConnectorError);
    expect((error as Error).message).to.equal(`cannot read ${join(dir.path, 'missing.ndjson')}: ENOENT`);
    expect(stats.read).to.equal(0);
  });

  it('refuses bad options at construction', () => {
    expect(() => fromFiles({ paths: [] })).to.throw(ConfigError, 'paths must name at least one file or directory');
    expect(() => fromFiles({ paths: 'a', maxRecordBytes: 0 })).to.throw(ConfigError, 'maxRecordBytes must be an integer >= 1, got 0');
    expect(() => fromFiles({ paths: 'a', format: 'yaml' as never })).to.throw(ConfigError, `format must be one of 'ndjson', 'json', 'csv', 'xml', got "yaml"`);
    expect(() => fromFiles({ paths: 'a', format: 'xml' })).to.throw(ConfigError, "xml.record is required for XML: name the element that holds one record, e.g. { record: 'Booking' }");
  });
});
