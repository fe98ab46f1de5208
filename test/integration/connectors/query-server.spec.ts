import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request } from 'node:https';
import { join } from 'node:path';
import { migrate, serveQueries, toClickHouse } from '../../../connectors/clickhouse';
import { migrationsDir } from '../../../examples/bookings/paths';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError } from '../../../lib/errors';
import { AccessControl, type AccessDecision } from '../../../lib/security';
import { Pipeline } from '../../../lib/pipeline';
import { serveMetrics } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import { delay, MemorySink, runningQueries, tempDir, testClickHouse, until } from '../../helpers';

/** A GET with node:http, its body as it came: fetch would undo a gzip Content-Encoding. */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; encoding: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const sent = httpRequest(url, { headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode!, encoding: response.headers['content-encoding'], body: Buffer.concat(chunks) }));
    });
    sent.on('error', reject);
    sent.end();
  });
}

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
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
      ]) {
        const error = await reader.command({ query }).catch((e: unknown) => e);
        expect(error, query).to.be.instanceOf(Error);
        expect((error as { code?: string }).code, query).to.equal('164');
      }
      const several = await reader.command({ query: `SELECT 1; DROP TABLE ${table}` }).catch((e: unknown) => e);
      expect((several as { code?: string }).code, 'several statements: the parser refuses them').to.equal('62');
      expect(await testClickHouse().query(`EXISTS TABLE ${table}`)).to.deep.equal([{ result: 1 }]);
    } finally {
      await reader.close();
    }
  });

  it('reads by default every table of the default database but the library\'s own, which it neither reads nor lists', async () => {
    await migrate(testClickHouse(), migrationsDir);
    const ask = async (query: string) => {
      const response = await fetch(`${endpoint.url}/?query=${encodeURIComponent(query)}`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      return [response.status, await response.text()];
    };
    for (const own of ['tributary_migrations', 'subject_keys', 'audit_log']) {
      expect(await ask(`SELECT count() FROM ${own}`), own).to.deep.equal([403, `Code: 164. DB::Exception: table default.${own} is not among the tables this reader may query: cannot execute query in readonly mode. (READONLY)\n`]);
    }
    const listed = `SELECT name FROM system.tables WHERE database = 'default' AND name IN ('${table}', 'bookings', 'tributary_migrations', 'subject_keys', 'audit_log') ORDER BY name`;
    expect(await ask(listed)).to.deep.equal([200, `bookings\n${table}\n`]);
    expect(await ask(`SELECT count() FROM ${table}`)).to.deep.equal([200, '0\n']);
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
    expect(response.status).to.equal(404);
    expect(response.headers.get('x-clickhouse-exception-code')).to.equal('60');
    expect(await response.text()).to.match(/Code: 60\..*no_such_table/s);
  });

  it('refuses bad configuration', async () => {
    let error = await serveQueries({ client: testClickHouse(), users: {} }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'users must name at least one user and key, or access must be given');
    error = await serveQueries({ client: testClickHouse(), users: { a: 'short' } }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'users.a must be a key of at least 8 characters');
    error = await serveQueries({ client: testClickHouse(), users: { a: 'a-long-enough-key' }, readerPriority: 20 }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'readerPriority must be an integer from 0 to 19, got 20');
    for (const [tables, where] of [[['bookings', ''], 'tables'], ['bookings', 'tables'], [['bookings', 7], 'tables']] as const) {
      error = await serveQueries({ client: testClickHouse(), users: { a: 'a-long-enough-key' }, tables: tables as never }).catch((e: unknown) => e);
      expect(error, JSON.stringify(tables)).to.be.instanceOf(ConfigError).with.property('message', `${where} must be an array of table names`);
    }
    error = await serveQueries({ client: testClickHouse(), users: { a: { key: 'a-long-enough-key', tables: [''] } } }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'users.a.tables must be an array of table names');
    error = await serveQueries({ users: { a: 'a-long-enough-key' } } as never).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'client is required');
    for (const given of ['seven-7', { key: 12345678 }, { tables: ['t'] }]) {
      error = await serveQueries({ client: testClickHouse(), users: { a: given as never } }).catch((e: unknown) => e);
      expect(error, JSON.stringify(given)).to.be.instanceOf(ConfigError).with.property('message', 'users.a must be a key of at least 8 characters');
    }
    const eight = await serveQueries({ client: testClickHouse(), users: { a: 'eight-88' }, port: 0 });
    await eight.close();
    error = await serveQueries({ client: testClickHouse(), access: {} as never }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ConfigError).with.property('message', 'access must be an AccessControl');
    for (const permission of ['', 7]) {
      error = await serveQueries({ client: testClickHouse(), users: { a: 'a-long-enough-key' }, permission: permission as never }).catch((e: unknown) => e);
      expect(error).to.be.instanceOf(ConfigError).with.property('message', `permission must be a non-empty string, got ${JSON.stringify(permission)}`);
    }
    // Each numeric option is named in its refusal.
    const numeric: [string, Record<string, unknown>][] = [
      ...['maxExecutionTimeS', 'maxResultRows', 'maxResultBytes', 'maxMemoryUsage', 'maxThreads'].map((name): [string, Record<string, unknown>] => [`limits.${name}`, { limits: { [name]: 0 } }]),
      ...['maxConcurrentQueries', 'maxQueuedQueries', 'maxBufferedResultBytes', 'maxQueryBytes', 'requestTimeoutMs', 'maxFailedAuthPerMinute'].map((name): [string, Record<string, unknown>] => [name, { [name]: 0 }]),
    ];
    for (const [name, options] of numeric) {
      error = await serveQueries({ client: testClickHouse(), users: { a: 'a-long-enough-key' }, ...options }).catch((e: unknown) => e);
      expect(error, name).to.be.instanceOf(ConfigError);
      expect((error as Error).message, name).to.match(new RegExp(`^${name.replace('.', '\\.')} `));
    }
  });

  it('answers another path 404, another method 405, a bare GET as a probe and an empty query as a syntax error, with the headers a server sends', async () => {
    const headers = { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key };
    const other = await fetch(`${endpoint.url}/play?query=SELECT+1`, { headers });
    expect([other.status, await other.text()]).to.deep.equal([404, 'There is no handle /play\n']);
    for (const method of ['PUT', 'DELETE', 'PATCH']) {
      const refused = await fetch(`${endpoint.url}/?query=SELECT+1`, { method, headers });
      expect([refused.status, await refused.text()], method).to.deep.equal([405, 'Only GET and POST are allowed\n']);
    }
    expect((await fetch(`${endpoint.url}/?query=SELECT+1`, { method: 'HEAD', headers })).status).to.equal(200);
    const probe = await fetch(`${endpoint.url}/`, { headers });
    expect([probe.status, await probe.text()]).to.deep.equal([200, 'Ok.\n']);
    for (const [what, response] of [
      ['a blank POST', await fetch(`${endpoint.url}/`, { method: 'POST', body: ' \n', headers })],
      ['a blank query in the URL', await fetch(`${endpoint.url}/?query=+`, { headers })],
    ] as const) {
      expect([response.status, response.headers.get('x-clickhouse-exception-code'), await response.text()], what).to.deep.equal([400, '62', 'Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)\n']);
    }
    const answered = await fetch(`${endpoint.url}/?query=SELECT+1&query_id=my-query-7`, { headers });
    expect(await answered.text()).to.equal('1\n');
    expect(['x-clickhouse-query-id', 'x-clickhouse-timezone', 'x-clickhouse-server-display-name', 'x-clickhouse-format'].map((name) => answered.headers.get(name))).to.deep.equal(['my-query-7', 'UTC', 'tributary', 'TabSeparated']);
    expect(JSON.parse(answered.headers.get('x-clickhouse-summary')!)).to.have.property('read_rows', '0');
    const unnamed = await fetch(`${endpoint.url}/?query=SELECT+1`, { headers });
    expect(unnamed.headers.get('x-clickhouse-query-id')).to.match(/^[0-9a-f-]{36}$/);
  });

  it('compresses only when asked in the URL and accepted by the client, at the level asked when it is one of 1-9, else 3', async () => {
    const { gunzipSync } = await import('node:zlib');
    const query = 'SELECT+number+*+7919+%25+1000003+FROM+system.one+ARRAY+JOIN+range(200000)+AS+number';
    const get = (params: string, encoding?: string) => rawGet(`${endpoint.url}/?query=${query}${params}`, { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key, ...(encoding && { 'Accept-Encoding': encoding }) });
    const plain = await get('');
    expect([plain.status, plain.encoding, plain.body.toString().split('\n').length]).to.deep.equal([200, undefined, 200_001]);
    expect((await get('&enable_http_compression=1')).encoding, 'not accepted by the client').to.equal(undefined);
    expect((await get('', 'gzip')).encoding, 'not asked in the URL').to.equal(undefined);
    const sizes: Record<string, number> = {};
    for (const level of ['', '1', '3', '9', '0', '10', 'x']) {
      const zipped = await get(`&enable_http_compression=1${level === '' ? '' : `&http_zlib_compression_level=${level}`}`, 'deflate, gzip');
      expect(zipped.encoding, level).to.equal('gzip');
      expect(gunzipSync(zipped.body).equals(plain.body), level).to.equal(true);
      sizes[level] = zipped.body.length;
    }
    expect(sizes['1'], 'level 1 is not level 3').to.not.equal(sizes['3']);
    expect(sizes['9'], 'level 9 is not level 3').to.not.equal(sizes['3']);
    for (const level of ['', '0', '10', 'x']) expect(sizes[level], `level ${JSON.stringify(level)} is taken as 3`).to.equal(sizes['3']);
  });

  it('locks out an address for the minute of its first failure, no longer, and counts afresh after it', async () => {
    const strict = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, maxFailedAuthPerMinute: 2 });
    const now = Date.now;
    let clock = now();
    Date.now = () => clock;
    const ask = async (given: string) => {
      const response = await fetch(`${strict.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': given } });
      await response.arrayBuffer();
      return response.status;
    };
    try {
      expect([await ask('wrong-key-1'), await ask('wrong-key-2'), await ask(key)]).to.deep.equal([403, 403, 429]);
      clock += 59_999;
      expect(await ask(key), 'within the minute').to.equal(429);
      clock += 1;
      expect(await ask(key), 'the minute of the first failure is over').to.equal(200);
      expect([await ask('wrong-key-3'), await ask('wrong-key-4')]).to.deep.equal([403, 403]);
      const locked = await fetch(`${strict.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      expect([locked.status, locked.headers.get('retry-after')], 'two new failures: a new minute from the first of them').to.deep.equal([429, '60']);
      await locked.arrayBuffer();
    } finally {
      Date.now = now;
      await strict.close();
    }
  });

  it('with access instead of users: a key with the permission reads, one without is forbidden (497), any other is unknown (516)', async () => {
    const reader = AccessControl.issueKey('reader', ['reader']);
    const writer = AccessControl.issueKey('writer', ['writer']);
    const decisions: AccessDecision[] = [];
    const access = new AccessControl({ roles: { reader: ['query:read'], writer: ['webhook:post:acme'], analytics: ['analytics:read'] }, keys: [reader.record, writer.record], onDecision: (decision) => decisions.push(decision) });
    const served = await serveQueries({ client: testClickHouse(), access, port: 0 });
    const asks = (url: string, token: string, method = 'GET') => fetch(`${url}/?query=SELECT+1`, { method, headers: { Authorization: `Bearer ${token}` } });
    try {
      const read = await asks(served.url, reader.token, 'POST');
      expect([read.status, await read.text()]).to.deep.equal([200, '1\n']);
      expect(decisions.at(-1)).to.include({ allowed: true, permission: 'query:read', keyId: 'reader', context: 'POST /' });
      const viaHeader = await fetch(`${served.url}/?query=SELECT+2`, { headers: { 'X-ClickHouse-Key': reader.token } });
      expect(await viaHeader.text()).to.equal('2\n');
      const forbidden = await asks(served.url, writer.token);
      expect([forbidden.status, forbidden.headers.get('x-clickhouse-exception-code'), await forbidden.text()]).to.deep.equal([403, '497', 'Code: 497. DB::Exception: the key lacks permission query:read. (ACCESS_DENIED)\n']);
      const unknown = await asks(served.url, `${reader.token}x`);
      expect([unknown.status, unknown.headers.get('x-clickhouse-exception-code')]).to.deep.equal([403, '516']);
    } finally {
      await served.close();
    }
    const analytics = await serveQueries({ client: testClickHouse(), access, permission: 'analytics:read', port: 0 });
    try {
      const refused = await asks(analytics.url, reader.token);
      expect([refused.status, await refused.text()], 'the permission asked is the one given').to.deep.equal([403, 'Code: 497. DB::Exception: the key lacks permission analytics:read. (ACCESS_DENIED)\n']);
    } finally {
      await analytics.close();
    }
  });

  it('runs readers at readerPriority: 10 unless set', async () => {
    for (const [priority, expected] of [[undefined, '10'], [0, '0'], [19, '19']] as const) {
      const server = await serveQueries({ client: testClickHouse(), users: { analyst: 'analyst-key-priority' }, port: 0, ...(priority === undefined ? {} : { readerPriority: priority }) });
      try {
        const response = await fetch(`${server.url}/`, { method: 'POST', body: "SELECT getSetting('os_thread_priority')", headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': 'analyst-key-priority' } });
        expect(await response.text(), `readerPriority ${priority}`).to.equal(`${expected}\n`);
      } finally {
        await server.close();
      }
    }
  });

  it('streams in blocks of up to 262,144 rows and about 4 MB of a table, unless the reader names max_block_size', async () => {
    const query = "SELECT getSetting('max_block_size'), getSetting('preferred_block_size_bytes')";
    for (const [search, expected] of [['', '262144\t4000000\n'], ['?max_block_size=1000', '1000\t4000000\n']] as const) {
      const response = await fetch(`${endpoint.url}/${search}`, { method: 'POST', body: query, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      expect(await response.text(), search).to.equal(expected);
    }
  });
});

describe('analyst endpoint speaks ClickHouse HTTP', function () {
  this.timeout(60_000);
  const key = 'analyst-key-wire-1';
  let endpoint: Awaited<ReturnType<typeof serveQueries>>;
  const headers = { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key };

  before(async () => {
    endpoint = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0 });
  });
  after(async () => endpoint?.close());

  it('passes binary formats through byte for byte', async () => {
    const query = "SELECT toInt32(-1) AS a, toUInt16(1000) AS b, unhex('FFFE00') AS c, [1, 2] AS d, CAST(NULL AS Nullable(Int8)) AS e";
    for (const format of ['RowBinary', 'RowBinaryWithNamesAndTypes', 'Native', 'Parquet', 'ArrowStream']) {
      const response = await fetch(`${endpoint.url}/?default_format=${format}`, { method: 'POST', body: query, headers });
      const served = Buffer.from(await response.arrayBuffer());
      const parts: Uint8Array[] = [];
      for await (const part of testClickHouse().stream(query, { format })) parts.push(part);
      const direct = Buffer.concat(parts);
      expect(response.status, format).to.equal(200);
      expect(response.headers.get('content-type'), format).to.equal('application/octet-stream');
      expect(response.headers.get('x-clickhouse-format'), format).to.equal(format);
      expect(served.equals(direct), `${format}: ${served.toString('hex')} vs ${direct.toString('hex')}`).to.equal(true);
    }
    const rowBinary = await fetch(`${endpoint.url}/?query=${encodeURIComponent('SELECT toInt32(-1), toUInt16(1000) FORMAT RowBinary')}`, { headers });
    expect(Buffer.from(await rowBinary.arrayBuffer()).toString('hex')).to.equal('ffffffffe803');
  });

  it('streams a result of many chunks intact, as plain and as compress=1 blocks', async () => {
    const rows = 3_000_000;
    const query = `SELECT toUInt64(number) FROM system.one ARRAY JOIN range(${rows}) AS number FORMAT RowBinary`;
    for (const search of ['', 'compress=1']) {
      const response = await fetch(`${endpoint.url}/?${search}`, { method: 'POST', body: query, headers });
      let body = Buffer.from(await response.arrayBuffer());
      if (search) {
        const { cityHash128 } = await import('../../../connectors/clickhouse/compressedBlocks.js');
        const parts: Buffer[] = [];
        for (let at = 0; at < body.length; ) {
          const size = body.readUInt32LE(at + 17);
          const [low, high] = cityHash128(body.subarray(at + 16, at + 16 + size));
          expect([low, high], `checksum of the block at ${at}`).to.deep.equal([body.readBigUInt64LE(at), body.readBigUInt64LE(at + 8)]);
          parts.push(body.subarray(at + 25, at + 16 + size));
          at += 16 + size;
        }
        body = Buffer.concat(parts);
      }
      expect(body.length, search).to.equal(rows * 8);
      let wrong = 0;
      for (let i = 0; i < rows; i++) if (body.readBigUInt64LE(i * 8) !== BigInt(i)) wrong++;
      expect(wrong, `${search}: rows out of place`).to.equal(0);
    }
  });

  it('keeps one header and one frame per result, however many chunks the engine streams', async () => {
    const rows = 300_000;
    const numbers = `chunked_${randomUUID().replace(/-/g, '')}`;
    await testClickHouse().exec(`CREATE TABLE ${numbers} (n UInt64) ENGINE = MergeTree ORDER BY n`);
    await testClickHouse().exec(`INSERT INTO ${numbers} SELECT number FROM numbers(${rows})`);
    after(() => testClickHouse().exec(`DROP TABLE IF EXISTS ${numbers}`));
    const query = `SELECT n FROM ${numbers} ORDER BY n`;
    const fetchAs = async (format: string) => Buffer.from(await (await fetch(`${endpoint.url}/?default_format=${format}&max_block_size=1000`, { method: 'POST', body: query, headers })).arrayBuffer());
    for (const format of ['CSVWithNames', 'TSVWithNamesAndTypes', 'JSONCompactEachRowWithNamesAndTypes']) {
      const lines = (await fetchAs(format)).toString().trimEnd().split('\n');
      const header = format.endsWith('AndTypes') ? 2 : 1;
      expect(lines.length, format).to.equal(rows + header);
      expect(lines.slice(header).filter((line) => /n|UInt64/.test(line)), `${format}: headers inside the rows`).to.deep.equal([]);
    }
    const binary = await fetchAs('RowBinaryWithNamesAndTypes');
    const header = Buffer.from([1, 1, 0x6e, 6, ...Buffer.from('UInt64')]);
    expect(binary.subarray(0, header.length).equals(header)).to.equal(true);
    expect(binary.length).to.equal(header.length + rows * 8);
    expect(binary.readBigUInt64LE(binary.length - 8)).to.equal(BigInt(rows - 1));
    const json = JSON.parse((await fetchAs('JSON')).toString()) as { rows: number; data: unknown[] };
    expect([json.rows, json.data.length]).to.deep.equal([rows, rows]);
    const parquet = await fetchAs('Parquet');
    expect([parquet.subarray(0, 4).toString(), parquet.subarray(-4).toString(), parquet.indexOf('PAR1', 4)]).to.deep.equal(['PAR1', 'PAR1', parquet.length - 4]);
  });

  it('binds param_<name> query parameters, takes database=default and refuses another', async () => {
    const bound = await fetch(`${endpoint.url}/?param_n=41&param_s=${encodeURIComponent("it's; DROP")}&database=default`, { method: 'POST', body: 'SELECT {n:UInt8} + 1, {s:String}', headers });
    expect([bound.status, await bound.text()]).to.deep.equal([200, "42\tit\\'s; DROP\n"]);
    // A value in ClickHouse's escaped text form, as drivers send it: each escape read as a server reads it.
    const escaped = await fetch(`${endpoint.url}/?param_s=${encodeURIComponent("\\t\\n\\r\\b\\f\\0\\a\\v\\x41\\x4a\\'\\\\\\z")}`, { method: 'POST', body: 'SELECT hex({s:String})', headers });
    expect([escaped.status, await escaped.text()]).to.deep.equal([200, `${Buffer.from("\t\n\r\b\f\0\x07\vAJ'\\z").toString('hex').toUpperCase()}\n`]);
    const missing = await fetch(`${endpoint.url}/`, { method: 'POST', body: 'SELECT {n:UInt8}', headers });
    expect([missing.status, missing.headers.get('x-clickhouse-exception-code')]).to.deep.equal([400, '456']);
    const other = await fetch(`${endpoint.url}/?database=elsewhere`, { method: 'POST', body: 'SELECT 1', headers });
    expect([other.status, other.headers.get('x-clickhouse-exception-code'), await other.text()]).to.deep.equal([404, '81', 'Code: 81. DB::Exception: Database elsewhere does not exist. (UNKNOWN_DATABASE)\n']);
    // Named in a header, as some drivers do; empty, as others send when none is set.
    for (const [database, status] of [['default', 200], ['', 200], ['elsewhere', 404]] as const) {
      const response = await fetch(`${endpoint.url}/`, { method: 'POST', body: 'SELECT 1', headers: { ...headers, 'X-ClickHouse-Database': database } });
      expect([response.status, await response.text()], `header ${JSON.stringify(database)}`).to.include(status);
      const inUrl = await fetch(`${endpoint.url}/?database=${database}`, { method: 'POST', body: 'SELECT 1', headers });
      expect(inUrl.status, `database=${database}`).to.equal(status);
      await inUrl.arrayBuffer();
    }
  });

  it('holds its limits over the whole of a UNION, whichever part is large (a SETTINGS clause after a UNION binds only its last part)', async () => {
    const strict = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, limits: { maxResultRows: 10 } });
    try {
      const large = 'SELECT number FROM system.one ARRAY JOIN range(100) AS number';
      for (const query of [`${large} UNION ALL SELECT 1`, `SELECT 1 UNION ALL ${large}`, `SELECT 1 UNION ALL ${large} UNION ALL SELECT 2`]) {
        const response = await fetch(`${strict.url}/`, { method: 'POST', body: query, headers });
        const text = await response.text();
        // Refused before the headers (500), or, when a small part streamed first, in the body
        // after them, as a server says it: either way with no more than the limit's rows.
        const refusal = /(^|\n)Code: 396\. DB::Exception: Limit for result exceeded, max rows: 10\.00[^\n]*\n$/;
        if (response.status === 200) expect(text, query).to.match(refusal);
        else expect([response.status, response.headers.get('x-clickhouse-exception-code'), text.startsWith('Code: 396.')], query).to.deep.equal([500, '396', true]);
        expect(text.split('\n').filter((line) => /^\d+$/.test(line)).length, `${query}: rows before the refusal`).to.be.at.most(10);
      }
    } finally {
      await strict.close();
    }
  });

  it('refuses a format name that is not a bare word before the engine sees it, and says why for a refused setting', async () => {
    for (const format of ['TSV\n', '1TSV', 'TSV;JSON', 'JSON Each']) {
      const response = await fetch(`${endpoint.url}/?default_format=${encodeURIComponent(format)}`, { method: 'POST', body: 'SELECT 1', headers });
      expect([response.status, await response.text()], JSON.stringify(format)).to.deep.equal([404, `Code: 73. DB::Exception: Unknown format ${format}. (UNKNOWN_FORMAT)\n`]);
    }
    const setting = await fetch(`${endpoint.url}/?query=SELECT+1&max_rows_to_read=0`, { headers });
    expect([setting.status, await setting.text()]).to.deep.equal([403, 'Code: 164. DB::Exception: setting max_rows_to_read is not allowed for readers: cannot execute query in readonly mode. (READONLY)\n']);
    const writable = await fetch(`${endpoint.url}/?query=SELECT+1&readonly=0`, { headers });
    expect([writable.status, await writable.text()]).to.deep.equal([403, 'Code: 164. DB::Exception: readers cannot turn readonly off: cannot execute query in readonly mode. (READONLY)\n']);
  });

  it('applies each output setting a reader gives in the URL, and takes the protocol parameters drivers send without refusing them', async () => {
    const ask = async (query: string, search: string): Promise<[number, string]> => {
      const response = await fetch(`${endpoint.url}/?${search}`, { method: 'POST', body: query, headers });
      return [response.status, await response.text()];
    };
    // Each setting the endpoint lets a reader give (README), with a value other than what it runs under unless given.
    const given: Record<string, string> = {
      output_format_json_quote_64bit_integers: '0',
      output_format_json_quote_64bit_floats: '1',
      output_format_json_quote_denormals: '1',
      output_format_json_quote_decimals: '1',
      output_format_json_named_tuples_as_objects: '0',
      output_format_json_escape_forward_slashes: '0',
      output_format_decimal_trailing_zeros: '1',
      output_format_arrow_string_as_string: '0',
      output_format_parquet_string_as_string: '0',
      output_format_native_encode_types_in_binary_format: '1',
      output_format_binary_encode_types_in_binary_format: '1',
      output_format_write_statistics: '0',
      output_format_pretty_max_rows: '7',
      date_time_output_format: 'iso',
      session_timezone: 'Asia/Tokyo',
      extremes: '1',
      join_use_nulls: '1',
      result_overflow_mode: 'break',
      max_block_size: '1000',
    };
    for (const [name, value] of Object.entries(given)) {
      const query = `SELECT toString(getSetting('${name}'))`;
      const [, unless] = await ask(query, '');
      const [status, applied] = await ask(query, `${name}=${encodeURIComponent(value)}`);
      expect(status, name).to.equal(200);
      expect(applied, `${name}: given, it takes effect`).to.not.equal(unless);
      // The first line: with extremes=1 the extremes follow the result.
      expect(applied.split('\n')[0]!.replace(/^true$/, '1').replace(/^false$/, '0'), name).to.equal(value);
    }
    // The HTTP interface's own parameters, as drivers and tools send them: none refused.
    const protocol = [
      'database=default',
      'default_format=TabSeparated',
      'user=analyst',
      'query_id=a-reader-query',
      'session_id=a-session&session_timeout=60&session_check=0',
      'enable_http_compression=0&http_zlib_compression_level=3',
      'wait_end_of_query=1&buffer_size=4096',
      'send_progress_in_http_headers=0&http_headers_progress_interval_ms=100',
      'cancel_http_readonly_queries_on_client_close=1',
      'client_protocol_version=54460',
      'readonly=1',
      'compress=0&decompress=0',
      'add_http_cors_header=0',
    ];
    for (const search of protocol) expect(await ask('SELECT 1', search), search).to.deep.equal([200, '1\n']);
    expect(await ask('', `query=${encodeURIComponent('SELECT 2')}`), 'query in the URL').to.deep.equal([200, '2\n']);
    // But a key: URLs end up in logs.
    const [status, text] = await ask('SELECT 1', `user=analyst&password=${key}`);
    expect([status, text.slice(0, 9)]).to.deep.equal([403, 'Code: 516']);
  });

  it('answers each output format with the Content-Type a ClickHouse server sends for it', async () => {
    const expected: Record<string, string> = {
      JSON: 'application/json; charset=UTF-8',
      JSONCompact: 'application/json; charset=UTF-8',
      JSONEachRow: 'application/json; charset=UTF-8',
      TabSeparated: 'text/tab-separated-values; charset=UTF-8',
      TSVWithNames: 'text/tab-separated-values; charset=UTF-8',
      CSV: 'text/csv; charset=UTF-8; header=absent',
      CSVWithNames: 'text/csv; charset=UTF-8; header=present',
      XML: 'application/xml; charset=UTF-8',
      Pretty: 'text/plain; charset=UTF-8',
      PrettyCompact: 'text/plain; charset=UTF-8',
      Vertical: 'text/plain; charset=UTF-8',
      Values: 'text/plain; charset=UTF-8',
      Markdown: 'text/plain; charset=UTF-8',
      Null: 'text/plain; charset=UTF-8',
      SQLInsert: 'text/plain; charset=UTF-8',
      RowBinary: 'application/octet-stream',
      Native: 'application/octet-stream',
      Parquet: 'application/octet-stream',
    };
    for (const [format, type] of Object.entries(expected)) {
      const response = await fetch(`${endpoint.url}/?default_format=${format}`, { method: 'POST', body: 'SELECT 1 AS n', headers });
      await response.arrayBuffer();
      expect([response.status, response.headers.get('content-type')], format).to.deep.equal([200, type]);
    }
  });

  it('compresses with enable_http_compression, reads gzip bodies, and answers probes, typos and formats as a server does', async () => {
    const { gunzipSync, gzipSync } = await import('node:zlib');
    const raw = await rawGet(`${endpoint.url}/?enable_http_compression=1&query=SELECT+number+FROM+system.one+ARRAY+JOIN+range(1000)+AS+number`, { ...headers, 'Accept-Encoding': 'gzip' });
    expect([raw.status, raw.encoding]).to.deep.equal([200, 'gzip']);
    expect(gunzipSync(raw.body).toString().split('\n')).to.have.length(1001);
    const zipped = await fetch(`${endpoint.url}/`, { method: 'POST', body: gzipSync('SELECT 7'), headers: { ...headers, 'Content-Encoding': 'gzip' } });
    expect(await zipped.text()).to.equal('7\n');
    for (const path of ['/ping', '/replicas_status']) expect(await (await fetch(`${endpoint.url}${path}`)).text()).to.equal('Ok.\n');
    const typo = await fetch(`${endpoint.url}/`, { method: 'POST', body: 'SELEC 1', headers });
    expect([typo.status, typo.headers.get('x-clickhouse-exception-code')]).to.deep.equal([400, '62']);
    const json = await fetch(`${endpoint.url}/`, { method: 'POST', body: 'SELECT 1 AS x FORMAT JSONEachRow', headers });
    expect([json.headers.get('content-type'), await json.text()]).to.deep.equal(['application/json; charset=UTF-8', '{"x":1}\n']);
    expect((await fetch(`${endpoint.url}/`, { method: 'POST', body: '-- a comment\nSELECT 2', headers })).status).to.equal(200);
  });

  it('bounds a result built whole in memory (JSON, Parquet) by maxBufferedResultBytes, and streams row formats past it', async () => {
    const small = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, maxBufferedResultBytes: 4096 });
    try {
      const query = 'SELECT number FROM system.one ARRAY JOIN range(10000) AS number';
      for (const format of ['JSON', 'Parquet']) {
        const whole = await fetch(`${small.url}/?default_format=${format}`, { method: 'POST', body: query, headers });
        expect([whole.status, whole.headers.get('x-clickhouse-exception-code')], format).to.deep.equal([500, '396']);
      }
      const rows = await fetch(`${small.url}/?default_format=TSV`, { method: 'POST', body: query, headers });
      expect([rows.status, (await rows.text()).split('\n').length]).to.deep.equal([200, 10001]);
    } finally {
      await small.close();
    }
  });

  it('closes a connection whose body it refused unread, so the rest is never read as a request', async () => {
    const huge = await fetch(`${endpoint.url}/`, { method: 'POST', body: `SELECT ${'1+'.repeat(600_000)}1`, headers });
    expect([huge.status, huge.headers.get('x-clickhouse-exception-code'), huge.headers.get('connection')]).to.deep.equal([413, '229', 'close']);
    await huge.text();
    for (let i = 0; i < 3; i++) {
      const next = await fetch(`${endpoint.url}/`, { method: 'POST', body: 'SELECT 1', headers });
      expect([next.status, await next.text()]).to.deep.equal([200, '1\n']);
    }
  });

  it('runs maxConcurrentQueries at once, queues maxQueuedQueries more in order, and answers the rest 503 TOO_MANY_SIMULTANEOUS_QUERIES', async () => {
    const one = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, maxConcurrentQueries: 1, maxQueuedQueries: 1 });
    const ended: string[] = [];
    const ask = (name: string, query: string, signal?: AbortSignal) =>
      fetch(`${one.url}/?max_block_size=1`, { method: 'POST', body: query, headers, ...(signal && { signal }) }).then(
        async (response) => {
          const answer = [response.status, await response.text()];
          ended.push(name);
          return answer;
        },
        () => ended.push(`${name} aborted`),
      );
    try {
      // Runs for 50 s unless its client leaves.
      const mark = `slow_${randomUUID().replace(/-/g, '')}`;
      const controller = new AbortController();
      const slow = ask('slow', `SELECT sleepEachRow(0.5) AS ${mark} FROM system.one ARRAY JOIN range(100) AS n`, controller.signal);
      await until(async () => (await runningQueries(mark)) === 1, 10_000, 'the slow query to run');
      const queued = ask('queued', 'SELECT 2');
      await delay(300);
      const refused = await fetch(`${one.url}/`, { method: 'POST', body: 'SELECT 3', headers });
      expect([refused.status, refused.headers.get('x-clickhouse-exception-code'), await refused.text()]).to.deep.equal([503, '202', 'Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 1. (TOO_MANY_SIMULTANEOUS_QUERIES)\n']);
      expect(ended, 'the second waits while the first runs').to.deep.equal([]);
      controller.abort();
      await slow;
      expect(await queued, 'and runs once its slot is free').to.deep.equal([200, '2\n']);
      expect(ended).to.deep.equal(['slow aborted', 'queued']);
      const after = await Promise.all(['SELECT 4', 'SELECT 5'].map((query, i) => ask(`after-${i}`, query)));
      expect(after, 'the slot came back: one runs, the other waits for it').to.deep.equal([[200, '4\n'], [200, '5\n']]);
    } finally {
      await one.close();
    }
  });

  it('cancels a query whose client went away, freeing its slot', async () => {
    const one = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, maxConcurrentQueries: 1 });
    try {
      const controller = new AbortController();
      const slow = fetch(`${one.url}/?max_block_size=1`, { method: 'POST', body: 'SELECT sleepEachRow(0.5) FROM system.one ARRAY JOIN range(100) AS n', headers, signal: controller.signal }).then((r) => r.text()).catch(() => 'aborted');
      await delay(300);
      controller.abort();
      expect(await slow).to.equal('aborted');
      // The slot comes back once the engine's stream is cancelled, within a chunk, not after 50 s.
      const started = Date.now();
      const next = await fetch(`${one.url}/`, { method: 'POST', body: 'SELECT 1', headers });
      expect([next.status, await next.text()]).to.deep.equal([200, '1\n']);
      expect(Date.now() - started, 'waited for the cancelled query').to.be.below(20_000);
    } finally {
      await one.close();
    }
  });

  it('stops in the engine a query whose client went away, before its slot serves another (built whole or streamed)', async function () {
    // Minutes of work unless stopped: the slot must not come free while the engine runs it
    // on, or a reader who drops one heavy query after another holds every libuv thread
    // (the sink's inserts wait for one) while never holding more than one slot.
    this.timeout(120_000);
    const table = `abandoned_${randomUUID().replace(/-/g, '')}`;
    await testClickHouse().exec(`CREATE TABLE ${table} (n UInt64) ENGINE = MergeTree ORDER BY n`);
    await testClickHouse().exec(`INSERT INTO ${table} SELECT number FROM numbers(10000000)`);
    after(() => testClickHouse().exec(`DROP TABLE IF EXISTS ${table}`));
    const one = await serveQueries({ client: testClickHouse(), users: { analyst: key }, port: 0, maxConcurrentQueries: 1, limits: { maxExecutionTimeS: 3600 } });
    const running = () => runningQueries(table);
    try {
      for (const format of ['JSON', 'TSV']) {
        const controller = new AbortController();
        const heavy = fetch(`${one.url}/?default_format=${format}&max_block_size=100`, { method: 'POST', body: `SELECT sum(cityHash64(n, r)) FROM ${table} ARRAY JOIN range(1000) AS r`, headers, signal: controller.signal }).catch(() => 'aborted');
        await until(async () => (await running()) > 0, 20_000, `${format}: the heavy query to start`, 50);
        controller.abort();
        expect(await heavy, format).to.equal('aborted');
        // Served once the engine has stopped the heavy query: in moments, not the minutes it would take.
        const next = await fetch(`${one.url}/`, { method: 'POST', body: 'SELECT 1', headers, signal: AbortSignal.timeout(20_000) });
        expect([next.status, await next.text()], format).to.deep.equal([200, '1\n']);
        // (The engine lists a query a moment after its end: a query running on would be listed for minutes.)
        await until(async () => (await running()) === 0, 2000, `${format}: the heavy query to leave the engine once the slot served the next query`, 50);
      }
    } finally {
      await one.close();
    }
  });
});

describe('query and metrics endpoints over HTTPS', function () {
  this.timeout(60_000);

  it('serve HTTPS with the same tls option the webhook takes, and a driver that trusts the certificate reads', async () => {
    const dir = tempDir();
    const keyFile = join(dir.path, 'key.pem');
    const certFile = join(dir.path, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const tls = { key: readFileSync(keyFile), cert: readFileSync(certFile) };
    const endpoint = await serveQueries({ client: testClickHouse(), users: { analyst: 'analyst-key-tls-1' }, port: 0, tls });
    const pipeline = new Pipeline({ source: fromIterable([{ id: 1 }]), sink: new MemorySink(), deadLetters: new MemorySink<DeadLetter>() });
    const metrics = await serveMetrics(pipeline, { port: 0, tls });
    const reader = createClient({ url: endpoint.url, username: 'analyst', password: 'analyst-key-tls-1', tls: { ca_cert: tls.cert }, log: { level: ClickHouseLogLevel.OFF } });
    try {
      expect(endpoint.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(metrics.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
      const rows = await (await reader.query({ query: 'SELECT 40 + 2 AS answer', format: 'JSONEachRow' })).json<{ answer: number }>();
      expect(rows).to.deep.equal([{ answer: 42 }]);
      const get = (url: string, ca?: Buffer) =>
        new Promise<string>((resolve, reject) => {
          request(url, ca ? { ca } : {}, (response) => {
            let text = '';
            response.on('data', (chunk: Buffer) => (text += chunk.toString()));
            response.on('end', () => resolve(`${response.statusCode} ${text}`));
          })
            .on('error', reject)
            .end();
        });
      expect(await get(`${metrics.url}/health`, tls.cert)).to.match(/^200 /);
      // Without trusting the certificate a client refuses both servers.
      for (const url of [`${endpoint.url}/ping`, `${metrics.url}/health`]) expect(await get(url).catch((e: Error) => e.message)).to.match(/self[- ]signed/i);
    } finally {
      await reader.close();
      await metrics.close();
      await endpoint.close();
      dir.remove();
    }
  });
});
