import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { serverClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromIterable } from '../../connectors/iterable';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter } from '../../lib/sink';
import { clickhouseServer } from '../clickhouseServer';
import { MemorySink } from '../helpers';

/** One request as it crossed the proxy: what the server was sent, byte for byte. */
interface Seen {
  query: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A loopback HTTP proxy in front of the real server that records every request it
 * forwards, so a test can see what the driver puts on the wire.
 */
async function recordingProxy(upstream: string): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const target = new URL(upstream);
  const seen: Seen[] = [];
  const server: Server = createServer((incoming, outgoing) => {
    const chunks: Buffer[] = [];
    const forward = request(
      { host: target.hostname, port: target.port, method: incoming.method, path: incoming.url, headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      },
    );
    forward.on('error', (error) => outgoing.destroy(error));
    incoming.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      forward.write(chunk);
    });
    incoming.on('end', () => {
      const url = new URL(incoming.url ?? '/', 'http://proxy');
      seen.push({ query: url.searchParams.get('query') ?? '', headers: incoming.headers, body: Buffer.concat(chunks) });
      forward.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('ClickHouse server driver on the wire', function () {
  this.timeout(120_000);
  let admin: ReturnType<typeof serverClickHouse>;
  let table: string;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;

  before(async () => {
    clickhouseServer.ensure();
    admin = serverClickHouse({ url: clickhouseServer.url, requestTimeoutMs: 5000 });
  });

  beforeEach(async () => {
    table = `wire_${randomUUID().replace(/-/g, '')}`;
    await admin.exec(`CREATE TABLE ${table} (id UInt32, name String) ENGINE = ReplacingMergeTree ORDER BY id`);
    proxy = await recordingProxy(clickhouseServer.url);
  });

  afterEach(async () => {
    await proxy.close();
    await admin.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  after(async () => {
    await admin?.close();
  });

  const records = Array.from({ length: 500 }, (_, i) => ({ id: i + 1, name: `booking ${i + 1}` }));

  /** Runs a pipeline through the proxy and returns the INSERT requests it saw. */
  async function insertThroughProxy(compressInserts?: boolean): Promise<Seen[]> {
    const client = serverClickHouse({ url: proxy.url, requestTimeoutMs: 5000, ...(compressInserts === undefined ? {} : { compressInserts }) });
    try {
      const stats = await new Pipeline({ source: fromIterable(records), sink: toClickHouse({ client, table }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 250 } }).run();
      expect(stats).to.include({ read: 500, written: 500, deadLettered: 0 });
    } finally {
      await client.close();
    }
    expect(Number((await admin.query<{ n: string }>(`SELECT count() AS n FROM ${table}`))[0]!.n)).to.equal(500);
    return proxy.seen.filter((s) => /^INSERT INTO/i.test(s.query));
  }

  const rowsIn = (body: string) => body.trimEnd().split('\n').map((line) => JSON.parse(line) as { id: number });

  it('sends insert bodies gzip-compressed by default, and the server stores them', async () => {
    const inserts = await insertThroughProxy();
    expect(inserts).to.have.length(2);
    for (const insert of inserts) {
      expect(insert.headers['content-encoding']).to.equal('gzip');
      // The bytes on the wire are gzip (magic 1f 8b) and unpack to the batch's rows.
      expect(insert.body.subarray(0, 2).toString('hex')).to.equal('1f8b');
      expect(rowsIn(gunzipSync(insert.body).toString('utf8'))).to.have.length(250);
    }
  });

  it('sends plain insert bodies with compressInserts: false', async () => {
    const inserts = await insertThroughProxy(false);
    expect(inserts).to.have.length(2);
    for (const insert of inserts) {
      expect(insert.headers['content-encoding']).to.equal(undefined);
      expect(rowsIn(insert.body.toString('utf8'))).to.have.length(250);
    }
  });
});
