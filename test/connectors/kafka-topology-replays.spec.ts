import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from '../helpers';
import { testKafka } from '../kafka';
import { ensureKafka } from '../services';

const run = promisify(execFile);
const dist = join(__dirname, '..', '..');
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

const QUERIES = {
  // Exact by construction: each record's identity counted once per vendor and hour.
  quality: 'SELECT vendor, hour, accepted, dead_lettered FROM vendor_quality_exact ORDER BY vendor, hour',
  bookings: 'SELECT vendor, booking_id, status, total_amount, currency, updated_at, origin_position, origin_time FROM bookings FINAL ORDER BY vendor, booking_id',
  letters: 'SELECT vendor, stage, code, uniqExact(origin_position) AS records FROM dead_letters GROUP BY vendor, stage, code ORDER BY vendor, stage, code',
  // Counted per insert: what replays inflate.
  perInsert: 'SELECT sum(accepted) AS accepted, sum(dead_lettered) AS dead_lettered FROM vendor_quality_hourly',
};

describe('examples/kafka-topology: counts under replays', function () {
  this.timeout(180_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('after normalization and storage read everything again, vendor_quality_exact, bookings FINAL and dead letters by origin hold what one clean pass left, row for row', async () => {
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
      await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      const clean = await query(join(work.path, 'chdb'), QUERIES);
      expect(clean.bookings).to.have.length(54);
      expect(clean.perInsert).to.deep.equal([{ accepted: 54, dead_lettered: 14 }]);

      // Normalization reads the raw topic again (as after a crash before its commits):
      // every booking and refusal is produced a second time, at new offsets.
      await replay(`${prefix}.normalize`, `${prefix}.raw`);
      await run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle']);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      // Then storage reads both of its topics again (as after a crash before its commits).
      await replay(`${prefix}.store`, `${prefix}.clean`);
      await replay(`${prefix}.store-dead`, `${prefix}.dead`);
      await run(process.execPath, [join(example, 'store.js'), ...args, ...store, '--until-idle']);
      const replayed = await query(join(work.path, 'chdb'), { ...QUERIES, rows: 'SELECT (SELECT count() FROM bookings) AS bookings, (SELECT count() FROM dead_letters) AS dead_letters' });

      // The replays happened and were inserted: per-insert counts and raw rows grew.
      const perInsert = replayed.perInsert[0] as { accepted: number; dead_lettered: number };
      expect(Number(perInsert.accepted), 'accepted counted per insert').to.be.greaterThan(54);
      expect(Number(perInsert.dead_lettered), 'dead-lettered counted per insert').to.be.greaterThan(14);
      // Counts by origin are those of the clean pass, row for row, without FINAL.
      expect(replayed.quality).to.deep.equal(clean.quality);
      expect(replayed.bookings).to.deep.equal(clean.bookings);
      expect(replayed.letters).to.deep.equal(clean.letters);
      const totals = (clean.quality as { accepted: number; dead_lettered: number }[]).reduce((t, r) => ({ accepted: t.accepted + Number(r.accepted), dead_lettered: t.dead_lettered + Number(r.dead_lettered) }), { accepted: 0, dead_lettered: 0 });
      expect(totals).to.deep.equal({ accepted: 54, dead_lettered: 14 });
      console.log(`      per insert after the replays: ${JSON.stringify(perInsert)}; rows: ${JSON.stringify(replayed.rows![0])}`);
    } finally {
      work.remove();
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
