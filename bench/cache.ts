/**
 * cache: the cost of keeping recent bookings in Redis, in the same run.
 *
 * - write: a pipeline (fromIterable → embedded ClickHouse) against the same pipeline
 *   writing through `fanOut` to ClickHouse and `toRedisCache` (required, so the time
 *   includes every cache write), the same rows in the same batches.
 * - read: `recentBookings().get()` of keys in the cache against a bare ioredis `GET` loop
 *   of the same keys, one request at a time (p99 latency of each).
 * Redis is the project's test Redis (scripts/services/redis.sh, REDIS_PORT).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { embeddedClickHouse, toClickHouse, type ClickHouseClient } from '../connectors/clickhouse';
import { fromIterable } from '../connectors/iterable';
import { recentBookings, toRedisCache } from '../connectors/redis';
import { fanOut } from '../lib/fanOut';
import { Pipeline } from '../lib/pipeline';
import type { DeadLetter, Sink } from '../lib/sink';
import { benchDir, quantile, round, sampleMemory, table } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'cache';
const ROWS = 200_000;
const BATCH = 10_000;
const READS = 20_000;
const REDIS_URL = `redis://127.0.0.1:${process.env.REDIS_PORT ?? 16379}`;

interface Row {
  vendor: string;
  booking_id: string;
  updated_at: string;
  booked_at: string;
  customer_token: string;
  status: string;
  total_amount: string;
}

function makeRows(now: number): Row[] {
  return Array.from({ length: ROWS }, (_, i) => ({
    vendor: ['skyway', 'globetrek', 'staylodge'][i % 3]!,
    booking_id: `B${String(i).padStart(9, '0')}`,
    updated_at: new Date(now - 60_000).toISOString(),
    booked_at: new Date(now - 3_600_000 - (i % 3_600) * 1000).toISOString(),
    customer_token: `tok-${i % 50_000}`,
    status: 'confirmed',
    total_amount: `${(i % 100_000) + 1}.25`,
  }));
}

const nowhere: Sink<DeadLetter> = { name: 'nowhere', write: async () => undefined };

async function fresh(client: ClickHouseClient, tableName: string): Promise<void> {
  await client.exec(`DROP TABLE IF EXISTS ${tableName}`);
  await client.exec(
    `CREATE TABLE ${tableName} (vendor String, booking_id String, updated_at DateTime64(3, 'UTC'), booked_at DateTime64(3, 'UTC'), customer_token String, status String, total_amount Decimal(18, 4)) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (vendor, booking_id)`,
  );
}

async function seconds(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

const median = (xs: number[]) => quantile(xs, 0.5);
const p99 = (xs: number[]) => quantile(xs, 0.99);

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 3;
  execFileSync('bash', [join(benchDir, '..', 'scripts', 'services', 'redis.sh'), 'install'], { stdio: 'ignore' });
  execFileSync('bash', [join(benchDir, '..', 'scripts', 'services', 'redis.sh'), 'start'], { stdio: 'ignore' });
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-cache-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  const redis = new Redis(REDIS_URL);
  const rows = makeRows(Date.now());
  const times = { alone: [] as number[], cached: [] as number[], reader: [] as number[], bare: [] as number[] };
  const latency = { reader: [] as number[], bare: [] as number[] };
  const prefix = 'bench:cache:';
  const pipelineOptions = { deadLetters: nowhere, batch: { rows: BATCH, maxWaitMs: 1000 }, inFlight: { records: 3 * BATCH } };
  try {
    // Round 0 warms the JIT and both stores and is not counted.
    for (let round = 0; round <= repeat; round++) {
      await fresh(clickhouse, 'bench_cache_alone');
      times.alone.push(await seconds(() => new Pipeline({ source: fromIterable(rows), sink: toClickHouse({ client: clickhouse, table: 'bench_cache_alone' }), ...pipelineOptions }).run()));
      await clickhouse.exec('DROP TABLE bench_cache_alone');
      await fresh(clickhouse, 'bench_cache_both');
      await redis.flushdb();
      const cache = toRedisCache<Row>({ url: REDIS_URL, prefix, customerField: 'customer_token' });
      const sink = fanOut<Row>([{ sink: toClickHouse({ client: clickhouse, table: 'bench_cache_both' }), required: true }, { sink: cache, required: true }]);
      times.cached.push(await seconds(() => new Pipeline({ source: fromIterable(rows), sink, ...pipelineOptions }).run()));
      if (cache.stats.stored !== ROWS) throw new Error(`the cache stored ${cache.stats.stored} of ${ROWS} rows`);

      const reader = recentBookings<Row>({ redis: { url: REDIS_URL }, clickhouse, table: 'bench_cache_both', prefix, customerField: 'customer_token' });
      await redis.set(`${prefix}fresh`, '1'); // the pipeline above filled it completely
      const keys = Array.from({ length: READS }, (_, i) => rows[(i * 7919) % ROWS]!);
      const bareKeys = keys.map((row) => `${prefix}b:${JSON.stringify([row.vendor, row.booking_id])}`);
      const readerLatency: number[] = [];
      const bareLatency: number[] = [];
      // Chunks of each side in turn: ClickHouse merging the insert above, or anything else
      // on the machine, slows both sides alike.
      let readerSeconds = 0;
      let bareSeconds = 0;
      for (let at = 0; at < READS; at += 1000) {
        readerSeconds += await seconds(async () => {
          for (const row of keys.slice(at, at + 1000)) {
            const started = performance.now();
            if ((await reader.get(row.vendor, row.booking_id)) === undefined) throw new Error(`${row.booking_id} not found`);
            readerLatency.push(performance.now() - started);
          }
        });
        bareSeconds += await seconds(async () => {
          for (const key of bareKeys.slice(at, at + 1000)) {
            const started = performance.now();
            if ((await redis.get(key)) === null) throw new Error(`${key} not found`);
            bareLatency.push(performance.now() - started);
          }
        });
      }
      times.reader.push(readerSeconds);
      times.bare.push(bareSeconds);
      if (reader.counts.misses !== 0) throw new Error(`${reader.counts.misses} reads missed the cache`);
      if (round > 0) {
        latency.reader.push(p99(readerLatency));
        latency.bare.push(p99(bareLatency));
      }
      await reader.close();
      await clickhouse.exec('DROP TABLE bench_cache_both');
    }
  } finally {
    await redis.flushdb().catch(() => undefined);
    redis.disconnect();
    await clickhouse.close();
    rmSync(dir, { recursive: true, force: true });
  }
  for (const list of Object.values(times)) list.shift();
  const peaks = memory.stop();
  const paired = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]!));
  const writeRatio = paired(times.alone, times.cached);
  const readRatio = paired(times.bare, times.reader);
  const figure = (label: string, count: number, list: number[]): RunFigures => ({
    label,
    records: count,
    mb: 0,
    seconds: round(median(list), 3),
    rowsPerSecond: round(count / median(list)),
    repeats: repeat,
    peakRssMb: peaks.peakRssMb,
    maxRssMb: peaks.peakRssMb,
    idleRssMb: 0,
    peakHeapMb: peaks.peakHeapMb,
  });
  const runs = [
    figure('pipeline → ClickHouse', ROWS, times.alone),
    figure('pipeline → ClickHouse + Redis cache (required)', ROWS, times.cached),
    figure(`recentBookings.get, one at a time (p99 ${median(latency.reader).toFixed(3)} ms)`, READS, times.reader),
    figure(`ioredis GET, one at a time (p99 ${median(latency.bare).toFixed(3)} ms)`, READS, times.bare),
  ];
  const checks: Check[] = [
    { name: 'write with the cache', claim: 'ClickHouse + cache ≥ 0.8 × ClickHouse alone, rows/s', actual: writeRatio.toFixed(3), pass: writeRatio >= 0.8 },
    { name: 'reader get by key', claim: 'recentBookings.get ≥ 0.8 × bare ioredis GET, reads/s', actual: readRatio.toFixed(3), pass: readRatio >= 0.8 },
  ];
  console.log(table(['run', 'per second (median)', 's'], runs.map((r) => [r.label, r.rowsPerSecond.toLocaleString('en'), r.seconds])));
  return {
    name,
    unit: 'rows/s',
    value: round(ROWS / median(times.cached)),
    baseline: { name: 'the same pipeline into ClickHouse alone', value: round(ROWS / median(times.alone)) },
    ratio: round(writeRatio, 3),
    peakRssMb: peaks.peakRssMb,
    peakHeapMb: peaks.peakHeapMb,
    records: ROWS,
    bytes: 0,
    seconds: round(Object.values(times).flat().reduce((a, b) => a + b, 0), 1),
    repeat,
    method: [
      'Rows from memory (fromIterable), 10k-row batches, embedded ClickHouse; the cache is required, so its writes are inside the time.',
      `Reads: ${READS.toLocaleString('en')} gets of cached keys one after the other, against ioredis GET of the same keys, in alternating chunks of 1000; p99 per read in the run labels.`,
      'Ratios are the median of each round’s own ratio; round 0 warms up and is not counted.',
    ],
    settings: { batchRows: BATCH, reads: READS, readRatio: round(readRatio, 3), readerP99Ms: round(median(latency.reader), 3), bareP99Ms: round(median(latency.bare), 3) },
    runs,
    checks,
  };
}

export const benchmark: Benchmark = { name, run };
