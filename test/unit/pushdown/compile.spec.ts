import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { from, lastValueFrom, toArray } from 'rxjs';
import type { ClickHouseClient } from '../../../connectors/clickhouse';
import { random, vendorRecord, type Vendor } from '../../../examples/bookings/generate';
import { mappings } from '../../../examples/bookings/mappings';
import { migrationsDir, samplesDir } from '../../../examples/bookings/paths';
import { bookingSchema } from '../../../examples/bookings/schema';
import { normalize, type VendorMapping } from '../../../operators/normalize';
import { validate } from '../../../operators/validate';
import { planPushdown, type PushdownColumn } from '../../../pushdown/compile';
import type { PushdownPlan } from '../../../pushdown/plan';
import { Recorder, testClickHouse } from '../../helpers';

type Pushable = Extract<PushdownPlan, { pushable: true }>;

/**
 * The property: a line the plan accepts is one the JS path (JSON.parse → normalize →
 * validate) stores, and the row the plan's columns give is the row the JS path's insert
 * stores, column for column, in identical tables.
 */
describe('pushdown: planPushdown (the SQL path agrees with the JS path)', function () {
  this.timeout(300_000);
  let client: ClickHouseClient;
  let columns: PushdownColumn[];
  const run = `${process.pid}_${Date.now()}`;
  let tables = 0;

  before(async () => {
    client = testClickHouse();
    // The bookings table of the example, under a name of this test's own, as the columns come from system.columns.
    const ddl = readFileSync(join(migrationsDir, '001_bookings.sql'), 'utf8').replace('IF NOT EXISTS bookings', `pd_bookings_${run}`);
    await client.exec(ddl);
    columns = (await client.query<{ name: string; type: string; default_kind: string }>(
      `SELECT name, type, default_kind FROM system.columns WHERE database = currentDatabase() AND table = 'pd_bookings_${run}' ORDER BY position`,
    )).map((c) => ({ name: c.name, type: c.type, defaultKind: c.default_kind }));
  });

  after(async () => {
    const names = await client.query<{ name: string }>(`SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'pd\\_%${run}%'`);
    for (const { name } of names) await client.exec(`DROP TABLE IF EXISTS ${name}`);
  });

  /** What the JS path stores for each line (by index): parse, normalize with this mapping, validate. */
  async function jsPath(vendor: string, mapping: VendorMapping, schema: object, lines: Buffer[]): Promise<Map<number, Record<string, unknown>>> {
    const recorder = new Recorder();
    const envelopes = [];
    for (const [n, bytes] of lines.entries()) {
      let value: unknown;
      try {
        value = JSON.parse(bytes.toString('utf8'));
      } catch {
        continue;
      }
      envelopes.push(recorder.envelope(value, { vendor, record: n }));
    }
    const out = await lastValueFrom(from(envelopes).pipe(normalize({ mappings: { [vendor]: mapping } }), validate({ schema }), toArray()));
    return new Map(out.map((e) => [e.meta.record!, e.value]));
  }

  interface Outcome {
    lines: number;
    accepted: number;
    storedByJs: number;
    /** Accepted lines the JS path does not store, or stores otherwise. */
    violations: { line: string; js: string | undefined; sql: string }[];
  }

  /** Runs both paths over `lines` and compares them; `accepted` overrides the plan's (to show a broken plan is caught). */
  async function compare(vendor: string, mapping: VendorMapping, schema: object, plan: Pushable, lines: Buffer[], accepted = plan.accepted): Promise<Outcome> {
    const id = `${run}_${++tables}`;
    const cols = plan.columns.map((c) => c.name);
    const ddl = (name: string) =>
      `CREATE TABLE ${name} (n UInt32, ${cols.map((c) => `${c} ${columns.find((k) => k.name === c)!.type}`).join(', ')}) ENGINE = MergeTree ORDER BY n`;
    await client.exec(`CREATE TABLE pd_hex_${id} (n UInt32, h String) ENGINE = MergeTree ORDER BY n`);
    await client.exec(`CREATE TABLE pd_lines_${id} (n UInt32, line String) ENGINE = MergeTree ORDER BY n`);
    await client.exec(ddl(`pd_js_${id}`));
    await client.exec(ddl(`pd_sql_${id}`));
    // Hex on the way in: the engine gets each line's exact bytes, invalid UTF-8 included.
    await client.insert(`pd_hex_${id}`, Buffer.from(lines.map((l, n) => JSON.stringify({ n, h: l.toString('hex') })).join('\n')), {});
    await client.exec(`INSERT INTO pd_lines_${id} SELECT n, unhex(h) FROM pd_hex_${id}`);
    const stored = await jsPath(vendor, mapping, schema, lines);
    if (stored.size > 0) {
      await client.insert(`pd_js_${id}`, Buffer.from([...stored].map(([n, row]) => JSON.stringify({ n, ...row })).join('\n')), {});
    }
    await client.exec(`INSERT INTO pd_sql_${id} (n, ${cols.join(', ')}) SELECT n, ${plan.columns.map((c) => c.sql).join(', ')} FROM pd_lines_${id} WHERE ${accepted}`);
    const rows = async (table: string) =>
      new Map((await client.query<{ n: number; row: string }>(`SELECT n, toString(tuple(${cols.join(', ')})) AS row FROM ${table} ORDER BY n`)).map((r) => [r.n, r.row]));
    // The plan's `select` (every part computed once, in layers) gives the same rows.
    const viaSelect = await client.query<{ n: number; row: string }>(
      `WITH __pd_input AS (SELECT n, line FROM pd_lines_${id}) SELECT n, toString(tuple(${cols.map((_, i) => `__pd_c${i}`).join(', ')})) AS row FROM (${plan.select}) WHERE __pd_accepted ORDER BY n`,
    );
    if (accepted === plan.accepted) expect(new Map(viaSelect.map((r) => [r.n, r.row]))).to.deep.equal(await rows(`pd_sql_${id}`));
    const js = await rows(`pd_js_${id}`);
    const sql = await rows(`pd_sql_${id}`);
    const violations: Outcome['violations'] = [];
    for (const [n, row] of sql) {
      if (js.get(n) !== row) violations.push({ line: lines[n]!.toString('utf8'), js: js.get(n), sql: row });
    }
    return { lines: lines.length, accepted: sql.size, storedByJs: stored.size, violations };
  }

  function plan(vendor: string, mapping: VendorMapping = mappings[vendor]!, schema: object = bookingSchema): Pushable {
    const result = planPushdown({ vendor, mapping, schema, columns });
    if (!result.pushable) throw new Error(`${vendor} is not pushable: ${result.reasons.join('; ')}`);
    return result;
  }

  /**
   * A mapping without what cannot be pushed (computed fields, arrays, a check function),
   * with the schema's `required` cut to what it maps: the shape's other rules still run in
   * both paths.
   */
  function pushablePart(vendor: string): { mapping: VendorMapping; schema: object } {
    const fields = Object.fromEntries(
      Object.entries(mappings[vendor]!.fields).filter(([, rule]) => typeof rule === 'string' || (rule.compute === undefined && rule.items === undefined)),
    );
    const mapped = new Set([...Object.keys(fields), 'vendor']);
    return {
      mapping: { fields, ...(mappings[vendor]!.checks && { checks: mappings[vendor]!.checks }) },
      schema: { ...bookingSchema, required: bookingSchema.required.filter((name) => mapped.has(name)) },
    };
  }

  /** The vendor's records as NDJSON lines (a JSON array file gives one line per element). */
  function sampleLines(vendor: string): Buffer[] {
    const lines: Buffer[] = [];
    for (const file of readdirSync(join(samplesDir, vendor))) {
      const text = readFileSync(join(samplesDir, vendor, file));
      if (file.endsWith('.json')) lines.push(...(JSON.parse(text.toString('utf8')) as unknown[]).map((r) => Buffer.from(JSON.stringify(r))));
      else lines.push(...splitLines(text));
    }
    return lines;
  }

  const summary: string[] = [];
  after(() => console.log(`      ${summary.join('\n      ')}`));

  function report(what: string, outcome: Outcome): void {
    summary.push(`${what}: ${outcome.lines} lines, JS stores ${outcome.storedByJs}, SQL accepts ${outcome.accepted} (all identical: ${outcome.violations.length === 0})`);
  }

  it('accepts at least 99% of clean generated records, each stored exactly as the JS path stores it', async () => {
    for (const vendor of ['globetrek', 'staylodge'] as const) {
      const rng = random(7);
      const lines = Array.from({ length: 3000 }, (_, i) => Buffer.from(JSON.stringify(vendorRecord(vendor, i + 1, rng))));
      const outcome = await compare(vendor, mappings[vendor]!, bookingSchema, plan(vendor), lines);
      report(`${vendor} clean`, outcome);
      expect(outcome.violations).to.deep.equal([]);
      expect(outcome.storedByJs).to.equal(lines.length);
      expect(outcome.accepted / lines.length, vendor).to.be.at.least(0.99);
    }
  });

  for (const vendor of ['globetrek', 'staylodge', 'skyway', 'tripwire'] as const) {
    it(`${vendor}: on hostile records, every accepted line is stored by JS with the same row`, async () => {
      const whole = vendor === 'globetrek' || vendor === 'staylodge';
      const { mapping, schema } = whole ? { mapping: mappings[vendor]!, schema: bookingSchema } : pushablePart(vendor);
      const rng = random(vendor.length * 1000 + 3);
      const seeds = vendor === 'tripwire' ? sampleLines('tripwire').map((l) => JSON.parse(l.toString('utf8')) as Record<string, unknown>) : [];
      const base = (i: number) => (vendor === 'tripwire' ? structuredClone(seeds[i % seeds.length]!) : vendorRecord(vendor as Vendor, i + 1, rng));
      const lines = Array.from({ length: 6000 }, (_, i) => hostile(base(i), rng));
      const outcome = await compare(vendor, mapping, schema, plan(vendor, mapping, schema), lines);
      report(`${vendor}${whole ? '' : ' (pushable part)'} hostile`, outcome);
      expect(outcome.violations.slice(0, 5)).to.deep.equal([]);
      // Hostile data still leaves records the plan can decide.
      expect(outcome.accepted).to.be.greaterThan(lines.length / 20);
    });
  }

  it('agrees with the JS path on the golden sample files', async () => {
    for (const vendor of ['globetrek', 'staylodge', 'skyway', 'tripwire']) {
      const whole = vendor === 'globetrek' || vendor === 'staylodge';
      const { mapping, schema } = whole ? { mapping: mappings[vendor]!, schema: bookingSchema } : pushablePart(vendor);
      const lines = sampleLines(vendor);
      const outcome = await compare(vendor, mapping, schema, plan(vendor, mapping, schema), lines);
      report(`${vendor}${whole ? '' : ' (pushable part)'} golden samples`, outcome);
      expect(outcome.violations).to.deep.equal([]);
      expect(outcome.accepted, vendor).to.be.greaterThan(0);
    }
  });

  it('catches a broken plan: without one of its refusals, some accepted line differs from the JS path', async () => {
    const vendor = 'globetrek';
    const p = plan(vendor);
    const rng = random(11);
    const lines = Array.from({ length: 4000 }, (_, i) => hostile(vendorRecord(vendor, i + 1, rng), rng));
    const names = p.conditions!.map((c) => c.name);
    // Each of these refusals alone keeps some hostile line from a different row (duplicate keys,
    // a time that is no date, a positive refund, 1000 passengers), the others do not cover it.
    for (const dropped of ['line', 'fields.updated_at', 'mappings.globetrek.checks[0]', 'schema.properties.passengers']) {
      expect(names, dropped).to.include(dropped);
      const weaker = p.conditions!.filter((c) => c.name !== dropped).map((c) => `(${c.sql})`).join(' AND ');
      const outcome = await compare(vendor, mappings[vendor]!, bookingSchema, p, lines, weaker);
      expect(outcome.violations.length, `without ${dropped}`).to.be.greaterThan(0);
    }
  });

  it('says why a mapping or schema cannot be pushed down, naming each rule', () => {
    const reasons = (vendor: string, mapping: VendorMapping, schema: object = bookingSchema) => {
      const result = planPushdown({ vendor, mapping, schema, columns });
      return result.pushable ? [] : result.reasons;
    };
    expect(reasons('skyway', mappings.skyway!)).to.deep.equal([
      'mappings.skyway.fields.passengers: compute is a JS function',
      "schema.required: 'passengers' is never mapped",
    ]);
    expect(reasons('tripwire', mappings.tripwire!)).to.include.members([
      'mappings.tripwire.fields.travel_date: compute is a JS function',
      'mappings.tripwire.fields.travellers: items (arrays of records) are not translated',
      'mappings.tripwire.check: check is a JS function (state it as checks)',
    ]);
    const base = mappings.globetrek!;
    expect(reasons('g', { ...base, check: () => undefined })).to.deep.equal(['mappings.g.check: check is a JS function (state it as checks)']);
    expect(reasons('g', base, { ...bookingSchema, minProperties: 3 })).to.deep.equal(['schema.minProperties: keyword not translated']);
    const withProperty = (name: string, sub: object) => ({ ...bookingSchema, properties: { ...bookingSchema.properties, [name]: sub } });
    expect(reasons('g', base, withProperty('origin', { type: 'string', format: 'email' }))).to.deep.equal([
      'schema.properties.origin.format: format "email" on a string field is not translated (full)',
    ]);
    expect(reasons('g', base, withProperty('currency', { type: 'string', pattern: '^(?=E)[A-Z]{3}$' }))).to.deep.equal([
      'schema.properties.currency.pattern: pattern group (?… other than (?: is not translated',
    ]);
    expect(reasons('g', base, withProperty('booking_id', { type: 'string', pattern: '^\\bGT' }))).to.deep.equal(['schema.properties.booking_id.pattern: pattern escape \\b is not translated']);
    expect(reasons('g', base, withProperty('passengers', { type: 'integer', multipleOf: 2 }))).to.deep.equal(['schema.properties.passengers.multipleOf: keyword not translated']);
    expect(reasons('g', { fields: { ...base.fields, origin: { from: 'origin', type: 'number' } } }, {})).to.deep.equal([
      'columns.origin: a integer field into String is not translated',
    ]);
    expect(reasons('g', { fields: { ...base.fields, origin: { from: 'toString' } } }, {})).to.deep.equal([
      "mappings.g.fields.origin.from: the key 'toString' is read from a prototype in JS",
    ]);
    expect(reasons('g', { fields: { ...base.fields, booked_at: { from: 'booked_on', type: 'datetime', format: 'YYYYMMDDHH0mm' } } }, {})).to.deep.equal([
      'mappings.g.fields.booked_at.format: a digit as a literal is not translated',
    ]);
  });
});

/** Splits a file into lines as an NDJSON reader does (the '\r' of CRLF stays: the plan reads it as JSON whitespace). */
function splitLines(bytes: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let at = bytes.indexOf(0x0a); at >= 0; at = bytes.indexOf(0x0a, start)) {
    lines.push(bytes.subarray(start, at));
    start = at + 1;
  }
  if (start < bytes.length) lines.push(bytes.subarray(start));
  return lines.filter((l) => l.length > 0);
}

/** Values a vendor sends when things go wrong, and the edges where JS and SQL could part. */
const HOSTILE_VALUES: unknown[] = [
  undefined, null, '', ' ', '  x  ', 0, -0, 1, 7, 3.5, 1e21, 1e-7, 0.1, 0.30000000000000004, -1, 1000, 999, 65536, 2 ** 53, true, false, {}, [], [1], 'x',
  'CONF', ' CONF ', 'conf', 'RFND', 'AIR', 'Air', 'CONFIRMED', 'TENTATIVE', 'eur', 'EUR', 'EURO', 'ÉUR', 'EUR\t', '\u00a0EUR', 'ǆ', 'ß', '日本', '😀',
  '007', '1e3', ' 7 ', '+3', '3.0', '0x10', '-0', '1.234,56', '1,2,3', '-12,50', '-0,00', '+5,00', '5.', ',5', '12,5', '0,0001', '123456789012345,67',
  '1234.5678', '-1234.56789', '100000000000000', '00012,30', '12.345.678,90',
  '29/03/2026 02:30', '29/03/2026 01:59', '29/03/2026 03:00', '25/10/2026 02:30', '25/10/2026 01:59', '25/10/2026 03:00', '26/10/2025 02:15',
  '31/02/2026 10:00', '29/02/2028 10:00', '29/02/2027 10:00', '1/2/2026 3:04', '01/02/2026 24:00', '01/13/2026 10:00', '01/02/1969 10:00', '01/02/2200 10:00',
  '01/02/2026', '1/2/2026', '31/12/2149', '07/06/2149', '01/01/1970', '2026-03-29T02:30:00', '2026-03-29T01:30:00+01:00', '2026-03-29', '2026-02-30',
  '2026-03-01T10:00:00z', '2026-03-01t10:00:00.123456789-05:30', '2026-03-01 10:00', '2026-03-01T10:00:00+0530', '2026-03-01T10:00:00+99:99',
  '2026-03-01T10:00:60Z', '2026-03-01T23:59:59.9999Z', '2026-03-01T00:00:00Z', '2026-03-01T00:00:00+14:00', '2026-03-01  ', '1970-01-01T00:00:00Z',
  '1770072027', 1770072027, 1770072027.5, ' 1770072027 ', -5, 99999999999999, '2026-03-01T10:00', '2026-3-1',
];

const pick = <T>(rng: () => number, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!;

/** Every path to a value in `record` (`hotel.city`, `pax.0.type`). */
function paths(value: unknown, prefix: string[] = []): string[][] {
  if (value === null || typeof value !== 'object') return [prefix];
  const entries = Object.entries(value as object);
  return [prefix, ...entries.flatMap(([key, v]) => paths(v, [...prefix, key]))].filter((p) => p.length > 0);
}

function setPath(record: Record<string, unknown>, path: string[], value: unknown): void {
  let at: any = record;
  for (const key of path.slice(0, -1)) at = at[key];
  if (value === undefined) delete at[path.at(-1)!];
  else at[path.at(-1)!] = value;
}

/** The record with zero to three fields made hostile, as one line, and maybe the line itself made odd. */
function hostile(record: Record<string, unknown>, rng: () => number): Buffer {
  const mutations = Math.floor(rng() * 4);
  for (let i = 0; i < mutations; i++) {
    const path = pick(rng, paths(record));
    setPath(record, path, pick(rng, HOSTILE_VALUES));
  }
  // A refund, with either sign.
  if (rng() < 0.05 && 'status' in record) {
    record.status = 'RFND';
    if (typeof record.total === 'string' && rng() < 0.5) record.total = `-${record.total}`;
  }
  let line = JSON.stringify(record);
  const keys = Object.keys(record);
  switch (rng() < 0.5 ? -1 : Math.floor(rng() * 14)) {
    case 0: // a duplicate key: the engine reads the first, JSON.parse the last
      if (keys.length > 0) line = `{${JSON.stringify(pick(rng, keys))}:${JSON.stringify(pick(rng, HOSTILE_VALUES) ?? 'x')},${line.slice(1)}`;
      break;
    case 1: // the same key twice, the same value
      if (keys.length > 0) {
        const key = pick(rng, keys);
        line = `{${JSON.stringify(key)}:${JSON.stringify(record[key]) ?? 'null'},${line.slice(1)}`;
      }
      break;
    case 2:
      line = `\ufeff${line}`;
      break;
    case 3:
      line = `${line}\r`;
      break;
    case 4:
      line = ` ${line} `;
      break;
    case 5:
      line = line.replace(/":/g, '":\t');
      break;
    case 6: // an escape for a plain letter
      line = line.replace(/"([A-Z])/, (_, c: string) => `"\\u00${c.charCodeAt(0).toString(16)}`);
      break;
    case 7:
      line = line.replace('/', '\\/');
      break;
    case 8:
      return Buffer.concat([Buffer.from(line.slice(0, 20)), Buffer.from([0xff, 0xc3]), Buffer.from(line.slice(20))]);
    case 9:
      line = line.slice(0, Math.floor(rng() * line.length));
      break;
    case 10:
      line = `${line}x`;
      break;
    case 11: // a number as JSON.parse reads it but the engine may not
      line = line.replace(/:(-?\d+)([,}])/, (_, n: string, end: string) => `:${pick(rng, [`${n}.0`, `${n}e0`, `${n}.50`, '1E2', '-0.0', '12345678901234567890', '1e400'])}${end}`);
      break;
    case 12: // a duplicate key inside a nested object
      line = line.replace(/:\{"([^"]+)":/, (_, k: string) => `:{"${k}":"DUP","${k}":`);
      break;
    case 13:
      line = `[${line}]`;
      break;
  }
  return Buffer.from(line);
}
