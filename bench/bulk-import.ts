/**
 * bulk-import: `bulkImport` (the pushdown runner) of the 2M-record globetrek file into the
 * embedded store, against the engine ingesting the same file by itself with the mapping
 * written in SQL by hand, and the JS pipeline as a second reference. Same file as
 * files-to-clickhouse (bench/data/globetrek), same child-process pattern: one chDB
 * directory per child, runs one after the other, rounds interleaved.
 *
 *   pushdown   bulkImport with the plan planPushdown compiles from the globetrek mapping and the booking schema
 *   baseline   chDB `INSERT INTO bookings SELECT <the mapping in SQL> FROM file(…, JSONEachRow)`
 *   pipeline   bookingPipeline (fromFiles → normalize → validate → bookings)
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedClickHouse, migrate, type ClickHouseClient } from '../index';
import { migrationsDir } from '../examples/bookings/paths';
import { bookingPipeline, bookingTransform } from '../examples/bookings/pipeline';
import { bulkImport } from '../pushdown/import';
import type { PushdownPlan } from '../pushdown/plan';
import { mappings } from '../examples/bookings/mappings';
import { bookingSchema } from '../examples/bookings/schema';
import { planPushdown } from '../pushdown/compile';
import { answerParent, MB, median, type MemoryPeaks, quietMachine, round, runChild, sampleMemory, timed } from './harness';
import { CHECKSUM, largeFile, MAPPED_INSERT } from './files-to-clickhouse';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

export const name = 'bulk-import';

const VENDOR = 'globetrek';
const GOAL_RATIO = 0.5;

interface ChildFigures extends MemoryPeaks {
  records: number;
  seconds: number;
  rowsPerSecond: number;
  cores: number;
  othersCores: number;
  counted: number;
  checksum: string;
  /** Pushdown and pipeline runs: records read, stored by the engine / JS, dead-lettered. */
  read?: number;
  storedByEngine?: number;
  written?: number;
  deadLettered?: number;
  planSource?: string;
}

/** The plan the compiler gives for globetrek, the booking pipeline's mapping and schema, over the store's bookings columns. */
async function globetrek(clickhouse: ClickHouseClient): Promise<{ plan: PushdownPlan; source: string }> {
  const columns = (await clickhouse.query<{ name: string; type: string; default_kind: string }>(
    "SELECT name, type, default_kind FROM system.columns WHERE database = currentDatabase() AND table = 'bookings' ORDER BY position",
  )).map((c) => ({ name: c.name, type: c.type, defaultKind: c.default_kind }));
  const plan = planPushdown({ vendor: VENDOR, mapping: mappings[VENDOR]!, vendorField: 'vendor', schema: bookingSchema, formats: 'fast', columns });
  if (!plan.pushable) throw new Error(`the globetrek mapping is not pushable: ${plan.reasons.join('; ')}`);
  return { plan, source: 'planPushdown' };
}

type Mode = 'pushdown' | 'baseline' | 'pipeline';

export async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 3;
  // The globetrek file files-to-clickhouse reads (generated there when missing).
  const { file, records, bytes } = await largeFile();
  const series: Record<Mode, ChildFigures[]> = { pushdown: [], baseline: [], pipeline: [] };
  const ratios: number[] = [];
  const budget = { ms: 120_000 };
  for (let r = 1; r <= repeat; r++) {
    console.log(`round ${r}/${repeat}`);
    // Paired: the pushdown run and the baseline run next to each other, in alternating order.
    // The JS pipeline is a reference, not part of the ratio: one run of it is enough (the
    // suite has 15 minutes).
    const order: Mode[] = [...(r % 2 === 1 ? (['pushdown', 'baseline'] as const) : (['baseline', 'pushdown'] as const)), ...(r === 1 ? (['pipeline'] as const) : [])];
    for (const mode of order) {
      await quietMachine(0.2, budget);
      process.stdout.write(`  ${mode} … `);
      const figures = await runChild<ChildFigures>(__filename, [mode, file, String(records)], {});
      series[mode].push(figures);
      console.log(`${Math.round(figures.rowsPerSecond).toLocaleString('en')} rows/s (${figures.seconds.toFixed(1)} s, ${figures.cores} cores, others ${figures.othersCores})`);
    }
    ratios.push(series.pushdown[r - 1]!.rowsPerSecond / series.baseline[r - 1]!.rowsPerSecond);
  }
  const summary = (label: string, runs: ChildFigures[]): RunFigures => {
    const speeds = runs.map((x) => x.rowsPerSecond).sort((a, b) => a - b);
    const middle = median(speeds);
    return {
      label,
      records,
      mb: round(bytes / MB, 1),
      seconds: round(records / middle, 2),
      rowsPerSecond: Math.round(middle),
      rowsPerSecondRange: [Math.round(speeds[0]!), Math.round(speeds[speeds.length - 1]!)],
      repeats: runs.length,
      peakRssMb: Math.max(...runs.map((x) => x.peakRssMb)),
      maxRssMb: Math.max(...runs.map((x) => x.maxRssMb)),
      idleRssMb: 0,
      peakHeapMb: Math.max(...runs.map((x) => x.peakHeapMb)),
      cores: round(median(runs.map((x) => x.cores)), 2),
      othersCores: Math.max(...runs.map((x) => x.othersCores)),
    };
  };
  const pd = summary(`pushdown (${series.pushdown[0]!.planSource})`, series.pushdown);
  const bl = summary('baseline: chDB, mapping in SQL', series.baseline);
  const pl = summary('reference: JS pipeline', series.pipeline);
  const ratio = median(ratios);
  const checksums = new Set([...series.pushdown, ...series.baseline, ...series.pipeline].map((x) => `${x.counted}:${x.checksum}`));
  const accounted = series.pushdown.every((x) => x.read === records && x.storedByEngine! + x.written! + x.deadLettered! === x.read && x.counted === records);
  const checks: Check[] = [
    {
      name: 'same rows',
      claim: 'pushdown, baseline and pipeline store the same rows (count and row checksum)',
      actual: checksums.size === 1 ? `same rows, same checksum (${[...checksums][0]})` : `${checksums.size} different: ${[...checksums].join(', ')}`,
      pass: checksums.size === 1,
    },
    {
      name: 'every record accounted for',
      claim: 'each pushdown run: read = records = stored by the engine + stored by JS + dead-lettered, count() = records',
      actual: series.pushdown.map((x) => `${x.read} = ${x.storedByEngine} + ${x.written} + ${x.deadLettered}`).join('; '),
      pass: accounted,
    },
    {
      name: 'throughput',
      claim: `pushdown rows/s ≥ ${GOAL_RATIO} × baseline rows/s (median of the rounds' paired ratios)`,
      actual: `${ratio.toFixed(3)} (rounds: ${ratios.map((x) => x.toFixed(3)).join(', ')})`,
      pass: ratio >= GOAL_RATIO,
      goal: true,
    },
  ];
  return {
    name,
    unit: 'rows/s',
    value: pd.rowsPerSecond,
    baseline: { name: 'chDB INSERT INTO bookings SELECT <globetrek mapping in SQL> FROM file(JSONEachRow)', value: bl.rowsPerSecond },
    ratio: round(ratio, 3),
    peakRssMb: pd.peakRssMb,
    peakHeapMb: pd.peakHeapMb,
    records,
    bytes,
    seconds: pd.seconds,
    repeat,
    method: [
      '`bulkImport` (pushdown/import.ts) of the globetrek file into `bookings` of a fresh embedded store, with the plan `planPushdown` compiles from the booking pipeline\'s mapping and schema.',
      'Baseline: chDB alone, `INSERT INTO bookings SELECT <the globetrek mapping in SQL> FROM file(…, JSONEachRow)`; reference: the JS booking pipeline.',
      `Each run a child process with a fresh chDB directory; ${repeat} rounds, pushdown and baseline paired (order alternating); the ratio is the median of the rounds' own ratios.`,
    ],
    settings: { ratio: 'median of paired per-round ratios', ratios: ratios.map((x) => round(x, 3)) },
    runs: [pd, bl, pl],
    checks,
  };
}


// ---------------------------------------------------------------------------------------
// The children

async function child(mode: Mode, file: string, records: number): Promise<ChildFigures> {
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-'));
  const clickhouse: ClickHouseClient = embeddedClickHouse({ path: dir });
  try {
    await migrate(clickhouse, migrationsDir);
    let extra: Partial<ChildFigures> = {};
    const run = await timed(async () => {
      if (mode === 'baseline') return clickhouse.exec(MAPPED_INSERT(file));
      if (mode === 'pipeline') {
        const stats = await bookingPipeline({ name: 'bench', client: clickhouse, paths: [file] }).run();
        extra = { read: stats.read, written: stats.written, deadLettered: stats.deadLettered };
        return;
      }
      const { plan, source } = await globetrek(clickhouse);
      // Chunk files in memory where the system has a RAM disk; the OS temporary directory otherwise.
      const tempDir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
      // TRIBUTARY_BENCH_CHUNK_MB tries another chunk size without editing this file.
      const chunkBytes = Number(process.env.TRIBUTARY_BENCH_CHUNK_MB ?? 0) * MB || undefined;
      const result = await bulkImport({ client: clickhouse, files: [file], table: 'bookings', plan, transform: bookingTransform(), vendor: VENDOR, name: 'bench', tempDir, ...(chunkBytes && { chunkBytes }) });
      extra = { read: result.read, storedByEngine: result.storedByEngine, written: result.storedByJs, deadLettered: result.deadLettered, planSource: source };
    });
    const [row] = await clickhouse.query<{ n: string | number; checksum: string }>(CHECKSUM);
    const { seconds, cores, othersCores } = run;
    return { ...memory.stop(), records, seconds, rowsPerSecond: records / seconds, cores, othersCores, counted: Number(row!.n), checksum: row!.checksum, ...extra };
  } finally {
    await clickhouse.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const [mode, file, records] = process.argv.slice(2);
  if (!file || !(Number(records) > 0) || (mode !== 'pushdown' && mode !== 'baseline' && mode !== 'pipeline')) {
    console.error('usage (run by bench/run): bulk-import.js pushdown|baseline|pipeline FILE RECORDS');
    process.exit(2);
  }
  answerParent(() => child(mode, file, Number(records)));
}

export const benchmark: Benchmark = { name, run };
