import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir, until } from '../helpers';
import { VendorApi } from '../vendorApi';

const run = promisify(execFile);
const child = join(__dirname, 'poll-child.js');

describe('fromPoll: killed mid-pagination', function () {
  this.timeout(180_000);

  it('resumes from the saved cursor after a SIGKILL: every item stored, by plain count() none more often than the API served it', async () => {
    const work = tempDir();
    // Slow pages, 429 bursts, 500s, items on two pages and a renamed field, all at once.
    const api = new VendorApi(3000, { slowMs: 25, burst429: { every: 10, count: 1, retryAfterSeconds: 1 }, error500Every: 13, duplicates: true, renameAfter: 1500 });
    try {
      const url = `${await api.start()}/cursor?limit=50`;
      const chdb = join(work.path, 'chdb');
      const cursorFile = join(work.path, 'cursor.json');
      const resumeAt = () => (existsSync(cursorFile) ? (JSON.parse(readFileSync(cursorFile, 'utf8')) as { resume?: string }).resume : undefined);
      const page = (cursor: string | undefined) => (cursor === undefined ? 0 : Number(Buffer.from(cursor, 'base64url').toString().slice(1)));

      const first = spawn(process.execPath, [child, 'poll', chdb, url, cursorFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let errors = '';
      first.stderr.on('data', (d: Buffer) => (errors += d.toString()));
      const exited = new Promise<number | null>((resolve) => first.on('exit', (code) => resolve(code)));
      await until(() => page(resumeAt()) >= 15 || first.exitCode !== null, 120_000, 'the cursor past page 15');
      first.kill('SIGKILL');
      expect(await exited, errors).to.equal(null);
      const savedAtKill = resumeAt();
      expect(page(savedAtKill)).to.be.within(15, 59);

      const count = async () => JSON.parse((await run(process.execPath, [child, 'count', chdb])).stdout) as Record<string, string>;
      const afterKill = await count();
      expect(Number(afterKill.ids)).to.be.within(1, 2999);

      // The restart asks first for the page the cursor names, not the first page.
      const before = api.served.length;
      const second = JSON.parse((await run(process.execPath, [child, 'poll', chdb, url, cursorFile])).stdout) as { written: number; poll: { syncs: number } };
      expect(api.served[before]!.path).to.include(`cursor=${savedAtKill}`);
      expect(second.poll.syncs).to.equal(1);

      const counts = await count();
      // Plain count(), no FINAL, on a table whose merges never drop a row: every item is
      // stored, and none more often than the API served it in a page (items it put on two
      // pages, and pages fetched again after the kill, may be stored twice; a table keyed
      // by id, as the bookings table is, keeps one).
      const servedItems = api.served.reduce((sum, r) => sum + (r.status === 200 ? (r.items ?? 0) : 0), 0);
      console.log(`      ${JSON.stringify({ ...counts, servedItems })}`);
      expect({ ids: Number(counts.ids), first: counts.first, last: counts.last }).to.deep.equal({ ids: 3000, first: 'BK-000001', last: 'BK-003000' });
      expect(Number(counts.raw)).to.be.within(3000, servedItems);
      expect(JSON.parse(readFileSync(cursorFile, 'utf8'))).to.include({ watermark: api.items[2999]!.updated_at });
      expect(api.served.some((r) => r.status === 429) && api.served.some((r) => r.status === 500)).to.equal(true);
    } finally {
      await api.stop();
      work.remove();
    }
  });
});
