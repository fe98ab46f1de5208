import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { killInsideInsert } from '../../crashShim';
import { tempDir } from '../../helpers';
import type { Job } from './embedded-crash-child';

const CHILD = join(__dirname, 'embedded-crash-child.js');

interface Outcome {
  count: number;
  sum: number;
  warnings: { message: string; fields?: Record<string, unknown> }[];
}

function run(dir: string, job: Job, env: NodeJS.ProcessEnv = {}): Promise<{ outcome?: Outcome; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code, signal) => {
      if (code !== 0 && !signal) return reject(new Error(`the child exited ${code}: ${stderr}`));
      resolve({ ...(out !== '' && { outcome: JSON.parse(out) as Outcome }), signal, stderr });
    });
  });
}

async function outcomeOf(dir: string, job: Job): Promise<Outcome> {
  const { outcome, signal, stderr } = await run(dir, job);
  expect(signal, stderr).to.equal(null);
  return outcome!;
}

/** The 10 rows an insert from `from` writes add up to this. */
const sumOf = (...froms: number[]) => froms.reduce((sum, from) => sum + 10 * from + 45, 0);

describe('embedded ClickHouse after a crash inside an insert', function () {
  this.timeout(120_000);
  let work: ReturnType<typeof tempDir>;
  // A database and a table whose names need quoting: the store detaches and attaches the table by name.
  const names = { database: 'crash.db', table: 'book`ings' };
  const chdb = () => join(work.path, 'chdb');

  // Built before the first test, so a missing compiler fails here and not inside a test's timing.
  before(() => void killInsideInsert());
  beforeEach(() => (work = tempDir()));
  afterEach(() => work.remove());

  it('killed after the token went to the deduplication log and before the rows were stored: the batch written again is stored, once', async () => {
    expect(await outcomeOf(chdb(), { ...names, inserts: [{ from: 0, token: 'batch-1' }] })).to.include({ count: 10 });
    const killed = await run(chdb(), { ...names, inserts: [{ from: 100, token: 'batch-2' }] }, killInsideInsert());
    expect(killed.signal, 'the child killed at the rename of its part').to.equal('SIGKILL');

    // The restart writes batch 2 again with its token, as a source replaying past its saved position does.
    const restart = await outcomeOf(chdb(), { ...names, inserts: [{ from: 100, token: 'batch-2' }] });
    expect({ count: restart.count, sum: restart.sum }, 'batch 2 dropped as a duplicate of rows never stored').to.deep.equal({ count: 20, sum: sumOf(0, 100) });
    expect(restart.warnings).to.have.length(1);
    expect(restart.warnings[0]!.fields).to.deep.equal({ table: 'crash.db.book`ings', part: 'all_2_2_0' });

    // Tokens still absorb: both batches again, and nothing forgotten at this open.
    const again = await outcomeOf(chdb(), { ...names, inserts: [{ from: 100, token: 'batch-2' }, { from: 0, token: 'batch-1' }] });
    expect(again).to.deep.equal({ count: 20, sum: sumOf(0, 100), warnings: [] });
  });

  it('killed at the first insert of a table, opened twice before the batch is written again: forgotten once, stored once', async () => {
    const killed = await run(chdb(), { ...names, inserts: [{ from: 0, token: 'batch-1' }] }, killInsideInsert());
    expect(killed.signal).to.equal('SIGKILL');
    const opened = await outcomeOf(chdb(), { ...names, inserts: [] });
    expect(opened.count).to.equal(0);
    expect(opened.warnings.map((w) => w.fields?.part)).to.deep.equal(['all_1_1_0']);
    // The entry forgotten stays forgotten: no second warning.
    const restart = await outcomeOf(chdb(), { ...names, inserts: [{ from: 0, token: 'batch-1' }, { from: 0, token: 'batch-1' }] });
    expect(restart).to.deep.equal({ count: 10, sum: sumOf(0), warnings: [] });
  });

  it('merged parts, outdated parts and a clean stop: nothing forgotten, every token still absorbed', async () => {
    const inserts = [0, 100, 200].map((from) => ({ from, token: `batch-${from}` }));
    expect(await outcomeOf(chdb(), { ...names, inserts, optimize: true })).to.deep.equal({ count: 30, sum: sumOf(0, 100, 200), warnings: [] });
    expect(await outcomeOf(chdb(), { ...names, inserts })).to.deep.equal({ count: 30, sum: sumOf(0, 100, 200), warnings: [] });
  });

  for (const [what, appended, reason] of [
    ['a torn last record', '1\tall_9_9_0\tall_torn', /ends inside a record/],
    ['a record kind it does not know', '3\tall_1_1_0\tall_1_2\n', /does not read: "3\\tall_1_1_0/],
  ] as const) {
    it(`a deduplication log it cannot read (${what}) is left as it is, with a warning, and the store opens`, async () => {
      expect(await outcomeOf(chdb(), { ...names, inserts: [{ from: 0, token: 'batch-1' }] })).to.include({ count: 10 });
      const logs = findDirs(chdb(), 'deduplication_logs');
      expect(logs).to.have.length(1);
      const log = join(logs[0]!, readdirSync(logs[0]!).sort().pop()!);
      appendFileSync(log, appended);
      const before = readFileSync(log, 'utf8');
      const opened = await outcomeOf(chdb(), { ...names, inserts: [] });
      expect(opened.count).to.equal(10);
      expect(opened.warnings).to.have.length(1);
      expect(opened.warnings[0]!.fields).to.include({ table: 'crash.db.book`ings' });
      expect(String(opened.warnings[0]!.fields?.reason)).to.match(reason);
      expect(readFileSync(log, 'utf8'), 'the log changed').to.equal(before);
    });
  }
});

function findDirs(root: string, name: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(root, { withFileTypes: true, recursive: true })) {
    if (entry.isDirectory() && entry.name === name) found.push(join(entry.parentPath, entry.name));
  }
  return found;
}
