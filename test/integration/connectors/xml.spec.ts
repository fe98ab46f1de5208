import { expect } from 'chai';
import fs, { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fromFiles } from '../../../connectors/files';
import { ConfigError } from '../../../lib/errors';
import { scratchDir } from '../../helpers';
import { fixture, ingestFiles, readInChild, repeat, writeBig } from '../../files-ingest';

describe('fromFiles: XML', function () {
  this.timeout(120_000);
  const dir = scratchDir();
  const file = dir.file;

  for (const chunkBytes of [1, 7, 64, 256 * 1024]) {
    it(`streams record elements: attributes, namespaces, repeats as arrays, CDATA, byte offsets (${chunkBytes}-byte reads)`, async () => {
      const path = fixture('bookings.xml');
      const bytes = readFileSync(path);
      const { rows, letters, metas } = await ingestFiles({ paths: path, xml: { record: 'Booking' }, chunkBytes });
      expect(rows).to.deep.equal([
        {
          '@id': 'B-1',
          '@channel': 'web',
          Ref: 'B-1',
          Passenger: [
            { '@type': 'ADT', Name: 'Zoë Ångström' },
            { '@type': 'CHD', Name: 'Li' },
          ],
          Remark: 'pay <at> desk & smile',
          Total: { '@currency': 'EUR', '#text': '120.50' },
          Empty: '',
        },
        { '@id': 'B-2', Ref: 'B-2 & <co>', Passenger: { '@type': 'ADT', Name: 'Ana' } },
        { '@id': 'B-4', Ref: 'B-4' },
      ]);
      const offsetOf = (id: string) => bytes.indexOf(Buffer.from(`<ota:Booking id="${id}"`));
      expect(metas.map((m) => [m.record, m.line, m.offset, m.position])).to.deep.equal([
        [1, 4, offsetOf('B-1'), `${path}@${offsetOf('B-1')}`],
        [2, 12, offsetOf('B-2'), `${path}@${offsetOf('B-2')}`],
        [4, 17, offsetOf('B-4'), `${path}@${offsetOf('B-4')}`],
      ]);
      expect(letters.map((l) => [l.code, l.message, l.position, l.raw])).to.deep.equal([
        ['PARSE_XML', 'record at line 16: Unexpected close tag', `${path}@${offsetOf('B-3')}`, '<ota:Booking id="B-3"><ota:Ref>B-3</ota:Ref><ota:Bad></ota:Oops></ota:Booking>'],
      ]);
    });
  }

  it('keeps prefixes when asked, makes named elements arrays even when single, and names attribute and text keys', async () => {
    const { rows } = await ingestFiles({
      paths: fixture('bookings.xml'),
      xml: { record: 'ota:Booking', keepPrefixes: true, arrays: ['ota:Ref'], attributePrefix: '_', textKey: 'value' },
    });
    expect(rows[1]).to.deep.equal({ _id: 'B-2', 'ota:Ref': ['B-2 & <co>'], 'ota:Passenger': { _type: 'ADT', 'ota:Name': 'Ana' } });
    expect((rows[0] as Record<string, unknown>)['ota:Total']).to.deep.equal({ _currency: 'EUR', value: '120.50' });
    const { rows: other } = await ingestFiles({ paths: fixture('bookings.xml'), xml: { record: 'x:Booking' } });
    expect(other).to.deep.equal([]);
  });

  it('reads the encoding from the XML declaration, a BOM (UTF-16 LE and BE), or the option', async () => {
    const declared = await ingestFiles({ paths: fixture('latin1-declared.xml'), xml: { record: 'Booking' } });
    expect(declared.rows).to.deep.equal([{ '@city': 'Zürich', Name: 'Málaga' }]);
    const text = '<?xml version="1.0" encoding="UTF-16"?>\n<Feed>\n<Booking city="Zürich">€ 5</Booking><Booking>Ørsted</Booking></Feed>';
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    const be = Buffer.from(le).swap16();
    for (const [name, content] of [['le.xml', le], ['be.xml', be]] as const) {
      const { rows, metas, letters } = await ingestFiles({ paths: file(name, content), xml: { record: 'Booking' }, chunkBytes: 3 });
      expect(letters).to.deep.equal([]);
      expect(rows).to.deep.equal([{ '@city': 'Zürich', '#text': '€ 5' }, 'Ørsted']);
      expect(metas.map((m) => m.offset)).to.deep.equal([2 + 2 * text.indexOf('<Booking'), 2 + 2 * text.lastIndexOf('<Booking')]);
    }
    const cp1252 = Buffer.from('<Feed><Booking>\x80 12 \x8a</Booking></Feed>', 'latin1');
    const { rows } = await ingestFiles({ paths: file('cp.xml', cp1252), xml: { record: 'Booking' }, encoding: 'windows-1252' });
    expect(rows).to.deep.equal(['€ 12 Š']);
  });

  it('dead-letters a record with bytes that are not valid UTF-8, and goes on', async () => {
    const content = Buffer.concat([Buffer.from('<r><Booking>ok</Booking><Booking>Z'), Buffer.from([0xfc]), Buffer.from('rich</Booking><Booking>z</Booking></r>')]);
    const { rows, letters } = await ingestFiles({ paths: file('bad.xml', content), xml: { record: 'Booking' } });
    expect(rows).to.deep.equal(['ok', 'z']);
    expect(letters.map((l) => [l.code, l.message])).to.deep.equal([['INVALID_UTF8', 'line 1 is not valid UTF-8']]);
    // The record's own bytes, at its own offset.
    const start = content.indexOf('<Booking>Z');
    const end = content.indexOf('<Booking>z');
    expect(letters[0]).to.include({ raw_encoding: 'base64', raw: content.subarray(start, end).toString('base64'), raw_bytes: end - start });
    expect(letters[0]!.position.endsWith(`@${start}`), letters[0]!.position).to.equal(true);
  });

  it('never expands entities: a billion-laughs file is three records, one dead letter, in a 32 MB heap', async () => {
    const result = await readInChild({ paths: fixture('billion-laughs.xml'), xml: { record: 'Booking' } }, 32);
    expect(result.firstRows).to.deep.equal([
      { '@id': '1', Ref: 'ok-before' },
      { '@id': '3', Ref: 'ok-after' },
    ]);
    expect(result.letters.map((l) => [l.code, l.message])).to.deep.equal([
      ['XML_ENTITY', "record at line 16: entity &lol9; is not one of XML's own and is not expanded (DTDs are never read)"],
    ]);
    // Nor HTML's entities: only XML's five are known.
    const { rows, letters } = await ingestFiles({ paths: file('nbsp.xml', '<r><Booking>a&nbsp;b</Booking><Booking>&#233;&amp;</Booking></r>'), xml: { record: 'Booking' } });
    expect(rows).to.deep.equal(['é&']);
    expect(letters.map((l) => l.code)).to.deep.equal(['XML_ENTITY']);
  });

  it('never reads a file or opens a connection for external entities or DTDs (XXE)', async () => {
    const secret = file('secret.txt', 'TOP-SECRET-CONTENT');
    let requests = 0;
    const server: Server = createServer((_req, res) => {
      requests++;
      res.end('<!ENTITY leak "FETCHED">');
    });
    server.on('connection', () => requests++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const path = file(
      'xxe.xml',
      `<?xml version="1.0"?>
<!DOCTYPE feed SYSTEM "${url}/feed.dtd" [
  <!ENTITY file SYSTEM "file://${secret}">
  <!ENTITY remote SYSTEM "${url}/entity">
  <!ENTITY % param SYSTEM "${url}/param.dtd">
  %param;
]>
<feed><Booking>&file;</Booking><Booking>&remote;</Booking><Booking>safe</Booking></feed>`,
    );
    const opened: string[] = [];
    const originals = { open: fs.open, openSync: fs.openSync, promisesOpen: fs.promises.open, readFileSync: fs.readFileSync };
    const spy = (name: keyof typeof originals) =>
      function (this: unknown, target: unknown, ...rest: unknown[]) {
        opened.push(String(target));
        return (originals[name] as (...args: unknown[]) => unknown).call(this, target, ...rest);
      };
    Object.assign(fs, { open: spy('open'), openSync: spy('openSync'), readFileSync: spy('readFileSync') });
    fs.promises.open = spy('promisesOpen') as typeof fs.promises.open;
    let result: Awaited<ReturnType<typeof ingestFiles>>;
    try {
      result = await ingestFiles({ paths: path, xml: { record: 'Booking' } });
    } finally {
      Object.assign(fs, { open: originals.open, openSync: originals.openSync, readFileSync: originals.readFileSync });
      fs.promises.open = originals.promisesOpen;
      await new Promise((resolve) => server.close(resolve));
    }
    expect(result.rows).to.deep.equal(['safe']);
    expect(result.letters.map((l) => l.code)).to.deep.equal(['XML_ENTITY', 'XML_ENTITY']);
    expect(JSON.stringify(result.letters)).not.to.include('TOP-SECRET');
    expect(JSON.stringify(result.letters)).not.to.include('FETCHED');
    expect(requests).to.equal(0);
    expect([...new Set(opened)]).to.deep.equal([path]);
  });

  it('keeps elements named __proto__ as plain keys, polluting no prototype', async () => {
    const path = file('proto.xml', '<r><Booking><__proto__><polluted>yes</polluted></__proto__><constructor>c</constructor></Booking></r>');
    const { rows } = await ingestFiles({ paths: path, xml: { record: 'Booking' } });
    const row = rows[0] as Record<string, unknown>;
    expect(Object.getPrototypeOf(row)).to.equal(Object.prototype);
    expect(Object.keys(row)).to.deep.equal(['__proto__', 'constructor']);
    expect(JSON.stringify(row)).to.equal('{"__proto__":{"polluted":"yes"},"constructor":"c"}');
    expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
  });

  it('dead-letters a record nested deeper than maxDepth and reads the next one', async () => {
    const deep = '<a>'.repeat(10) + 'x' + '</a>'.repeat(10);
    const path = file('deep.xml', `<r><Booking>1</Booking><Booking>${deep}</Booking><Booking>3</Booking></r>`);
    const { rows, letters } = await ingestFiles({ paths: path, xml: { record: 'Booking' }, maxDepth: 5 });
    expect(rows).to.deep.equal(['1', '3']);
    expect(letters.map((l) => [l.code, l.message])).to.deep.equal([['TOO_DEEP', 'record at line 1 nests deeper than 5 levels']]);
  });

  it('gives up on a document nested a million levels deep with one dead letter, in a 32 MB heap', async () => {
    const path = join(dir.path, 'nest.xml');
    await writeBig(path, ['<r><Booking>before</Booking>', () => repeat('<a>', 1_000_000), () => repeat('</a>', 1_000_000), '</r>']);
    const result = await readInChild({ paths: path, xml: { record: 'Booking' } }, 32);
    expect(result.firstRows).to.deep.equal(['before']);
    expect(result.letters.map((l) => [l.code, l.message])).to.deep.equal([
      ['FILE_TOO_DEEP', 'line 1: elements nested deeper than 256 levels: the rest of the file is not read'],
    ]);
  });

  it('dead-letters 60 MB attribute values and text in records without holding them, in a 32 MB heap', async () => {
    const path = join(dir.path, 'huge.xml');
    await writeBig(path, [
      '<r><Booking>1</Booking><Booking note="',
      () => repeat('a', 60 * 1024 * 1024),
      '"/><Booking>3</Booking><Booking>',
      () => repeat('b', 60 * 1024 * 1024),
      '</Booking><Booking>5</Booking><!-- ',
      () => repeat('c', 10 * 1024 * 1024),
      ' --><Booking>6</Booking></r>',
    ]);
    const result = await readInChild({ paths: path, xml: { record: 'Booking' }, maxRecordBytes: 100_000 }, 32);
    expect(result.firstRows).to.deep.equal(['1', '3', '5', '6']);
    expect(result.letters.map((l) => l.code)).to.deep.equal(['RECORD_TOO_LARGE', 'RECORD_TOO_LARGE', 'XML_LIMIT']);
    expect(result.maxRssMb).to.be.below(150);
  });

  it('dead-letters the record a truncated file cuts off, keeping those before it', async () => {
    const path = file('cut.xml', '<r><Booking>1</Booking><Booking><Ref>2</Re');
    const { rows, letters } = await ingestFiles({ paths: path, xml: { record: 'Booking' } });
    expect(rows).to.deep.equal(['1']);
    expect(letters.map((l) => l.code)).to.deep.equal(['TRUNCATED']);
    expect(letters[0]!.position).to.equal(`${path}@23`);
  });

  it('reports an empty file, and a file that is not XML, once each', async () => {
    const empty = await ingestFiles({ paths: file('empty.xml', ''), xml: { record: 'Booking' } });
    expect(empty.letters.map((l) => [l.code, l.message])).to.deep.equal([['EMPTY_FILE', 'empty file: expected an XML document']]);
    const text = await ingestFiles({ paths: file('text.xml', 'not xml at all, a long line of text'), xml: { record: 'Booking' } });
    expect(text.letters.map((l) => [l.code, l.message])).to.deep.equal([
      ['PARSE_XML', 'line 1: Non-whitespace before first tag.'],
      ['PARSE_XML', 'line 1: Text data outside of root node.'],
      ['NOT_XML', 'no root element: not an XML document'],
    ]);
    const rootOnly = await ingestFiles({ paths: file('root.xml', '<?xml version="1.0"?>\n<Feed/>\n'), xml: { record: 'Booking' } });
    expect([rootOnly.rows, rootOnly.letters]).to.deep.equal([[], []]);
  });

  it('refuses bad XML options at construction, with the rule', () => {
    expect(() => fromFiles({ paths: 'a.xml' })).to.throw(ConfigError, 'a.xml is XML: set xml.record');
    expect(() => fromFiles({ paths: 'a', format: 'xml', xml: { record: '' } })).to.throw(ConfigError, `xml.record must be an element name like 'Booking' or 'ota:Booking', got ""`);
    expect(() => fromFiles({ paths: 'a', xml: { record: 'B', textKey: '' } })).to.throw(ConfigError, 'xml.textKey must be a non-empty string, got ""');
  });
});
