import { expect } from 'chai';
import { toClickHouse, type ClickHouseClient } from '../../../connectors/clickhouse';
import { compactRows } from '../../../connectors/clickhouse/sink';
import { ConfigError } from '../../../lib/errors';
import { clientLike, GrowingBytes, testClickHouse } from '../../helpers';

/** The ClickHouse sink's options, encodings and failures, on the embedded store (and as an old server). */
describe('ClickHouse sink', function () {
  this.timeout(60_000);
  const client = testClickHouse;

  /** The embedded store, speaking as a client that `overrides` say. */
  const speaking = (overrides: Partial<ClickHouseClient>): ClickHouseClient => clientLike(client(), overrides);
  const opened = async (table: string, options: { client?: ClickHouseClient; settings?: Record<string, string | number> } = {}) => {
    const sink = toClickHouse<unknown>({ client: options.client ?? client(), table, ...(options.settings && { settings: options.settings }) });
    await sink.open!();
    return sink;
  };

  before(async () => {
    await client().exec('DROP TABLE IF EXISTS sink_plain');
    await client().exec('CREATE TABLE sink_plain (id UInt32, amount Decimal(18, 4), due Nullable(Decimal(9, 2)), n Nested(xy String)) ENGINE = MergeTree ORDER BY id');
  });

  it('refuses a missing client and a table that is not a name, with the rule', () => {
    for (const options of [{}, undefined]) expect(() => toClickHouse(options as never)).to.throw(ConfigError, 'client is required: embeddedClickHouse() or a server client');
    for (const table of ['', 'bookings;', 'a.b.c', '1abc', 'db.', 'db.1x', 'db.x-y', 'x y', ' bookings', 42, ['bookings']]) {
      expect(() => toClickHouse({ client: client(), table: table as string }), String(table)).to.throw(ConfigError, `table must be a name like bookings or db.bookings, got ${JSON.stringify(table)}`);
    }
    for (const table of ['bookings', '_a.b_1', 'db.x9']) expect(() => toClickHouse({ client: client(), table }), table).not.to.throw();
    expect(toClickHouse({ client: client(), table: 'db.x9' }).name).to.equal('clickhouse:db.x9');
  });

  it('refuses to encode before it is opened', () => {
    const sink = toClickHouse<unknown>({ client: client(), table: 'sink_plain' });
    expect(() => sink.encode!({ id: 1 })).to.throw('sink clickhouse:sink_plain must be opened before it encodes').with.property('code', 'NOT_OPEN');
  });

  it('writes arrays of the columns an insert can list, nested ones too; what is not a plain object as JSON writes it', async () => {
    const sink = await opened('sink_plain');
    expect(sink.encode!({ id: 1, amount: '1.5', 'n.xy': ['a'] })).to.equal('[1,"1.5",null,["a"]]');
    expect(sink.encode!(null)).to.equal('null');
    // What JSON cannot write goes as null, which the engine refuses as that row's fault (an empty line it would skip).
    expect(sink.encode!(undefined)).to.equal('null');
    expect(sink.encode!('text')).to.equal('"text"');
    expect(sink.encode!(5)).to.equal('5');
    expect(sink.encode!([1, 2])).to.equal('[1,2]');
    // A toJSON JSON calls though Object.keys does not list it.
    const hidden = Object.defineProperty({ id: 1 }, 'toJSON', { value: () => ({ id: 2 }), enumerable: false });
    expect(sink.encode!(hidden)).to.equal('{"id":2}');
    // Another encoding asked for than JSON: still arrays.
    sink.preferEncoding!('csv');
    expect(sink.encode!({ id: 1 })).to.equal('[1,null,null,null]');
    sink.preferEncoding!('json');
    expect(sink.encode!({ id: 1 })).to.equal('{"id":1}');
  });

  it('keeps arrays when settings say null is read as the default explicitly', async () => {
    for (const value of [1, '1', 'true']) {
      const sink = await opened('sink_plain', { settings: { input_format_null_as_default: value, input_format_defaults_for_omitted_fields: value } });
      expect(sink.encode!({ id: 1 }), String(value)).to.equal('[1,null,null,null]');
    }
  });

  it('as an old server: decimals bare, Nullable ones too; JSON shared where there is no decimal', async () => {
    const old = speaking({ readsDecimalStrings: async () => false, readsCompactRows: async () => false });
    const sink = await opened('sink_plain', { client: old });
    expect(sink.encoding).to.equal(undefined);
    expect(sink.encode!({ id: 1, amount: '1.5', due: '-2.25' })).to.equal('{"id":1,"amount":1.5,"due":-2.25}');
    await client().exec('DROP TABLE IF EXISTS sink_texts');
    await client().exec('CREATE TABLE sink_texts (id UInt32, amount String) ENGINE = MergeTree ORDER BY id');
    const texts = await opened('sink_texts', { client: old });
    expect(texts.encoding).to.equal('json');
    expect(texts.encode!({ id: 1, amount: '1.5' })).to.equal('{"id":1,"amount":"1.5"}');
    await client().exec('DROP TABLE sink_texts');
  });

  it('writes into a batch the bytes encode returns: arrays, objects beside JSON, and objects with bare decimals as an old server', async () => {
    const old = await opened('sink_plain', { client: speaking({ readsDecimalStrings: async () => false, readsCompactRows: async () => false }) });
    const arrays = await opened('sink_plain');
    const objects = await opened('sink_plain');
    objects.preferEncoding!('json');
    const rows: unknown[] = [
      { id: 1, amount: '1.5', due: '-2.25' },
      { due: '3', id: 2, amount: 'x1.5', extra: '1.5' },
      { id: 3, amount: '12.50', 'n.xy': ['a', 'é'], nested: { amount: '1.5' } },
      { id: 4, amount: 7, due: null, f: () => 1, u: undefined, s: 'say "\u0001" ü' },
      { 10: 'ten', 2: 'two', id: 5 },
      Object.assign(Object.create(null) as object, { id: 6, amount: '-0.5' }),
      { id: 7, toJSON: () => ({ id: 70 }) },
      [1, '2'],
      null,
      'text',
    ];
    for (const sink of [old, arrays, objects]) {
      for (const row of rows) {
        const out = new GrowingBytes(Buffer.alloc(4));
        sink.encodeInto!(row, out);
        expect(out.written, JSON.stringify(row)).to.equal(sink.encode!(row));
      }
    }
    expect(old.encode!(rows[0])).to.equal('{"id":1,"amount":1.5,"due":-2.25}');
    expect(old.encode!(rows[2])).to.equal('{"id":3,"amount":12.50,"n.xy":["a","é"],"nested":{"amount":1.5}}');
    expect(() => toClickHouse<unknown>({ client: client(), table: 'sink_plain' }).encodeInto!({ id: 1 }, { at: 0, room: () => Buffer.alloc(8) })).to.throw('must be opened before it encodes');
  });

  it('passes a failed insert of arrays on, unless the table lost a column', async () => {
    const inserts: string[] = [];
    const failing = speaking({
      insert: async (_table, _rows, _settings, columns) => {
        inserts.push(columns ? 'arrays' : 'objects');
        throw Object.assign(new Error('Code: 241. Memory limit exceeded'), { code: 'CLICKHOUSE_241' });
      },
    });
    const sink = await opened('sink_plain', { client: failing });
    const error = await sink.write({ envelopes: [], bytes: 0, encoded: { body: Buffer.from('[1,null,null,null]\n'), ends: [19] } }, { token: 't', attempt: 1 }).catch((e: unknown) => e);
    expect(error).to.have.property('code', 'CLICKHOUSE_241');
    expect(inserts).to.deep.equal(['arrays']);
  });

  it('picks the same values where code cannot be generated from strings, and passes any other failure to compile on', () => {
    const columns = [
      { name: 'id', type: 'UInt32', default_type: '' },
      { name: 'nd', type: 'Nullable(String)', default_type: 'DEFAULT' },
      { name: 's', type: 'String', default_type: '' },
      { name: 'm', type: 'String', default_type: 'MATERIALIZED' },
    ];
    const rows: Record<string, unknown>[] = [{ id: 1, nd: 'x' }, { id: 1, nd: 'x', s: 'y' }, { id: 1 }, { id: 1, nd: null }, { id: 1, nd: Symbol('x') }, { id: 1, nd: () => 1 }, { id: 1, nd: 'x', s: undefined }, { id: 1, nd: 'x', m: 'z' }, { id: 1, nd: 'x', other: 1 }, Object.defineProperty({ id: 1 }, 'nd', { value: 'x', enumerable: false })];
    const generated = compactRows(columns, {})!;
    const original = globalThis.Function;
    let interpreted: typeof generated;
    globalThis.Function = function () {
      throw new EvalError('Code generation from strings disallowed for this context');
    } as unknown as FunctionConstructor;
    try {
      interpreted = compactRows(columns, {})!;
      globalThis.Function = function () {
        throw new TypeError('something else');
      } as unknown as FunctionConstructor;
      expect(() => compactRows(columns, {})).to.throw(TypeError, 'something else');
    } finally {
      globalThis.Function = original;
    }
    expect(interpreted.columns).to.deep.equal(['id', 'nd', 's']);
    // Each pick is copied: the picker writes over one array.
    const picks = rows.map((row) => generated.pick(row)?.slice());
    // A column's value that is not enumerable: JSON.stringify leaves it out, so the row goes as its object.
    expect(picks).to.deep.equal([[1, 'x', undefined], [1, 'x', 'y'], undefined, [1, null, undefined], undefined, undefined, undefined, undefined, undefined, undefined]);
    expect(rows.map((row) => interpreted.pick(row)?.slice())).to.deep.equal(picks);
    expect(generated.pick(rows[0]!), 'one array, written over').to.equal(generated.pick(rows[1]!));
  });
});
