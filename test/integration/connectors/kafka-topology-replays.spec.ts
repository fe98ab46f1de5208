import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from '../../helpers';
import { samplesDir } from '../../../examples/bookings/paths';
import { committedOffsets, endOffsets, produce, testKafka } from '../../kafka';
import { ensureKafka } from '../../services';

const run = promisify(execFile);
const dist = join(__dirname, '..', '..', '..');
const example = join(dist, 'examples', 'kafka-topology');

/** Runs queries on an embedded store in a process of its own (chDB opens one data directory per process). */
async function query(path: string, queries: Record<string, string>): Promise<Record<string, unknown[]>> {
  const script = `
    const { embeddedClickHouse } = require(${JSON.stringify(join(dist, 'connectors', 'clickhouse'))});
    (async () => {
      const client = embeddedClickHouse({ path: ${JSON.stringify(path)} });
      const out = {};
      for (const [name, sql] of Object.entries(JSON.parse(process.argv[1]))) out[name] = await client.query(sql);
      await client.close();
      process.stdout.write(JSON.stringify(out));
    })().catch((error) => { console.error(error); process.exit(1); });`;
  const { stdout } = await run(process.execPath, ['-e', script, JSON.stringify(queries)], { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout) as Record<string, unknown[]>;
}

/**
 * The last two `/`-separated parts of a position or identity: `partition/offset` of a topic
 * position, `<directory>/<file>@<offset>#<hash>` of a record ingest read from a file; the
 * same in two runs whose topics differ only by prefix.
 */
const at = (column: string) => `arrayStringConcat(arraySlice(splitByChar('/', ${column}), -2), '/')`;

/**
 * Where a dead letter's record was refused, without the offset when that is a topic
 * position (`topic/partition/offset`: the partition only). Ingest writes two batches at a
 * time, and each record goes to the partition its key (its file position) picks, but two
 * batches landing in one partition interleave as they arrive: on a loaded machine two
 * ingests of one file (the clean run and the one with kills) give one record different raw
 * offsets. The record itself is compared by its identity, payload and reason; a file
 * position (ingest's own dead letters) is kept as `at` gives it.
 */
const refusedAt = (column: string) => `if(match(${column}, '/[0-9]+/[0-9]+$'), arrayStringConcat(arraySlice(splitByChar('/', ${column}), -2, 1), '/'), ${at(column)})`;

/**
 * Every table and view the store stage feeds, none read with FINAL: the tables row by row
 * (a copy inserted twice would be a row more), the materialized views' targets summed per
 * vendor (the hour of arrival differs between two runs), the plain views as they answer.
 */
const EVERYTHING = {
  bookings: `SELECT vendor, booking_id, status, product, booked_at, travel_date, origin, destination, passengers, total_amount, currency, updated_at, ${at('origin_position')} AS origin_at FROM bookings ORDER BY vendor, booking_id, origin_at`,
  letters: `SELECT pipeline, source, ${refusedAt('position')} AS at, vendor, stage, code, message, path, raw, raw_encoding, raw_bytes, raw_sha256, ${at('origin_position')} AS origin_at FROM dead_letters ORDER BY at, origin_at`,
  // vendor_quality_hourly counts per insert (materialized views on both tables).
  perInsert: 'SELECT vendor, sum(accepted) AS accepted, sum(dead_lettered) AS dead_lettered FROM vendor_quality_hourly GROUP BY vendor ORDER BY vendor',
  // vendor_quality_exact counts identities (materialized views into uniqExact states).
  byOrigin: 'SELECT vendor, sum(accepted) AS accepted, sum(dead_lettered) AS dead_lettered FROM vendor_quality_exact GROUP BY vendor ORDER BY vendor',
  perDay: 'SELECT vendor, day, currency, bookings, cancelled, revenue FROM bookings_per_vendor_day ORDER BY vendor, day, currency',
  cancellations: 'SELECT vendor, bookings, cancelled, cancellation_rate FROM cancellation_rate_per_vendor ORDER BY vendor',
};

/** What a reader of one table without FINAL would count. */
const ROWS = 'SELECT (SELECT count() FROM bookings) AS bookings, (SELECT count() FROM dead_letters) AS dead_letters';

function expectSame(actual: Record<string, unknown[]>, expected: Record<string, unknown[]>): void {
  for (const name of Object.keys(EVERYTHING)) expect(actual[name], name).to.deep.equal(expected[name]);
}

describe('examples/kafka-topology: counts under replays', function () {
  this.timeout(180_000);
  let brokers: string[];
  /** Stages started in the background: killed after each test, even one that timed out. */
  const children: ChildProcess[] = [];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('after normalization and storage read everything again, and the same files are ingested again, every table and view holds what one clean pass left, row for row, without FINAL', async () => {
    const prefix = `replays-${randomUUID().slice(0, 8)}`;
    const work = tempDir();
    const common = ['--brokers', brokers.join(','), '--prefix', prefix, '--progress-ms', '0'];
    const args = [...common, '--session-timeout-ms', '6000', '--heartbeat-interval-ms', '500'];
    const store = ['--clickhouse-path', join(work.path, 'chdb')];
    const admin = testKafka(brokers).admin();
    await admin.connect();
    const replay = (groupId: string, topic: string) => admin.resetOffsets({ groupId, topic, earliest: true });
    try {
      await run(process.execPath, [join(example, 'ingest.js'), ...common]);
      // A message storage itself refuses (not JSON): a dead letter of storage's own.
      await produce(brokers, `${prefix}.clean`, [{ key: 'x', value: 'not json' }]);
      await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      const clean = await query(join(work.path, 'chdb'), { ...EVERYTHING, rows: ROWS });
      expect(clean.bookings).to.have.length(54);
      expect(clean.rows).to.deep.equal([{ bookings: 54, dead_letters: 15 }]);

      // Normalization reads the raw topic again (as after a crash before its commits):
      // every booking and refusal is produced a second time, at new offsets.
      await replay(`${prefix}.normalize`, `${prefix}.raw`);
      await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      // Then storage reads both of its topics again (as after a crash before its commits).
      await replay(`${prefix}.store`, `${prefix}.clean`);
      await replay(`${prefix}.store-dead`, `${prefix}.dead`);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      // And the same files are ingested again: new raw messages, the same identities.
      await run(process.execPath, [join(example, 'ingest.js'), ...common]);
      await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      const replayed = await query(join(work.path, 'chdb'), { ...EVERYTHING, rows: ROWS });
      // The clean topic holds every booking three times, the dead one each refusal at least
      // twice, and storage read every copy.
      const messages = async (topic: string) => (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
      expect(await messages(`${prefix}.clean`)).to.equal(3 * 54 + 1);
      expect(await messages(`${prefix}.dead`)).to.be.at.least(2 * 14);
      expectSame(replayed, clean);
      expect(replayed.rows).to.deep.equal(clean.rows);
    } finally {
      work.remove();
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });

  it('kill -9 of normalization and storage at random points, three rounds, each restarted: every table and view equals a clean run, row for row, without FINAL', async function () {
    this.timeout(420_000);
    const began = Date.now();
    const step = (what: string) => console.log(`      ${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`);
    const work = tempDir();
    const records = 30_000;
    // Unique bookings, one in 40 refused (no status).
    const samples = readFileSync(join(samplesDir, 'staylodge', 'reservations.ndjson'), 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    mkdirSync(join(work.path, 'in', 'staylodge'), { recursive: true });
    writeFileSync(
      join(work.path, 'in', 'staylodge', 'many.ndjson'),
      Array.from({ length: records }, (_, i) => {
        const record: Record<string, unknown> = { ...samples[i % samples.length], reservationId: 7_000_000 + i, reservationStatus: 'CONFIRMED' };
        if (i % 40 === 0) delete record.reservationStatus;
        return JSON.stringify(record);
      }).join('\n') + '\n',
    );
    const admin = testKafka(brokers).admin();
    await admin.connect();
    const prefixes = [`clean-${randomUUID().slice(0, 8)}`, `chaos-${randomUUID().slice(0, 8)}`];
    try {
      const pass = (prefix: string) => {
        const common = ['--brokers', brokers.join(','), '--prefix', prefix, '--progress-ms', '0'];
        const args = [...common, '--session-timeout-ms', '6000', '--heartbeat-interval-ms', '500'];
        const store = ['--clickhouse-path', join(work.path, prefix)];
        return { common, args, store };
      };
      const finish = async (prefix: string) => {
        const { args, store } = pass(prefix);
        await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
        await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      };
      const [cleanPrefix, chaosPrefix] = prefixes as [string, string];
      await run(process.execPath, [join(example, 'ingest.js'), ...pass(cleanPrefix).common, join(work.path, 'in', 'staylodge')]);
      await finish(cleanPrefix);
      step('clean run done');

      // The chaos run: each stage killed (SIGKILL: no drain, no commit, no leave) a random
      // moment after its group's latest commit moved, and started again at once.
      const { common, args, store } = pass(chaosPrefix);
      await run(process.execPath, [join(example, 'ingest.js'), ...common, join(work.path, 'in', 'staylodge')]);
      const start = (stage: 'normalize' | 'store') => {
        const child = spawn(process.execPath, [join(example, `${stage}.js`), ...args, ...(stage === 'store' ? store : [])], { stdio: 'ignore' });
        children.push(child);
        return child;
      };
      const committed = async (groupId: string, topic: string) => [...(await committedOffsets(brokers, groupId, topic)).values()].reduce((sum, o) => sum + Math.max(0, o), 0);
      const end = async (topic: string) => [...(await endOffsets(brokers, topic)).values()].reduce((sum, o) => sum + o, 0);
      // Killed a random moment after a commit of its group that left records to read (so
      // probably while writing them), or after 10 s without one.
      const killAfterCommit = async (child: ChildProcess, groupId: string, topic: string) => {
        const before = await committed(groupId, topic);
        for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
          const now = await committed(groupId, topic);
          if (now !== before && now < (await end(topic))) break;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 300)));
        child.kill('SIGKILL');
        await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
      };
      let normalize = start('normalize');
      let storage = start('store');
      for (let round = 0; round < 3; round++) {
        await killAfterCommit(normalize, `${chaosPrefix}.normalize`, `${chaosPrefix}.raw`);
        normalize = start('normalize');
        step(`normalize killed at ${await committed(`${chaosPrefix}.normalize`, `${chaosPrefix}.raw`)} of ${await end(`${chaosPrefix}.raw`)}`);
        await killAfterCommit(storage, `${chaosPrefix}.store`, `${chaosPrefix}.clean`);
        storage = start('store');
        step(`store killed at ${await committed(`${chaosPrefix}.store`, `${chaosPrefix}.clean`)} of ${await end(`${chaosPrefix}.clean`)}`);
      }
      for (const child of [normalize, storage]) {
        child.kill('SIGTERM');
        await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
      }
      step('services stopped');
      await finish(chaosPrefix);
      step('chaos run done');

      const clean = await query(join(work.path, cleanPrefix), { ...EVERYTHING, rows: ROWS });
      const chaos = await query(join(work.path, chaosPrefix), { ...EVERYTHING, rows: ROWS });
      const [counted] = clean.byOrigin as { accepted: number; dead_lettered: number }[];
      expect(counted!.accepted + counted!.dead_lettered, 'every record counted once in the clean run').to.equal(records);
      expect(counted!.dead_lettered).to.be.at.least(records / 40);
      expect(clean.rows).to.deep.equal([{ bookings: counted!.accepted, dead_letters: counted!.dead_lettered }]);
      // What the kills cost: copies in the clean and dead topics, all of them read by storage.
      const copies = async (prefix: string) => ({ clean: await end(`${prefix}.clean`), dead: await end(`${prefix}.dead`) });
      step(`messages: clean run ${JSON.stringify(await copies(cleanPrefix))}, with the kills ${JSON.stringify(await copies(chaosPrefix))}`);
      expectSame(chaos, clean);
      expect(chaos.rows).to.deep.equal(clean.rows);
    } finally {
      work.remove();
      await admin.deleteTopics({ topics: prefixes.flatMap((prefix) => ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`)) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
