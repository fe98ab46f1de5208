import { expect } from 'chai';
import { map } from 'rxjs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fromFiles, type FileProgress } from '../../../connectors/files';
import { fromIterable } from '../../../connectors/iterable';
import { fromPoll } from '../../../connectors/poll';
import { fromWebhook } from '../../../connectors/webhook';
import { AccessControl } from '../../../lib/security/access';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { delay, MemorySink, scratchDir, until } from '../../helpers';
import { post, type Answer } from '../../webhookClient';

/**
 * Backpressure is what a source reads from its input, not the credit gauge: with the sink
 * blocked, each source must stop reading once its budget is spent. fromKafka's test needs a
 * broker: it is in test/connectors/kafka.spec.ts.
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

  it('fromWebhook: requests held while the sink is blocked; the rest answered 429 at once, and stored once when retried', async () => {
    const secret = 'backpressure-secret-0123456789';
    const poster = AccessControl.issueKey('poster', ['poster']);
    const access = new AccessControl({ roles: { poster: ['webhook:post:acme'] }, keys: [poster.record] });
    // One key may have every request in progress: only the pipeline's credit holds them back.
    const source = fromWebhook({ port: 0, vendors: { acme: { secrets: [secret] } }, access, maxRequestsPerKey: 1000 });
    const requests = 200;
    const perRequest = 10;
    const body = (r: number) => JSON.stringify(Array.from({ length: perRequest }, (_, i) => ({ id: `${r}-${i}`, pad: 'x'.repeat(40) })));
    const bodyBytes = Buffer.byteLength(body(100));
    // A request takes one credit for its whole body: the 4 KiB budget holds this many bodies.
    const budget = { records: 1000, bytes: 4096 };
    const held = Math.floor(budget.bytes / bodyBytes);
    let release!: () => void;
    const open = new Promise<void>((resolve) => (release = resolve));
    const sink = new MemorySink<{ id: string }>();
    sink.gate = () => open;
    // Records the source emitted, counted as they pass, whatever the credit gauge says.
    let emitted = 0;
    const pipeline = new Pipeline({
      source,
      transform: map((e: Envelope<any>) => (emitted++, e)),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: perRequest, maxWaitMs: 1 },
      inFlight: budget,
    });
    await pipeline.start();
    try {
      const route = `${await source.url()}/webhooks/acme`;
      const answers: Answer[][] = Array.from({ length: requests }, () => []);
      const send = (r: number) => post(route, body(r), { key: poster.token, secret, id: `req-${r}` }).then((a) => (answers[r]!.push(a), a));
      const first = Array.from({ length: requests }, (_, r) => send(r));
      const answered = () => answers.filter((a) => a.length > 0).length;
      await until(() => answered() + source.stats.pending === requests, 30_000, 'every request answered or held');
      // Give a source that ignores its credit every chance to take more.
      await delay(300);
      const unanswered = requests - answered();
      const emittedWhileBlocked = emitted;
      const refusals = answers.flat();
      expect(unanswered, `requests held while the sink was blocked (of ${requests}, ${bodyBytes} bytes each)`).to.be.within(1, held);
      expect(emittedWhileBlocked, 'records emitted while the sink was blocked').to.be.at.most(held * perRequest);
      expect(refusals.map((a) => `${a.status} ${JSON.parse(a.body).error} retry-after ${a.headers['retry-after']}`)).to.deep.equal(Array(requests - unanswered).fill('429 BUSY retry-after 1'));

      // Released: what was held is answered 200, and every refused request, sent again with
      // its id as a vendor would, gets in.
      release();
      await Promise.all(
        first.map(async (answer, r) => {
          let last = await answer;
          while (last.status === 429) {
            await delay(10 + Math.random() * 40);
            last = await send(r);
          }
          expect([last.status, last.body]).to.deep.equal([200, JSON.stringify({ id: `req-${r}`, records: perRequest })]);
        }),
      );
      const stats = await pipeline.stop();
      expect(sink.rows.length).to.equal(requests * perRequest);
      expect(new Set(sink.rows.map((row) => row.id)).size, 'records stored twice').to.equal(requests * perRequest);
      expect(stats).to.include({ read: requests * perRequest, written: requests * perRequest, deadLettered: 0, nacked: 0 });
      expect(source.stats).to.include({ accepted: requests, records: requests * perRequest, pending: 0 });
    } finally {
      release();
      await pipeline.stop().catch(() => undefined);
    }
  });
});
