import { expect } from 'chai';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync, deflateSync } from 'node:zlib';
import { readBody, type ReadBodyOptions } from '../../lib/http';

/** A server answering each request with what readBody gave: the body's length and SHA-less summary, or the refusal. */
describe('lib/http readBody: bodies bounded in size and time', () => {
  let server: Server;
  let url: string;
  let options: ReadBodyOptions;
  let results: { result: string; bytesSeen: number }[];

  before(async () => {
    server = createServer((request, response) => {
      let bytesSeen = 0;
      void readBody(request, { ...options, onBytes: (n) => (bytesSeen += n) }).then((body) => {
        results.push({ result: typeof body === 'string' ? body : `${body.length}:${body.subarray(0, 16).toString()}`, bytesSeen });
        response.writeHead(200, { connection: 'close' });
        response.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    options = { limit: 1000 };
    results = [];
  });

  /** Sends `chunks` (with a pause before each), then ends, unless `hangUp` cuts the connection after them. */
  const send = (chunks: Buffer[], headers: Record<string, string> = {}, pauseMs = 0, hangUp = false) =>
    new Promise<void>((resolve) => {
      const req = httpRequest(url, { method: 'POST', headers }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', () => resolve());
      void (async () => {
        for (const chunk of chunks) {
          if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
          req.write(chunk);
        }
        if (hangUp) {
          await new Promise((r) => setTimeout(r, 50));
          req.destroy();
          setTimeout(resolve, 100);
        } else req.end();
      })();
    });
  const settled = async () => {
    for (let i = 0; i < 100 && results.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    return results[0];
  };

  it('gives a body up to the limit whole, in any number of chunks', async () => {
    await send([Buffer.from('a'.repeat(600)), Buffer.from('b'.repeat(400))]);
    expect(await settled()).to.deep.equal({ result: `1000:${'a'.repeat(16)}`, bytesSeen: 1000 });
  });

  it('refuses a byte past the limit', async () => {
    await send([Buffer.from('a'.repeat(1001))]);
    expect((await settled())?.result).to.equal('tooLarge');
  });

  it('refuses a body that does not end in time', async () => {
    options = { limit: 1000, timeoutMs: 100 };
    const sending = send([Buffer.from('a'), Buffer.from('b')], {}, 300);
    expect((await settled())?.result).to.equal('timeout');
    await sending;
  });

  it('says when the sender goes away mid-body', async () => {
    await send([Buffer.from('partial')], { 'content-length': '100' }, 0, true);
    expect((await settled())?.result).to.equal('gone');
  });

  it('decompresses gzip and deflate where asked, the limit counting decompressed bytes (a small bomb is too large)', async () => {
    options = { limit: 1000, decompress: true };
    await send([gzipSync('x'.repeat(900))], { 'content-encoding': 'gzip' });
    expect((await settled())?.result).to.equal(`900:${'x'.repeat(16)}`);
    results = [];
    await send([deflateSync('y'.repeat(10))], { 'content-encoding': 'DEFLATE' });
    expect((await settled())?.result).to.equal(`10:${'y'.repeat(10)}`);
    results = [];
    const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024));
    expect(bomb.length).to.be.below(100 * 1024);
    await send([bomb], { 'content-encoding': 'gzip' });
    const bombed = await settled();
    expect(bombed?.result).to.equal('tooLarge');
    expect(bombed?.bytesSeen, 'compressed bytes read before it stopped').to.be.at.most(bomb.length);
  });

  it('refuses compressed bytes that do not decompress, and encodings it does not take', async () => {
    options = { limit: 1000, decompress: true };
    await send([Buffer.from('not gzip at all')], { 'content-encoding': 'gzip' });
    expect((await settled())?.result).to.equal('corrupt');
    results = [];
    await send([Buffer.from('x')], { 'content-encoding': 'br' });
    expect((await settled())?.result).to.equal('unsupportedEncoding');
    results = [];
    options = { limit: 1000 };
    await send([gzipSync('x')], { 'content-encoding': 'gzip' });
    expect((await settled())?.result).to.equal('unsupportedEncoding');
  });
});
