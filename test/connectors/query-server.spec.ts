import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { serveQueries, toClickHouse } from '../../connectors/clickhouse';
import { fromIterable } from '../../connectors/iterable';
import { ConfigError } from '../../lib/errors';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter } from '../../lib/sink';
import { delay, MemorySink, testClickHouse, until } from '../helpers';

describe('read-only query endpoint over embedded ClickHouse', function () {
  this.timeout(60_000);
  const key = 'analyst-key-1234';
  let endpoint: Awaited<ReturnType<typeof serveQueries>>;
  let table: string;

  before(async () => {
    endpoint = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0 });
  });
  after(async () => endpoint?.close());
  beforeEach(async () => {
    table = `served_${randomUUID().replace(/-/g, '')}`;
    await testClickHouse().exec(`CREATE TABLE ${table} (id UInt32) ENGINE = MergeTree ORDER BY id`);
  });
  afterEach(async () => testClickHouse().exec(`DROP TABLE IF EXISTS ${table}`));

  const client = (password = key) => createClient({ url: endpoint.url, username: 'analyst', password, log: { level: ClickHouseLogLevel.OFF } });

  it('answers SELECTs from an unmodified @clickhouse/client while a pipeline writes', async () => {
    let producing = true;
    async function* ids() {
      for (let id = 1; producing; id++) {
        yield { id };
        if (id % 100 === 0) await delay(5);
      }
    }
    const pipeline = new Pipeline({ source: fromIterable(ids()), sink: toClickHouse({ client: testClickHouse(), table }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 500, maxWaitMs: 20 } });
    await pipeline.start();
    const reader = client();
    try {
      const seen: number[] = [];
      await until(() => pipeline.stats.written > 0, 10_000, 'first writes');
      for (let i = 0; i < 5; i++) {
        const rows = await (await reader.query({ query: `SELECT count() AS n FROM ${table}`, format: 'JSONEachRow' })).json<{ n: string }>();
        seen.push(Number(rows[0]!.n));
        await delay(50);
      }
      expect(seen[0]).to.be.greaterThan(0);
      expect(seen[4]).to.be.greaterThan(seen[0]!);
      expect(await reader.ping()).to.include({ success: true });
    } finally {
      producing = false;
      await reader.close();
    }
    const stats = await pipeline.finished();
    const [row] = await testClickHouse().query<{ n: string }>(`SELECT count() AS n FROM ${table}`);
    expect(Number(row!.n)).to.equal(stats.written);
  });

  it('refuses writes, DDL, several statements and file or network table functions, as ClickHouse would', async () => {
    const reader = client();
    try {
      for (const query of [
        `INSERT INTO ${table} VALUES (1)`,
        `DROP TABLE ${table}`,
        `ALTER TABLE ${table} DELETE WHERE 1`,
        `SELECT 1; DROP TABLE ${table}`,
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
      ]) {
        const error = await reader.command({ query }).catch((e: unknown) => e);
        expect(error, query).to.be.instanceOf(Error);
        expect((error as { code?: string }).code, query).to.equal('164');
      }
      expect(await testClickHouse().query(`EXISTS TABLE ${table}`)).to.deep.equal([{ result: 1 }]);
    } finally {
      await reader.close();
    }
  });

  it('refuses a wrong key or an unknown user, over every way of passing them', async () => {
    const wrong = client('not-the-key');
    const error = await wrong.query({ query: 'SELECT 1' }).catch((e: unknown) => e);
    await wrong.close();
    expect((error as { code?: string }).code).to.equal('516');
    for (const url of [`${endpoint.url}/?query=SELECT+1`, `${endpoint.url}/?query=SELECT+1&user=analyst&password=nope`, `${endpoint.url}/?query=SELECT+1&user=bob&password=${key}`]) {
      const response = await fetch(url);
      expect(response.status, url).to.equal(403);
      expect(response.headers.get('x-clickhouse-exception-code')).to.equal('516');
    }
    const ok = await fetch(`${endpoint.url}/?query=SELECT+41%2B1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
    expect([ok.status, await ok.text()]).to.deep.equal([200, '42\n']);
  });

  it('reports query errors with the ClickHouse code and message', async () => {
    const response = await fetch(`${endpoint.url}/?query=SELECT+*+FROM+no_such_table`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
    expect(response.status).to.equal(400);
    expect(response.headers.get('x-clickhouse-exception-code')).to.equal('60');
    expect(await response.text()).to.match(/Code: 60\..*no_such_table/s);
  });

  it('refuses bad configuration', async () => {
    let error = await serveQueries({ client: testClickHouse(), users: {} }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'users must name at least one user and key, or access must be given');
    error = await serveQueries({ client: testClickHouse(), users: { a: 'short' } }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'users.a must be a key of at least 8 characters');
  });
});
