import { expect } from 'chai';
import { Envelope, migrate, type Settlement } from '../../../index';
import { migrationsDir } from '../../../examples/bookings/paths';
import { oncePerOrigin, topologyMigrationsDir, type Origin } from '../../../examples/kafka-topology/oncePerOrigin';
import { testClickHouse } from '../../helpers';

/** Everything the booking and topology migrations make, dropped before and after (the embedded store is shared by the process). */
const OBJECTS = [
  'vendor_quality_origins_accepted_mv',
  'vendor_quality_origins_dead_lettered_mv',
  'vendor_quality_exact',
  'vendor_quality_origins',
  'vendor_quality_accepted_mv',
  'vendor_quality_dead_lettered_mv',
  'bookings_per_vendor_day',
  'cancellation_rate_per_vendor',
  'vendor_quality_hourly',
  'bookings',
  'dead_letters',
  'subject_keys',
  'audit_log',
  'tributary_migrations',
  'tributary_topology_migrations',
];

const unused: Settlement = { deadLetters: { route: () => undefined }, ack: () => undefined, nack: () => undefined, reject: () => undefined };

/** A booking row as the store stage writes it, with its record's identity. */
const booking = (i: number) => ({
  vendor: 'staylodge',
  booking_id: `B${i}`,
  updated_at: '2026-01-01T00:00:00.000Z',
  status: 'confirmed',
  product: 'hotel',
  booked_at: '2026-01-01T00:00:00.000Z',
  travel_date: '2026-02-01',
  origin: 'LIS',
  destination: 'OPO',
  passengers: 1,
  total_amount: '100.0000',
  currency: 'EUR',
  origin_position: `in/staylodge/many.ndjson@${i * 100}#00000000000000${String(i).padStart(2, '0')}`,
  origin_time: '2026-01-01T10:00:00.000Z',
});

/** A batch as the store reads it from the clean topic: one envelope per message, at `offsets`. */
const batchOf = (offsets: number[], rows: number[]) => {
  const envelopes = rows.map((i, n) => new Envelope<ReturnType<typeof booking> & Origin>(booking(i), { source: 'kafka', position: `t.clean/0/${offsets[n]}`, receivedAt: 0, attempt: 1 }, undefined, 100, unused));
  return { envelopes, bytes: 100 * envelopes.length };
};

describe('examples/kafka-topology: storage after a kill between a table and its views', function () {
  this.timeout(60_000);
  const clickhouse = testClickHouse();
  const drop = async () => {
    for (const name of OBJECTS) await clickhouse.exec(`DROP TABLE IF EXISTS ${name}`);
  };
  before(drop);
  after(drop);

  it('a batch read again after its insert reached bookings and not the materialized views is written again with its token: the views get its rows, bookings no second copy; a copy from another batch, or the same records read long after, add nothing', async () => {
    await migrate(clickhouse, migrationsDir);
    await migrate(clickhouse, topologyMigrationsDir, { table: 'tributary_topology_migrations' });
    let replayed = false;
    const sink = oncePerOrigin<ReturnType<typeof booking> & Origin>(clickhouse, 'bookings', ['vendor', 'booking_id'], { input_format_skip_unknown_fields: 1 }, () => replayed);
    await sink.open!();
    const counts = async () => {
      const [row] = await clickhouse.query<{ bookings: string; perInsert: string; byOrigin: string }>(`
        SELECT (SELECT count() FROM bookings) AS bookings,
               (SELECT sum(accepted) FROM vendor_quality_hourly) AS perInsert,
               (SELECT sum(accepted) FROM vendor_quality_exact) AS byOrigin`);
      return { bookings: Number(row!.bookings), perInsert: Number(row!.perInsert), byOrigin: Number(row!.byOrigin) };
    };

    // What a kill -9 after the bookings part landed and before the views' parts leaves:
    // the rows in bookings, none in the views (here the views were detached for the insert).
    const views = ['vendor_quality_accepted_mv', 'vendor_quality_origins_accepted_mv'];
    for (const view of views) await clickhouse.exec(`DETACH TABLE ${view}`);
    await sink.write(batchOf([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), { token: 'batch-0-4', attempt: 1 });
    for (const view of views) await clickhouse.exec(`ATTACH TABLE ${view}`);
    expect(await counts()).to.deep.equal({ bookings: 5, perInsert: 0, byOrigin: 0 });

    // The restarted stage reads the batch again, cut where the killed one cut it: same records, same token.
    replayed = true;
    await sink.write(batchOf([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), { token: 'batch-0-4', attempt: 1 });
    expect(await counts(), 'the replayed batch completes the views').to.deep.equal({ bookings: 5, perInsert: 5, byOrigin: 5 });
    // Killed again after that: the third reading adds nothing anywhere.
    await sink.write(batchOf([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), { token: 'batch-0-4', attempt: 1 });
    expect(await counts(), 'a third reading').to.deep.equal({ bookings: 5, perInsert: 5, byOrigin: 5 });

    // From here bookings remembers only its latest insert's token (its deduplication window
    // is 10,000 inserts: as if many had passed since the first batch).
    await clickhouse.exec('ALTER TABLE bookings MODIFY SETTING non_replicated_deduplication_window = 1');
    // Copies made by normalization after a crash: other offsets, another batch; one new record.
    await sink.write(batchOf([10, 11, 12], [3, 4, 5]), { token: 'batch-10-12', attempt: 1 });
    expect(await counts(), 'copies in another batch').to.deep.equal({ bookings: 6, perInsert: 6, byOrigin: 6 });

    // The same records read long after (offsets reset), not a replay of a cut: nothing is
    // written again (bookings forgot that token, so an insert would be a second copy).
    replayed = false;
    await sink.write(batchOf([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), { token: 'batch-0-4', attempt: 1 });
    expect(await counts(), 'read again long after').to.deep.equal({ bookings: 6, perInsert: 6, byOrigin: 6 });
    // A write retried within the process (the first attempt may have landed) is written again with its token.
    await sink.write(batchOf([10, 11, 12], [3, 4, 5]), { token: 'batch-10-12', attempt: 2 });
    expect(await counts(), 'a retried write').to.deep.equal({ bookings: 6, perInsert: 6, byOrigin: 6 });

    // Killed after bookings noted a batch's token and before its part was committed: the
    // token is known, the rows are not there (here: deleted after the insert). Read again,
    // the batch goes under a token of its own and lands.
    await sink.write(batchOf([20, 21], [20, 21]), { token: 'batch-20-21', attempt: 1 });
    await clickhouse.exec("ALTER TABLE bookings DELETE WHERE booking_id IN ('B20', 'B21') SETTINGS mutations_sync = 1");
    replayed = true;
    await sink.write(batchOf([20, 21], [20, 21]), { token: 'batch-20-21', attempt: 1 });
    const [again] = await clickhouse.query<{ n: string }>("SELECT count() AS n FROM bookings WHERE booking_id IN ('B20', 'B21')");
    expect(Number(again!.n), 'a batch whose token bookings noted without its rows').to.equal(2);
  });
});
