/**
 * Runs the benchmarks: all of them, or those named on the command line.
 *
 *   npm run bench                                   every benchmark
 *   node dist/bench/run.js files-to-clickhouse      just that one
 *   node dist/bench/run.js --repeat=1 files-to-clickhouse   one round only
 *   node dist/bench/run.js --smoke --repeat=1 webhook       fail on correctness checks only, not on speed goals (CI)
 *   node dist/bench/run.js --profile files-to-clickhouse
 *       runs the measured code once under `node --cpu-prof` (profile in the OS temp
 *       directory, never the repository) and prints the top functions by self time
 *
 * Each benchmark runs in a child process of its own. Each run prints a table, writes bench/results/<name>.json and rewrites bench/RESULTS.md
 * and bench/results/chart.svg from every stored result. A run of every benchmark also
 * records its total time in bench/results/suite.json: the whole suite is meant to finish
 * within 15 minutes on a 2-core machine, data generation included; suite.json says whether
 * that run generated its data.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSelfTimes, selfTimes } from './cpuprofile';
import { renderChart } from './chart';
import { MUTATION_FILE, mutationMarkdown, type MutationSummary } from './mutation';
import { answerParent, benchDir, dataDir, machine, machineBusyMs, ownAndChildrenCpuMs, resultsDir, runChild, table, type Machine } from './harness';
import type { Benchmark, BenchmarkResult, StoredResult } from './types';

/**
 * Every benchmark, in the order `npm run bench` runs them: the name of a module in bench/
 * that exports `benchmark`. A new benchmark is one more entry. Modules load when they run.
 */
const BENCHMARK_NAMES: readonly string[] = ['operators', 'sinks', 'formats', 'files-to-clickhouse', 'bulk-import', 'kafka-to-clickhouse', 'webhook', 'embedded-stalls', 'query-endpoint', 'cache', 'topology-recovery'];

const BENCHMARKS: readonly { name: string; load(): Benchmark }[] = BENCHMARK_NAMES.map((name) => ({
  name,
  load() {
    const { benchmark } = require(`./${name}`) as { benchmark: Benchmark };
    if (benchmark?.name !== name) throw new Error(`bench/${name} must export a benchmark named ${name}`);
    return benchmark;
  },
}));

/** What the last run of the whole suite took. */
interface SuiteRun {
  date: string;
  machine: Machine;
  wallSeconds: number;
  /** Cores the rest of the machine kept busy on average meanwhile: above ~0.2, the times are pessimistic. */
  othersCores?: number;
  /** Cores the suite itself kept busy on average (its processes and their children). */
  ownCores?: number;
  /** Each benchmark's wall time, and its error when it failed. */
  benchmarks: { name: string; wallSeconds: number; error?: string }[];
  /** The commit measured (see {@link revision}). */
  revision?: string;
  /** True when bench/data was empty at the start: the time includes generating every input. */
  fromFreshData?: boolean;
}
const SUITE_FILE = 'suite.json';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profiling = args.includes('--profile');
  const smoke = args.includes('--smoke');
  const repeatArg = args.find((a) => a.startsWith('--repeat='));
  const repeat = repeatArg ? Number(repeatArg.slice('--repeat='.length)) : undefined;
  const names = args.filter((a) => !a.startsWith('--'));
  const unknown = names.filter((n) => !BENCHMARKS.some((b) => b.name === n));
  if (args.includes('--markdown')) {
    writeFileSync(join(benchDir, 'RESULTS.md'), resultsMarkdown(storedResults()));
    return;
  }
  const badFlag = args.some((a) => a.startsWith('--') && a !== '--profile' && a !== '--smoke' && a !== '--measure' && a !== repeatArg);
  if (unknown.length > 0 || badFlag || (repeat !== undefined && !(Number.isInteger(repeat) && repeat >= 1))) {
    console.error(`usage: run.js [--profile] [--smoke] [--repeat=N] [${BENCHMARKS.map((b) => b.name).join(' ')}]`);
    if (unknown.length > 0) console.error(`unknown benchmark: ${unknown.join(', ')}`);
    process.exit(2);
  }
  const chosen = names.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => names.includes(b.name));

  // The child side of measureInChild: one benchmark, its result sent to the parent.
  if (args.includes('--measure')) {
    answerParent(() => chosen[0]!.load().run(repeat === undefined ? {} : { repeat }));
    return;
  }

  if (profiling) {
    for (const bench of chosen) await profileOne(bench.load());
    return;
  }

  mkdirSync(resultsDir, { recursive: true });
  let failed = 0;
  const suiteStarted = Date.now();
  const busyAtStart = machineBusyMs();
  const ownAtStart = ownAndChildrenCpuMs();
  const fromFreshData = !existsSync(dataDir) || readdirSync(dataDir).length === 0;
  const suite: SuiteRun = { date: new Date().toISOString(), machine: machine(), wallSeconds: 0, benchmarks: [], revision: revision(), fromFreshData };
  for (const bench of chosen) {
    console.log(`\n== ${bench.name}`);
    const started = Date.now();
    let measured: BenchmarkResult;
    try {
      measured = await measureInChild(bench.name, repeat);
    } catch (error) {
      // One broken benchmark (a service gone mid-run) must not cost the others their figures.
      const wallSeconds = Math.round((Date.now() - started) / 1000);
      console.error(`\n${bench.name} failed after ${wallSeconds} s; its stored result is left as it was:\n`, error);
      suite.benchmarks.push({ name: bench.name, wallSeconds, error: (error instanceof Error ? error.message : String(error)).split('\n')[0]! });
      process.exitCode = 1;
      continue;
    }
    const wallSeconds = Math.round((Date.now() - started) / 1000);
    const result: StoredResult = { ...measured, machine: machine(), date: new Date().toISOString(), revision: revision(), wallSeconds };
    suite.benchmarks.push({ name: bench.name, wallSeconds });
    writeFileSync(join(resultsDir, `${bench.name}.json`), JSON.stringify(result, null, 2) + '\n');
    console.log(`\n${report(result)}\n\n(${((Date.now() - started) / 1000).toFixed(0)} s; written to bench/results/${bench.name}.json)`);
    // A smoke run (CI on shared runners, whose figures mean little) fails on correctness only.
    failed += result.checks.filter((c) => !c.pass && !(smoke && c.goal)).length;
  }
  if (chosen.length === BENCHMARKS.length && repeat === undefined) {
    const wallMs = Date.now() - suiteStarted;
    suite.wallSeconds = Math.round(wallMs / 1000);
    suite.ownCores = Math.round(((ownAndChildrenCpuMs() - ownAtStart) / wallMs) * 100) / 100;
    suite.othersCores = Math.max(0, Math.round(((machineBusyMs() - busyAtStart) / wallMs - suite.ownCores) * 100) / 100);
    writeFileSync(join(resultsDir, SUITE_FILE), JSON.stringify(suite, null, 2) + '\n');
    console.log(`\nwhole suite: ${minutes(suite.wallSeconds)}; other processes kept ${suite.othersCores} cores busy on average meanwhile`);
  }
  const stored = storedResults();
  writeFileSync(join(resultsDir, 'chart.svg'), renderChart(stored));
  writeFileSync(join(benchDir, 'RESULTS.md'), resultsMarkdown(stored));
  if (failed > 0) {
    console.log(`\n${failed} check(s) failed`);
    process.exitCode = 1;
  }
}

/**
 * Runs one benchmark in a process of its own: what an earlier benchmark left on the heap
 * (the sink benchmark ran with 800 MiB of it after the operators) must not slow the next.
 */
function measureInChild(name: string, repeat: number | undefined): Promise<BenchmarkResult> {
  return runChild<BenchmarkResult>(__filename, ['--measure', name, ...(repeat === undefined ? [] : [`--repeat=${repeat}`])], { timeoutMs: 30 * 60_000 });
}

/**
 * The commit measured, and whether the working tree had changes (read-only git calls).
 * Stored results are not code: a tree whose only changes are results counts as clean.
 */
function revision(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: join(benchDir, '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const dirty = git('status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results', ':!bench/RESULTS.md') !== '';
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' + uncommitted changes' : ''}`;
  } catch {
    return 'unknown';
  }
}

async function profileOne(bench: Benchmark): Promise<void> {
  if (!bench.profile) {
    console.log(`${bench.name}: no profile run`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), `tributary-${bench.name}-profile-`));
  await bench.profile(dir);
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    console.log(`\n${join(dir, file)}\n${formatSelfTimes(selfTimes(join(dir, file)), 15)}`);
  }
}

function report(result: StoredResult): string {
  const runs = table(
    ['run', 'records', 'MiB', 's', 'rows/s (median)', 'min–max', 'peak RSS MiB', 'idle RSS MiB', 'peak heap MiB', 'cores', 'JS thread', 'quiet', 'others'],
    result.runs.map((r) => [
      r.label,
      r.records.toLocaleString('en'),
      r.mb,
      r.seconds,
      r.rowsPerSecond.toLocaleString('en'),
      range(r.rowsPerSecondRange),
      r.peakRssMb,
      r.idleRssMb,
      r.peakHeapMb,
      r.cores ?? '',
      percent(r.eventLoopBusy),
      r.repeats === undefined ? '' : `${r.quietRepeats ?? r.repeats}/${r.repeats}`,
      r.othersCores ?? '',
    ]),
  );
  const checks = table(
    ['check', 'result', 'actual', 'claim'],
    result.checks.map((c) => [c.name, c.pass ? 'PASS' : 'FAIL', c.actual, c.claim]),
  );
  return `${runs}\n\nratio ${result.ratio} (${result.value.toLocaleString('en')} vs ${result.baseline.value.toLocaleString('en')} ${result.unit})\n\n${checks}`;
}

function range(r: [number, number] | undefined): string {
  return r ? r.map((n) => n.toLocaleString('en')).join('–') : '';
}

function percent(share: number | undefined): string {
  return share === undefined ? '' : `${Math.round(share * 100)}%`;
}

function minutes(seconds: number): string {
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** Every benchmark's stored result, in the suite's order. */
function storedResults(): StoredResult[] {
  const order = (name: string) => {
    const i = BENCHMARKS.findIndex((b) => b.name === name);
    return i < 0 ? BENCHMARKS.length : i;
  };
  return readdirSync(resultsDir)
    .filter((f) => f.endsWith('.json') && f !== SUITE_FILE)
    .map((f) => JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as StoredResult)
    .sort((a, b) => order(a.name) - order(b.name) || a.name.localeCompare(b.name));
}

function readSuite(): SuiteRun | undefined {
  try {
    return JSON.parse(readFileSync(join(resultsDir, SUITE_FILE), 'utf8')) as SuiteRun;
  } catch {
    return undefined;
  }
}

/** bench/RESULTS.md, from every result stored in bench/results/. */
function resultsMarkdown(results: StoredResult[]): string {
  const suite = readSuite();
  const out: string[] = [
    '# Benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts) from `bench/results/*.json`; do not edit by hand.',
    '',
    'How to run: `npm run bench` (all), or `npm run build && node dist/bench/run.js files-to-clickhouse` (one);',
    '`--repeat=N` sets the rounds (default: 1 or 2 per benchmark, so the suite fits in 15 minutes); `--profile` prints a CPU profile of the pipeline instead (webhook: of both servers, and then the bytes each allocates per request, by function: a figure that load on the machine barely moves).',
    'The data files are generated once into `bench/data/` (git-ignored) and reused.',
    '',
    '## Summary',
    '',
    ...(suite
      ? [
          `Last full run (\`npm run bench\`${suite.fromFreshData === undefined ? '' : suite.fromFreshData ? ', from fresh data: generating it included' : ', on data generated by an earlier run'}): **${minutes(suite.wallSeconds)}**${suite.revision ? ` at ${suite.revision}` : ''} on ${suite.machine.cores} × ${suite.machine.cpus}, ` +
            `${suite.machine.memGb} GB RAM, Node ${suite.machine.node} (${suite.machine.platform}), started ${suite.date.slice(0, 16).replace('T', ' ')} UTC` +
            ` (${suite.benchmarks.map((b) => `${b.name} ${minutes(b.wallSeconds)}${b.error ? ' **failed**' : ''}`).join(', ')}).` +
            (suite.othersCores === undefined
              ? ''
              : ` Meanwhile the suite kept ${suite.ownCores} cores busy and other processes ${suite.othersCores}` +
                (suite.othersCores > 0.2 ? ': the machine was shared, so these times and rates are pessimistic.' : '.')),
          ...suite.benchmarks.filter((b) => b.error).map((b) => `- ${b.name} failed in that run: \`${b.error!.split('\n')[0]}\`; its section below is from an earlier run.`),
          '',
        ]
      : []),
    '![Throughput ratio to baseline and peak RSS per benchmark](results/chart.svg)',
    '',
    '| benchmark | headline | baseline (same run) | ratio | peak RSS MiB | checks | measured | took |',
    '|---|---:|---|---:|---:|---:|---|---:|',
    ...results.map(
      (r) =>
        `| [${r.name}](#${r.name}) | ${r.value.toLocaleString('en')} ${r.unit} | ${r.baseline.name}: ${r.baseline.value.toLocaleString('en')} ${r.unit} | ` +
        `${r.ratio} | ${r.peakRssMb} | ${r.checks.filter((c) => c.pass).length}/${r.checks.length} | ${r.date.slice(0, 16).replace('T', ' ')} | ` +
        `${r.wallSeconds === undefined ? '' : minutes(r.wallSeconds)} |`,
    ),
  ];
  for (const r of results) {
    const m = r.machine;
    out.push(
      '',
      `## ${r.name}`,
      '',
      `${r.date.slice(0, 10)} on ${m.cores} × ${m.cpus}, ${m.memGb} GB RAM, Node ${m.node} (${m.platform})${r.revision ? `; code at ${r.revision}` : ''}.`,
      `Input: ${r.records.toLocaleString('en')} records${r.bytes > 0 ? `, ${(r.bytes / 2 ** 20).toFixed(0)} MiB` : ''}.`,
      `Headline: **${r.value.toLocaleString('en')} ${r.unit}**, baseline ${r.baseline.value.toLocaleString('en')} ${r.unit}`,
      `(${r.baseline.name}), ratio **${r.ratio}**.`,
      '',
      ...(r.method ? [...r.method, ''] : []),
      '| run | records | MiB | seconds | rows/s (median) | min–max | peak RSS MiB | idle RSS MiB | peak heap MiB | cores busy | JS thread busy | quiet runs | others, cores (max) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...r.runs.map(
        (x) =>
          `| ${x.label} | ${x.records.toLocaleString('en')} | ${x.mb} | ${x.seconds} | ${x.rowsPerSecond.toLocaleString('en')} | ` +
          `${range(x.rowsPerSecondRange)} | ${x.peakRssMb} | ${x.idleRssMb} | ${x.peakHeapMb} | ${x.cores ?? ''} | ${percent(x.eventLoopBusy)} | ` +
          `${x.repeats === undefined ? '' : `${x.quietRepeats ?? x.repeats}/${x.repeats}`} | ${x.othersCores ?? ''} |`,
      ),
      '',
      '| check | claim | actual | result |',
      '|---|---|---|---|',
      ...r.checks.map((c) => `| ${c.name} | ${c.claim} | ${c.actual} | ${c.pass ? 'PASS' : '**FAIL**'} |`),
    );
    const settings = JSON.stringify(r.settings);
    if (settings !== undefined && settings.length <= 400) out.push('', `Settings: \`${settings}\`.`);
  }
  if (existsSync(MUTATION_FILE)) out.push(...mutationMarkdown(JSON.parse(readFileSync(MUTATION_FILE, 'utf8')) as MutationSummary));
  return out.join('\n') + '\n';
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
