/**
 * What the three processes of the topology share: topic and group names, the broker
 * address, how a process run with `--until-idle` knows its input is done, and, for a
 * process run as a service, its probes and metrics and how long it drains when stopped.
 */
import { Kafka, logLevel } from 'kafkajs';
import { serveMetrics, type Pipeline } from '../../index';

export interface TopologySettings {
  brokers: string[];
  /** Prefix of the topics and groups, so several topologies can share a broker. */
  prefix: string;
  /** Exit once the group has committed everything its input topic holds (tests, batch runs). */
  untilIdle: boolean;
  /** Serve `/metrics`, `/health` and `/ready` on this port (none when undefined). */
  metricsPort: number | undefined;
  /** Address the metrics server listens on; `0.0.0.0` in a container, so probes reach it. */
  metricsHost: string;
  /**
   * On SIGTERM, how long writes of records already read are retried before they are
   * nacked (read again by the next owner of their partition); keep it below the
   * orchestrator's grace period so the process commits and leaves its group itself.
   */
  drainMs: number;
}

/** The flags that take a value, so stages can tell them from file arguments. */
export const VALUE_FLAGS = ['--brokers', '--prefix', '--metrics-port', '--metrics-host', '--drain-ms', '--clickhouse-url'];

/**
 * `--brokers host:port,… --prefix name --until-idle --metrics-port 9464 --metrics-host 0.0.0.0
 * --drain-ms 20000`; the environment gives defaults (`KAFKA_BROKERS`, else 127.0.0.1 on
 * `KAFKA_PORT`, else 19092: where `scripts/services/kafka.sh` runs Kafka; `TOPOLOGY_*`).
 */
export function settingsFromArgs(argv = process.argv.slice(2)): TopologySettings {
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const metricsPort = value('--metrics-port') ?? process.env.TOPOLOGY_METRICS_PORT;
  return {
    brokers: (value('--brokers') ?? process.env.KAFKA_BROKERS ?? `127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`).split(','),
    prefix: value('--prefix') ?? process.env.TOPOLOGY_PREFIX ?? 'bookings',
    untilIdle: argv.includes('--until-idle'),
    metricsPort: metricsPort === undefined ? undefined : Number(metricsPort),
    metricsHost: value('--metrics-host') ?? process.env.TOPOLOGY_METRICS_HOST ?? '127.0.0.1',
    drainMs: Number(value('--drain-ms') ?? process.env.TOPOLOGY_DRAIN_MS ?? 20_000),
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
 * Serves the pipelines' probes and metrics when asked, stops them on SIGTERM/SIGINT (each
 * drain bounded by `drainMs`), or once idle with `--until-idle`; prints their stats.
 */
export async function runUntilStopped(
  settings: TopologySettings,
  pipelines: { name: string; pipeline: Pipeline<any>; groupId: string; topic: string }[],
): Promise<void> {
  const metrics = settings.metricsPort === undefined ? undefined : await serveMetrics(pipelines.map((p) => p.pipeline), { host: settings.metricsHost, port: settings.metricsPort });
  for (const { pipeline } of pipelines) await pipeline.start();
  const stopAll = async () => {
    // One deadline for the whole process, so its drain fits the grace period whatever the count.
    const deadline = Date.now() + settings.drainMs;
    const failures: unknown[] = [];
    for (const { name, pipeline } of pipelines) {
      // A drain that gave up rejects with the sink's error; stop the others all the same.
      await pipeline.stop({ timeoutMs: Math.max(0, deadline - Date.now()) }).then(
        (stats) => console.log(`${name}: ${JSON.stringify(stats)}`),
        (error: unknown) => failures.push(error),
      );
    }
    await metrics?.close();
    if (failures.length > 0) throw failures[0];
  };
  if (settings.untilIdle) {
    for (const { groupId, topic } of pipelines) await idle(settings, groupId, [topic]);
    await stopAll();
    return;
  }
  await new Promise<void>((resolve, reject) => {
    const stop = () => void stopAll().then(resolve, reject);
    process.once('SIGTERM', stop).once('SIGINT', stop);
  });
}
