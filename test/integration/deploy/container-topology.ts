/**
 * The Kafka topology from the container image: ingestion, normalization and storage each
 * run in their own container of the same image (host network, read-only root, uid 10001)
 * against the project's Kafka and ClickHouse server. Not part of `npm test` (it needs
 * podman and builds the image); `npm run check:deploy` runs it:
 *
 *   npx mocha --no-config --timeout 900000 --exit dist/test/integration/deploy/container-topology.js
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { pipe } from 'rxjs';
import { serverClickHouse } from '../../../connectors/clickhouse';
import { fromFiles } from '../../../connectors/files';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { normalize } from '../../../operators/normalize';
import { validate } from '../../../operators/validate';
import { generate, VENDORS } from '../../../examples/bookings/generate';
import { mappings } from '../../../examples/bookings/mappings';
import { bookingSchema, type Booking } from '../../../examples/bookings/schema';
import { clickhouseServer } from '../../clickhouseServer';
import { MemorySink, tempDir } from '../../helpers';
import { testKafka } from '../../kafka';
import { ensureKafka } from '../../services';

const run = promisify(execFile);
const root = join(__dirname, '..', '..', '..', '..');
const image = process.env.TRIBUTARY_IMAGE ?? 'localhost/tributary:dev';
const containersConf = process.env.CONTAINERS_CONF ?? join(root, 'scripts', 'deploy', 'containers.conf');
const podman = (...args: string[]) => run('podman', args, { env: { ...process.env, CONTAINERS_CONF: containersConf }, maxBuffer: 64 * 1024 * 1024 });
const stage = (name: string) => `/app/dist/examples/kafka-topology/${name}.js`;

/** A port nothing listens on now, for a container's metrics server on the host network. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('the Kafka topology as containers of the image (ingest, normalize, store)', function () {
  this.timeout(900_000);
  let brokers: string[];

  before(async function () {
    brokers = await ensureKafka();
    clickhouseServer.ensure();
    await run('bash', [join(root, 'scripts', 'deploy', 'build-image.sh')], { env: { ...process.env, TRIBUTARY_IMAGE: image } }).catch((error: { stdout?: string; stderr?: string }) => {
      throw new Error(`scripts/deploy/build-image.sh failed:\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    });
  });

  it('stores every booking and dead letter once: store killed mid-stream and restarted, then stopped while ClickHouse is down', async () => {
    const prefix = `ctopo-${randomUUID().slice(0, 8)}`;
    const work = tempDir();
    const names = ['ingest', 'normalize', 'store', 'ingest-later'].map((s) => `${prefix}-${s}`);
    const [ingestName, normalizeName, storeName, laterName] = names as [string, string, string, string];
    const clickhouse = serverClickHouse({ url: clickhouseServer.url });
    const count = async (sql: string) => Number((await clickhouse.query<{ n: string }>(sql))[0]!.n);
    try {
      // Enough records that storage is still writing when it is killed; a second set, with
      // other booking ids, arrives while ClickHouse is down.
      const input = join(work.path, 'in');
      const later = join(work.path, 'later');
      for (const vendor of VENDORS) {
        mkdirSync(join(input, vendor), { recursive: true });
        mkdirSync(join(later, vendor), { recursive: true });
        await generate({ vendor, records: 20_000, out: join(input, vendor, 'bookings.ndjson'), faultRate: 0.01, seed: 7 });
        await generate({ vendor, records: 2_000, start: 100_001, out: join(later, vendor, 'bookings.ndjson'), faultRate: 0.01, seed: 8 });
      }
      // The containers run as uid 10001: let them read the input.
      const open = (path: string) => {
        chmodSync(path, statSync(path).isDirectory() ? 0o755 : 0o644);
        if (statSync(path).isDirectory()) for (const entry of readdirSync(path)) open(join(path, entry));
      };
      open(work.path);

      // What the same records give through one in-process pipeline: the first set, and both.
      const referenceOf = async (dirs: string[]) => {
        const sink = new MemorySink<Booking>();
        const stats = await new Pipeline<Booking>({
          source: fromFiles({ paths: dirs.flatMap((dir) => VENDORS.map((v) => join(dir, v))), vendor: (file) => basename(dirname(file)) }),
          transform: pipe(normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' })),
          sink,
          deadLetters: new MemorySink<DeadLetter>(),
        }).run();
        return { stats, keys: [...new Set(sink.rows.map((b) => `${b.vendor}:${b.booking_id}`))].sort() };
      };
      const firstKeys = (await referenceOf([input])).keys.length;
      const { stats: reference, keys: expectedKeys } = await referenceOf([input, later]);
      expect(reference.deadLettered).to.be.greaterThan(0);

      const [normalizePort, storePort] = [await freePort(), await freePort()];
      const common = ['--network=host', '--read-only', '--tmpfs', '/tmp', '--tmpfs', '/data:U', '--entrypoint', 'node'];
      const args = ['--brokers', brokers.join(','), '--prefix', prefix];
      const storeArgs = [
        'run', '-d', '--name', storeName, ...common,
        '-v', `${join(root, 'test', 'fixtures', 'clickhouse-18.16-bookings')}:/migrations:ro`,
        '-e', 'TOPOLOGY_MIGRATIONS=/migrations', '-e', `TOPOLOGY_CLICKHOUSE_URL=${clickhouseServer.url}`, '-e', 'TOPOLOGY_DRAIN_MS=3000',
        image, stage('store'), ...args, '--metrics-port', String(storePort),
      ];
      await podman('run', '-d', '--name', ingestName, ...common, '-v', `${input}:/in:ro`, image, stage('ingest'), ...args, ...VENDORS.map((v) => `/in/${v}`));
      await podman('run', '-d', '--name', normalizeName, ...common, image, stage('normalize'), ...args, '--metrics-port', String(normalizePort));
      await podman(...storeArgs);

      // Probes: live and ready once the source is connected.
      for (const port of [normalizePort, storePort]) {
        await until(`/ready on ${port}`, async () => ((await fetch(`http://127.0.0.1:${port}/ready`)).status === 200 ? true : undefined), 60_000);
        expect((await fetch(`http://127.0.0.1:${port}/health`)).status).to.equal(200);
      }
      expect(await (await fetch(`http://127.0.0.1:${normalizePort}/metrics`)).text()).to.contain('tributary_records_total{pipeline="normalize"');

      // Kill storage (SIGKILL, no drain) while it is writing, then start the same container again.
      const stored = await until('the first bookings in ClickHouse', async () => {
        const n = await count('SELECT count() AS n FROM bookings');
        return n > 0 ? n : undefined;
      }, 120_000);
      await podman('kill', '--signal', 'KILL', storeName);
      await podman('wait', storeName);
      const beforeRestart = await count('SELECT count() AS n FROM bookings');
      expect(beforeRestart, 'storage was killed before it had written everything').to.be.below(firstKeys);
      await podman('start', storeName);

      // The first set stored; then ClickHouse goes down while the second set arrives.
      await until('the first set in ClickHouse', async () => ((await count('SELECT count() AS n FROM bookings FINAL')) >= firstKeys ? true : undefined), 300_000);
      await until('/ready after the restart', async () => ((await fetch(`http://127.0.0.1:${storePort}/ready`)).status === 200 ? true : undefined), 60_000);
      clickhouseServer.stop();
      try {
        await podman('run', '-d', '--name', laterName, ...common, '-v', `${later}:/in:ro`, image, stage('ingest'), ...args, ...VENDORS.map((v) => `/in/${v}`));
        // Storage holds records it cannot write: its breaker opens and it reports not ready.
        await until('store not ready with ClickHouse down', async () => ((await fetch(`http://127.0.0.1:${storePort}/ready`)).status === 503 ? true : undefined), 120_000);
        // SIGTERM with the sink down: the drain gives up after TOPOLOGY_DRAIN_MS and the
        // process exits by itself, long before podman's 60 s would SIGKILL it (137),
        // nacking what it could not write rather than acking it.
        await podman('stop', '--time', '60', storeName);
        const { stdout: code } = await podman('inspect', '--format', '{{.State.ExitCode}}', storeName);
        expect(code.trim(), 'store exit code after a drain against a dead ClickHouse').to.not.equal('137');
        expect(code.trim(), 'store exits 1 (main reports the drain that gave up)').to.equal('1');
        expect((await podman('logs', storeName)).stderr).to.match(/^SinkError: sink clickhouse:bookings is unavailable/m);
      } finally {
        clickhouseServer.start();
      }
      await podman('start', storeName);

      await until('every booking and dead letter in ClickHouse', async () => {
        const [bookings, letters] = [await count('SELECT count() AS n FROM bookings FINAL'), await count('SELECT count() AS n FROM dead_letters FINAL')];
        return bookings >= expectedKeys.length && letters >= reference.deadLettered ? true : undefined;
      }, 300_000);
      await until('/ready after ClickHouse came back', async () => ((await fetch(`http://127.0.0.1:${storePort}/ready`)).status === 200 ? true : undefined), 60_000);

      // SIGTERM: each stage drains, commits and exits 0.
      await podman('stop', '--time', '40', normalizeName, storeName);
      for (const name of [ingestName, laterName, normalizeName, storeName]) {
        const { stdout } = await podman('inspect', '--format', '{{.State.ExitCode}}', name);
        expect(stdout.trim(), `${name} exit code`).to.equal('0');
      }
      expect((await podman('logs', storeName)).stdout).to.match(/^stored: /m);

      // Nothing lost: every booking, each once in its latest version; nothing doubled.
      const keys = (await clickhouse.query<{ k: string }>("SELECT concat(vendor, ':', booking_id) AS k FROM bookings FINAL ORDER BY k")).map((r) => r.k);
      expect(keys.length).to.equal(expectedKeys.length);
      expect(keys).to.deep.equal(expectedKeys);
      expect(await count('SELECT count() AS n FROM dead_letters FINAL')).to.equal(reference.deadLettered);
      console.log(`      ${expectedKeys.length} bookings, ${reference.deadLettered} dead letters; killed after ${stored} rows (${beforeRestart} at the kill); ${await count('SELECT count() AS n FROM bookings')} rows before merging`);
    } finally {
      await podman('rm', '-f', ...names).catch(() => undefined);
      for (const table of ['bookings', 'dead_letters', 'tributary_migrations']) await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
      await clickhouse.close();
      work.remove();
      const admin = testKafka(brokers).admin();
      await admin.connect();
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
