import { expect } from 'chai';
import { map } from 'rxjs';
import { fromKafka, toKafka } from '../../../connectors/kafka';
import { toClickHouse } from '../../../connectors/clickhouse';
import { Credits } from '../../../lib/credits';
import { Envelope, type Settlement } from '../../../lib/envelope';
import { ConfigError, SinkError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import type { SourceContext } from '../../../lib/source';
import { parse } from '../../../operators/parse';
import { delay, MemorySink, testClickHouse, until } from '../../helpers';
import { caughtUp, committedOffsets, createTopic, produce, readAll, testKafka } from '../../kafka';
import { ensureKafka, startKafka, stopKafka } from '../../services';

describe('Kafka connectors against a real broker', function () {
  this.timeout(180_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('refuses bad options with the rule', () => {
    expect(() => fromKafka({ brokers: [], groupId: 'g', topics: 't' })).to.throw(ConfigError, "brokers must be a non-empty array of 'host:port', got []");
    expect(() => fromKafka({ brokers: ['h:1'], groupId: '', topics: 't' })).to.throw(ConfigError, 'groupId must be a non-empty string');
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: [] })).to.throw(ConfigError, 'topics must name at least one topic');
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: 't', heartbeatIntervalMs: 5000, sessionTimeoutMs: 5000 })).to.throw(
      ConfigError,
      'heartbeatIntervalMs must be lower than sessionTimeoutMs (5000), got 5000',
    );
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: 't', batchAlignment: 0 })).to.throw(ConfigError, 'batchAlignment must be an integer >= 1, got 0');
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: 't', lagRefreshMs: 0 })).to.throw(ConfigError, 'lagRefreshMs must be an integer >= 1, got 0');
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: 't', commitIntervalMs: -1 })).to.throw(ConfigError, 'commitIntervalMs must be an integer >= 0, got -1');
    expect(() => fromKafka({ brokers: ['h:1'], groupId: 'g', topics: 't', commitIntervalMs: 2.5 })).to.throw(ConfigError, 'commitIntervalMs must be an integer >= 0, got 2.5');
    expect(() => toKafka({ brokers: ['h:1'], topic: 'bad topic' })).to.throw(ConfigError, 'topic must be a topic name');
    expect(() => toKafka({ brokers: ['h:1'], topic: 't', compression: 'lz4' as 'gzip' })).to.throw(ConfigError, "compression must be 'none' or 'gzip'");
  });

  it('reads JSON payloads with keys and headers into a sink, commits the end, and reports no lag', async () => {
    const { topic, remove } = await createTopic(brokers, 3);
    try {
      const json = Array.from({ length: 300 }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ format: 'json', n: i }), headers: { vendor: 'acme' } }));
      await produce(brokers, topic, [...json, { key: 'bad', value: '{not json', headers: { vendor: 'acme' } }]);
      const groupId = `${topic}-group`;
      const source = fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', vendor: (meta) => meta.headers?.vendor });
      const sink = new MemorySink<{ n: number; key: string | undefined; vendor: string | undefined; position: string }>();
      const deadLetters = new MemorySink<DeadLetter>('dead');
      const pipeline = new Pipeline({
        source,
        transform: (records$) =>
          records$.pipe(
            parse(),
            map((e: Envelope<any>) => e.map({ n: e.value.n, key: e.meta.key, vendor: e.meta.vendor, position: e.meta.position })),
          ),
        sink,
        deadLetters,
        batch: { rows: 100, maxWaitMs: 50 },
      });
      await pipeline.start();
      await until(() => sink.rows.length === 300 && deadLetters.rows.length === 1, 60_000, 'every record');
      await until(() => Object.values(source.status!().lag ?? {}).length === 3 && Object.values(source.status!().lag!).every((l) => l === 0), 30_000, 'no lag');
      expect(source.status!().connected).to.equal(true);
      const stats = await pipeline.stop();
      expect(stats).to.include({ read: 301, written: 300, deadLettered: 1, nacked: 0 });
      expect(sink.rows.map((r) => r.n).sort((a, b) => a - b)).to.deep.equal(json.map((_, i) => i));
      expect(sink.rows.every((r) => r.key === `k${r.n}` && r.vendor === 'acme' && r.position.startsWith(`${topic}/`))).to.equal(true);
      expect(deadLetters.rows[0]).to.include({ stage: 'parse', code: 'PARSE_JSON', raw: '{not json', vendor: 'acme' });
      // Every record settled, so every partition is committed to its end.
      expect(await caughtUp(brokers, groupId, topic)).to.equal(true);
    } finally {
      await remove();
    }
  });

  it("gives each record its own message's timestamp, key and headers, whether they repeat the previous message's or not", async () => {
    const { topic, remove } = await createTopic(brokers, 1);
    try {
      const base = Date.UTC(2026, 0, 1);
      const headerSets: Record<string, string>[] = [{ vendor: 'acme' }, { vendor: 'acme', trace: 't1' }, { vendor: 'acmf' }, {}, { vendor: 'café' }];
      // Runs of equal timestamps and headers broken at different places, some keys absent or not ASCII.
      const messages = Array.from({ length: 240 }, (_, i) => ({
        ...(i % 7 !== 3 && { key: i % 11 === 5 ? `clé-${i}` : `k${i}` }),
        value: JSON.stringify({ i }),
        timestamp: String(base + Math.floor(i / 4) * 1000 + (i % 13 === 0 ? 1 : 0)),
        headers: headerSets[Math.floor(i / 3) % headerSets.length]!,
      }));
      await produce(brokers, topic, messages, 60);
      const source = fromKafka({ brokers, groupId: `${topic}-group`, topics: topic, fromBeginning: true, logLevel: 'nothing' });
      const sink = new MemorySink<{ i: number; timestamp: number | undefined; key: string | undefined; headers: Readonly<Record<string, string>> | undefined }>();
      const pipeline = new Pipeline({
        source,
        transform: (records$) => records$.pipe(parse(), map((e: Envelope<any>) => e.map({ i: e.value.i, timestamp: e.meta.timestamp, key: e.meta.key, headers: e.meta.headers }))),
        sink,
        deadLetters: new MemorySink<DeadLetter>('dead'),
        batch: { rows: 50, maxWaitMs: 50 },
      });
      await pipeline.start();
      await until(() => sink.rows.length === messages.length, 60_000, 'every record');
      await pipeline.stop();
      expect(sink.rows.map((r) => r.i)).to.deep.equal(messages.map((_, i) => i));
      for (const [i, row] of sink.rows.entries()) {
        const message = messages[i]!;
        expect({ timestamp: row.timestamp, key: row.key, headers: row.headers }, `message ${i}`).to.deep.equal({ timestamp: Number(message.timestamp), key: message.key, headers: message.headers });
      }
    } finally {
      await remove();
    }
  });

  it('toKafka writes keyed, headed batches acknowledged by the broker, and dead letters with their reason in headers', async () => {
    const { topic: raw, remove: removeRaw } = await createTopic(brokers, 1);
    const { topic: out, remove: removeOut } = await createTopic(brokers, 4);
    const { topic: dead, remove: removeDead } = await createTopic(brokers, 1);
    try {
      await produce(brokers, raw, ['a,1', 'b,2', 'c,x', 'd,4'].map((line) => ({ value: `id,n\n${line}` })));
      const groupId = `${raw}-group`;
      const pipeline = new Pipeline({
        source: fromKafka({ brokers, groupId, topics: raw, fromBeginning: true, logLevel: 'nothing' }),
        transform: (records$) =>
          records$.pipe(
            parse({ format: 'csv' }),
            map((e: Envelope<any>) => {
              if (!/^\d+$/.test(e.value.n)) {
                e.reject({ stage: 'validate', code: 'VALIDATION', message: 'n must be digits', path: '/n' });
              }
              return e.map({ id: e.value.id, n: Number(e.value.n) });
            }),
          ),
        sink: toKafka<{ id: string; n: number }>({ brokers, topic: out, key: (e) => e.value.id, headers: (e) => ({ origin: e.meta.position }), logLevel: 'nothing' }),
        deadLetters: toKafka<DeadLetter>({ brokers, topic: dead, deadLetters: true, logLevel: 'nothing' }),
        batch: { rows: 10, maxWaitMs: 50 },
      });
      await pipeline.start();
      const written = await readAll(brokers, out, 3);
      const letters = await readAll(brokers, dead, 1);
      await until(() => pipeline.stats.written + pipeline.stats.deadLettered === 4, 30_000, 'every record settled');
      await pipeline.stop();
      expect(written.map((m) => JSON.parse(m.value.toString())).sort((a, b) => a.n - b.n)).to.deep.equal([
        { id: 'a', n: 1 },
        { id: 'b', n: 2 },
        { id: 'd', n: 4 },
      ]);
      expect(written.map((m) => m.key).sort()).to.deep.equal(['a', 'b', 'd']);
      expect(written.every((m) => m.headers.origin!.startsWith(`${raw}/0/`))).to.equal(true);
      expect(letters[0]!.value.toString()).to.equal('{"id":"c","n":"x"}');
      expect(letters[0]!.headers).to.include({ 'tributary-stage': 'validate', 'tributary-code': 'VALIDATION', 'tributary-message': 'n must be digits', 'tributary-path': '/n' });
      expect(letters[0]!.headers['tributary-position']).to.equal(`${raw}/0/2#1`);
      expect(await caughtUp(brokers, groupId, raw)).to.equal(true);
    } finally {
      await Promise.all([removeRaw(), removeOut(), removeDead()]);
    }
  });

  it('with batchAlignment, reading the topic again gives the same batches and the same insert tokens, from wherever the replay starts', async () => {
    const { topic, remove } = await createTopic(brokers, 3);
    try {
      await produce(brokers, topic, Array.from({ length: 3000 }, (_, i) => ({ key: String(i), value: JSON.stringify({ n: i }) })));
      const readOnce = async (groupId: string, records: number) => {
        const sink = new MemorySink<unknown>();
        const pipeline = new Pipeline({
          name: 'replay',
          source: fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', batchAlignment: 250 }),
          transform: parse() as any,
          sink,
          deadLetters: new MemorySink<DeadLetter>(),
          // Long enough that no block is ever cut by time while the topic is read (~0.1-0.4 s).
          batch: { rows: 250, maxWaitMs: 2000 },
        });
        await pipeline.start();
        // Every record read; stop() writes the partial batches the wait still holds at once.
        await until(() => pipeline.stats.read === records, 60_000, 'every record');
        await pipeline.stop();
        expect(sink.rows.length).to.equal(records);
        return sink.writes.filter((w) => w.size === 250).map((w) => w.token).sort();
      };
      // A second group stands for the replay: same records, read from the same offsets.
      const first = await readOnce(`${topic}-a`, 3000);
      const second = await readOnce(`${topic}-b`, 3000);
      expect(first.length).to.be.greaterThan(6);
      expect(second).to.deep.equal(first);
      // A replay starts at the last commit, which need not be a block boundary (a partial
      // batch cut by time, a crash between two commits): from offset 100 of each partition,
      // the blocks after the first are the same batches with the same tokens.
      const admin = testKafka(brokers).admin();
      await admin.connect();
      try {
        await admin.setOffsets({ groupId: `${topic}-c`, topic, partitions: [0, 1, 2].map((partition) => ({ partition, offset: '100' })) });
      } finally {
        await admin.disconnect();
      }
      const fromMidBlock = await readOnce(`${topic}-c`, 3000 - 3 * 100);
      expect(fromMidBlock.filter((token) => !first.includes(token)), 'full batches with tokens the first read never wrote').to.deep.equal([]);
      expect(fromMidBlock.length).to.equal(first.length - 3);
    } finally {
      await remove();
    }
  });

  it('with batchAlignment, a batch cut by time, written and never committed is cut at the same record by the next reader, with the same insert token', async () => {
    const { topic, remove } = await createTopic(brokers, 1);
    try {
      const groupId = `${topic}-group`;
      const messages = Array.from({ length: 200 }, (_, i) => ({ key: String(i), value: JSON.stringify({ n: i }) }));
      await produce(brokers, topic, messages.slice(0, 100));
      const options = { brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing' as const, batchAlignment: 1000 };
      // The first reader: its batch of the 100 records there are is cut by time (short of the
      // block of 1000); the write lands, then fails for good, so nothing is committed past it.
      const landedThenFailed = new MemorySink<unknown>();
      landedThenFailed.gate = async () => {
        throw new SinkError('the sink went away after the insert landed');
      };
      const first = new Pipeline({ name: 'cut', source: fromKafka(options), transform: parse() as any, sink: landedThenFailed, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 1000, maxWaitMs: 50 }, retry: { retries: 0 } });
      await first.start();
      const failed = await first.finished().then(() => undefined, (error: Error) => error);
      expect(failed?.message).to.contain('went away');
      expect(landedThenFailed.writes.map((w) => w.size)).to.deep.equal([100]);
      expect([...(await committedOffsets(brokers, groupId, topic)).values()]).to.deep.equal([0]);
      // The partition grows meanwhile: the next reader finds 200 records, and would put them
      // in one batch of its own if it did not know where the first reader cut.
      await produce(brokers, topic, messages.slice(100));
      const sink = new MemorySink<unknown>();
      const second = new Pipeline({ name: 'cut', source: fromKafka(options), transform: parse() as any, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 1000, maxWaitMs: 50 } });
      await second.start();
      await until(() => sink.rows.length === 200, 60_000, 'every record');
      expect(await second.stop()).to.include({ read: 200, written: 200, nacked: 0 });
      expect(sink.writes[0]).to.deep.include({ size: 100, token: landedThenFailed.writes[0]!.token });
      expect(sink.writes.map((w) => w.size).reduce((a, b) => a + b)).to.equal(200);
      expect(await caughtUp(brokers, groupId, topic)).to.equal(true);
    } finally {
      await remove();
    }
  });

  for (const batchAlignment of [false, 10_000] as const) {
    it(`stop() writes the batch it is gathering at once, not after batch.maxWaitMs (10 minutes here), and commits it (batchAlignment: ${batchAlignment})`, async () => {
      // One partition: with batchAlignment, a record of another partition would close the batch.
      const { topic, remove } = await createTopic(brokers, 1);
      try {
        const groupId = `${topic}-group`;
        await produce(brokers, topic, Array.from({ length: 50 }, (_, i) => ({ key: String(i), value: JSON.stringify({ n: i }) })));
        const sink = new MemorySink<unknown>();
        const pipeline = new Pipeline({
          source: fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', batchAlignment }),
          transform: parse() as any,
          sink,
          deadLetters: new MemorySink<DeadLetter>(),
          batch: { rows: 10_000, maxWaitMs: 600_000 },
        });
        await pipeline.start();
        await until(() => pipeline.stats.read === 50, 60_000, 'every record read');
        expect(sink.writes, 'written before the stop: the wait did not hold').to.deep.equal([]);
        // This test's own timeout (3 minutes) is far below the wait: finishing is the proof.
        expect(await pipeline.stop()).to.include({ read: 50, written: 50, nacked: 0 });
        expect(sink.rows).to.have.length(50);
        expect(await caughtUp(brokers, groupId, topic)).to.equal(true);
      } finally {
        await remove();
      }
    });
  }

  it('a nacked record k keeps the committed offset at or below k until k is written or dead-lettered', async () => {
    const { topic, remove } = await createTopic(brokers, 1);
    try {
      await produce(brokers, topic, Array.from({ length: 20 }, (_, i) => ({ value: String(i) })));
      const groupId = `${topic}-group`;
      const commits: { offset: number; at: number }[] = [];
      const source = fromKafka({
        brokers,
        groupId,
        topics: topic,
        fromBeginning: true,
        logLevel: 'nothing',
        instrument: (consumer) =>
          consumer.on(consumer.events.COMMIT_OFFSETS, ({ payload }) => {
            for (const t of payload.topics) for (const p of t.partitions) commits.push({ offset: Number(p.offset), at: received.length });
          }),
      });
      const credits = new Credits({ records: 100 });
      const abort = new AbortController();
      const received: Envelope<Uint8Array>[] = [];
      let letterDone: (() => void) | undefined;
      const settlement: Settlement = {
        deadLetters: { route: (_e, _f, done) => (letterDone = done) },
        ack: (e) => (credits.release(e.bytes), source.settled!(e as Envelope<Uint8Array>)),
        nack: (e, error) => (credits.release(e.bytes), source.settled!(e as Envelope<Uint8Array>, error)),
        reject(e, failure) {
          this.deadLetters.route(e, failure, (error) => this[error ? 'nack' : 'ack'](e, error!));
        },
      };
      const context: SourceContext = {
        credits,
        signal: abort.signal,
        envelope: (value, meta, raw, bytes) => new Envelope(value, meta, raw, bytes, settlement),
        reject: () => expect.fail('nothing is refused by the source'),
      };
      const subscription = source.open(context).subscribe((e) => received.push(e));
      const offsetOf = (e: Envelope<unknown>) => Number(e.meta.position.split('/')[2]);
      await until(() => received.length === 20, 60_000, 'the first delivery');

      // Offset 5 fails; everything else is durable.
      for (const e of received) if (offsetOf(e) !== 5) e.ack();
      received[5]!.nack(new Error('sink down'));
      await until(() => received.length >= 35, 60_000, 'the redelivery from offset 5');
      const redelivered = received.slice(20);
      expect(redelivered.map(offsetOf)).to.deep.equal(Array.from({ length: 15 }, (_, i) => 5 + i));
      expect(redelivered.every((e) => e.meta.attempt === 2)).to.equal(true);
      await until(() => commits.length > 0, 30_000, 'the commit of what came before 5');
      expect((await committedOffsets(brokers, groupId, topic)).get(0)).to.equal(5);

      // Second time round, 5 goes to the dead-letter sink, which takes its time; the rest is written.
      redelivered[0]!.reject({ stage: 'sink', code: 'X', message: 'poison', path: '' });
      for (const e of redelivered.slice(1)) e.ack();
      await until(() => letterDone !== undefined, 5000, 'the dead-letter write');
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect((await committedOffsets(brokers, groupId, topic)).get(0)).to.equal(5);
      const beforeLetter = commits.length;
      letterDone!();
      await until(() => commits.some((c) => c.offset === 20), 30_000, 'the commit past 5');
      expect((await committedOffsets(brokers, groupId, topic)).get(0)).to.equal(20);
      // No commit ever went past 5 before its dead letter was durable.
      expect(commits.slice(0, beforeLetter).every((c) => c.offset <= 5), JSON.stringify(commits)).to.equal(true);
      abort.abort();
      await until(() => subscription.closed, 30_000, 'the source to complete');
    } finally {
      await remove();
    }
  });

  it('with the sink blocked, fetches no further than its credit and one fetch (it waits in the fetched batch); released, reads everything once, nothing fetched twice', async () => {
    const { topic, remove } = await createTopic(brokers, 2);
    const groupId = `${topic}-group`;
    let release!: () => void;
    const open = new Promise<void>((resolve) => (release = resolve));
    let pipeline: Pipeline<{ n: number }> | undefined;
    try {
      const total = 4000;
      const pad = 'x'.repeat(60);
      // Produced 40 at a time: the broker keeps record batches of about 20 per partition,
      // and a fetch returns whole record batches up to maxBytesPerPartition (2 KiB here).
      await produce(brokers, topic, Array.from({ length: total }, (_, i) => ({ key: String(i), value: JSON.stringify({ n: i, pad }) })), 40);
      // What the consumer took from the broker (every message of every fetched batch handed
      // to the source) and what the source emitted: counted apart from the credit gauge.
      let fetched = 0;
      let emitted = 0;
      const source = fromKafka({
        brokers,
        groupId,
        topics: topic,
        fromBeginning: true,
        logLevel: 'nothing',
        maxBytesPerPartition: 2048,
        instrument: (consumer) => consumer.on(consumer.events.START_BATCH_PROCESS, ({ payload }) => (fetched += payload.batchSize)),
      });
      const sink = new MemorySink<{ n: number }>();
      sink.gate = () => open;
      const budget = 200;
      pipeline = new Pipeline({
        source,
        transform: (records$) => records$.pipe(map((e: Envelope<Uint8Array>) => (emitted++, e)), parse()) as any,
        sink,
        deadLetters: new MemorySink<DeadLetter>(),
        batch: { rows: 50, maxWaitMs: 20 },
        inFlight: { records: budget },
      });
      await pipeline.start();
      await until(() => sink.writes.length > 0 && emitted >= budget, 30_000, 'the budget spent on a blocked sink');
      // A consumer that ignored its credit, or kept fetching while it waits, would fetch on
      // every maxWaitMs (100 ms) meanwhile.
      await delay(1000);
      const [fetchedWhileBlocked, emittedWhileBlocked] = [fetched, emitted];
      expect(emittedWhileBlocked, 'records emitted while the sink was blocked').to.equal(budget);
      // The budget, plus the rest of the one fetch whose records ran out of credit: per
      // partition at most 2 KiB of ~90-byte messages or one record batch of ~20.
      expect(fetchedWhileBlocked, `messages fetched while the sink was blocked (of ${total})`).to.be.at.most(budget + 2 * 25);

      release();
      await until(() => sink.rows.length >= total, 60_000, 'every record');
      const stats = await pipeline.stop();
      expect(await caughtUp(brokers, groupId, topic), 'the group committed to the end').to.equal(true);
      expect(sink.rows.length, 'records stored').to.equal(total);
      expect(new Set(sink.rows.map((r) => r.n)).size, 'distinct records stored').to.equal(total);
      expect(stats).to.include({ read: total, written: total, deadLettered: 0, nacked: 0 });
      // The records left in a batch when credit ran out were kept, not dropped and fetched again.
      expect(fetched, 'messages fetched').to.equal(total);
    } finally {
      release();
      await pipeline?.stop().catch(() => undefined);
      await remove();
    }
  });

  it('loses nothing when the broker restarts during consumption', async () => {
    const { topic, remove } = await createTopic(brokers, 3);
    const clickhouse = testClickHouse();
    const table = `kafka_restart_${Date.now()}`;
    try {
      await clickhouse.exec(`CREATE TABLE ${table} (id UInt64, position String) ENGINE = ReplacingMergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 1000`);
      const total = 20_000;
      await produce(brokers, topic, Array.from({ length: total }, (_, i) => ({ key: String(i), value: JSON.stringify({ id: i }) })));
      const groupId = `${topic}-group`;
      const sink = toClickHouse<{ id: number; position: string }>({ client: clickhouse, table });
      const pipeline = new Pipeline({
        source: fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', batchAlignment: 500 }),
        transform: (records$) => records$.pipe(parse(), map((e: Envelope<any>) => e.map({ id: e.value.id, position: e.meta.position }))),
        sink: {
          name: sink.name,
          // Slow enough that the restart lands mid-stream.
          write: async (batch, context) => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            await sink.write(batch, context);
          },
        },
        deadLetters: new MemorySink<DeadLetter>(),
        batch: { rows: 500, maxWaitMs: 100 },
        inFlight: { records: 2000 },
      });
      await pipeline.start();
      await until(() => pipeline.stats.written >= 3000, 60_000, 'consumption under way');
      await stopKafka();
      // The broker is gone mid-stream: part of the topic is not even read yet, so the rest
      // can only arrive through the consumer's reconnection to the restarted broker.
      const atStop = { ...pipeline.stats };
      try {
        expect(atStop.written).to.be.greaterThan(0);
        expect(atStop.read, 'records read when the broker stopped').to.be.lessThan(total);
      } finally {
        await startKafka();
      }
      await until(() => pipeline.stats.written >= total, 150_000, 'every record after the restart');
      await until(() => pipeline.stats.inFlightRecords === 0, 30_000, 'nothing in flight');
      // Commits resume after the restart, up to the end of every partition.
      for (let i = 0; !(await caughtUp(brokers, groupId, topic).catch(() => false)); i++) {
        if (i > 300) expect.fail('the group never committed the end of the topic after the restart');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await pipeline.stop();
      const [row] = await clickhouse.query<Record<string, number>>(`SELECT uniqExact(id) AS distinct, min(id) AS min, max(id) AS max FROM ${table}`);
      expect(row).to.deep.equal({ distinct: total, min: 0, max: total - 1 });
    } finally {
      await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
      await remove();
    }
  });
});
