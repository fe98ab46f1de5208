import { expect } from 'chai';
import fc from 'fast-check';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPoll } from '../../../connectors/poll';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, scratchDir, seeded } from '../../helpers';
import { VendorApi, type Corruption, type Item } from '../../vendorApi';

/**
 * Pages damaged in transit or by the vendor, and hostile items, generated at random: a page
 * answered 200 with a body cut short, with bytes that are not UTF-8 inside a string, as an
 * HTML error page or without its record array, some only once or twice (retried), some for
 * good; items nested past the depth limit or over the size limit. For every run:
 * - a damaged body is never stored in part, nor with its bad bytes replaced: an item is
 *   stored only as the API holds it;
 * - while every damaged page comes right within the retries, every item is stored or, when
 *   hostile, dead-lettered alone (its page's other items stored), and read = written +
 *   dead-lettered;
 * - a page damaged for good stops the once-poller with an error naming its URL: the items
 *   of the pages before it are stored, none after it, and the saved cursor resumes at it.
 */
const SEED = 19;
const RUNS = 25;
const PAGE = 10;
const RETRIES = 2;

const corruption = fc.constantFrom<Corruption>('truncated', 'invalid-utf8', 'html', 'no-array');

describe('fromPoll: damaged pages and hostile items (property, seeded)', function () {
  this.timeout(300_000);
  const dir = scratchDir();

  it('stores only what the API holds, every item or up to the first page damaged for good', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }).chain((pages) =>
          fc.record({
            pages: fc.constant(pages),
            damaged: fc.array(fc.record({ page: fc.integer({ min: 1, max: pages }), kind: corruption, times: fc.oneof(fc.integer({ min: 1, max: RETRIES }), fc.constant(Infinity)) }), { maxLength: 3 }),
            hostile: fc.array(fc.record({ item: fc.integer({ min: 1, max: pages * PAGE }), kind: fc.constantFrom<'deep' | 'huge'>('deep', 'huge') }), { maxLength: 3 }),
          }),
        ),
        async ({ pages, damaged, hostile }) => {
          run++;
          const corruptPages = new Map(damaged.map((d) => [d.page, { kind: d.kind, times: d.times }]));
          const hostileItems = new Map(hostile.map((h) => [h.item, h.kind]));
          const api = new VendorApi(pages * PAGE, { corruptPages, hostileItems });
          const base = await api.start();
          const cursorFile = join(dir.path, `cursor-${run}.json`);
          const stored = new MemorySink<Item>('items');
          const deadLetters = new MemorySink<DeadLetter>('dead-letters');
          try {
            const pipeline = new Pipeline<Item>({
              source: fromPoll({
                vendor: 'acme',
                url: `${base}/page`,
                pagination: { type: 'page', size: PAGE },
                headers: { authorization: `Bearer ${api.token}` },
                requestsPerSecond: 1000,
                cursorFile,
                once: true,
                retry: { retries: RETRIES, initialDelayMs: 1, maxDelayMs: 2 },
              }),
              sink: stored,
              deadLetters,
              batch: { rows: 7, maxWaitMs: 5 },
            });
            const outcome = await pipeline.run().then(
              (stats) => ({ stats, error: undefined }),
              (error: Error) => ({ stats: pipeline.stats, error }),
            );
            // The first page damaged for good; the pages after it are never emitted.
            const broken = [...corruptPages].filter(([, d]) => d.times === Infinity).map(([page]) => page).sort((a, b) => a - b)[0];
            const reached = broken === undefined ? pages : broken - 1;
            const expectedItems = api.items.slice(0, reached * PAGE);
            const isHostile = (item: Item) => hostileItems.has(Number(item.id.slice(3)));

            // Only what the API holds, byte for byte, each item once.
            const byId = new Map(api.items.map((item) => [item.id, item]));
            for (const item of stored.rows) expect(item, `stored item ${item.id}`).to.deep.equal(byId.get(item.id));
            expect(new Set(stored.rows.map((i) => i.id)).size, 'an item stored twice').to.equal(stored.rows.length);

            expect(stored.rows.map((i) => i.id).sort()).to.deep.equal(expectedItems.filter((i) => !isHostile(i)).map((i) => i.id).sort());
            expect(deadLetters.rows.map((d) => d.code).sort()).to.deep.equal(
              expectedItems.filter(isHostile).map((i) => (hostileItems.get(Number(i.id.slice(3))) === 'deep' ? 'TOO_DEEP' : 'RECORD_TOO_LARGE')).sort(),
            );
            expect(outcome.stats.read).to.equal(outcome.stats.written + outcome.stats.deadLettered + outcome.stats.nacked);
            expect(outcome.stats.read).to.equal(expectedItems.length);
            if (broken === undefined) {
              expect(outcome.error, 'a run whose damage came right in time').to.equal(undefined);
            } else {
              expect(outcome.error?.message ?? '', 'the error names the damaged page').to.contain(`/page?page=${broken}&`);
              const cursor = existsSync(cursorFile) ? (JSON.parse(readFileSync(cursorFile, 'utf8')) as { resume?: number }) : {};
              expect(cursor.resume ?? 1, 'the cursor resumes at the damaged page').to.equal(broken);
            }
          } finally {
            await api.stop();
          }
        },
      ),
      seeded(SEED, RUNS),
    );
  });
});
