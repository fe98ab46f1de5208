import { randomUUID } from 'node:crypto';
import type { Admin, ITopicConfig, Kafka, Message } from 'kafkajs';

/** A kafkajs client for test set-up and checks (not the code under test). */
export function testKafka(brokers: string[]): Kafka {
  const { Kafka, logLevel } = require('kafkajs') as typeof import('kafkajs');
  return new Kafka({ brokers, clientId: 'tributary-test', logLevel: logLevel.NOTHING });
}

/** A fresh, uniquely named topic (with topic-level `config`, e.g. `max.message.bytes`); removed by the returned function. */
export async function createTopic(brokers: string[], partitions = 1, prefix = 'test', config: Readonly<Record<string, string>> = {}): Promise<{ topic: string; remove: () => Promise<void> }> {
  const topic = `${prefix}-${randomUUID().slice(0, 8)}`;
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    const configEntries = Object.entries(config).map(([name, value]) => ({ name, value }));
    await createServedTopics(admin, [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries }]);
  } finally {
    await admin.disconnect();
  }
  return {
    topic,
    remove: async () => {
      const a = testKafka(brokers).admin();
      await a.connect();
      await a.deleteTopics({ topics: [topic] }).catch(() => undefined);
      await a.disconnect();
    },
  };
}

/**
 * Creates topics and resolves once every partition's leader serves them: a produce or
 * fetch after it finds the topic. Not kafkajs's `waitForLeaders`: that polls the broker's
 * metadata and retries only LEADER_NOT_AVAILABLE, but a KRaft broker learns of a topic
 * from the controller's metadata log a moment after the controller answered CreateTopics,
 * and until then answers UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this
 * topic-partition"), which createTopics throws: the kafka-sink set-up race. Then each
 * partition's leader must answer ListOffsets: a broker with the metadata may not lead the
 * partition yet ("This server is not the leader for that topic-partition").
 */
export async function createServedTopics(admin: Admin, topics: ITopicConfig[]): Promise<void> {
  await admin.createTopics({ topics, waitForLeaders: false });
  for (const { topic } of topics) await served(admin, topic);
}

/** Waits until every partition's leader answers ListOffsets for the topic. */
async function served(admin: Admin, topic: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await admin.fetchTopicOffsets(topic);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** Produces messages with an idempotent producer, in chunks, acknowledged by the broker. */
/** Produces `messages` in sends of `chunk`, waiting `pauseMs` between sends (a trickle, when small). */
export async function produce(brokers: string[], topic: string, messages: Message[], chunk = 1000, pauseMs = 0): Promise<void> {
  const { Partitioners } = require('kafkajs') as typeof import('kafkajs');
  const producer = testKafka(brokers).producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += chunk) {
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + chunk) });
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  } finally {
    await producer.disconnect();
  }
}

/** The group's committed offset per partition (-1 when none). */
export async function committedOffsets(brokers: string[], groupId: string, topic: string): Promise<Map<number, number>> {
  return withAdmin(brokers, async (admin) => {
    const [result] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map(result!.partitions.map((p) => [p.partition, Number(p.offset)]));
  });
}

/** The topic's end offset per partition. */
export async function endOffsets(brokers: string[], topic: string): Promise<Map<number, number>> {
  return withAdmin(brokers, async (admin) => new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)])));
}

/** True when the group has committed everything the topic holds. */
export async function caughtUp(brokers: string[], groupId: string, topic: string): Promise<boolean> {
  const [committed, ends] = await Promise.all([committedOffsets(brokers, groupId, topic), endOffsets(brokers, topic)]);
  for (const [partition, end] of ends) if ((committed.get(partition) ?? -1) < end) return false;
  return true;
}

async function withAdmin<R>(brokers: string[], work: (admin: Admin) => Promise<R>): Promise<R> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Reads every message of a topic from the beginning, until `count` are read. */
export async function readAll(brokers: string[], topic: string, count: number, timeoutMs = 60_000): Promise<{ key: string | undefined; value: Buffer; headers: Record<string, string>; partition: number }[]> {
  const consumer = testKafka(brokers).consumer({ groupId: `reader-${randomUUID()}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const read: { key: string | undefined; value: Buffer; headers: Record<string, string>; partition: number }[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${read.length} of ${count} messages from ${topic} within ${timeoutMs} ms`)), timeoutMs);
      consumer
        .run({
          eachMessage: async ({ message, partition }) => {
            const headers: Record<string, string> = {};
            for (const [name, value] of Object.entries(message.headers ?? {})) headers[name] = String(value);
            read.push({ key: message.key?.toString(), value: message.value ?? Buffer.alloc(0), headers, partition });
            if (read.length >= count) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return read;
}
