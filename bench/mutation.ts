/**
 * Reads Stryker's report (reports/mutation/mutation.json, written by `npm run mutate`) and
 * folds it into bench/mutation.json, which bench/RESULTS.md shows beside the benchmarks.
 *
 * The whole scope (stryker.config.json's `mutate`) takes hours on two cores, so it is run in
 * parts (`npm run mutate -- --mutate a.ts,b.ts`): each run replaces the entries of the files
 * it mutated and keeps the others, each entry with the date and commit it was measured at.
 * The score is over every file recorded; files of the scope not yet run are listed as such,
 * apart from those that compile to no code (types and re-exports only), which have no mutants.
 * Survivors are matched against bench/mutation-explained.json (file, mutator, replacement,
 * why it lives), so the report says of each one whether it is an equivalent mutant or a
 * missing test.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, machine, type Machine } from './harness';

export interface Survivor {
  line: number;
  mutator: string;
  replacement: string;
  status: 'Survived' | 'NoCoverage';
}

export interface FileResult {
  file: string;
  date: string;
  commit: string;
  /** (killed + timeout) ÷ (killed + timeout + survived + no coverage), as Stryker counts it. */
  score: number;
  counts: Record<string, number>;
  survivors: Survivor[];
  /** The lines mutated, when the run named ranges of the file (`--mutate file.ts:10-90`) rather than all of it. */
  lines?: string;
}

/** What bench/mutation.json holds. */
export interface MutationSummary {
  machine: Machine;
  files: FileResult[];
}

/** Why a surviving mutant is left alive: matched by file, mutator and replacement text. */
export interface Explanation {
  file: string;
  mutator: string;
  /** A piece of the replacement's text, whitespace collapsed. */
  replacement: string;
  /** The line, where the file has several such mutants and only one is explained (a moved line shows as unexplained again). */
  line?: number;
  why: string;
}

const root = join(benchDir, '..');
export const MUTATION_FILE = join(benchDir, 'mutation.json');
const EXPLAINED_FILE = join(benchDir, 'mutation-explained.json');

interface StrykerReport {
  files: Record<string, { mutants: { mutatorName: string; replacement?: string; status: string; location: { start: { line: number } } }[] }>;
}

function scoreOf(counts: Record<string, number>): number {
  const detected = (counts['Killed'] ?? 0) + (counts['Timeout'] ?? 0);
  const valid = detected + (counts['Survived'] ?? 0) + (counts['NoCoverage'] ?? 0);
  return valid === 0 ? 0 : Math.round((detected / valid) * 1000) / 10;
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

/** One entry per file of a Stryker report. */
export function fileResults(report: StrykerReport, date: string, commit: string, ranges: ReadonlyMap<string, string> = new Map()): FileResult[] {
  return Object.entries(report.files).map(([file, { mutants }]) => {
    const counts: Record<string, number> = {};
    const survivors: Survivor[] = [];
    for (const mutant of mutants) {
      counts[mutant.status] = (counts[mutant.status] ?? 0) + 1;
      if (mutant.status === 'Survived' || mutant.status === 'NoCoverage') {
        survivors.push({ line: mutant.location.start.line, mutator: mutant.mutatorName, replacement: oneLine(mutant.replacement ?? '').slice(0, 120), status: mutant.status });
      }
    }
    const lines = ranges.get(file);
    return { file, date, commit, score: scoreOf(counts), counts, survivors: survivors.sort((a, b) => a.line - b.line), ...(lines !== undefined && { lines }) };
  });
}

/** The summary with `results` in place of the same files' earlier entries. */
export function merge(previous: MutationSummary | undefined, results: FileResult[], on: Machine): MutationSummary {
  const byFile = new Map((previous?.files ?? []).map((f) => [f.file, f]));
  for (const result of results) byFile.set(result.file, result);
  return { machine: on, files: [...byFile.values()].sort((a, b) => a.file.localeCompare(b.file)) };
}

/** The files stryker.config.json's `mutate` names (`dir/**\/*.ts` globs and plain paths). */
export function scopeFiles(): string[] {
  const config = JSON.parse(readFileSync(join(root, 'stryker.config.json'), 'utf8')) as { mutate: string[] };
  const files: string[] = [];
  for (const pattern of config.mutate) {
    const glob = /^(.*)\/\*\*\/\*\.ts$/.exec(pattern);
    if (!glob) {
      files.push(pattern);
      continue;
    }
    const walk = (dir: string): void => {
      for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
        const path = `${dir}/${entry.name}`;
        if (entry.isDirectory()) walk(path);
        else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) files.push(path);
      }
    };
    walk(glob[1]!);
  }
  return files.sort();
}

/**
 * What tsc emits (CommonJS) for a module that only declares types and re-exports: the
 * module preamble, `exports.a = void 0`, requires, re-export getters, `export *` and the
 * helpers it needs, and comments. Stryker mutates the TypeScript, where such a module has
 * nothing to mutate; the compiled form says so without a hand list of files.
 */
const MODULE_ONLY: RegExp[] = [
  /\/\*[\s\S]*?\*\//g,
  /^\s*\/\/.*$/gm,
  /^"use strict";$/gm,
  /^Object\.defineProperty\(exports, "__esModule", \{ value: true \}\);$/gm,
  /^(exports\.[\w$]+ = )+void 0;$/gm,
  /^var [\w$]+ = require\("[^"]*"\);$/gm,
  /^Object\.defineProperty\(exports, "[\w$]+", \{ enumerable: true, get: function \(\) \{ return [\w$]+\.[\w$]+; \} \}\);$/gm,
  /^__exportStar\(require\("[^"]*"\), exports\);$/gm,
  // A helper tsc defines, up to the line that closes it.
  /^var (__\w+) = \(this && this\.\1\) \|\| [\s\S]*?^\}[^\n]*;$/gm,
];

/** Whether compiled JavaScript holds anything besides type-only and re-export scaffolding. */
export function hasCode(js: string): boolean {
  return MODULE_ONLY.reduce((rest, pattern) => rest.replace(pattern, ''), js).trim() !== '';
}

/** Whether a file of the scope compiles to code (judged from dist; a file not built counts as code, so it shows as not run). */
function compilesToCode(file: string): boolean {
  const compiled = join(root, 'dist', file.replace(/\.ts$/, '.js'));
  return !existsSync(compiled) || hasCode(readFileSync(compiled, 'utf8'));
}

export function explain(file: string, survivor: Survivor, explanations: Explanation[]): string | undefined {
  return explanations.find(
    (e) => e.file === file && e.mutator === survivor.mutator && (e.line === undefined || e.line === survivor.line) && survivor.replacement.includes(oneLine(e.replacement)),
  )?.why;
}

/** The RESULTS.md section: the score over every file recorded, per file, and every survivor. */
export function mutationMarkdown(summary: MutationSummary): string[] {
  const m = summary.machine;
  const explanations = existsSync(EXPLAINED_FILE) ? (JSON.parse(readFileSync(EXPLAINED_FILE, 'utf8')) as Explanation[]) : [];
  const counts: Record<string, number> = {};
  for (const f of summary.files) for (const [status, n] of Object.entries(f.counts)) counts[status] = (counts[status] ?? 0) + n;
  const recorded = new Set(summary.files.map((f) => f.file));
  const scope = scopeFiles();
  const missing = scope.filter((f) => !recorded.has(f));
  const beyond = summary.files.filter((f) => !scope.includes(f.file)).map(named);
  const notRun = missing.filter(compilesToCode);
  const noCode = missing.filter((f) => !notRun.includes(f));
  const dates = summary.files.map((f) => f.date.slice(0, 10)).sort();
  const survivors = summary.files.flatMap((f) => f.survivors.map((s) => ({ file: f.file, ...s, why: explain(f.file, s, explanations) })));
  const unexplained = survivors.filter((s) => !s.why).length;
  return [
    '',
    '## Mutation testing',
    '',
    `\`npm run mutate\` (StrykerJS, mocha runner, TypeScript checker), run in parts ${dates[0] === dates[dates.length - 1] ? `on ${dates[0]}` : `between ${dates[0]} and ${dates[dates.length - 1]}`} on ${m.cores} × ${m.cpus}: ` +
      `**${scoreOf(counts)}%** of mutants killed (goal 85%) over ${summary.files.length - beyond.length} of the ${scope.length} files in scope${beyond.length === 0 ? '' : ` and ${beyond.join(', ')} beyond it`}; ` +
      Object.entries(counts)
        .map(([status, n]) => `${n} ${status}`)
        .join(', ') +
      '.',
    ...(noCode.length === 0 ? [] : [`No code to mutate (types and re-exports only): ${noCode.join(', ')}.`]),
    notRun.length === 0 ? 'Every file in scope with code has been run.' : `Not run yet: ${notRun.join(', ')}.`,
    '',
    '| file | score | mutants | survived or uncovered | explained | run at |',
    '|---|---:|---:|---:|---:|---|',
    ...summary.files.map((f) => {
      const mutants = Object.values(f.counts).reduce((a, b) => a + b, 0);
      const explained = f.survivors.filter((s) => explain(f.file, s, explanations)).length;
      return `| ${named(f)} | ${f.score}% | ${mutants} | ${f.survivors.length} | ${explained} | ${f.date.slice(0, 10)}, ${f.commit} |`;
    }),
    '',
    `Survivors (${survivors.length}; ${unexplained} without an explanation, each a missing test), explanations from bench/mutation-explained.json:`,
    '',
    ...survivors.map(
      (s) => `- ${s.file}:${s.line} ${s.mutator}${s.status === 'NoCoverage' ? ' (no test reaches it)' : ''}: \`${s.replacement.replace(/`/g, "'")}\`${s.why ? ` — ${s.why}` : ' — **no test yet**'}`,
    ),
  ];
}

/** The file, with the lines run when they were not all of it. */
const named = (f: FileResult) => (f.lines === undefined ? f.file : `${f.file} (lines ${f.lines})`);

/** The line ranges a run's `--mutate` named, by file (`a.ts:10-90,a.ts:120-140` → a.ts: 10-90, 120-140). */
export function rangesOf(args: readonly string[]): Map<string, string> {
  const ranges = new Map<string, string>();
  args.forEach((arg, i) => {
    const value = arg === '--mutate' ? args[i + 1] : arg.startsWith('--mutate=') ? arg.slice('--mutate='.length) : undefined;
    for (const entry of value?.split(',') ?? []) {
      const range = /^(.+):(\d+(?:-\d+)?)$/.exec(entry);
      if (range) ranges.set(range[1]!, ranges.has(range[1]!) ? `${ranges.get(range[1]!)}, ${range[2]}` : range[2]!);
    }
  });
  return ranges;
}

function commitOf(): string {
  const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
  const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' }).trim() !== '';
  return dirty ? `${head} + uncommitted changes` : head;
}

if (require.main === module) {
  const report = JSON.parse(readFileSync(process.argv[2] ?? 'reports/mutation/mutation.json', 'utf8')) as StrykerReport;
  const previous = existsSync(MUTATION_FILE) ? (JSON.parse(readFileSync(MUTATION_FILE, 'utf8')) as Partial<MutationSummary>) : undefined;
  // After the report: the arguments the run gave Stryker, for the line ranges it named.
  const results = fileResults(report, process.env.MUTATION_DATE ?? new Date().toISOString(), process.env.MUTATION_COMMIT ?? commitOf(), rangesOf(process.argv.slice(3)));
  // A summary in the earlier one-run layout (no per-file dates) is replaced whole.
  const summary = merge(previous?.files?.every((f) => 'date' in f) ? (previous as MutationSummary) : undefined, results, machine());
  writeFileSync(MUTATION_FILE, JSON.stringify(summary, null, 2) + '\n');
  console.log(`mutation: ${results.map((r) => `${r.file} ${r.score}%`).join(', ')}; bench/mutation.json now holds ${summary.files.length} file(s)`);
}
