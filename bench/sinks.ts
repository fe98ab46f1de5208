/**
 * Sink throughput per ClickHouse driver, against the raw client writing the same rows
 * in the same batches, in the same run.
 *
 * - embedded: the pipeline (fromIterable → toClickHouse) vs chDB's own insert of the
 *   same batches serialized as JSONEachRow (chDB holds one directory per process, so both
 *   share one store; the raw side calls the insert the driver wraps, nothing else).
 * - server: the pipeline vs `@clickhouse/client`'s `insert({ format: 'JSONEachRow' })`
 *   with the same row objects and the same gzip-compressed bodies, on the project's ClickHouse
 *   server (started by its script).
 * Serialization is inside the timing on both sides.
 */
import { createClient } from '@clickhouse/client';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { embeddedClickHouse, serverClickHouse, toClickHouse, type ClickHouseClient } from '../connectors/clickhouse';
import { fromIterable } from '../connectors/iterable';
import { Pipeline } from '../lib/pipeline';
import type { DeadLetter, Sink } from '../lib/sink';
import { benchDir, round, sampleMemory, table } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const name = 'sinks';
const ROWS = 300_000;
const BATCH = 10_000;
const SERVER_URL = `http://127.0.0.1:${process.env.CLICKHOUSE_HTTP_PORT ?? 18123}`;

interface Row {
  id: number;
  vendor: string;
  booking_id: string;
  amount: string;
  at: string;
}

const rows: Row[] = Array.from({ length: ROWS }, (_, i) => ({
  id: i,
  vendor: ['skyway', 'globetrek', 'staylodge'][i % 3]!,
  booking_id: `B${String(i).padStart(9, '0')}`,
  amount: `${(i % 100_000) + 1}.25`,
  at: '2026-03-01 10:00:00',
}));

/** 18.16 reads decimals only as bare numbers: the raw client gets them as numbers (prepared outside the timing). */
const numericRows = rows.map((row) => ({ ...row, amount: Number(row.amount) }));

const nowhere: Sink<DeadLetter> = { name: 'nowhere', write: async () => undefined };

async function timeIt(work: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

async function fresh(client: ClickHouseClient, tableName: string): Promise<void> {
  await client.exec(`DROP TABLE IF EXISTS ${tableName}`);
  await client.exec(`CREATE TABLE ${tableName} (id UInt32, vendor String, booking_id String, amount Decimal(18, 4), at DateTime) ENGINE = MergeTree ORDER BY id`);
}

async function viaPipeline(client: ClickHouseClient, tableName: string): Promise<number> {
  await fresh(client, tableName);
  const pipeline = new Pipeline({ source: fromIterable(rows), sink: toClickHouse({ client, table: tableName }), deadLetters: nowhere, batch: { rows: BATCH, maxWaitMs: 1000 }, inFlight: { records: 3 * BATCH } });
  const seconds = await timeIt(async () => void (await pipeline.run()));
  await check(client, tableName);
  return seconds;
}

/** Checks every row landed, then drops the table so its background merges do not slow the next run. */
async function check(client: ClickHouseClient, tableName: string): Promise<void> {
  const [row] = await client.query<{ n: string }>(`SELECT count() AS n FROM ${tableName}`);
  if (Number(row!.n) !== ROWS) throw new Error(`${tableName}: ${row!.n} rows stored, ${ROWS} sent`);
  await client.exec(`DROP TABLE ${tableName}`);
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 5;
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-sinks-'));
  const embedded = embeddedClickHouse({ path: dir });
  execFileSync('bash', [join(benchDir, '..', 'scripts', 'services', 'clickhouse.sh'), 'install'], { stdio: 'ignore' });
  execFileSync('bash', [join(benchDir, '..', 'scripts', 'services', 'clickhouse.sh'), 'start'], { stdio: 'ignore' });
  const server = serverClickHouse({ url: SERVER_URL });
  // Same wire settings as the driver: gzip-compressed insert bodies.
  const raw = createClient({ url: SERVER_URL, compression: { request: true }, clickhouse_settings: { date_time_input_format: 'best_effort' } });
  const seconds: Record<string, number[]> = { embeddedPipeline: [], embeddedRaw: [], serverPipeline: [], serverRaw: [] };
  try {
    // Round 0 warms the JIT and both stores up and is not counted: the first run was
    // up to 30% slower, whichever side it was.
    for (let round = 0; round <= repeat; round++) {
      seconds.embeddedPipeline!.push(await viaPipeline(embedded, 'bench_sink_pipeline'));
      await fresh(embedded, 'bench_sink_raw');
      seconds.embeddedRaw!.push(
        await timeIt(async () => {
          for (let i = 0; i < ROWS; i += BATCH) {
            let text = '';
            for (let j = i; j < i + BATCH; j++) text += JSON.stringify(rows[j]) + '\n';
            await embedded.insert('bench_sink_raw', Buffer.from(text), { date_time_input_format: 'best_effort' });
          }
        }),
      );
      await check(embedded, 'bench_sink_raw');
      seconds.serverPipeline!.push(await viaPipeline(server, 'bench_sink_pipeline'));
      await fresh(server, 'bench_sink_raw');
      seconds.serverRaw!.push(
        await timeIt(async () => {
          for (let i = 0; i < ROWS; i += BATCH) await raw.insert({ table: 'bench_sink_raw', values: numericRows.slice(i, i + BATCH), format: 'JSONEachRow' });
        }),
      );
      await check(server, 'bench_sink_raw');
    }
  } finally {
    await raw.close();
    await server.close();
    await embedded.close();
    rmSync(dir, { recursive: true, force: true });
  }
  for (const runs of Object.values(seconds)) runs.shift();
  const peaks = memory.stop();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rate = (key: string) => ROWS / median(seconds[key]!);
  const runs: RunFigures[] = [
    ['embedded: tributary sink', 'embeddedPipeline'],
    ['embedded: chDB insert, same batches', 'embeddedRaw'],
    ['server 18.16: tributary sink', 'serverPipeline'],
    ['server 18.16: @clickhouse/client insert, same batches', 'serverRaw'],
  ].map(([label, key]) => ({
    label: label!,
    records: ROWS,
    mb: 0,
    seconds: round(median(seconds[key!]!), 2),
    rowsPerSecond: round(rate(key!)),
    repeats: repeat,
    peakRssMb: peaks.peakRssMb,
    maxRssMb: peaks.peakRssMb,
    idleRssMb: 0,
    peakHeapMb: peaks.peakHeapMb,
  }));
  // The ratio is the median of each round's own ratio: the two sides of a round ran
  // back to back, so drift in the machine's speed between rounds cancels out.
  const roundRatios = (driver: string) => seconds[`${driver}Raw`]!.map((raw, i) => raw / seconds[`${driver}Pipeline`]![i]!);
  const embeddedRatio = median(roundRatios('embedded'));
  const serverRatio = median(roundRatios('server'));
  // Each round's own ratio and their spread, so a median that sits on the line is seen as such.
  const spread = (driver: string) => {
    const ratios = roundRatios(driver);
    return `rounds: ${ratios.map((r) => r.toFixed(3)).join(', ')}; spread ${(Math.max(...ratios) - Math.min(...ratios)).toFixed(3)}`;
  };
  const checks: Check[] = [
    { name: 'embedded sink vs raw', claim: 'tributary ≥ 0.8 × raw client rows/s (median of the paired rounds)', actual: `${embeddedRatio.toFixed(3)} (${spread('embedded')})`, pass: embeddedRatio >= 0.8 },
    { name: 'server sink vs raw', claim: 'tributary ≥ 0.8 × raw client rows/s (median of the paired rounds)', actual: `${serverRatio.toFixed(3)} (${spread('server')})`, pass: serverRatio >= 0.8 },
  ];
  const worst = embeddedRatio <= serverRatio ? 'embedded' : 'server';
  console.log(table(['run', 'rows/s (median)', 's'], runs.map((r) => [r.label, r.rowsPerSecond.toLocaleString('en'), r.seconds])));
  return {
    name,
    unit: 'rows/s',
    value: round(rate(`${worst}Pipeline`)),
    baseline: { name: worst === 'embedded' ? 'chDB insert of the same batches' : '@clickhouse/client insert of the same batches', value: round(rate(`${worst}Raw`)) },
    ratio: round(Math.min(embeddedRatio, serverRatio), 3),
    peakRssMb: peaks.peakRssMb,
    peakHeapMb: peaks.peakHeapMb,
    records: ROWS,
    bytes: 0,
    seconds: round(Object.values(seconds).flat().reduce((a, b) => a + b, 0), 1),
    repeat,
    settings: { batchRows: BATCH, headline: 'the driver with the lower ratio', ratio: 'median of the per-round ratios', warmUpRounds: 1, roundRatios: { embedded: roundRatios('embedded').map((r) => round(r, 3)), server: roundRatios('server').map((r) => round(r, 3)) } },
    runs,
    checks,
  };
}

export const benchmark: Benchmark = { name, run };
