import { expect } from 'chai';
import fc from 'fast-check';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { normalize, type NormalizeOptions, type VendorMapping } from '../../../operators/normalize';
import { mappings } from '../../../examples/bookings/mappings';
import { bookingSchema } from '../../../examples/bookings/schema';
import { validate } from '../../../operators/validate';
import { join } from 'node:path';
import { samplesDir } from '../../../examples/bookings/paths';
import { bookingSource, SAMPLE_VENDORS } from '../../../examples/bookings/pipeline';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, Recorder } from '../../helpers';

async function run(mapping: VendorMapping, inputs: unknown[], vendor = 'v', options: Partial<NormalizeOptions> = { vendorField: false }) {
  const recorder = new Recorder();
  const envelopes = inputs.map((value) => recorder.envelope(value, { vendor }));
  // By default the field rules alone: the vendor stamp has its own test.
  const out = await lastValueFrom(from(envelopes).pipe(normalize({ mappings: { [vendor]: mapping }, ...options }), toArray()));
  return { values: out.map((e) => e.value), rejected: recorder.rejected.map((r) => r.failure) };
}

const one = async (mapping: VendorMapping, input: unknown) => {
  const { values, rejected } = await run(mapping, [input]);
  return values[0] ?? rejected[0];
};

describe('normalize', () => {
  it('reads paths and fallbacks, renames, applies defaults, and leaves out absent optional fields', async () => {
    const mapping: VendorMapping = {
      fields: {
        id: { from: 'ref', required: true },
        city: 'hotel.address.city',
        first_pax: 'pax.0.name',
        when: { from: ['updated', 'created'] },
        channel: { from: 'source', default: 'web' },
        note: 'comment',
      },
    };
    expect(await one(mapping, { ref: ' A1 ', hotel: { address: { city: 'Rome' } }, pax: [{ name: 'Ada' }], created: 'x' })).to.deep.equal({
      id: 'A1',
      city: 'Rome',
      first_pax: 'Ada',
      when: 'x',
      channel: 'web',
    });
  });

  it('falls back past an empty value, as a blank CSV column gives, and reports the first path when all are empty', async () => {
    const mapping: VendorMapping = { fields: { when: { from: ['CHGDATE', 'RESDATE'], required: true } } };
    expect(await one(mapping, { CHGDATE: '', RESDATE: '20260301 0800' })).to.deep.equal({ when: '20260301 0800' });
    expect(await one(mapping, { CHGDATE: null, RESDATE: 'r' })).to.deep.equal({ when: 'r' });
    expect(await one(mapping, { CHGDATE: '', RESDATE: '' })).to.deep.include({ code: 'MAPPING', path: '/CHGDATE' });
  });

  it('keeps money as exact decimal text, from decimal strings, commas, floats and minor units', async () => {
    const money = (rule: object) => ({ fields: { amount: { from: 'a', type: 'decimal' as const, ...rule } } });
    expect(await one(money({}), { a: '1234.50' })).to.deep.equal({ amount: '1234.50' });
    expect(await one(money({}), { a: 0.1 })).to.deep.equal({ amount: '0.1' });
    expect(await one(money({}), { a: '007' })).to.deep.equal({ amount: '7' });
    expect(await one(money({ decimalSeparator: ',' }), { a: '1.234,5' })).to.deep.equal({ amount: '1234.5' });
    expect(await one(money({ minorUnits: 2 }), { a: 123456 })).to.deep.equal({ amount: '1234.56' });
    expect(await one(money({ minorUnits: 2 }), { a: 5 })).to.deep.equal({ amount: '0.05' });
    expect(await one(money({ minorUnits: 3 }), { a: '-1500' })).to.deep.equal({ amount: '-1.500' });
    expect(await one(money({}), { a: '12,5' })).to.include({ code: 'MAPPING', path: '/a' });
    expect(await one(money({}), { a: 1e21 })).to.include({ code: 'MAPPING' });
    expect(await one(money({ minorUnits: 2 }), { a: '12.5' })).to.include({ code: 'MAPPING' });
  });

  it('turns vendor times into UTC: ISO with offsets, epochs, patterns in a named zone across daylight saving', async () => {
    const time = (rule: object) => ({ fields: { t: { from: 't', type: 'datetime' as const, ...rule } } });
    expect(await one(time({}), { t: '2026-03-01T10:00:00+01:00' })).to.deep.equal({ t: '2026-03-01T09:00:00.000Z' });
    expect(await one(time({}), { t: '2026-03-01 10:00:00.5' })).to.deep.equal({ t: '2026-03-01T10:00:00.500Z' });
    expect(await one(time({ timeZone: '-05:00' }), { t: '2026-03-01T10:00' })).to.deep.equal({ t: '2026-03-01T15:00:00.000Z' });
    expect(await one(time({ format: 'epoch-s' }), { t: 1772359200 })).to.deep.equal({ t: '2026-03-01T10:00:00.000Z' });
    expect(await one(time({ format: 'epoch-ms' }), { t: '1772359200000' })).to.deep.equal({ t: '2026-03-01T10:00:00.000Z' });
    const paris = time({ format: 'DD/MM/YYYY HH:mm', timeZone: 'Europe/Paris' });
    expect(await one(paris, { t: '15/01/2026 12:00' })).to.deep.equal({ t: '2026-01-15T11:00:00.000Z' }); // winter, +01:00
    expect(await one(paris, { t: '15/07/2026 12:00' })).to.deep.equal({ t: '2026-07-15T10:00:00.000Z' }); // summer, +02:00
    expect(await one(paris, { t: '29/03/2026 01:30' })).to.deep.equal({ t: '2026-03-29T00:30:00.000Z' }); // before the switch
    expect(await one(paris, { t: '29/03/2026 03:30' })).to.deep.equal({ t: '2026-03-29T01:30:00.000Z' }); // after it
    expect(await one(paris, { t: '31/02/2026 12:00' })).to.include({ code: 'MAPPING', path: '/t' });
    expect(await one(time({}), { t: 'yesterday' })).to.include({ code: 'MAPPING', message: '/t t: expected an ISO 8601 time, got "yesterday"' });
  });

  it('renders every time exactly as Date#toISOString does', async () => {
    const mapping = { fields: { t: { from: 't', type: 'datetime' as const, format: 'epoch-ms' }, d: { from: 't', type: 'date' as const, format: 'epoch-ms' } } };
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: -62_000_000_000_000, max: 300_000_000_000_000 }), async (ms) => {
        const iso = new Date(ms).toISOString();
        expect(await one(mapping, { t: ms })).to.deep.equal({ t: iso, d: iso.slice(0, iso.indexOf('T')) });
      }),
      { numRuns: 2000 },
    );
    expect(await one(mapping, { t: 1e17 })).to.include({ code: 'MAPPING', path: '/t' });
  });

  it('reads times of every year from 0000 to 9999 as they are written, years below 100 included', async () => {
    const iso = { fields: { t: { from: 't', type: 'datetime' as const } } };
    const pattern = { fields: { t: { from: 't', type: 'datetime' as const, format: 'YYYY-MM-DD HH:mm:ss.SSS', timeZone: '+01:00' } } };
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: -62_167_219_200_000, max: 253_402_300_799_999 }), async (ms) => {
        const text = new Date(ms).toISOString();
        expect(await one(iso, { t: text })).to.deep.equal({ t: text });
        const shifted = new Date(ms - 3_600_000).toISOString();
        if (ms >= -62_167_215_600_000) expect(await one(pattern, { t: text.slice(0, 23).replace('T', ' ') })).to.deep.equal({ t: shifted });
      }),
      { numRuns: 2000 },
    );
    expect(await one(iso, { t: '0050-06-01T00:00:00Z' })).to.deep.equal({ t: '0050-06-01T00:00:00.000Z' });
  });

  it('reads pattern times digit by digit: one- or two-digit fields, nothing more, nothing after', async () => {
    const rule = { fields: { t: { from: 't', type: 'datetime' as const, format: 'DD/MM/YYYY HH:mm' } } };
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 4_102_444_799_000 }), fc.boolean(), async (ms, pad) => {
        const d = new Date(Math.floor(ms / 60_000) * 60_000);
        const two = (n: number) => (pad ? String(n).padStart(2, '0') : String(n));
        const text = `${two(d.getUTCDate())}/${two(d.getUTCMonth() + 1)}/${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
        expect(await one(rule, { t: text })).to.deep.equal({ t: d.toISOString() });
      }),
      { numRuns: 1000 },
    );
    for (const bad of ['1/2/26 10:00', '123/01/2026 10:00', '01/01/2026 10:00x', '01/01/2026 10', '01-01-2026 10:00', ' /01/2026 10:00', '01/01/2026 24:00', '29/02/2027 10:00']) {
      expect(await one(rule, { t: bad }), bad).to.include({ code: 'MAPPING', path: '/t' });
    }
  });

  it('gives the same decimal text whether or not the amount was already canonical', async () => {
    const comma = { fields: { a: { from: 'a', type: 'decimal' as const, decimalSeparator: ',' as const } } };
    const dot = { fields: { a: { from: 'a', type: 'decimal' as const } } };
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.nat(10 ** 9), fc.option(fc.stringMatching(/^\d{1,4}$/)), fc.nat(3), async (negative, whole, fraction, zeros) => {
        const sign = negative ? '-' : '';
        const canonical = `${sign}${whole}${fraction === null ? '' : `.${fraction}`}`;
        const padded = `${sign}${'0'.repeat(zeros)}${whole}${fraction === null ? '' : `.${fraction}`}`;
        expect(await one(dot, { a: padded })).to.deep.equal({ a: canonical });
        expect(await one(comma, { a: padded.replace('.', ',') })).to.deep.equal({ a: canonical });
      }),
      { numRuns: 1000 },
    );
    expect(await one(comma, { a: '1.234.567,89' })).to.deep.equal({ a: '1234567.89' });
    expect(await one(comma, { a: '+12,50' })).to.deep.equal({ a: '12.50' });
    for (const bad of ['1,2,3', '--1', '1e5', '12,']) expect(await one(comma, { a: bad }), bad).to.include({ code: 'MAPPING', path: '/a' });
  });

  it('gives numbers as the decimal text the exact decimal rule gives them', async () => {
    const dot = { fields: { a: { from: 'a', type: 'decimal' as const } } };
    // The rule applied to the number's own text: sign, whole part without leading zeros, fraction.
    const byRule = (n: number): string => {
      const text = Number.isInteger(n) ? n.toFixed(0) : String(n);
      const [, sign, whole, fraction] = /^([+-]?)(\d+)(?:\.(\d+))?$/.exec(text)!;
      return `${sign === '-' ? '-' : ''}${whole!.replace(/^0+(?=\d)/, '')}${fraction ? `.${fraction}` : ''}`;
    };
    const plain = fc.double({ noNaN: true, noDefaultInfinity: true }).filter((n) => !/e/i.test(Number.isInteger(n) ? n.toFixed(0) : String(n)));
    await fc.assert(
      fc.asyncProperty(fc.oneof(plain, fc.integer(), fc.constantFrom(0, -0, 0.1, -0.5, 1e20, 123.456)), async (n) => {
        expect(await one(dot, { a: n }), String(n)).to.deep.equal({ a: byRule(n) });
      }),
      { numRuns: 2000 },
    );
    for (const bad of [1e21, -1e-7, 5e-324]) expect(await one(dot, { a: bad }), String(bad)).to.include({ code: 'MAPPING', path: '/a' });
  });

  it('keeps calendar dates on the day the vendor wrote', async () => {
    const date = { fields: { d: { from: 'd', type: 'date' as const, timeZone: 'Asia/Tokyo' } } };
    expect(await one(date, { d: '2026-04-10' })).to.deep.equal({ d: '2026-04-10' });
    expect(await one({ fields: { d: { from: 'd', type: 'date', format: 'DD/MM/YYYY' } } }, { d: '10/04/2026' })).to.deep.equal({ d: '2026-04-10' });
  });

  it('maps enums and numbers, and collects every issue of a record', async () => {
    const mapping: VendorMapping = {
      fields: {
        id: { from: 'id', required: true },
        status: { from: 's', values: { HK: 'confirmed', XX: 'cancelled' } },
        pax: { from: 'p', type: 'integer' },
        paid: { from: 'paid', type: 'boolean' },
      },
    };
    expect(await one(mapping, { id: 1, s: 'XX', p: '3', paid: 'yes' })).to.deep.equal({ id: '1', status: 'cancelled', pax: 3, paid: true });
    const failure = await one(mapping, { s: 'ZZ', p: '2.5', paid: 'maybe' });
    expect(failure).to.deep.equal({
      stage: 'normalize',
      code: 'MAPPING',
      path: '/id',
      message: "/id id is required; /s status: 'ZZ' is not one of HK, XX; /p pax: expected an integer, got \"2.5\"; /paid paid: expected a boolean, got \"maybe\"",
    });
  });

  it('runs vendor checks and computed fields', async () => {
    const mapping: VendorMapping = {
      fields: { n: { compute: (r) => r.items.length, type: 'integer' } },
      check: (out) => (out.n === 0 ? [{ path: '/items', message: 'a booking needs items' }] : undefined),
    };
    expect(await one(mapping, { items: [1, 2] })).to.deep.equal({ n: 2 });
    expect(await one(mapping, { items: [] })).to.deep.equal({ stage: 'normalize', code: 'MAPPING', path: '/items', message: '/items a booking needs items' });
  });

  it('sets a constant field from value, coerced like a read value, and refuses value beside from or compute', async () => {
    expect(await one({ fields: { product: { value: 'flight' }, n: { value: '7', type: 'integer' }, c: { value: ' eur ', case: 'upper' } } }, {})).to.deep.equal({
      product: 'flight',
      n: 7,
      c: 'EUR',
    });
    expect(() => normalize({ mappings: { v: { fields: { p: { value: 'x', from: 'y' } } } } })).to.throw(ConfigError, 'mappings.v.fields.p.value is the field');
    expect(() => normalize({ mappings: { v: { fields: { p: { value: {} as never } } } } })).to.throw(ConfigError, 'must be a string, number or boolean');
  });

  it('runs declarative checks: when the record matches, each required condition holds or the record is dead-lettered with the check path and message', async () => {
    const mapping: VendorMapping = {
      fields: { status: 'status', total: 'total' },
      checks: [
        { when: { status: 'refunded' }, require: { total: { startsWith: '-' } }, path: '/total', message: 'a refund must have a negative total' },
        { require: { status: { equals: 'refunded' }, total: { startsWith: '-' } }, path: '/x', message: 'second' },
      ],
    };
    expect(await one(mapping, { status: 'refunded', total: '-5' })).to.deep.equal({ status: 'refunded', total: '-5' });
    expect(await one(mapping, { status: 'refunded', total: '5' })).to.deep.equal({ stage: 'normalize', code: 'MAPPING', path: '/total', message: '/total a refund must have a negative total; /x second' });
    expect(await one(mapping, { status: 'confirmed', total: '-5' })).to.deep.include({ path: '/x', message: '/x second' });
    // An absent field is the text 'undefined', as String() gives it.
    expect(await one({ fields: { t: 't' }, checks: [{ require: { t: { startsWith: 'u' } }, path: '/t', message: 'm' }] }, {})).to.deep.equal({});
    expect(() => normalize({ mappings: { v: { fields: {}, checks: [{ require: { t: { endsWith: 'x' } as never }, path: '/t', message: 'm' }] } } })).to.throw(
      ConfigError,
      'mappings.v.checks[0].require.t must be a condition',
    );
    expect(() => normalize({ mappings: { v: { fields: {}, checks: [{ require: {}, path: '/t', message: 'm' }] } } })).to.throw(ConfigError, 'require must be an object');
  });

  it("writes the record's vendor into the row unless the mapping sets it; vendorField renames or turns it off", async () => {
    const recorder = new Recorder();
    const mappings = { acme: { fields: { id: 'ref' } }, globex: { fields: { id: 'ref', vendor: { compute: () => 'Globex Corp.' } } } };
    const input = () => [recorder.envelope({ ref: 'a1' }, { vendor: 'acme' }), recorder.envelope({ ref: 'g1' }, { vendor: 'globex' })];
    const values = async (options: Partial<NormalizeOptions>) =>
      (await lastValueFrom(from(input()).pipe(normalize({ mappings, ...options }), toArray()))).map((e) => e.value);
    expect(await values({})).to.deep.equal([
      { id: 'a1', vendor: 'acme' },
      { id: 'g1', vendor: 'Globex Corp.' },
    ]);
    expect(await values({ vendorField: 'supplier' })).to.deep.equal([
      { id: 'a1', supplier: 'acme' },
      { id: 'g1', vendor: 'Globex Corp.', supplier: 'globex' },
    ]);
    expect(await values({ vendorField: false })).to.deep.equal([{ id: 'a1' }, { id: 'g1', vendor: 'Globex Corp.' }]);
    expect(() => normalize({ mappings, vendorField: '' })).to.throw(ConfigError, 'vendorField must be a field name or false, got ""');
  });

  it('dead-letters records of unknown vendors and records that are not objects', async () => {
    const recorder = new Recorder();
    const input = [recorder.envelope({}, { vendor: 'nobody' }), recorder.envelope({}), recorder.envelope([1], { vendor: 'v' })];
    const out = await lastValueFrom(from(input).pipe(normalize({ mappings: { v: { fields: {} } } }), toArray()));
    expect(out).to.deep.equal([]);
    expect(recorder.rejected.map((r) => [r.failure.code, r.failure.message])).to.deep.equal([
      ['UNKNOWN_VENDOR', "/ no mapping for vendor 'nobody'"],
      ['UNKNOWN_VENDOR', '/ record has no vendor'],
      ['MAPPING', '/ expected an object, got an array'],
    ]);
  });

  it('refuses broken mappings at construction', () => {
    expect(() => normalize({ mappings: { v: { fields: { t: { type: 'time' as never } } } } })).to.throw(ConfigError, /mappings\.v\.fields\.t\.type must be one of/);
    expect(() => normalize({ mappings: { v: { fields: { t: { type: 'datetime', timeZone: 'Mars/Olympus' } } } } })).to.throw(ConfigError, /timeZone must be UTC/);
    expect(() => normalize({ mappings: { v: { fields: { t: { type: 'date', format: 'HH:mm' } } } } })).to.throw(ConfigError, /format must contain YYYY, MM and DD/);
    expect(() => normalize({ mappings: { v: { fields: { a: { type: 'decimal', minorUnits: -1 } } } } })).to.throw(ConfigError, /minorUnits must be an integer from 0 to 18/);
    expect(() => normalize({ mappings: { v: { fields: { a: { type: 'decimal', minorUnits: 19 } } } } })).to.throw(ConfigError, 'mappings.v.fields.a.minorUnits must be an integer from 0 to 18, got 19');
    expect(() => normalize({ mappings: { v: { fields: { a: { type: 'decimal', minorUnits: 2.5 } } } } })).to.throw(ConfigError, 'mappings.v.fields.a.minorUnits must be an integer from 0 to 18, got 2.5');
  });

  describe('the example vendors (golden records)', () => {
    const golden: [string, unknown, Record<string, unknown>][] = [
      [
        'skyway',
        { ref: 'SKY-1', created: '2026-03-01T10:00:00+01:00', updated: '2026-03-02T08:00:00+01:00', state: 'HK', route: { from: 'CDG', to: 'JFK' }, departure: '2026-04-10', pax: [{}, {}], price: { amount_cents: 123450, currency: 'eur' } },
        { vendor: 'skyway', booking_id: 'SKY-1', updated_at: '2026-03-02T07:00:00.000Z', status: 'confirmed', product: 'flight', booked_at: '2026-03-01T09:00:00.000Z', travel_date: '2026-04-10', origin: 'CDG', destination: 'JFK', passengers: 2, total_amount: '1234.50', currency: 'EUR' },
      ],
      [
        'globetrek',
        { booking_no: 'GT1', booked_on: '01/07/2026 10:00', status: 'CANC', type: 'RAIL', origin: 'Paris', destination: 'Lyon', travel_date: '10/07/2026', travellers: '3', total: '89,90', ccy: 'eur' },
        { vendor: 'globetrek', booking_id: 'GT1', updated_at: '2026-07-01T08:00:00.000Z', status: 'cancelled', product: 'rail', booked_at: '2026-07-01T08:00:00.000Z', travel_date: '2026-07-10', origin: 'Paris', destination: 'Lyon', passengers: 3, total_amount: '89.90', currency: 'EUR' },
      ],
      [
        'staylodge',
        { reservationId: 5000001, createdAt: 1772359200, reservationStatus: 'TENTATIVE', hotel: { city: 'Rome' }, checkIn: '2026-04-10', guests: 2, amount: 412.5, currency: 'EUR' },
        { vendor: 'staylodge', booking_id: '5000001', updated_at: '2026-03-01T10:00:00.000Z', status: 'pending', product: 'hotel', booked_at: '2026-03-01T10:00:00.000Z', travel_date: '2026-04-10', destination: 'Rome', passengers: 2, total_amount: '412.5', currency: 'EUR' },
      ],
    ];
    for (const [vendor, input, expected] of golden) {
      it(vendor, async () => {
        const { values, rejected } = await run(mappings[vendor]!, [input], vendor, {});
        expect(rejected).to.deep.equal([]);
        expect(values).to.deep.equal([expected]);
      });
    }
  });
});

describe('normalize: vendor fixtures (test/fixtures/vendors/<vendor>/<case>.json → <case>.expected.json)', () => {
  const { readdirSync, readFileSync } = require('node:fs') as typeof import('node:fs');
  const root = join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'vendors');
  const validateBooking = validate({ schema: bookingSchema });
  for (const vendor of readdirSync(root).sort()) {
    for (const file of readdirSync(join(root, vendor)).filter((f) => f.endsWith('.json') && !f.endsWith('.expected.json')).sort()) {
      const name = file.slice(0, -'.json'.length);
      it(`${vendor}/${name}`, async () => {
        const input = JSON.parse(readFileSync(join(root, vendor, file), 'utf8')) as unknown;
        const expected = JSON.parse(readFileSync(join(root, vendor, `${name}.expected.json`), 'utf8')) as Record<string, unknown>;
        const recorder = new Recorder();
        const out = await lastValueFrom(from([recorder.envelope(input, { vendor })]).pipe(normalize({ mappings }), validateBooking, toArray()));
        if ('dead' in expected) {
          expect(out).to.deep.equal([]);
          expect(recorder.rejected.map((r) => r.failure)).to.deep.equal([expected.dead]);
        } else {
          expect(recorder.rejected.map((r) => r.failure)).to.deep.equal([]);
          expect(out.map((e) => e.value)).to.deep.equal([expected]);
        }
      });
    }
  }
});

describe('normalize: arrays', () => {
  it('maps each element of a list by its own rules, naming the element in issues', async () => {
    const mapping: VendorMapping = {
      fields: {
        pax: { from: 'people', items: { name: { from: 'n', required: true }, age: { from: 'a', type: 'integer' } } },
      },
    };
    expect(await one(mapping, { people: [{ n: 'Ada', a: '36' }, { n: 'Bo' }] })).to.deep.equal({ pax: [{ name: 'Ada', age: 36 }, { name: 'Bo' }] });
    expect(await one(mapping, { people: [{ n: 'Ada' }, { a: 'x' }, 3] })).to.deep.equal({
      stage: 'normalize',
      code: 'MAPPING',
      path: '/people/1/n',
      message: '/people/1/n name is required; /people/1/a age: expected an integer, got "x"; /people/2 pax[2]: expected an object',
    });
    expect(await one(mapping, { people: 'Ada' })).to.include({ path: '/people', message: '/people pax: expected an array, got string' });
  });

  it('refuses array rules without items, and items with another type', () => {
    expect(() => normalize({ mappings: { v: { fields: { a: { type: 'array' } } } } })).to.throw(ConfigError, "mappings.v.fields.a.items is required when type is 'array'");
    expect(() => normalize({ mappings: { v: { fields: { a: { type: 'string', items: {} } } } } })).to.throw(ConfigError, "mappings.v.fields.a.type must be 'array' (or left out) when items is given, got \"string\"");
  });
});

describe('normalize where code cannot be generated from strings', () => {
  /** Builds `make()` as under --disallow-code-generation-from-strings: `new Function` throws EvalError. */
  function withoutCodeGeneration<T>(make: () => T): T {
    const original = globalThis.Function;
    globalThis.Function = function () {
      throw new EvalError('Code generation from strings disallowed for this context');
    } as unknown as FunctionConstructor;
    try {
      return make();
    } finally {
      globalThis.Function = original;
    }
  }

  async function outcomes(operator: ReturnType<typeof normalize>, vendor: string, inputs: unknown[]) {
    const recorder = new Recorder();
    const envelopes = inputs.map((value) => recorder.envelope(value, { vendor }));
    const out = await lastValueFrom(from(envelopes).pipe(operator, toArray()));
    return { values: out.map((e) => e.value), rejected: recorder.rejected.map((r) => r.failure) };
  }

  it('interprets every vendor mapping with the same results as the generated code', async () => {
    const interpreted = withoutCodeGeneration(() => normalize({ mappings }));
    const generated = normalize({ mappings });
    const keys = [...new Set(Object.values(mappings).flatMap((m) => Object.values(m.fields).flatMap((rule) => (typeof rule === 'string' ? [rule] : [rule.from ?? []].flat()))))];
    const leaf = fc.oneof(
      fc.constantFrom('', ' 12 ', '12,50', '-3.5', '1250', 'CONF', 'HK', 'x', '01/07/2026 10:00', '2026-03-01T10:00:00+01:00', '20260301', '1772359200', 'eur'),
      fc.constantFrom(null, 0, 3, 12.5, -1, 1772359200, true),
      fc.string({ maxLength: 6 }),
    );
    const value = fc.oneof(leaf, fc.dictionary(fc.constantFrom('from', 'to', 'city', 'amount_cents', 'currency', 'id', '0', 'n'), leaf), fc.array(fc.dictionary(fc.constantFrom('name', 'type', 'from', 'to', 'n'), leaf), { maxLength: 3 }));
    const record = fc.dictionary(fc.constantFrom(...keys.map((key) => key.split('.')[0]!)), value);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...Object.keys(mappings)), fc.array(record, { minLength: 1, maxLength: 5 }), async (vendor, inputs) => {
        expect(await outcomes(interpreted, vendor, inputs)).to.deep.equal(await outcomes(generated, vendor, inputs));
      }),
      { numRuns: 1000 },
    );
  });

  it('reads every vendor\'s sample files the same way', async () => {
    const read = async (operator: ReturnType<typeof normalize>, vendor: string) => {
      const sink = new MemorySink<Record<string, unknown>>();
      const deadLetters = new MemorySink<DeadLetter>();
      await new Pipeline({ source: bookingSource({ paths: [join(samplesDir, vendor)] }), transform: operator, sink, deadLetters, batch: { rows: 1000, maxWaitMs: 20 }, deadLetterBatch: { maxWaitMs: 1 } }).run();
      return { rows: sink.rows, letters: deadLetters.rows.map((l) => [l.position, l.stage, l.code, l.path, l.message]) };
    };
    for (const vendor of SAMPLE_VENDORS) {
      const expected = await read(normalize({ mappings }), vendor);
      expect(expected.rows.length, vendor).to.be.greaterThan(0);
      expect(await read(withoutCodeGeneration(() => normalize({ mappings })), vendor), vendor).to.deep.equal(expected);
    }
  });
});
