import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { serverClickHouse, toClickHouse } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { ClickHouseError, ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { clickhouseServer } from '../../clickhouseServer';
import { clickhouseSinkConformance } from '../../conformance/clickhouse-sink';
import { delay, MemorySink, observed, readToEnd, runningQueries, until } from '../../helpers';

describe('serverClickHouse options', () => {
  it('refuses a bad request timeout at construction with the rule', () => {
    expect(() => serverClickHouse({ requestTimeoutMs: 0 })).to.throw(ConfigError, 'requestTimeoutMs must be an integer >= 1, got 0');
    expect(() => serverClickHouse({ requestTimeoutMs: 1.5 })).to.throw(ConfigError, 'requestTimeoutMs must be an integer >= 1, got 1.5');
  });
});

describe('ClickHouse server over HTTP', function () {
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

  describe('conformance', () => clickhouseSinkConformance(() => client));

  it('feature-detects what the server lacks', async () => {
    const old = (await client.version()).startsWith('18.');
    expect(await client.supportsDeduplicationToken()).to.equal(!old);
    expect(await client.readsDecimalStrings()).to.equal(!old);
  });

  it('reports a refused query as a typed, non-retriable error with the server code', async () => {
    const error = await client.query('SELECT * FROM no_such_table_here').catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ClickHouseError);
    expect(error).to.include({ clickhouseCode: 60, retriable: false, rowsAtFault: false });
  });

  it('stops on the server a stream given up: aborted, or left before its end', async () => {
    // Minutes of work for the server unless stopped; the server runs a query on after its
    // client has gone.
    const marker = `given_up_${randomUUID().replace(/-/g, '')}`;
    const heavy = `SELECT '${marker}', sum(cityHash64(number)) FROM numbers(1000000000000)`;
    const running = () => runningQueries(marker, client);
    const started = () => until(async () => (await running()) > 0, 20_000, 'the query to start', 20);
    // In moments, not the minutes the query takes.
    const stopped = (how: string) => until(async () => (await running()) === 0, 20_000, `${how}: the query to stop on the server`, 50);
    const controller = new AbortController();
    const aborted = readToEnd(client.stream(heavy, { format: 'TSV', signal: controller.signal }));
    await started();
    controller.abort();
    await aborted;
    await stopped('aborted');
    // A reader that stops after its first chunk, with no signal.
    for await (const chunk of client.stream(`SELECT '${marker}', number FROM numbers(1000000000000)`, { format: 'TSV' })) {
      void chunk;
      break;
    }
    await stopped('left');
  });

  it('loses and duplicates nothing when the server goes down for 10 s, three times, mid-stream', async () => {
    const table = `outage_${randomUUID().replace(/-/g, '')}`;
    await client.exec(`CREATE TABLE ${table} (id UInt32, at DateTime) ENGINE = ReplacingMergeTree ORDER BY id`);
    let produced = 0;
    let producing = true;
    async function* bookings() {
      while (producing) {
        for (let i = 0; i < 50; i++) yield { id: ++produced, at: '2026-03-01 10:00:00' };
        await delay(20);
      }
    }
    const source = observed(fromIterable(bookings()));
    const pipeline = new Pipeline({
      source,
      sink: toClickHouse({ client, table }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 1000, maxWaitMs: 200 },
      inFlight: { records: 5000 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
      breaker: { resetTimeoutMs: 1000 },
    });
    await pipeline.start();
    const outages: { heldAt: number; breaker: string }[] = [];
    try {
      for (let round = 0; round < 3; round++) {
        await delay(1500);
        clickhouseServer.stop();
        await delay(10_000);
        outages.push({ heldAt: pipeline.stats.inFlightRecords, breaker: pipeline.breakerState });
        clickhouseServer.start();
      }
      await delay(1500);
    } finally {
      producing = false;
      clickhouseServer.start();
    }
    const stats = await pipeline.finished();
    // While the server was down, the source was held at its budget and the breaker was open.
    for (const outage of outages) {
      expect(outage.heldAt).to.equal(5000);
      expect(outage.breaker).to.not.equal('closed');
    }
    expect(stats).to.include({ read: produced, written: produced, nacked: 0 });
    expect(source.nacked).to.deep.equal([]);
    await until(() => source.acked.length === produced, 5000, 'all acks');
    const [counts] = await client.query<{ rows: string; keys: string; final: string }>(
      `SELECT count() AS rows, uniqExact(id) AS keys, (SELECT count() FROM ${table} FINAL) AS final FROM ${table}`,
    );
    expect(Number(counts!.keys)).to.equal(produced); // none lost
    expect(Number(counts!.final)).to.equal(produced); // none duplicated by natural key
    await client.exec(`DROP TABLE ${table}`);
  });
});
