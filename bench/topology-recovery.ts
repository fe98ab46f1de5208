/**
 * Kill -9 → partition flowing again, for the topology's normalize stage: with the stage's
 * own consumer timing (session 10 s, heartbeat 1 s, rebalance 10 s) against kafkajs'
 * defaults (30 s, 3 s, 60 s) in the same run.
 *
 * - A producer writes vendor records (the staylodge sample lines, header `vendor`) to a
 *   one-partition raw topic at a steady rate for the whole round.
 * - The stage runs as its own process (`dist/examples/kafka-topology/normalize.js`); once
 *   its group's committed offset moves, it is killed with SIGKILL (it cannot leave the
 *   group) and a replacement with the same settings is started at once, as an
 *   orchestrator restarts a crashed container.
 * - The time measured runs from the kill to the first commit past the offset committed at
 *   the kill: the partition is flowing again (read, written to the clean topic, committed).
 *   It includes the replacement's start-up (about a second), the same for both settings.
 * - Rounds alternate the two settings, each round on fresh topics and groups; the figure is
 *   the median over the rounds, and the ratio the median of each pair's own ratio.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { samplesDir } from '../examples/bookings/paths';
import { benchDir, quantile, round, table } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'topology-recovery';
const BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`];
const RATE = 400; // records per second
const STAGE = join(benchDir, '..', 'dist', 'examples', 'kafka-topology', 'normalize.js');

const SETTINGS = {
  stage: { label: 'stage defaults (session 10 s, heartbeat 1 s, rebalance 10 s)', sessionMs: 10_000, args: [] as string[] },
  kafkajs: { label: 'kafkajs defaults (session 30 s, heartbeat 3 s, rebalance 60 s)', sessionMs: 30_000, args: ['--session-timeout-ms', '30000', '--heartbeat-interval-ms', '3000', '--rebalance-timeout-ms', '60000'] },
} as const;

function kafkaClient() {
  const { Kafka, logLevel } = require('kafkajs') as typeof import('kafkajs');
  return new Kafka({ brokers: BROKERS, clientId: 'bench', logLevel: logLevel.NOTHING });
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One round: seconds from the kill to the first commit past the offset committed then. */
async function round1(settings: (typeof SETTINGS)[keyof typeof SETTINGS], lines: string[]): Promise<number> {
  const prefix = `recovery-${randomUUID().slice(0, 8)}`;
  const raw = `${prefix}.raw`;
  const groupId = `${prefix}.normalize`;
  const kafka = kafkaClient();
  const admin = kafka.admin();
  await admin.connect();
  const { Partitioners } = require('kafkajs') as typeof import('kafkajs');
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  const children: ChildProcess[] = [];
  const start = () => {
    const child = spawn(process.execPath, [STAGE, '--brokers', BROKERS.join(','), '--prefix', prefix, '--partitions', '1', '--progress-ms', '0', ...settings.args], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(child);
    return child;
  };
  const committed = async () => {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [raw] });
    return Number(offsets!.partitions[0]?.offset ?? -1);
  };
  const moved = async (from: number, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await committed()) > from) return;
      await delay(50);
    }
    throw new Error(`${prefix}: the group committed nothing past ${from} within ${timeoutMs} ms`);
  };
  let producing = true;
  let producerDone: Promise<void> = Promise.resolve();
  try {
    const first = start();
    // The stage creates the topics; produce once they are there.
    for (let i = 0; !(await admin.listTopics()).includes(raw); i++) {
      if (i > 600) throw new Error(`${raw} was not created`);
      await delay(50);
    }
    await producer.connect();
    producerDone = (async () => {
      let n = 0;
      while (producing) {
        const messages = Array.from({ length: RATE / 10 }, () => ({ key: String(n), value: lines[n++ % lines.length]!, headers: { vendor: 'staylodge' } }));
        await producer.send({ topic: raw, messages });
        await delay(100);
      }
    })();
    await moved(-1, 60_000);
    await delay(3000); // steady state: the member heartbeats and commits as it goes
    first.kill('SIGKILL');
    const killedAt = performance.now();
    start();
    await new Promise((resolve) => first.once('exit', resolve));
    const at = await committed();
    await moved(at, 5 * settings.sessionMs + 60_000);
    return (performance.now() - killedAt) / 1000;
  } finally {
    producing = false;
    await producerDone.catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((resolve) => c.once('exit', resolve)) : undefined)));
    await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
    await admin.disconnect();
  }
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const script = join(benchDir, '..', 'scripts', 'services', 'kafka.sh');
  execFileSync('bash', [script, 'install'], { stdio: 'ignore' });
  execFileSync('bash', [script, 'start'], { stdio: 'ignore' });
  const lines = readFileSync(join(samplesDir, 'staylodge', 'reservations.ndjson'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');
  // Two rounds: both sides are set by timeouts (10 s and 30 s), so their rounds differ by
  // tenths of a second, and a third round cost 50 s of the suite's 15-minute budget.
  const rounds = options.repeat ?? 2;
  const stage: number[] = [];
  const kafkajs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so a drift in the machine's load falls on both alike.
    const order = i % 2 === 0 ? (['stage', 'kafkajs'] as const) : (['kafkajs', 'stage'] as const);
    for (const which of order) {
      const seconds = await round1(SETTINGS[which], lines);
      (which === 'stage' ? stage : kafkajs).push(seconds);
      console.log(`round ${i + 1}: ${which} ${seconds.toFixed(2)} s`);
    }
  }
  const median = (values: number[]) => round(quantile(values, 0.5), 2);
  const ratio = round(quantile(stage.map((s, i) => s / kafkajs[i]!), 0.5), 3);
  const figures = (label: string, values: number[]): RunFigures => ({
    label,
    records: 0,
    mb: 0,
    seconds: median(values),
    rowsPerSecond: 0,
    repeats: values.length,
    peakRssMb: 0,
    maxRssMb: 0,
    idleRssMb: 0,
    peakHeapMb: 0,
  });
  const checks: Check[] = [
    {
      name: 'kill-to-flowing within the session timeout',
      claim: `median ≤ ${SETTINGS.stage.sessionMs / 1000} s session timeout + 2 s (the replacement's start-up and first batch)`,
      actual: `${median(stage)} s`,
      pass: median(stage) <= SETTINGS.stage.sessionMs / 1000 + 2,
    },
    { name: 'faster than kafkajs defaults', claim: 'ratio < 0.5', actual: String(ratio), pass: ratio < 0.5 },
  ];
  console.log(table(['settings', 'rounds (s)', 'median s'], [
    [SETTINGS.stage.label, stage.map((s) => s.toFixed(2)).join(' '), median(stage)],
    [SETTINGS.kafkajs.label, kafkajs.map((s) => s.toFixed(2)).join(' '), median(kafkajs)],
  ]));
  return {
    name,
    unit: 's',
    value: median(stage),
    baseline: { name: 'kafkajs defaults', value: median(kafkajs) },
    ratio,
    peakRssMb: 0,
    peakHeapMb: 0,
    records: 0,
    bytes: 0,
    seconds: median(stage),
    method: [
      'normalize stage as its own process on a one-partition raw topic fed 400 records/s; SIGKILL, replacement started at once;',
      'time from the kill to the first commit past the offset committed at the kill (lower is better; ratio below 1 is faster than kafkajs defaults);',
      `${rounds} rounds alternating the two settings, medians; ratio = median of each round's stage ÷ kafkajs time.`,
    ],
    repeat: rounds,
    settings: { rate: RATE, partitions: 1, stage: SETTINGS.stage.label, baseline: SETTINGS.kafkajs.label, rounds: { stage, kafkajs } },
    runs: [figures(SETTINGS.stage.label, stage), figures(SETTINGS.kafkajs.label, kafkajs)],
    checks,
  };
}

export const benchmark: Benchmark = { name, run };
