/**
 * files-to-clickhouse: the booking pipeline (fromFiles → normalize → validate → embedded
 * ClickHouse) against chDB ingesting the same NDJSON file by itself.
 *
 * Every measured run is a child process of its own: its RSS is then its own, and chDB
 * allows one data directory per process. Runs go one after the other (2 cores: anything
 * in parallel would measure the contention).
 *
 *   pipeline   large file (≥ 2M records, ≥ 500 MiB), then a file 4× smaller
 *   baseline   chDB `INSERT INTO bookings SELECT <the mapping in SQL> FROM file(…)`
 *   reference  chDB `INSERT INTO bookings_raw SELECT * FROM file(…)` (no conversion)
 *   peers      on the smaller file, per driver (embedded chDB and the ClickHouse server):
 *              the hand-written script (fs, JSON.parse, hand mapping, ajv, 20k-row
 *              inserts) against the pipeline with default settings, paired in each round
 */
import { once } from 'node:events';
import { closeSync, createReadStream, createWriteStream, existsSync, fsyncSync, mkdirSync, openSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execFileSync } from 'node:child_process';
import { createClient } from '@clickhouse/client';
import { embeddedClickHouse, migrate, serverClickHouse, type ClickHouseClient } from '../index';
import { generate } from '../examples/bookings/generate';
import { migrationsDir } from '../examples/bookings/paths';
import { bookingPipeline } from '../examples/bookings/pipeline';
import { answerParent, benchDir, dataDir, listenerPid, MB, median, type MemoryPeaks, quietMachine, round, runChild, sampleMemory, timed } from './harness';
import { bookingValidator, mapGlobetrek } from './peers';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

export const name = 'files-to-clickhouse';

const VENDOR = 'globetrek';
const MIN_RECORDS = 2_000_000;
const MIN_BYTES = 500 * MB;
/** The memory-scaling run reads a file this many times smaller. */
const SCALE = 4;
const SEED = 42;

/**
 * Pipeline settings: 20k-row batches, two inserts in flight, an in-flight budget of three
 * batches (the source fills the next batch while two are written); the library's
 * defaults, spelled out. Measured here on the 2M file: on 2 cores the JS thread and chDB
 * share the CPU, and chDB spends about a third less per row on 20k-row inserts than on
 * 10k (fewer parts to write and merge): 10k / 30k ran 10–15% slower. Rows wait in
 * their batch as JSONEachRow bytes, not objects, which keeps the heap under 100 MiB.
 */
const DEFAULT_SETTINGS: PipelineSettings = {
  batch: { rows: 20_000, maxWaitMs: 1000 },
  inFlight: { records: 60_000, bytes: 64 * MB },
  sinkConcurrency: 2,
};

interface PipelineSettings {
  batch: { rows: number; maxWaitMs: number };
  inFlight: { records: number; bytes: number };
  sinkConcurrency: number;
}

/**
 * The settings in use: the defaults above, or the JSON in TRIBUTARY_BENCH_PIPELINE
 * (e.g. `{"batch":{"rows":50000,"maxWaitMs":1000},"inFlight":{"records":150000,"bytes":134217728}}`),
 * to try others without editing this file. Children inherit the environment, and the
 * settings used are stored with the result.
 */
function pipelineSettings(): PipelineSettings {
  const text = process.env.TRIBUTARY_BENCH_PIPELINE;
  return text ? { ...DEFAULT_SETTINGS, ...(JSON.parse(text) as Partial<PipelineSettings>) } : DEFAULT_SETTINGS;
}

/** Claims checked on every run. */
const GOAL_RATIO = 0.2;
/** The pipeline, default settings, against the hand-written script on the same driver (issue 19). */
const PEER_GOAL = 1.2;
/** Rows per insert of the hand-written script. */
const SCRIPT_BATCH = 20_000;
const SERVER_PORT = Number(process.env.CLICKHOUSE_HTTP_PORT ?? 18123);
const SERVER_URL = `http://127.0.0.1:${SERVER_PORT}`;
const RSS_GROWTH_LIMIT = 0.15;
const HEAP_LIMIT_MB = 150;
/** Cores other processes may keep busy during a run before its figures count as disturbed. */
const QUIET_CORES = 0.2;

// ---------------------------------------------------------------------------------------
// The data set

export interface DataFile {
  file: string;
  records: number;
  bytes: number;
}

interface DataMeta {
  vendor: string;
  seed: number;
  records: number;
  bytes: number;
}

/**
 * The NDJSON file of `records` globetrek bookings, generated once and reused while its
 * size matches what was recorded when it was written. Files live in bench/data/globetrek/
 * (git-ignored): the booking pipeline names a file's vendor after its directory.
 */
async function dataFile(records: number, larger?: DataFile): Promise<DataFile> {
  const dir = join(dataDir, VENDOR);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bookings-${records}.ndjson`);
  const metaFile = join(dataDir, `${VENDOR}-bookings-${records}.meta.json`);
  const meta = readMeta(metaFile);
  if (meta && meta.records === records && meta.seed === SEED && existsSync(file) && statSync(file).size === meta.bytes) {
    return { file, records, bytes: meta.bytes };
  }
  rmSync(metaFile, { force: true });
  const partial = `${file}.partial`;
  const started = performance.now();
  process.stdout.write(`${larger ? 'copying the first' : 'generating'} ${records.toLocaleString('en')} ${VENDOR} records … `);
  // The generator is deterministic: the first N records of a larger file with the same
  // seed are exactly the file of N records, so copying them beats generating them again.
  const { bytes } = larger && larger.records >= records ? await copyLines(larger.file, partial, records) : await generate({ vendor: VENDOR, records, out: partial, seed: SEED });
  // On disk before anything is timed: write-back of fresh pages would compete with the runs.
  const fd = openSync(partial, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(partial, file);
  writeFileSync(metaFile, JSON.stringify({ vendor: VENDOR, seed: SEED, records, bytes } satisfies DataMeta) + '\n');
  console.log(`${(bytes / MB).toFixed(0)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { file, records, bytes };
}

/** Copies the first `lines` lines of `from` into `to`. */
async function copyLines(from: string, to: string, lines: number): Promise<{ bytes: number }> {
  const out = createWriteStream(to);
  let left = lines;
  let bytes = 0;
  for await (const chunk of createReadStream(from, { highWaterMark: 1 << 20 })) {
    const buffer = chunk as Buffer;
    let end = 0;
    while (left > 0) {
      const newline = buffer.indexOf(0x0a, end);
      if (newline < 0) {
        end = buffer.length;
        break;
      }
      end = newline + 1;
      left--;
    }
    const part = end === buffer.length ? buffer : buffer.subarray(0, end);
    bytes += part.length;
    if (!out.write(part)) await once(out, 'drain');
    if (left === 0) break;
  }
  out.end();
  await once(out, 'finish');
  return { bytes };
}

function readMeta(metaFile: string): DataMeta | undefined {
  try {
    return JSON.parse(readFileSync(metaFile, 'utf8')) as DataMeta;
  } catch {
    return undefined;
  }
}

/** At least MIN_RECORDS records and MIN_BYTES bytes: more records while the file is too small. */
export async function largeFile(): Promise<DataFile> {
  let records = MIN_RECORDS;
  for (;;) {
    const data = await dataFile(records);
    if (data.bytes >= MIN_BYTES) return data;
    rmSync(data.file, { force: true });
    records = Math.ceil((records * MIN_BYTES * 1.01) / data.bytes / 1000) * 1000;
  }
}

// ---------------------------------------------------------------------------------------
// The parent: generate, run the children, compare

interface ChildFigures extends MemoryPeaks {
  records: number;
  seconds: number;
  rowsPerSecond: number;
  /** RSS once chDB is open and the tables exist, before the measured work, MiB. */
  idleRssMb: number;
  /** CPU time of the process over the measured work ÷ its wall time (2 = both cores busy). */
  cores: number;
  /** Share of the measured time the main (JS) thread was busy. */
  eventLoopBusy: number;
  /** Cores other processes kept busy meanwhile: the run's figures are disturbed above ~0.2. */
  othersCores: number;
  /** `count()` of the target table after the run. */
  counted: number;
  /** Order-independent hash of the stored booking rows (same rows, same sum). */
  checksum: string;
}

interface PipelineFigures extends ChildFigures {
  read: number;
  written: number;
  deadLettered: number;
  nacked: number;
}

const script = __filename;

/**
 * One kind of measured run, repeated: the median speed of the runs on a quiet machine (of
 * all runs when none was quiet), the highest memory of all runs.
 */
interface Series<F extends ChildFigures> {
  label: string;
  data: DataFile;
  runs: F[];
}

export interface RunOptions {
  /** Rounds of measurement; each round runs every kind once, interleaved. @default 2 (the whole suite must fit in 15 minutes on 2 cores; `--repeat=3` for more) */
  repeat?: number;
}

export async function run(options: RunOptions = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 2;
  const large = await largeFile();
  const small = await dataFile(Math.round(large.records / SCALE), large);

  const pipelineLarge: Series<PipelineFigures> = { label: 'pipeline', data: large, runs: [] };
  const pipelineSmall: Series<PipelineFigures> = { label: `pipeline (1/${SCALE} size)`, data: small, runs: [] };
  const baseline: Series<ChildFigures> = { label: 'baseline: chDB, mapping in SQL', data: large, runs: [] };
  const reference: Series<ChildFigures> = { label: 'reference: chDB, raw columns', data: large, runs: [] };
  const scriptSmall: Series<ChildFigures> = { label: `peer: hand-written script, chDB (1/${SCALE} size)`, data: small, runs: [] };
  const serverPipeline: Series<PipelineFigures> = { label: `pipeline, ClickHouse server (1/${SCALE} size)`, data: small, runs: [] };
  const serverScript: Series<ChildFigures> = { label: `peer: hand-written script, ClickHouse server (1/${SCALE} size)`, data: small, runs: [] };
  const clickhouseScript = join(benchDir, '..', 'scripts', 'services', 'clickhouse.sh');
  execFileSync('bash', [clickhouseScript, 'install'], { stdio: 'ignore' });
  execFileSync('bash', [clickhouseScript, 'start'], { stdio: 'ignore' });
  // Interleaved rounds, so whatever drifts on the machine touches every kind alike; each
  // peer runs right after the pipeline it is paired with.
  for (let round = 1; round <= repeat; round++) {
    console.log(`round ${round}/${repeat}`);
    await step(pipelineLarge, 'pipeline');
    await step(baseline, 'baseline');
    await step(reference, 'raw');
    await step(pipelineSmall, 'pipeline');
    await step(scriptSmall, 'script');
    await step(serverPipeline, 'pipeline', [], 'server');
    await step(serverScript, 'script', [], 'server');
  }

  const pl = summary(pipelineLarge);
  const ps = summary(pipelineSmall);
  const bl = summary(baseline);
  const ratio = pl.rowsPerSecond / bl.rowsPerSecond;
  const rssGrowth = pl.peakRssMb / ps.peakRssMb - 1;
  const pipelines = [...pipelineLarge.runs, ...pipelineSmall.runs, ...serverPipeline.runs];
  const checksums = new Set([...pipelineLarge.runs, ...baseline.runs].map((r) => r.checksum));
  const peerChecks = [
    peerCheck('chDB', pipelineSmall, scriptSmall),
    peerCheck('ClickHouse server', serverPipeline, serverScript),
  ];
  const all = [...pipelineLarge.runs, ...pipelineSmall.runs, ...baseline.runs, ...reference.runs, ...scriptSmall.runs, ...serverPipeline.runs, ...serverScript.runs];
  const disturbed = all.filter((r) => r.othersCores > QUIET_CORES);
  const checks: Check[] = [
    {
      name: 'quiet machine',
      claim: `each kind has runs during which other processes kept < ${QUIET_CORES} cores busy (speeds use only those)`,
      actual: `${disturbed.length} of ${all.length} runs disturbed, at most ${Math.max(...all.map((r) => r.othersCores))} cores`,
      // Speeds come from the quiet runs: a kind with none has disturbed figures.
      pass: [pipelineLarge, pipelineSmall, baseline, reference, scriptSmall, serverPipeline, serverScript].every((x) => x.runs.some((r) => r.othersCores <= QUIET_CORES)),
    },
    {
      name: 'every record landed',
      claim: 'each pipeline run: count() of bookings = stats.written = records, nothing dead-lettered or nacked',
      actual: `${pipelines.filter(landed).length} of ${pipelines.length} runs`,
      pass: pipelines.every(landed),
    },
    {
      name: 'baseline did the same work',
      claim: 'the SQL-mapped baseline stored the same rows as the pipeline (count and row checksum)',
      actual: checksums.size === 1 ? 'same rows, same checksum' : `${checksums.size} different checksums`,
      pass: checksums.size === 1 && baseline.runs.every((r) => r.counted === large.records),
    },
    {
      name: 'throughput',
      claim: `pipeline rows/s ≥ ${GOAL_RATIO} × baseline rows/s (medians of the quiet runs)`,
      actual: ratio.toFixed(3),
      pass: ratio >= GOAL_RATIO,
    },
    ...peerChecks.flat(),
    {
      name: 'RSS flat in input size',
      claim: `${SCALE}× the records peaks within ${RSS_GROWTH_LIMIT * 100}% of the same RSS (highest peaks)`,
      actual: `${ps.peakRssMb} → ${pl.peakRssMb} MiB (${signed(rssGrowth * 100)}%)`,
      pass: Math.abs(rssGrowth) <= RSS_GROWTH_LIMIT,
    },
    {
      name: 'V8 heap bounded',
      claim: `V8 heapUsed peak < ${HEAP_LIMIT_MB} MiB at both sizes (highest peaks)`,
      actual: `${ps.peakHeapMb} / ${pl.peakHeapMb} MiB`,
      pass: Math.max(ps.peakHeapMb, pl.peakHeapMb) < HEAP_LIMIT_MB,
    },
  ];

  return {
    name,
    unit: 'rows/s',
    value: pl.rowsPerSecond,
    baseline: { name: 'chDB INSERT INTO bookings SELECT <globetrek mapping in SQL> FROM file(JSONEachRow)', value: bl.rowsPerSecond },
    ratio: round(ratio, 3),
    peakRssMb: pl.peakRssMb,
    peakHeapMb: pl.peakHeapMb,
    records: large.records,
    bytes: large.bytes,
    seconds: pl.seconds,
    repeat,
    method: [
      `Pipeline: examples/bookings \`bookingPipeline\` (fromFiles → normalize → validate → embedded ClickHouse \`bookings\`), rows/s = records ÷ seconds from start to finished.`,
      'Baseline (the ratio\'s denominator): chDB alone, `INSERT INTO bookings SELECT <the globetrek mapping in SQL> FROM file(…, JSONEachRow)`:',
      'the same file into the same table, the same rows (checked by checksum). Reference: the file into a table of its raw String columns.',
      `Peers, on the 1/${SCALE}-size file, per driver: the hand-written script (bench/peers.ts: read stream, split lines, JSON.parse, the globetrek mapping by hand, ajv with the same schema,`,
      `${SCRIPT_BATCH.toLocaleString('en')}-row JSONEachRow inserts, the next batch built while the previous insert runs) through chDB's insert or \`@clickhouse/client\` (defaults, keep-alive off),`,
      'against the pipeline with its default settings (the server client\'s too); the server is the project\'s 18.16 on loopback, with its own 18.16-shaped bookings table.',
      'Peer ratios are the median of each round\'s own ratio (pipeline ÷ the script run right after it); both sides\' stored rows are checked to be the same (count and checksum).',
      `Rates are medians of ${repeat} interleaved rounds, each run a child process with a fresh chDB directory and the migrations applied,`,
      `counting only the runs during which other processes kept under ${QUIET_CORES} cores busy ("quiet runs") when there are any;`,
      'memory figures are the highest of all runs (RSS and V8 heapUsed sampled every 100 ms; idle RSS = chDB open, tables made, before the work).',
      '"cores busy" = CPU time of the child ÷ wall time; "JS thread busy" = its event-loop utilization.',
    ],
    settings: pipelineSettings(),
    runs: [pl, ps, bl, summary(reference), summary(scriptSmall), summary(serverPipeline), summary(serverScript)],
    checks,
  };
}

function landed(p: PipelineFigures): boolean {
  return p.counted === p.written && p.written === p.records && p.read === p.records && p.deadLettered === 0 && p.nacked === 0;
}

/** The pipeline against the hand-written script on one driver: a goal on the paired ratios, and a claim that both stored the same rows. */
function peerCheck(driver: string, pipeline: Series<PipelineFigures>, peer: Series<ChildFigures>): Check[] {
  const ratios = pipeline.runs.map((p, i) => round(p.rowsPerSecond / peer.runs[i]!.rowsPerSecond, 3));
  const ratio = median(ratios);
  const sums = new Set([...pipeline.runs, ...peer.runs].map((r) => `${r.counted}/${r.checksum}`));
  const records = pipeline.data.records;
  return [
    {
      name: `${PEER_GOAL}× the hand-written script, ${driver}`,
      goal: true,
      claim: `median over ${ratios.length} paired rounds of pipeline rows/s ÷ hand-written script rows/s (${driver}, default settings) ≥ ${PEER_GOAL}`,
      actual: `${ratio.toFixed(3)} (rounds: ${ratios.join(', ')}; pipeline ${Math.round(median(pipeline.runs.map((r) => r.rowsPerSecond))).toLocaleString('en')} vs script ${Math.round(median(peer.runs.map((r) => r.rowsPerSecond))).toLocaleString('en')} rows/s)`,
      pass: ratio >= PEER_GOAL,
    },
    {
      name: `hand-written script did the same work, ${driver}`,
      claim: `the script stored the pipeline's ${records.toLocaleString('en')} rows (count and row checksum, every run)`,
      actual: sums.size === 1 ? `same rows, same checksum` : `${sums.size} different results: ${[...sums].join(', ')}`,
      pass: sums.size === 1 && [...pipeline.runs, ...peer.runs].every((r) => r.counted === records) && pipeline.runs.every(landed),
    },
  ];
}

function summary(series: Series<ChildFigures>): RunFigures {
  const { runs, data } = series;
  // Speeds from the runs nothing else competed with, when there are any.
  const quiet = runs.filter((r) => r.othersCores <= QUIET_CORES);
  const speeds = (quiet.length > 0 ? quiet : runs).map((r) => r.rowsPerSecond).sort((a, b) => a - b);
  const middle = median(speeds);
  const highest = runs.reduce((a, b) => (b.peakRssMb > a.peakRssMb ? b : a));
  return {
    label: series.label,
    records: data.records,
    mb: round(data.bytes / MB, 1),
    seconds: round(data.records / middle, 2),
    rowsPerSecond: Math.round(middle),
    rowsPerSecondRange: [Math.round(speeds[0]!), Math.round(speeds[speeds.length - 1]!)],
    peakRssMb: Math.max(...runs.map((r) => r.peakRssMb)),
    maxRssMb: Math.max(...runs.map((r) => r.maxRssMb)),
    idleRssMb: round(median(runs.map((r) => r.idleRssMb)), 1),
    peakHeapMb: Math.max(...runs.map((r) => r.peakHeapMb)),
    cores: round(median(runs.map((r) => r.cores)), 2),
    eventLoopBusy: round(median(runs.map((r) => r.eventLoopBusy)), 3),
    othersCores: Math.max(...runs.map((r) => r.othersCores)),
    repeats: runs.length,
    quietRepeats: quiet.length,
    rssTimelineMb: highest.rssTimelineMb,
  };
}


/** A CPU profile of the pipeline child on the large file, written into `dir`. */
export async function profile(dir: string): Promise<void> {
  const large = await largeFile();
  await step({ label: 'pipeline under --cpu-prof', data: large, runs: [] }, 'pipeline', ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
}

/** Time, over the whole benchmark, spent at most waiting for other processes to calm down. */
const quietBudget = { ms: 120_000 };

async function step<F extends ChildFigures>(series: Series<F>, mode: Mode, execArgv: string[] = [], driver: Driver = 'embedded'): Promise<F> {
  const { data } = series;
  const load = await quietMachine(QUIET_CORES, quietBudget);
  if (load >= QUIET_CORES) console.log(`  (the machine stays busy: ${load.toFixed(2)} cores in use before the run; going on)`);
  process.stdout.write(`  ${series.label}, ${data.records.toLocaleString('en')} records … `);
  const figures = await runChild<F>(script, [mode, data.file, String(data.records), driver], { execArgv });
  series.runs.push(figures);
  console.log(
    `${Math.round(figures.rowsPerSecond).toLocaleString('en')} rows/s (${figures.seconds.toFixed(1)} s, ${figures.cores} cores busy), ` +
      `peak RSS ${figures.peakRssMb} MiB, peak heap ${figures.peakHeapMb} MiB` +
      (figures.othersCores > QUIET_CORES ? ` (disturbed: other processes kept ${figures.othersCores} cores busy)` : ''),
  );
  return figures;
}

function signed(n: number): string {
  return `${n >= 0 ? '+' : ''}${n.toFixed(1)}`;
}

// ---------------------------------------------------------------------------------------
// The children: each opens a fresh chDB directory, measures one thing, answers, exits

/** The columns of a globetrek line, as the engine reads them. */
const RAW_COLUMNS =
  'booking_no String, booked_on String, last_modified String, status String, type String, origin String, ' +
  'destination String, travel_date String, travellers String, total String, ccy String, agent Tuple(id String, channel String)';

/**
 * The globetrek mapping of examples/bookings/mappings.ts in SQL: Paris wall-clock times
 * to UTC, enum maps, decimal comma, upper-case currency. The rows it stores are checked
 * to be the pipeline's rows (same checksum).
 */
export const MAPPED_INSERT = (file: string) => `
  INSERT INTO bookings (vendor, booking_id, updated_at, status, product, booked_at, travel_date, origin, destination, passengers, total_amount, currency)
  SELECT
    'globetrek',
    booking_no,
    toDateTime64(parseDateTime(if(last_modified = '', booked_on, last_modified), '%d/%m/%Y %H:%i', 'Europe/Paris'), 3, 'UTC'),
    transform(status, ['CONF', 'PEND', 'CANC', 'RFND'], ['confirmed', 'pending', 'cancelled', 'refunded'], ''),
    transform(type, ['AIR', 'RAIL', 'HTL', 'CAR'], ['flight', 'rail', 'hotel', 'car'], ''),
    toDateTime64(parseDateTime(booked_on, '%d/%m/%Y %H:%i', 'Europe/Paris'), 3, 'UTC'),
    toDate(parseDateTime(travel_date, '%d/%m/%Y')),
    origin,
    destination,
    toUInt16(travellers),
    toDecimal64(replaceOne(replaceAll(total, '.', ''), ',', '.'), 4),
    upper(ccy)
  FROM file(${sqlString(file)}, JSONEachRow, ${sqlString(RAW_COLUMNS)})`;

export const CHECKSUM = `
  SELECT count() AS n, toString(sumWithOverflow(cityHash64(vendor, booking_id, updated_at, status, product, booked_at,
         travel_date, origin, destination, passengers, toString(total_amount), currency))) AS checksum
  FROM bookings`;

function sqlString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

type Mode = 'pipeline' | 'script' | 'baseline' | 'raw';
type Driver = 'embedded' | 'server';

/**
 * The bookings tables on 18.16, which has no DateTime64, LowCardinality or deduplication
 * window: the same columns in the types it has. Both sides of a server comparison write here.
 */
const SERVER_TABLES = [
  `CREATE TABLE bookings (vendor String, booking_id String, updated_at DateTime('UTC'), status String, product String, booked_at DateTime('UTC'),
     travel_date Date, origin String, destination String, passengers UInt16, total_amount Decimal(18, 4), currency String, ingested_at DateTime DEFAULT now())
   ENGINE = ReplacingMergeTree(updated_at) ORDER BY (vendor, booking_id)`,
  `CREATE TABLE dead_letters (pipeline String, source String, position String, vendor String, stage String, code String, message String, path String,
     raw String, raw_encoding String, received_at DateTime('UTC'), failed_at DateTime('UTC'))
   ENGINE = ReplacingMergeTree(failed_at) ORDER BY (pipeline, source, position)`,
];

/**
 * The ClickHouse server's process on a server run (none on chDB): what it spends there is
 * the run's own work, not another process competing with it.
 */
function helpersOf(driver: Driver): number[] {
  const pid = driver === 'server' ? listenerPid(SERVER_PORT) : undefined;
  return pid === undefined ? [] : [pid];
}

/**
 * Opens a fresh store with the booking tables, removes it after `use`: a chDB directory
 * with the migrations applied, or a database of its own on the server.
 */
async function withClickHouse<R>(use: (clickhouse: ClickHouseClient, database: string) => Promise<R>, driver: Driver = 'embedded'): Promise<R> {
  if (driver === 'server') {
    const database = `bench_files_${process.pid}_${Date.now()}`;
    const admin = serverClickHouse({ url: SERVER_URL });
    await admin.exec(`CREATE DATABASE ${database}`);
    const clickhouse = serverClickHouse({ url: SERVER_URL, database });
    try {
      for (const sql of SERVER_TABLES) await clickhouse.exec(sql);
      return await use(clickhouse, database);
    } finally {
      await clickhouse.close();
      await admin.exec(`DROP DATABASE IF EXISTS ${database}`);
      await admin.close();
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  try {
    await migrate(clickhouse, migrationsDir);
    return await use(clickhouse, 'default');
  } finally {
    await clickhouse.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function countAndChecksum(clickhouse: ClickHouseClient, table = 'bookings'): Promise<{ counted: number; checksum: string }> {
  if (table !== 'bookings') {
    const [row] = await clickhouse.query<{ n: string | number }>(`SELECT count() AS n FROM ${table}`);
    return { counted: Number(row!.n), checksum: '' };
  }
  const [row] = await clickhouse.query<{ n: string | number; checksum: string }>(CHECKSUM);
  return { counted: Number(row!.n), checksum: row!.checksum };
}

/** What every measured child reports about its run, whatever the work was. */
function measured(
  peaks: MemoryPeaks,
  records: number,
  run: { seconds: number; cores: number; eventLoopBusy: number; othersCores: number },
  idleRssMb: number,
): Omit<ChildFigures, 'counted' | 'checksum'> {
  const { seconds, cores, eventLoopBusy, othersCores } = run;
  return { ...peaks, records, seconds, rowsPerSecond: records / seconds, idleRssMb, cores, eventLoopBusy, othersCores };
}

/** fromFiles → normalize → validate → bookings, via bookingPipeline. */
async function pipelineChild(file: string, records: number, driver: Driver): Promise<PipelineFigures> {
  const memory = sampleMemory(100);
  return withClickHouse(async (clickhouse) => {
    const idleRssMb = round(process.memoryUsage().rss / MB, 1);
    const pipeline = bookingPipeline({ name: 'bench', client: clickhouse, paths: [file], ...pipelineSettings() });
    // From start (sinks opened, source opened) to finished (every record settled).
    const run = await timed(() => pipeline.run(), helpersOf(driver));
    const stats = run.result;
    return {
      ...measured(memory.stop(), records, run, idleRssMb),
      ...(await countAndChecksum(clickhouse)),
      read: stats.read,
      written: stats.written,
      deadLettered: stats.deadLettered,
      nacked: stats.nacked,
    };
  }, driver);
}

/**
 * The hand-written peer: what a developer writes for this one file without tributary.
 * Lines from a read stream, JSON.parse, the globetrek mapping by hand, ajv with the same
 * schema, 20k-row JSONEachRow inserts, the next batch built while the previous one is
 * inserted. Into chDB through its insert (what the embedded driver wraps); into the server
 * through `@clickhouse/client` with its defaults, which writes the row objects itself.
 */
async function scriptChild(file: string, records: number, driver: Driver): Promise<ChildFigures> {
  const memory = sampleMemory(100);
  return withClickHouse(async (clickhouse, database) => {
    const idleRssMb = round(process.memoryUsage().rss / MB, 1);
    // Without keep-alive: a socket the server closed while idle (its keep_alive_timeout, 3 s
    // on 18.16) and the client reused once its timer ran late, on a loaded machine, failed
    // an insert with EPIPE; this script has no retries. A connection per 20k-row insert is noise.
    const http = driver === 'server' ? createClient({ url: SERVER_URL, database, keep_alive: { enabled: false } }) : undefined;
    const settings = { date_time_input_format: 'best_effort' } as const;
    // 18.16 reads decimals only as JSON numbers: the script hands it numbers (the same text).
    const insert = http
      ? (rows: Record<string, unknown>[]) =>
          http.insert({ table: 'bookings', values: rows.map((row) => ({ ...row, total_amount: Number(row.total_amount) })), format: 'JSONEachRow', clickhouse_settings: settings }).then(() => undefined)
      : (rows: Record<string, unknown>[]) => {
          let body = '';
          for (const row of rows) body += JSON.stringify(row) + '\n';
          return clickhouse.insert('bookings', Buffer.from(body), settings);
        };
    const valid = bookingValidator();
    const run = await timed(async () => {
      let rows: Record<string, unknown>[] = [];
      let inserting: Promise<void> = Promise.resolve();
      let stored = 0;
      let rest = '';
      for await (const chunk of createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 })) {
        const lines = (rest + (chunk as string)).split('\n');
        rest = lines.pop()!;
        for (const line of lines) {
          if (line === '') continue;
          const booking = mapGlobetrek(JSON.parse(line));
          if (!booking || !valid(booking)) throw new Error(`line ${stored + rows.length + 1} is not a booking`);
          rows.push(booking);
          if (rows.length === SCRIPT_BATCH) {
            await inserting;
            inserting = insert(rows);
            // Awaited at the next batch; a failure meanwhile must not go unhandled.
            inserting.catch(() => undefined);
            stored += rows.length;
            rows = [];
          }
        }
      }
      await inserting;
      if (rows.length > 0) await insert(rows);
      return stored + rows.length;
    }, helpersOf(driver));
    await http?.close();
    return {
      ...measured(memory.stop(), records, run, idleRssMb),
      ...(await countAndChecksum(clickhouse)),
    };
  }, driver);
}

/**
 * The engine alone, ingesting the same file.
 *
 * `baseline` (the ratio's denominator): the fair comparison is the same job with
 * tributary left out: same input file, same target table (ReplacingMergeTree, sort key,
 * LowCardinality, DateTime64, Decimal), same stored rows (checked by checksum), with the
 * mapping done by the engine's own multithreaded SQL functions. That is the engine's
 * limit for turning this file into these rows.
 *
 * `raw`, reported for reference: the file into a table of its raw vendor columns
 * (String, no conversions, MergeTree with no sort key): the engine's limit for just
 * reading this file, a job the pipeline is not doing, so not the denominator.
 */
async function engineChild(file: string, records: number, mode: 'baseline' | 'raw'): Promise<ChildFigures> {
  const memory = sampleMemory(100);
  return withClickHouse(async (clickhouse) => {
    if (mode === 'raw') await clickhouse.exec(`CREATE TABLE bookings_raw (${RAW_COLUMNS}) ENGINE = MergeTree ORDER BY tuple()`);
    const idleRssMb = round(process.memoryUsage().rss / MB, 1);
    const sql =
      mode === 'raw' ? `INSERT INTO bookings_raw SELECT * FROM file(${sqlString(file)}, JSONEachRow, ${sqlString(RAW_COLUMNS)})` : MAPPED_INSERT(file);
    const run = await timed(() => clickhouse.exec(sql));
    return {
      ...measured(memory.stop(), records, run, idleRssMb),
      ...(await countAndChecksum(clickhouse, mode === 'raw' ? 'bookings_raw' : 'bookings')),
    };
  });
}

if (require.main === module) {
  const [mode, file, count, driver = 'embedded'] = process.argv.slice(2);
  const records = Number(count);
  if (!file || !(records > 0) || (mode !== 'pipeline' && mode !== 'script' && mode !== 'baseline' && mode !== 'raw') || (driver !== 'embedded' && driver !== 'server')) {
    console.error('usage (run by bench/run): files-to-clickhouse.js pipeline|script|baseline|raw FILE RECORDS [embedded|server]');
    process.exit(2);
  }
  answerParent(() =>
    mode === 'pipeline' ? pipelineChild(file, records, driver) : mode === 'script' ? scriptChild(file, records, driver) : engineChild(file, records, mode),
  );
}

export const benchmark: Benchmark = { name, run, profile };
