import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { register as globalRegistry } from 'prom-client';
import { fromIterable } from '../../../connectors/iterable';
import { toClickHouse } from '../../../connectors/clickhouse';
import { recentBookings, toRedisCache } from '../../../connectors/redis';
import { CacheKeys, columnsTag, PACK_NICE, packWorker, resolveLayout, SHARDS } from '../../../connectors/redis/cache';
import { encodeRows } from '../../../lib/batch';
import { ConfigError, SinkError, TributaryError } from '../../../lib/errors';
import { fanOut } from '../../../lib/fanOut';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter, Sink } from '../../../lib/sink';
import type { ClickHouseClient } from '../../../lib/store';
import { delay, MemorySink, Recorder, rejection, tempDir, testClickHouse, until } from '../../helpers';
import { ensureRedis, ensureRedisTls, startRedis, stopRedis, stopRedisTls } from '../../services';

interface Booking {
  vendor: string;
  booking_id: string;
  updated_at: string;
  booked_at: string;
  customer_token: string;
  status: string;
  card: string;
}

const HOUR = 3_600_000;
const execFileAsync = promisify(execFile);
const iso = (ms: number) => new Date(ms).toISOString();

function booking(i: number, overrides: Partial<Booking> = {}): Booking {
  const now = Date.now();
  return {
    vendor: i % 2 ? 'acme' : 'globex',
    booking_id: `B-${i}`,
    updated_at: iso(now - HOUR),
    booked_at: iso(now - 2 * HOUR - i * 1000),
    customer_token: `tok-${i % 5}`,
    status: 'confirmed',
    // As the encrypt step leaves a field: the cache must store it as it is.
    card: `enc:v1:k1:${Buffer.from(`card-${i}`).toString('base64')}`,
    ...overrides,
  };
}

/** Writes `rows` as one batch; `encoded`: with the rows encoded as a pipeline does it for the sink (or a fan-out for sinks of its encoding). */
async function write(sink: Sink<Booking>, rows: Booking[], encoded = false): Promise<void> {
  const recorder = new Recorder();
  const envelopes = rows.map((row) => recorder.envelope(row));
  await sink.write({ envelopes, bytes: 0, ...(encoded && { encoded: encodeRows(envelopes, (row) => JSON.stringify(row)) }) }, { token: randomUUID(), attempt: 1 });
}

describe('Redis bookings cache (real redis-server, embedded ClickHouse)', function () {
  this.timeout(600_000); // the first run installs Debian's redis-server
  let url: string;
  let redis: Redis;
  const clickhouse = testClickHouse();
  let table: string;
  let prefix: string;

  before(async () => {
    url = await ensureRedis();
    redis = new Redis(url);
    redis.on('error', () => undefined); // Redis is stopped on purpose below; commands fail on their own
  });
  after(async () => {
    await redis?.quit();
  });
  /** Where the cache of `prefix` (with `ttlMs`) keeps things. */
  const layout = (ttlMs?: number) => new CacheKeys(resolveLayout({ prefix, ttlMs }));
  const entry = (vendor: string, id: string) => layout().entry(JSON.stringify([vendor, id]));
  /** The booking as stored (`<version>|<time>|<row>`), or null. */
  const storedValue = (vendor: string, id: string) => redis.hget(layout().shardOf(entry(vendor, id)), entry(vendor, id));
  const stored = async (vendor: string, id: string) => {
    const value = await storedValue(vendor, id);
    return value === null ? null : (JSON.parse(value.slice(value.indexOf('|', value.indexOf('|') + 1) + 1)) as Booking);
  };
  /** Every entry of a vendor's time buckets, oldest bucket first. */
  const vendorEntries = async (vendor: string, ttlMs?: number) => {
    const keys = layout(ttlMs);
    const lists = (await redis.zrange(keys.buckets, '0', '-1')).filter((list) => list.startsWith(`${prefix}v:${JSON.stringify(vendor)}:`));
    return (await Promise.all(lists.map((list) => redis.lrange(list, 0, -1)))).flat();
  };
  /** Every customer index member of `customer` (its JSON, time and entry), oldest bucket first. */
  const customerMembers = async (customer: string) => {
    const from = `${JSON.stringify(customer)}\0`;
    const buckets = await redis.zrange(layout().customerBuckets, '0', '-1');
    return (await Promise.all(buckets.map((bucket) => redis.zrangebylex(bucket, `[${from}`, `(${JSON.stringify(customer)}\x01`)))).flat();
  };
  /** The entries a customer's index lists. */
  const customerEntries = async (customer: string) => (await customerMembers(customer)).map((member) => member.slice(member.lastIndexOf('\0') + 1));
  /** When the customer index bucket holding bookings of `time` expires. */
  const customerBucketExpiry = (time: number) => redis.pexpiretime(layout().customerBucket(Math.floor(time / HOUR)));
  const acl = (...args: string[]) => (redis as unknown as { call(...a: string[]): Promise<unknown> }).call('ACL', ...args);
  beforeEach(async () => {
    table = `bookings_cache_${randomUUID().replace(/-/g, '')}`;
    prefix = `test:${randomUUID()}:`;
    await clickhouse.exec(
      `CREATE TABLE ${table} (vendor String, booking_id String, updated_at DateTime64(3, 'UTC'), booked_at DateTime64(3, 'UTC'), customer_token String, status String, card String) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (vendor, booking_id)`,
    );
  });
  afterEach(async () => {
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  describe('toRedisCache', () => {
    it('stores each booking under its key with its time, as received, with vendor and customer indexes', async () => {
      const cache = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
      try {
        const rows = [booking(1), booking(2), booking(3)];
        await write(cache, rows);
        expect(await stored('acme', 'B-1')).to.deep.equal(rows[0]);
        expect(await storedValue('acme', 'B-1')).to.include(rows[0]!.card);
        expect(await storedValue('acme', 'B-1'), 'version and time ahead of the row').to.match(new RegExp(`^${Date.parse(rows[0]!.updated_at)}\\|${Date.parse(rows[0]!.booked_at)}\\|`));
        expect(await vendorEntries('acme')).to.have.members([entry('acme', 'B-3'), entry('acme', 'B-1')]);
        expect(await customerEntries('tok-2')).to.deep.equal([entry('globex', 'B-2')]);
        const expiry = await customerBucketExpiry(Date.parse(rows[1]!.booked_at));
        expect(expiry, 'the index lives as long as its bookings: until its time bucket ends, plus the TTL').to.equal((Math.floor(Date.parse(rows[1]!.booked_at) / HOUR) + 1) * HOUR + 24 * HOUR);
        const bucketEnds = await redis.zrange(layout().buckets, '0', '-1', 'WITHSCORES');
        const bucketMs = HOUR; // 24 h / 24
        expect(bucketEnds[bucketEnds.indexOf(`${prefix}v:"acme":${Math.floor(Date.parse(rows[0]!.booked_at) / bucketMs)}`) + 1], 'a bucket is registered by its end').to.equal(String((Math.floor(Date.parse(rows[0]!.booked_at) / bucketMs) + 1) * bucketMs));
        expect(cache.stats).to.deep.equal({ stored: 3, older: 0, expired: 0, ahead: 0, unkeyed: 0 });
        // An earlier booking later on never shortens an index's life.
        await write(cache, [booking(7, { customer_token: 'tok-2' })]);
        expect(await customerBucketExpiry(Date.parse(rows[1]!.booked_at))).to.equal(expiry);
        expect(await customerEntries('tok-2')).to.have.members([entry('globex', 'B-2'), entry('acme', 'B-7')]);
        // A replay adds no index entries.
        await write(cache, rows);
        expect(await vendorEntries('acme')).to.have.members([entry('acme', 'B-7'), entry('acme', 'B-3'), entry('acme', 'B-1')]);
        expect(cache.stats).to.deep.equal({ stored: 7, older: 0, expired: 0, ahead: 0, unkeyed: 0 });
      } finally {
        await cache.close();
      }
    });

    it('removes bookings and index entries past their TTL with the writes that follow, unless a later version moved their time on', async () => {
      const ttlMs = 2000;
      const cache = toRedisCache<Booking>({ url, prefix, ttlMs });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, ttlMs, fill: false });
      try {
        await reader.warm();
        const moved = booking(7, { booked_at: iso(Date.now() - 1800) });
        await write(cache, [booking(1, { booked_at: iso(Date.now() - 1800) }), booking(5, { booked_at: iso(Date.now()) }), moved]);
        await write(cache, [{ ...moved, booked_at: iso(Date.now()), updated_at: iso(Date.now()) }]);
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        await delay(300);
        expect(await reader.get('acme', 'B-1'), 'past its TTL: no longer read').to.equal(undefined);
        expect(await storedValue('acme', 'B-1'), 'still there until the next write').to.not.equal(null);
        const cut = Date.now() - ttlMs;
        await write(cache, [booking(3, { booked_at: iso(Date.now()) })]);
        expect(await storedValue('acme', 'B-1')).to.equal(null);
        expect(await stored('acme', 'B-7'), 'moved on: kept').to.include({ booking_id: 'B-7' });
        expect(await vendorEntries('acme', ttlMs)).to.have.members([entry('acme', 'B-5'), entry('acme', 'B-7'), entry('acme', 'B-3')]);
        expect(await redis.zrangebyscore(layout(ttlMs).buckets, '-inf', cut), 'emptied buckets leave the set').to.deep.equal([]);
      } finally {
        await cache.close();
        await reader.close();
      }
    });

    it('never lets a replayed or older version replace a newer one', async () => {
      const cache = toRedisCache<Booking>({ url, prefix });
      try {
        const newer = booking(1, { status: 'cancelled', updated_at: iso(Date.now() - 1000) });
        const older = booking(1, { status: 'confirmed', updated_at: iso(Date.now() - HOUR) });
        await write(cache, [newer]);
        await write(cache, [older]);
        await write(cache, [older, newer, older]);
        expect(await stored('acme', 'B-1')).to.include({ status: 'cancelled' });
        expect(cache.stats).to.include({ stored: 2, older: 3 });
      } finally {
        await cache.close();
      }
    });

    it('keeps the newest version of a booking seen several times in one batch, whatever the order, across the calls a large batch is split into', async () => {
      const cache = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
      try {
        const at = (minutes: number) => iso(Date.now() - HOUR + minutes * 60_000);
        // 5,000 rows: more than one transaction (2,000 rows at most; a booking that comes again
        // closes the one it would join). B-1 comes again 20 rows on, and then after 2,570
        // distinct rows (a transaction closed by its size between them); B-2 at either end.
        const rows = Array.from({ length: 5000 }, (_, i) => booking(i + 10));
        rows[10] = booking(1, { status: 'second', updated_at: at(2) });
        rows[30] = booking(1, { status: 'oldest', updated_at: at(1) });
        rows[2600] = booking(1, { status: 'newest', updated_at: at(3), customer_token: 'tok-new' });
        rows[20] = booking(2, { status: 'newest', updated_at: at(3) });
        rows[4450] = booking(2, { status: 'older', updated_at: at(1) });
        await write(cache, rows);
        expect(await stored('acme', 'B-1')).to.deep.equal(rows[2600]);
        expect((await stored('globex', 'B-2'))!.status).to.equal('newest');
        expect(cache.stats).to.deep.equal({ stored: 4998, older: 2, expired: 0, ahead: 0, unkeyed: 0 });
        expect(new Set(await vendorEntries('acme')).size).to.equal(new Set(rows.filter((row) => row.vendor === 'acme').map((row) => row.booking_id)).size);
        expect(await customerEntries('tok-new')).to.deep.equal([entry('acme', 'B-1')]);
      } finally {
        await cache.close();
      }
    });

    for (const encoded of [false, true]) {
      it(`stores keys and rows of any length and any characters exactly (the packed arguments count bytes, not characters)${encoded ? ', from rows encoded upstream' : ''}`, async () => {
        const cache = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
        try {
          const rows = [
            booking(1, { vendor: 'café', booking_id: 'Ünïcødé-✈️-𝄞', customer_token: 'tök-€' }),
            booking(2, { vendor: 'v'.repeat(31), booking_id: 'b'.repeat(32), status: 'é'.repeat(200) }), // around the 32- and 256-byte string headers
            booking(3, { booking_id: 'x'.repeat(70_000), status: '€'.repeat(30_000) }), // past 65,535 bytes
            // Over the bytes one call carries: the rows after it go in another call.
            ...Array.from({ length: 3 }, (_, i) => booking(4 + i, { status: 's'.repeat(3 << 20) })),
          ];
          await write(cache, rows, encoded);
          expect(cache.stats).to.deep.equal({ stored: 6, older: 0, expired: 0, ahead: 0, unkeyed: 0 });
          for (const row of rows) expect(await storedValue(row.vendor, row.booking_id)).to.equal(`${Date.parse(row.updated_at)}|${Date.parse(row.booked_at)}|${JSON.stringify(row)}`);
          expect(await customerMembers('tök-€'), 'customer, time and entry').to.deep.equal([layout().customerEntry('tök-€', Date.parse(rows[0]!.booked_at), entry('café', 'Ünïcødé-✈️-𝄞'))]);
          expect(await customerMembers('tök-€')).to.deep.equal([`"tök-€"\0${String(Date.parse(rows[0]!.booked_at)).padStart(15, '0')}\0${entry('café', 'Ünïcødé-✈️-𝄞')}`]);
          expect(await vendorEntries('café')).to.deep.equal([entry('café', 'Ünïcødé-✈️-𝄞')]);
        } finally {
          await cache.close();
        }
      });
    }

    it("packs encoded batches of 256 rows or more on a worker thread, into what the sink's own thread writes; a worker stopped under a batch fails that write as retriable, and the next write starts another", async () => {
      const now = Date.now();
      // What the packing reads, each kind: keys needing escapes and past ASCII, a booking again
      // with an older and a newer version, expired, unkeyed, too far ahead, a customer index.
      const rows = Array.from({ length: 3000 }, (_, i) => booking(i + 10, i % 7 === 0 ? { vendor: 'café', booking_id: `Ü-${i}-"q"\\` } : {}));
      rows[500] = booking(11, { status: 'older', updated_at: iso(now - 2 * HOUR) });
      rows[2500] = booking(13, { status: 'newer', updated_at: iso(now - HOUR / 2) });
      rows.push(booking(5000, { booked_at: iso(now - 30 * HOUR) }), booking(5001, { booking_id: '' }), booking(5002, { booked_at: iso(now + 30 * HOUR) }));
      /** Every key of the cache (less its prefix), its type and what it holds. */
      const contents = async () => {
        const keys = (await redis.keys(`${prefix}*`)).sort();
        return Promise.all(
          keys.map(async (key) => {
            const type = await redis.type(key);
            const value = type === 'hash' ? Object.entries(await redis.hgetall(key)).sort() : type === 'list' ? await redis.lrange(key, 0, -1) : type === 'zset' ? await redis.zrange(key, '0', '-1', 'WITHSCORES') : await redis.get(key);
            return [key.slice(prefix.length), type, value];
          }),
        );
      };
      const onThread = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token', packInWorker: false });
      const onWorker = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
      const pack = packWorker.pack;
      let packed = 0;
      packWorker.pack = (...args) => {
        packed++;
        return pack.apply(packWorker, args);
      };
      try {
        await write(onThread, rows, true);
        expect(packed, 'packInWorker: false').to.equal(0);
        const expected = await contents();
        expect(onThread.stats).to.deep.equal({ stored: 2999, older: 1, expired: 1, ahead: 1, unkeyed: 1 });
        expect(expected.length).to.be.greaterThan(60);
        await redis.del(...(await redis.keys(`${prefix}*`)));
        /** Threads of this process at the worker's nice (the engine's query threads may be too). */
        const niced = () => readdirSync('/proc/self/task').filter((task) => Number(readFileSync(`/proc/self/task/${task}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]) === PACK_NICE).length;
        await packWorker.terminate();
        const before = niced();
        await write(onWorker, rows, true);
        expect(packed).to.equal(1);
        expect(await contents()).to.deep.equal(expected);
        // The worker's thread yields to the pipeline's: its own nice, not the process's.
        expect(niced(), "threads at the worker's nice").to.equal(before + 1);
        expect(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[16], 'the main thread').to.equal('0');
        expect(onWorker.stats).to.deep.equal(onThread.stats);
        // Fewer rows are packed on the sink's thread.
        await write(onWorker, rows.slice(0, 255), true);
        expect(packed).to.equal(1);
        await write(onWorker, rows.slice(0, 256), true);
        expect(packed).to.equal(2);

        // Stopped with the batch on it: the write fails, retriable, and is written whole when retried.
        await redis.del(...(await redis.keys(`${prefix}*`)));
        const failed = rejection(write(onWorker, rows, true));
        await until(() => packWorker.busy > 0, 5000, 'the batch on the worker');
        await packWorker.terminate();
        const error = (await failed) as SinkError;
        expect(error).to.be.instanceOf(SinkError);
        expect([error.code, error.retriable]).to.deep.equal(['CACHE_PACK', true]);
        expect(error.message).to.contain('the packing worker was stopped');
        await write(onWorker, rows, true);
        expect(packed).to.equal(4);
        expect(await contents()).to.deep.equal(expected);
        // A failure inside the worker comes back as the batch's.
        expect(String(await rejection(packWorker.pack('{', { body: Buffer.from('{}\n'), ends: [3] }, now)))).to.contain('packing a batch failed: SyntaxError');

        // A worker that cannot run here (it fails before its first answer): the batch, and those after it, are packed on the sink's thread.
        const script = packWorker.script;
        const dir = tempDir('tributary-pack-');
        const broken = join(dir.path, 'broken-worker.js');
        writeFileSync(broken, "throw new Error('no threads here');\n");
        packWorker.script = broken;
        try {
          await redis.del(...(await redis.keys(`${prefix}*`)));
          await write(onWorker, rows, true);
          expect(packWorker.available).to.equal(false);
          expect(await contents()).to.deep.equal(expected);
          await write(onWorker, rows, true);
          expect(packed, 'no worker tried again').to.equal(6);
          // One that stops by itself after answering could run here: the next batch starts another.
          const quitting = join(dir.path, 'quitting-worker.js');
          writeFileSync(quitting, `require(${JSON.stringify(script)});\nrequire('node:worker_threads').parentPort.once('message', () => setTimeout(() => process.exit(3), 20));\n`);
          packWorker.script = quitting;
          expect(packWorker.available).to.equal(true);
          await write(onWorker, rows, true);
          expect(packed).to.equal(7);
          await until(() => !packWorker.running, 5000, 'the worker to stop');
          expect(packWorker.available, 'it answered before it stopped').to.equal(true);
          await write(onWorker, rows, true);
          expect(packed).to.equal(8);
        } finally {
          packWorker.script = script;
          dir.remove();
        }
        expect(packWorker.available).to.equal(true);
      } finally {
        packWorker.pack = pack;
        await onThread.close();
        await onWorker.close();
      }
      // The worker holds a process open only while a batch is on it: one that wrote and closed its cache ends by itself.
      const script = [
        `const { toRedisCache } = require(${JSON.stringify(require.resolve('../../../connectors/redis'))});`,
        `const cache = toRedisCache({ url: ${JSON.stringify(url)}, prefix: ${JSON.stringify(prefix)} });`,
        `const at = (ms) => new Date(Date.now() - ms).toISOString();`,
        `const lines = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ vendor: 'acme', booking_id: 'X-' + i, updated_at: at(${HOUR}), booked_at: at(${2 * HOUR}) }));`,
        `const body = Buffer.from(lines.join('\\n') + '\\n');`,
        `const ends = []; for (let at = body.indexOf(10); at >= 0; at = body.indexOf(10, at + 1)) ends.push(at + 1);`,
        `cache.write({ envelopes: lines.map(() => ({})), bytes: body.length, encoded: { body, ends } }, { token: 'exit', attempt: 1 }).then(() => cache.close()).then(() => console.log(JSON.stringify(cache.stats)));`,
      ].join('\n');
      const { stdout } = await execFileAsync(process.execPath, ['-e', script], { timeout: 30_000 });
      expect(JSON.parse(stdout)).to.deep.include({ stored: 1000 });
    });

    it('holds the process open while a batch is on the worker and only then; a worker that stops under a batch says so; one that cannot be made leaves batches to the sink', async () => {
      const layoutJson = JSON.stringify(resolveLayout({ prefix }));
      const encoded = (count: number) => encodeRows(Array.from({ length: count }, (_, i) => new Recorder().envelope(booking(i))), (row) => JSON.stringify(row));
      /** Handles keeping the event loop alive that a worker's port is one of. */
      const ports = () => process.getActiveResourcesInfo().filter((resource) => resource === 'MessagePort').length;
      await packWorker.terminate();
      expect(packWorker.running).to.equal(false);
      const idle = ports();
      const small = packWorker.pack(layoutJson, encoded(300), Date.now());
      const large = packWorker.pack(layoutJson, encoded(50_000), Date.now());
      expect(packWorker.running).to.equal(true);
      expect(ports(), 'two batches on the worker').to.equal(idle + 1);
      await small;
      expect(packWorker.busy).to.equal(1);
      expect(ports(), 'one batch still on it').to.equal(idle + 1);
      await large;
      expect(ports(), 'no batch on it').to.equal(idle);
      expect(packWorker.running, 'an idle worker stays for the next batch').to.equal(true);
      const next = packWorker.pack(layoutJson, encoded(300), Date.now());
      expect(ports(), 'a batch on the idle worker').to.equal(idle + 1);
      await next;
      expect(ports(), 'that one answered too').to.equal(idle);

      const script = packWorker.script;
      const dir = tempDir('tributary-pack-');
      try {
        // Answers one batch, then stops under the next.
        const quitting = join(dir.path, 'quitting-worker.js');
        writeFileSync(quitting, `let seen = 0;\nrequire('node:worker_threads').parentPort.on('message', () => { if (++seen === 2) process.exit(3); });\nrequire(${JSON.stringify(script)});\n`);
        packWorker.script = quitting;
        await packWorker.pack(layoutJson, encoded(300), Date.now());
        expect(String(await rejection(packWorker.pack(layoutJson, encoded(300), Date.now())))).to.contain('the packing worker stopped (exit code 3)');
        expect(packWorker.available, 'it answered before').to.equal(true);

        // A worker the runtime refuses to make (here a relative path, which it takes only as ./…).
        packWorker.script = 'package.json';
        expect(packWorker.available, 'the file is there').to.equal(true);
        const cache = toRedisCache<Booking>({ url, prefix });
        try {
          const rows = Array.from({ length: 300 }, (_, i) => booking(i));
          await write(cache, rows, true);
          expect(packWorker.available).to.equal(false);
          expect(cache.stats.stored).to.equal(300);
          expect(await stored(rows[299]!.vendor, rows[299]!.booking_id)).to.deep.equal(rows[299]);
          // A value the transform left undefined goes as JSON's null (and is then unkeyed), as JSON.stringify writes an array's.
          expect(cache.encode!(undefined as unknown as Booking)).to.equal('null');
        } finally {
          await cache.close();
        }
      } finally {
        packWorker.script = script;
        dir.remove();
      }
      expect(packWorker.available).to.equal(true);
    });

    it('puts each of hundreds of vendors in one call into its own index, with times given as epoch ms, fractions too', async () => {
      const cache = toRedisCache<Booking>({ url, prefix });
      try {
        const now = Date.now();
        const time = (i: number) => now - HOUR - i * 1000 + 0.5;
        // One call (under 2,000 rows): vendor indexes are numbered per call, one byte up to 127, more past it.
        const rows = Array.from({ length: 300 }, (_, i) => ({ ...booking(i), vendor: `v${i}`, booked_at: time(i), updated_at: now - HOUR }) as unknown as Booking);
        await write(cache, rows);
        expect(cache.stats).to.deep.equal({ stored: 300, older: 0, expired: 0, ahead: 0, unkeyed: 0 });
        for (const i of [0, 126, 127, 128, 299]) {
          expect(await vendorEntries(`v${i}`)).to.deep.equal([entry(`v${i}`, `B-${i}`)]);
          expect(await storedValue(`v${i}`, `B-${i}`)).to.match(new RegExp(`^${now - HOUR}\\|${time(i)}\\|`));
        }
      } finally {
        await cache.close();
      }
    });

    it('keeps hostile key values apart, skips expired and unkeyed rows', async () => {
      const cache = toRedisCache<Booking>({ url, prefix, ttlMs: HOUR });
      try {
        await write(cache, [
          booking(1, { vendor: 'a', booking_id: 'b:c', booked_at: iso(Date.now() - 60_000) }),
          booking(1, { vendor: 'a:b', booking_id: 'c', booked_at: iso(Date.now() - 60_000) }),
          booking(1, { vendor: 'a","b', booking_id: 'c', booked_at: iso(Date.now() - 60_000) }),
          booking(2, { booked_at: iso(Date.now() - 2 * HOUR) }), // older than the TTL
          { ...booking(3), booking_id: undefined } as unknown as Booking,
          booking(4, { updated_at: 'not a time' }),
        ]);
        expect(cache.stats).to.deep.equal({ stored: 3, older: 0, expired: 1, ahead: 0, unkeyed: 2 });
        let fields = 0;
        for (const hash of await redis.keys(`${prefix}h:*`)) fields += await redis.hlen(hash);
        expect(fields).to.equal(3);
        expect(await stored('a', 'b:c')).to.include({ vendor: 'a', booking_id: 'b:c' });
        expect(await stored('a:b', 'c')).to.include({ vendor: 'a:b', booking_id: 'c' });
      } finally {
        await cache.close();
      }
    });

    it('does not cache a booking further ahead than maxAheadMs (by default the TTL): a vendor clock or a time in the year 9999 leaves nothing in Redis to outlive the TTL', async () => {
      for (const maxAheadMs of [undefined, 3 * HOUR]) {
        prefix = `test:${randomUUID()}:`;
        const cache = toRedisCache<Booking>({ url, prefix, ttlMs: HOUR, customerField: 'customer_token', ...(maxAheadMs !== undefined && { maxAheadMs }) });
        try {
          const now = Date.now();
          await write(cache, [booking(1, { booked_at: iso(now - 60_000) }), booking(3, { booked_at: iso(now + 2 * HOUR) }), booking(5, { booked_at: '9999-12-31T23:59:59.999Z' })]);
          const kept = maxAheadMs === undefined ? ['B-1'] : ['B-1', 'B-3'];
          expect(cache.stats, `${maxAheadMs}`).to.deep.equal({ stored: kept.length, older: 0, expired: 0, ahead: 3 - kept.length, unkeyed: 0 });
          let fields = 0;
          for (const hash of await redis.keys(`${prefix}h:*`)) fields += await redis.hlen(hash);
          expect(fields).to.equal(kept.length);
          expect(await vendorEntries('acme', HOUR)).to.have.members(kept.map((id) => entry('acme', id)));
          // Nothing registered or expiring later than the last booking kept allows.
          const keys = layout(HOUR);
          const latest = now + (maxAheadMs ?? HOUR) + keys.bucketMs;
          for (const set of [keys.buckets, keys.customerBuckets]) {
            const scores = (await redis.zrange(set, '0', '-1', 'WITHSCORES')).filter((_, i) => i % 2 === 1).map(Number);
            expect(scores.length, set).to.be.greaterThan(0);
            expect(Math.max(...scores), set).to.be.at.most(latest);
          }
          for (const bucket of await redis.zrange(keys.customerBuckets, '0', '-1')) expect(await redis.pexpiretime(bucket)).to.be.at.most(latest + HOUR);
          // Where the bookings not cached lie is marked, for the reader.
          const skipped = [now + 2 * HOUR, Date.parse('9999-12-31T23:59:59.999Z')].slice(maxAheadMs === undefined ? 0 : 1);
          const marks = await redis.zrange(keys.ahead, '0', '-1', 'WITHSCORES');
          expect(marks).to.have.length(2 * skipped.length);
          for (const time of skipped) {
            const member = marks.find((m, i) => i % 2 === 0 && (([start, end]) => start <= time && time < end)(keys.aheadSpan(m, Number(marks[i + 1]))));
            expect(member, `a mark over ${time}`).to.not.equal(undefined);
          }
        } finally {
          await cache.close();
        }
      }
    });

    it('refuses bad options with the rule', () => {
      expect(() => toRedisCache({})).to.throw(ConfigError, 'toRedisCache needs exactly one of url or client');
      expect(() => toRedisCache({ url: 'http://x' })).to.throw(ConfigError, 'url must start with redis:// or rediss://, got "http://x"');
      expect(() => toRedisCache({ url, ttlMs: 10 })).to.throw(ConfigError, 'ttlMs must be an integer >= 1000, got 10');
      expect(() => toRedisCache({ url, keyFields: [] })).to.throw(ConfigError, 'keyFields must be a non-empty list of column names, vendor first, got []');
      expect(() => toRedisCache({ url, timeField: 'a b' })).to.throw(ConfigError, 'timeField must be a column name, got "a b"');
      expect(() => toRedisCache({ url, versionField: '' })).to.throw(ConfigError, 'versionField must be a column name, got ""');
      expect(() => toRedisCache({ url, customerField: 'a-b' })).to.throw(ConfigError, 'customerField must be a column name, got "a-b"');
      expect(() => toRedisCache({ url, prefix: 7 as never })).to.throw(ConfigError, 'prefix must be a string, got 7');
      expect(() => toRedisCache({ url, packInWorker: 'yes' as never })).to.throw(ConfigError, 'packInWorker must be true or false, got "yes"');
      for (const keyFields of [[''], ['vendor', 7], 'vendor', ['vendor', '']]) {
        expect(() => toRedisCache({ url, keyFields: keyFields as never })).to.throw(ConfigError, `keyFields must be a non-empty list of column names, vendor first, got ${JSON.stringify(keyFields)}`);
      }
      expect(() => toRedisCache({ url, keyFields: ['vendor', 'id; DROP'] })).to.throw(ConfigError, 'keyFields[] must be a column name, got "id; DROP"');
      expect(resolveLayout({})).to.deep.equal({ prefix: 'tributary:bookings:', keyFields: ['vendor', 'booking_id'], timeField: 'booked_at', versionField: 'updated_at', customerField: undefined, ttlMs: 86_400_000, maxAheadMs: 86_400_000 });
    });

    it('connects as a Redis ACL user given in the options, and fails with a clear error for a wrong password', async () => {
      const user = `cache-${randomUUID().slice(0, 8)}`;
      // The categories the README names for a cache user: nothing beyond them.
      await acl('SETUSER', user, 'on', '>s3cret', `~${prefix}*`, '+@read', '+@write', '+@transaction', '+@scripting');
      const good = toRedisCache<Booking>({ url, prefix, redis: { username: user, password: 's3cret' } });
      const bad = toRedisCache<Booking>({ url, prefix, redis: { username: user, password: 'wrong', maxRetriesPerRequest: 0, retryStrategy: () => null } });
      try {
        await write(good, [booking(1)]);
        expect(good.stats.stored).to.equal(1);
        const error = await rejection(write(bad, [booking(2)]));
        expect(error).to.be.instanceOf(SinkError);
        expect(String((error as Error).message)).to.match(/WRONGPASS|invalid username-password/);
      } finally {
        await good.close();
        await bad.close();
        await acl('DELUSER', user);
      }
    });

    it('fails a write no retry can mend as not retriable: a key of the cache holding another type, a user Redis refuses keys or scripts', async () => {
      const failure = async (sink: Sink<Booking>) => (await rejection(write(sink, [booking(1)]))) as SinkError;
      const user = `cache-${randomUUID().slice(0, 8)}`;
      // Keys of another prefix only; later every key but no scripts.
      await acl('SETUSER', user, 'on', '>s3cret', '~elsewhere:*', '+@all');
      const cache = toRedisCache<Booking>({ url, prefix });
      const elsewhere = toRedisCache<Booking>({ url, prefix, redis: { username: user, password: 's3cret' } });
      try {
        const shard = layout().shardOf(entry('acme', 'B-1'));
        await redis.set(shard, 'not a hash');
        const wrongType = await failure(cache);
        expect(wrongType).to.be.instanceOf(SinkError);
        expect(wrongType).to.include({ code: 'REDIS', retriable: false });
        expect(wrongType.message).to.match(/WRONGTYPE/);
        await redis.del(shard);
        await write(cache, [booking(1)]);
        expect(await stored('acme', 'B-1'), 'written once the key is mended').to.deep.include({ booking_id: 'B-1' });

        expect(await failure(elsewhere)).to.include({ code: 'REDIS', retriable: false });
        await acl('SETUSER', user, 'resetkeys', `~${prefix}*`, '-@scripting');
        const noScripts = await failure(elsewhere);
        expect(noScripts).to.include({ code: 'REDIS', retriable: false });
        expect(noScripts.message).to.match(/NOPERM/);
      } finally {
        await cache.close();
        await elsewhere.close();
        await acl('DELUSER', user);
      }
    });
  });

  describe('over TLS (a TLS-only redis-server)', () => {
    let tls: { url: string; ca: string };
    before(async () => {
      tls = await ensureRedisTls();
    });
    after(async () => {
      await stopRedisTls();
    });

    it('passes tls options through to ioredis: writes and reads with the trusted certificate, refuses an untrusted one', async () => {
      const cache = toRedisCache<Booking>({ url: tls.url, prefix, redis: { tls: { ca: tls.ca } } });
      const untrusted = toRedisCache<Booking>({ url: tls.url, prefix, redis: { maxRetriesPerRequest: 0, retryStrategy: () => null } });
      const reader = recentBookings<Booking>({ redis: { url: tls.url, redis: { tls: { ca: tls.ca } } }, clickhouse, table, prefix });
      try {
        await write(cache, [booking(1)]);
        expect(cache.stats.stored).to.equal(1);
        await reader.warm();
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1', card: booking(1).card });
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 0 });
        const error = await rejection(write(untrusted, [booking(2)]));
        expect(error).to.be.instanceOf(SinkError);
        expect((error as Error).message).to.match(/self[- ]signed certificate/);
      } finally {
        await cache.close();
        await untrusted.close();
        await reader.close();
      }
    });
  });

  describe('recentBookings', () => {
    async function seed(rows: Booking[]): Promise<void> {
      await clickhouse.insert(table, Buffer.from(rows.map((r) => JSON.stringify(r)).join('\n')), { date_time_input_format: 'best_effort' });
    }

    it('is stale until warm(), reading through to ClickHouse FINAL; then answers from Redis', async () => {
      const rows = Array.from({ length: 20 }, (_, i) => booking(i + 1));
      await seed(rows);
      await seed([booking(1, { status: 'cancelled', updated_at: iso(Date.now() - 1000) })]);
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, customerField: 'customer_token', fill: false });
      try {
        expect(await reader.isStale()).to.equal(true);
        expect(await reader.registry.metrics()).to.include(`tributary_cache_stale{cache="${prefix}"} 1`);
        expect(await reader.get('acme', 'B-1')).to.include({ status: 'cancelled' });
        expect(reader.counts).to.deep.equal({ hits: 0, misses: 1 });
        expect(await reader.warm()).to.equal(20);
        expect(await reader.isStale()).to.equal(false);
        expect(await reader.get('acme', 'B-1')).to.deep.include({ status: 'cancelled', card: rows[0]!.card });
        expect(await reader.get('acme', 'B-999')).to.equal(undefined);
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 2 });
        const range = { from: Date.now() - 3 * HOUR, to: Date.now() };
        const acme = await reader.byVendor('acme', range);
        expect(acme.map((b) => b.booking_id)).to.deep.equal(rows.filter((r) => r.vendor === 'acme').map((r) => r.booking_id).reverse());
        const customer = await reader.byCustomer('tok-1', { from: Date.now() - 3 * HOUR, to: Date.parse(rows[5]!.booked_at) });
        expect(customer.map((b) => b.booking_id), 'by time, up to B-6').to.deep.equal(['B-16', 'B-11', 'B-6']);
        expect(reader.counts).to.deep.equal({ hits: 3, misses: 2 });
        const older = await reader.byVendor('acme', { from: Date.now() - 48 * HOUR, to: Date.now() });
        expect(older.map((b) => b.booking_id), 'a range older than the TTL reads through, by time').to.deep.equal(rows.filter((r) => r.vendor === 'acme').map((r) => r.booking_id).reverse());
        expect(reader.counts.misses).to.equal(3);
        const metrics = await reader.registry.metrics();
        expect(metrics).to.include(`tributary_cache_hits_total{cache="${prefix}"} 3`);
        expect(metrics).to.include(`tributary_cache_misses_total{cache="${prefix}"} 3`);
        expect(metrics).to.include(`tributary_cache_stale{cache="${prefix}"} 0`);
      } finally {
        await reader.close();
      }
    });

    it('warms from ClickHouse a stretch at a time as it streams, rows cut anywhere between chunks (inside a character too): every row put as ClickHouse has it', async () => {
      // Escapes, a slash ClickHouse writes as \/, and characters of 2 to 4 bytes that cuts fall inside.
      const rows = Array.from({ length: 6000 }, (_, i) => booking(i + 1, i % 7 === 0 ? { status: `réservé ✈️ 𝄞 / "q" \\ ${i}` } : {}));
      // A row without a key is not put, nor counted.
      await seed([...rows, booking(0, { vendor: '' })]);
      const bookingsInRedis = async () => {
        const pipeline = redis.pipeline();
        for (let shard = 0; shard < SHARDS; shard++) pipeline.hlen(`${prefix}h:${shard}`);
        return (await pipeline.exec())!.reduce((sum, [, count]) => sum + Number(count), 0);
      };
      /** Bookings in Redis as every 20th piece of ClickHouse's answer is handed over. */
      const inRedis: number[] = [];
      let pieces = 0;
      const cutting = Object.create(clickhouse, {
        stream: {
          value: async function* (sql: string, options: Parameters<ClickHouseClient['stream']>[1]) {
            for await (const chunk of clickhouse.stream(sql, options)) {
              for (let at = 0; at < chunk.length; ) {
                // Pieces of 1 to 150 bytes, rows of about 250: most pieces hold no row end at all.
                const size = 1 + ((at * 7919) % 150);
                if (pieces++ % 20 === 0) inRedis.push(await bookingsInRedis());
                yield chunk.subarray(at, at + size);
                at += size;
              }
            }
          },
        },
      }) as ClickHouseClient;
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse: cutting, table, prefix, fill: false });
      try {
        expect(await reader.warm()).to.equal(rows.length);
        for (const row of rows) expect(await stored(row.vendor, row.booking_id)).to.deep.equal(row);
        expect(inRedis.length).to.be.greaterThan(200);
        expect(inRedis[0]).to.equal(0);
        expect(inRedis.at(-1), 'all but the last pieces put before ClickHouse sent them').to.be.greaterThan(rows.length - 30);
        expect(await reader.get('acme', 'B-1')).to.deep.equal(rows[0]);
        expect(reader.counts.hits).to.equal(1);
      } finally {
        await reader.close();
      }
      // ClickHouse's own blocks, each of more rows than a round trip puts.
      await redis.del(...(await redis.keys(`${prefix}*`)));
      const whole = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, fill: false });
      try {
        expect(await whole.warm()).to.equal(rows.length);
        for (const row of rows) expect(await stored(row.vendor, row.booking_id)).to.deep.equal(row);
      } finally {
        await whole.close();
      }
    });

    it('leaves the cache stale when ClickHouse\'s answer ends inside a row', async () => {
      await seed(Array.from({ length: 50 }, (_, i) => booking(i + 1)));
      const cut = Object.create(clickhouse, {
        stream: {
          value: async function* (sql: string, options: Parameters<ClickHouseClient['stream']>[1]) {
            const chunks: Uint8Array[] = [];
            for await (const chunk of clickhouse.stream(sql, options)) chunks.push(chunk);
            const whole = Buffer.concat(chunks);
            yield whole.subarray(0, whole.length - 1);
          },
        },
      }) as ClickHouseClient;
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse: cut, table, prefix, fill: false });
      try {
        const error = await reader.warm().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).to.be.instanceOf(TributaryError).and.include({ code: 'CACHE_WARM' });
        expect((error as Error).message).to.match(/^ClickHouse's answer ended inside a row \(\d+ bytes after the last newline\)$/);
        expect(await reader.isStale()).to.equal(true);
      } finally {
        await reader.close();
      }
    });

    it('refuses bad options with the rule, before it connects', async () => {
      const good = { redis: { url }, clickhouse, table, prefix };
      const refusal = (options: unknown) => {
        try {
          recentBookings(options as never);
        } catch (error) {
          return error;
        }
        return undefined;
      };
      const cases: [unknown, string][] = [
        [undefined, 'clickhouse is required: embeddedClickHouse() or a server client'],
        [{ ...good, clickhouse: undefined }, 'clickhouse is required: embeddedClickHouse() or a server client'],
        [{ ...good, redis: undefined }, 'redis is required: { url } or { client }'],
        [{ ...good, table: 'b; DROP TABLE x' }, 'table must be a name like bookings or db.bookings, got "b; DROP TABLE x"'],
        [{ ...good, table: '1b' }, 'table must be a name like bookings or db.bookings, got "1b"'],
        [{ ...good, table: 'b x' }, 'table must be a name like bookings or db.bookings, got "b x"'],
        [{ ...good, table: 'db.1b' }, 'table must be a name like bookings or db.bookings, got "db.1b"'],
        [{ ...good, table: 'db.b.c' }, 'table must be a name like bookings or db.bookings, got "db.b.c"'],
        [{ ...good, table: 42 }, 'table must be a name like bookings or db.bookings, got 42'],
        [{ ...good, stale: true }, 'stale must be a function returning a boolean'],
        [{ ...good, registry: {} }, "registry must be a prom-client Registry or 'global', got [object Object]"],
      ];
      for (const [options, message] of cases) {
        const error = refusal(options);
        expect(error, message).to.be.instanceOf(ConfigError);
        expect((error as Error).message).to.equal(message);
      }
      expect(refusal({ ...good, staleCheckMs: -1 })).to.be.instanceOf(ConfigError).with.property('message').that.includes('staleCheckMs');
      // What it takes: a table in a database, the process' global registry.
      const reader = recentBookings({ ...good, table: `default.${table}`, registry: 'global' });
      try {
        expect(reader.registry).to.equal(globalRegistry);
        expect(await reader.get('acme', 'B-1')).to.equal(undefined);
      } finally {
        await reader.close();
        globalRegistry.removeSingleMetric('tributary_cache_hits_total');
        globalRegistry.removeSingleMetric('tributary_cache_misses_total');
        globalRegistry.removeSingleMetric('tributary_cache_stale');
      }
    });

    it('refuses bad keys and ranges with the rule; hostile values are read as values, in Redis and in ClickHouse', async () => {
      const rows = [booking(1), booking(2, { vendor: `ac'me"); DROP TABLE x; --`, booking_id: 'B-\u0000\n"\\✈️', customer_token: "tok' OR 1=1 --" })];
      await seed(rows);
      for (const stale of [false, true]) {
        const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, customerField: 'customer_token', fill: false });
        try {
          if (!stale) expect(await reader.warm()).to.equal(2);
          else await redis.del(layout().fresh);
          const refusal = async (read: () => Promise<unknown>) => rejection(read());
          for (const key of [[], ['acme'], ['acme', 'B-1', 'x'], ['acme', 1], ['acme', null], [{ toString: () => 'acme' }, 'B-1']] as unknown[][]) {
            const error = await refusal(() => reader.get(...(key as string[])));
            expect(error, JSON.stringify(key)).to.be.instanceOf(TributaryError).and.include({ code: 'BAD_KEY' });
          }
          const now = Date.now();
          for (const range of [undefined, {}, { from: now }, { from: 'yesterday', to: now }, { from: now - HOUR, to: NaN }, { from: -Infinity, to: now }, { from: now, to: 1e300 }, { from: -9e15, to: now }, { from: now, to: '2026-13-45T99:00:00Z' }] as unknown[]) {
            for (const read of [() => reader.byVendor('acme', range as never), () => reader.byCustomer('tok-1', range as never)]) {
              const error = await refusal(read);
              expect(error, JSON.stringify(range)).to.be.instanceOf(TributaryError).and.include({ code: 'BAD_RANGE' });
            }
          }
          const keyError = (await refusal(() => reader.get('acme'))) as Error;
          expect(keyError.message).to.equal('get needs 2 key parts (vendor, booking_id), got 1');
          const rangeError = (await refusal(() => reader.byVendor('acme', { from: 'yesterday', to: now }))) as Error;
          expect(rangeError.message).to.equal(`range needs from and to as epoch ms, Dates or ISO 8601, within what a Date holds (±8.64e15 ms), got ${JSON.stringify({ from: 'yesterday', to: now })}`);
          // A range of one instant: the booking of that time, in the bucket that ends after it.
          const at = Date.parse(rows[0]!.booked_at);
          expect((await reader.byVendor('acme', { from: at, to: at })).map((b) => b.booking_id)).to.deep.equal(['B-1']);
          expect((await reader.byCustomer(rows[0]!.customer_token, { from: at, to: at })).map((b) => b.booking_id)).to.deep.equal(['B-1']);
          // The earliest and latest a Date holds are a range like any other.
          expect(await reader.byVendor('acme', { from: -8.64e15, to: 8.64e15 })).to.have.length(1);
          const hostile = rows[1]!;
          expect(await reader.get(hostile.vendor, hostile.booking_id), `stale: ${stale}`).to.deep.equal(hostile);
          const range = { from: now - 3 * HOUR, to: now };
          expect(await reader.byVendor(hostile.vendor, range)).to.deep.equal([hostile]);
          expect(await reader.byCustomer(hostile.customer_token, range)).to.deep.equal([hostile]);
          expect(await reader.byVendor(`ac'me`, range)).to.deep.equal([]);
          expect(await reader.get('acme', `B-1' OR '1'='1`)).to.equal(undefined);
          expect(reader.counts, `stale: ${stale}`).to.deep.equal(stale ? { hits: 0, misses: 8 } : { hits: 6, misses: 2 });
        } finally {
          await reader.close();
        }
      }
      expect(await clickhouse.query(`SELECT count() AS n FROM ${table}`)).to.deep.equal([{ n: 2 }]);
    });

    it('lists a booking by its latest time and customer, not by index entries an earlier version left', async () => {
      const cache = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, customerField: 'customer_token' });
      try {
        await reader.warm();
        const first = booking(1, { customer_token: 'tok-a', booked_at: iso(Date.now() - 2 * HOUR) });
        const moved = booking(1, { customer_token: 'tok-b', booked_at: iso(Date.now() - HOUR), updated_at: iso(Date.now() - 1000) });
        await write(cache, [first]);
        await write(cache, [moved]);
        expect(await reader.byCustomer('tok-a', { from: Date.now() - 3 * HOUR, to: Date.now() }), 'the booking moved to tok-b').to.deep.equal([]);
        expect(await reader.byCustomer('tok-b', { from: Date.now() - 3 * HOUR, to: Date.now() })).to.deep.equal([moved]);
        expect(await reader.byVendor('acme', { from: Date.now() - 3 * HOUR, to: Date.now() - 90 * 60_000 }), 'its time moved out of the range').to.deep.equal([]);
        expect(reader.counts).to.deep.equal({ hits: 3, misses: 0 });
      } finally {
        await cache.close();
        await reader.close();
      }
    });

    it('follows stale() on every read between its looks at Redis, the stale gauge too', async () => {
      await seed([booking(1)]);
      let stale = false;
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, stale: () => stale, staleCheckMs: 600_000 });
      const gauge = async () => (await reader.registry.metrics()).includes(`tributary_cache_stale{cache="${prefix}"} 1`);
      try {
        await reader.warm();
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(await gauge()).to.equal(false);
        stale = true;
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(await gauge()).to.equal(true);
        expect(await reader.isStale(), 'isStale() asks stale() too').to.equal(true);
        stale = false;
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(await gauge()).to.equal(false);
        expect(reader.counts).to.deep.equal({ hits: 2, misses: 1 });
      } finally {
        await reader.close();
      }
    });

    it('with staleCheckMs 0 looks at Redis before every read, and answers each from it while the cache is complete', async () => {
      const rows = [booking(1), booking(3)];
      await seed(rows);
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, customerField: 'customer_token', staleCheckMs: 0, fill: false });
      const withoutCustomers = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, fill: false });
      try {
        expect(await reader.warm()).to.equal(2);
        const range = { from: Date.now() - 3 * HOUR, to: Date.now() };
        expect(await reader.get('acme', 'B-1')).to.deep.equal(rows[0]);
        expect((await reader.byVendor('acme', range)).map((row) => row.booking_id)).to.deep.equal(['B-3', 'B-1']);
        expect((await reader.byCustomer('tok-1', range)).map((row) => row.booking_id)).to.deep.equal(['B-1']);
        expect(reader.counts).to.deep.equal({ hits: 3, misses: 0 });
        const refused = await rejection(withoutCustomers.byCustomer('tok-1', range));
        expect(refused).to.be.instanceOf(ConfigError);
        expect((refused as Error).message).to.equal('byCustomer needs customerField');
      } finally {
        await reader.close();
        await withoutCustomers.close();
      }
    });

    it('reads a booking too far ahead to cache, and ranges touching the span it lies in, through to ClickHouse, ranges beside that span from Redis, and never puts the booking in the cache', async () => {
      const now = Date.now();
      const rows = [booking(1), booking(3, { booked_at: iso(now + 30 * 24 * HOUR) })];
      await seed(rows);
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix });
      try {
        expect(await reader.warm(), 'the booking 30 days ahead is not put').to.equal(1);
        const marks = await redis.zrange(layout().ahead, '0', '-1', 'WITHSCORES');
        expect(marks, 'but where it lies is marked').to.have.length(2);
        const [start, end] = layout().aheadSpan(marks[0]!, Number(marks[1]));
        expect(start <= Date.parse(rows[1]!.booked_at) && Date.parse(rows[1]!.booked_at) < end).to.equal(true);
        expect(await reader.get('acme', 'B-3')).to.include({ booking_id: 'B-3' });
        expect(await reader.get('acme', 'B-3'), 'not filled in: read through again').to.include({ booking_id: 'B-3' });
        expect(await storedValue('acme', 'B-3')).to.equal(null);
        expect((await reader.byVendor('acme', { from: now - 3 * HOUR, to: now })).map((b) => b.booking_id)).to.deep.equal(['B-1']);
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 2 });
        // A range reaching the booking's span: the cache does not hold all of it.
        expect((await reader.byVendor('acme', { from: now - 3 * HOUR, to: now + 60 * 24 * HOUR })).map((b) => b.booking_id)).to.deep.equal(['B-1', 'B-3']);
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 3 });
        // One far ahead that touches no span: nothing was left out there, the cache answers.
        expect(await reader.byVendor('acme', { from: end, to: end + 30 * 24 * HOUR })).to.deep.equal([]);
        expect(await reader.byVendor('acme', { from: now - 3 * HOUR, to: start - 1 })).to.have.length(1);
        expect(reader.counts).to.deep.equal({ hits: 3, misses: 3 });
        expect(await storedValue('acme', 'B-3')).to.equal(null);
        expect(await vendorEntries('acme')).to.deep.equal([entry('acme', 'B-1')]);
      } finally {
        await reader.close();
      }
    });

    it('reads a range through to ClickHouse once a booking too far ahead to cache when written lies in it', async () => {
      const ttlMs = 2000;
      const cache = toRedisCache<Booking>({ url, prefix, ttlMs });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, ttlMs, fill: false });
      try {
        expect(await reader.warm()).to.equal(0);
        const written = Date.now();
        // 3 s ahead of a 2 s TTL (and so of maxAheadMs): not cached. Alone in its batch, so the write stores nothing but its mark.
        // At a bucket's start: the span it is marked in starts there.
        const { bucketMs } = layout(ttlMs);
        const time = (Math.floor((written + 3000) / bucketMs) + 1) * bucketMs;
        const ahead = booking(3, { booked_at: iso(time), updated_at: iso(written) });
        // Written first, at once: the 1 s margin over the TTL is the write's alone, not ClickHouse's.
        await write(cache, [ahead]);
        expect(cache.stats).to.deep.equal({ stored: 0, older: 0, expired: 0, ahead: 1, unkeyed: 0 });
        await seed([ahead]);
        await delay(1500);
        // The booking now lies in a range starting within the TTL: the cache, which left it out, must not answer that range.
        const now = Date.now();
        expect((await reader.byVendor('acme', { from: now - 500, to: time })).map((b) => b.booking_id)).to.deep.equal(['B-3']);
        expect(reader.counts).to.deep.equal({ hits: 0, misses: 1 });
        // A range from the end of its span on: answered from the cache.
        expect(await reader.byVendor('acme', { from: time + bucketMs, to: time + bucketMs + 500 })).to.deep.equal([]);
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 1 });
        expect(await reader.isStale(), 'the cache is still complete elsewhere').to.equal(false);
      } finally {
        await cache.close();
        await reader.close();
      }
    });

    it('fills the cache on a miss when asked', async () => {
      await seed([booking(1)]);
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix });
      try {
        await reader.warm();
        await redis.hdel(layout().shardOf(entry('acme', 'B-1')), entry('acme', 'B-1'));
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(reader.counts).to.deep.equal({ hits: 1, misses: 1 });
      } finally {
        await reader.close();
      }
    });

    it("answers bookings stored as arrays of ClickHouse's columns as ClickHouse has them; a column list missing, hostile or not matching reads through", async () => {
      const cache = toRedisCache<Booking>({ url, prefix, customerField: 'customer_token' });
      const sinks = fanOut<Booking>([{ sink: toClickHouse({ client: clickhouse, table }), required: true }, { sink: cache, required: true }]);
      const rows = Array.from({ length: 30 }, (_, i) => booking(i + 1));
      const readerOf = () => recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, customerField: 'customer_token', fill: false });
      const reader = readerOf();
      const columns = ['vendor', 'booking_id', 'updated_at', 'booked_at', 'customer_token', 'status', 'card'];
      const tag = columnsTag(columns);
      try {
        await reader.warm();
        expect((await new Pipeline({ source: fromIterable(rows), sink: sinks, deadLetters: new MemorySink<DeadLetter>() }).run()).written).to.equal(rows.length);
        const row = rows[0]!;
        expect(await storedValue('acme', 'B-1'), 'the array ClickHouse got, after its tag').to.equal(`${Date.parse(row.updated_at)}|${Date.parse(row.booked_at)}|${tag}${JSON.stringify(columns.map((c) => row[c as keyof Booking]))}`);
        expect(await redis.hgetall(layout().columns)).to.deep.equal({ [tag]: JSON.stringify(columns) });
        for (const row of rows) expect(await reader.get(row.vendor, row.booking_id)).to.deep.equal(row);
        const range = { from: Date.now() - 3 * HOUR, to: Date.now() };
        const byTime = (list: Booking[]) => [...list].sort((a, b) => Date.parse(a.booked_at) - Date.parse(b.booked_at));
        expect(await reader.byVendor('acme', range)).to.deep.equal(byTime(rows.filter((r) => r.vendor === 'acme')));
        expect(await reader.byCustomer('tok-1', range)).to.deep.equal(byTime(rows.filter((r) => r.customer_token === 'tok-1')));
        expect(reader.counts).to.deep.equal({ hits: rows.length + 2, misses: 0 });

        // What Redis holds under the tag is read as data, never trusted: each case from a reader that has not learnt it.
        const planted = async (list: string | undefined) => {
          if (list === undefined) await redis.hdel(layout().columns, tag);
          else await redis.hset(layout().columns, tag, list);
          const fresh = readerOf();
          try {
            const got = await fresh.get('acme', 'B-1');
            return { got, counts: { ...fresh.counts } };
          } finally {
            await fresh.close();
          }
        };
        const hostile = await planted(JSON.stringify(['__proto__', 'booking_id', 'updated_at', 'booked_at', 'customer_token', 'status', 'polluted']));
        expect(hostile.counts, 'answered as it says').to.deep.equal({ hits: 1, misses: 0 });
        expect(Object.getPrototypeOf(hostile.got)).to.equal(Object.prototype);
        expect(Object.getOwnPropertyDescriptor(hostile.got, '__proto__')).to.deep.equal({ value: 'acme', enumerable: true, writable: true, configurable: true });
        expect(({} as Record<string, unknown>)['polluted'], 'no prototype touched').to.equal(undefined);
        for (const list of [undefined, '{"vendor":0}', JSON.stringify([...columns.slice(0, 6), 7]), JSON.stringify(columns.slice(1)), 'not json']) {
          const { got, counts } = await planted(list);
          expect(counts, String(list)).to.deep.equal({ hits: 0, misses: 1 });
          expect(got?.booking_id, 'read through to ClickHouse').to.equal('B-1');
        }
      } finally {
        await cache.close();
        await reader.close();
      }
    });

    it('keeps the column list of batches joined while a write is slow', async () => {
      const cache = toRedisCache<Booking>({ url, prefix });
      // A third sink slow enough that batches wait, and are joined, behind it.
      const slow: Sink<Booking> = { name: 'slow', write: () => delay(30) };
      const sinks = fanOut<Booking>([{ sink: toClickHouse({ client: clickhouse, table }), required: true }, { sink: cache, required: true }, { sink: slow, required: true }]);
      const rows = Array.from({ length: 200 }, (_, i) => booking(i + 1));
      const written: number[] = [];
      const counted: Sink<Booking> = {
        ...sinks,
        name: 'counted',
        write: async (batch, context) => {
          written.push(batch.envelopes.length);
          await sinks.write(batch, context);
        },
      };
      for (const key of ['encoding', 'encodedColumns', 'keepsValues'] as const) Object.defineProperty(counted, key, { get: () => sinks[key] });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, fill: false });
      try {
        await reader.warm();
        // Records a few ms apart, batches cut after 1 ms: each partial, joined while the writes before it are under way.
        const stats = await new Pipeline({ source: fromIterable(observed(rows, 2).iterate()), sink: counted, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 50, maxWaitMs: 1 } }).run();
        expect(stats.written).to.equal(rows.length);
        expect(Math.max(...written), 'batches were joined').to.be.above(3);
        for (const row of rows) expect(await reader.get(row.vendor, row.booking_id)).to.deep.equal(row);
        expect(reader.counts, 'every one from Redis').to.deep.equal({ hits: rows.length, misses: 0 });
      } finally {
        await cache.close();
        await reader.close();
      }
    });

    it('is stale again once the cache sink missed a batch, until the next warm()', async () => {
      const user = `cache-${randomUUID().slice(0, 8)}`;
      // The categories the README names for a cache user: nothing beyond them.
      await acl('SETUSER', user, 'on', '>s3cret', `~${prefix}*`, '+@read', '+@write', '+@transaction', '+@scripting');
      const cache = toRedisCache<Booking>({ url, prefix, redis: { username: user, password: 's3cret' } });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix });
      try {
        await reader.warm();
        expect(await reader.isStale()).to.equal(false);
        await acl('SETUSER', user, '-@all'); // every write now fails
        expect(await write(cache, [booking(1)]).then(() => 'written', () => 'failed')).to.equal('failed');
        await acl('SETUSER', user, '+@all');
        // The next write marks the loss, even one with nothing to store (its booking past the TTL).
        await write(cache, [booking(9, { booked_at: iso(Date.now() - 48 * HOUR) })]);
        expect(await reader.isStale(), 'booking 1 is missing').to.equal(true);
        await write(cache, [booking(2)]);
        await seed([booking(1), booking(2)]);
        await reader.warm();
        expect(await reader.isStale()).to.equal(false);
        // The loss was marked once: the writes after the warm-up leave the cache complete.
        await write(cache, [booking(3)]);
        expect(await reader.isStale()).to.equal(false);
        expect(await reader.get('acme', 'B-1')).to.include({ booking_id: 'B-1' });
        expect(reader.counts.hits).to.equal(1);
        expect(await reader.registry.metrics()).to.include(`tributary_cache_stale{cache="${prefix}"} 0`);
      } finally {
        await cache.close();
        await reader.close();
        await acl('DELUSER', user);
      }
    });
  });

  describe('faults: Redis stopped and restarted mid-stream', () => {
    const rows = Array.from({ length: 120 }, (_, i) => booking(i + 1));
    async function* slowly(): AsyncGenerator<Booking> {
      for (const row of rows) {
        yield row;
        await delay(10);
      }
    }
    const countIn = async () => Number((await clickhouse.query<{ n: string }>(`SELECT count() AS n FROM ${table} FINAL`))[0]!.n);

    afterEach(async () => {
      await startRedis();
      await redis.flushall();
    });

    it('with the cache required: the pipeline pauses while Redis is down, nothing is lost', async () => {
      const cache = toRedisCache<Booking>({ url, prefix });
      const sinks = fanOut<Booking>([{ sink: toClickHouse({ client: clickhouse, table }), required: true }, { sink: cache, required: true }]);
      const pipeline = new Pipeline({ source: fromIterable(slowly()), sink: sinks, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 20 }, retry: { maxDelayMs: 200 }, breaker: { resetTimeoutMs: 300 } });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix });
      try {
        await pipeline.start();
        await until(() => pipeline.stats.written >= 30, 20_000, '30 records written');
        await stopRedis();
        await delay(1500);
        const during = pipeline.stats.written;
        await delay(1500);
        expect(pipeline.stats.written, 'nothing acked while the cache is down').to.equal(during);
        expect(during).to.be.below(rows.length);
        await startRedis();
        const stats = await pipeline.finished();
        expect(stats).to.include({ written: rows.length, nacked: 0 });
        expect(await countIn()).to.equal(rows.length);
        // This Redis has no persistence: what it held before the stop is gone, and it says so.
        expect(await reader.isStale()).to.equal(true);
        expect(await storedValue('acme', 'B-119'), 'written after the restart').to.not.equal(null);
        await reader.warm();
        for (const row of rows) expect(await reader.get(row.vendor, row.booking_id)).to.deep.equal(row);
        expect(reader.counts).to.deep.equal({ hits: rows.length, misses: 0 });
      } finally {
        await pipeline.stop().catch(() => undefined);
        await reader.close();
      }
    });

    it('with the cache best-effort: ClickHouse gets everything, the cache is marked stale, warm() completes it', async () => {
      const cache = toRedisCache<Booking>({ url, prefix, redis: { maxRetriesPerRequest: 1 } });
      const sinks = fanOut<Booking>([
        { sink: toClickHouse({ client: clickhouse, table }), required: true },
        { sink: cache, bestEffort: true, retry: { retries: 1, initialDelayMs: 10, maxDelayMs: 50 } },
      ]);
      const source = observed(rows);
      const pipeline = new Pipeline({ source: fromIterable(source.iterate()), sink: sinks, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 20 } });
      const reader = recentBookings<Booking>({ redis: { url }, clickhouse, table, prefix, stale: () => sinks.stale });
      try {
        await reader.warm();
        await pipeline.start();
        await until(() => pipeline.stats.written >= 30, 20_000, '30 records written');
        await stopRedis();
        await until(() => pipeline.stats.written >= 90, 20_000, '90 records written while Redis is down');
        await startRedis();
        const stats = await pipeline.finished();
        expect(stats).to.include({ written: rows.length, nacked: 0 });
        expect(await countIn()).to.equal(rows.length);
        expect(sinks.stale).to.equal(true);
        const missed = sinks.stats()[1]!;
        expect(missed.failed + missed.skipped, 'batches the cache missed').to.be.above(0);
        expect(await reader.isStale()).to.equal(true);
        expect((await reader.get('acme', 'B-1'))?.booking_id, 'read through to ClickHouse').to.equal('B-1');
        expect(reader.counts.misses).to.equal(1);
        await reader.warm();
        sinks.markFresh();
        expect(await reader.isStale()).to.equal(false);
        for (const row of rows) expect(await reader.get(row.vendor, row.booking_id)).to.deep.equal(row);
        expect(reader.counts.hits).to.equal(rows.length);
        expect(await reader.registry.metrics()).to.include(`tributary_cache_stale{cache="${prefix}"} 0`);
      } finally {
        await pipeline.stop().catch(() => undefined);
        await reader.close();
      }
    });
  });
});

/** Yields rows with a pause, so faults land mid-stream. */
function observed<T>(rows: T[], pauseMs = 10): { iterate(): AsyncGenerator<T> } {
  return {
    async *iterate() {
      for (const row of rows) {
        yield row;
        await delay(pauseMs);
      }
    },
  };
}

