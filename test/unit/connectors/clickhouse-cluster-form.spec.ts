import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterForm, clusterOptions, replicatedTables } from '../../../connectors/clickhouse/clusterForm';
import { ConfigError } from '../../../lib/errors';
import { migrationsDir } from '../../../examples/bookings/paths';

const cluster = clusterOptions('tributary');
const statements = (dir: string) =>
  readdirSync(dir)
    .sort()
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split(/;\s*$/m))
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');

describe('clusterForm: single-server migrations for a ClickHouse cluster', () => {
  const booking = statements(migrationsDir);
  const replicated = replicatedTables(booking);

  it('makes each MergeTree table a replicated local table behind a Distributed table sharded by its sorting key', () => {
    const [local, distributed] = clusterForm(booking[0]!, replicated, cluster);
    expect(local).to.match(/^CREATE TABLE IF NOT EXISTS bookings_local ON CLUSTER tributary \(/);
    expect(local).to.contain("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bookings_local', '{replica}', updated_at)");
    expect(local).to.contain('ORDER BY (vendor, booking_id)');
    expect(distributed).to.equal(
      'CREATE TABLE IF NOT EXISTS bookings ON CLUSTER tributary AS bookings_local ENGINE = Distributed(tributary, currentDatabase(), bookings_local, cityHash64(vendor, booking_id))',
    );
    expect([...replicated].sort()).to.deep.equal(['audit_log', 'bookings', 'dead_letters', 'subject_keys', 'vendor_quality_hourly']);
  });

  it('runs views on every server; materialized views read and write the local tables', () => {
    const views = booking.filter((s) => /^CREATE (MATERIALIZED )?VIEW/.test(s)).map((s) => clusterForm(s, replicated, cluster)[0]!);
    expect(views.find((v) => v.includes('bookings_per_vendor_day'))).to.match(/ON CLUSTER tributary AS[\s\S]*FROM bookings FINAL/);
    const accepted = views.find((v) => v.includes('vendor_quality_accepted_mv'))!;
    expect(accepted).to.match(/^CREATE MATERIALIZED VIEW IF NOT EXISTS vendor_quality_accepted_mv ON CLUSTER tributary TO vendor_quality_hourly_local AS/);
    expect(accepted).to.match(/FROM bookings_local\b/);
  });

  it('refuses what it cannot translate faithfully, naming it', () => {
    const alter = booking.find((s) => s.startsWith('ALTER TABLE bookings'))!;
    expect(() => clusterForm(alter, replicated, cluster)).to.throw(ConfigError, /ALTER of the replicated table bookings/);
    expect(() => clusterForm('INSERT INTO bookings VALUES (1)', replicated, cluster)).to.throw(ConfigError, /translates CREATE TABLE/);
    expect(() => clusterForm("CREATE TABLE t (x UInt8) ENGINE = ReplicatedMergeTree('/a', 'b') ORDER BY x", replicated, cluster)).to.throw(ConfigError, /already uses ReplicatedMergeTree/);
    expect(clusterForm('ALTER TABLE other ADD COLUMN x UInt8', replicated, cluster)).to.deep.equal(['ALTER TABLE other ON CLUSTER tributary ADD COLUMN x UInt8']);
    expect(clusterForm('CREATE TABLE m (x UInt8) ENGINE = Memory', replicated, cluster)).to.deep.equal(['CREATE TABLE m ON CLUSTER tributary (x UInt8) ENGINE = Memory']);
  });

  it('validates its options with the rule in the message', () => {
    expect(() => clusterOptions('a b')).to.throw(ConfigError, 'cluster name must be an identifier, got "a b"');
    expect(() => clusterOptions({ name: 'c', zooKeeperPath: "x'; DROP" })).to.throw(ConfigError, /zooKeeperPath must be an absolute path/);
    expect(() => clusterOptions({ name: 'c', localSuffix: '-l' })).to.throw(ConfigError, 'localSuffix must be letters, digits and _, got "-l"');
  });
});
