import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { gunzipSync } from 'node:zlib';
import { serverClickHouse, toClickHouse } from '../../../connectors/clickhouse';
import { isLoopbackHost } from '../../../connectors/clickhouse/server';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { clickhouseServer } from '../../clickhouseServer';
import { MemorySink } from '../../helpers';

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
async function recordingProxy(upstream: string, host = '127.0.0.1'): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
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
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
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

  /** Runs a pipeline through `via` (the proxy by default) and returns the INSERT requests it saw. */
  async function insertThroughProxy(compressInserts?: boolean, via = proxy): Promise<Seen[]> {
    const client = serverClickHouse({ url: via.url, requestTimeoutMs: 5000, ...(compressInserts === undefined ? {} : { compressInserts }) });
    try {
      const stats = await new Pipeline({ source: fromIterable(records), sink: toClickHouse({ client, table }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 250 } }).run();
      expect(stats).to.include({ read: 500, written: 500, deadLettered: 0 });
    } finally {
      await client.close();
    }
    expect(Number((await admin.query<{ n: string }>(`SELECT count() AS n FROM ${table}`))[0]!.n)).to.equal(500);
    return via.seen.filter((s) => /^INSERT INTO/i.test(s.query));
  }

  const rowsIn = (body: string) => body.trimEnd().split('\n').map((line) => JSON.parse(line) as { id: number });

  function expectGzip(inserts: Seen[]): void {
    expect(inserts).to.have.length(2);
    for (const insert of inserts) {
      expect(insert.headers['content-encoding']).to.equal('gzip');
      // The bytes on the wire are gzip (magic 1f 8b) and unpack to the batch's rows.
      expect(insert.body.subarray(0, 2).toString('hex')).to.equal('1f8b');
      expect(rowsIn(gunzipSync(insert.body).toString('utf8'))).to.have.length(250);
    }
  }

  function expectPlain(inserts: Seen[]): void {
    expect(inserts).to.have.length(2);
    for (const insert of inserts) {
      expect(insert.headers['content-encoding']).to.equal(undefined);
      expect(rowsIn(insert.body.toString('utf8'))).to.have.length(250);
    }
  }

  it('sends plain insert bodies to a loopback server by default', async () => {
    expectPlain(await insertThroughProxy());
  });

  it('sends gzip-compressed insert bodies to a loopback server with compressInserts: true, and the server stores them', async () => {
    expectGzip(await insertThroughProxy(true));
  });

  it('sends gzip-compressed insert bodies by default to a server on another address', async () => {
    const remote = await recordingProxy(clickhouseServer.url, ownAddress());
    try {
      expectGzip(await insertThroughProxy(undefined, remote));
    } finally {
      await remote.close();
    }
  });

  it('sends plain insert bodies to a server on another address with compressInserts: false', async () => {
    const remote = await recordingProxy(clickhouseServer.url, ownAddress());
    try {
      expectPlain(await insertThroughProxy(false, remote));
    } finally {
      await remote.close();
    }
  });
});

describe('isLoopbackHost: where the server is, from its URL', () => {
  const host = (url: string) => isLoopbackHost(new URL(url).hostname);

  it('names and addresses of loopback', () => {
    for (const url of ['http://localhost:8123', 'http://LOCALHOST:8123', 'http://localhost.:8123', 'http://ch.localhost:8123', 'http://127.0.0.1:8123', 'http://127.1.2.3/', 'http://127.1/', 'http://[::1]:8123', 'http://[0:0:0:0:0:0:0:1]/', 'http://[::ffff:127.0.0.1]/']) {
      expect(host(url), url).to.equal(true);
    }
  });

  it('every other host, including names that only look local', () => {
    for (const url of ['http://clickhouse:8123', 'https://ch.example.com:8443', 'http://10.0.0.5:8123', 'http://192.168.1.2/', 'http://128.0.0.1/', 'http://[::2]/', 'http://[fe80::1]/', 'http://[::ffff:10.0.0.1]/', 'http://localhost.example.com/', 'http://mylocalhost/', 'http://0.0.0.0:8123', 'http://127.0.0.1.nip.io/']) {
      expect(host(url), url).to.equal(false);
    }
  });
});

/**
 * This machine's own IPv4 network address: a proxy listening there is not loopback by its
 * name. A machine without one cannot run these tests: they fail saying so, never skip.
 */
function ownAddress(): string {
  const address = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  if (!address) throw new Error('this machine has no non-loopback IPv4 address: the insert compression default for a remote server cannot be tested here');
  return address;
}
