/**
 * Runs the benchmarks: all of them, or those named on the command line.
 *
 *   npm run bench                                   every benchmark
 *   node dist/bench/run.js files-to-clickhouse      just that one
 *   node dist/bench/run.js --repeat=1 files-to-clickhouse   one round instead of three
 *   node dist/bench/run.js --profile files-to-clickhouse
 *       runs the measured code once under `node --cpu-prof` (profile in the OS temp
 *       directory, never the repository) and prints the top functions by self time
 *
 * Each run prints a table, writes bench/results/<name>.json and rewrites bench/RESULTS.md
 * from every stored result.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSelfTimes, selfTimes } from './cpuprofile';
import { benchmark as filesToClickHouse } from './files-to-clickhouse';
import { benchmark as formats } from './formats';
import { benchmark as kafkaToClickHouse } from './kafka-to-clickhouse';
import { benchDir, machine, resultsDir, table } from './harness';
import { benchmark as operators } from './operators';
import { benchmark as sinks } from './sinks';
import type { Benchmark, StoredResult } from './types';
import { benchmark as webhook } from './webhook';

const BENCHMARKS: readonly Benchmark[] = [filesToClickHouse, formats, kafkaToClickHouse, operators, sinks, webhook];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profiling = args.includes('--profile');
  const repeatArg = args.find((a) => a.startsWith('--repeat='));
  const repeat = repeatArg ? Number(repeatArg.slice('--repeat='.length)) : undefined;
  const names = args.filter((a) => !a.startsWith('--'));
  const unknown = names.filter((n) => !BENCHMARKS.some((b) => b.name === n));
  const badFlag = args.some((a) => a.startsWith('--') && a !== '--profile' && a !== repeatArg);
  if (unknown.length > 0 || badFlag || (repeat !== undefined && !(Number.isInteger(repeat) && repeat >= 1))) {
    console.error(`usage: run.js [--profile] [--repeat=N] [${BENCHMARKS.map((b) => b.name).join(' ')}]`);
    if (unknown.length > 0) console.error(`unknown benchmark: ${unknown.join(', ')}`);
    process.exit(2);
  }
  const chosen = names.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => names.includes(b.name));

  if (profiling) {
    for (const bench of chosen) await profileOne(bench);
    return;
  }

  mkdirSync(resultsDir, { recursive: true });
  let failed = 0;
  for (const bench of chosen) {
    console.log(`\n== ${bench.name}`);
    const started = Date.now();
    const result: StoredResult = {
      ...(await bench.run(repeat === undefined ? {} : { repeat })),
      machine: machine(),
      date: new Date().toISOString(),
      revision: revision(),
    };
    writeFileSync(join(resultsDir, `${bench.name}.json`), JSON.stringify(result, null, 2) + '\n');
    console.log(`\n${report(result)}\n\n(${((Date.now() - started) / 1000).toFixed(0)} s; written to bench/results/${bench.name}.json)`);
    failed += result.checks.filter((c) => !c.pass).length;
  }
  writeFileSync(join(benchDir, 'RESULTS.md'), resultsMarkdown());
  if (failed > 0) console.log(`\n${failed} check(s) failed`);
}

/** The commit measured, and whether the working tree had changes (read-only git calls). */
function revision(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: benchDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
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
  return `${runs}\n\nratio ${result.ratio} (${result.value.toLocaleString('en')} ÷ ${result.baseline.value.toLocaleString('en')} ${result.unit})\n\n${checks}`;
}

function range(r: [number, number] | undefined): string {
  return r ? r.map((n) => n.toLocaleString('en')).join('–') : '';
}

function percent(share: number | undefined): string {
  return share === undefined ? '' : `${Math.round(share * 100)}%`;
}

/** bench/RESULTS.md, from every result stored in bench/results/. */
function resultsMarkdown(): string {
  const results = readdirSync(resultsDir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as StoredResult);
  const out: string[] = [
    '# Benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts) from `bench/results/*.json`; do not edit by hand.',
    '',
    'How to run: `npm run bench` (all), or `npm run build && node dist/bench/run.js files-to-clickhouse` (one);',
    '`--repeat=N` sets the rounds (default 3); `--profile` prints a CPU profile of the pipeline instead.',
    'The data files are generated once into `bench/data/` (git-ignored) and reused.',
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
  return out.join('\n') + '\n';
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
