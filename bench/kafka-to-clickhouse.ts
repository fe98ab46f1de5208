/**
 * Kafka → pipeline (parse → normalize → validate) → embedded ClickHouse, against a bare
 * kafkajs consumer reading the same topic in the same run, plus end-to-end latency.
 *
 * - The parent starts the project's broker, makes the topics and produces the messages
 *   (hotel bookings in the staylodge shape, ~230 bytes, three partitions), outside any timing.
 * - A child process (its own chDB directory) then reads the topic twice, each time with a
 *   fresh consumer group, timed from the first message received to the last one handled:
 *   the bare consumer (eachBatch, counts messages and resolves offsets, nothing else), then
 *   the pipeline, whose last record is handled once it is written to ClickHouse.
 * - Latency: a producer in the same child sends bookings at a steady rate to a second
 *   topic while the pipeline consumes it; each record's latency is the time from its send
 *   to the end of the ClickHouse insert that holds it (queryable from then on).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipe } from 'rxjs';
import { embeddedClickHouse, migrate, toClickHouse } from '../connectors/clickhouse';
import { fromIterable } from '../connectors/iterable';
import { fromKafka } from '../connectors/kafka';
import { Pipeline } from '../lib/pipeline';
import type { DeadLetter, Sink } from '../lib/sink';
import { normalize } from '../operators/normalize';
import { parse } from '../operators/parse';
import { validate } from '../operators/validate';
import { mappings } from '../examples/bookings/mappings';
import { migrationsDir, samplesDir } from '../examples/bookings/paths';
import { bookingSchema, type Booking } from '../examples/bookings/schema';
import { answerParent, benchDir, round, runChild, sampleMemory, table } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'kafka-to-clickhouse';
const MESSAGES = 150_000;
const PARTITIONS = 3;
const BATCH = 10_000;
const LATENCY_RATE = 2000;
const LATENCY_SECONDS = 8;
const BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`];

interface Latency {
  records: number;
  p50: number;
  p99: number;
  max: number;
}

interface ChildResult {
  bare: { seconds: number };
  pipeline: { seconds: number; stored: number };
  latency: Latency;
  latencyMixed: Latency;
  peakRssMb: number;
  peakHeapMb: number;
  maxRssMb: number;
}

function kafkaClient() {
  const { Kafka, logLevel } = require('kafkajs') as typeof import('kafkajs');
  return new Kafka({ brokers: BROKERS, clientId: 'bench', logLevel: logLevel.NOTHING });
}

const nowhere: Sink<DeadLetter> = { name: 'nowhere', write: async () => undefined };

/** The staylodge sample records that pass normalize and validate (the samples hold bad ones on purpose). */
async function validSamples(): Promise<Record<string, unknown>[]> {
  const samples = readFileSync(join(samplesDir, 'staylodge', 'reservations.ndjson'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const kept: Record<string, unknown>[] = [];
  await new Pipeline({
    source: fromIterable(samples, { vendor: 'staylodge' }),
    transform: pipe(normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' })),
    sink: { name: 'keep', write: async (batch) => void batch.envelopes.forEach((e) => kept.push(samples[e.meta.record! - 1]!)) },
    deadLetters: nowhere,
  }).run();
  return kept;
}

/** Booking-shaped messages: valid staylodge sample records with unique reservation ids. */
async function bookings(count: number, first: number): Promise<string[]> {
  const samples = await validSamples();
  return Array.from({ length: count }, (_, i) => JSON.stringify({ ...samples[i % samples.length], reservationId: first + i }));
}

async function run(): Promise<BenchmarkResult> {
  const script = join(benchDir, '..', 'scripts', 'services', 'kafka.sh');
  execFileSync('bash', [script, 'install'], { stdio: 'ignore' });
  execFileSync('bash', [script, 'start'], { stdio: 'ignore' });
  const suffix = `${Date.now()}`;
  const topic = `bench-bookings-${suffix}`;
  const latencyTopic = `bench-latency-${suffix}`;
  const admin = kafkaClient().admin();
  await admin.connect();
  try {
    const topics = [topic, latencyTopic, `${latencyTopic}-mixed`];
    await admin.createTopics({ topics: topics.map((t) => ({ topic: t, numPartitions: PARTITIONS })), waitForLeaders: true });
    const { Partitioners } = require('kafkajs') as typeof import('kafkajs');
    const producer = kafkaClient().producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const values = await bookings(MESSAGES, 1);
    for (let i = 0; i < values.length; i += 5000) {
      await producer.send({ topic, acks: -1, messages: values.slice(i, i + 5000).map((value, j) => ({ key: String(i + j), value, headers: { vendor: 'staylodge' } })) });
    }
    await producer.disconnect();
    const bytes = values.reduce((sum, v) => sum + v.length, 0);

    const result = await runChild<ChildResult>(__filename, ['measure', topic, latencyTopic], { timeoutMs: 300_000 });
    const pipelineRate = MESSAGES / result.pipeline.seconds;
    const bareRate = MESSAGES / result.bare.seconds;
    const ratio = pipelineRate / bareRate;
    const figures = (label: string, seconds: number): RunFigures => ({
      label,
      records: MESSAGES,
      mb: round(bytes / 2 ** 20, 1),
      seconds: round(seconds, 2),
      rowsPerSecond: round(MESSAGES / seconds),
      peakRssMb: result.peakRssMb,
      maxRssMb: result.maxRssMb,
      idleRssMb: 0,
      peakHeapMb: result.peakHeapMb,
    });
    const runs = [figures('bare kafkajs consumer (eachBatch, count only)', result.bare.seconds), figures('fromKafka → parse → normalize → validate → embedded ClickHouse', result.pipeline.seconds)];
    const checks: Check[] = [
      { name: 'every message stored', claim: `${MESSAGES} bookings in ClickHouse`, actual: String(result.pipeline.stored), pass: result.pipeline.stored === MESSAGES },
      { name: 'latency measured', claim: `p99 over ${LATENCY_RATE * LATENCY_SECONDS} records`, actual: `${result.latencyMixed.records} records`, pass: result.latencyMixed.records === LATENCY_RATE * LATENCY_SECONDS },
    ];
    console.log(table(['run', 'messages/s', 's'], runs.map((r) => [r.label, r.rowsPerSecond.toLocaleString('en'), r.seconds])));
    console.log(`end-to-end latency, produce → queryable, at ${LATENCY_RATE} msg/s (defaults, batches mix partitions): p50 ${result.latencyMixed.p50} ms, p99 ${result.latencyMixed.p99} ms, max ${result.latencyMixed.max} ms`);
    console.log(`  with batchAlignment ${BATCH} (one partition per batch, replay-stable tokens): p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms`);
    return {
      name,
      unit: 'rows/s',
      value: round(pipelineRate),
      baseline: { name: 'bare kafkajs consumer on the same topic', value: round(bareRate) },
      ratio: round(ratio, 3),
      peakRssMb: result.peakRssMb,
      peakHeapMb: result.peakHeapMb,
      records: MESSAGES,
      bytes,
      seconds: round(result.bare.seconds + result.pipeline.seconds, 1),
      method: [
        `${MESSAGES} booking messages (${PARTITIONS} partitions) produced before timing; each side reads them with a fresh consumer group, timed from its first message to its last one handled.`,
        'The pipeline side ends when the last batch is written to embedded ClickHouse (batches of 10,000, insert tokens on); the bare side only counts messages.',
        `Latency: ${LATENCY_RATE} msg/s for ${LATENCY_SECONDS} s from a producer in the same process; send → end of the insert holding the record (batch maxWaitMs 100), with the defaults (batches mix partitions) and with batchAlignment ${BATCH} (one partition per batch, replay-stable tokens).`,
      ],
      settings: {
        batchRows: BATCH,
        partitions: PARTITIONS,
        latency: { ...result.latencyMixed, unit: 'ms', rate: LATENCY_RATE, batchAlignment: false },
        latencyOnePartitionPerBatch: { ...result.latency, unit: 'ms', rate: LATENCY_RATE, batchAlignment: BATCH },
      },
      runs,
      checks,
    };
  } finally {
    await admin.deleteTopics({ topics: [topic, latencyTopic, `${latencyTopic}-mixed`] }).catch(() => undefined);
    await admin.disconnect();
  }
}

async function bare(topic: string): Promise<number> {
  const consumer = kafkaClient().consumer({ groupId: `${topic}-bare`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let read = 0;
  let started = 0;
  const seconds = await new Promise<number>((resolve, reject) => {
    consumer
      .run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset }) => {
          started ||= performance.now();
          for (const message of batch.messages) {
            read++;
            resolveOffset(message.offset);
          }
          if (read >= MESSAGES) resolve((performance.now() - started) / 1000);
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return seconds;
}

/** Measures the pipeline; `onWritten` sees each batch once it is in ClickHouse. */
function bookingPipeline(
  client: ReturnType<typeof embeddedClickHouse>,
  topic: string,
  maxWaitMs: number,
  onWritten: (records: readonly { meta: { headers?: Readonly<Record<string, string>> } }[]) => void,
  onFirstBatch: () => void = () => undefined,
  batchAlignment: number | false = false,
): Pipeline<Booking> {
  const sink = toClickHouse<Booking>({ client, table: 'bookings' });
  const observed: Sink<Booking> = {
    name: sink.name,
    open: () => sink.open!(),
    async write(batch, context) {
      await sink.write(batch, context);
      onWritten(batch.envelopes);
    },
  };
  return new Pipeline<Booking>({
    name,
    source: fromKafka({
      brokers: BROKERS,
      groupId: `${topic}-pipeline`,
      topics: topic,
      fromBeginning: true,
      logLevel: 'nothing',
      vendor: (meta) => meta.headers?.vendor,
      batchAlignment,
      instrument: (consumer) => consumer.on(consumer.events.START_BATCH_PROCESS, onFirstBatch),
    }),
    transform: pipe(parse(), normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' })),
    sink: observed,
    deadLetters: nowhere,
    batch: { rows: BATCH, maxWaitMs },
    inFlight: { records: 3 * BATCH },
  });
}

async function measure(topic: string, latencyTopic: string): Promise<ChildResult> {
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-kafka-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  try {
    await migrate(clickhouse, migrationsDir);
    const bareSeconds = await bare(topic);

    let written = 0;
    let started = 0;
    let finished = 0;
    let allWritten!: () => void;
    const done = new Promise<void>((resolve) => (allWritten = resolve));
    const pipeline = bookingPipeline(
      clickhouse,
      topic,
      500,
      (records) => {
        written += records.length;
        if (written < MESSAGES) return;
        finished = performance.now();
        allWritten();
      },
      () => (started ||= performance.now()),
    );
    await pipeline.start();
    await done;
    await pipeline.stop();
    const [row] = await clickhouse.query<{ n: string }>('SELECT count() AS n FROM bookings');

    const aligned = await latency(clickhouse, latencyTopic, BATCH);
    const mixed = await latency(clickhouse, `${latencyTopic}-mixed`, false);
    const peaks = memory.stop();
    return {
      bare: { seconds: bareSeconds },
      pipeline: { seconds: (finished - started) / 1000, stored: Number(row!.n) },
      latency: aligned,
      latencyMixed: mixed,
      peakRssMb: peaks.peakRssMb,
      peakHeapMb: peaks.peakHeapMb,
      maxRssMb: peaks.maxRssMb,
    };
  } finally {
    await clickhouse.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A steady producer and the pipeline on a topic of its own: send → end of the insert holding the record. */
async function latency(clickhouse: ReturnType<typeof embeddedClickHouse>, topic: string, batchAlignment: number | false): Promise<Latency> {
  const latencies: number[] = [];
  const pipeline = bookingPipeline(
    clickhouse,
    topic,
    100,
    (records) => {
      const now = Date.now();
      for (const r of records) latencies.push(now - Number(r.meta.headers!['produced-at']));
    },
    undefined,
    batchAlignment,
  );
  await pipeline.start();
  const { Partitioners } = require('kafkajs') as typeof import('kafkajs');
  const producer = kafkaClient().producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const total = LATENCY_RATE * LATENCY_SECONDS;
  const values = await bookings(total, batchAlignment === false ? 20_000_000 : 10_000_000);
  const tick = 50;
  const perTick = (LATENCY_RATE * tick) / 1000;
  const startedAt = Date.now();
  for (let sent = 0; sent < total; sent += perTick) {
    const due = startedAt + (sent / perTick) * tick;
    if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
    const at = String(Date.now());
    await producer.send({ topic, acks: -1, messages: values.slice(sent, sent + perTick).map((value) => ({ value, headers: { vendor: 'staylodge', 'produced-at': at } })) });
  }
  await producer.disconnect();
  const deadline = Date.now() + 30_000;
  while (latencies.length < total && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  await pipeline.stop();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { records: latencies.length, p50: at(0.5), p99: at(0.99), max: latencies[latencies.length - 1] ?? NaN };
}

if (require.main === module && process.argv[2] === 'measure') answerParent(() => measure(process.argv[3]!, process.argv[4]!));

export const benchmark: Benchmark = { name, run };
