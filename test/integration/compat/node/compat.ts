/**
 * Checks that @clickhouse/client works against an endpoint. Reads COMPAT_URL, COMPAT_USER,
 * COMPAT_KEY, COMPAT_CASES, COMPAT_TABLE and COMPAT_ROWS; prints one JSON line; exits 1
 * when any check fails. Run as its own process, like the other languages' programs.
 */
import { ClickHouseError, ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { readFileSync } from 'node:fs';

interface ValueCase { name: string; sql: string; kind?: 'bytes' | 'datetime'; expect: unknown; zone?: string }
interface RefusedCase { name: string; sql: string; codes: number[] }
interface Check { ok: boolean; detail?: Record<string, unknown>; failures?: Record<string, unknown>[] }

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`${name} is not set\n`);
    process.exit(2);
  }
  return value;
}

const checks: Record<string, Check> = {};
const check = (name: string): Check => (checks[name] = { ok: true });
const fail = (c: Check, failure: Record<string, unknown>) => {
  c.ok = false;
  (c.failures ??= []).push(failure);
};
const failure = (name: string, error: unknown) => ({ name, error: String((error as Error)?.message ?? error), errorType: (error as Error)?.constructor?.name });

function report(): never {
  const ok = Object.values(checks).every((c) => c.ok);
  const version = (require('@clickhouse/client/package.json') as { version: string }).version;
  process.stdout.write(`${JSON.stringify({ driver: '@clickhouse/client', version, ok, checks })}\n`);
  process.exit(ok ? 0 : 1);
}

/** The UTC instant of a wall-clock time in `zone`, for DateTime64 text as JSON formats write it. */
function utcOf(local: string, zone: string): string {
  const [date, time] = local.split(' ') as [string, string];
  const [whole, fraction = ''] = time.split('.');
  const asUtc = Date.parse(`${date}T${whole}Z`);
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
      .formatToParts(asUtc)
      .map((p) => [p.type, p.value]),
  );
  const offset = Date.UTC(+parts.year!, +parts.month! - 1, +parts.day!, +parts.hour!, +parts.minute!, +parts.second!) - asUtc;
  return `${new Date(asUtc - offset).toISOString().slice(0, 19)}.${fraction.padEnd(6, '0')}Z`;
}

/** The form cases.json states: numbers as decimal text (64-bit and wider arrive quoted), lists, NULL as null. */
function canonical(value: unknown): unknown {
  if (value === null) return null;
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value === 'number') return String(value);
  return value;
}

/** The one String of a one-row RowBinary result: a LEB128 length, then the bytes as stored. */
function rowBinaryString(body: Buffer): Buffer {
  let length = 0;
  let shift = 0;
  let at = 0;
  for (;;) {
    const byte = body[at++]!;
    length |= (byte & 0x7f) << shift;
    if (byte < 0x80) break;
    shift += 7;
  }
  return body.subarray(at, at + length);
}

async function main(): Promise<void> {
  const cases = JSON.parse(readFileSync(env('COMPAT_CASES'), 'utf8')) as { values: ValueCase[]; refused: RefusedCase[] };
  const table = env('COMPAT_TABLE');
  const rows = Number(env('COMPAT_ROWS'));
  const client = createClient({
    url: env('COMPAT_URL'),
    username: env('COMPAT_USER'),
    password: process.env.COMPAT_KEY ?? '',
    request_timeout: 300_000,
    log: { level: ClickHouseLogLevel.OFF },
  });

  const connect = check('connect');
  try {
    const ping = await client.ping();
    if (!ping.success) fail(connect, failure('ping', ping.error));
    const [row] = await (await client.query({ query: 'SELECT version() AS version', format: 'JSONEachRow' })).json<{ version: string }>();
    connect.detail = { version: row?.version };
  } catch (error) {
    fail(connect, failure('SELECT version()', error));
    report();
  }

  const types = check('types');
  for (const c of cases.values) {
    try {
      let got: unknown;
      let zone: string | undefined;
      if (c.kind === 'bytes') {
        // JSON and text results are decoded as UTF-8; exec hands over the body as sent.
        const { stream } = await client.exec({ query: `${c.sql} FORMAT RowBinary` });
        const chunks: Buffer[] = [];
        for await (const chunk of stream) chunks.push(chunk as Buffer);
        got = rowBinaryString(Buffer.concat(chunks)).toString('hex');
      } else {
        // 64-bit and wider integers and decimals as text, so that they survive JSON.parse.
        const clickhouse_settings = { output_format_json_quote_64bit_integers: 1, output_format_json_quote_decimals: 1 } as const;
        const result = await (await client.query({ query: c.sql, format: 'JSON', clickhouse_settings })).json<Record<string, unknown>>();
        const value = Object.values(result.data[0]!)[0];
        const type = result.meta![0]!.type;
        zone = /DateTime64\(\d+, '([^']+)'\)/.exec(type)?.[1];
        got = c.kind === 'datetime' && typeof value === 'string' && zone ? utcOf(value, zone) : canonical(value);
      }
      if (JSON.stringify(got) !== JSON.stringify(c.expect) || (c.zone && zone !== c.zone)) {
        fail(types, { name: c.name, got, zone, expect: c.expect, expectZone: c.zone });
      }
    } catch (error) {
      fail(types, failure(c.name, error));
    }
  }

  // Rows are counted and summed as they arrive: none are kept. A format with a header, as
  // the names and types must come once, however many blocks the engine makes.
  const stream = check('stream');
  const started = process.hrtime.bigint();
  try {
    const result = await client.query({ query: `SELECT n FROM ${table}`, format: 'JSONCompactEachRowWithNamesAndTypes' });
    let header = 0;
    let count = 0;
    let sum = 0; // < 2^53 for the row counts this runs with
    for await (const batch of result.stream<unknown[]>()) {
      for (const row of batch) {
        const [n] = row.json<[string | number]>();
        if (header < 2) {
          header++;
          if (n !== (header === 1 ? 'n' : 'UInt64')) fail(stream, { name: 'header', got: n, expect: header === 1 ? 'n' : 'UInt64' });
          continue;
        }
        count++;
        sum += Number(n);
      }
    }
    stream.detail = { rows: count, sum: String(sum), seconds: Number(process.hrtime.bigint() - started) / 1e9 };
    if (count !== rows || sum !== (rows * (rows - 1)) / 2) fail(stream, { name: 'count and sum', got: [count, sum], expect: [rows, (rows * (rows - 1)) / 2] });
  } catch (error) {
    fail(stream, failure('stream', error));
  }

  // query_params go to the server as param_<name>.
  const parameters = check('parameters');
  const text = 'O\'Brien \\ "q"\t✓\nend';
  try {
    const [row] = await (await client.query({ query: 'SELECT {a:Int64} + 1 AS v, {s:String} AS s', query_params: { a: 41, s: text }, format: 'JSONEachRow' })).json<{ v: string | number; s: string }>();
    if (String(row?.v) !== '42' || row.s !== text) fail(parameters, { name: 'scalar parameters', got: row, expect: { v: '42', s: text } });
  } catch (error) {
    fail(parameters, failure('scalar parameters', error));
  }
  try {
    const [row] = await (await client.query({ query: `SELECT count() AS below FROM ${table} WHERE n < {limit:UInt64}`, query_params: { limit: 1000 }, format: 'JSONEachRow' })).json<{ below: string | number }>();
    if (String(row?.below) !== '1000') fail(parameters, { name: 'parameter in WHERE', got: row?.below, expect: '1000' });
  } catch (error) {
    fail(parameters, failure('parameter in WHERE', error));
  }

  const refused = check('refused');
  refused.detail = {};
  for (const c of cases.refused) {
    try {
      await client.command({ query: c.sql.replaceAll('{table}', table) });
      fail(refused, { name: c.name, error: 'no error' });
    } catch (error) {
      if (!(error instanceof ClickHouseError)) fail(refused, { ...failure(c.name, error), expect: 'ClickHouseError' });
      else if (!c.codes.includes(Number(error.code))) fail(refused, { name: c.name, code: error.code, expect: c.codes, error: error.message });
      else refused.detail[c.name] = { code: Number(error.code), type: error.type };
    }
  }
  await client.close();
  report();
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error)?.stack ?? String(error)}\n`);
  process.exit(2);
});
