/**
 * What the three processes of the topology share: their command line, topic and group
 * names, the broker address, how a process run with `--until-idle` knows its input is
 * done, and, for a process run as a service, its probes, metrics and progress lines and
 * how long it drains when stopped.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Kafka, logLevel } from 'kafkajs';
import { serveMetrics, type Envelope, type Pipeline } from '../../index';
import type { FromKafkaOptions } from '../../connectors/kafka';

export interface TopologySettings {
  brokers: string[];
  /** Prefix of the topics and groups, so several topologies can share a broker. */
  prefix: string;
  /** Partitions of each topic when this process creates it (an existing topic keeps its own). */
  partitions: number;
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
  /** How often a progress line (counts, lag, readiness) is printed; 0 for none. */
  progressMs: number;
  /** Consumer group timing, for the stages that consume. */
  consumer: Required<Pick<FromKafkaOptions, 'sessionTimeoutMs' | 'heartbeatIntervalMs' | 'rebalanceTimeoutMs'>>;
}

const integer = (min: number, max = Number.MAX_SAFE_INTEGER) => (value: string) => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
  return n;
};

const brokerList = (value: string) => {
  const brokers = value.split(',').map((b) => b.trim());
  if (!brokers.every((b) => /^[^\s:]+:\d+$/.test(b))) throw new InvalidArgumentError("expected host:port[,host:port…]");
  return brokers;
};

const TOPICS_HELP = `
Topics (made by whichever stage starts first, --partitions each, before anything is produced):
  <prefix>.raw    one vendor record per message: JSON, the record as read from its file
                  (CSV rows and XML records as objects of their fields); header "vendor";
                  key: the record's position in its file
  <prefix>.clean  one validated booking per message, JSON in the unified model;
                  key "<vendor>:<booking_id>"
  <prefix>.dead   each refused record as received, the reason in headers tributary-stage,
                  -code, -message, -path, -pipeline, -source, -position, -vendor,
                  -raw-bytes, -raw-sha256, -received-at, -failed-at
  Every message also carries its record's identity, given by ingest and passed on:
  headers tributary-origin-position ("<file>@<offset>#<sha256 prefix>") and
  tributary-origin-time. Storage writes each identity once, so replays and files
  ingested again add no rows.
Consumer groups: <prefix>.normalize reads .raw; <prefix>.store reads .clean;
  <prefix>.store-dead reads .dead. The instances of a stage share their topic's partitions.
Exit codes: 0 stopped (SIGTERM/SIGINT, --until-idle, files read); 1 failed; 2 bad command line.`;

/**
 * A stage's command line: the options every stage takes (broker, prefix, metrics, drain,
 * progress) and, with `consumer`, the consumer group's timing and `--until-idle`. Each
 * option may also come from the environment variable its help names.
 */
export function stageCommand(name: string, description: string, { consumer }: { consumer: boolean }): Command {
  const command = new Command(name)
    .description(description)
    .helpOption('-h, --help', 'show help')
    .showHelpAfterError(`(${name} --help lists the options)`)
    .addOption(
      new Option('--brokers <host:port,...>', 'Kafka bootstrap brokers')
        .env('KAFKA_BROKERS')
        .argParser(brokerList)
        .default([`127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`], '127.0.0.1:$KAFKA_PORT, else 127.0.0.1:19092'),
    )
    .addOption(new Option('--prefix <name>', 'prefix of the topics and consumer groups').env('TOPOLOGY_PREFIX').default('bookings'))
    .addOption(new Option('--partitions <n>', 'partitions of each topic this stage creates (the most instances a stage can use)').env('TOPOLOGY_PARTITIONS').argParser(integer(1, 10_000)).default(6))
    .addOption(new Option('--metrics-port <port>', 'serve /metrics, /health and /ready on this port (0: any free port; none when unset)').env('TOPOLOGY_METRICS_PORT').argParser(integer(0, 65535)))
    .addOption(new Option('--metrics-host <address>', 'address the metrics server listens on (0.0.0.0 in a container)').env('TOPOLOGY_METRICS_HOST').default('127.0.0.1'))
    .addOption(new Option('--drain-ms <ms>', "on SIGTERM/SIGINT, longest wait for records in flight to be written before they are left for the partition's next owner").env('TOPOLOGY_DRAIN_MS').argParser(integer(0)).default(20_000))
    .addOption(new Option('--progress-ms <ms>', 'print a progress line (counts, lag, readiness) this often; 0: never').env('TOPOLOGY_PROGRESS_MS').argParser(integer(0)).default(10_000));
  if (consumer) {
    command
      .addOption(new Option('--until-idle', 'exit once the group has committed the end of its input topic (tests, batch runs)'))
      .addOption(new Option('--session-timeout-ms <ms>', 'a member silent this long (a killed process) is dropped from the group and its partitions handed on').env('TOPOLOGY_SESSION_TIMEOUT_MS').argParser(integer(1)).default(10_000))
      .addOption(new Option('--heartbeat-interval-ms <ms>', 'how often the member tells the group it is alive; below the session timeout').env('TOPOLOGY_HEARTBEAT_INTERVAL_MS').argParser(integer(1)).default(1000))
      .addOption(new Option('--rebalance-timeout-ms <ms>', 'longest the group waits for its members to rejoin during a rebalance (a member killed while joining stalls it this long)').env('TOPOLOGY_REBALANCE_TIMEOUT_MS').argParser(integer(1)).default(10_000));
  }
  return command.addHelpText('after', TOPICS_HELP);
}

/** The settings a parsed stage command holds. */
export function settingsOf(command: Command): TopologySettings {
  const o = command.opts<{
    brokers: string[];
    prefix: string;
    partitions: number;
    untilIdle?: boolean;
    metricsPort?: number;
    metricsHost: string;
    drainMs: number;
    progressMs: number;
    sessionTimeoutMs?: number;
    heartbeatIntervalMs?: number;
    rebalanceTimeoutMs?: number;
  }>();
  if (!/^[\w.-]{1,200}$/.test(o.prefix)) command.error(`error: --prefix must be letters, digits, '.', '_' or '-', got ${JSON.stringify(o.prefix)}`, { exitCode: 2 });
  if (o.heartbeatIntervalMs !== undefined && o.sessionTimeoutMs !== undefined && o.heartbeatIntervalMs >= o.sessionTimeoutMs) {
    command.error(`error: --heartbeat-interval-ms must be lower than --session-timeout-ms (${o.sessionTimeoutMs}), got ${o.heartbeatIntervalMs}`, { exitCode: 2 });
  }
  return {
    brokers: o.brokers,
    prefix: o.prefix,
    partitions: o.partitions,
    untilIdle: o.untilIdle ?? false,
    metricsPort: o.metricsPort,
    metricsHost: o.metricsHost,
    drainMs: o.drainMs,
    progressMs: o.progressMs,
    consumer: { sessionTimeoutMs: o.sessionTimeoutMs ?? 10_000, heartbeatIntervalMs: o.heartbeatIntervalMs ?? 1000, rebalanceTimeoutMs: o.rebalanceTimeoutMs ?? 10_000 },
  };
}

/** Parses the process's arguments for a stage; `--help` prints and exits 0, a mistake exits 2. */
export function parseStage(command: Command, argv = process.argv): TopologySettings {
  command.exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));
  command.parse(argv);
  return settingsOf(command);
}

export const topics = (prefix: string) => ({
  /** Vendor records as they arrived, JSON, with a `vendor` header. */
  raw: `${prefix}.raw`,
  /** Unified, validated bookings keyed by booking id. */
  clean: `${prefix}.clean`,
  /** Refused records as received, the reason in `tributary-*` headers. */
  dead: `${prefix}.dead`,
});

/** Headers that carry a record's identity from the stage that first saw it to storage. */
export const ORIGIN_POSITION = 'tributary-origin-position';
export const ORIGIN_TIME = 'tributary-origin-time';

/**
 * A record's identity, fixed where it first entered the topology, as headers for what a
 * stage produces from it: the identity the message it was read from carries, if any (ingest
 * gives each record one, see `contentOrigin`), else that message's position
 * (`topic/partition/offset`) and timestamp. A copy made again after a crash, or from the same
 * file read again, carries the same ones, so storage writes it once (see store.ts) and
 * counts each record once (migrations/001_origin_counts.sql). Whoever may write to the raw
 * topic may set these headers: it is trusted input.
 */
export function originHeaders(envelope: Envelope<unknown>): Record<string, string> {
  const headers = envelope.meta.headers ?? {};
  const time = headers[ORIGIN_TIME] ?? new Date(envelope.meta.timestamp ?? envelope.meta.receivedAt).toISOString();
  return { [ORIGIN_POSITION]: headers[ORIGIN_POSITION] ?? envelope.meta.position, [ORIGIN_TIME]: time };
}

/**
 * The identity ingest gives a record read from a file: where it began (`file@byte offset`,
 * the message key) and the first 16 hex digits of the SHA-256 of what is sent, so the same
 * file read again gives the same identities, and a file rewritten in place new ones where
 * its records changed.
 */
export function contentOrigin(position: string, content: string | Uint8Array): string {
  return `${position}#${createHash('sha256').update(content).digest('hex').slice(0, 16)}`;
}

export const groups = (prefix: string) => ({
  normalize: `${prefix}.normalize`,
  store: `${prefix}.store`,
  storeDead: `${prefix}.store-dead`,
});

/**
 * Creates the topics if missing, with `settings.partitions` each, and waits until each
 * partition's leader serves it: done before anything is produced, since a broker that
 * auto-creates topics would make one with its default partition count for the first producer.
 */
export async function ensureTopics(settings: TopologySettings): Promise<void> {
  const admin = new Kafka({ brokers: settings.brokers, clientId: 'topology', logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const names = Object.values(topics(settings.prefix));
    // Not kafkajs' waitForLeaders: it asks for metadata and retries only LEADER_NOT_AVAILABLE,
    // while a KRaft broker that has not yet learnt of a topic just created answers
    // UNKNOWN_TOPIC_OR_PARTITION, which it throws (seen on a loaded machine). Each
    // partition's leader answering for it is waited for below instead.
    await admin.createTopics({ topics: names.map((topic) => ({ topic, numPartitions: settings.partitions })), waitForLeaders: false });
    for (const topic of names) {
      for (let attempt = 0; ; attempt++) {
        try {
          await admin.fetchTopicOffsets(topic);
          break;
        } catch (error) {
          if (attempt >= 200) throw error;
          await sleep(50);
        }
      }
    }
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
      await sleep(everyMs);
    }
  } finally {
    await admin.disconnect();
  }
}

/** One progress line: counts so far, summed lag over the partitions owned, readiness. */
export function progressLine(name: string, pipeline: Pipeline<any>): string {
  const { read, written, deadLettered, nacked, inFlightRecords } = pipeline.stats;
  const { ready, reasons, source } = pipeline.readiness();
  const lag = source?.lag ? Object.values(source.lag).reduce((sum, l) => sum + l, 0) : undefined;
  const partitions = source?.lag ? Object.keys(source.lag).length : undefined;
  return `${name} progress: ${JSON.stringify({ read, written, deadLettered, nacked, inFlight: inFlightRecords, ...(lag !== undefined && { lag, partitions }), ready, ...(reasons.length > 0 && { reasons }) })}`;
}

/**
 * Serves the pipelines' probes and metrics when asked, prints a progress line per
 * pipeline every `progressMs`, stops them on SIGTERM/SIGINT (each drain bounded by
 * `drainMs`), once idle with `--until-idle`, or once every pipeline has finished
 * (`finite`, a source that ends); prints their stats.
 */
export async function runUntilStopped(
  settings: TopologySettings,
  pipelines: { name: string; pipeline: Pipeline<any>; groupId?: string; topic?: string }[],
  { finite = false }: { finite?: boolean } = {},
): Promise<void> {
  // Listening from the start: a signal while the pipelines start stops them once started.
  const signalled = new Promise<void>((resolve) => process.once('SIGTERM', resolve).once('SIGINT', resolve));
  const metrics = settings.metricsPort === undefined ? undefined : await serveMetrics(pipelines.map((p) => p.pipeline), { host: settings.metricsHost, port: settings.metricsPort });
  if (metrics) console.log(`metrics: ${metrics.url}/metrics`);
  const progress = settings.progressMs > 0 ? setInterval(() => pipelines.forEach(({ name, pipeline }) => console.log(progressLine(name, pipeline))), settings.progressMs).unref() : undefined;
  for (const { pipeline } of pipelines) await pipeline.start();
  let stopping: Promise<void> | undefined;
  const stopAll = () =>
    (stopping ??= (async () => {
      clearInterval(progress);
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
    })());
  // A consuming pipeline only finishes by failing: then the process stops too, so its
  // orchestrator restarts it (the exit code says it failed).
  const finishedAll = pipelines.map(({ pipeline }) => pipeline.finished().then(noop, noop));
  const done = finite
    ? Promise.all(finishedAll).then(noop)
    : Promise.race([
        ...finishedAll,
        ...(settings.untilIdle ? [(async () => {
          for (const { groupId, topic } of pipelines) if (groupId && topic) await idle(settings, groupId, [topic]);
        })()] : []),
      ]);
  await Promise.race([signalled, done]);
  await stopAll();
}

function noop(): void {}
