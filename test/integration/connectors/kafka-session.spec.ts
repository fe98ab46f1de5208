import { expect } from 'chai';
import { map } from 'rxjs';
import { fromKafka } from '../../../connectors/kafka';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import { serveMetrics } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { delay, MemorySink, until } from '../../helpers';
import { caughtUp, committedOffsets, createTopic, endOffsets, produce } from '../../kafka';
import { parseMetrics } from '../../metricsText';
import { ensureKafka } from '../../services';

describe('Kafka source membership and lag against a real broker', function () {
  this.timeout(120_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('stays in its group while a sink write is held past the session timeout: one join, no rebalance, nothing delivered twice', async () => {
    const { topic, remove } = await createTopic(brokers, 2);
    try {
      const total = 2000;
      const sessionTimeoutMs = 6000;
      await produce(brokers, topic, Array.from({ length: total }, (_, i) => ({ key: String(i), value: JSON.stringify({ n: i }) })));
      const groupId = `${topic}-group`;
      const events = { joins: 0, rebalances: 0, heartbeatsDuringHold: 0 };
      let holding = false;
      const source = fromKafka({
        brokers,
        groupId,
        topics: topic,
        fromBeginning: true,
        logLevel: 'nothing',
        sessionTimeoutMs,
        heartbeatIntervalMs: 1000,
        instrument: (consumer) => {
          consumer.on(consumer.events.GROUP_JOIN, () => events.joins++);
          consumer.on(consumer.events.REBALANCING, () => events.rebalances++);
          consumer.on(consumer.events.HEARTBEAT, () => (events.heartbeatsDuringHold += holding ? 1 : 0));
        },
      });
      const sink = new MemorySink<{ n: number; attempt: number }>();
      let held = 0;
      // The first write is held well past the session timeout. Nothing after its records
      // can be committed meanwhile, so a member dropped from the group would be handed its
      // partition again from the start and deliver those records a second time.
      sink.gate = async () => {
        if (held++ > 0) return;
        holding = true;
        await delay(sessionTimeoutMs + 4000);
        holding = false;
      };
      const pipeline = new Pipeline({
        source,
        transform: (records$) => records$.pipe(parse(), map((e: Envelope<any>) => e.map({ n: e.value.n as number, attempt: e.meta.attempt }))),
        sink,
        deadLetters: new MemorySink<DeadLetter>(),
        batch: { rows: 100, maxWaitMs: 20 },
        inFlight: { records: 400 },
      });
      await pipeline.start();
      await until(() => held > 0, 30_000, 'the first write');
      await until(() => !holding, 30_000, 'the held write to return');
      await until(() => sink.rows.length >= total, 60_000, 'every record');
      for (let i = 0; !(await caughtUp(brokers, groupId, topic)); i++) {
        if (i > 300) expect.fail('the group never committed the end of the topic');
        await delay(100);
      }
      await pipeline.stop();
      expect(events.heartbeatsDuringHold, 'heartbeats while the write was held').to.be.greaterThan(0);
      expect(events).to.include({ joins: 1, rebalances: 0 });
      expect(sink.rows.length).to.equal(total);
      expect(new Set(sink.rows.map((r) => r.n)).size).to.equal(total);
      expect(sink.rows.every((r) => r.attempt === 1)).to.equal(true);
      expect(sink.writes.every((w) => w.attempt === 1)).to.equal(true);
    } finally {
      await remove();
    }
  });

  it('reports the lag of a consumer held back by credits, in status() and as tributary_consumer_lag, then 0 once it catches up', async () => {
    const { topic, remove } = await createTopic(brokers, 2);
    const groupId = `${topic}-group`;
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const sink = new MemorySink<{ n: number }>();
    sink.gate = () => released;
    const source = fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', lagRefreshMs: 1000 });
    const pipeline = new Pipeline({
      name: 'lagging',
      source,
      transform: parse() as any,
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 50, maxWaitMs: 20 },
      inFlight: { records: 100 },
    });
    const server = await serveMetrics(pipeline, { port: 0 });
    const scrape = async () => {
      const samples = parseMetrics(await (await fetch(`${server.url}/metrics`)).text());
      return new Map(samples.filter((s) => s.name === 'tributary_consumer_lag' && s.labels.topic === topic).map((s) => [Number(s.labels.partition), s.value]));
    };
    /** What the broker says is left to read: end offset minus committed (nothing committed: from 0). */
    const brokerLag = async () => {
      const [ends, committed] = await Promise.all([endOffsets(brokers, topic), committedOffsets(brokers, groupId, topic)]);
      return new Map([...ends].map(([p, end]) => [p, end - Math.max(0, committed.get(p) ?? -1)]));
    };
    const statusLag = () => new Map(Object.entries(source.status!().lag ?? {}).map(([id, lag]) => [Number(id.slice(id.lastIndexOf('/') + 1)), lag]));
    try {
      await produce(brokers, topic, Array.from({ length: 1000 }, (_, i) => ({ partition: i % 2, value: JSON.stringify({ n: i }) })));
      await pipeline.start();
      // The sink holds every write: credits run out after 100 records and both partitions wait.
      await until(() => pipeline.credits.inFlightRecords === 100 && statusLag().size === 2, 30_000, 'the consumer held back on both partitions');
      expect(await brokerLag()).to.deep.equal(new Map([[0, 500], [1, 500]]));
      expect(statusLag()).to.deep.equal(await brokerLag());
      expect(await scrape()).to.deep.equal(await brokerLag());

      // More arrives while the consumer waits: its lag grows with the topic.
      await produce(brokers, topic, Array.from({ length: 400 }, (_, i) => ({ partition: i % 2, value: JSON.stringify({ n: 1000 + i }) })));
      expect(await brokerLag()).to.deep.equal(new Map([[0, 700], [1, 700]]));
      await until(() => statusLag().get(0) === 700 && statusLag().get(1) === 700, 30_000, `status() lag to follow the topic, at ${JSON.stringify([...statusLag()])}`);
      expect(await scrape()).to.deep.equal(await brokerLag());

      release();
      await until(() => sink.rows.length === 1400, 60_000, 'every record');
      await until(() => [...statusLag().values()].every((l) => l === 0), 30_000, 'no lag in status()');
      expect([...(await brokerLag()).values()]).to.deep.equal([0, 0]);
      expect(await scrape()).to.deep.equal(new Map([[0, 0], [1, 0]]));
    } finally {
      release();
      await server.close();
      await pipeline.stop();
      await remove();
    }
  });
});
