/**
 * embedded-stalls: inserts into the embedded engine while it removes the parts its merges
 * left, with the engine as `embeddedClickHouse` configures it against chDB's defaults, in
 * the same run.
 *
 * A webhook answers its senders once their insert is in, so an insert that stalls holds
 * every caller up. Each side is a process of its own (the engine is configured once a
 * process) making one insert of 200 rows after another, 10 ms apart, into a MergeTree
 * table for 45 s: long enough for the cleanup thread, which first runs 30-40 s after the
 * table is loaded, to remove the parts merged away meanwhile. The figures: the rows stored
 * in the worst second (the headline), the slowest insert, and how many took over 40 ms.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Session } from 'chdb';
import { embeddedClickHouse } from '../connectors/clickhouse';
import { answerParent, MB, median, quantile, round, runChild, sampleMemory, table, type MemoryPeaks } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';
import { TABLE } from './webhook';

const name = 'embedded-stalls';
const SECONDS = 45;
const ROWS_PER_INSERT = 200;
const GAP_MS = 10;
/** An insert slower than this is counted as stalled (a few times the usual 3-8 ms). */
const STALLED_MS = 40;

type Mode = 'tributary' | 'defaults';

interface ChildFigures extends MemoryPeaks {
  /** Each insert's end (ms from the first insert's start) and duration (ms). */
  ends: number[];
  durations: number[];
  idleRssMb: number;
  bytes: number;
}

/** The rows of insert `n` as JSONEachRow. */
function body(n: number): Buffer {
  let text = '';
  for (let i = 0; i < ROWS_PER_INSERT; i++) {
    text += `{"webhook_id":"w${n}-${Math.floor(i / 10)}","record":${(i % 10) + 1},"booking_id":"b${n}-${i}","status":"confirmed","amount":"${i}99.50","currency":"EUR","updated_at":"2026-03-01 10:00:00.000"}\n`;
  }
  return Buffer.from(text);
}

async function child(mode: Mode): Promise<ChildFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-stalls-'));
  try {
    let insert: (rows: Buffer) => Promise<void>;
    let close: () => Promise<void> | void;
    if (mode === 'tributary') {
      const clickhouse = embeddedClickHouse({ path: dir });
      await clickhouse.exec(TABLE);
      insert = (rows) => clickhouse.insert('bookings', rows, {});
      close = () => clickhouse.close();
    } else {
      // chDB as it opens by default (the store's own directory, no configuration given).
      const { Session } = require('chdb') as typeof import('chdb');
      const session: Session = new Session(dir);
      await session.queryAsync(TABLE, { format: 'TSV' });
      insert = async (rows) => void (await session.insert({ table: 'bookings', values: rows, format: 'JSONEachRow' }));
      close = () => session.close();
    }
    const idleRssMb = round(process.memoryUsage().rss / MB, 1);
    const memory = sampleMemory();
    const ends: number[] = [];
    const durations: number[] = [];
    let bytes = 0;
    const started = performance.now();
    for (let n = 1; performance.now() - started < SECONDS * 1000; n++) {
      const rows = body(n);
      bytes += rows.length;
      const at = performance.now();
      await insert(rows);
      const end = performance.now();
      ends.push(end - started);
      durations.push(end - at);
      await new Promise((resolve) => setTimeout(resolve, GAP_MS));
    }
    const peaks = memory.stop();
    await close();
    return { ...peaks, ends, durations, idleRssMb, bytes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Summary {
  inserts: number;
  rowsPerSecond: number;
  /** Rows whose insert ended in the worst whole second (the first and last seconds left out). */
  worstSecondRows: number;
  medianSecondRows: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  stalled: number;
}

function summary(f: ChildFigures): Summary {
  const seconds = new Array<number>(SECONDS + 1).fill(0);
  for (const end of f.ends) seconds[Math.min(SECONDS, Math.floor(end / 1000))]! += ROWS_PER_INSERT;
  const whole = seconds.slice(1, SECONDS - 1);
  return {
    inserts: f.durations.length,
    rowsPerSecond: round((f.durations.length * ROWS_PER_INSERT) / (f.ends[f.ends.length - 1]! / 1000), 0),
    worstSecondRows: Math.min(...whole),
    medianSecondRows: median(whole),
    p50Ms: round(quantile(f.durations, 0.5), 1),
    p99Ms: round(quantile(f.durations, 0.99), 1),
    maxMs: round(Math.max(...f.durations), 1),
    stalled: f.durations.filter((d) => d > STALLED_MS).length,
  };
}

async function run(): Promise<BenchmarkResult> {
  const figures = {} as Record<Mode, ChildFigures>;
  const summaries = {} as Record<Mode, Summary>;
  for (const mode of ['tributary', 'defaults'] as const) {
    process.stdout.write(`  ${mode === 'tributary' ? 'embeddedClickHouse' : "chDB's defaults"}: ${SECONDS} s of inserts … `);
    figures[mode] = await runChild<ChildFigures>(__filename, [mode]);
    const s = (summaries[mode] = summary(figures[mode]));
    console.log(`${s.inserts} inserts, worst second ${s.worstSecondRows.toLocaleString('en')} rows (median ${s.medianSecondRows.toLocaleString('en')}), slowest ${s.maxMs} ms, ${s.stalled} over ${STALLED_MS} ms`);
  }
  const ours = summaries.tributary;
  const theirs = summaries.defaults;
  console.log(
    table(
      ['engine', 'inserts', 'rows/s', 'worst second', 'median second', 'p50 ms', 'p99 ms', 'slowest ms', `over ${STALLED_MS} ms`],
      (['tributary', 'defaults'] as const).map((m) => [m === 'tributary' ? 'embeddedClickHouse' : "chDB's defaults", summaries[m].inserts, summaries[m].rowsPerSecond, summaries[m].worstSecondRows, summaries[m].medianSecondRows, summaries[m].p50Ms, summaries[m].p99Ms, summaries[m].maxMs, summaries[m].stalled]),
    ),
  );
  const checks: Check[] = [
    {
      name: 'no insert stalls',
      claim: `no insert of ${ROWS_PER_INSERT} rows takes over ${STALLED_MS} ms in ${SECONDS} s, while the cleanup thread removes the parts merged away`,
      actual: `${ours.stalled} of ${ours.inserts} over ${STALLED_MS} ms, slowest ${ours.maxMs} ms (chDB's defaults: ${theirs.stalled}, slowest ${theirs.maxMs} ms)`,
      pass: ours.stalled === 0,
    },
    {
      name: 'the worst second keeps pace',
      claim: 'rows stored in the worst second at least half the median second',
      actual: `${ours.worstSecondRows.toLocaleString('en')} vs median ${ours.medianSecondRows.toLocaleString('en')} (chDB's defaults: ${theirs.worstSecondRows.toLocaleString('en')} vs ${theirs.medianSecondRows.toLocaleString('en')})`,
      pass: ours.worstSecondRows >= ours.medianSecondRows / 2,
    },
  ];
  const runFigures = (mode: Mode, label: string): RunFigures => {
    const f = figures[mode];
    return { label, records: summaries[mode].inserts * ROWS_PER_INSERT, mb: round(f.bytes / MB, 1), seconds: SECONDS, rowsPerSecond: summaries[mode].rowsPerSecond, peakRssMb: f.peakRssMb, maxRssMb: f.maxRssMb, idleRssMb: f.idleRssMb, peakHeapMb: f.peakHeapMb };
  };
  return {
    name,
    unit: 'rows/s',
    value: ours.worstSecondRows,
    baseline: { name: "chDB's defaults: the worst second's rows", value: theirs.worstSecondRows },
    ratio: round(ours.worstSecondRows / Math.max(1, theirs.worstSecondRows), 3),
    peakRssMb: Math.max(figures.tributary.peakRssMb, figures.defaults.peakRssMb),
    peakHeapMb: Math.max(figures.tributary.peakHeapMb, figures.defaults.peakHeapMb),
    records: (ours.inserts + theirs.inserts) * ROWS_PER_INSERT,
    bytes: figures.tributary.bytes + figures.defaults.bytes,
    seconds: 2 * SECONDS,
    method: [
      `Each side a process of its own, one after the other: one insert of ${ROWS_PER_INSERT} rows (JSONEachRow, the webhook benchmark's table) after another, ${GAP_MS} ms apart, for ${SECONDS} s; the engine's cleanup thread first runs 30-40 s after the table is loaded and removes the parts merged away until then.`,
      `embeddedClickHouse gives the engine its own configuration, in which that thread removes the parts itself (MergeTree concurrent_part_removal_threshold raised); chDB's defaults remove them with a pool of threads once there are more than 100.`,
      `Headline: rows whose insert ended in the worst whole second (the first and last left out): ${ours.worstSecondRows.toLocaleString('en')} against ${theirs.worstSecondRows.toLocaleString('en')} with chDB's defaults (median second ${ours.medianSecondRows.toLocaleString('en')} and ${theirs.medianSecondRows.toLocaleString('en')}). Inserts over ${STALLED_MS} ms: ${ours.stalled} against ${theirs.stalled}; slowest ${ours.maxMs} against ${theirs.maxMs} ms; p99 ${ours.p99Ms} against ${theirs.p99Ms} ms.`,
    ],
    settings: { seconds: SECONDS, rowsPerInsert: ROWS_PER_INSERT, gapMs: GAP_MS, stalledMs: STALLED_MS },
    runs: [runFigures('tributary', 'embeddedClickHouse'), runFigures('defaults', "chDB's defaults")],
    checks,
  };
}

if (require.main === module) {
  const [mode] = process.argv.slice(2);
  if (mode !== 'tributary' && mode !== 'defaults') {
    console.error('usage (run by bench/run): embedded-stalls.js tributary|defaults');
    process.exit(2);
  }
  answerParent(() => child(mode));
}

export const benchmark: Benchmark = { name, run };
