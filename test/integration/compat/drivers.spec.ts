import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { serveQueries } from '../../../connectors/clickhouse';
import { testClickHouse } from '../../helpers';

const repo = join(__dirname, '..', '..', '..', '..');
const rows = 5_000_000;

interface Check { ok: boolean; detail?: unknown; failures?: unknown[] }
interface Report { driver: string; version: string; ok: boolean; checks: Record<string, Check> }

function script(args: string[], env: NodeJS.ProcessEnv, timeout: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', args, { cwd: repo, env: { ...process.env, ...env }, timeout, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

/**
 * The official drivers, each in its own process, against serveQueries over the embedded
 * store: the programs under test/integration/compat/<language>/ print what they saw (see
 * scripts/compat/run.sh), and each check is asserted here on its own so a failure names
 * the driver, the check and what the driver got.
 */
describe('official ClickHouse drivers against the query endpoint', function () {
  const key = randomBytes(18).toString('base64url');
  const table = `compat_${randomUUID().replace(/-/g, '')}`;
  let endpoint: Awaited<ReturnType<typeof serveQueries>> | undefined;

  before(async function () {
    // The first install downloads the drivers and compiles the Go program: minutes.
    this.timeout(20 * 60_000);
    const install = await script([join('scripts', 'compat', 'install.sh')], {}, 20 * 60_000);
    if (install.code !== 0) throw new Error(`scripts/compat/install.sh failed (${install.code}): a driver or its toolchain is missing\n${install.stdout}${install.stderr}`);
    await testClickHouse().exec(`CREATE TABLE ${table} (n UInt64) ENGINE = MergeTree ORDER BY n`);
    await testClickHouse().exec(`INSERT INTO ${table} SELECT number FROM numbers(${rows})`);
    endpoint = await serveQueries({ client: testClickHouse(), users: { analyst: key }, tables: [table], port: 0 });
  });
  after(async () => {
    await endpoint?.close();
    await testClickHouse().exec(`DROP TABLE IF EXISTS ${table}`);
  });

  for (const language of ['go', 'python', 'java', 'node'] as const) {
    describe(language, function () {
      let report: Report;
      before(async function () {
        this.timeout(10 * 60_000);
        const env = { COMPAT_URL: endpoint!.url, COMPAT_USER: 'analyst', COMPAT_KEY: key, COMPAT_TABLE: table, COMPAT_ROWS: String(rows) };
        const run = await script([join('scripts', 'compat', 'run.sh'), language], env, 10 * 60_000);
        const line = run.stdout.trim().split('\n').pop() ?? '';
        try {
          report = JSON.parse(line) as Report;
        } catch {
          throw new Error(`the ${language} program printed no report (exit ${run.code}):\n${run.stdout}${run.stderr}`);
        }
        if (run.code !== 0 && report.ok) throw new Error(`the ${language} program exited ${run.code} with a passing report:\n${run.stderr}`);
      });

      const passes = (name: string) => {
        const check = report.checks[name];
        expect(check, `${report.driver} ${report.version}: check ${name} did not run (connect: ${JSON.stringify(report.checks.connect)})`).to.not.equal(undefined);
        expect(check!.ok, `${report.driver} ${report.version}, ${name}: ${JSON.stringify(check!.failures, null, 1)}`).to.equal(true);
      };

      it('connects with the driver’s own handshake', () => passes('connect'));
      it('reads integers at their limits, decimals, DateTime64 in a zone, non-UTF-8 bytes, arrays and NULLs, typed', () => passes('types'));
      it(`streams ${rows.toLocaleString('en')} rows, counted and summed as they arrive`, () => passes('stream'));
      it('binds query parameters the driver’s own way', () => passes('parameters'));
      it('surfaces a refused INSERT, a refused file() and a syntax error as the driver’s typed error with the server’s code', () => passes('refused'));
      if (language === 'java') it('lists the table through DatabaseMetaData, as DBeaver’s navigator does', () => passes('metadata'));
    });
  }
});
