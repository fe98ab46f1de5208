import { expect } from 'chai';
import fc from 'fast-check';
import { decimalKey, unquoted } from '../../../connectors/clickhouse/sink';
import { jsonObjectWriter, writeJsonArray, writeText } from '../../../lib/jsonBytes';
import type { RowBytes } from '../../../lib/sink';
import { GrowingBytes, seeded } from '../../helpers';

const written = (values: unknown[], size = 1) => {
  const out = new GrowingBytes(Buffer.alloc(size));
  writeJsonArray(out, values);
  return out.buffer.subarray(0, out.at);
};

describe('JSON written as bytes', () => {
  // Every kind of value an array row can hold, and text of every kind of UTF-16 unit (lone surrogates too).
  const unit = fc.oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0x80, max: 0xffff }), fc.constantFrom(0x22, 0x5c, 0x0a, 0x00, 0x1f, 0x20, 0x7e, 0x7f, 0xd800, 0xdfff));
  const text = fc.oneof(fc.string({ maxLength: 30 }), fc.array(unit, { maxLength: 30 }).map((units) => String.fromCharCode(...units)), fc.string({ unit: 'binary', maxLength: 10 }));
  const number = fc.oneof(
    fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    fc.integer(),
    fc.double(),
    fc.constantFrom(-0, 0, 9, 10, 2 ** 31 - 1, 2 ** 31, -1, 0.1, 1e21, 1e-7, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity),
  );
  const leaf = fc.oneof(text, number, fc.boolean(), fc.constantFrom(null, undefined, () => 1, Symbol('s')), fc.date({ noInvalidDate: false }));
  const item = fc.oneof(
    { weight: 4, arbitrary: leaf },
    { weight: 1, arbitrary: fc.array(leaf, { maxLength: 3 }) },
    { weight: 1, arbitrary: fc.dictionary(text, leaf, { maxKeys: 3 }) },
    { weight: 1, arbitrary: leaf.map((value) => ({ toJSON: () => value })) },
  );

  it('property: the bytes of Buffer.from(JSON.stringify(values)), whatever the values and however small the buffer it starts in', () => {
    fc.assert(
      fc.property(fc.array(item, { maxLength: 12 }), fc.integer({ min: 1, max: 64 }), (values, size) => {
        expect(written(values, size).equals(Buffer.from(JSON.stringify(values)))).to.equal(true);
      }),
      seeded(20261205, 2000),
    );
  });

  const key = fc.oneof(text, fc.constantFrom('0', '7', '10', '-1', '01', 'amount', 'total', '__proto__x', 'a"b', '', 'undefined'));
  const object = fc.dictionary(key, item, { maxKeys: 8 });
  // One writer for every row of these specs: the keys it keeps from one row meet the next.
  const writeJsonObject = jsonObjectWriter();
  const objectWritten = (row: Record<string, unknown>, size: number, bare?: (key: string, text: string) => boolean) => {
    const out = new GrowingBytes(Buffer.alloc(size));
    writeText(out, 'x');
    const whole = writeJsonObject(out, row, bare);
    return { whole, at: out.at, bytes: out.buffer.subarray(1, out.at) };
  };

  it('property: the bytes of an object are Buffer.from(JSON.stringify(row)): keys in its order, integer-like first, left-out values left out', () => {
    fc.assert(
      fc.property(object, fc.integer({ min: 1, max: 64 }), (row, size) => {
        const { whole, bytes } = objectWritten(row, size);
        expect(whole).to.equal(true);
        expect(bytes.toString()).to.equal(JSON.stringify(row));
        expect(bytes.equals(Buffer.from(JSON.stringify(row)))).to.equal(true);
      }),
      seeded(20261206, 2000),
    );
  });

  it('property: rows of one shape after another, as a mapping makes them, each the bytes of its JSON.stringify; values left out and keys past the 64th too', () => {
    const shape = fc.uniqueArray(key, { minLength: 1, maxLength: 80 });
    const rows = shape.chain((keys) => fc.array(fc.array(fc.oneof({ weight: 6, arbitrary: leaf }, { weight: 1, arbitrary: item }), { minLength: keys.length, maxLength: keys.length }).map((values) => Object.fromEntries(keys.map((k, i) => [k, values[i]]))), { minLength: 1, maxLength: 6 }));
    const write = jsonObjectWriter();
    fc.assert(
      fc.property(rows, fc.integer({ min: 1, max: 64 }), (values, size) => {
        const out = new GrowingBytes(Buffer.alloc(size));
        for (const row of values) expect(write(out, row)).to.equal(true);
        expect(out.written).to.equal(values.map((row) => JSON.stringify(row)).join(''));
      }),
      seeded(20261208, 500),
    );
  });

  it('a key at a place the row before had another takes its place: rows of two shapes in turn', () => {
    const write = jsonObjectWriter();
    const out = new GrowingBytes(Buffer.alloc(8));
    const rows = [{ a: 1, b: 'x' }, { b: 'y', a: 2 }, { a: 3, c: null }, { a: 4, b: 'z' }, { 2: 'two', a: 5 }, {}];
    for (const row of rows) write(out, row);
    expect(out.written).to.equal('{"a":1,"b":"x"}{"b":"y","a":2}{"a":3,"c":null}{"a":4,"b":"z"}{"2":"two","a":5}{}');
  });

  it('writes the keys past the 64th as it goes, rows of 100 keys in two orders', () => {
    const write = jsonObjectWriter();
    const out = new GrowingBytes(Buffer.alloc(8));
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    const rows = [keys, [...keys].reverse(), keys].map((order) => Object.fromEntries(order.map((k, i) => [k, i % 3 === 0 ? `v${i}` : i])));
    for (const row of rows) write(out, row);
    expect(out.written).to.equal(rows.map((row) => JSON.stringify(row)).join(''));
  });

  it('leaves out what a row inherits, as JSON does: an enumerable key put on Object.prototype, a prototype of its own', () => {
    const write = jsonObjectWriter();
    const out = new GrowingBytes(Buffer.alloc(8));
    write(out, { a: 0, x: 0 });
    const rows = [{ a: 1 }, { a: 2, x: 3 }, Object.assign(Object.create({ y: 1 }) as object, { a: 4 }), Object.assign(Object.create(null) as object, { a: 5, x: 6 })];
    Object.defineProperty(Object.prototype, 'x', { value: 'inherited', enumerable: true, configurable: true, writable: true });
    try {
      for (const row of rows) write(out, row as Record<string, unknown>);
    } finally {
      delete (Object.prototype as { x?: unknown }).x;
    }
    expect(out.written).to.equal('{"a":0,"x":0}{"a":1}{"a":2,"x":3}{"a":4}{"a":5,"x":6}');
  });

  it('property: with bare keys, what unquoted() makes of the JSON of the row, or nothing written when a value is an object or array', () => {
    const decimal = fc.oneof(fc.constantFrom('12.5', '-0.0001', '3', '-', '1.', '.5', '1e3', '1.2.3', ' 1', '1"', '0x1', '١٢'), fc.double({ noNaN: true }).map(String));
    const row = fc.dictionary(fc.constantFrom('amount', 'total', 'id', 'note', 'amount2'), fc.oneof(decimal, item), { maxKeys: 5 });
    const isDecimal = (text: string) => /^-?\d+(\.\d+)?$/.test(text);
    const bare = (k: string, text: string) => (k === 'amount' || k === 'total') && isDecimal(text);
    fc.assert(
      fc.property(row, fc.integer({ min: 1, max: 64 }), (value, size) => {
        const { whole, at, bytes } = objectWritten(value, size, bare);
        if (Object.values(value).some((v) => typeof v === 'object' && v !== null)) {
          expect(whole).to.equal(false);
          expect(at).to.equal(1);
        } else {
          expect(whole).to.equal(true);
          expect(bytes.toString()).to.equal(unquoted(JSON.stringify(value), ['amount', 'total'].map(decimalKey)));
        }
      }),
      seeded(20261207, 2000),
    );
    expect(objectWritten({ amount: '-12.50', total: 3, note: '12.5', amount2: '1' }, 8, bare).bytes.toString()).to.equal('{"amount":-12.50,"total":3,"note":"12.5","amount2":"1"}');
    // A key named undefined is written once, where it is.
    expect(objectWritten({ undefined: 'u', id: 1 }, 8).bytes.toString()).to.equal('{"undefined":"u","id":1}');
  });

  it('writes the values a booking row holds byte by byte, and others as JSON.stringify writes them', () => {
    const values = ['GT000000001', '2026-02-06T09:45:00.000Z', 'say "hi"', 'back\\slash', 'tab\there', 'Zürich', '😀', '\ud800', '', 0, 7, 2147483647, 2147483648, -3, 1.5, -0, NaN, null, undefined, true, [1, 'a'], { k: 'v' }, new Date(0), () => 1];
    expect(written(values).toString()).to.equal(JSON.stringify(values));
    expect(written(values).toString()).to.include('"Z\u00fcrich"').and.include('"\\ud800"').and.include(',0,7,2147483647,2147483648,-3,1.5,0,null,null,null,true,');
  });

  it('moves with the buffer: a value written after room() moved it lands in the new one', () => {
    const out = new GrowingBytes(Buffer.alloc(4));
    writeJsonArray(out, ['abcdefgh', 123456789, 'é'.repeat(10), null]);
    expect(out.moves).to.be.greaterThan(2);
    expect(out.written).to.equal(JSON.stringify(['abcdefgh', 123456789, 'é'.repeat(10), null]));
  });

  it('throws what JSON.stringify throws (a BigInt, a cycle) and leaves nothing of the row written', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const bad of [10n, cyclic]) {
      for (const write of [(out: RowBytes) => writeJsonArray(out, ['a long enough text to move the buffer', 1, bad]), (out: RowBytes) => writeJsonObject(out, { text: 'a long enough text to move the buffer', n: 1, bad })]) {
        const out = new GrowingBytes(Buffer.alloc(8));
        writeText(out, 'kept');
        expect(() => write(out)).to.throw(TypeError);
        expect(out.at).to.equal(4);
        expect(out.written).to.equal('kept');
      }
    }
  });
});
