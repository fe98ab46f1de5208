import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrate, serverClickHouse } from '../../../connectors/clickhouse';
import { TributaryError } from '../../../lib/errors';
import { clickhouseServer } from '../../clickhouseServer';
import { tempDir } from '../../helpers';

describe('migrations on the ClickHouse server', function () {
  this.timeout(120_000);
  let admin: ReturnType<typeof serverClickHouse>;
  let client: ReturnType<typeof serverClickHouse>;
  let database: string;
  let dir: ReturnType<typeof tempDir>;

  before(async () => {
    clickhouseServer.ensure();
    admin = serverClickHouse({ url: clickhouseServer.url, requestTimeoutMs: 10_000 });
  });

  beforeEach(async () => {
    database = `migrate_${randomUUID().replace(/-/g, '')}`;
    await admin.exec(`CREATE DATABASE ${database}`);
    client = serverClickHouse({ url: clickhouseServer.url, database, requestTimeoutMs: 10_000 });
    dir = tempDir();
  });

  afterEach(async () => {
    dir.remove();
    await client.close();
    await admin.exec(`DROP DATABASE IF EXISTS ${database}`);
  });

  after(async () => {
    await admin?.close();
  });

  const file = (name: string, sql: string) => writeFileSync(join(dir.path, name), sql);
  const ledger = async () => (await client.query<{ version: number; name: string }>('SELECT version, name FROM tributary_migrations ORDER BY version')).map((r) => [Number(r.version), r.name]);
  const tables = async () => (await client.query<{ name: string }>('SHOW TABLES')).map((r) => r.name).sort();

  it('applies each file once, in version order, records it, and applies only new files on the next run', async () => {
    file('001_events.sql', 'CREATE TABLE IF NOT EXISTS events (id UInt32, at DateTime) ENGINE = ReplacingMergeTree ORDER BY id;\n');
    // Two statements in one file, the second one depending on the first.
    file('002_counts.sql', '-- events per day\nCREATE TABLE IF NOT EXISTS daily (day Date, n UInt64) ENGINE = SummingMergeTree ORDER BY day;\n\nCREATE MATERIALIZED VIEW IF NOT EXISTS daily_mv TO daily AS\nSELECT toDate(at) AS day, count() AS n FROM events GROUP BY day;\n');
    expect(await migrate(client, dir.path)).to.deep.equal([1, 2]);
    expect(await ledger()).to.deep.equal([
      [1, 'events'],
      [2, 'counts'],
    ]);
    expect(await tables()).to.deep.equal(['daily', 'daily_mv', 'events', 'tributary_migrations']);

    // The schema works: an insert into events reaches daily through the view.
    await client.insert('events', Buffer.from('{"id":1,"at":"2026-03-01 10:00:00"}\n{"id":2,"at":"2026-03-01 11:00:00"}\n'), {});
    expect(await client.query<{ n: string }>('SELECT sum(n) AS n FROM daily')).to.deep.equal([{ n: '2' }]);

    expect(await migrate(client, dir.path)).to.deep.equal([]);
    file('003_more.sql', 'ALTER TABLE events ADD COLUMN vendor String DEFAULT \'\';\n');
    expect(await migrate(client, dir.path)).to.deep.equal([3]);
    expect(await migrate(client, dir.path)).to.deep.equal([]);
    expect((await ledger()).map(([version]) => version)).to.deep.equal([1, 2, 3]);
  });

  it('stops at a failing migration without recording it, and applies it once it is fixed', async () => {
    file('001_events.sql', 'CREATE TABLE events (id UInt32) ENGINE = MergeTree ORDER BY id;\n');
    file('002_broken.sql', 'ALTER TABLE events ADD COLUMN at NoSuchType;\n');
    file('003_after.sql', 'CREATE TABLE later (id UInt32) ENGINE = MergeTree ORDER BY id;\n');
    const error = await migrate(client, dir.path).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TributaryError);
    expect(error).to.include({ code: 'MIGRATION' });
    expect((error as Error).message).to.match(/^migration 2_broken failed: .*NoSuchType/);
    expect(await ledger()).to.deep.equal([[1, 'events']]);
    expect(await tables()).to.not.include('later');

    file('002_broken.sql', 'ALTER TABLE events ADD COLUMN at DateTime;\n');
    expect(await migrate(client, dir.path)).to.deep.equal([2, 3]);
    expect(await tables()).to.include('later');
  });

  it('the booking schema needs ClickHouse 22.2 or later: on an older server migrate says which migration failed and why', async () => {
    const [major = 0, minor = 0] = (await admin.version()).split('.').map(Number);
    const bookings = join(__dirname, '..', '..', '..', '..', 'examples', 'bookings', 'migrations');
    if (major > 22 || (major === 22 && minor >= 2)) {
      expect(await migrate(client, bookings)).to.have.length.greaterThan(0);
      return;
    }
    const error = await migrate(client, bookings).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(TributaryError);
    expect(error).to.include({ code: 'MIGRATION' });
    if (major < 20) {
      // 18.x/19.x: the first migration already fails on DateTime64, and nothing is recorded.
      expect((error as Error).message).to.match(/^migration 1_bookings failed: .*DateTime64/);
      expect(await ledger()).to.deep.equal([]);
    }
  });
});
