import { expect } from 'chai';
import { MemoryReplayStore, replayCapacity } from '../../../connectors/webhook';
import { ConfigError } from '../../../lib/errors';

describe('MemoryReplayStore: compact ids, sized by rate and tolerance', () => {
  let now = 1_800_000_000_000;
  const clock = () => now;
  const tolerance = 300;
  /** What the webhook source passes: the timestamp plus the tolerance plus a second. */
  const expiry = (sentAt = now) => sentAt + (tolerance + 1) * 1000;

  beforeEach(() => {
    now = 1_800_000_000_000;
  });

  it('derives its capacity from the peak rate and the tolerance, and states its memory', () => {
    expect(replayCapacity({ peakRequestsPerSecond: 1000, toleranceSeconds: 300 })).to.equal(602_000);
    expect(new MemoryReplayStore().maxEntries).to.equal(602_000);
    expect(new MemoryReplayStore({ peakRequestsPerSecond: 50, toleranceSeconds: 10 }).maxEntries).to.equal(1100);
    expect(() => replayCapacity({ peakRequestsPerSecond: 0 })).to.throw(ConfigError, 'peakRequestsPerSecond must be a number > 0, got 0');
    expect(() => new MemoryReplayStore({ maxEntries: 0 })).to.throw(ConfigError, 'replay.maxEntries must be an integer >= 1, got 0');
    // Full, a store takes at most 40 bytes per id of its capacity, whatever the ids' length.
    const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock });
    for (let i = 0; i < 100_000; i++) expect(store.claim(`acme/${'x'.repeat(200)}-${i}`, expiry())).to.equal(true);
    expect(store.bytes).to.be.at.most(40 * 100_000);
    expect(store.fill()).to.equal(1);
  });

  it('never refuses past 100,000 ids when sized for the rate, and still refuses every replay inside the window', () => {
    // 1,000 requests/s for 150 s: 150,000 ids, half the window's worth kept at once.
    const store = new MemoryReplayStore({ peakRequestsPerSecond: 1000, toleranceSeconds: tolerance, now: clock });
    const ids: string[] = [];
    for (let second = 0; second < 150; second++) {
      for (let i = 0; i < 1000; i++) {
        const id = `acme/evt_${second}_${i}`;
        ids.push(id);
        expect(store.claim(id, expiry())).to.equal(true);
      }
      now += 1000;
    }
    expect(store.size).to.equal(150_000);
    for (const id of ids) expect(store.claim(id, expiry()), id).to.equal('pending');
    expect(store.fill()).to.be.closeTo(150_000 / 602_000, 1e-9);
  });

  it('holds each id until it expires, then takes it again; its memory stays flat once the window is full', () => {
    const store = new MemoryReplayStore({ peakRequestsPerSecond: 100, toleranceSeconds: 10, now: clock });
    const shortExpiry = () => now + 11_000;
    let bytesAtFull = 0;
    for (let second = 0; second < 60; second++) {
      for (let i = 0; i < 100; i++) expect(store.claim(`acme/${second}-${i}`, shortExpiry()), `second ${second}`).to.equal(true);
      // Every id of the last 10 s is a replay; older ones have left the window.
      expect(store.claim(`acme/${second}-0`, shortExpiry())).to.equal('pending');
      if (second >= 10) expect(store.claim(`acme/${second - 10}-1`, shortExpiry())).to.equal('pending');
      if (second === 20) bytesAtFull = store.bytes;
      now += 1000;
    }
    expect(store.bytes, 'table size after the window filled').to.equal(bytesAtFull);
    expect(store.fill()).to.be.at.most(12 * 100 / store.maxEntries);
    now += 12_000;
    expect(store.claim('acme/59-5', shortExpiry()), 'expired: taken again').to.equal(true);
    expect(store.fill()).to.equal(1 / store.maxEntries);
  });

  it('refuses only on a true overflow, and frees released ids at once', () => {
    const store = new MemoryReplayStore({ maxEntries: 3, now: clock });
    expect(['a', 'b', 'c'].map((id) => store.claim(id, now + 5000))).to.deep.equal([true, true, true]);
    expect(store.claim('d', now + 5000), 'full of unexpired ids').to.equal(undefined);
    store.release('b');
    expect(store.claim('d', now + 5000)).to.equal(true);
    expect(store.claim('b', now + 5000)).to.equal(undefined);
    now += 6000;
    expect(store.claim('e', now + 5000), 'the others expired: room again').to.equal(true);
    expect(store.claim('a', now + 5000)).to.equal(true);
    expect(store.claim('e', now + 5000)).to.equal('pending');
    store.confirm('e', now + 5000);
    expect(store.claim('e', now + 5000), 'stored: a replay').to.equal(false);
  });

  it('keeps answering while its ids move to a larger table: replays refused, released ids free again', () => {
    const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock });
    const ids = Array.from({ length: 4096 }, (_, i) => `grow-${i}`);
    for (const id of ids) expect(store.claim(id, expiry())).to.equal(true);
    const before = store.bytes;
    // Half the table's slots are taken: this claim makes one twice as large, and the next
    // 32 claims move a quarter of the ids to it (64 slots each).
    expect(store.claim('grow-4096', expiry())).to.equal(true);
    for (let i = 0; i < 32; i++) expect(store.claim(`more-${i}`, expiry())).to.equal(true);
    expect(store.bytes, 'both tables while the ids move').to.equal(before * 3);
    // Half stored, half released, some moved already, most not.
    ids.forEach((id, i) => (i % 2 === 0 ? store.confirm(id, expiry()) : store.release(id)));
    // Each claim moves a few more: stored ids are still refused, released ones taken again.
    ids.forEach((id, i) => expect(store.claim(id, expiry()), id).to.equal(i % 2 === 1));
    expect(store.size).to.equal(4096 + 1 + 32);
    expect(store.bytes, 'the larger table alone once all moved').to.equal(before * 2);
  });

  // 600: the store fills (and refuses) after one growth; 3000: it grows three times, its ids
  // moving to each larger table a few slots per claim while claims, confirmations, releases
  // and expiries go on.
  for (const maxEntries of [600, 3000]) it(`answers as a plain map of ids would, through claims, confirmations, releases, expiries, sweeps and growth (${maxEntries} ids at most)`, () => {
    const store = new MemoryReplayStore({ maxEntries, now: clock });
    const grownTo = new Set<number>();
    /** Share of steps a second passes: fewer for the larger store, so that it holds more ids and grows. */
    const tick = maxEntries === 600 ? 0.003 : 0.0007;
    /** The model: id → when it expires, and whether its records were stored (confirmed). */
    const model = new Map<string, { expiresAt: number; confirmed: boolean }>();
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const counts = { true: 0, false: 0, pending: 0, undefined: 0 };
    for (let step = 0; step < 50_000; step++) {
      const id = `id-${Math.floor(random() * 5000)}`;
      const roll = random();
      if (roll < 0.05) {
        store.release(id);
        model.delete(id);
      } else if (roll < 0.05 + tick) {
        now += 1000;
        for (const [held, { expiresAt }] of model) if (expiresAt <= now) model.delete(held);
      } else if (roll < 0.3) {
        // Confirming an id not held changes nothing.
        const expiresAt = now + Math.ceil(random() * 5) * 1000;
        store.confirm(id, expiresAt);
        if (model.has(id)) model.set(id, { expiresAt, confirmed: true });
      } else {
        const expiresAt = now + Math.ceil(random() * 5) * 1000;
        const held = model.get(id);
        const expected = held ? (held.confirmed ? false : 'pending') : model.size >= store.maxEntries ? undefined : true;
        const taken = store.claim(id, expiresAt);
        expect(taken, `step ${step}: ${id}`).to.equal(expected);
        grownTo.add(store.bytes);
        if (taken === true) model.set(id, { expiresAt, confirmed: false });
        counts[String(taken) as keyof typeof counts]++;
      }
    }
    // Every outcome was exercised, the full store included.
    expect(counts.true).to.be.greaterThan(1000);
    expect(counts.false, JSON.stringify(counts)).to.be.greaterThan(100);
    expect(counts.pending, JSON.stringify(counts)).to.be.greaterThan(100);
    if (maxEntries === 600) expect(counts.undefined).to.be.greaterThan(100);
    // Sizes seen: the first table, each move (both tables), each larger table.
    expect(grownTo.size, [...grownTo].join(', ')).to.be.at.least(maxEntries === 600 ? 3 : 5);
  });
});
