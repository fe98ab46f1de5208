/**
 * The consuming processes of the Kafka crash and group tests.
 *
 *   node kafka-child.js store <brokers> <topic> <group> <chdb dir> <slowMs> [until-caught-up]
 *       topic → parse → embedded ClickHouse in its own directory; prints `writing` as each
 *       write starts and `wrote` once it has landed and, with until-caught-up, its stats once
 *       the group has committed the end of every partition; COMMIT_INTERVAL_MS in the
 *       environment sets the source's commitIntervalMs, BATCH_WAIT_MS the batches' maxWaitMs
 *       (200) and IN_FLIGHT the in-flight records (2000)
 *   node kafka-child.js count <chdb dir>           prints what the table holds, with plain count()
 *   node kafka-child.js relay <brokers> <in> <out> <group> <events file> <slowMs>
 *       in → out (keyed by id) until SIGTERM; appends every group join, heartbeat and
 *       offset commit of its consumer to the events file, one JSON line each
 */
import { appendFileSync } from 'node:fs';
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromKafka, toKafka } from '../../connectors/kafka';
import type { Envelope } from '../../lib/envelope';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter, Sink } from '../../lib/sink';
import { parse } from '../../operators/parse';
import { caughtUp } from '../kafka';

// A plain MergeTree, not the ReplacingMergeTree a real table would be: no merge, in the
// background or by FINAL, can fold a row written twice, so only the insert token keeps a
// replayed batch from counting twice in count().
const TABLE = `
CREATE TABLE IF NOT EXISTS kafka_rows
(
    id       UInt64,
    position String
)
ENGINE = MergeTree
ORDER BY id
SETTINGS non_replicated_deduplication_window = 10000`;

const DEAD_LETTERS = `
CREATE TABLE IF NOT EXISTS dead_letters
(
    pipeline String, source String, position String, vendor String, stage String, code String,
    message String, path String, raw String, raw_encoding String,
    received_at DateTime64(3, 'UTC'), failed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (pipeline, source, position)`;

/** Slows each write so the parent can kill the process in the middle of one. */
function slowed<T>(sink: Sink<T>, ms: number, announce: boolean): Sink<T> {
  return {
    name: sink.name,
    open: () => sink.open?.() ?? Promise.resolve(),
    async write(batch, context) {
      if (announce) process.stdout.write(`writing ${batch.envelopes.length}\n`);
      await new Promise((resolve) => setTimeout(resolve, ms));
      await sink.write(batch, context);
      if (announce) process.stdout.write(`wrote ${batch.envelopes.length}\n`);
    },
    close: () => sink.close?.() ?? Promise.resolve(),
  };
}

const toRow = map((e: Envelope<any>) => e.map({ id: e.value.id, position: e.meta.position }));

async function store(brokers: string[], topic: string, groupId: string, path: string, slowMs: number, untilCaughtUp: boolean): Promise<void> {
  const clickhouse = embeddedClickHouse({ path });
  await clickhouse.exec(TABLE);
  await clickhouse.exec(DEAD_LETTERS);
  const pipeline = new Pipeline({
    name: 'kafka-crash',
    source: fromKafka({
      brokers,
      groupId,
      topics: topic,
      fromBeginning: true,
      logLevel: 'nothing',
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: 1000,
      batchAlignment: 500,
      commitIntervalMs: Number(process.env.COMMIT_INTERVAL_MS ?? 0),
    }),
    transform: (records$) => records$.pipe(parse(), toRow),
    sink: slowed(toClickHouse({ client: clickhouse, table: 'kafka_rows' }), slowMs, true),
    deadLetters: toClickHouse({ client: clickhouse, table: 'dead_letters' }),
    batch: { rows: 500, maxWaitMs: Number(process.env.BATCH_WAIT_MS ?? 200) },
    inFlight: { records: Number(process.env.IN_FLIGHT ?? 2000) },
  });
  await pipeline.start();
  if (!untilCaughtUp) return;
  while (!(await caughtUp(brokers, groupId, topic).catch(() => false))) await new Promise((resolve) => setTimeout(resolve, 200));
  const stats = await pipeline.stop();
  await clickhouse.close();
  process.stdout.write(JSON.stringify(stats) + '\n');
}

async function count(path: string): Promise<void> {
  const clickhouse = embeddedClickHouse({ path });
  const [row] = await clickhouse.query<Record<string, string>>(`
    SELECT (SELECT count() FROM kafka_rows) AS raw,
           (SELECT uniqExact(id) FROM kafka_rows) AS distinct,
           (SELECT min(id) FROM kafka_rows) AS first,
           (SELECT max(id) FROM kafka_rows) AS last,
           (SELECT count() FROM dead_letters) AS dead_letters`);
  await clickhouse.close();
  process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(row!).map(([k, v]) => [k, Number(v)]))) + '\n');
}

async function relay(brokers: string[], input: string, output: string, groupId: string, events: string, slowMs: number): Promise<void> {
  const log = (event: object) => appendFileSync(events, JSON.stringify({ pid: process.pid, at: Date.now(), ...event }) + '\n');
  const pipeline = new Pipeline({
    name: 'kafka-relay',
    source: fromKafka({
      brokers,
      groupId,
      topics: input,
      fromBeginning: true,
      logLevel: 'nothing',
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: 500,
      instrument(consumer) {
        const { GROUP_JOIN, HEARTBEAT, COMMIT_OFFSETS } = consumer.events;
        consumer.on(GROUP_JOIN, ({ payload }) => log({ type: 'join', member: payload.memberId, assignment: payload.memberAssignment }));
        consumer.on(HEARTBEAT, ({ payload }) => log({ type: 'heartbeat', member: payload.memberId, generation: payload.groupGenerationId }));
        consumer.on(COMMIT_OFFSETS, ({ payload }) =>
          log({
            type: 'commit',
            member: payload.memberId,
            generation: payload.groupGenerationId,
            partitions: payload.topics.flatMap((t) => t.partitions.map((p) => ({ topic: t.topic, partition: Number(p.partition), offset: Number(p.offset) }))),
          }),
        );
      },
    }),
    transform: (records$) => records$.pipe(parse(), toRow),
    sink: slowed(toKafka<{ id: number }>({ brokers, topic: output, key: (e) => String(e.value.id), logLevel: 'nothing' }), slowMs, false),
    deadLetters: toKafka<DeadLetter>({ brokers, topic: output, deadLetters: true, logLevel: 'nothing' }),
    batch: { rows: 200, maxWaitMs: 100 },
    inFlight: { records: 1000 },
  });
  process.once('SIGTERM', () => {
    void pipeline.stop().then((stats) => {
      log({ type: 'stopped', stats });
      process.exit(0);
    });
  });
  await pipeline.start();
  log({ type: 'started' });
}

async function main(): Promise<void> {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'count') return count(args[0]!);
  if (mode === 'store') return store(args[0]!.split(','), args[1]!, args[2]!, args[3]!, Number(args[4]), args[5] === 'until-caught-up');
  if (mode === 'relay') return relay(args[0]!.split(','), args[1]!, args[2]!, args[3]!, args[4]!, Number(args[5]));
  throw new Error(`unknown mode ${mode}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
