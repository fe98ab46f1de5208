import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fromPoll } from '../../../connectors/poll';
import { fromWebhook } from '../../../connectors/webhook';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError } from '../../../lib/errors';
import { checkJsonBytes, checkJsonText, hasMoreOpenings, jsonTooDeep, resolveRecordLimits, tooDeep, tooLarge, valueTooDeep } from '../../../lib/limits';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../../../lib/sink';
import { AccessControl } from '../../../lib/security/access';
import { parse } from '../../../operators/parse';
import { MemorySink, scratchDir } from '../../helpers';
import { post } from '../../webhookClient';
import { ingestFiles } from '../../files-ingest';

const deep = (levels: number) => '['.repeat(levels) + ']'.repeat(levels);
const deepObject = (levels: number) => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);

/** A sink that encodes like toClickHouse (a value too deep for JSON.stringify would die here, as ENCODE) and keeps the rows it wrote. */
class EncodingSink<T> implements Sink<T> {
  readonly name = 'encoding';
  readonly rows: unknown[] = [];
  encode(value: T): string {
    return JSON.stringify(value);
  }
  async write(batch: Batch<T>): Promise<void> {
    const body = batch.encoded!.body.toString('utf8');
    for (const line of body.split('\n')) if (line !== '') this.rows.push(JSON.parse(line));
  }
}

describe('record limits: the same at every entry', function () {
  this.timeout(60_000);
  const dir = scratchDir();

  it('finds nesting past the limit in text without parsing, strings and escapes skipped', () => {
    expect(jsonTooDeep(deep(64), 64)).to.equal(false);
    expect(jsonTooDeep(deep(65), 64)).to.equal(true);
    expect(jsonTooDeep(`{"a":"${'['.repeat(200)}"}`, 64)).to.equal(false);
    expect(jsonTooDeep(`{"a":"\\"${'['.repeat(200)}"}`, 64)).to.equal(false);
    expect(jsonTooDeep(`[${'[],'.repeat(200)}[]]`, 64)).to.equal(false);
    expect(valueTooDeep(JSON.parse(deepObject(64)), 64)).to.equal(false);
    expect(valueTooDeep(JSON.parse(deepObject(65)), 64)).to.equal(true);
    expect(valueTooDeep(JSON.parse(deep(100_000)), 64)).to.equal(true);
    expect(checkJsonText('[1]', 10, 'line 1', resolveRecordLimits({ maxRecordBytes: 5 }))).to.deep.equal({ stage: 'source', code: 'RECORD_TOO_LARGE', message: 'line 1 is longer than 5 bytes', path: '' });
    expect(() => resolveRecordLimits({ maxDepth: 0 })).to.throw(ConfigError, 'maxDepth must be an integer >= 1, got 0');
  });

  it('counts opening brackets of both kinds, and finds depth at the limit among more brackets than it', () => {
    expect(hasMoreOpenings('{"a":[1]}', 2)).to.equal(false);
    expect(hasMoreOpenings('{"a":[{}]}', 2)).to.equal(true);
    expect(hasMoreOpenings('[[', 2)).to.equal(false);
    expect(hasMoreOpenings('{{{', 2)).to.equal(true);
    expect(hasMoreOpenings('"no brackets at all"', 0)).to.equal(false);
    // More brackets than the limit, none deeper than it: a scan, which must close them too.
    expect(jsonTooDeep(`[${deep(63)},[]]`, 64)).to.equal(false);
    expect(jsonTooDeep(`[${'{},'.repeat(200)}{}]`, 64)).to.equal(false);
    expect(jsonTooDeep(`[${deepObject(63)},{}]`, 64)).to.equal(false);
    expect(jsonTooDeep(`[${deepObject(64)},{}]`, 64)).to.equal(true);
  });

  it('refuses past the limits, not at them, with the stage the caller names (the source by default)', () => {
    const limits = resolveRecordLimits({ maxRecordBytes: 5, maxDepth: 2 });
    expect(tooLarge('line 1', 5, limits)).to.equal(undefined);
    expect(tooLarge('line 1', 6, limits)).to.deep.equal({ stage: 'source', code: 'RECORD_TOO_LARGE', message: 'line 1 is longer than 5 bytes', path: '' });
    expect(tooLarge('line 1', 6, limits, 'parse')!.stage).to.equal('parse');
    expect(tooDeep('line 2', limits)).to.deep.equal({ stage: 'source', code: 'TOO_DEEP', message: 'line 2 nests deeper than 2 levels', path: '' });
    expect(checkJsonBytes(Buffer.from('[[[1]]]'), 'the body')).to.equal(undefined);
    expect(checkJsonBytes(Buffer.from('[[[1]]]'), 'the body', limits)).to.deep.equal({ stage: 'source', code: 'RECORD_TOO_LARGE', message: 'the body is longer than 5 bytes', path: '' });
    expect(checkJsonBytes(Buffer.from('[[1]]'), 'the body', limits, 'parse')).to.equal(undefined);
    expect(checkJsonBytes(Buffer.from('[[[]]]'), 'the body', { maxRecordBytes: 6, maxDepth: 2 }, 'parse')).to.deep.equal({ stage: 'parse', code: 'TOO_DEEP', message: 'the body nests deeper than 2 levels', path: '' });
    // Unprefixed names by default, prefixed when asked.
    expect(() => resolveRecordLimits({ maxRecordBytes: 0.5 })).to.throw(ConfigError).with.property('message', 'maxRecordBytes must be an integer >= 1, got 0.5');
    expect(() => resolveRecordLimits({ maxDepth: 0 }, 'limits.')).to.throw(ConfigError).with.property('message', 'limits.maxDepth must be an integer >= 1, got 0');
  });

  it('dead-letters a 100,000-deep NDJSON line at the source, where it entered, and stores the lines around it', async () => {
    const path = dir.file('deep.ndjson', `{"id":1}\n${deep(100_000)}\n{"id":3}\n`);
    const { rows, letters, stats } = await ingestFiles({ paths: path });
    expect(rows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(letters.map((l) => [l.stage, l.code, l.message, l.raw_bytes])).to.deep.equal([['source', 'TOO_DEEP', 'line 2 nests deeper than 64 levels', 200_000]]);
    expect(stats).to.include({ read: 3, written: 2, deadLettered: 1 });
  });

  it('gives the same code and message shape in every file format', async () => {
    const ndjson = await ingestFiles({ paths: dir.file('a.ndjson', `${deepObject(3)}\n`), maxDepth: 2 });
    const json = await ingestFiles({ paths: dir.file('a.json', `[${deepObject(3)}]`), maxDepth: 2 });
    const xml = await ingestFiles({ paths: dir.file('a.xml', '<r><B><a><b><c>1</c></b></a></B></r>'), xml: { record: 'B' }, maxDepth: 2 });
    const csv = await ingestFiles({ paths: dir.file('a.csv', `h\n${'x'.repeat(50)}\n`), maxRecordBytes: 20 });
    const line = await ingestFiles({ paths: dir.file('b.ndjson', `"${'x'.repeat(50)}"\n`), maxRecordBytes: 20 });
    const element = await ingestFiles({ paths: dir.file('b.json', `["${'x'.repeat(50)}"]`), maxRecordBytes: 20 });
    const shown = (letters: DeadLetter[]) => letters.map((l) => `${l.code} ${l.message}`);
    expect([...shown(ndjson.letters), ...shown(json.letters), ...shown(xml.letters)]).to.deep.equal([
      'TOO_DEEP line 1 nests deeper than 2 levels',
      'TOO_DEEP element at byte 1 nests deeper than 2 levels',
      'TOO_DEEP record at line 1 nests deeper than 2 levels',
    ]);
    expect([...shown(csv.letters), ...shown(line.letters), ...shown(element.letters)]).to.deep.equal([
      'RECORD_TOO_LARGE record at line 2 is longer than 20 bytes',
      'RECORD_TOO_LARGE line 1 is longer than 20 bytes',
      'RECORD_TOO_LARGE element at byte 1 is longer than 20 bytes',
    ]);
  });

  for (const format of ['json', 'ndjson'] as const) {
    it(`parse (${format}) refuses a payload nested too deep before a sink's encoder meets it`, async () => {
      const sink = new EncodingSink<unknown>();
      const deadLetters = new MemorySink<DeadLetter>();
      const payloads = format === 'json' ? ['{"id":1}', deep(100_000)] : [`{"id":1}\n${deep(100_000)}\n{"id":3}`];
      const stats = await new Pipeline({ source: fromIterable(payloads), transform: parse({ format }), sink, deadLetters, deadLetterBatch: { maxWaitMs: 1 } }).run();
      expect(deadLetters.rows.map((l) => [l.stage, l.code, l.message])).to.deep.equal([['parse', 'TOO_DEEP', `${format === 'json' ? 'payload' : 'line 2'} nests deeper than 64 levels`]]);
      expect(sink.rows).to.deep.equal(format === 'json' ? [{ id: 1 }] : [{ id: 1 }, { id: 3 }]);
      expect(stats.nacked).to.equal(0);
    });
  }

  it('parse refuses a payload over maxRecordBytes', async () => {
    const deadLetters = new MemorySink<DeadLetter>();
    await new Pipeline({ source: fromIterable(['"short"', `"${'x'.repeat(100)}"`]), transform: parse({ maxRecordBytes: 50 }), sink: new MemorySink(), deadLetters, deadLetterBatch: { maxWaitMs: 1 } }).run();
    expect(deadLetters.rows.map((l) => [l.code, l.message])).to.deep.equal([['RECORD_TOO_LARGE', 'payload is longer than 50 bytes']]);
  });

  describe('sources that parse for themselves', () => {
    let server: Server | undefined;
    afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

    it('fromPoll dead-letters a page item nested too deep, and keeps the rest of the page', async () => {
      const body = `{"data":[{"id":"a"},${deep(100_000)},{"id":"c"}]}`;
      server = createServer((request, response) => {
        const page = new URL(request.url!, 'http://x').searchParams.get('page');
        response.setHeader('content-type', 'application/json');
        response.end(page === '1' ? body : '{"data":[]}');
      });
      await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`;
      const sink = new EncodingSink<unknown>();
      const deadLetters = new MemorySink<DeadLetter>();
      const source = fromPoll({ vendor: 'acme', url, pagination: { type: 'page', size: 3 }, once: true, cursorFile: `${dir.path}/cursor.json`, requestsPerSecond: 100 });
      const stats = await new Pipeline({ source, sink, deadLetters, deadLetterBatch: { maxWaitMs: 1 }, batch: { maxWaitMs: 5 } }).run();
      expect(deadLetters.rows.map((l) => [l.stage, l.code, l.message])).to.deep.equal([['source', 'TOO_DEEP', `item 2 of acme@/1 nests deeper than 64 levels`]]);
      expect(sink.rows).to.deep.equal([{ id: 'a' }, { id: 'c' }]);
      expect(stats.nacked).to.equal(0);
    });

    it('fromWebhook answers 400 TOO_DEEP to a JSON body nested too deep', async () => {
      const secret = 'a-webhook-secret-of-24-bytes';
      const { token, record } = AccessControl.issueKey('acme-hook', ['vendor-acme']);
      const access = new AccessControl({ roles: { 'vendor-acme': ['webhook:post:acme'] }, keys: [record] });
      const source = fromWebhook({ port: 0, vendors: { acme: { secrets: [secret] } }, access });
      const pipeline = new Pipeline({ source, sink: new EncodingSink<unknown>(), deadLetters: new MemorySink<DeadLetter>() });
      await pipeline.start();
      try {
        const answer = await post(`${await source.url()}/webhooks/acme`, deep(100_000), { secret, key: token });
        expect(answer.status).to.equal(400);
        expect(answer.body).to.include('TOO_DEEP').and.include('the body nests deeper than 64 levels');
      } finally {
        await pipeline.stop();
      }
    });
  });
});
