import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { map } from 'rxjs';
import { toClickHouse } from '../../../connectors/clickhouse';
import { fromPoll, type FromPollOptions, type Pagination, type PollSource } from '../../../connectors/poll';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter, Sink } from '../../../lib/sink';
import { MemorySink, scratchDir, testClickHouse, until } from '../../helpers';
import { metricValue, parseMetrics } from '../../metricsText';
import { VendorApi, type VendorFaults } from '../../vendorApi';

interface Row {
  id: string;
  updated_at: string;
  price: number;
  guest: string;
}

/** The vendor renamed `price` to `amount` mid-stream: the mapping takes either. */
const toRow = map((e: Envelope<any>) => e.map<Row>({ id: e.value.id, updated_at: e.value.updated_at, price: e.value.price ?? e.value.amount, guest: e.value.guest }));

describe('fromPoll', function () {
  this.timeout(120_000);
  const clickhouse = testClickHouse();
  const dir = scratchDir();
  let api: VendorApi;
  let base: string;
  let table: string;
  let deadLetters: MemorySink<DeadLetter>;

  beforeEach(async () => {
    table = `poll_rows_${process.pid}_${Date.now()}`;
    await clickhouse.exec(`CREATE TABLE ${table} (id String, updated_at DateTime64(3, 'UTC'), price Float64, guest String) ENGINE = ReplacingMergeTree(updated_at) ORDER BY id`);
    deadLetters = new MemorySink<DeadLetter>('dead-letters');
  });
  afterEach(async () => {
    await api?.stop();
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  const serve = async (items: number, faults: VendorFaults = {}) => {
    api = new VendorApi(items, faults);
    base = await api.start();
  };
  const cursorFile = () => join(dir.path, 'cursor.json');
  const savedCursor = () => JSON.parse(readFileSync(cursorFile(), 'utf8')) as Record<string, unknown>;
  const source = (route: string, pagination: Pagination, extra: Partial<FromPollOptions> = {}) =>
    fromPoll({
      vendor: 'acme',
      url: `${base}/${route}`,
      pagination,
      key: 'id',
      watermark: { param: 'updated_since', field: 'updated_at' },
      headers: { authorization: `Bearer ${api.token}` },
      requestsPerSecond: 200,
      cursorFile: cursorFile(),
      once: true,
      retry: { initialDelayMs: 10, maxDelayMs: 100 },
      ...extra,
    });
  const run = async (poller: PollSource, sink: Sink<Row> = toClickHouse({ client: clickhouse, table })) =>
    new Pipeline<Row>({ source: poller, transform: toRow, sink, deadLetters, batch: { rows: 100, maxWaitMs: 20 } }).run();
  const counts = async () => {
    const [row] = await clickhouse.query<Record<string, string>>(
      `SELECT (SELECT count() FROM ${table}) AS raw, (SELECT count() FROM ${table} FINAL) AS final, (SELECT uniqExact(id) FROM ${table}) AS ids, (SELECT countIf(price <= 0) FROM ${table}) AS unpriced`,
    );
    return Object.fromEntries(Object.entries(row!).map(([k, v]) => [k, Number(v)]));
  };

  const styles: [string, Pagination][] = [
    ['page', { type: 'page', size: 50 }],
    ['offset', { type: 'offset', limit: 50 }],
    ['cursor', { type: 'cursor', next: 'next_cursor' }],
    ['link', { type: 'link' }],
  ];
  for (const [route, pagination] of styles) {
    it(`follows ${route} pagination to the end and lands every item once, saving the watermark`, async () => {
      await serve(230);
      const poller = source(route, pagination, route === 'cursor' ? { url: `${base}/cursor?limit=50` } : route === 'link' ? { url: `${base}/link?per_page=50` } : {});
      const stats = await run(poller);
      expect(stats.written).to.equal(230);
      expect(await counts()).to.deep.equal({ raw: 230, final: 230, ids: 230, unpriced: 0 });
      expect(poller.stats).to.include({ pages: 5, records: 230, syncs: 1, deadLetteredRequests: 0 });
      expect(savedCursor()).to.include({ watermark: api.items[229]!.updated_at });
      expect(savedCursor()).to.not.have.property('resume');
      expect(poller.status()).to.include({ connected: true });
      expect(poller.status().cursorAgeSeconds).to.be.a('number').and.at.least(0);
    });
  }

  it('gets through slow pages, 429 bursts (after their Retry-After), 500s, items on two pages and a renamed field', async () => {
    await serve(300, { slowMs: 20, burst429: { every: 3, count: 2, retryAfterSeconds: 1 }, error500Every: 7, duplicates: true, renameAfter: 150 });
    const poller = source('offset', { type: 'offset', limit: 50 }, { concurrency: 2 });
    const stats = await run(poller);
    // Pages 2–6 start with the last item of the page before, and page 7 holds only that
    // duplicate: 6 items arrive twice and are written twice; the table keeps one row per id
    // (ReplacingMergeTree already collapses duplicates inside one insert, so the raw count
    // lies between the two).
    expect(stats.written).to.equal(306);
    const stored = await counts();
    expect(stored).to.include({ final: 300, ids: 300, unpriced: 0 });
    expect(stored.raw).to.be.within(300, 306);
    const throttled = api.served.filter((r) => r.status === 429);
    const failed = api.served.filter((r) => r.status === 500);
    expect(throttled.length).to.be.at.least(2);
    expect(failed.length).to.be.at.least(1);
    expect(poller.stats.retries).to.equal(throttled.length + failed.length);
    for (const refused of throttled) {
      const again = api.served.find((r) => r.path === refused.path && r.at > refused.at);
      expect(again, `retry of ${refused.path}`).to.not.equal(undefined);
      expect(again!.at - refused.at, `wait before retrying ${refused.path}`).to.be.at.least(990);
    }
  });

  it('waits as long as a 503 Retry-After says before asking again, then lands every item once', async () => {
    await serve(120, { burst503: { every: 2, count: 1, retryAfterSeconds: 2 } });
    // Backoff alone would retry within 100 ms: only the Retry-After can make the wait 2 s.
    const poller = source('page', { type: 'page', size: 50 }, { retry: { initialDelayMs: 10, maxDelayMs: 100 } });
    const stats = await run(poller);
    expect(stats.written).to.equal(120);
    expect(await counts()).to.include({ final: 120, ids: 120 });
    const unavailable = api.served.filter((r) => r.status === 503);
    expect(unavailable.length).to.be.at.least(1);
    expect(poller.stats).to.include({ retries: unavailable.length, deadLetteredRequests: 0 });
    expect(deadLetters.rows).to.have.length(0);
    for (const refused of unavailable) {
      const again = api.served.find((r) => r.path === refused.path && r.at > refused.at);
      expect(again, `retry of ${refused.path}`).to.not.equal(undefined);
      expect(again!.status).to.equal(200);
      expect(again!.at - refused.at, `wait before retrying ${refused.path}`).to.be.at.least(1990);
    }
  });

  it('syncs incrementally from the saved watermark: only changed and new items are asked for', async () => {
    await serve(120);
    await run(source('page', { type: 'page', size: 50 }));
    const watermark = savedCursor().watermark as string;
    expect(watermark).to.equal(api.items[119]!.updated_at);
    for (const id of ['BK-000003', 'BK-000050', 'BK-000077']) api.touch(id);
    for (let i = 0; i < 4; i++) api.add();
    const before = api.served.length;
    // A cursor save a crash cut off before its rename: gone once the next run loads the cursor.
    writeFileSync(join(dir.path, '.cursor.json.0123456789ab.tmp'), '{"water');
    const second = source('page', { type: 'page', size: 50 });
    await run(second);
    expect(readdirSync(dir.path).filter((name) => name.startsWith('.cursor.json.'))).to.deep.equal([]);
    expect(api.served.slice(before).every((r) => r.path.includes(`updated_since=${encodeURIComponent(watermark)}`))).to.equal(true);
    // 3 changed, 4 new, and the item at the watermark itself (the filter is inclusive).
    expect(second.stats.records).to.equal(8);
    expect(await counts()).to.include({ final: 124, ids: 124 });
    const changed = await clickhouse.query<{ id: string }>(`SELECT id FROM ${table} FINAL WHERE guest LIKE '%(changed)' ORDER BY id`);
    expect(changed.map((r) => r.id)).to.deep.equal(['BK-000003', 'BK-000050', 'BK-000077']);
  });

  it('stores a permanent 4xx as a dead letter, keeps the cursor before it, and resumes there once the page is back', async () => {
    await serve(230, { missingPages: [3] });
    const first = source('page', { type: 'page', size: 50 });
    const pipeline = new Pipeline<Row>({ name: 'poll-acme', source: first, transform: toRow, sink: toClickHouse({ client: clickhouse, table }), deadLetters, batch: { rows: 100, maxWaitMs: 20 } });
    const metrics = pipelineMetrics(pipeline);
    const scrape = async (stage: string, outcome: string) => metricValue(parseMetrics(await metrics.registry.metrics()), 'tributary_records_total', { pipeline: 'poll-acme', stage, outcome });
    expect(await scrape('poll', 'dead_lettered'), 'no poll dead letter before the run').to.equal(undefined);
    await pipeline.run();
    expect(first.stats.deadLetteredRequests).to.equal(1);
    // The dead-lettered request is what Prometheus sees, under the stage that refused it.
    expect(await scrape('poll', 'dead_lettered')).to.equal(1);
    expect(await scrape('sink', 'written')).to.equal(100);
    metrics.close();
    expect(deadLetters.rows.map((l) => [l.stage, l.code, l.vendor])).to.deep.equal([['poll', 'HTTP_404', 'acme']]);
    expect(deadLetters.rows[0]!.position).to.match(/\/page\?.*page=3/);
    expect(JSON.parse(deadLetters.rows[0]!.raw)).to.deep.equal({ error: 'page 3 is gone' });
    expect(await counts()).to.include({ final: 100 });
    expect(savedCursor()).to.include({ resume: 3 });
    expect(api.served.filter((r) => r.status === 404)).to.have.length(1);

    api.faults = {};
    const before = api.served.length;
    const second = source('page', { type: 'page', size: 50 });
    await run(second);
    expect(api.served[before]!.path).to.include('page=3');
    expect(await counts()).to.include({ raw: 230, final: 230 });
    expect(savedCursor()).to.not.have.property('resume');
  });

  it('saves the cursor only once the records of its pages are acked', async () => {
    await serve(150);
    const sink = new MemorySink<Row>('held');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    sink.gate = () => held;
    const poller = source('page', { type: 'page', size: 50 });
    const running = run(poller, sink);
    await until(() => poller.stats.pages === 4, 10_000, 'every page fetched');
    expect(existsSync(cursorFile()), 'no cursor before any ack').to.equal(false);
    release();
    await running;
    expect(sink.rows).to.have.length(150);
    expect(savedCursor()).to.include({ watermark: api.items[149]!.updated_at });
  });

  it('keeps at most `concurrency` requests under way', async () => {
    await serve(300, { slowMs: 150 });
    const poller = source('page', { type: 'page', size: 25 }, { requestsPerSecond: 1000, concurrency: 3 });
    await run(poller);
    expect(await counts()).to.include({ final: 300 });
    expect(Math.max(...api.served.map((r) => r.concurrent))).to.equal(3);
  });

  it('keeps to its request rate', async () => {
    await serve(500);
    const poller = source('page', { type: 'page', size: 20 }, { requestsPerSecond: 20, concurrency: 4 });
    await run(poller);
    expect(await counts()).to.include({ final: 500 });
    // The poller goes through its limit: 25 pages at 20/s start over at least 24 intervals of
    // 50 ms (1.2 s; unlimited, they take a few ms). A slow machine only stretches this; how
    // the limit spaces starts, late timers included, is poll-rate-limit.spec's, in virtual time.
    const starts = api.served.map((r) => r.at);
    expect(starts.length).to.be.at.least(25);
    expect(Math.max(...starts) - Math.min(...starts)).to.be.at.least(1000);
  });

  it('polls on at its interval until stopped, picking up new items, and stops cleanly mid-wait', async () => {
    await serve(60);
    const poller = source('page', { type: 'page', size: 50 }, { once: false, intervalMs: 50 });
    const pipeline = new Pipeline<Row>({ source: poller, transform: toRow, sink: toClickHouse({ client: clickhouse, table }), deadLetters, batch: { rows: 100, maxWaitMs: 20 } });
    await pipeline.start();
    await until(() => poller.stats.syncs >= 1, 10_000, 'the first sync');
    for (let i = 0; i < 5; i++) api.add();
    const syncsBefore = poller.stats.syncs;
    await until(() => poller.stats.syncs > syncsBefore && savedCursor().watermark === api.items[64]!.updated_at, 10_000, 'the new items synced');
    const stats = await pipeline.stop();
    expect(await counts()).to.include({ final: 65, ids: 65 });
    // Every sync re-reads the item at the watermark (inclusive), so more than 65 were written.
    expect(stats.written).to.be.at.least(65);
    expect(poller.stats.syncs).to.be.at.least(2);
    expect(poller.status().cursorAgeSeconds).to.be.below(60);
  });

  it('fails a once-poller whose vendor stays unreachable after its retries, and reports itself disconnected', async () => {
    await serve(10);
    await api.stop();
    const poller = source('page', { type: 'page', size: 50 }, { retry: { retries: 2, initialDelayMs: 1, maxDelayMs: 5 } });
    const failure = await run(poller).then(() => undefined, (error: Error) => error);
    expect(failure?.message).to.match(/HTTP_NETWORK|fetch failed|ECONNREFUSED/);
    expect(poller.stats).to.include({ requests: 3, retries: 2, pages: 0 });
    expect(poller.status().connected).to.equal(false);
    expect(existsSync(cursorFile())).to.equal(false);
  });

  it('checks its options at construction', () => {
    const ok: FromPollOptions = { vendor: 'acme', url: 'http://127.0.0.1:1/x', pagination: { type: 'page' }, cursorFile: 'c.json' };
    expect(() => fromPoll({ ...ok, pagination: { type: 'pages' } as unknown as Pagination })).to.throw(ConfigError, "pagination.type must be one of 'page', 'offset', 'cursor', 'link', got \"pages\"");
    expect(() => fromPoll({ ...ok, pagination: { type: 'page', size: 0 } })).to.throw(ConfigError, 'pagination.size must be an integer >= 1, got 0');
    expect(() => fromPoll({ ...ok, url: 'ftp://x' })).to.throw(ConfigError, 'url must be an absolute http(s) URL');
    expect(() => fromPoll({ ...ok, requestsPerSecond: 0 })).to.throw(ConfigError, 'requestsPerSecond must be a number > 0, got 0');
    expect(() => fromPoll({ ...ok, concurrency: 1.5 })).to.throw(ConfigError, 'concurrency must be an integer >= 1, got 1.5');
    expect(() => fromPoll({ ...ok, cursorFile: undefined })).to.throw(ConfigError, 'give exactly one of cursorStore and cursorFile');
  });
});
