import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fromFiles, type FileProgress } from '../../connectors/files';
import { fromIterable } from '../../connectors/iterable';
import { fromPoll } from '../../connectors/poll';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter } from '../../lib/sink';
import type { Source } from '../../lib/source';
import { delay, MemorySink, scratchDir, until } from '../helpers';

/**
 * Backpressure is what a source reads from its input, not the credit gauge: with the sink
 * blocked, each source must stop reading once its budget is spent.
 */
describe('backpressure: with the sink blocked, a source reads no further than its budget', function () {
  this.timeout(60_000);
  const dir = scratchDir();

  /** Runs `source` into a sink that does not return until released; `read()` is what the source has read. */
  async function blocked(source: Source<unknown>, inFlight: { records?: number; bytes?: number }, read: () => number, bound: number, total: number): Promise<void> {
    let release!: () => void;
    const open = new Promise<void>((resolve) => (release = resolve));
    const sink = new MemorySink<unknown>();
    sink.gate = () => open;
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 1 }, inFlight });
    await pipeline.start();
    await until(() => sink.writes.length > 0, 10_000, 'a blocked write');
    // Give a source that ignores its credits every chance to read on.
    await delay(300);
    const readWhileBlocked = read();
    release();
    const stats = await pipeline.finished();
    expect(readWhileBlocked, `read while the sink was blocked (of ${total})`).to.be.at.most(bound);
    expect(stats.written).to.equal(total);
  }

  it('fromFiles: bytes read from the file', async () => {
    const line = '{"n":1234567890,"pad":"xxxxxx"}\n';
    const path = dir.file('big.ndjson', line.repeat(10_000));
    let bytes = 0;
    const source = fromFiles({ paths: path, chunkBytes: 4096, progressEveryMs: 0, onProgress: (p: FileProgress) => (bytes = p.bytes) });
    // 100 records in flight, the chunk being framed and one the stream reads ahead.
    await blocked(source, { records: 100 }, () => bytes, 100 * line.length + 3 * 4096, 10_000);
  });

  it('fromIterable: items pulled from the iterable', async () => {
    let pulled = 0;
    function* items() {
      for (let n = 0; n < 10_000; n++) {
        pulled++;
        yield { n };
      }
    }
    await blocked(fromIterable(items()), { records: 100 }, () => pulled, 101, 10_000);
  });

  it('fromPoll: pages fetched from the vendor', async () => {
    let served = 0;
    const server: Server = createServer((request, response) => {
      const page = Number(new URL(request.url!, 'http://x').searchParams.get('page') ?? 1);
      served++;
      const items = page <= 100 ? Array.from({ length: 10 }, (_, i) => ({ id: `${page}-${i}`, pad: 'x'.repeat(30) })) : [];
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ data: items }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`;
      const source = fromPoll({ vendor: 'acme', url, pagination: { type: 'page', size: 10 }, once: true, cursorFile: `${dir.path}/cursor.json`, requestsPerSecond: 1000 });
      // A page is about 500 bytes: a 2 KiB budget holds 4, and one more may be under way.
      await blocked(source, { records: 100, bytes: 2048 }, () => served, 6, 1000);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
