import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { samplesDir } from '../../../examples/bookings/paths';
import { bookingSource, bookingTransform, SAMPLE_VENDORS } from '../../../examples/bookings/pipeline';
import type { Booking } from '../../../examples/bookings/schema';
import { MemorySink, tempDir } from '../../helpers';
import { testKafka } from '../../kafka';
import { ensureKafka } from '../../services';

const run = promisify(execFile);
const example = join(__dirname, '..', '..', '..', 'examples', 'kafka-topology');

describe('examples/kafka-topology: ingestion, normalization and storage as separate processes', function () {
  this.timeout(240_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('raw → clean → ClickHouse, with two normalization instances in one group, stores every sample vendor as the in-process booking pipeline does', async () => {
    const prefix = `topology-${randomUUID().slice(0, 8)}`;
    const work = tempDir();
    try {
      const args = ['--brokers', brokers.join(','), '--prefix', prefix];
      const env = { ...process.env, TOPOLOGY_CLICKHOUSE_PATH: join(work.path, 'chdb') };
      const ingest = await run(process.execPath, [join(example, 'ingest.js'), ...args], { env });
      // Two normalization instances at once, sharing the raw topic's partitions in one group.
      const normalizeRuns = await Promise.all([1, 2].map(() => run(process.execPath, [join(example, 'normalize.js'), ...args, '--until-idle'], { env })));
      const store = await run(process.execPath, [join(example, 'store.js'), ...args, '--until-idle'], { env });
      const line = (output: string, prefix: string) => JSON.parse(output.split('\n').find((l) => l.startsWith(prefix))!.slice(prefix.length)) as Record<string, number>;
      const ingested = line(ingest.stdout, 'ingest: ');
      const [first, second] = normalizeRuns.map((r) => line(r.stdout, 'normalize: '));
      const normalized = { read: first!.read! + second!.read!, written: first!.written! + second!.written!, deadLettered: first!.deadLettered! + second!.deadLettered!, nacked: first!.nacked! + second!.nacked! };
      const stored = line(store.stdout, 'stored: ');

      // The same records through one in-process pipeline, for the expected outcome.
      const sink = new MemorySink<Booking>();
      const deadLetters = new MemorySink<DeadLetter>();
      const reference = await new Pipeline<Booking>({
        source: bookingSource({ paths: SAMPLE_VENDORS.map((v) => join(samplesDir, v)) }),
        transform: bookingTransform(),
        sink,
        deadLetters,
      }).run();
      const distinctBookings = new Set(sink.rows.map((b) => `${b.vendor}:${b.booking_id}`)).size;

      expect(ingested.read).to.equal(reference.read);
      expect(ingested.written + ingested.deadLettered).to.equal(reference.read);
      // At least once: a record read by one instance before a rebalance may be read again by
      // the other; storage holds each once all the same. A batch whose partition moved before
      // its cut was committed is nacked, not written (the new owner writes it): every read
      // beyond the first is written again, dead-lettered again or nacked.
      expect(normalized.read).to.be.at.least(ingested.written);
      expect(normalized.written).to.be.at.least(reference.written);
      expect(normalized.deadLettered + ingested.deadLettered).to.be.at.least(reference.deadLettered);
      expect(normalized.read - ingested.written).to.equal(normalized.written + normalized.deadLettered + normalized.nacked + ingested.deadLettered - reference.written - reference.deadLettered);
      expect(stored).to.deep.equal({ bookings: distinctBookings, dead_letters: reference.deadLettered });
      // All seven sample vendors (CSV with ';' and Windows-1252, XML, JSON, NDJSON), as the demo stores them.
      expect(stored).to.deep.equal({ bookings: 54, dead_letters: 14 });
      expect(new Set(sink.rows.map((b) => b.vendor))).to.deep.equal(new Set(SAMPLE_VENDORS));
    } finally {
      work.remove();
      const admin = testKafka(brokers).admin();
      await admin.connect();
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
