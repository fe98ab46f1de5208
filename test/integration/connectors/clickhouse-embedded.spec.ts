import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { embeddedClickHouse, migrate, toClickHouse } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { generate } from '../../../examples/bookings/generate';
import { migrationsDir, samplesDir } from '../../../examples/bookings/paths';
import { bookingPipeline, SAMPLE_VENDORS } from '../../../examples/bookings/pipeline';
import { ClickHouseError, ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { delay, MemorySink, observed, readToEnd, runningQueries, tempDir, testClickHouse, testClickHousePath, until } from '../../helpers';

const count = async (sql: string, store = testClickHouse()) => Number((await store.query<{ n: string }>(sql))[0]!.n);

describe('embedded ClickHouse (chDB)', function () {
  this.timeout(120_000);
  const clickhouse = testClickHouse();

  beforeEach(async () => {
    for (const table of ['vendor_quality_accepted_mv', 'vendor_quality_dead_lettered_mv', 'bookings_per_vendor_day', 'cancellation_rate_per_vendor', 'vendor_quality_hourly', 'bookings', 'dead_letters', 'subject_keys', 'audit_log', 'tributary_migrations']) {
      await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
    }
    expect(await migrate(clickhouse, migrationsDir)).to.deep.equal([1, 2, 3, 4, 5]);
  });

  it('applies each migration once', async () => {
    expect(await migrate(clickhouse, migrationsDir)).to.deep.equal([]);
    expect(await count('SELECT count() AS n FROM tributary_migrations')).to.equal(5);
  });

  it('lands the sample files: valid records in bookings, refused ones in dead_letters with path and reason, nothing else', async () => {
    // Rows are counted without FINAL, no merge folding them: only insert tokens keep a run again from storing them twice.
    await clickhouse.exec('SYSTEM STOP MERGES bookings');
    await clickhouse.exec('SYSTEM STOP MERGES dead_letters');
    const paths = SAMPLE_VENDORS.map((v) => join(samplesDir, v));
    const stats = await bookingPipeline({ client: clickhouse, paths, alignBatches: true }).run();
    const bookings = await count('SELECT count() AS n FROM bookings');
    const letters = await count('SELECT count() AS n FROM dead_letters');
    expect(stats.read).to.equal(68);
    expect([bookings, letters]).to.deep.equal([stats.written, stats.deadLettered]);
    expect(bookings + letters).to.equal(stats.read);
    const reasons = await clickhouse.query<Record<string, string>>(
      'SELECT vendor, stage, code, path FROM dead_letters ORDER BY vendor, path',
    );
    expect(reasons).to.deep.equal([
      { vendor: 'backdesk', stage: 'source', code: 'PARSE_CSV', path: '' },
      { vendor: 'backdesk', stage: 'normalize', code: 'MAPPING', path: '/Status' },
      { vendor: 'backdesk', stage: 'normalize', code: 'MAPPING', path: '/Travel Date' },
      { vendor: 'farelink', stage: 'normalize', code: 'MAPPING', path: '/@status' },
      { vendor: 'farelink', stage: 'normalize', code: 'MAPPING', path: '/Itinerary/Segment/1/Arrival/#text' },
      { vendor: 'globetrek', stage: 'normalize', code: 'MAPPING', path: '/booking_no' },
      { vendor: 'globetrek', stage: 'normalize', code: 'MAPPING', path: '/status' },
      { vendor: 'railbase', stage: 'normalize', code: 'MAPPING', path: '/AMOUNT' },
      { vendor: 'railbase', stage: 'normalize', code: 'MAPPING', path: '/TRAVDATE' },
      { vendor: 'skyway', stage: 'normalize', code: 'MAPPING', path: '/price/currency' },
      { vendor: 'staylodge', stage: 'source', code: 'INVALID_UTF8', path: '' },
      { vendor: 'staylodge', stage: 'normalize', code: 'MAPPING', path: '/checkIn' },
      { vendor: 'tripwire', stage: 'normalize', code: 'MAPPING', path: '/data/booking/itinerary/segments/0/arrival/at' },
      { vendor: 'tripwire', stage: 'normalize', code: 'MAPPING', path: '/event' },
    ]);
    const [row] = await clickhouse.query<Record<string, string>>(
      "SELECT booking_id, status, toString(total_amount) AS total_amount, currency, toString(booked_at) AS booked_at FROM bookings WHERE vendor = 'skyway' ORDER BY booking_id LIMIT 1",
    );
    expect(row).to.deep.equal({ booking_id: 'SKY-00000001', status: 'confirmed', total_amount: '1584.33', currency: 'USD', booked_at: '2026-01-01 01:29:13.193' });

    // The same files again, on a machine loaded enough that every dead letter takes 250 ms
    // more than the dead-letter batch's maxWaitMs (200 ms) would wait: batches cut by time
    // would be cut elsewhere and stored again. Dead letters are batched like the records
    // (by file, never by time), so both carry the same insert tokens and are absorbed.
    const busy = (ms: number) => {
      for (const end = Date.now() + ms; Date.now() < end; );
    };
    const again = await bookingPipeline({ client: clickhouse, paths, alignBatches: true, onDeadLetter: () => busy(250) }).run();
    expect(again).to.include({ read: stats.read, written: stats.written, deadLettered: stats.deadLettered, nacked: 0 });
    expect(await count('SELECT count() AS n FROM bookings'), 'bookings without FINAL').to.equal(bookings);
    expect(await count('SELECT count() AS n FROM dead_letters'), 'dead letters without FINAL').to.equal(letters);

    // The analysts' views agree with the tables, also after the second run.
    expect(await count('SELECT sum(bookings) AS n FROM bookings_per_vendor_day')).to.equal(bookings);
    expect(await count("SELECT sum(cancelled) AS n FROM cancellation_rate_per_vendor")).to.equal(await count("SELECT count() AS n FROM bookings FINAL WHERE status = 'cancelled'"));
    const quality = await clickhouse.query<{ vendor: string; accepted: string; dead_lettered: string }>(
      'SELECT vendor, sum(accepted) AS accepted, sum(dead_lettered) AS dead_lettered FROM vendor_quality_hourly GROUP BY vendor ORDER BY vendor',
    );
    expect(quality.map((q) => [q.vendor, Number(q.accepted), Number(q.dead_lettered)])).to.deep.equal([
      ['backdesk', 5, 3],
      ['farelink', 3, 2],
      ['globetrek', 12, 2],
      ['railbase', 4, 2],
      ['skyway', 15, 1],
      ['staylodge', 12, 2],
      ['tripwire', 3, 2],
    ]);
  });

  it('counts an updated booking once in the analysts\' figures, in its latest version', async () => {
    const booking = (id: string, version: string, status: string, amount: string) =>
      JSON.stringify({ vendor: 'skyway', booking_id: id, updated_at: `2026-03-01 ${version}`, status, product: 'flight', booked_at: '2026-03-01 09:00:00', travel_date: '2026-04-01', origin: 'LIS', destination: 'OSL', passengers: 1, total_amount: amount, currency: 'EUR' });
    const insert = (...rows: string[]) => clickhouse.insert('bookings', Buffer.from(rows.join('\n') + '\n'), { date_time_input_format: 'best_effort' });
    await insert(booking('A', '10:00:00', 'confirmed', '100.00'), booking('B', '10:00:00', 'confirmed', '50.00'));
    // A later version of A: re-priced, then cancelled. Three rows arrived for A in all.
    await insert(booking('A', '11:00:00', 'confirmed', '120.00'));
    await insert(booking('A', '12:00:00', 'cancelled', '120.00'));
    expect(await count('SELECT count() AS n FROM bookings')).to.equal(4); // before any merge
    const [day] = await clickhouse.query<Record<string, string | number>>("SELECT bookings, cancelled, toString(revenue) AS revenue FROM bookings_per_vendor_day WHERE vendor = 'skyway'");
    expect([Number(day!.bookings), Number(day!.cancelled), day!.revenue]).to.deep.equal([2, 1, '50']);
    const [rate] = await clickhouse.query<Record<string, string | number>>("SELECT bookings, cancelled, cancellation_rate FROM cancellation_rate_per_vendor WHERE vendor = 'skyway'");
    expect([rate!.bookings, rate!.cancelled, Number(rate!.cancellation_rate)].map(Number)).to.deep.equal([2, 1, 0.5]);
    // Data quality counts arrivals, by design: every accepted record, updates included.
    expect(await count("SELECT sum(accepted) AS n FROM vendor_quality_hourly WHERE vendor = 'skyway'")).to.equal(4);
  });

  it('accounts for every record of a large generated file exactly: records in = bookings + dead letters', async () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, 'globetrek', 'feed.ndjson');
      require('node:fs').mkdirSync(join(dir.path, 'globetrek'));
      const { faulty } = await generate({ vendor: 'globetrek', records: 30_000, out: file, faultRate: 0.02, seed: 3 });
      const stats = await bookingPipeline({ client: clickhouse, paths: [file], batch: { rows: 5000 }, inFlight: { records: 12_000 } }).run();
      expect(stats.read).to.equal(30_000);
      expect(stats.deadLettered).to.equal(faulty);
      expect(await count('SELECT count() AS n FROM bookings')).to.equal(30_000 - faulty);
      expect(await count('SELECT count() AS n FROM dead_letters')).to.equal(faulty);
    } finally {
      dir.remove();
    }
  });

  it('nacks and never acks when ClickHouse refuses the batch, with the server message', async () => {
    await clickhouse.exec('DROP TABLE IF EXISTS missing_table');
    const source = observed(fromIterable([{ a: 1 }, { a: 2 }]));
    const pipeline = new Pipeline({ source, sink: toClickHouse({ client: clickhouse, table: 'missing_table' }), deadLetters: new MemorySink<DeadLetter>() });
    const error = await pipeline.run().catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ClickHouseError);
    expect((error as ClickHouseError).clickhouseCode).to.equal(60); // UNKNOWN_TABLE
    expect((error as ClickHouseError).retriable).to.equal(false);
    expect(source.acked).to.deep.equal([]);
    expect(source.nacked).to.have.length(2);
  });

  it('stores every row exactly when row sizes and scripts change from batch to batch', async () => {
    await clickhouse.exec('DROP TABLE IF EXISTS texts');
    await clickhouse.exec('CREATE TABLE texts (id UInt32, text String) ENGINE = MergeTree ORDER BY id');
    // Tiny ASCII rows first (the body is sized from them), then rows of 4-byte and 3-byte
    // characters thousands of units long, then tiny again: the body must grow and shrink.
    const texts = [
      ...Array.from({ length: 300 }, (_, i) => `r${i}`),
      ...Array.from({ length: 40 }, (_, i) => '😀'.repeat(2000 + i) + 'ü€'.repeat(i)),
      ...Array.from({ length: 300 }, (_, i) => `\u0000"\\\n${i}`),
    ];
    const deadLetters = new MemorySink<DeadLetter>();
    const pipeline = new Pipeline({
      source: fromIterable(texts.map((text, id) => ({ id, text }))),
      sink: toClickHouse({ client: clickhouse, table: 'texts' }),
      deadLetters,
      batch: { rows: 100, maxWaitMs: 10 },
    });
    // A cut body would be refused, and splitting the batch could hide that: none may happen.
    let splits = 0;
    pipeline.on('sink.split', () => splits++);
    expect((await pipeline.run()).written).to.equal(texts.length);
    expect(splits).to.equal(0);
    expect(deadLetters.rows).to.deep.equal([]);
    const rows = await clickhouse.query<{ id: number; text: string }>('SELECT id, text FROM texts ORDER BY id');
    expect(rows.map((r) => r.text)).to.deep.equal(texts);
    await clickhouse.exec('DROP TABLE texts');
  });

  it('refuses a table name that is not an identifier', () => {
    expect(() => toClickHouse({ client: clickhouse, table: 'x; DROP TABLE bookings' })).to.throw(ConfigError, /table must be a name like bookings/);
  });

  it('the demo prints the summary, and running it again changes no count', async function () {
    const dir = tempDir();
    try {
      const demo = () =>
        promisify(execFile)(process.execPath, [join(__dirname, '../../../examples/bookings/demo.js')], {
          env: { ...process.env, TRIBUTARY_DEMO_PATH: dir.path },
        });
      const first = await demo();
      const second = await demo();
      const totals = (out: string) => out.slice(out.indexOf('Totals'));
      expect(first.stdout).to.contain('Bookings and revenue by vendor and day');
      expect(first.stdout).to.contain('Dead letters by reason');
      expect(totals(first.stdout)).to.match(/bookings\s+dead_letters\n54\s+14/);
      // Every example vendor's samples landed: each has a cancellation rate row.
      const rates = first.stdout.slice(first.stdout.indexOf('Cancellation rate by vendor'), first.stdout.indexOf('Dead letters by reason'));
      expect(rates.split('\n').slice(3).map((line) => line.split(/\s+/)[0]).filter(Boolean)).to.deep.equal([...SAMPLE_VENDORS].sort());
      expect(totals(second.stdout)).to.equal(totals(first.stdout));
      const summary = (out: string) => out.slice(out.indexOf('Bookings and revenue'));
      expect(summary(second.stdout)).to.equal(summary(first.stdout));
    } finally {
      dir.remove();
    }
  });
});

describe('embedded ClickHouse: streams', function () {
  this.timeout(120_000);
  const clickhouse = testClickHouse();
  const table = `given_up_${randomUUID().replace(/-/g, '')}`;
  // Minutes of work for the engine unless stopped.
  const heavy = `SELECT sum(cityHash64(n, r)) FROM ${table} ARRAY JOIN range({k:UInt32}) AS r SETTINGS max_block_size = 100`;
  const running = (store = testClickHouse()) => runningQueries(table, store);
  const all = async (stream: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> => {
    const chunks: Uint8Array[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  };
  /** Waits until no query of the table is listed: in moments, not the minutes each takes. */
  const gone = (what: string) => until(async () => (await running()) === 0, 20_000, `${what} to leave the engine`, 50);
  const within = <T>(promise: Promise<T>, ms: number) => Promise.race([promise, delay(ms).then(() => 'still running')]);

  before(async () => {
    await clickhouse.exec(`CREATE TABLE ${table} (n UInt64) ENGINE = MergeTree ORDER BY n`);
    await clickhouse.exec(`INSERT INTO ${table} SELECT number FROM numbers(10000000)`);
  });
  after(() => clickhouse.exec(`DROP TABLE IF EXISTS ${table}`));

  it('is stopped in the engine when its reader leaves before the end, and the next read gets only its own rows', async () => {
    // A SELECT's result comes through a named pipe, into which the engine would write on
    // unnoticed once its reader has closed it.
    const long = `SELECT n, r FROM ${table} ARRAY JOIN range(1000) AS r SETTINGS max_block_size = 100`;
    for (const format of ['TSV', 'RowBinary']) {
      let read = 0;
      for await (const chunk of clickhouse.stream(long, { format })) {
        read += chunk.length;
        if (read > 1_000_000) break;
      }
      await gone(format);
      const next = Buffer.concat(await all(clickhouse.stream(`SELECT number FROM numbers(100000)`, { format: 'TSV' })));
      expect(next.equals(Buffer.from(Array.from({ length: 100_000 }, (_, i) => `${i}\n`).join(''))), `${format}: the next read`).to.equal(true);
    }
  });

  it('yields what the engine wrote before a failure, then its error; an error before any row comes alone', async () => {
    const chunks: Uint8Array[] = [];
    const error = await (async () => {
      for await (const chunk of clickhouse.stream(`SELECT number, throwIf(number = 3000000, 'cut short') FROM numbers(5000000)`, { format: 'TSV' })) chunks.push(chunk);
    })().catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ClickHouseError);
    expect((error as ClickHouseError).clickhouseCode).to.equal(395);
    const lines = Buffer.concat(chunks).toString().split('\n');
    expect(lines.length, 'rows before the failure').to.be.above(1000);
    expect(lines.slice(0, 3)).to.deep.equal(['0\t0', '1\t0', '2\t0']);
    const none: Uint8Array[] = [];
    const missing = await (async () => {
      for await (const chunk of clickhouse.stream(`SELECT * FROM no_such_table_${table}`, { format: 'TSV' })) none.push(chunk);
    })().catch((e: unknown) => e);
    expect([(missing as ClickHouseError).clickhouseCode, none.length]).to.deep.equal([60, 0]);
  });

  it('reads a SELECT ending in a comment, and EXPLAIN, WITH and bound reads in every framing', async () => {
    const text = async (sql: string, format: string, params?: Record<string, string>) => Buffer.concat(await all(clickhouse.stream(sql, { format, ...(params && { params }) }))).toString();
    expect(await text('SELECT 1 AS x -- a comment', 'TSV')).to.equal('1\n');
    expect(await text('WITH 2 AS y SELECT y', 'CSVWithNames')).to.equal('"y"\n2\n');
    expect(await text('SELECT {v:String} AS v', 'JSONEachRow', { v: "it's" })).to.equal('{"v":"it\'s"}\n');
    expect(await text('EXPLAIN AST SELECT 1', 'TSVRaw')).to.match(/^SelectWithUnionQuery/);
    expect(JSON.parse(await text('SELECT 3 AS z', 'JSON')).data).to.deep.equal([{ z: 3 }]);
  });

  it('hands a reader that was busy what came meanwhile as one chunk, up to a MiB', async () => {
    // A reader that pays by the chunk (a round trip each) must not pay for every 64 KiB read of the pipe.
    const sizes: number[] = [];
    for await (const chunk of clickhouse.stream('SELECT number FROM numbers(5000000)', { format: 'TSV' })) {
      sizes.push(chunk.length);
      await delay(20);
    }
    expect(Math.max(...sizes)).to.be.within(512 * 1024, 1024 * 1024 + 64 * 1024);
  });

  it('streams through chDB when no named pipe can be made here, and says so once', async () => {
    const warnings: string[] = [];
    const store = embeddedClickHouse({ path: testClickHousePath(), logger: { debug() {}, info() {}, error() {}, warn: (message, fields) => warnings.push(`${message} ${JSON.stringify(fields)}`) } });
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      for (let i = 0; i < 2; i++) {
        const rows = Buffer.concat(await all(store.stream('SELECT number FROM numbers(300000)', { format: 'CSVWithNames' }))).toString().split('\n');
        expect([rows.length, rows[0], rows[1], rows[300000]]).to.deep.equal([300002, '"number"', '0', '299999']);
      }
    } finally {
      process.env.PATH = path;
      await store.close();
    }
    expect(warnings.filter((w) => /named pipe.*"error":".*mkfifo/.test(w))).to.have.length(1);
  });

  it('is stopped when aborted while the store runs a long query of its own', async () => {
    // The store's own session takes one query at a time: a kill queued behind this one
    // would wait the 8 s it runs.
    const own = clickhouse.query(`SELECT sum(cityHash64(n, r)) AS s FROM ${table} ARRAY JOIN range(1000) AS r SETTINGS max_block_size = 100, max_execution_time = 8, timeout_overflow_mode = 'break'`);
    const controller = new AbortController();
    const stream = readToEnd(clickhouse.stream(heavy, { format: 'JSON', params: { k: '1000' }, signal: controller.signal }));
    // Looked at from a store of its own: the test's store is busy.
    const observer = embeddedClickHouse({ path: testClickHousePath() });
    try {
      await until(async () => (await running(observer)) >= 2, 20_000, 'both queries to start', 20);
    } finally {
      await observer.close();
    }
    controller.abort();
    expect(await Promise.race([stream.then(() => 'the stream'), own.then(() => 'the long query')])).to.equal('the stream');
    expect(((await stream) as ClickHouseError).clickhouseCode).to.equal(394);
    await own;
  });

  it('is stopped in the engine when aborted, also while it waited its turn to start', async () => {
    const first = new AbortController();
    const second = new AbortController();
    const a = readToEnd(clickhouse.stream(heavy, { format: 'JSON', params: { k: '1000' }, signal: first.signal }));
    await until(async () => (await running()) > 0, 20_000, 'the first query to start', 20);
    // Bound queries start one after another in chDB: the second waits for the first, unlisted.
    const b = readToEnd(clickhouse.stream(heavy, { format: 'JSON', params: { k: '1000' }, signal: second.signal }));
    await delay(300);
    expect(await running(), 'the second query waits its turn').to.equal(1);
    second.abort();
    await delay(300);
    first.abort();
    // Stopped in moments, not the minutes each query takes.
    for (const [name, ended] of [['first', a], ['second', b]] as const) {
      const error = await within(ended, 20_000);
      expect(error, name).to.be.instanceOf(ClickHouseError);
      expect((error as ClickHouseError).clickhouseCode, name).to.equal(394);
    }
    await gone('after both');
  });
});
