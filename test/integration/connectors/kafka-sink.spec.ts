import { expect } from 'chai';
import { toKafka } from '../../../connectors/kafka';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, observed, until } from '../../helpers';
import { createTopic, readAll } from '../../kafka';
import { ensureKafka, startKafka, stopKafka } from '../../services';

/** murmur2 as the Java client computes it, which kafkajs' default partitioner follows. */
const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (key: string | Buffer) => number;
const partitionOf = (key: string, partitions: number) => (murmur2(key) & 0x7fffffff) % partitions;

/** An async iterable fed by the test: items pushed are read in order; `end()` finishes it. */
function feed<T>(): AsyncIterable<T> & { push: (...items: T[]) => void; end: () => void } {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push: (...items) => (queue.push(...items), wake?.()),
    end: () => ((ended = true), wake?.()),
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queue.length > 0) yield queue.shift()!;
        else if (ended) return;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

describe('toKafka against a real broker', function () {
  this.timeout(120_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('fans out by a topic function and keeps each key on one partition, the one murmur2 picks', async () => {
    const { topic: even, remove: removeEven } = await createTopic(brokers, 4, 'even');
    const { topic: odd, remove: removeOdd } = await createTopic(brokers, 4, 'odd');
    try {
      const total = 2000;
      const records = Array.from({ length: total }, (_, n) => ({ n, account: `acct-${n % 37}` }));
      const pipeline = new Pipeline({
        source: fromIterable(records),
        sink: toKafka<{ n: number; account: string }>({ brokers, topic: (e) => (e.value.n % 2 === 0 ? even : odd), key: (e) => e.value.account, logLevel: 'nothing' }),
        deadLetters: new MemorySink<DeadLetter>(),
        batch: { rows: 100, maxWaitMs: 20 },
      });
      const stats = await pipeline.run();
      expect(stats).to.include({ read: total, written: total, nacked: 0 });
      const [evens, odds] = await Promise.all([readAll(brokers, even, total / 2), readAll(brokers, odd, total / 2)]);
      for (const [messages, parity] of [[evens, 0], [odds, 1]] as const) {
        const values = messages.map((m) => JSON.parse(m.value.toString()) as { n: number; account: string });
        expect(values.every((v) => v.n % 2 === parity)).to.equal(true);
        expect(new Set(values.map((v) => v.n)).size).to.equal(total / 2);
        const partitionsByKey = new Map<string, Set<number>>();
        for (const m of messages) {
          expect(m.key).to.equal(JSON.parse(m.value.toString()).account);
          let seen = partitionsByKey.get(m.key!);
          if (!seen) partitionsByKey.set(m.key!, (seen = new Set()));
          seen.add(m.partition);
        }
        expect(partitionsByKey.size).to.be.greaterThan(30);
        for (const [key, partitions] of partitionsByKey) expect([...partitions], key).to.deep.equal([partitionOf(key, 4)]);
        // The keys spread: every partition holds some.
        expect(new Set(messages.map((m) => m.partition)).size).to.equal(4);
      }
    } finally {
      await Promise.all([removeEven(), removeOdd()]);
    }
  });

  it('acks nothing while the broker is down, and every record once it is back', async () => {
    const { topic, remove } = await createTopic(brokers, 2, 'outage');
    const items = feed<{ n: number }>();
    const source = observed(fromIterable(items));
    const failedWrites: string[] = [];
    const pipeline = new Pipeline({
      source,
      sink: toKafka<{ n: number }>({ brokers, topic, key: (e) => String(e.value.n), logLevel: 'nothing', kafka: { retry: { retries: 2, initialRetryTime: 100 }, requestTimeout: 3000, connectionTimeout: 1000 } }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 20 },
      retry: { maxDelayMs: 1000 },
    });
    pipeline.on('sink.write', ({ payload }) => payload.error && payload.stage === 'sink' && failedWrites.push(payload.error.code));
    let stopped = false;
    try {
      await pipeline.start();
      items.push(...Array.from({ length: 10 }, (_, n) => ({ n })));
      await until(() => source.acked.length === 10, 30_000, 'the first ten acked');

      await stopKafka();
      stopped = true;
      items.push(...Array.from({ length: 10 }, (_, i) => ({ n: 10 + i })));
      await until(() => failedWrites.length >= 2, 60_000, 'writes failing while the broker is down');
      expect(source.acked.length).to.equal(10);
      expect(source.nacked).to.deep.equal([]);
      expect(pipeline.stats.inFlightRecords).to.equal(10);

      await startKafka();
      stopped = false;
      await until(() => source.acked.length === 20, 60_000, 'the ten written after the broker came back');
      expect(source.nacked).to.deep.equal([]);
      const read = await readAll(brokers, topic, 20);
      // A failed attempt may have landed before its answer was lost: at least once, never less.
      expect(new Set(read.map((m) => JSON.parse(m.value.toString()).n)).size).to.equal(20);
      items.end();
      expect(await pipeline.stop()).to.include({ read: 20, written: 20, nacked: 0 });
    } finally {
      items.end();
      if (stopped) await startKafka();
      await pipeline.stop().catch(() => undefined);
      await remove();
    }
  });

  it('nacks, never acks, a batch the broker could not take when the pipeline stops retrying', async () => {
    const { topic, remove } = await createTopic(brokers, 1, 'outage');
    const items = feed<{ n: number }>();
    const source = observed(fromIterable(items));
    const pipeline = new Pipeline({
      source,
      sink: toKafka<{ n: number }>({ brokers, topic, logLevel: 'nothing', kafka: { retry: { retries: 1, initialRetryTime: 100 }, requestTimeout: 3000, connectionTimeout: 1000 } }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 5, maxWaitMs: 20 },
      retry: { retries: 1, maxDelayMs: 200 },
    });
    let stopped = false;
    try {
      await pipeline.start();
      items.push(...Array.from({ length: 5 }, (_, n) => ({ n })));
      await until(() => source.acked.length === 5, 30_000, 'the first five acked');
      await stopKafka();
      stopped = true;
      items.push(...Array.from({ length: 5 }, (_, i) => ({ n: 5 + i })));
      await until(() => source.nacked.length === 5, 60_000, 'the five nacked');
      expect(source.acked.length).to.equal(5);
      expect(source.nacked.map((x) => x.position)).to.deep.equal(Array.from({ length: 5 }, (_, i) => `iterable@${6 + i}`));
      // A sink that stayed down is an infrastructure failure: the pipeline stops rather than drop them.
      await until(() => pipeline.state === 'failed', 30_000, 'the pipeline to fail');
    } finally {
      items.end();
      if (stopped) await startKafka();
      await pipeline.stop().catch(() => undefined);
      await remove();
    }
  });
});
