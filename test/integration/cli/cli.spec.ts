import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from '../../../examples/bookings/generate';
import { samplesDir } from '../../../examples/bookings/paths';
import { SAMPLE_VENDORS } from '../../../examples/bookings/pipeline';
import { tempDir, until } from '../../helpers';
import { BIN, PACKAGE, tributary } from './run';

/** No store, no endpoint and no path from the surroundings: each test says what it uses. */
const CLEAN = { TRIBUTARY_PATH: undefined, TRIBUTARY_QUERY_URL: undefined, TRIBUTARY_QUERY_USER: undefined, TRIBUTARY_QUERY_KEY: undefined };

/** One line, no stack frame, no ClickHouse code repeated. */
function expectOneLine(stderr: string): void {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).to.have.length(1);
  expect(stderr).not.to.match(/^\s+at /m);
  expect((stderr.match(/Code: \d+/g) ?? []).length, stderr).to.be.at.most(1);
}

const COMMANDS = ['demo', 'ingest', 'query', 'status', 'report', 'serve', 'migrate'];

describe('tributary (the command line)', function () {
  this.timeout(120_000);

  describe('help and usage', () => {
    it('--help and -h list every command, the exit codes and the environment', async () => {
      for (const flag of ['--help', '-h']) {
        const run = await tributary([flag], { env: CLEAN });
        expect(run.code).to.equal(0);
        for (const command of COMMANDS) expect(run.stdout).to.match(new RegExp(`^  ${command}\\b`, 'm'));
        for (const code of [0, 1, 2, 3, 4]) expect(run.stdout).to.match(new RegExp(`^  ${code}  \\S`, 'm'));
        expect(run.stdout).to.contain('TRIBUTARY_QUERY_URL');
      }
    });

    it('every command has its own help', async () => {
      for (const command of COMMANDS) {
        const run = await tributary([command, '--help'], { env: CLEAN });
        expect(run.code, command).to.equal(0);
        expect(run.stdout).to.match(new RegExp(`^Usage: tributary ${command}\\b`));
        expect(run.stdout, command).to.contain('--path <dir>');
      }
      expect((await tributary(['help', 'query'], { env: CLEAN })).stdout).to.contain('--write');
    });

    it('--version and -v print the package version', async () => {
      for (const flag of ['--version', '-v']) expect(await tributary([flag], { env: CLEAN })).to.include({ code: 0, stdout: `${PACKAGE.version}\n` });
    });

    it('a wrong command line exits 2 with what is wrong and where to look', async () => {
      for (const args of [['bogus'], ['query'], ['query', 'SELECT 1', '--nope'], ['serve', '--port', 'x'], ['ingest']]) {
        const run = await tributary(args, { env: CLEAN });
        expect(run.code, args.join(' ')).to.equal(2);
        expect(run.stderr).to.match(/^error: /);
        expect(run.stderr).to.contain('--help');
      }
    });
  });

  describe('reads never create a store', () => {
    it('query, status, report and serve on a missing store: exit 3, one line with the fix, nothing created', async () => {
      const dir = tempDir();
      try {
        const store = join(dir.path, 'no', 'such', 'store');
        const runs = [
          await tributary(['query', 'SELECT 1', '--path', store], { env: CLEAN }),
          await tributary(['status', '--path', store], { env: CLEAN }),
          await tributary(['report', '--path', store, '-o', join(dir.path, 'r.html')], { env: CLEAN }),
          await tributary(['serve', '--path', store], { env: { ...CLEAN, TRIBUTARY_QUERY_KEY: 'a-key-of-16-chars' } }),
        ];
        for (const run of runs) {
          expect(run.code, run.stderr).to.equal(3);
          expectOneLine(run.stderr);
          expect(run.stderr).to.contain(`no store at ${store}`).and.to.contain('tributary demo');
        }
        expect(existsSync(join(dir.path, 'no'))).to.equal(false);
        // The default is the demo's store, relative to where the command runs.
        const here = await tributary(['status'], { env: CLEAN, cwd: dir.path });
        expect(here.code).to.equal(3);
        expect(here.stderr).to.contain(join(dir.path, '.tributary/demo'));
        expect(existsSync(join(dir.path, '.tributary'))).to.equal(false);
      } finally {
        dir.remove();
      }
    });
  });

  describe('on the demo store', () => {
    let dir: { path: string; remove: () => void };
    let env: Record<string, string | undefined>;
    before(async () => {
      dir = tempDir();
      env = { ...CLEAN, TRIBUTARY_PATH: join(dir.path, 'store') };
      const demo = await tributary(['demo'], { env });
      expect(demo.code, demo.stderr).to.equal(0);
      expect(demo.stdout).to.contain('Bookings and revenue by vendor and day').and.to.contain('Dead letters by reason');
    });
    after(() => dir.remove());

    const count = async () => (await tributary(['query', 'SELECT count() FROM bookings', '-f', 'TSV'], { env })).stdout;

    it('status shows tables, rows, last ingest, bookings by vendor and day, dead letters by reason', async () => {
      const run = await tributary(['status'], { env });
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.match(/^bookings\s+ReplacingMergeTree\s+54$/m);
      expect(run.stdout).to.match(/^dead_letters\s+ReplacingMergeTree\s+14$/m);
      expect(run.stdout).to.match(/bookings: 54, dead letters: 14, last ingest: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
      // A short table: the latest 14 days, a column per vendor.
      const byDay = run.stdout.slice(run.stdout.indexOf('Bookings by vendor and day'), run.stdout.indexOf('Dead letters by reason')).trimEnd().split('\n');
      expect(byDay[2]!.split(/\s+/)).to.deep.equal(['day', ...[...SAMPLE_VENDORS].sort(), 'total']);
      expect(byDay.slice(3)).to.have.length(14);
      expect(byDay.at(-1)).to.match(/^2026-03-28\s+0\s+0\s+0\s+1\s+0\s+0\s+0\s+1$/);
      expect(byDay.find((l) => l.startsWith('2026-03-01'))).to.match(/^2026-03-01\s+2\s+1\s+0\s+1\s+0\s+0\s+1\s+5$/);
      expect(run.stdout).to.match(/^railbase\s+normalize\s+MAPPING\s+2\s+/m);
      expect(run.stderr).to.equal('');
    });

    it('query reads; writes, DDL, file() and INTO OUTFILE are refused with exit 4 unless --write', async () => {
      expect(await count()).to.equal('54\n');
      const outfile = join(dir.path, 'out.tsv');
      for (const sql of [
        "INSERT INTO bookings (vendor, booking_id) VALUES ('x', 'y')",
        'DROP TABLE dead_letters',
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        `SELECT 1 INTO OUTFILE '${outfile}'`,
        `SELECT 1 INTO/**/OUTFILE '${outfile}'`,
      ]) {
        const run = await tributary(['query', sql], { env });
        expect(run.code, sql).to.equal(4);
        expectOneLine(run.stderr);
        expect(run.stderr).to.contain('--write');
      }
      expect(existsSync(outfile)).to.equal(false);
      expect(await count()).to.equal('54\n');
      const write = await tributary(['query', "INSERT INTO bookings (vendor, booking_id) VALUES ('cli', 'w1')", '--write'], { env });
      expect(write.code, write.stderr).to.equal(0);
      expect(await count()).to.equal('55\n');
      await tributary(['query', "DELETE FROM bookings WHERE vendor = 'cli'", '--write'], { env });
      expect(await count()).to.equal('54\n');
    });

    it('a ClickHouse error is one line with its code once, exit 1', async () => {
      for (const args of [['query', 'SELECT 1', '-f', 'NoSuchFormat'], ['query', 'SELECT * FROM no_such_table']]) {
        const run = await tributary(args, { env });
        expect(run.code).to.equal(1);
        expectOneLine(run.stderr);
        expect(run.stderr).to.match(/^tributary: Code: (73|60)\. /);
      }
    });

    it('a held store: one line saying so, then the endpoint answers; without one, exit 3', async () => {
      const key = 'cli-test-key-1234';
      const server = spawn(process.execPath, [BIN, 'serve', '--port', '0'], { env: { ...process.env, ...env, TRIBUTARY_QUERY_KEY: key } });
      try {
        let out = '';
        server.stdout.on('data', (d: Buffer) => (out += d.toString()));
        await until(() => /at (http:\S+)/.test(out), 30_000, 'tributary serve to listen');
        const url = /at (http:\S+)/.exec(out)![1]!;
        const alone = await tributary(['query', 'SELECT 1'], { env });
        expect(alone.code).to.equal(3);
        expectOneLine(alone.stderr);
        expect(alone.stderr).to.match(/is held by process \d+; set TRIBUTARY_QUERY_URL/);
        const endpoint = { ...env, TRIBUTARY_QUERY_URL: url, TRIBUTARY_QUERY_USER: 'analyst', TRIBUTARY_QUERY_KEY: key };
        const read = await tributary(['query', 'SELECT count() FROM bookings FINAL', '-f', 'TSV'], { env: endpoint });
        expect(read).to.include({ code: 0, stdout: '54\n' });
        expectOneLine(read.stderr);
        expect(read.stderr).to.match(/is held by process \d+; asking its endpoint/);
        expect(read.stderr).not.to.contain('Cannot lock');
        // No store here, an endpoint named: it answers, and nothing is created.
        const elsewhere = join(dir.path, 'elsewhere');
        const remote = await tributary(['query', 'SELECT count() FROM bookings FINAL', '-f', 'TSV', '--path', elsewhere], { env: endpoint });
        expect(remote).to.include({ code: 0, stdout: '54\n', stderr: `no store at ${elsewhere}; asking the endpoint ${url}\n` });
        expect(existsSync(elsewhere)).to.equal(false);
        const status = await tributary(['status'], { env: endpoint });
        expect(status.code).to.equal(0);
        expect(status.stdout).to.contain('bookings: 54, dead letters: 14');
        const drop = await tributary(['query', 'DROP TABLE bookings'], { env: endpoint });
        expect(drop.code).to.equal(4);
        // The default policy: the library's own tables are neither readable nor listed.
        const own = await tributary(['query', 'SELECT count() FROM subject_keys'], { env: endpoint });
        expect(own.code).to.equal(4);
        expect(own.stderr).to.contain('table default.subject_keys is not among the tables this reader may query');
        const listed = await tributary(['query', "SELECT name FROM system.tables WHERE database = 'default' AND name IN ('bookings', 'tributary_migrations', 'subject_keys', 'audit_log')", '-f', 'TSV'], { env: endpoint });
        expect(listed).to.include({ code: 0, stdout: 'bookings\n' });
        for (const args of [['query', 'SELECT 1', '--write'], ['ingest', join(samplesDir, 'skyway')], ['migrate'], ['demo']]) {
          const run = await tributary(args, { env: endpoint });
          expect(run.code, args.join(' ')).to.equal(3);
          expectOneLine(run.stderr);
          expect(run.stderr).to.contain('needs the store itself');
        }
        const wrongKey = await tributary(['query', 'SELECT 1'], { env: { ...endpoint, TRIBUTARY_QUERY_KEY: 'not-the-key-123' } });
        expect(wrongKey.code).to.equal(1);
        expect(wrongKey.stderr).to.contain('refused the key');
      } finally {
        server.kill('SIGTERM');
        await new Promise((resolve) => server.once('close', resolve));
      }
      expect(await count()).to.equal('54\n');
    });
  });

  describe('ingest and migrate', () => {
    it('ingest reads every sample vendor, shows progress, the summary and the dead letters by reason; again changes no count', async () => {
      const dir = tempDir();
      try {
        const env = { ...CLEAN, TRIBUTARY_PATH: join(dir.path, 'store') };
        const paths = SAMPLE_VENDORS.map((v) => join(samplesDir, v));
        const first = await tributary(['ingest', ...paths], { env });
        expect(first.code, first.stderr).to.equal(0);
        expect(first.stdout).to.match(/^68 records read from 8 files in [\d.]+ s: 54 written to bookings, 14 dead-lettered/);
        expect(first.stdout).to.match(/^backdesk\s+source\s+PARSE_CSV\s+1\s+line 9/m);
        expect(first.stdout).to.match(/^farelink\s+normalize\s+MAPPING\s+2\s+/m);
        // Not a terminal: one progress line per file read.
        expect(first.stderr.trimEnd().split('\n')).to.have.length(8);
        expect(first.stderr).to.match(/railbase\/export-20260302\.csv: 6 records/);
        // A directory of vendors' directories reads as those directories.
        const again = await tributary(['ingest', '--no-progress', samplesDir], { env });
        expect(again.stderr).to.equal('');
        expect(again.stdout).to.match(/^68 records read from 1 path in [\d.]+ s: 54 written to bookings, 14 dead-lettered/);
        const empty = join(dir.path, 'empty');
        mkdirSync(empty);
        const nothing = await tributary(['ingest', empty], { env });
        expect(nothing.code).to.equal(0);
        expect(nothing.stderr).to.equal(`tributary: nothing was read: ${empty} holds no files (hidden files are skipped)\n`);
        const status = await tributary(['status'], { env });
        expect(status.stdout).to.contain('bookings: 54, dead letters: 14');
        // A file outside a vendor's directory: the summary says how to name its vendor.
        const loose = join(dir.path, 'export.json');
        copyFileSync(join(samplesDir, 'skyway', '2026-03-01.json'), loose);
        const unnamed = await tributary(['ingest', loose], { env });
        expect(unnamed.stdout).to.match(/^\S+\s+normalize\s+UNKNOWN_VENDOR\s+8\s/m);
        expect(unnamed.stdout).to.contain("a file's vendor is its directory's name").and.to.contain('--vendor (one of backdesk, farelink');
        const named = await tributary(['ingest', '--vendor', 'skyway', loose], { env });
        expect(named.stdout).to.match(/^8 records read from 1 file in [\d.]+ s: 8 written to bookings, 0 dead-lettered/);
        const wrong = await tributary(['ingest', '--vendor', 'acme', loose], { env });
        expect(wrong.code).to.equal(2);
        expectOneLine(wrong.stderr);
        expect(wrong.stderr).to.contain('--vendor must be one of backdesk,');
        const missing = await tributary(['ingest', join(dir.path, 'nothing-here')], { env });
        expect(missing.code).to.equal(2);
        expectOneLine(missing.stderr);
        expect(missing.stderr).to.contain('no such file or directory');
      } finally {
        dir.remove();
      }
    });

    it('ingest stopped by SIGTERM mid-way: exits 0 with what it stored, and the store holds exactly that; a run again stores each booking once', async function () {
      this.timeout(300_000);
      const dir = tempDir();
      try {
        // 20 files of 25,000 bookings (distinct numbers): a line on stderr as each is read,
        // so the signal comes while most are still to read.
        const FILES = 20;
        const PER_FILE = 25_000;
        const vendorDir = join(dir.path, 'globetrek');
        mkdirSync(vendorDir);
        for (let i = 0; i < FILES; i++) {
          await generate({ vendor: 'globetrek', records: PER_FILE, start: i * PER_FILE + 1, out: join(vendorDir, `part-${String(i).padStart(2, '0')}.ndjson`) });
        }
        const env: Record<string, string | undefined> = { ...process.env, ...CLEAN, TRIBUTARY_PATH: join(dir.path, 'store') };
        for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
        const child = spawn(process.execPath, [BIN, 'ingest', vendorDir], { env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
        await until(() => (stderr.match(/records/g) ?? []).length >= 2 || child.exitCode !== null, 240_000, 'two files read');
        child.kill('SIGTERM');
        expect(await exited, stderr).to.equal(0);
        const summary = /^([\d,]+) records read from [\d,]+ files? in [\d.]+ s: ([\d,]+) written to bookings, ([\d,]+) dead-lettered(?:, ([\d,]+) not stored \(batches the stop cut short[^)]*\))? \(store /.exec(stdout);
        expect(summary, stdout).to.not.equal(null);
        const [read, written, deadLettered, notStored] = summary!.slice(1, 5).map((n) => Number((n ?? '0').replace(/,/g, '')));
        expect(read, 'stopped before the end').to.be.within(1, FILES * PER_FILE - 1);
        // The batch being gathered when the signal came is cut short: left unwritten for the next run.
        expect(written + notStored).to.equal(read);
        expect(deadLettered).to.equal(0);
        // Every booking number distinct: a plain count() is what was stored, once each.
        const store = { env: { ...CLEAN, TRIBUTARY_PATH: join(dir.path, 'store') } };
        const count = await tributary(['query', '--format', 'TSV', 'SELECT count(), uniqExact(booking_id) FROM bookings'], store);
        expect(count.stdout.trim().split(/\s+/).map(Number)).to.deep.equal([written, written]);
        // A run again over the same files: every batch it writes again carries the token it had.
        await tributary(['ingest', '--no-progress', vendorDir], store);
        const again = await tributary(['query', '--format', 'TSV', 'SELECT count(), uniqExact(booking_id) FROM bookings'], store);
        expect(again.stdout.trim().split(/\s+/).map(Number), 'bookings without FINAL after a run again').to.deep.equal([FILES * PER_FILE, FILES * PER_FILE]);
      } finally {
        dir.remove();
      }
    });

    it('migrate creates the store and applies the booking schema once', async () => {
      const dir = tempDir();
      try {
        const env = { ...CLEAN, TRIBUTARY_PATH: join(dir.path, 'store') };
        expect((await tributary(['migrate'], { env })).stdout).to.match(/^applied migrations 1, 2, 3, 4, 5 to /);
        expect((await tributary(['migrate'], { env })).stdout).to.match(/ is up to date\n$/);
        const status = await tributary(['status'], { env });
        expect(status.stdout).to.contain('bookings: 0, dead letters: 0, last ingest: never');
      } finally {
        dir.remove();
      }
    });
  });
});
