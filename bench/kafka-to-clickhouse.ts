/**
 * Kafka → pipeline (parse → normalize → validate) → embedded ClickHouse, against a bare
 * kafkajs consumer reading the same topic in the same run, plus end-to-end latency.
 *
 * - The parent starts the project's broker, makes the topics and produces the messages
 *   (hotel bookings in the staylodge shape, ~230 bytes, three partitions), outside any timing.
 * - A child process (its own chDB directory) then reads the topic, each time with a
 *   fresh consumer group, timed from the first message received to the last one handled:
 *   the bare consumer (eachBatch, counts messages and resolves offsets, nothing else), then
 *   paired rounds of the pipeline, whose last record is handled once it is written to
 *   ClickHouse, and the hand-written consumer (the peer: kafkajs eachBatch, JSON.parse, the
 *   staylodge mapping by hand, ajv, 10k-row inserts into the same kind of table, offsets
 *   committed after each insert), each into its own table, emptied every round.
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
import { formatAllocations, sampleAllocations } from './allocations';
import { answerParent, benchDir, mainThreadCpuMs, median, round, runChild, sampleMemory, table } from './harness';
import { bookingValidator, mapStaylodge } from './peers';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';
import { installRecordDecoder } from '../connectors/kafka/recordDecoder';

// tributary replaces kafkajs' record decoder before kafkajs first loads (connectors/kafka/
// recordDecoder.ts): put in place here, before the bench's own kafkajs clients load it, so
// the pipeline has it and the bare consumer and the hand-written one decode the same way.
installRecordDecoder();

const name = 'kafka-to-clickhouse';
const MESSAGES = 150_000;
const PARTITIONS = 3;
const BATCH = 10_000;
const LATENCY_RATE = 2000;
const LATENCY_SECONDS = 8;
/**
 * Paired rounds of pipeline and hand-written consumer by default (`--repeat=N` for more):
 * 150k messages take 1–2 s a side, and the whole suite must fit in 15 minutes.
 */
const ROUNDS = 3;
/** Issue 19's goals: at least the hand-written consumer, and this many rows/s. */
const PEER_GOAL = 1.0;
const RATE_GOAL = 130_000;
const BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`];

interface Latency {
  records: number;
  p50: number;
  p99: number;
  max: number;
}

interface Round {
  pipeline: { seconds: number; cpuSeconds: number; mainThreadCpuSeconds: number; stored: number; checksum: string };
  peer: { seconds: number; cpuSeconds: number; mainThreadCpuSeconds: number; stored: number; checksum: string; committed: number };
}

interface ChildResult {
  bare: { seconds: number };
  rounds: Round[];
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

interface CpuMark {
  process: NodeJS.CpuUsage;
  mainThread: number;
}

/** CPU time of the main thread (the JS one: kafkajs, the pipeline, the peer's code, GC pauses), s; NaN where /proc is not there. */
function mainThreadCpuSeconds(): number {
  return (mainThreadCpuMs() ?? NaN) / 1000;
}

function cpuMark(): CpuMark {
  return { process: process.cpuUsage(), mainThread: mainThreadCpuSeconds() };
}

/** CPU time since `start`, s: of this process (every thread: kafkajs, the pipeline, chDB's own), and of its main thread alone. */
function cpuSince(start: CpuMark): { cpuSeconds: number; mainThreadCpuSeconds: number } {
  const { user, system } = process.cpuUsage(start.process);
  return { cpuSeconds: (user + system) / 1e6, mainThreadCpuSeconds: mainThreadCpuSeconds() - start.mainThread };
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

/**
 * Starts the project's broker, makes the bench topic and its two latency topics, fills the
 * first with the booking messages, and hands them to `measure`; the topics are deleted after.
 */
async function withTopics<R>(measure: (topic: string, latencyTopic: string, bytes: number) => Promise<R>): Promise<R> {
  const script = join(benchDir, '..', 'scripts', 'services', 'kafka.sh');
  execFileSync('bash', [script, 'install'], { stdio: 'ignore' });
  execFileSync('bash', [script, 'start'], { stdio: 'ignore' });
  const suffix = `${Date.now()}`;
  const topic = `bench-bookings-${suffix}`;
  const latencyTopic = `bench-latency-${suffix}`;
  const topics = [topic, latencyTopic, `${latencyTopic}-mixed`];
  const admin = kafkaClient().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: topics.map((t) => ({ topic: t, numPartitions: PARTITIONS })), waitForLeaders: true });
    const { Partitioners } = require('kafkajs') as typeof import('kafkajs');
    const producer = kafkaClient().producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    const values = await bookings(MESSAGES, 1);
    for (let i = 0; i < values.length; i += 5000) {
      await producer.send({ topic, acks: -1, messages: values.slice(i, i + 5000).map((value, j) => ({ key: String(i + j), value, headers: { vendor: 'staylodge' } })) });
    }
    await producer.disconnect();
    return await measure(topic, latencyTopic, values.reduce((sum, v) => sum + v.length, 0));
  } finally {
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
  }
}

/**
 * CPU profiles of a child running the pipeline side only and of one running the
 * hand-written consumer only (three rounds each, on the same topic), written into `dir` as
 * pipeline.cpuprofile and peer.cpuprofile.
 */
async function profile(dir: string): Promise<void> {
  await withTopics(async (topic) => {
    for (const side of ['pipeline', 'peer'] as const) {
      await runChild<number[]>(__filename, ['profile', topic, side], { timeoutMs: 300_000, execArgv: ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${side}.cpuprofile`] });
    }
    // Then where each side allocates, in children of their own (the sampler costs time).
    for (const side of ['pipeline', 'peer'] as const) {
      await runChild<number[]>(__filename, ['profile', topic, side, join(dir, `${side}.heapprofile`)], { timeoutMs: 300_000 });
    }
  });
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const rounds = options.repeat ?? ROUNDS;
  return withTopics(async (topic, latencyTopic, bytes) => {
    const result = await runChild<ChildResult>(__filename, ['measure', topic, latencyTopic, String(rounds)], { timeoutMs: 300_000 });
    const pipelineRates = result.rounds.map((r) => MESSAGES / r.pipeline.seconds);
    const peerRates = result.rounds.map((r) => MESSAGES / r.peer.seconds);
    const peerRatios = result.rounds.map((r) => round(r.peer.seconds / r.pipeline.seconds, 3));
    const pipelineRate = median(pipelineRates);
    const peerRate = median(peerRates);
    const peerRatio = median(peerRatios);
    const bareRate = MESSAGES / result.bare.seconds;
    const ratio = pipelineRate / bareRate;
    const sums = new Set(result.rounds.flatMap((r) => [r.pipeline.checksum, r.peer.checksum]));
    const figures = (label: string, seconds: number, rates?: number[]): RunFigures => ({
      label,
      records: MESSAGES,
      mb: round(bytes / 2 ** 20, 1),
      seconds: round(seconds, 2),
      rowsPerSecond: round(MESSAGES / seconds),
      ...(rates && { rowsPerSecondRange: [round(Math.min(...rates)), round(Math.max(...rates))] as [number, number], repeats: rates.length }),
      peakRssMb: result.peakRssMb,
      maxRssMb: result.maxRssMb,
      idleRssMb: 0,
      peakHeapMb: result.peakHeapMb,
    });
    const runs = [
      figures('bare kafkajs consumer (eachBatch, count only)', result.bare.seconds),
      figures('fromKafka → parse → normalize → validate → embedded ClickHouse', MESSAGES / pipelineRate, pipelineRates),
      figures('peer: hand-written kafkajs consumer (parse, map, ajv, insert, commit)', MESSAGES / peerRate, peerRates),
    ];
    const checks: Check[] = [
      {
        name: 'every message stored',
        claim: `${MESSAGES} bookings in ClickHouse, every round, by the pipeline and by the hand-written consumer (which committed them all)`,
        actual: result.rounds.map((r) => `${r.pipeline.stored}/${r.peer.stored}/${r.peer.committed}`).join(', '),
        pass: result.rounds.every((r) => r.pipeline.stored === MESSAGES && r.peer.stored === MESSAGES && r.peer.committed === MESSAGES),
      },
      {
        name: 'hand-written consumer did the same work',
        claim: 'the pipeline and the hand-written consumer stored the same rows (row checksum, every round)',
        actual: sums.size === 1 ? 'same rows, same checksum' : `${sums.size} different checksums`,
        pass: sums.size === 1,
      },
      {
        name: `${PEER_GOAL}× the hand-written consumer`,
        goal: true,
        claim: `median over ${result.rounds.length} paired rounds of pipeline rows/s ÷ hand-written consumer rows/s ≥ ${PEER_GOAL}`,
        actual: `${peerRatio.toFixed(3)} (rounds: ${peerRatios.join(', ')}; pipeline ${round(pipelineRate).toLocaleString('en')} vs hand-written ${round(peerRate).toLocaleString('en')} rows/s)`,
        pass: peerRatio >= PEER_GOAL,
      },
      {
        name: `${RATE_GOAL / 1000}k rows/s`,
        goal: true,
        claim: `median pipeline rows/s over ${result.rounds.length} rounds ≥ ${RATE_GOAL.toLocaleString('en')}`,
        actual: `${round(pipelineRate).toLocaleString('en')} (${pipelineRates.map((r) => round(r / 1000, 1)).join(', ')}k)`,
        pass: pipelineRate >= RATE_GOAL,
      },
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
      seconds: round(result.bare.seconds + MESSAGES / pipelineRate, 1),
      repeat: result.rounds.length,
      method: [
        `${MESSAGES} booking messages (${PARTITIONS} partitions) produced before timing; each side reads them with a fresh consumer group, timed from its first message to its last one handled.`,
        'The pipeline side ends when the last batch is written to embedded ClickHouse (batches of 10,000, insert tokens on); the bare side only counts messages.',
        `Peer: a hand-written kafkajs consumer (bench/peers.ts mapping; eachBatch, JSON.parse, the staylodge mapping by hand, ajv with the same schema, ${BATCH.toLocaleString('en')}-row JSONEachRow inserts into chDB with the next batch read meanwhile, offsets committed after each insert), ending at its last insert. Every side, the bare consumer included, decodes records with tributary's record decoder, which replaces kafkajs' for the process (without it, on the same machine: pipeline 111-125k rows/s against 133-143k with it).`,
        `Pipeline and peer run in ${rounds} paired rounds (order alternating), each into its own emptied table; rates are medians, the peer ratio the median of each round's own ratio; both sides' rows are checked to be the same.`,
        `Latency: ${LATENCY_RATE} msg/s for ${LATENCY_SECONDS} s from a producer in the same process; send → end of the insert holding the record (batch maxWaitMs 100), with the defaults (batches mix partitions) and with batchAlignment ${BATCH} (one partition per batch, replay-stable tokens).`,
      ],
      settings: {
        peer: { value: round(peerRate), ratio: peerRatio, rounds: peerRatios },
        // Process CPU (every thread, chDB's included) per row, median over the rounds: less
        // disturbed by other processes than rows/s on a shared machine.
        cpuMicrosecondsPerRow: {
          pipeline: round(median(result.rounds.map((r) => (r.pipeline.cpuSeconds * 1e6) / MESSAGES)), 1),
          peer: round(median(result.rounds.map((r) => (r.peer.cpuSeconds * 1e6) / MESSAGES)), 1),
        },
        // The main thread's share (JS and its GC pauses), read from /proc: what is left is chDB's and V8's helper threads.
        mainThreadCpuMicrosecondsPerRow: {
          pipeline: round(median(result.rounds.map((r) => (r.pipeline.mainThreadCpuSeconds * 1e6) / MESSAGES)), 1),
          peer: round(median(result.rounds.map((r) => (r.peer.mainThreadCpuSeconds * 1e6) / MESSAGES)), 1),
        },
        batchRows: BATCH,
        partitions: PARTITIONS,
        latency: { ...result.latencyMixed, unit: 'ms', rate: LATENCY_RATE, batchAlignment: false },
        latencyOnePartitionPerBatch: { ...result.latency, unit: 'ms', rate: LATENCY_RATE, batchAlignment: BATCH },
      },
      runs,
      checks,
    };
  });
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

/**
 * The hand-written peer: a kafkajs consumer that parses, maps and validates each message,
 * gathers rows into 10k-row inserts (the next batch is read while the previous insert
 * runs) and commits each partition's offsets once the insert holding them is done.
 * Resolves with its time from first message to last insert, and the offsets it committed.
 */
async function handWritten(client: ReturnType<typeof embeddedClickHouse>, topic: string, group: string, tableName: string): Promise<{ seconds: number; cpuSeconds: number; mainThreadCpuSeconds: number; committed: number }> {
  const consumer = kafkaClient().consumer({ groupId: group, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const valid = bookingValidator();
  const settings = { date_time_input_format: 'best_effort' };
  let body = '';
  let rows = 0;
  let read = 0;
  let started = 0;
  let cpuAtStart: CpuMark | undefined;
  let committed = 0;
  /** Next offset to commit per partition, for the rows in `body`. */
  let offsets = new Map<number, string>();
  let inserting: Promise<void> = Promise.resolve();
  const flush = () => {
    const [text, count, upTo] = [body, rows, offsets];
    body = '';
    rows = 0;
    offsets = new Map();
    const previous = inserting;
    inserting = (async () => {
      await previous;
      await client.insert(tableName, Buffer.from(text), settings);
      await consumer.commitOffsets([...upTo].map(([partition, offset]) => ({ topic, partition, offset })));
      committed += count;
    })();
    // Awaited at the next flush or the end; a failure meanwhile must not go unhandled.
    inserting.catch(() => undefined);
    return previous;
  };
  let cpu = { cpuSeconds: 0, mainThreadCpuSeconds: 0 };
  const seconds = await new Promise<number>((resolve, reject) => {
    consumer
      .run({
        autoCommit: false,
        eachBatch: async ({ batch }) => {
          cpuAtStart ??= cpuMark();
          started ||= performance.now();
          for (const message of batch.messages) {
            const booking = mapStaylodge(JSON.parse(message.value!.toString('utf8')));
            if (!booking || !valid(booking)) throw new Error(`message ${batch.partition}/${message.offset} is not a booking`);
            body += JSON.stringify(booking) + '\n';
            rows++;
            read++;
            offsets.set(batch.partition, String(Number(message.offset) + 1));
            if (rows === BATCH) await flush();
          }
          if (read >= MESSAGES) {
            if (rows > 0) await flush();
            await inserting;
            cpu = cpuSince(cpuAtStart!);
            resolve((performance.now() - started) / 1000);
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return { seconds, ...cpu, committed };
}


const CHECKSUM = (tableName: string) => `
  SELECT count() AS n, toString(sumWithOverflow(cityHash64(vendor, booking_id, updated_at, status, product, booked_at,
         travel_date, origin, destination, passengers, toString(total_amount), currency))) AS checksum
  FROM ${tableName}`;

/** Measures the pipeline; `onWritten` sees each batch once it is in ClickHouse. */
function bookingPipeline(
  client: ReturnType<typeof embeddedClickHouse>,
  topic: string,
  maxWaitMs: number,
  onWritten: (records: readonly { meta: { headers?: Readonly<Record<string, string>> } }[]) => void,
  onFirstBatch: () => void = () => undefined,
  batchAlignment: number | false = false,
  groupId = `${topic}-pipeline`,
): Pipeline<Booking> {
  const sink = toClickHouse<Booking>({ client, table: 'bookings' });
  // The sink as the pipeline sees it, plus a look at each written batch: `encode` and
  // `encodeInto` too, so records join their batch as JSONEachRow bytes, as they do with
  // toClickHouse itself.
  const observed: Sink<Booking> = {
    name: sink.name,
    open: () => sink.open!(),
    encode: (value) => sink.encode!(value),
    encodeInto: (value, out) => sink.encodeInto!(value, out),
    async write(batch, context) {
      await sink.write(batch, context);
      onWritten(batch.envelopes);
    },
  };
  return new Pipeline<Booking>({
    name,
    source: fromKafka({
      brokers: BROKERS,
      groupId,
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

async function measure(topic: string, latencyTopic: string, rounds: number): Promise<ChildResult> {
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-kafka-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  try {
    await migrate(clickhouse, migrationsDir);
    await clickhouse.exec('CREATE TABLE bookings_peer AS bookings');
    const bareSeconds = await bare(topic);

    const measured: Round[] = [];
    for (let r = 0; r < rounds; r++) {
      await clickhouse.exec('TRUNCATE TABLE bookings');
      await clickhouse.exec('TRUNCATE TABLE bookings_peer');
      // Alternating order: whichever side goes second reads a topic the first one warmed.
      const pipelineFirst = r % 2 === 0;
      let pipelineRun: Round['pipeline'] | undefined;
      let peerRun: Round['peer'] | undefined;
      for (const side of pipelineFirst ? ['pipeline', 'peer'] : ['peer', 'pipeline']) {
        if (side === 'pipeline') pipelineRun = await pipelineOnce(clickhouse, topic, `${topic}-pipeline-${r}`);
        else {
          const run = await handWritten(clickhouse, topic, `${topic}-peer-${r}`, 'bookings_peer');
          const [row] = await clickhouse.query<{ n: string; checksum: string }>(CHECKSUM('bookings_peer'));
          peerRun = { ...run, stored: Number(row!.n), checksum: row!.checksum };
        }
      }
      measured.push({ pipeline: pipelineRun!, peer: peerRun! });
      const perRow = (seconds: number) => ((seconds * 1e6) / MESSAGES).toFixed(1);
      console.log(
        `  round ${r + 1}/${rounds}: pipeline ${round(MESSAGES / pipelineRun!.seconds).toLocaleString('en')}, hand-written ${round(MESSAGES / peerRun!.seconds).toLocaleString('en')} rows/s` +
          ` (CPU per row, all threads: ${perRow(pipelineRun!.cpuSeconds)} vs ${perRow(peerRun!.cpuSeconds)} µs; main thread: ${perRow(pipelineRun!.mainThreadCpuSeconds)} vs ${perRow(peerRun!.mainThreadCpuSeconds)} µs)`,
      );
    }

    const aligned = await latency(clickhouse, latencyTopic, BATCH);
    const mixed = await latency(clickhouse, `${latencyTopic}-mixed`, false);
    const peaks = memory.stop();
    return {
      bare: { seconds: bareSeconds },
      rounds: measured,
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

/** One timed pipeline run over the whole topic with a fresh group, into `bookings`. */
async function pipelineOnce(clickhouse: ReturnType<typeof embeddedClickHouse>, topic: string, groupId: string): Promise<Round['pipeline']> {
  let written = 0;
  let started = 0;
  let finished = 0;
  let cpuAtStart: CpuMark | undefined;
  let cpu = { cpuSeconds: 0, mainThreadCpuSeconds: 0 };
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
      cpu = cpuSince(cpuAtStart!);
      allWritten();
    },
    () => {
      cpuAtStart ??= cpuMark();
      started ||= performance.now();
    },
    false,
    groupId,
  );
  await pipeline.start();
  await done;
  await pipeline.stop();
  const [row] = await clickhouse.query<{ n: string; checksum: string }>(CHECKSUM('bookings'));
  return { seconds: (finished - started) / 1000, ...cpu, stored: Number(row!.n), checksum: row!.checksum };
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

/**
 * One side alone, three rounds: what `--profile` samples. Answers each round's rows/s.
 * With `allocations` (a file), the last round's allocations are sampled into it and printed.
 */
async function profileRounds(topic: string, side: 'pipeline' | 'peer', allocations?: string): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-kafka-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  try {
    await migrate(clickhouse, migrationsDir);
    const rates: number[] = [];
    // Consumer groups of their own: each round reads the topic from the start.
    const group = allocations === undefined ? 'profile' : 'allocations';
    for (let r = 0; r < 3; r++) {
      await clickhouse.exec('TRUNCATE TABLE bookings');
      const stopSampling = allocations !== undefined && r === 2 ? await sampleAllocations() : undefined;
      const { seconds, cpuSeconds, mainThreadCpuSeconds: main } =
        side === 'pipeline' ? await pipelineOnce(clickhouse, topic, `${topic}-${group}-${r}`) : await handWritten(clickhouse, topic, `${topic}-${group}-peer-${r}`, 'bookings');
      rates.push(round(MESSAGES / seconds));
      console.log(`  round ${r + 1}/3: ${side} ${rates[r]!.toLocaleString('en')} rows/s, CPU per row ${((cpuSeconds * 1e6) / MESSAGES).toFixed(1)} µs, main thread ${((main * 1e6) / MESSAGES).toFixed(1)} µs${stopSampling ? ' (allocations sampled)' : ''}`);
      if (stopSampling) {
        await stopSampling(allocations!);
        console.log(`\n${side}: ${allocations}\n${formatAllocations(allocations!, MESSAGES, 'record', 20)}\n`);
      }
    }
    return rates;
  } finally {
    await clickhouse.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module && process.argv[2] === 'measure') answerParent(() => measure(process.argv[3]!, process.argv[4]!, Number(process.argv[5] ?? ROUNDS)));
if (require.main === module && process.argv[2] === 'profile') answerParent(() => profileRounds(process.argv[3]!, process.argv[4] === 'peer' ? 'peer' : 'pipeline', process.argv[5]));

export const benchmark: Benchmark = { name, run, profile };
