import type { Machine } from './harness';

/** One claim a benchmark checks, and whether it held. */
export interface Check {
  name: string;
  claim: string;
  actual: string;
  pass: boolean;
  /** A speed or latency target, not a correctness claim: `--smoke` runs report it without failing on it. */
  goal?: boolean;
}

/** Figures of one measured run (one child process), or the summary of its repeats. */
export interface RunFigures {
  label: string;
  records: number;
  /** Input size, MiB. */
  mb: number;
  /** Seconds at the median rate. */
  seconds: number;
  /** Median over the (quiet) repeats. */
  rowsPerSecond: number;
  /** Slowest and fastest of the (quiet) repeats. */
  rowsPerSecondRange?: [number, number];
  /** Number of runs summarized; the memory figures are the highest of them. */
  repeats?: number;
  /** Of those, the runs nothing else competed with: the speeds are theirs (all runs' when none). */
  quietRepeats?: number;
  /** Peak RSS seen by the 100 ms sampler, MiB. */
  peakRssMb: number;
  /** The kernel's RSS high-water mark of the process, MiB. */
  maxRssMb: number;
  /** RSS with chDB open and the tables made, before the measured work, MiB. */
  idleRssMb: number;
  peakHeapMb: number;
  /** Median CPU time ÷ wall time of the process during the work (2 = both cores busy). */
  cores?: number;
  /** Median share of the work's time the main (JS) thread was busy. */
  eventLoopBusy?: number;
  /** Highest of the runs: cores other processes kept busy meanwhile. */
  othersCores?: number;
  /** Highest RSS per second (from child start) of the run with the highest peak, MiB. */
  rssTimelineMb?: number[];
}

/** What a benchmark measures; run() adds machine and date before writing it out. */
export interface BenchmarkResult {
  name: string;
  /** 's' for a time (lower is better). */
  unit: 'rows/s' | 'requests/s' | 's';
  /** The headline figure, in `unit`. */
  value: number;
  baseline: { name: string; value: number };
  /** value ÷ baseline.value, or (where `settings.ratio` says so) the median of each round's own ratio */
  ratio: number;
  peakRssMb: number;
  peakHeapMb: number;
  records: number;
  bytes: number;
  seconds: number;
  /** How the figures were obtained, a line each, for RESULTS.md. */
  method?: string[];
  /** Rounds of measurement behind the figures. */
  repeat?: number;
  settings?: unknown;
  runs: RunFigures[];
  checks: Check[];
}

export interface StoredResult extends BenchmarkResult {
  machine: Machine;
  date: string;
  /** Commit measured (`abc1234`, `+ uncommitted changes` when the tree was dirty). */
  revision?: string;
  /** Wall time of the whole benchmark, data generation and every child included, s. */
  wallSeconds?: number;
}

export interface Benchmark {
  name: string;
  run(options?: { repeat?: number }): Promise<BenchmarkResult>;
  /** Runs the measured code once under `node --cpu-prof`, profiles written into `dir`. */
  profile?(dir: string): Promise<void>;
}
