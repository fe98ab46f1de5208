import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { fromIterable } from '../../../connectors/iterable';
import { fromKafka, toKafka } from '../../../connectors/kafka';
import { permanentRefusal } from '../../../connectors/kafka/sink';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { delay, MemorySink, until } from '../../helpers';
import { caughtUp, createTopic, produce, readAll, testKafka } from '../../kafka';
import { ensureKafka } from '../../services';

/** A topic that refuses messages over `maxMessageBytes`; removed by the returned function. */
function smallTopic(brokers: string[], maxMessageBytes: number): Promise<{ topic: string; remove: () => Promise<void> }> {
  return createTopic(brokers, 1, 'small', { 'max.message.bytes': String(maxMessageBytes) });
}

async function deleteTopic(brokers: string[], topic: string): Promise<void> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
}

describe('Kafka: missing topics are waited for, permanent refusals never stall a pipeline', function () {
  this.timeout(120_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('fromKafka waits for a topic that does not exist yet, not ready meanwhile, and reads it once it is there', async () => {
    const topic = `later-${randomUUID().slice(0, 8)}`;
    const sink = new MemorySink<Uint8Array>();
    const pipeline = new Pipeline({
      source: fromKafka({ brokers, groupId: `g-${topic}`, topics: topic, fromBeginning: true, logLevel: 'nothing', maxWaitMs: 50 }),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 20 },
    });
    try {
      await pipeline.start();
      await delay(1500);
      expect(pipeline.state).to.equal('running');
      expect(pipeline.readiness()).to.deep.include({ ready: false, reasons: ['source kafka is not connected'] });
      await produce(brokers, topic, Array.from({ length: 10 }, (_, n) => ({ value: `m${n}` })));
      await until(() => sink.rows.length === 10, 60_000, 'the records of the topic created later');
      expect(pipeline.readiness().ready).to.equal(true);
    } finally {
      const stats = await pipeline.stop();
      await deleteTopic(brokers, topic);
      expect(stats).to.include({ read: 10, written: 10, nacked: 0 });
    }
  });

  it('fromKafka dead-letters a message over maxRecordBytes as it is read, with the code and message of every entry, and commits past it', async () => {
    const { topic, remove } = await createTopic(brokers, 1);
    const groupId = `${topic}-group`;
    const sink = new MemorySink<unknown>();
    const deadLetters = new MemorySink<DeadLetter>();
    const big = JSON.stringify({ id: 'big', pad: 'x'.repeat(3000) });
    // Parsed, as it would be; the refusal comes before parse could meet the big one.
    const pipeline = new Pipeline({
      source: fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing', maxRecordBytes: 1024 }),
      transform: parse() as any,
      sink,
      deadLetters,
      batch: { rows: 10, maxWaitMs: 20 },
      deadLetterBatch: { maxWaitMs: 1 },
    });
    try {
      await produce(brokers, topic, [{ value: '{"id":"a"}' }, { value: big }, { value: '{"id":"b"}' }]);
      await pipeline.start();
      await until(() => pipeline.stats.written + pipeline.stats.deadLettered === 3, 30_000, 'the three messages settled');
      const stats = await pipeline.stop();
      expect(sink.rows).to.deep.equal([{ id: 'a' }, { id: 'b' }]);
      const [letter] = deadLetters.rows;
      expect([letter!.stage, letter!.code, letter!.message, letter!.position]).to.deep.equal(['source', 'RECORD_TOO_LARGE', `message ${topic}/0/1 is longer than 1024 bytes`, `${topic}/0/1`]);
      expect([letter!.raw, letter!.raw_bytes]).to.deep.equal([big, Buffer.byteLength(big)]);
      expect(stats).to.include({ read: 3, written: 2, deadLettered: 1, nacked: 0 });
      expect(await caughtUp(brokers, groupId, topic), 'committed past the dead-lettered message').to.equal(true);
    } finally {
      await pipeline.stop().catch(() => undefined);
      await remove();
    }
  });

  it('fromKafka creates a missing topic when told to', async () => {
    const topic = `created-${randomUUID().slice(0, 8)}`;
    const sink = new MemorySink<Uint8Array>();
    const pipeline = new Pipeline({
      source: fromKafka({ brokers, groupId: `g-${topic}`, topics: topic, fromBeginning: true, logLevel: 'nothing', maxWaitMs: 50, createTopics: { partitions: 3 } }),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 20 },
    });
    try {
      await pipeline.start();
      await until(() => pipeline.readiness().ready, 60_000, 'the source to join its group');
      const admin = testKafka(brokers).admin();
      await admin.connect();
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] }).finally(() => admin.disconnect());
      expect(metadata.topics[0]!.partitions).to.have.length(3);
      await produce(brokers, topic, Array.from({ length: 6 }, (_, n) => ({ key: `k${n}`, value: `m${n}` })));
      await until(() => sink.rows.length === 6, 60_000, 'the records');
    } finally {
      await pipeline.stop();
      await deleteTopic(brokers, topic);
    }
  });

  it('toKafka: a record too large for its topic is dead-lettered, and a dead letter too large for its topic is written reduced', async () => {
    const clean = await smallTopic(brokers, 4000);
    const dead = await smallTopic(brokers, 4000);
    try {
      const big = 'x'.repeat(20_000);
      const records = ['a', 'b', big, 'c'];
      const pipeline = new Pipeline<string>({
        name: 'oversize',
        source: fromIterable(records),
        sink: toKafka<string>({ brokers, topic: clean.topic, logLevel: 'nothing' }),
        deadLetters: toKafka<DeadLetter>({ brokers, topic: dead.topic, deadLetters: true, logLevel: 'nothing' }),
        batch: { rows: 10, maxWaitMs: 20 },
        // Old behaviour, every produce failure retriable, fails here instead of retrying for ever.
        retry: { retries: 3, initialDelayMs: 10, maxDelayMs: 50 },
      });
      const stats = await pipeline.run();
      expect(stats).to.include({ read: 4, written: 3, deadLettered: 1, nacked: 0 });
      const written = await readAll(brokers, clean.topic, 3);
      expect(written.map((m) => m.value.toString()).sort()).to.deep.equal(['a', 'b', 'c']);
      const [letter] = await readAll(brokers, dead.topic, 1);
      expect(letter!.headers).to.include({ 'tributary-stage': 'sink', 'tributary-raw-bytes': '20000' });
      expect(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']).to.include(letter!.headers['tributary-code']);
      expect(letter!.headers['tributary-raw-sha256']).to.match(/^[0-9a-f]{64}$/);
      expect(letter!.value.toString()).to.equal('x'.repeat(1024));
    } finally {
      await Promise.all([clean.remove(), dead.remove()]);
    }
  });

  it('tells permanent produce refusals from transient ones, wherever kafkajs wraps them', () => {
    const tooLarge = Object.assign(new Error('The request included a message larger than the max message size the server will accept'), { type: 'MESSAGE_TOO_LARGE', retriable: false });
    expect(permanentRefusal(tooLarge)).to.deep.equal({ type: 'MESSAGE_TOO_LARGE', messagesAtFault: true });
    expect(permanentRefusal(new Error('retries spent', { cause: tooLarge }))).to.deep.equal({ type: 'MESSAGE_TOO_LARGE', messagesAtFault: true });
    expect(permanentRefusal(Object.assign(new Error('aggregate'), { errors: [new Error('x'), { type: 'TOPIC_AUTHORIZATION_FAILED' }] }))).to.deep.equal({ type: 'TOPIC_AUTHORIZATION_FAILED', messagesAtFault: false });
    expect(permanentRefusal(Object.assign(new Error('leader moved'), { type: 'NOT_LEADER_FOR_PARTITION', retriable: true }))).to.equal(undefined);
    expect(permanentRefusal(Object.assign(new Error('retries spent'), { retriable: false }))).to.equal(undefined);
  });
});
