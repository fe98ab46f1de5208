/**
 * Reads Stryker's report (reports/mutation/mutation.json, written by `npm run mutate`) and
 * keeps its summary in bench/mutation.json, which bench/RESULTS.md shows beside the
 * benchmarks: the score, per file, and every surviving mutant with where it stands.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, machine, type Machine } from './harness';

/** What bench/mutation.json holds. */
export interface MutationSummary {
  date: string;
  machine: Machine;
  /** The files mutated in this run. */
  scope: string[];
  /** (killed + timeout) ÷ (killed + timeout + survived + no coverage), as Stryker counts it. */
  score: number;
  counts: Record<string, number>;
  files: { file: string; score: number; mutants: number; survived: number }[];
  survivors: { file: string; line: number; mutator: string; replacement: string }[];
}

export const MUTATION_FILE = join(benchDir, 'mutation.json');

interface StrykerReport {
  files: Record<string, { mutants: { mutatorName: string; replacement?: string; status: string; location: { start: { line: number } } }[] }>;
}

function scoreOf(counts: Record<string, number>): number {
  const detected = (counts['Killed'] ?? 0) + (counts['Timeout'] ?? 0);
  const valid = detected + (counts['Survived'] ?? 0) + (counts['NoCoverage'] ?? 0);
  return valid === 0 ? 0 : Math.round((detected / valid) * 1000) / 10;
}

export function summarize(report: StrykerReport): MutationSummary {
  const counts: Record<string, number> = {};
  const files: MutationSummary['files'] = [];
  const survivors: MutationSummary['survivors'] = [];
  for (const [file, { mutants }] of Object.entries(report.files)) {
    const own: Record<string, number> = {};
    for (const mutant of mutants) {
      counts[mutant.status] = (counts[mutant.status] ?? 0) + 1;
      own[mutant.status] = (own[mutant.status] ?? 0) + 1;
      if (mutant.status === 'Survived' || mutant.status === 'NoCoverage') {
        survivors.push({ file, line: mutant.location.start.line, mutator: mutant.mutatorName, replacement: (mutant.replacement ?? '').slice(0, 80) });
      }
    }
    files.push({ file, score: scoreOf(own), mutants: mutants.length, survived: (own['Survived'] ?? 0) + (own['NoCoverage'] ?? 0) });
  }
  return { date: new Date().toISOString(), machine: machine(), scope: Object.keys(report.files).sort(), score: scoreOf(counts), counts, files, survivors };
}

/** The RESULTS.md section for the last mutation run. */
export function mutationMarkdown(summary: MutationSummary): string[] {
  const m = summary.machine;
  return [
    '',
    '## Mutation testing',
    '',
    `\`npm run mutate\` (StrykerJS, mocha runner, TypeScript checker), ${summary.date.slice(0, 10)} on ${m.cores} × ${m.cpus}: ` +
      `**${summary.score}%** of mutants killed (goal 85%) over ${summary.scope.length} file(s); ` +
      Object.entries(summary.counts)
        .map(([status, n]) => `${n} ${status}`)
        .join(', ') +
      '.',
    '',
    '| file | score | mutants | survived or uncovered |',
    '|---|---:|---:|---:|',
    ...summary.files.map((f) => `| ${f.file} | ${f.score}% | ${f.mutants} | ${f.survived} |`),
    '',
    `Survivors (${summary.survivors.length}), each a missing test or an equivalent mutant:`,
    '',
    ...summary.survivors.slice(0, 60).map((s) => `- ${s.file}:${s.line} ${s.mutator}: \`${s.replacement.replace(/`/g, "'").replace(/\s+/g, ' ')}\``),
  ];
}

if (require.main === module) {
  const report = JSON.parse(readFileSync(process.argv[2] ?? 'reports/mutation/mutation.json', 'utf8')) as StrykerReport;
  const summary = summarize(report);
  writeFileSync(MUTATION_FILE, JSON.stringify(summary, null, 2) + '\n');
  console.log(`mutation score ${summary.score}% over ${summary.scope.join(', ')}; written to bench/mutation.json`);
}
