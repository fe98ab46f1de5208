#!/usr/bin/env node
// Smoke test for the ClickHouse started by scripts/services/clickhouse.sh, using
// the project's own client (@clickhouse/client). Run from the repository root:
//
//   node scripts/services/clickhouse-smoke.js            # fresh table: create, insert
//                                                        # 10 rows (JSONEachRow), select
//   node scripts/services/clickhouse-smoke.js --check T  # verify table T (from an earlier
//                                                        # run) still has its 10 rows
//
// Env: CLICKHOUSE_HTTP_PORT (default 18123). Exits non-zero on any failure.
'use strict';

const path = require('path');
const { createClient } = require(require.resolve('@clickhouse/client', { paths: [path.resolve(__dirname, '../..'), process.cwd()] }));

const port = Number(process.env.CLICKHOUSE_HTTP_PORT || 18123);
const url = `http://127.0.0.1:${port}`;
const N = 10;

function fail(msg, err) {
  console.error(`[clickhouse-smoke] FAILED: ${msg}`);
  if (err) console.error(err && err.stack ? err.stack : err);
  process.exit(1);
}

async function rowsOf(client, table) {
  const rs = await client.query({ query: `SELECT id, name, value FROM ${table} ORDER BY id`, format: 'JSONEachRow' });
  return rs.json();
}

function expectedRows() {
  return Array.from({ length: N }, (_, i) => ({ id: i, name: `row-${i}`, value: i * 1.5 }));
}

function sameRows(got) {
  // ClickHouse's JSON output quotes 64-bit integers; compare loosely on id.
  const norm = (r) => ({ id: Number(r.id), name: r.name, value: Number(r.value) });
  return JSON.stringify(got.map(norm)) === JSON.stringify(expectedRows().map(norm));
}

async function fresh(client) {
  const table = `tributary_smoke_${Date.now()}_${process.pid}`;
  await client.command({
    query: `CREATE TABLE ${table} (id UInt64, name String, value Float64, ts DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY id`,
  });
  console.log(`[clickhouse-smoke] created table ${table}`);

  await client.insert({ table, values: expectedRows(), format: 'JSONEachRow', columns: ['id', 'name', 'value'] });
  console.log(`[clickhouse-smoke] inserted ${N} rows (JSONEachRow)`);

  const got = await rowsOf(client, table);
  if (!sameRows(got)) fail(`SELECT returned ${JSON.stringify(got)}`);
  console.log(`[clickhouse-smoke] selected ${got.length} rows back, contents match`);

  const cnt = await (await client.query({ query: `SELECT count() AS c, sum(value) AS s FROM ${table}`, format: 'JSON' })).json();
  console.log(`[clickhouse-smoke] aggregate: ${JSON.stringify(cnt.data[0])}`);

  const ver = await (await client.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' })).json();
  console.log(`[clickhouse-smoke] server version ${ver[0].v}`);

  const pong = await client.ping();
  if (!pong.success) fail('client.ping() failed', pong.error);
  console.log(`[clickhouse-smoke] OK table=${table}`);
}

async function check(client, table) {
  const got = await rowsOf(client, table);
  if (!sameRows(got)) fail(`table ${table} now holds ${JSON.stringify(got)}`);
  console.log(`[clickhouse-smoke] OK table ${table} kept its ${got.length} rows`);
}

async function main() {
  const client = createClient({ url, username: 'default', password: '', request_timeout: 30000 });
  try {
    const i = process.argv.indexOf('--check');
    if (i >= 0) {
      if (!process.argv[i + 1]) fail('--check needs a table name');
      await check(client, process.argv[i + 1]);
    } else {
      await fresh(client);
    }
  } finally {
    await client.close();
  }
}

main().then(() => process.exit(0), (err) => fail(`against ${url}`, err));
