/**
 * Runs the operators benchmark alone and stores its result where bench/run.ts keeps
 * results (bench/results/operators.json), then prints the per-operator table.
 *
 *   npm run build && node dist/bench/operators-main.js
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, resultsDir, table } from './harness';
import { benchmark } from './operators';
import type { CaseFigures } from './operators';

async function main(): Promise<void> {
  const repeat = Number(process.argv[2] ?? 3);
  const result = { ...(await benchmark.run({ repeat })), machine: machine(), date: new Date().toISOString(), revision: revision() };
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'operators.json'), JSON.stringify(result, null, 2) + '\n');
  const figures = (result.settings as { figures: CaseFigures[] }).figures;
  console.log(
    table(
      ['case', 'operator ev/s', 'ns/ev', 'plain ev/s', 'ns/ev', 'ratio', 'fields/s'],
      figures.map((f) => [f.name, f.operatorEventsPerSecond.toLocaleString('en'), f.operatorNsPerEvent, f.plainEventsPerSecond.toLocaleString('en'), f.plainNsPerEvent, f.ratio, f.fieldsPerSecond.toLocaleString('en')]),
    ),
  );
  console.log('\n' + table(['check', 'result', 'actual', 'claim'], result.checks.map((c) => [c.name, c.pass ? 'PASS' : 'FAIL', c.actual, c.claim])));
}

/** The commit measured, read-only. */
function revision(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} + uncommitted changes` : head;
  } catch {
    return 'unknown';
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
