import { expect } from 'chai';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync, deflateSync } from 'node:zlib';
import { readBody, type ReadBodyOptions } from '../../../lib/http';

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

  it('refuses a body shorter than its Content-Length so far that does not end in time', async () => {
    options = { limit: 1000, timeoutMs: 100 };
    const sending = send([Buffer.from('a'.repeat(5)), Buffer.from('b'.repeat(5))], { 'content-length': '10' }, 300);
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
    results = [];
    await send([deflateSync('x')], { 'content-encoding': 'deflate' });
    expect((await settled())?.result).to.equal('unsupportedEncoding');
  });
});

/**
 * What readBody leaves on the request once it has its answer: none of its listeners (a
 * refused body's later bytes would still reach them, and hold the request), no decoder piped
 * from it (a pipe listens to 'data' too), no timer of its own still running.
 */
describe('lib/http readBody: clean-up once the body is given or refused', () => {
  let server: Server;
  let url: string;
  let options: ReadBodyOptions;
  let seen: Promise<Leftovers>;
  let onSeen: (leftovers: Leftovers) => void;

  interface Leftovers {
    result: string;
    /** Listeners on the request added by readBody and still there, per event. */
    listeners: Record<string, number>;
    /** Timers added by readBody and still running. */
    timers: number;
    /** Bytes told to onBytes after the answer, while the sender goes on sending. */
    bytesAfter: number;
  }

  const EVENTS = ['data', 'end', 'close', 'error', 'readable'];
  const timers = () => process.getActiveResourcesInfo().filter((type) => type === 'Timeout').length;

  before(async () => {
    server = createServer((request, response) => {
      const listeners = () => Object.fromEntries(EVENTS.map((event) => [event, request.listenerCount(event)]));
      const before = listeners();
      const timersBefore = timers();
      let answered = false;
      let bytesAfter = 0;
      void readBody(request, { ...options, onBytes: (n) => answered && (bytesAfter += n) }).then((body) => {
        answered = true;
        const after = listeners();
        const timersAfter = timers();
        // The sender goes on sending a refused body for a while: what reaches readBody now?
        setTimeout(() => {
          onSeen({
            result: typeof body === 'string' ? body : `${body.length}`,
            listeners: Object.fromEntries(EVENTS.map((event) => [event, after[event]! - before[event]!])),
            timers: timersAfter - timersBefore,
            bytesAfter,
          });
          response.writeHead(typeof body === 'string' ? 413 : 200, { connection: 'close' });
          response.end();
        }, 100);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    seen = new Promise((resolve) => (onSeen = resolve));
  });

  /** Sends `first`, then more chunks every 10 ms until the server answers. */
  const send = (first: Buffer, headers: Record<string, string> = {}, more?: Buffer) =>
    new Promise<void>((resolve) => {
      const req = httpRequest(url, { method: 'POST', headers }, (res) => {
        res.resume();
        res.on('end', resolve);
        req.destroy();
      });
      req.on('error', () => resolve());
      req.write(first);
      if (!more) return req.end();
      const timer = setInterval(() => (req.destroyed ? clearInterval(timer) : req.write(more)), 10);
      req.on('close', () => clearInterval(timer));
    });

  const clean = { listeners: Object.fromEntries(EVENTS.map((event) => [event, 0])), timers: 0, bytesAfter: 0 };

  it('a body given whole leaves no listener and no timer behind', async () => {
    options = { limit: 1000, timeoutMs: 60_000 };
    await send(Buffer.from('a'.repeat(500)));
    expect(await seen).to.deep.equal({ result: '500', ...clean });
  });

  it('a body refused as too large stops taking bytes, and leaves no listener and no timer behind', async () => {
    options = { limit: 1000, timeoutMs: 60_000 };
    await send(Buffer.from('a'.repeat(1001)), {}, Buffer.from('b'.repeat(100)));
    expect(await seen).to.deep.equal({ result: 'tooLarge', ...clean });
  });

  it('a compressed body refused as too large is unpiped from its decoder, and leaves no listener and no timer behind', async () => {
    options = { limit: 1000, timeoutMs: 60_000, decompress: true };
    const bomb = gzipSync(Buffer.alloc(1024 * 1024));
    await send(bomb.subarray(0, bomb.length - 8), { 'content-encoding': 'gzip' }, Buffer.from('c'.repeat(100)));
    expect(await seen).to.deep.equal({ result: 'tooLarge', ...clean });
  });

  it('a body refused for its time leaves no listener behind', async () => {
    options = { limit: 1000, timeoutMs: 50, decompress: true };
    await send(gzipSync('x').subarray(0, 5), { 'content-encoding': 'gzip' }, Buffer.alloc(0));
    expect(await seen).to.deep.equal({ result: 'timeout', ...clean });
  });
});
