/**
 * The consuming process of the Kafka group test (the crash test's is the source conformance
 * suite's, test/conformance/source-child.ts).
 *
 *   node kafka-child.js relay <brokers> <in> <out> <group> <events file> <slowMs>
 *       in → out (keyed by id) until SIGTERM; appends every group join, heartbeat and
 *       offset commit of its consumer to the events file, one JSON line each
 */
import { appendFileSync } from 'node:fs';
import { map } from 'rxjs';
import { fromKafka, toKafka } from '../../../connectors/kafka';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter, Sink } from '../../../lib/sink';
import { parse } from '../../../operators/parse';

/** Slows each write, as a sink under load would. */
function slowed<T>(sink: Sink<T>, ms: number): Sink<T> {
  return {
    name: sink.name,
    open: () => sink.open?.() ?? Promise.resolve(),
    async write(batch, context) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      await sink.write(batch, context);
    },
    close: () => sink.close?.() ?? Promise.resolve(),
  };
}

const toRow = map((e: Envelope<any>) => e.map({ id: e.value.id, position: e.meta.position }));

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
    sink: slowed(toKafka<{ id: number }>({ brokers, topic: output, key: (e) => String(e.value.id), logLevel: 'nothing' }), slowMs),
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
  if (mode === 'relay') return relay(args[0]!.split(','), args[1]!, args[2]!, args[3]!, args[4]!, Number(args[5]));
  throw new Error(`unknown mode ${mode}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
