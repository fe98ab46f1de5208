/**
 * What the three processes of the topology share: topic and group names, the broker
 * address, and how a process run with `--until-idle` knows its input is done.
 */
import { Kafka, logLevel } from 'kafkajs';
import type { StopOptions } from '../../lib/pipeline';

export interface TopologySettings {
  brokers: string[];
  /** Prefix of the topics and groups, so several topologies can share a broker. */
  prefix: string;
  /** Exit once the group has committed everything its input topic holds (tests, batch runs). */
  untilIdle: boolean;
}

/**
 * `--brokers host:port,… --prefix name --until-idle`; the environment gives defaults
 * (`KAFKA_BROKERS`, else 127.0.0.1 on `KAFKA_PORT`, else 19092: where
 * `scripts/services/kafka.sh` runs Kafka).
 */
export function settingsFromArgs(argv = process.argv.slice(2)): TopologySettings {
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return {
    brokers: (value('--brokers') ?? process.env.KAFKA_BROKERS ?? `127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`).split(','),
    prefix: value('--prefix') ?? process.env.TOPOLOGY_PREFIX ?? 'bookings',
    untilIdle: argv.includes('--until-idle'),
  };
}

export const topics = (prefix: string) => ({
  /** Vendor records as they arrived, JSON, with a `vendor` header. */
  raw: `${prefix}.raw`,
  /** Unified, validated bookings keyed by booking id. */
  clean: `${prefix}.clean`,
  /** Refused records as received, the reason in `tributary-*` headers. */
  dead: `${prefix}.dead`,
});

/** Creates the topics if missing: six partitions each, so each stage can run up to six instances. */
export async function ensureTopics(settings: TopologySettings): Promise<void> {
  const admin = new Kafka({ brokers: settings.brokers, clientId: 'topology', logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: Object.values(topics(settings.prefix)).map((topic) => ({ topic, numPartitions: 6 })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** Resolves once `groupId` has committed the end of every partition of `topicNames`, checked every `everyMs`. */
export async function idle(settings: TopologySettings, groupId: string, topicNames: string[], everyMs = 500): Promise<void> {
  const admin = new Kafka({ brokers: settings.brokers, clientId: 'topology', logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    for (;;) {
      let done = true;
      for (const topic of topicNames) {
        const [ends, [committed]] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
        const at = new Map(committed!.partitions.map((p) => [p.partition, Number(p.offset)]));
        if (ends.some((p) => Number(p.high) > (at.get(p.partition) ?? -1) && Number(p.high) > 0)) done = false;
      }
      if (done) return;
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  } finally {
    await admin.disconnect();
  }
}

/**
 * How long a stop on SIGTERM waits for writes under way: a sink that stays down (or a
 * dead letter it keeps refusing) must not keep the process from ending. What is still
 * in flight then is nacked, read again from the last commit, and the stop says so.
 */
export const STOP_TIMEOUT_MS = 30_000;

/** Stops the pipelines on SIGTERM/SIGINT, or once idle with `--until-idle`; prints their stats. */
export async function runUntilStopped(
  settings: TopologySettings,
  pipelines: { name: string; pipeline: { start(): Promise<void>; stop(options?: StopOptions): Promise<unknown> }; groupId: string; topic: string }[],
): Promise<void> {
  for (const { pipeline } of pipelines) await pipeline.start();
  const stopAll = async () => {
    for (const { name, pipeline } of pipelines) {
      const stats = await pipeline.stop({ timeoutMs: STOP_TIMEOUT_MS }).catch((error: unknown) => `gave up: ${(error as Error).message}`);
      console.log(`${name}: ${JSON.stringify(stats)}`);
    }
  };
  if (settings.untilIdle) {
    for (const { groupId, topic } of pipelines) await idle(settings, groupId, [topic]);
    await stopAll();
    return;
  }
  await new Promise<void>((resolve) => {
    const stop = () => void stopAll().then(resolve);
    process.once('SIGTERM', stop).once('SIGINT', stop);
  });
}
