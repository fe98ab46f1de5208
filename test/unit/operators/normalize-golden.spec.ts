import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { samplesDir } from '../../../examples/bookings/paths';
import { bookingSource, bookingTransform, SAMPLE_VENDORS } from '../../../examples/bookings/pipeline';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';

/** What one vendor's sample files come to: the bookings, and each refused record with where and why. */
interface Golden {
  bookings: Record<string, unknown>[];
  dead_letters: { at: string; stage: string; code: string; path: string; message: string }[];
}

/** The sample files of `vendor`, read, normalized and validated exactly as the demo does it. */
async function ingest(vendor: string) {
  const sink = new MemorySink<Record<string, unknown>>();
  const deadLetters = new MemorySink<DeadLetter>();
  const pipeline = new Pipeline({
    source: bookingSource({ paths: [join(samplesDir, vendor)] }),
    transform: bookingTransform(),
    sink,
    deadLetters,
    batch: { rows: 1000, maxWaitMs: 20 },
    deadLetterBatch: { maxWaitMs: 1 },
    sinkConcurrency: 1,
  });
  const stats = await pipeline.run();
  const letters = deadLetters.rows.map((l) => ({
    // The file and byte offset, without the directory the checkout lives in.
    at: basename(l.position),
    stage: l.stage,
    code: l.code,
    path: l.path,
    message: l.message,
  }));
  return { stats, bookings: sink.rows, letters, vendors: new Set([...sink.rows.map((r) => r.vendor), ...deadLetters.rows.map((l) => l.vendor)]) };
}

describe('normalize: golden files (examples/bookings/data/<vendor>/* → test/fixtures/golden/<vendor>.expected.json)', () => {
  const root = join(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'golden');
  for (const vendor of SAMPLE_VENDORS) {
    it(vendor, async () => {
      const expected = JSON.parse(readFileSync(join(root, `${vendor}.expected.json`), 'utf8')) as Golden;
      const { stats, bookings, letters, vendors } = await ingest(vendor);
      expect(letters).to.deep.equal(expected.dead_letters);
      expect(bookings).to.deep.equal(expected.bookings);
      // Every record read is accounted for, and every one was taken for this vendor's.
      expect(stats.read).to.equal(expected.bookings.length + expected.dead_letters.length);
      expect([...vendors]).to.deep.equal([vendor]);
    });
  }

  it('every golden file has a vendor with sample files, and each sample shows a refused record', () => {
    const goldens = readdirSync(root).map((f) => f.replace(/\.expected\.json$/, '')).sort();
    expect(goldens).to.deep.equal([...SAMPLE_VENDORS].sort());
    for (const vendor of SAMPLE_VENDORS) {
      const golden = JSON.parse(readFileSync(join(root, `${vendor}.expected.json`), 'utf8')) as Golden;
      expect(golden.dead_letters, vendor).to.not.be.empty;
    }
  });
});
