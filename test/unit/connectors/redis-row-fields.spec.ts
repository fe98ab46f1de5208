import { expect } from 'chai';
import { FieldKind, RowFields } from '../../../connectors/redis/rowFields';
import type { TimeParts } from '../../../lib/dates';
import { encodedRows } from '../../../lib/batch';

/** A seeded generator of hostile JSON values. */
function generator(seed: number) {
  // mulberry32: every bit of it varies (a bare LCG's low bits cycle, and `% n` reads them).
  let state = seed;
  const next = (n: number) => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), 1 | state);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
  // Units that end, escape or stretch a string, at every offset of a four-byte word.
  const units = ['a', 'Z', '0', '"', '\\', '/', '\n', '\u0000', '\u001f', '\u007f', 'é', '中', '😀', '\ud800', '\udfff', ',', ']', '}', '[', '{', ':', ' '];
  const string = (): string => Array.from({ length: next(14) }, () => units[next(units.length)]!).join('');
  const value = (depth: number): unknown => {
    switch (next(depth > 2 ? 6 : 8)) {
      case 0:
        return string();
      case 1:
        return [0, -1, 7, 2 ** 31, -2.5e-7, 1e21, 123456789.125, Number.MAX_SAFE_INTEGER][next(8)];
      case 2:
        return [null, true, false][next(3)];
      case 3:
        return '';
      case 4:
        return new Date(Date.UTC(2026, next(12), 1 + next(28), next(24), next(60), next(60), next(1000))).toISOString();
      case 5:
        return string() + '"';
      case 6:
        return Array.from({ length: next(4) }, () => value(depth + 1));
      default:
        return Object.fromEntries(Array.from({ length: next(4) }, () => [string(), value(depth + 1)]));
    }
  };
  return { next, string, value };
}

/** What RowFields should read of a field holding `value`. */
function expected(value: unknown): { kind: FieldKind; value?: unknown } {
  if (value === undefined) return { kind: FieldKind.Missing };
  if (typeof value === 'string') return { kind: FieldKind.String, value };
  if (typeof value === 'number') return { kind: FieldKind.Number, value };
  return { kind: FieldKind.Other };
}

function read(fields: RowFields, names: readonly string[], rows: ReturnType<typeof encodedRows>, index: number): { kind: FieldKind; value?: unknown }[] {
  fields.read(rows, index);
  return names.map((_, i) => {
    const kind = fields.kind(i);
    return kind === FieldKind.String ? { kind, value: fields.string(i) } : kind === FieldKind.Number ? { kind, value: fields.number(i) } : { kind };
  });
}

describe('RowFields (the cache reading encoded rows from their bytes)', () => {
  const names = ['vendor', 'booking_id', 'booked_at', 'customer'];

  it('reads what JSON.parse reads of arrays and objects of hostile values, row after row', () => {
    const { next, value } = generator(11);
    const columns = ['extra', 'vendor', 'nested', 'booking_id', 'booked_at', 'tail', 'customer', 'after'];
    const fields = new RowFields(names);
    const rows: unknown[][] = [];
    const objects: Record<string, unknown>[] = [];
    for (let i = 0; i < 3_000; i++) {
      rows.push(columns.map(() => value(0)));
      // Objects with the names in any order, some left out, and other keys that look alike.
      const object: Record<string, unknown> = {};
      for (const key of ['booking_idx', 'Vendor', ...names, 'vendor"', 'nested'].sort(() => next(3) - 1)) if (next(5) > 0) object[key] = value(0);
      objects.push(object);
    }
    const arrays = { ...encodedRows(rows.map((row) => JSON.stringify(row))), columns };
    rows.forEach((row, i) => {
      expect(read(fields, names, arrays, i), JSON.stringify(row)).to.deep.equal(names.map((name) => expected(row[columns.indexOf(name)])));
    });
    const encoded = encodedRows(objects.map((object) => JSON.stringify(object)));
    objects.forEach((object, i) => {
      expect(read(fields, names, encoded, i), JSON.stringify(object)).to.deep.equal(names.map((name) => expected(object[name])));
    });
  });

  it('takes the last of a repeated key, finds an escaped key, and never a key nested deeper', () => {
    const fields = new RowFields(names);
    const lines = ['{"vendor":"first","vendor":"last"}', '{"vend\\u006fr":"escaped","booking_id":7}', '{"nested":{"vendor":"inner"},"list":["vendor","booking_id"],"booking_id":"outer"}', '{"customer":"a\\"b\\\\c\\u00e9\\ud83d\\ude00"}'];
    const rows = encodedRows(lines);
    lines.forEach((line, i) => {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      expect(read(fields, names, rows, i), line).to.deep.equal(names.map((name) => expected(parsed[name])));
    });
  });

  it('reads columns of another list after a change, and arrays only with columns', () => {
    const fields = new RowFields(names);
    const first = { ...encodedRows(['["v","b"]']), columns: ['vendor', 'booking_id'] };
    const second = { ...encodedRows(['["b","v"]']), columns: ['booking_id', 'vendor'] };
    expect(read(fields, names, first, 0).slice(0, 2)).to.deep.equal([expected('v'), expected('b')]);
    expect(read(fields, names, second, 0).slice(0, 2)).to.deep.equal([expected('v'), expected('b')]);
    expect(read(fields, names, encodedRows(['["v","b"]']), 0)).to.deep.equal(names.map(() => expected(undefined)));
  });

  it('never reads past a malformed or truncated row into the next one', () => {
    const fields = new RowFields(names);
    const columns = ['vendor', 'booking_id', 'booked_at', 'customer'];
    const good = '["V2","B2","2026-12-03T10:00:00.000Z","C2"]';
    const bad = ['["v","b', '["v', '[', '{', '{"vendor"', '{"vendor":', '{"vendor":"v', '{"vendor" "v"}', '{vendor:"v"}', '["v" ,"b"]', '"v"', 'null', '', '["v\\', '{"vendor":"v\\"}', '[{"a":"]"],"b"'];
    for (const line of bad) {
      const rows = { ...encodedRows([line, good]), columns };
      const values = read(fields, names, rows, 0);
      // Whatever it makes of the bytes, nothing of the good row after it.
      for (const v of values) expect(['V2', 'B2', '2026-12-03T10:00:00.000Z', 'C2'], line).to.not.include(v.value);
      expect(read(fields, names, rows, 1)).to.deep.equal([expected('V2'), expected('B2'), expected('2026-12-03T10:00:00.000Z'), expected('C2')]);
    }
    // What it makes of some: a field past the row's end is Missing, a field it cannot read is Other.
    const cases: [string, { kind: FieldKind; value?: unknown }[]][] = [
      ['["v","b', [expected('v'), expected(''), expected(undefined), expected(undefined)]],
      ['["v",', [expected('v'), expected(undefined), expected(undefined), expected(undefined)]],
      ['[ "v","b"]', [{ kind: FieldKind.Other }, expected('b'), expected(undefined), expected(undefined)]],
      ['{"vendor"', names.map(() => expected(undefined))],
      ['{"vendor":', names.map(() => expected(undefined))],
      ['{"vendor" "v"}', names.map(() => expected(undefined))],
      ['{"booking_id":"b","vendor" "v"}', [expected(undefined), expected('b'), expected(undefined), expected(undefined)]],
    ];
    for (const [line, values] of cases) expect(read(fields, names, { ...encodedRows([line, good]), columns }, 0), line).to.deep.equal(values);
  });

  it('reads YYYY-MM-DDTHH:mm:ss.sssZ at once, and nothing else', () => {
    const fields = new RowFields(['t']);
    const parts: TimeParts = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0, millisecond: 0 };
    fields.read(encodedRows(['{"t":"2345-12-03T10:20:30.456Z"}']), 0);
    expect(fields.isoUtc(0, parts)).to.equal(true);
    expect(parts).to.deep.equal({ year: 2345, month: 12, day: 3, hour: 10, minute: 20, second: 30, millisecond: 456 });
    fields.read(encodedRows(['{"t":"2999-09-09T19:59:59.999Z"}']), 0);
    expect(fields.isoUtc(0, parts)).to.equal(true);
    expect(parts).to.deep.equal({ year: 2999, month: 9, day: 9, hour: 19, minute: 59, second: 59, millisecond: 999 });
    const good = '2026-12-03T10:20:30.456Z';
    // Each separator wrong on its own, a longer text, and other forms.
    const wrong = [4, 7, 10, 13, 16, 19, 23].map((at) => `${good.slice(0, at)}_${good.slice(at + 1)}`);
    for (const text of [...wrong, `${good}abc`, '2026-12-03T10:20:30.456+01:00', '2026-12-03 10:20:30.456', '2026-12-03T10:20:30Z', '2026-12-03T10:20:30.4567Z', '2026-12-03T10:20:30.456z']) {
      fields.read(encodedRows([JSON.stringify({ t: text })]), 0);
      expect(fields.isoUtc(0, parts), text).to.equal(false);
    }
    // Digits that are not digits are NaN: the caller's range checks refuse them.
    for (const text of ['2026-1x-03T10:20:30.456Z', '2026-1 -03T10:20:30.456Z', '2026-1/-03T10:20:30.456Z', '2026-1:-03T10:20:30.456Z']) {
      fields.read(encodedRows([JSON.stringify({ t: text })]), 0);
      expect(fields.isoUtc(0, parts), text).to.equal(true);
      expect(parts.month, text).to.be.NaN;
    }
  });
});
