import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir, until } from '../helpers';

const run = promisify(execFile);
const child = join(__dirname, 'inbox-child.js');

describe('fromInbox: crash and restart against embedded ClickHouse', function () {
  this.timeout(180_000);

  it('a process killed mid-file resumes it on restart: ClickHouse holds every record, by plain count() none twice but those past the last checkpoint', async () => {
    const work = tempDir();
    try {
      const inbox = join(work.path, 'inbox');
      const chdb = join(work.path, 'chdb');
      require('node:fs').mkdirSync(inbox);
      const total = 20_000;
      const rows = Array.from({ length: total }, (_, i) => `R-${i + 1},${i + 1}`);
      rows.splice(5000, 0, 'broken-row');
      rows.splice(15000, 0, 'another,broken,row');
      writeFileSync(join(inbox, 'feed.csv'), `ref,n\n${rows.join('\n')}\n`);
      const checkpoint = join(inbox, '.tributary', 'feed.csv.checkpoint.json');
      const settled = () => (existsSync(checkpoint) ? (JSON.parse(readFileSync(checkpoint, 'utf8')) as { settled: number }).settled : 0);

      // First run: slowed down, saving its position only every 300 ms (so batches written after
      // the last save are written again after the restart), and killed without warning.
      const first = spawn(process.execPath, [child, 'ingest', inbox, chdb, '300', '40'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let firstOutput = '';
      first.stderr.on('data', (d: Buffer) => (firstOutput += d.toString()));
      const exited = new Promise<number | null>((resolve) => first.on('exit', (code) => resolve(code)));
      await until(() => settled() >= 3000 || first.exitCode !== null, 120_000, 'a checkpoint mid-file');
      first.kill('SIGKILL');
      expect(await exited, firstOutput).to.equal(null);
      const atKill = settled();
      expect(atKill).to.be.within(3000, total);
      expect(readdirSync(inbox)).to.include('feed.csv');

      const count = async (after = 0) => JSON.parse((await run(process.execPath, [child, 'count', chdb, String(after)])).stdout) as Record<string, number>;
      const afterKill = await count(atKill);
      expect(afterKill.raw, 'rows written twice before the kill').to.equal(afterKill.records);
      expect(afterKill.records).to.be.within(1, total - 1);
      // Rows of records past the checkpoint are read again after the restart: the only ones
      // that may be stored twice.
      const exposed = afterKill.past;

      // Second run: resumes after the checkpoint and finishes the file.
      const second = await run(process.execPath, [child, 'ingest', inbox, chdb]);
      const stats = JSON.parse(second.stdout) as { read: number; written: number; deadLettered: number };
      expect(stats.read).to.equal(total + 2 - atKill);
      expect(readdirSync(join(inbox, 'done'))).to.deep.equal(['feed.csv']);
      expect(existsSync(checkpoint)).to.equal(false);

      // Plain count(), no FINAL, on tables whose merges never drop a row.
      const counts = await count();
      console.log(`      ${JSON.stringify({ ...counts, past: undefined, total, checkpointAtKill: atKill, rowsPastCheckpointAtKill: exposed })}`);
      expect(counts).to.include({ records: total, dead_letter_positions: 2 });
      expect(counts.first).to.equal(1);
      expect(counts.last).to.equal(total + 2);
      // Every record stored; none twice but those the first run wrote past its checkpoint,
      // and each dead letter at most once more than the first run wrote it.
      expect(counts.raw).to.be.within(total, total + exposed);
      expect(counts.dead_letters).to.be.within(2, 2 + afterKill.dead_letters);
    } finally {
      work.remove();
    }
  });
});
