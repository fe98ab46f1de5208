import { expect } from 'chai';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fromPoll, type FromPollOptions } from '../../../connectors/poll';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, scratchDir } from '../../helpers';

/** A vendor API on loopback that answers each request with `answer`, and remembers what it was asked. */
class Api {
  readonly asked: { path: string; authorization: string | undefined }[] = [];
  readonly #server: Server;
  base = '';

  constructor(private readonly answer: (request: IncomingMessage, response: ServerResponse, api: Api) => void) {
    this.#server = createServer((request, response) => {
      this.asked.push({ path: request.url!, authorization: request.headers.authorization });
      this.answer(request, response, this);
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this.base;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const json = (response: ServerResponse, body: unknown, headers: Record<string, string> = {}) => {
  response.writeHead(200, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
};

/**
 * A vendor API that turns hostile: pages past any sane size (and compression bombs), next
 * links and redirects to other hosts. The credentials in the request headers never leave
 * the vendor's origin, no page is held whole past maxPageBytes, and each refusal is a dead
 * letter while the records before it are stored.
 */
describe('fromPoll: a hostile vendor API', function () {
  this.timeout(60_000);
  const dir = scratchDir();
  const apis: Api[] = [];
  const api = async (answer: ConstructorParameters<typeof Api>[0]) => {
    const made = new Api(answer);
    apis.push(made);
    await made.start();
    return made;
  };
  afterEach(async () => {
    await Promise.all(apis.splice(0).map((a) => a.stop()));
  });

  const run = async (options: Omit<FromPollOptions, 'vendor' | 'cursorFile'>) => {
    const sink = new MemorySink<unknown>();
    const deadLetters = new MemorySink<DeadLetter>();
    const source = fromPoll({ vendor: 'acme', cursorFile: join(dir.path, `cursor-${Date.now()}-${Math.random()}.json`), once: true, requestsPerSecond: 100, retry: { retries: 1, initialDelayMs: 5, maxDelayMs: 10 }, headers: { authorization: 'Bearer secret' }, ...options });
    const stats = await new Pipeline<unknown>({ source, sink, deadLetters, batch: { rows: 10, maxWaitMs: 10 }, deadLetterBatch: { maxWaitMs: 1 } }).run();
    return { rows: sink.rows, letters: deadLetters.rows, stats, source };
  };

  it('refuses a page over maxPageBytes as it arrives, and a compression bomb by its decompressed size', async () => {
    const big = { data: [{ id: 'a' }], pad: 'x'.repeat(200_000) };
    const plain = await api((_, response) => json(response, big));
    const refused = await run({ url: `${plain.base}/items`, pagination: { type: 'cursor', next: 'next' }, maxPageBytes: 100_000 });
    expect(refused.rows).to.deep.equal([]);
    expect(refused.letters.map((l) => [l.stage, l.code, l.message])).to.deep.equal([
      ['poll', 'PAGE_TOO_LARGE', `${plain.base}/items: the page is over maxPageBytes (100000 bytes): ask for smaller pages or raise maxPageBytes`],
    ]);
    // 50 MB of zeros in 50 KB: refused by what it decompresses to, not by what was sent.
    const bomb = gzipSync(Buffer.concat([Buffer.from('{"data":[{"id":"b"}],"pad":"'), Buffer.alloc(50_000_000, 0x30), Buffer.from('"}')]));
    expect(bomb.length).to.be.below(100_000);
    const bombing = await api((_, response) => {
      response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      response.end(bomb);
    });
    const heapBefore = process.memoryUsage().heapUsed;
    const defused = await run({ url: `${bombing.base}/items`, pagination: { type: 'cursor', next: 'next' }, maxPageBytes: 1_000_000 });
    expect(defused.letters.map((l) => l.code)).to.deep.equal(['PAGE_TOO_LARGE']);
    expect(defused.rows).to.deep.equal([]);
    expect(process.memoryUsage().heapUsed - heapBefore, 'the bomb was not held whole').to.be.below(40_000_000);
    // Within the limit, the same page is read.
    const read = await run({ url: `${plain.base}/items`, pagination: { type: 'cursor', next: 'next' }, maxPageBytes: 300_000 });
    expect([read.rows, read.letters]).to.deep.equal([[{ id: 'a' }], []]);
    expect(() => fromPoll({ vendor: 'acme', url: plain.base, pagination: { type: 'link' }, cursorFile: join(dir.path, 'c.json'), maxPageBytes: 0 })).to.throw('maxPageBytes');
  });

  it('follows next links within the vendor origin only: a link to another host is a dead letter, never asked, credentials kept', async () => {
    const elsewhere = await api((_, response) => json(response, [{ id: 'stolen' }]));
    const vendor = await api((request, response, self) => {
      if (request.url === '/items') return json(response, [{ id: 'p1' }], { link: `<${self.base}/items?page=2>; rel="next"` });
      if (request.url === '/items?page=2') return json(response, [{ id: 'p2' }], { link: `<${elsewhere.base}/items?page=3>; rel="next"` });
      response.writeHead(404).end();
    });
    const { rows, letters } = await run({ url: `${vendor.base}/items`, pagination: { type: 'link' } });
    expect(rows).to.deep.equal([{ id: 'p1' }, { id: 'p2' }]);
    expect(letters.map((l) => [l.stage, l.code, l.position])).to.deep.equal([['poll', 'FOREIGN_LINK', `${elsewhere.base}/items?page=3`]]);
    expect(letters[0]!.message).to.equal(`the next page link ${elsewhere.base}/items?page=3 points to another origin than ${vendor.base}: the request's headers are not sent there`);
    expect(elsewhere.asked, 'the other host was never asked').to.deep.equal([]);
    expect(vendor.asked.map((a) => [a.path, a.authorization])).to.deep.equal([
      ['/items', 'Bearer secret'],
      ['/items?page=2', 'Bearer secret'],
    ]);
  });

  it('follows redirects within the vendor origin, refuses one to another host without asking it, and stops a redirect loop', async () => {
    const elsewhere = await api((_, response) => json(response, [{ id: 'stolen' }]));
    const vendor = await api((request, response) => {
      if (request.url?.startsWith('/old')) return response.writeHead(301, { location: '/items?v=2' }).end();
      if (request.url?.startsWith('/items')) return json(response, [{ id: 'moved' }]);
      if (request.url?.startsWith('/away')) return response.writeHead(302, { location: `${elsewhere.base}/items` }).end();
      if (request.url?.startsWith('/loop')) return response.writeHead(307, { location: '/loop' }).end();
      response.writeHead(404).end();
    });
    const followed = await run({ url: `${vendor.base}/old`, pagination: { type: 'cursor', next: 'next' } });
    expect([followed.rows, followed.letters]).to.deep.equal([[{ id: 'moved' }], []]);
    expect(vendor.asked.map((a) => [a.path, a.authorization])).to.deep.equal([
      ['/old', 'Bearer secret'],
      ['/items?v=2', 'Bearer secret'],
    ]);

    const away = await run({ url: `${vendor.base}/away`, pagination: { type: 'cursor', next: 'next' } });
    expect(away.rows).to.deep.equal([]);
    expect(away.letters.map((l) => [l.code, l.message])).to.deep.equal([
      ['FOREIGN_REDIRECT', `${vendor.base}/away redirected to ${elsewhere.base}, another origin: the request's headers are not sent there (set url to it if it is the vendor's)`],
    ]);
    expect(elsewhere.asked).to.deep.equal([]);

    const asked = vendor.asked.length;
    const loop = await run({ url: `${vendor.base}/loop`, pagination: { type: 'cursor', next: 'next' } });
    expect(loop.letters.map((l) => [l.code, l.message])).to.deep.equal([['TOO_MANY_REDIRECTS', `${vendor.base}/loop: more than 5 redirects`]]);
    expect(vendor.asked.length - asked, 'the first request and five redirects, not retried').to.equal(6);
  });
});
