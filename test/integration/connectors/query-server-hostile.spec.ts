import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { existsSync, readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { serveQueries } from '../../../connectors/clickhouse';
import { METADATA_TABLES } from '../../../connectors/clickhouse/queryGuard';
import { DEFAULT_QUERY_LIMITS, settingsClause } from '../../../connectors/clickhouse/queryServer';
import { AuditLog } from '../../../lib/security/audit';
import { MemorySink, tempDir, testClickHouse } from '../../helpers';

/**
 * Queries an attacker holding a valid analyst key would send, class by class. Each must be
 * refused, and leave no file, no row, no connection and no process behind: each of those is
 * checked, not assumed.
 */
describe('analyst endpoint against hostile queries', function () {
  this.timeout(120_000);
  const key = 'analyst-key-hostile';
  const suffix = randomUUID().replace(/-/g, '').slice(0, 12);
  const table = `hostile_${suffix}`;
  const secret = `secret_${suffix}`;
  const view = `hostile_view_${suffix}`;
  /** A view outside the list whose definition holds a literal, as a column default of the secret table does. */
  const secretView = `secret_view_${suffix}`;
  /** A dictionary over the secret table, and a user-defined function reading it: both made by an administrator, neither allowed. */
  const dictionary = `hostile_dict_${suffix}`;
  const udf = `hostile_udf_${suffix}`;
  const scratch = tempDir('tributary-hostile-');
  const audited = new MemorySink<Record<string, unknown>>();
  let endpoint: Awaited<ReturnType<typeof serveQueries>>;
  let listener: Server;
  let port = 0;
  const connections: string[] = [];

  before(async () => {
    const store = testClickHouse();
    await store.exec(`CREATE TABLE ${table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id`);
    await store.exec(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b'), (3, 'c')`);
    // A column named as an allowed table, whose catalogue row a filter keyed on table names would let through.
    await store.exec(`CREATE TABLE ${secret} (token String, note String DEFAULT 'literal-in-a-default', ${table} String DEFAULT 'literal-in-a-column') ENGINE = MergeTree ORDER BY token`);
    await store.exec(`INSERT INTO ${secret} (token) VALUES ('do-not-read')`);
    await store.exec(`CREATE VIEW ${secretView} AS SELECT token FROM ${secret} WHERE token != 'literal-in-a-view'`);
    // A name with a dot in it, which the parser's tree prints as it would a database and a table (and a quote).
    await store.exec(`CREATE TABLE \`${secret}.it's\` (token String) ENGINE = MergeTree ORDER BY token`);
    await store.exec(`INSERT INTO \`${secret}.it's\` VALUES ('do-not-read')`);
    await store.exec(`CREATE VIEW ${view} AS SELECT id FROM ${table}`);
    await store.exec(`CREATE DICTIONARY ${dictionary} (id UInt64, token String) PRIMARY KEY id SOURCE(CLICKHOUSE(QUERY 'SELECT 1 AS id, token FROM ${secret}')) LAYOUT(FLAT()) LIFETIME(0)`);
    await store.exec(`CREATE FUNCTION ${udf} AS (x) -> dictGetString('${dictionary}', 'token', x)`);
    // Anything that dials out lands here: every table function aimed at this port is watched.
    listener = createServer((socket) => {
      connections.push(socket.remoteAddress ?? '?');
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    port = (listener.address() as { port: number }).port;
    endpoint = await serveQueries({
      client: store,
      users: { analyst: key },
      tables: [table, view],
      port: 0,
      audit: new AuditLog({ sink: audited as never, batch: { rows: 1, maxWaitMs: 1 } }),
      maxFailedAuthPerMinute: 1000,
    });
  });
  after(async () => {
    await endpoint?.close();
    await new Promise((resolve) => listener?.close(resolve));
    const store = testClickHouse();
    await store.exec(`DROP FUNCTION IF EXISTS ${udf}`);
    await store.exec(`DROP DICTIONARY IF EXISTS ${dictionary}`);
    for (const name of [view, secretView, table, secret, `${secret}.it's`]) await store.exec(`DROP TABLE IF EXISTS \`${name}\``);
    scratch.remove();
  });

  async function ask(query: string, search = ''): Promise<{ status: number; code: string | null; text: string }> {
    const response = await fetch(`${endpoint.url}/?${search}`, { method: 'POST', body: query, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
    return { status: response.status, code: response.headers.get('x-clickhouse-exception-code'), text: await response.text() };
  }

  async function expectRefused(query: string, search = ''): Promise<void> {
    const answer = await ask(query, search);
    expect(answer.status, `${query}\n${answer.text}`).to.be.oneOf([403, 400]);
    expect(answer.code, `${query}\n${answer.text}`).to.be.oneOf(['164', '62']);
  }

  async function rows(name: string): Promise<number> {
    const [row] = await testClickHouse().query<{ n: string }>(`SELECT count() AS n FROM ${name}`);
    return Number(row!.n);
  }

  it('reads what it may: the allowed table and view, through CTEs, joins, IN, EXPLAIN, DESCRIBE and comments', async () => {
    for (const [query, expected] of [
      [`SELECT count() FROM ${table}`, '3\n'],
      [`-- a comment first\nSELECT sum(id) FROM ${table}`, '6\n'],
      [`SELECT sum(id) FROM ${table} -- a comment last`, '6\n'],
      [`SELECT ' INTO OUTFILE ''out.tsv'' FORMAT TSV --' AS s`, " INTO OUTFILE \\'out.tsv\\' FORMAT TSV --\n"],
      [`WITH t AS (SELECT id FROM ${table}) SELECT max(id) FROM t`, '3\n'],
      [`SELECT count() FROM ${view} AS v JOIN ${table} AS t ON v.id = t.id`, '3\n'],
      [`SELECT count() FROM ${table} WHERE id IN (SELECT id FROM ${view})`, '3\n'],
      [`select NAME from ${table} where id = 2`.replace('NAME', 'name'), 'b\n'],
      [`DESCRIBE TABLE ${table}`, 'id\tUInt32\t\t\t\t\t\nname\tString\t\t\t\t\t\n'],
      [`EXISTS TABLE ${table}`, '1\n'],
      [`EXISTS TABLE default.${table} FORMAT TSV`, '1\n'],
      [`DESCRIBE TABLE default.${table} FORMAT CSV`, '"id","UInt32","","","","",""\n"name","String","","","","",""\n'],
      [`SHOW CREATE TABLE default.${view} FORMAT TSVRaw`, `CREATE VIEW default.${view}\n(\n    \`id\` UInt32\n)\nAS SELECT id\nFROM default.${table}\n`],
      [`SHOW TABLES LIKE '${table}'`, `${table}\n`],
      [`SHOW TABLES FROM default LIKE '${view}'`, `${view}\n`],
      [`SHOW FULL TABLES NOT ILIKE '%' LIMIT 5`, ''],
      [`SELECT name FROM ${table} WHERE id = (SELECT max(id) FROM ${view})`, 'c\n'],
      [`SELECT count() FROM ${table} WHERE id IN ${view}`, '3\n'],
      [`WITH w AS (SELECT id FROM ${table}) SELECT count() FROM ${table} WHERE id IN w`, '3\n'],
      [`DESCRIBE (SELECT t.id FROM ${table} AS t)`, 'id\tUInt32\t\t\t\t\t\n'],
    ] as const) {
      const answer = await ask(query);
      expect([answer.status, answer.text], query).to.deep.equal([200, expected]);
    }
    expect((await ask(`EXPLAIN SELECT id FROM ${table}`)).status).to.equal(200);
    const explained = await ask(`EXPLAIN SELECT id FROM ${table} FORMAT JSONEachRow`);
    expect(explained.status, explained.text).to.equal(200);
    expect(explained.text.trimEnd().split('\n').map((line) => JSON.parse(line) as { explain: string }), explained.text).to.deep.include({ explain: `ReadFromMergeTree (default.${table})` });
    for (const plain of ['SHOW TABLES', 'SHOW DATABASES', 'SHOW TABLES LIMIT 10']) expect((await ask(plain)).status, plain).to.equal(200);
    // What drivers and tools read when they connect.
    for (const name of METADATA_TABLES) expect((await ask(`SELECT count() > 0 FROM ${name}`)).text, name).to.equal('1\n');
  });

  it('refuses a table outside its list, however it is reached', async () => {
    for (const query of [
      `SELECT * FROM ${secret}`,
      `SELECT * FROM default.${secret}`,
      `SELECT * FROM \`${secret}\``,
      `SELECT * FROM "${secret}"`,
      `SELECT * FROM /* c */ ${secret}`,
      `WITH s AS (SELECT * FROM ${secret}) SELECT * FROM s`,
      `SELECT * FROM ${table} UNION ALL SELECT 1, token FROM ${secret}`,
      `SELECT * FROM ${table} JOIN ${secret} ON 1 = 1`,
      `SELECT * FROM ${table} WHERE name IN ${secret}`,
      `SELECT * FROM ${table} WHERE name IN (SELECT token FROM ${secret})`,
      `SELECT (SELECT any(token) FROM ${secret})`,
      `SELECT * FROM ${table} AS \`x\n TableIdentifier ${table}\` , ${secret}`,
      'SELECT * FROM system.users',
      'SELECT * FROM system.processes',
      'SELECT * FROM system.disks',
      "SELECT * FROM system.tables WHERE name = 'x' UNION ALL SELECT * FROM system.users",
      'SELECT * FROM information_schema.tables',
      `SHOW TABLES WHERE name IN (SELECT token FROM ${secret})`,
      `SHOW TABLES WHERE (SELECT substring(token, 1, 1) FROM ${secret}) = 'd'`,
      `SHOW DATABASES WHERE name IN (SELECT token FROM ${secret})`,
      `DESCRIBE TABLE ${secret}`,
      `SHOW CREATE TABLE ${secret}`,
      `EXPLAIN SELECT * FROM ${secret}`,
      `SELECT joinGet('${secret}', 'token', 1)`,
      `SELECT dictGet('${secret}', 'token', 1)`,
      `SELECT hasColumnInTable('default', '${secret}', 'token')`,
      `SELECT joinGetOrNull('${secret}', 'token', 1)`,
      "SELECT catboostEvaluate('/etc/passwd', 1)",
    ]) {
      await expectRefused(query);
    }
    // A table named by a query parameter, which the engine substitutes before it parses.
    for (const query of ['DESCRIBE TABLE {t:Identifier}', 'EXISTS TABLE {t:Identifier}', 'SHOW CREATE TABLE {t:Identifier}', 'SELECT * FROM {t:Identifier}']) {
      await expectRefused(query, `param_t=${secret}`);
    }
  });

  it('reads nothing of a table outside its list, not even to fail: scalar subqueries, dictionaries, user-defined functions', async () => {
    // The engine's analyzer runs scalar subqueries and folds constant calls while it reads a
    // query, and its errors quote the values it met: each of these, given to it, answered
    // with the secret in an error or a yes/no from throwIf.
    const reach = `(SELECT toUInt32(any(token)) FROM ${secret})`;
    for (const [query, reason] of [
      [`SELECT ${reach}`, `table default.${secret} is not among`],
      [`SELECT * FROM ${table} WHERE id = ${reach}`, `table default.${secret} is not among`],
      [`WITH ${reach} AS x SELECT x`, `table default.${secret} is not among`],
      [`SELECT * FROM ${table} LIMIT ${reach}`, `table default.${secret} is not among`],
      [`SELECT EXISTS(SELECT 1 FROM ${secret} WHERE throwIf(token LIKE 'd%'))`, `table default.${secret} is not among`],
      [`SELECT (SELECT throwIf(count() > 0) FROM system.one WHERE 'do-not-read' IN ${secret})`, `table default.${secret} is not among`],
      [`SELECT (SELECT throwIf(count() > 0) FROM system.one WHERE 'do-not-read' GLOBAL IN default.${secret})`, `table default.${secret} is not among`],
      [`SELECT (SELECT toUInt32(any(token)) FROM default.${secret})`, `table default.${secret} is not among`],
      // A CTE of the same name elsewhere does not make the table's name a CTE's.
      [`SELECT ${reach}, (WITH ${secret} AS (SELECT 1) SELECT * FROM ${secret})`, `table default.${secret} is not among`],
      [`SELECT (SELECT toUInt32(any(token)) FROM \`${secret}\` AS s)`, `table default.${secret} is not among`],
      [`SELECT (SELECT toUInt32(any(token)) FROM \`${secret}.it's\`)`, `table default.${secret}.it's is not among`],
      [`EXPLAIN SELECT ${reach}`, `table default.${secret} is not among`],
      [`DESCRIBE (SELECT ${reach})`, `table default.${secret} is not among`],
      [`SELECT toUInt32(dictGetString('${dictionary}', 'token', toUInt64(1)))`, 'function dictGetString is not allowed'],
      [`SELECT toUInt32(DictGetString('${dictionary}', 'token', toUInt64(1))) AS x`, 'function DictGetString is not allowed'],
      [`SELECT toUInt32(${udf}(toUInt64(1)))`, `user-defined function ${udf} is not allowed`],
      [`DESCRIBE (SELECT toUInt32(${udf}(toUInt64(1))))`, `user-defined function ${udf} is not allowed`],
      ["SELECT AIGenerate('hello')", 'function AIGenerate is not allowed'],
    ]) {
      const answer = await ask(query!);
      expect([answer.status, answer.code], `${query}\n${answer.text}`).to.deep.equal([403, '164']);
      // An alias is refused under the engine's name of the function.
      expect(answer.text.toLowerCase(), query).to.contain(reason!.toLowerCase()).and.not.to.contain('do-not-read');
    }
    // A table named by a query parameter of type Identifier, which the engine substitutes before it parses.
    for (const query of [`SELECT (SELECT toUInt32(any(token)) FROM {t:Identifier})`, `SELECT (SELECT throwIf(count() > 0) FROM system.one WHERE 'do-not-read' IN {t:Identifier})`]) {
      const answer = await ask(query, `param_t=${secret}`);
      expect([answer.status, answer.code], `${query}\n${answer.text}`).to.deep.equal([403, '164']);
      expect(answer.text, query).to.contain(`table default.${secret} is not among`).and.not.to.contain('do-not-read');
    }
    // Every form of IN the engine has, with the table by its bare name.
    const ins = (await testClickHouse().query<{ name: string }>("SELECT name FROM system.functions WHERE categories = 'Comparison' ORDER BY name")).map(({ name }) => name).filter((name) => /In|^in/.test(name));
    expect(ins, 'the engine lists its IN functions').to.include.members(['in', 'notIn', 'globalIn', 'globalNotNullIn', 'notNullInIgnoreSet']);
    for (const name of ins) {
      const answer = await ask(`SELECT (SELECT throwIf(count() > 0) FROM system.one WHERE ${name}('do-not-read', ${secret}))`);
      expect([answer.status, answer.code], `${name}: ${answer.text}`).to.deep.equal([403, '164']);
      expect(answer.text, name).to.contain(`table default.${secret} is not among`);
    }
    // Every function the engine files under dictionaries or outside services, and their aliases, whatever their arguments.
    const outside = await testClickHouse().query<{ name: string }>(
      "SELECT name FROM system.functions WHERE categories IN ('Dictionary', 'AI') OR alias_to IN (SELECT name FROM system.functions WHERE categories IN ('Dictionary', 'AI')) ORDER BY name",
    );
    expect(outside.length, 'the engine lists its dictionary functions').to.be.greaterThan(40);
    for (const { name } of outside) {
      const answer = await ask(`SELECT toUInt32(${name}('${dictionary}', 'token', toUInt64(1)))`);
      expect([answer.status, answer.code], `${name}: ${answer.text}`).to.deep.equal([403, '164']);
      expect(answer.text.toLowerCase(), name).to.contain(`function ${name.toLowerCase()} is not allowed`).and.not.to.contain('do-not-read');
    }
    // The administrator's own reads of both still work: the refusals are the reader's.
    expect(await testClickHouse().query(`SELECT ${udf}(toUInt64(1)) AS token`)).to.deep.equal([{ token: 'do-not-read' }]);
  });

  it('shows in the catalogue only the tables it may read, their databases, and no user-defined function', async () => {
    // system.tables and system.columns tell a table's definition, defaults and row count, and
    // system.functions a user-defined function's body: every reader may read them, and the
    // engine filters them before the query's own WHERE, scalar subqueries and views see a row.
    const own = [table, view].sort().join('\n') + '\n';
    for (const [query, expected] of [
      ["SELECT name FROM system.tables WHERE database = 'default' ORDER BY name", own],
      ["SELECT DISTINCT table FROM system.columns WHERE database = 'default' ORDER BY table", own],
      ['SHOW TABLES', own],
      ['SHOW DATABASES', 'default\nsystem\n'],
      ['SELECT name FROM system.databases ORDER BY name', 'default\nsystem\n'],
      ["SELECT sum(total_rows) FROM system.tables WHERE database = 'default'", '3\n'],
      ["WITH t AS (SELECT * FROM system.tables) SELECT count() FROM t WHERE database = 'default'", '2\n'],
      ["SELECT count() FROM system.tables WHERE name IN (SELECT table FROM system.columns WHERE database = 'default')", '2\n'],
      [`SELECT count() FROM system.tables WHERE create_table_query LIKE '%literal-in-a-%'`, '0\n'],
      [`SELECT count() FROM system.columns WHERE default_expression LIKE '%literal-in-a-%'`, '0\n'],
      ["SELECT count() FROM system.functions WHERE origin != 'System'", '0\n'],
      [`SELECT 1 FROM system.tables WHERE throwIf(create_table_query LIKE '%literal-in-a-view%')`, ''],
      [`SELECT 1 FROM system.columns WHERE throwIf(default_expression LIKE '%literal-in-a-default%')`, ''],
    ] as const) {
      const answer = await ask(query);
      expect([answer.status, answer.text], query).to.deep.equal([200, expected]);
    }
    for (const query of [
      'SELECT * FROM system.tables',
      'SELECT * FROM system.columns',
      'SELECT * FROM system.functions',
      // The engine applies a filter to a table whose alias names another filtered table.
      ...['system.tables', 'system.columns', 'system.databases', 'system.functions'].flatMap((read) =>
        ['system.tables', 'system.columns', 'system.databases', 'system.functions'].map((alias) => `SELECT * FROM ${read} AS \`${alias}\``),
      ),
      `SELECT (SELECT toUInt32(any(create_table_query)) FROM system.tables WHERE name = '${secretView}')`,
      `SELECT (SELECT toUInt32(any(default_expression)) FROM system.columns WHERE table = '${secret}' AND name = 'note')`,
      `SELECT (SELECT toUInt32(any(create_query)) FROM system.functions WHERE name = '${udf}')`,
      `DESCRIBE (SELECT (SELECT toUInt32(any(create_table_query)) FROM system.tables WHERE name = '${secretView}'))`,
      `EXPLAIN SELECT (SELECT toUInt32(any(create_table_query)) FROM system.tables WHERE name = '${secretView}')`,
    ]) {
      const answer = await ask(query);
      for (const told of ['literal-in-a-', secret, dictionary, udf]) expect(answer.text, query).not.to.include(told);
    }
    expect((await ask('SELECT * FROM system.tables')).text).to.include(table);
    expect((await ask('SELECT * FROM system.functions')).text).to.include('dictGetString');
  });

  it('filters a catalogue of any size: the filter grows with the policy, not with the tables', async function () {
    this.timeout(300_000);
    // 800 tables with 200-character names: listed one by one in the filter, they would take
    // the query past the engine's max_query_size (256 KiB).
    const store = testClickHouse();
    const database = `wide_${suffix}`;
    await store.exec(`CREATE DATABASE ${database}`);
    const wide = await serveQueries({ client: store, users: { analyst: key }, tables: [`${database}.*`], port: 0 });
    try {
      for (let i = 0; i < 800; i++) await store.exec(`CREATE TABLE ${database}.t${i}_${'x'.repeat(190)} (a UInt8) ENGINE = Memory`);
      for (const [query, expected] of [
        [`SELECT count() FROM system.tables WHERE database = '${database}'`, '800\n'],
        [`SELECT count() FROM system.columns WHERE database = '${database}'`, '800\n'],
        ["SELECT count() FROM system.tables WHERE database = 'default'", '0\n'],
        [`SELECT count() FROM ${database}.t799_${'x'.repeat(190)}`, '0\n'],
      ]) {
        const response = await fetch(`${wide.url}/?query=${encodeURIComponent(query!)}`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
        expect([response.status, await response.text()], query).to.deep.equal([200, expected]);
      }
    } finally {
      await wide.close();
      await store.exec(`DROP DATABASE ${database}`);
    }
  });

  it('says why it refuses, in the engine\'s READONLY error', async () => {
    for (const [query, reason] of [
      [`SELECT * FROM ${table} SETTINGS max_threads = 1`, 'SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters'],
      [`SELECT * FROM (SELECT * FROM ${table} SETTINGS max_threads = 1)`, 'SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters'],
      [`EXPLAIN SELECT * FROM ${table} SETTINGS max_threads = 1`, 'SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters'],
      [`SELECT * FROM ${table} INTO OUTFILE 'x.tsv'`, 'INTO OUTFILE is not allowed'],
      ['SELECT * FROM numbers(3)', 'table function numbers is not allowed'],
      ["SELECT file('/etc/passwd') AS f", 'function file is not allowed'],
      ['SELECT 1 FORMAT `JSON x`', 'FORMAT JSON x is not an output format'],
      ['EXPLAIN header = 1 SELECT 1', 'only EXPLAIN of a SELECT is allowed'],
      ['EXPLAIN CURRENT TRANSACTION', 'only EXPLAIN of a SELECT is allowed'],
      [`DESCRIBE TABLE ${table} SETTINGS describe_compact_output = 1`, 'DESCRIBE takes one table'],
      [`EXISTS TABLE ${table} SETTINGS max_threads = 1`, 'EXISTS and SHOW CREATE take one table'],
      [`SHOW CREATE TABLE default.${table} INTO OUTFILE 'x'`, 'EXISTS and SHOW CREATE take one table'],
      [`DESCRIBE TABLE ${table} FORMAT JSON SETTINGS max_threads = 1`, 'DESCRIBE takes one table'],
      [`EXISTS TABLE default.${secret} FORMAT JSON`, `table default.${secret} is not among the tables this reader may query`],
      [`SELECT * FROM ${table} FORMAT TSV SETTINGS max_threads = 1`, 'SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters'],
      [`SELECT * FROM ${table} AS \`x\n TableIdentifier ${table}\``, 'the engine parsed the query into a tree that could not be read'],
      ['SHOW TABLES WHERE 1', 'only SHOW TABLES and SHOW DATABASES, with FROM, LIKE and LIMIT, are allowed'],
      ['SHOW CREATE DATABASE default', 'only SELECT, EXPLAIN of a SELECT, DESCRIBE, EXISTS, SHOW TABLES and SHOW CREATE TABLE are allowed'],
      [`SHOW CREATE TABLE ${secret}`, `table default.${secret} is not among the tables this reader may query`],
      [`DESCRIBE TABLE ${secret}`, `table default.${secret} is not among the tables this reader may query`],
      [`SELECT * FROM ${table} AS t, ${secret} AS s`, `table default.${secret} is not among the tables this reader may query`],
    ]) {
      const answer = await ask(query!);
      expect([answer.status, answer.code], `${query}\n${answer.text}`).to.deep.equal([403, '164']);
      expect(answer.text, query).to.equal(`Code: 164. DB::Exception: ${reason}: cannot execute query in readonly mode. (READONLY)\n`);
    }
  });

  it('bounds what the analysis runs of allowed tables as it bounds the query', async function () {
    this.timeout(60_000);
    // A scalar subquery is run once by the guard's analysis and once by the query: a count
    // of 3^22 rows, minutes of one core, is cut off by the 1 s limit in the first as in the second.
    const bounded = await serveQueries({ client: testClickHouse(), users: { analyst: key }, tables: [table], port: 0, limits: { maxExecutionTimeS: 1 } });
    try {
      const from = Array.from({ length: 22 }, (_, i) => `${table} AS t${i}`).join(', ');
      const response = await fetch(`${bounded.url}/`, { method: 'POST', body: `SELECT (SELECT count() FROM ${from})`, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      const text = await response.text();
      expect([response.status, response.headers.get('x-clickhouse-exception-code')], text).to.deep.equal([408, '159']);
      expect(text).to.contain('Timeout exceeded');
    } finally {
      await bounded.close();
    }
  });

  it('refuses every table function the engine knows, in every spelling, and none dials out or touches a file', async () => {
    const functions = await testClickHouse().query<{ name: string }>('SELECT name FROM system.table_functions ORDER BY name');
    expect(functions.length, 'the engine lists its table functions').to.be.greaterThan(30);
    const target = `127.0.0.1:${port}`;
    for (const { name } of functions) {
      await expectRefused(`SELECT * FROM ${name}('${target}', 'x', 'y')`);
    }
    const file = join(scratch.path, 'made-by-sqlite.db');
    for (const query of [
      "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
      "SELECT * FROM \"file\"('/etc/passwd', 'LineAsString')",
      "SELECT * FROM file/**/('/etc/passwd', 'LineAsString')",
      "SELECT * FROM file -- c\n('/etc/passwd', 'LineAsString')",
      "SELECT * FROM FILE('/etc/passwd', 'LineAsString')",
      "select * from File('/proc/self/environ', 'LineAsString')",
      "SELECT * FROM file('/etc', 'LineAsString')",
      `SELECT * FROM url('http://${target}/', 'LineAsString')`,
      `SELECT * FROM remote('${target}', 'system', 'one')`,
      `SELECT * FROM remoteSecure('${target}', 'system', 'one')`,
      `SELECT * FROM mysql('${target}', 'db', 't', 'u', 'p')`,
      `SELECT * FROM postgresql('${target}', 'db', 't', 'u', 'p')`,
      `SELECT * FROM s3('http://${target}/bucket/key', 'LineAsString')`,
      `SELECT * FROM hdfs('hdfs://${target}/x', 'LineAsString')`,
      `SELECT * FROM sqlite('${file}', 't')`,
      "SELECT * FROM executable('touch.sh', 'LineAsString', 'x String')",
      `SELECT * FROM ${table} WHERE id IN (SELECT toUInt32(length(line)) FROM url('http://${target}/', 'LineAsString'))`,
      `SELECT * FROM ${table} UNION ALL SELECT 1, line FROM file('/etc/passwd', 'LineAsString')`,
      `SELECT * FROM ${table} AS t JOIN url('http://${target}/', 'LineAsString') AS u ON 1 = 1`,
      `WITH (SELECT count() FROM file('/etc/passwd', 'LineAsString')) AS n SELECT n`,
      `DESC file('/etc/passwd', 'LineAsString')`,
      "SELECT file('/etc/passwd')",
      "SELECT FILE('/etc/hostname')",
    ]) {
      await expectRefused(query);
    }
    expect(connections, 'connections the queries opened').to.deep.equal([]);
    expect(existsSync(file), 'sqlite() made its file').to.equal(false);
    // executable() and friends would leave a child of this process (the engine runs in it).
    const children = execFileSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)], { encoding: 'utf8' }).trim().split('\n');
    expect(children, 'processes the queries started').to.deep.equal(['ps']);
  });

  it('refuses writes and OUTFILE in every disguise, and no row or file appears', async () => {
    const before = await rows(table);
    const out = (name: string) => join(scratch.path, name);
    for (const query of [
      `INSERT INTO ${table} VALUES (9, 'x')`,
      `WITH 1 AS x INSERT INTO ${table} SELECT 9, 'x'`,
      `insert into ${table} select 9, 'x'`,
      `INSERT INTO FUNCTION file('${out('via-function.tsv')}') SELECT 1`,
      `WITH 1 AS x INSERT INTO FUNCTION file('${out('via-cte.tsv')}', 'TSV', 'x UInt8') SELECT 1`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('plain.tsv')}'`,
      `SELECT * FROM ${table} INTO/**/OUTFILE '${out('comment.tsv')}'`,
      `SELECT * FROM ${table} INTO -- c\nOUTFILE '${out('line-comment.tsv')}'`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('append.tsv')}' APPEND`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('truncate.tsv')}' TRUNCATE`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('format.tsv')}' FORMAT TSV`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('compressed.gz')}' COMPRESSION 'gzip'`,
      `EXPLAIN SELECT 1 INTO OUTFILE '${out('explain.tsv')}'`,
      // The endpoint wraps the query (`SELECT * FROM (<query>) SETTINGS …`): breaking out
      // of the wrapping, or leaving a comment open over what follows it, does not reach past it.
      `SELECT * FROM ${table}) INTO OUTFILE '${out('break-out.tsv')}' --`,
      `SELECT * FROM ${table}) SETTINGS readonly = 0 --`,
      `SELECT * FROM ${table} FORMAT TSV INTO OUTFILE '${out('after-format.tsv')}'`,
      `SELECT * FROM ${table} INTO OUTFILE '${out('with-format.tsv')}' TRUNCATE FORMAT RowBinary`,
      `SELECT * FROM ${table} /*`,
      `DROP TABLE ${table}`,
      `TRUNCATE TABLE ${table}`,
      `ALTER TABLE ${table} DELETE WHERE 1`,
      `ALTER TABLE ${table} UPDATE name = 'x' WHERE 1`,
      `DELETE FROM ${table} WHERE 1`,
      `CREATE TABLE evil_${suffix} (x UInt8) ENGINE = Memory`,
      `CREATE TABLE evil_${suffix} ENGINE = File(TSV, '${out('engine.tsv')}') AS SELECT 1`,
      `CREATE DICTIONARY evil_${suffix} (x UInt8) PRIMARY KEY x SOURCE(FILE(path '/etc/passwd' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)`,
      `RENAME TABLE ${table} TO x_${suffix}`,
      `OPTIMIZE TABLE ${table} FINAL`,
      'SYSTEM STOP MERGES',
      'SYSTEM SHUTDOWN',
      'KILL QUERY WHERE 1',
      'SET readonly = 0',
      `ATTACH TABLE x_${suffix} FROM '/etc' (x String) ENGINE = MergeTree ORDER BY x`,
      "BACKUP DATABASE default TO File('/tmp/backup')",
      'GRANT ALL ON *.* TO default',
      'SHOW GRANTS',
      'SHOW PROCESSLIST',
      'SHOW USERS',
      `SELECT 1; DROP TABLE ${table}`,
      `SELECT 1;\nINSERT INTO ${table} VALUES (9, 'x')`,
    ]) {
      await expectRefused(query);
    }
    expect(await rows(table), 'rows after the attempts').to.equal(before);
    expect(readdirSync(scratch.path), 'files the attempts made').to.deep.equal([]);
    expect(await testClickHouse().query(`EXISTS TABLE evil_${suffix}`)).to.deep.equal([{ result: 0 }]);
  });

  it('holds with the parser lock gone: the engine alone refuses writes and table functions under the settings every query runs with', async () => {
    const settings = settingsClause({}, DEFAULT_QUERY_LIMITS);
    for (const query of [
      "SELECT * FROM file('/etc/passwd', 'LineAsString')",
      `SELECT * FROM url('http://127.0.0.1:${port}/', 'LineAsString')`,
      `SELECT * FROM remote('127.0.0.1:${port}', 'system', 'one')`,
      `SELECT * FROM ${table} UNION ALL SELECT 1, line FROM file('/etc/passwd', 'LineAsString')`,
    ]) {
      const error = await (async () => {
        for await (const chunk of testClickHouse().stream(`SELECT * FROM (${query}) SETTINGS ${settings}`, { format: 'TSV' })) void chunk;
      })().catch((e: unknown) => e);
      expect((error as { clickhouseCode?: number }).clickhouseCode, query).to.equal(164);
    }
    for (const statement of [`INSERT INTO ${table} SELECT 9, 'x'`, `INSERT INTO FUNCTION file('${join(scratch.path, 'x.tsv')}') SELECT 1`]) {
      const error = await testClickHouse().exec(`${statement} SETTINGS ${settings}`).catch((e: unknown) => e);
      expect((error as { clickhouseCode?: number }).clickhouseCode, statement).to.equal(164);
    }
    expect(connections).to.deep.equal([]);
    expect(readdirSync(scratch.path)).to.deep.equal([]);
  });

  it('refuses SETTINGS in the query and settings in the URL beyond its allowlist, and never raises its limits', async () => {
    for (const query of [
      `SELECT * FROM ${table} SETTINGS readonly = 0`,
      `SELECT * FROM ${table} SETTINGS max_execution_time = 100000`,
      `SELECT * FROM (SELECT * FROM ${table} SETTINGS max_threads = 64)`,
      `SELECT * FROM ${table} FORMAT TSV SETTINGS max_result_rows = 0`,
      // A reader raising its threads' CPU priority over the pipeline's.
      `SELECT * FROM ${table} SETTINGS os_thread_priority = -20`,
    ]) {
      await expectRefused(query);
    }
    for (const search of ['readonly=0', 'allow_ddl=1', 'output_format_schema=/tmp/x.capnp', 'format_template_resultset=/etc/passwd', 'user_files_path=/', 'max_memory_usage=0&allow_introspection_functions=1', 'os_thread_priority=-20', 'os_thread_priority=0']) {
      await expectRefused(`SELECT * FROM ${table}`, search);
    }
    // An output setting's value is a string to the engine, whatever quotes and backslashes it
    // holds: none closes it early to add a setting after it (here, one that would lift the
    // catalogue's filters).
    for (const value of ["UTC', additional_table_filters = {}, session_timezone = 'UTC", "UTC\\', additional_table_filters = {}, session_timezone = 'UTC"]) {
      const answer = await ask("SELECT name FROM system.tables WHERE database = 'default'", `session_timezone=${encodeURIComponent(value)}`);
      expect(answer.status, answer.text).not.to.equal(200);
      expect(answer.text).to.contain('time zone').and.not.to.contain(secret);
    }
    // A limit given in the URL can lower the bound, not lift it.
    const lowered = await ask(`SELECT * FROM ${table}`, 'max_result_rows=1&result_overflow_mode=throw');
    expect([lowered.status, lowered.code], lowered.text).to.deep.equal([500, '396']);
    const small = await serveQueries({ client: testClickHouse(), users: { analyst: key }, tables: [table], port: 0, limits: { maxResultRows: 2 } });
    try {
      // 0 is "no limit" to the engine: never a lowering.
      for (const search of ['max_result_rows=1000000', 'max_result_rows=0', 'max_result_rows=00', 'max_result_rows=2']) {
        const lifted = await fetch(`${small.url}/?${search}`, { method: 'POST', body: `SELECT * FROM ${table}`, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
        expect([lifted.status, lifted.headers.get('x-clickhouse-exception-code')], search).to.deep.equal([500, '396']);
        expect(await lifted.text()).to.contain('Limit for result exceeded');
      }
    } finally {
      await small.close();
    }
  });

  it('refuses keys in the URL, slows down guessing, and audits every refusal', async () => {
    const inUrl = await fetch(`${endpoint.url}/?query=SELECT+1&user=analyst&password=${key}`);
    expect([inUrl.status, inUrl.headers.get('x-clickhouse-exception-code')]).to.deep.equal([403, '516']);
    // Refused even beside the right key in a header: a key in a URL is a key in every log on the way.
    const alsoInUrl = await fetch(`${endpoint.url}/?query=SELECT+1&password=x`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
    expect([alsoInUrl.status, await alsoInUrl.text()]).to.deep.equal([403, 'Code: 516. DB::Exception: Authentication failed: keys are not accepted in the URL; send them as basic auth or X-ClickHouse-Key. (AUTHENTICATION_FAILED)\n']);
    // Basic auth is `user:key`: without the colon, or with the key where the user goes, no key is given.
    for (const credentials of [`analyst${key}`, `:${key}`, `${key}:`]) {
      const basic = await fetch(`${endpoint.url}/?query=SELECT+1`, { headers: { Authorization: `Basic ${Buffer.from(credentials).toString('base64')}` } });
      expect(basic.status, credentials).to.equal(403);
    }
    const basic = await fetch(`${endpoint.url}/?query=SELECT+1`, { headers: { Authorization: `Basic ${Buffer.from(`analyst:${key}`).toString('base64')}` } });
    expect([basic.status, await basic.text()]).to.deep.equal([200, '1\n']);
    const strict = await serveQueries({ client: testClickHouse(), users: { analyst: key }, tables: [table], port: 0, maxFailedAuthPerMinute: 3 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await fetch(`${strict.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': `wrong-${i}-guess` } })).status);
      expect(statuses).to.deep.equal([403, 403, 403, 429, 429]);
      const locked = await fetch(`${strict.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': 'wrong-again' } });
      const wait = Number(locked.headers.get('retry-after'));
      expect([locked.status, await locked.text()]).to.deep.equal([429, 'Code: 516. DB::Exception: too many failed authentications from this address; try again later. (AUTHENTICATION_FAILED)\n']);
      expect(wait, 'seconds until the minute of the first failure ends').to.be.within(55, 60);
      const right = await fetch(`${strict.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      expect(right.status, 'even the right key waits out the lockout').to.equal(429);
    } finally {
      await strict.close();
    }
    await fetch(`${endpoint.url}/?query=SELECT+1`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': 'not-the-key' } });
    await ask(`SELECT * FROM ${secret}`);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && audited.rows.length < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    const outcomes = audited.rows.map((event) => (event as { outcome: string }).outcome);
    expect(outcomes).to.include.members(['UNAUTHENTICATED', 'READONLY']);
    expect(JSON.stringify(audited.rows)).not.to.contain('not-the-key');
  });

  it('keeps its table of failing addresses bounded: past 10,000 the oldest is forgotten first', async function () {
    this.timeout(180_000);
    const strict = await serveQueries({ client: testClickHouse(), users: { analyst: key }, tables: [table], port: 0, maxFailedAuthPerMinute: 1 });
    // Every 127.x.y.z is this machine's loopback: one sender per address.
    const wrong = (localAddress: string) =>
      new Promise<number>((resolve, reject) => {
        const sent = httpRequest(`${strict.url}/?query=SELECT+1`, { localAddress, agent: false, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': 'wrong-key-guess' } }, (response) => {
          response.resume();
          response.on('end', () => resolve(response.statusCode!));
        });
        sent.on('error', reject);
        sent.end();
      });
    try {
      expect([await wrong('127.0.0.1'), await wrong('127.0.0.1')], 'one failure locks an address out').to.deep.equal([403, 429]);
      const others = Array.from({ length: 10_000 }, (_, i) => `127.1.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`);
      for (let at = 0; at < others.length - 1; at += 50) {
        const statuses = await Promise.all(others.slice(at, Math.min(at + 50, others.length - 1)).map(wrong));
        expect(new Set(statuses), `senders from ${at}`).to.deep.equal(new Set([403]));
      }
      expect(await wrong('127.0.0.1'), 'at 10,000 addresses the first is still held').to.equal(429);
      expect(await wrong(others.at(-1)!)).to.equal(403);
      expect(await wrong(others.at(-1)!), 'the newest is locked out').to.equal(429);
      expect(await wrong('127.0.0.1'), 'the oldest was forgotten to make room').to.equal(403);
    } finally {
      await strict.close();
    }
  });

  it('echoes a query_id only when it is a safe header value, and refuses any other before the engine runs anything', async () => {
    const echoed = async (search: string) => {
      const response = await fetch(`${endpoint.url}/?query=SELECT+1&${search}`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      expect(response.status, await response.text()).to.equal(200);
      return response.headers.get('x-clickhouse-query-id');
    };
    // Printable ASCII up to 256 characters, as given; none or an empty one: one is made, as a server does.
    for (const id of ['my-query', 'a b/c:d=e;"f"', '~'.repeat(256)]) expect(await echoed(`query_id=${encodeURIComponent(id)}`)).to.equal(id);
    for (const search of ['', 'query_id=']) expect(await echoed(search)).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-/);
    // Refused before the engine: the query names a table that does not exist, which the engine would answer with UNKNOWN_TABLE (60).
    for (const id of ['a\r\nX-Injected: 1', 'a\nb', 'a\rb', 'tab\there', 'nul\u0000', '\u007f', 'é', '中文', '😀', '~'.repeat(257)]) {
      const response = await fetch(`${endpoint.url}/?query_id=${encodeURIComponent(id)}`, { method: 'POST', body: `SELECT 1 FROM missing_${suffix}`, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      const text = await response.text();
      expect([response.status, response.headers.get('x-clickhouse-exception-code')], `${JSON.stringify(id)}: ${text}`).to.deep.equal([400, '36']);
      expect(text).to.contain('query_id must be');
      expect(response.headers.get('x-injected')).to.equal(null);
    }
  });

  it('reflects a hostile database or format name only in a plain-text body, never in a header', async () => {
    const injected = 'x\r\nX-Injected: 1\r\n\r\n<script>alert(1)</script>';
    for (const [search, code] of [
      [`database=${encodeURIComponent(injected)}`, '81'],
      [`default_format=${encodeURIComponent(injected)}`, '73'],
    ] as const) {
      const response = await fetch(`${endpoint.url}/?query=SELECT+1&${search}`, { headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key } });
      const text = await response.text();
      expect([response.status, response.headers.get('x-clickhouse-exception-code')], text).to.deep.equal([404, code]);
      expect(response.headers.get('x-injected')).to.equal(null);
      expect(response.headers.get('content-type')).to.match(/^text\/plain/);
    }
  });

  it('refuses compressed bodies that grow past the query limit, do not decompress, or stack encodings, without running anything', async () => {
    const post = async (body: Buffer, encoding: string) => {
      const response = await fetch(`${endpoint.url}/`, { method: 'POST', body, headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': key, 'Content-Encoding': encoding } });
      return { status: response.status, code: response.headers.get('x-clickhouse-exception-code'), text: await response.text() };
    };
    // A bomb: 64 MiB of a comment after a SELECT, a few dozen KiB compressed; the 1 MiB limit counts what it decompresses to.
    const bomb = gzipSync(Buffer.concat([Buffer.from(`SELECT name FROM ${table} -- `), Buffer.alloc(64 * 1024 * 1024, 0x61)]));
    expect(bomb.length).to.be.below(256 * 1024);
    const bombed = await post(bomb, 'gzip');
    expect([bombed.status, bombed.code], bombed.text).to.deep.equal([413, '229']);
    const corrupt = await post(Buffer.from(`SELECT name FROM ${table}`), 'gzip');
    expect(corrupt.code, corrupt.text).to.equal('27');
    expect(corrupt.status).to.not.equal(200);
    for (const encoding of ['gzip, gzip', 'br', 'x-gzip ', 'compress']) {
      const refused = await post(gzipSync(gzipSync(`SELECT name FROM ${table}`)), encoding);
      expect(refused.code, `${encoding}: ${refused.text}`).to.equal('48');
      expect(refused.text).not.to.contain('do-not-read').and.not.to.match(/^[abc]\n/m);
    }
  });
});

