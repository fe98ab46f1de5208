/**
 * The cluster form of the migrations on a real cluster: two replicas of ClickHouse 18.16
 * and ZooKeeper on loopback (scripts/deploy/clickhouse-cluster.sh). Not part of `npm test`
 * (it installs ZooKeeper and runs two more servers); `npm run check:deploy` runs it:
 *
 *   npx mocha --no-config --timeout 300000 --exit dist/test/integration/deploy/clickhouse-cluster.js
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { migrate, serverClickHouse } from '../../../connectors/clickhouse';

const run = promisify(execFile);
const root = join(__dirname, '..', '..', '..', '..');
const script = join(root, 'scripts', 'deploy', 'clickhouse-cluster.sh');
const port = Number(process.env.CLUSTER_HTTP_PORT ?? 48123);
const migrations = join(root, 'test', 'fixtures', 'clickhouse-18.16-bookings');

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('migrate({ cluster }) on two ClickHouse 18.16 replicas with ZooKeeper', function () {
  this.timeout(300_000);
  const [first, second] = [port, port + 1].map((p) => serverClickHouse({ url: `http://127.0.0.1:${p}` }));

  before(async () => {
    for (const command of ['install', 'start']) {
      await run('bash', [script, command]).catch((error: { stdout?: string; stderr?: string }) => {
        throw new Error(`scripts/deploy/clickhouse-cluster.sh ${command} failed:\n${error.stdout ?? ''}${error.stderr ?? ''}`);
      });
    }
  });

  after(async () => {
    await Promise.all([first!.close(), second!.close()]);
    await run('bash', [script, 'stop']);
  });

  it('creates the tables on both replicas, shares the ledger, replicates rows and stores a retried insert once', async () => {
    expect(await migrate(first!, migrations, { cluster: 'tributary' })).to.deep.equal([1, 2]);
    for (const replica of [first!, second!]) {
      const tables = await replica.query<{ name: string; engine: string }>("SELECT name, engine FROM system.tables WHERE database = 'default' ORDER BY name");
      expect(tables.map((t) => `${t.name} ${t.engine}`)).to.deep.equal([
        'bookings Distributed',
        'bookings_local ReplicatedReplacingMergeTree',
        'dead_letters Distributed',
        'dead_letters_local ReplicatedReplacingMergeTree',
        'tributary_migrations ReplicatedMergeTree',
      ]);
    }
    // The ledger is replicated: the other server knows both versions and applies nothing.
    await until('the ledger on the second replica', async () => ((await second!.query('SELECT version FROM tributary_migrations')).length === 2 ? true : undefined));
    expect(await migrate(second!, migrations, { cluster: 'tributary' })).to.deep.equal([]);

    // A batch written through the Distributed table, then the same batch again (a retry
    // after a timeout): stored once, and on both replicas.
    const rows = Buffer.from(
      [1, 2, 3]
        .map((i) => JSON.stringify({ vendor: 'v', booking_id: `b${i}`, updated_at: '2026-03-01 10:00:00', status: 'confirmed', product: 'rail', booked_at: '2026-03-01 09:00:00', travel_date: '2026-04-01', origin: 'A', destination: 'B', passengers: 1, total_amount: '10.5', currency: 'EUR' }))
        .join('\n') + '\n',
    );
    for (let attempt = 0; attempt < 2; attempt++) await first!.insert('bookings', rows, { insert_distributed_sync: 1 });
    for (const replica of [first!, second!]) {
      const count = await until('the rows on both replicas', async () => {
        const [row] = await replica.query<{ n: string }>('SELECT count() AS n FROM bookings_local');
        return Number(row!.n) >= 3 ? Number(row!.n) : undefined;
      });
      expect(count, 'rows in the replicated table, before any merge').to.equal(3);
    }
    const [total] = await second!.query<{ n: string }>('SELECT count() AS n FROM bookings FINAL');
    expect(Number(total!.n)).to.equal(3);
  });
});
