import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { serverClickHouse, toClickHouse } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import { serveMetrics } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import { clickhouseServer } from '../../clickhouseServer';
import { delay, MemorySink } from '../../helpers';
import { metricValue, parseMetrics } from '../../metricsText';

/** Polls `probe` until it returns true; fails with `what` after `timeoutMs`. */
async function eventually(probe: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

describe('/ready and metrics while the ClickHouse server goes away and comes back', function () {
  this.timeout(180_000);
  let client: ReturnType<typeof serverClickHouse>;

  before(async () => {
    clickhouseServer.ensure();
    client = serverClickHouse({ url: clickhouseServer.url, requestTimeoutMs: 5000 });
    expect(await client.version()).to.match(/^\d+\.\d+/);
  });

  after(async () => {
    await client?.close();
  });

  it('answers /ready 503 while the server is stopped and 200 once it is back, and the counters resume', async () => {
    const table = `ready_${randomUUID().replace(/-/g, '')}`;
    await client.exec(`CREATE TABLE ${table} (id UInt32) ENGINE = ReplacingMergeTree ORDER BY id`);
    let produced = 0;
    let producing = true;
    async function* bookings() {
      while (producing) {
        for (let i = 0; i < 20; i++) yield { id: ++produced };
        await delay(20);
      }
    }
    const pipeline = new Pipeline({
      name: 'ready',
      source: fromIterable(bookings()),
      sink: toClickHouse({ client, table }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 200, maxWaitMs: 100 },
      inFlight: { records: 2000 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
      breaker: { resetTimeoutMs: 1000 },
    });
    const server = await serveMetrics(pipeline, { port: 0 });
    const ready = async () => (await fetch(`${server.url}/ready`)).status;
    const scrape = async () => parseMetrics(await (await fetch(`${server.url}/metrics`)).text());
    const written = async () => metricValue(await scrape(), 'tributary_records_total', { pipeline: 'ready', stage: 'sink', outcome: 'written' }) ?? 0;
    await pipeline.start();
    let down: { body: { ready: boolean; pipelines: Record<string, { reasons: string[] }> }; breaker: number | undefined; errors: number | undefined } | undefined;
    let writtenWhileDown = 0;
    try {
      await eventually(async () => (await written()) > 0, 20_000, 'records written before the outage');
      expect(await ready()).to.equal(200);

      clickhouseServer.stop();
      await eventually(async () => (await ready()) === 503, 30_000, '/ready to answer 503 with the server stopped');
      const response = await fetch(`${server.url}/ready`);
      const metrics = await scrape();
      down = {
        body: (await response.json()) as NonNullable<typeof down>['body'],
        breaker: metricValue(metrics, 'tributary_breaker_state', { pipeline: 'ready', stage: 'sink' }),
        errors: metricValue(metrics, 'tributary_sink_write_duration_seconds_count', { pipeline: 'ready', stage: 'sink', outcome: 'error' }),
      };
      writtenWhileDown = await written();
      // Liveness holds: a sink outage is waited out, not a reason to restart the process.
      expect((await fetch(`${server.url}/health`)).status).to.equal(200);
    } finally {
      clickhouseServer.start();
    }
    try {
      await eventually(async () => (await ready()) === 200, 30_000, '/ready to answer 200 with the server back');
      await eventually(async () => (await written()) > writtenWhileDown, 20_000, 'records written after the outage');
    } finally {
      producing = false;
    }
    const stats = await pipeline.finished();
    await server.close();

    expect(down!.body.ready).to.equal(false);
    expect(down!.body.pipelines.ready!.reasons.join('; ')).to.match(new RegExp(`^sink clickhouse:${table}: circuit breaker (open|halfOpen)$`));
    expect(down!.breaker).to.be.oneOf([1, 2]);
    expect(down!.errors).to.be.greaterThan(0);
    expect(stats).to.include({ read: produced, written: produced, nacked: 0 });
    const [counts] = await client.query<{ keys: string }>(`SELECT uniqExact(id) AS keys FROM ${table}`);
    expect(Number(counts!.keys)).to.equal(produced);
    await client.exec(`DROP TABLE ${table}`);
  });
});
