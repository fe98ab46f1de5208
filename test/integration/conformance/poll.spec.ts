import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VendorApi } from '../../vendorApi';
import { sourceConformance, type SourceInput } from '../../conformance/source';

const PAGE = 50;

/**
 * fromPoll: the fake vendor API's cursor pagination, 50 items a page; the cursor file's
 * `resume` names the first page not yet stored. Items may be stored as often as the API
 * served them in a 200 page (pages fetched again after a crash, items shown on two pages).
 */
sourceConformance('fromPoll', {
  kind: 'poll',
  savedIn: '.cursor.json.',
  async input(dir, promise): Promise<SourceInput> {
    const kill = promise === 'kill';
    // The kill test: slow pages, 429 bursts, 500s, items on two pages and a renamed field, all at once.
    const api = new VendorApi(kill ? 3000 : promise === 'stop' ? 2000 : 1000, kill ? { slowMs: 25, burst429: { every: 10, count: 1, retryAfterSeconds: 1 }, error500Every: 13, duplicates: true, renameAfter: 1500 } : { slowMs: 10 });
    const url = `${await api.start()}/cursor?limit=${PAGE}`;
    const cursorFile = join(dir, 'cursor.json');
    const cursor = () => (existsSync(cursorFile) ? (JSON.parse(readFileSync(cursorFile, 'utf8')) as { resume?: string; watermark?: string }) : undefined);
    const pageOf = (token: string | undefined) => (token === undefined ? 1 : Number(Buffer.from(token, 'base64url').toString().slice(1)));
    /** The items of the pages before the cursor: all of them once a sync is complete. */
    const promised = () => {
      const saved = cursor();
      if (saved === undefined) return [];
      const upTo = saved.resume === undefined ? api.items.length : (pageOf(saved.resume) - 1) * PAGE;
      return api.items.slice(0, upTo).map((i) => i.id);
    };
    let savedAtFirst: string | undefined;
    let servedAtFirst = 0;
    return {
      options: {
        vendor: 'acme',
        url,
        pagination: { type: 'cursor', next: 'next_cursor' },
        key: 'id',
        watermark: { param: 'updated_since', field: 'updated_at' },
        headers: { authorization: 'Bearer vendor-token' },
        requestsPerSecond: 100,
        cursorFile,
        once: true,
        retry: { initialDelayMs: 10, maxDelayMs: 200 },
      },
      // One batch per page (items of a page are emitted at once, batches cut by time fall between pages).
      batch: kill ? { rows: 120, maxWaitMs: 50 } : { rows: PAGE, maxWaitMs: 50 },
      writesBefore: 6,
      slowMs: kill ? undefined : 30,
      refs: () => api.items.map((i) => i.id),
      promised,
      midway: () => pageOf(cursor()?.resume) >= (kill ? 15 : 5),
      copies(ref) {
        // Pages answered 200 (their number from the request's cursor) and the items each held.
        const index = api.items.findIndex((i) => i.id === ref);
        let served = 0;
        for (const r of api.served) {
          if (r.status !== 200) continue;
          const token = new URL(r.path, 'http://vendor').searchParams.get('cursor') ?? undefined;
          const page = pageOf(token);
          const first = (page - 1) * PAGE - (api.faults.duplicates && page > 1 ? 1 : 0);
          if (index >= first && index < page * PAGE) served++;
        }
        return served;
      },
      afterFirst({ placedKill }) {
        savedAtFirst = cursor()?.resume;
        servedAtFirst = api.served.length;
        // Where the timed kill lands; a kill at a set point comes elsewhere.
        if (kill && !placedKill) expect(pageOf(savedAtFirst)).to.be.within(15, 59);
      },
      afterLast({ stats }) {
        // The restart asks first for the page the cursor names, not the first page.
        const asked = api.served[servedAtFirst]!.path;
        if (savedAtFirst === undefined) expect(asked).to.not.include('cursor=');
        else expect(asked).to.include(`cursor=${savedAtFirst}`);
        expect(stats!.source.syncs).to.equal(1);
        expect(cursor(), 'the cursor after a complete sync').to.deep.include({ watermark: api.items[api.items.length - 1]!.updated_at });
        expect(cursor()!.resume).to.equal(undefined);
        if (kill) expect(api.served.some((r) => r.status === 429) && api.served.some((r) => r.status === 500)).to.equal(true);
      },
      teardown: () => api.stop(),
    };
  },
});
