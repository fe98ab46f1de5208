import { expect } from 'chai';
import fc from 'fast-check';
import { toClickHouse, type ClickHouseClient } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { fanOut } from '../../../lib/fanOut';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter, Sink } from '../../../lib/sink';
import { clientLike, MemorySink, seeded, testClickHouse } from '../../helpers';

/**
 * The ClickHouse sink writes rows as JSONCompactEachRow arrays where the client reads them
 * (the embedded store): what lands must be what JSONEachRow objects land, row for row, and
 * the same rows refused.
 */
describe('ClickHouse sink: rows as arrays', function () {
  this.timeout(120_000);
  const client = testClickHouse;

  /** The same client, but one that reads objects only: the sink then writes JSONEachRow as before. */
  const objectsOnly = (): ClickHouseClient =>
    clientLike(client(), {
      readsCompactRows: async () => false,
      insert: (table, rows, settings, columns) => {
        if (columns) throw new Error('an objects-only client was given columns');
        return client().insert(table, rows, settings);
      },
    });

  // Every kind of column an insert names or leaves to the table: plain, Nullable, with a
  // DEFAULT (a Nullable one keeps it for a row without the key, where a null would be NULL),
  // MATERIALIZED and ALIAS (never named), and types JSON reads in their own ways.
  const columns = `id UInt32, s String, n Nullable(String), nd Nullable(String) DEFAULT concat('nd-', toString(id)),
    d String DEFAULT concat('d-', toString(id)), lc LowCardinality(String), dec Decimal(18, 4), ts DateTime64(3, 'UTC'),
    arr Array(UInt8), m Map(String, UInt8), mat String MATERIALIZED concat('m-', s), al String ALIAS upper(s)`;
  const make = async (table: string) => {
    await client().exec(`DROP TABLE IF EXISTS ${table}`);
    await client().exec(`CREATE TABLE ${table} (${columns}) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 1000`);
  };
  const stored = (table: string) => client().queryText(`SELECT *, mat, al FROM ${table} ORDER BY id FORMAT JSONEachRow`, 'JSONEachRow');

  /** A value for column `name`, or one it refuses, or null, or left out (undefined), or a function. */
  const valueOf = (good: fc.Arbitrary<unknown>, bad: fc.Arbitrary<unknown>) =>
    fc.oneof({ weight: 6, arbitrary: good }, { weight: 1, arbitrary: bad }, { weight: 1, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant(() => 1) });
  const text = fc.string({ unit: 'binary', maxLength: 12 });
  const row = fc.record(
    {
      s: valueOf(text, fc.constant({ not: 'a string' })),
      n: valueOf(text, fc.constant([1])),
      nd: valueOf(text, fc.constant(7)),
      d: valueOf(text, fc.constant(false)),
      lc: valueOf(fc.constantFrom('a', 'b', ''), fc.constant({})),
      dec: valueOf(fc.constantFrom('12.5', '-0.0001', '99999999999999.9999', '3'), fc.constantFrom('1e3', 'x', '12345678901234567890')),
      ts: valueOf(fc.constantFrom('2026-03-01T10:00:00.123Z', '2026-03-01 10:00:00', 1772359200), fc.constantFrom('yesterday', '2026-13-01')),
      arr: valueOf(fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 3 }), fc.constant([300])),
      m: valueOf(fc.dictionary(fc.constantFrom('k', 'l'), fc.integer({ min: 0, max: 9 })), fc.constant({ k: 'x' })),
      // Keys no column of the list reads: the table's computed columns, and one it does not have.
      mat: fc.constantFrom(undefined, undefined, undefined, 'set'),
      extra: fc.constantFrom(undefined, undefined, undefined, 'x'),
    },
    { requiredKeys: [] },
  );

  const writeAll = async (sinkClient: ClickHouseClient, table: string, rows: readonly Record<string, unknown>[], batchRows: number, settings: Record<string, number>) => {
    const deadLetters = new MemorySink<DeadLetter>();
    const stats = await new Pipeline({ source: fromIterable(rows), sink: toClickHouse({ client: sinkClient, table, settings }), deadLetters, batch: { rows: batchRows } }).run();
    return { stats, refused: deadLetters.rows.map((letter) => [letter.position, letter.stage]).sort() };
  };

  it('property: stores what JSONEachRow objects store, row for row, and refuses the same rows', async () => {
    await make('compact_arrays');
    await make('compact_objects');
    await fc.assert(
      // With unknown keys refused, a row with one must be refused both ways, not stored without it.
      fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 30 }), fc.constantFrom<Record<string, number>>({}, { input_format_skip_unknown_fields: 0 }), async (generated, batchRows, settings) => {
        await client().exec('TRUNCATE TABLE compact_arrays');
        await client().exec('TRUNCATE TABLE compact_objects');
        const rows = generated.map((r, i) => {
          const value: Record<string, unknown> = { id: i + 1 };
          for (const [key, v] of Object.entries(r)) if (v !== undefined || i % 3 === 0) value[key] = v;
          return value;
        });
        const arrays = await writeAll(client(), 'compact_arrays', rows, batchRows, settings);
        const objects = await writeAll(objectsOnly(), 'compact_objects', rows, batchRows, settings);
        expect(arrays.stats).to.deep.include({ read: objects.stats.read, written: objects.stats.written, deadLettered: objects.stats.deadLettered });
        expect(arrays.refused).to.deep.equal(objects.refused);
        expect(await stored('compact_arrays')).to.equal(await stored('compact_objects'));
      }),
      seeded(20261204, 25),
    );
  });

  it('writes a row as an array only when its object would say the same', async () => {
    await make('compact_encode');
    const sink = toClickHouse<Record<string, unknown>>({ client: client(), table: 'compact_encode' });
    await sink.open!();
    expect(sink.encoding, 'arrays of its columns, or objects').to.equal('json-compact');
    expect(sink.encodedColumns, 'the columns an insert names').to.deep.equal(['id', 's', 'n', 'nd', 'd', 'lc', 'dec', 'ts', 'arr', 'm']);
    const encode = (value: Record<string, unknown>) => sink.encode!(value);
    expect(encode({ id: 1, s: 'a', nd: 'x' })).to.equal('[1,"a",null,"x",null,null,null,null,null,null]');
    expect(encode({ id: 1, s: 'a', nd: null })).to.equal('[1,"a",null,null,null,null,null,null,null,null]');
    // Left out, a Nullable column with a DEFAULT takes its default; a null there would be NULL.
    expect(encode({ id: 1, s: 'a' })).to.equal('{"id":1,"s":"a"}');
    expect(encode({ id: 1, nd: undefined })).to.equal('{"id":1}');
    expect(encode({ id: 1, nd: () => 1 })).to.equal('{"id":1}');
    // A key no listed column reads: the engine decides, as it would for the object.
    expect(encode({ id: 1, nd: 'x', mat: 'm' })).to.equal('{"id":1,"nd":"x","mat":"m"}');
    expect(encode({ id: 1, nd: 'x', extra: 1 })).to.equal('{"id":1,"nd":"x","extra":1}');
    expect(encode({ id: 1, nd: 'x', s: undefined })).to.equal('{"id":1,"nd":"x"}');
    // What JSON.stringify writes otherwise than key by key.
    class Row {
      id = 1;
      nd = 'x';
    }
    expect(encode(new Row() as never)).to.equal('{"id":1,"nd":"x"}');
    expect(encode({ id: 1, nd: 'x', toJSON: () => ({ id: 2 }) })).to.equal('{"id":2}');
    expect(encode(Object.assign(Object.create(null) as Record<string, unknown>, { id: 1, nd: 'x' }))).to.equal('[1,null,null,"x",null,null,null,null,null,null]');
  });

  it('writes objects where nulls would not read as defaults, where a column cannot be listed, and beside a sink that reads JSON', async () => {
    await make('compact_off');
    for (const settings of [{ input_format_null_as_default: 0 }, { input_format_defaults_for_omitted_fields: 'false' }] as Record<string, string | number>[]) {
      const sink = toClickHouse<Record<string, unknown>>({ client: client(), table: 'compact_off', settings });
      await sink.open!();
      expect(sink.encode!({ id: 1, nd: 'x' }), JSON.stringify(settings)).to.equal('{"id":1,"nd":"x"}');
      expect(sink.encoding).to.equal('json');
    }
    await client().exec('DROP TABLE IF EXISTS compact_names');
    await client().exec('CREATE TABLE compact_names (id UInt32, `total-amount` String) ENGINE = MergeTree ORDER BY id');
    const names = toClickHouse<Record<string, unknown>>({ client: client(), table: 'compact_names' });
    await names.open!();
    expect(names.encode!({ id: 1, 'total-amount': '2' })).to.equal('{"id":1,"total-amount":"2"}');
    await client().exec('DROP TABLE compact_names');

    const json: Sink<Record<string, unknown>> & { seen: string[] } = {
      name: 'json-reader',
      encoding: 'json',
      seen: [],
      encode: (value) => JSON.stringify(value),
      async write(batch) {
        const { body, ends } = batch.encoded!;
        ends.forEach((end, i) => this.seen.push(body.toString('utf8', i === 0 ? 0 : ends[i - 1], end - 1)));
      },
    };
    const both = fanOut<Record<string, unknown>>([{ sink: toClickHouse({ client: client(), table: 'compact_off' }), required: true }, { sink: json, required: true }]);
    const stats = await new Pipeline({ source: fromIterable([{ id: 1, nd: 'x' }]), sink: both, deadLetters: new MemorySink<DeadLetter>() }).run();
    expect(stats).to.include({ written: 1, deadLettered: 0 });
    expect(json.seen).to.deep.equal(['{"id":1,"nd":"x"}']);
    expect(await client().queryText('SELECT id, nd FROM compact_off FORMAT JSONEachRow', 'JSONEachRow')).to.equal('{"id":1,"nd":"x"}\n');
  });

  it('writes a batch of arrays and objects in one insert, absorbed when the batch is written again', async () => {
    await make('compact_mixed');
    await client().exec('SYSTEM STOP MERGES compact_mixed');
    const rows = Array.from({ length: 40 }, (_, i) => (i % 4 === 0 ? { id: i + 1, s: `o${i}` } : { id: i + 1, s: `a${i}`, nd: null }));
    const write = () => new Pipeline({ source: fromIterable(rows), sink: toClickHouse({ client: client(), table: 'compact_mixed' }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 40 } }).run();
    await write();
    await write();
    const [counts] = await client().query<{ n: string; parts: string }>("SELECT count() AS n, (SELECT count() FROM system.parts WHERE table = 'compact_mixed' AND active) AS parts FROM compact_mixed");
    expect([Number(counts!.n), Number(counts!.parts)], 'rows and parts, merges stopped').to.deep.equal([40, 1]);
    expect(await client().queryText("SELECT id, nd FROM compact_mixed WHERE id IN (1, 2) ORDER BY id FORMAT JSONEachRow", 'JSONEachRow')).to.equal('{"id":1,"nd":"nd-1"}\n{"id":2,"nd":null}\n');
  });

  it('follows the table: a column added takes the rows that have it, a column dropped loses no batch', async () => {
    await client().exec('DROP TABLE IF EXISTS compact_altered');
    await client().exec('CREATE TABLE compact_altered (id UInt32, a String, b String) ENGINE = MergeTree ORDER BY id');
    const sink = toClickHouse<Record<string, unknown>>({ client: client(), table: 'compact_altered' });
    const deadLetters = new MemorySink<DeadLetter>();
    const run = (rows: Record<string, unknown>[]) => new Pipeline({ source: fromIterable(rows), sink, deadLetters }).run();
    await run([{ id: 1, a: 'x', b: 'y' }]);
    await client().exec('ALTER TABLE compact_altered ADD COLUMN c String');
    await run([{ id: 2, a: 'x', b: 'y', c: 'z' }]);
    await client().exec('ALTER TABLE compact_altered DROP COLUMN b');
    expect(sink.encode!({ id: 3, a: 'x', b: 'y' }), 'read before the drop').to.equal('[3,"x","y"]');
    const stats = await run([{ id: 3, a: 'x', b: 'y' }, { id: 4, a: 'x', b: 'y' }]);
    expect(stats).to.include({ written: 2, deadLettered: 0, nacked: 0 });
    expect(sink.encode!({ id: 5, a: 'x', c: 'z' }), 'read again').to.equal('[5,"x","z"]');
    expect(sink.encodedColumns, 'the columns of its arrays follow').to.deep.equal(['id', 'a', 'c']);
    expect(deadLetters.rows).to.deep.equal([]);
    expect(await client().queryText('SELECT * FROM compact_altered ORDER BY id FORMAT JSONEachRow', 'JSONEachRow')).to.equal(
      ['{"id":1,"a":"x","c":""}', '{"id":2,"a":"x","c":"z"}', '{"id":3,"a":"x","c":""}', '{"id":4,"a":"x","c":""}', ''].join('\n'),
    );
  });
});
