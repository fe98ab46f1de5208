import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { MemoryReplayStore, redisReplayStore, replayCapacity } from '../../../connectors/webhook';
import { ConfigError, TributaryError } from '../../../lib/errors';

/** The digest key of the stores below whose layout a test sets up. */
const KEY = 'replay-spec-digest-key';

/** The first word of an id's digest, as the store reads it: the id's home slot is this modulo the slots. */
function word0(id: string): number {
  return new Uint32Array(Uint8Array.from(createHash('sha256').update(KEY + id).digest()).buffer)[0]!;
}

/** `count` ids, named from `prefix`, whose home slot in a table of `slots` is in [from, to]. */
function idsAt(from: number, to: number, count: number, prefix: string, slots = 1024): string[] {
  const ids: string[] = [];
  for (let i = 0; ids.length < count; i++) {
    const home = word0(`${prefix}-${i}`) % slots;
    if (home >= from && home <= to) ids.push(`${prefix}-${i}`);
  }
  return ids;
}

describe('MemoryReplayStore: compact ids, sized by rate and tolerance', () => {
  let now = 1_800_000_000_000;
  const clock = () => now;
  const tolerance = 300;
  /** What the webhook source passes: the timestamp plus the tolerance plus a second. */
  const expiry = (sentAt = now) => sentAt + (tolerance + 1) * 1000;

  beforeEach(() => {
    now = 1_800_000_000_000;
  });

  /**
   * Drives `store` and a plain map of ids (the model: when each expires, whether its records
   * were stored) through the same seeded steps, each claim's answer checked against the
   * model's. A step is a release, a second passing, a confirmation or a claim, as its roll
   * falls below `cuts[0]`, `cuts[1]`, `cuts[2]` or above. Returns how often each answer came.
   */
  function againstModel(
    store: MemoryReplayStore,
    o: { steps: number; seed: number; id: (random: () => number) => string; cuts: [number, number, number]; after?: (step: number, model: ReadonlyMap<string, unknown>) => void },
  ): Record<'true' | 'false' | 'pending' | 'undefined', number> {
    const model = new Map<string, { expiresAt: number; confirmed: boolean }>();
    let seed = o.seed;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const counts = { true: 0, false: 0, pending: 0, undefined: 0 };
    for (let step = 0; step < o.steps; step++) {
      const id = o.id(random);
      const roll = random();
      if (roll < o.cuts[0]) {
        store.release(id);
        model.delete(id);
      } else if (roll < o.cuts[1]) {
        now += 1000;
        for (const [held, { expiresAt }] of model) if (expiresAt <= now) model.delete(held);
      } else if (roll < o.cuts[2]) {
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
        if (taken === true) model.set(id, { expiresAt, confirmed: false });
        counts[String(taken) as keyof typeof counts]++;
      }
      o.after?.(step, model);
    }
    return counts;
  }

  it('derives its capacity from the peak rate and the tolerance, and states its memory', () => {
    expect(replayCapacity({ peakRequestsPerSecond: 1000, toleranceSeconds: 300 })).to.equal(602_000);
    expect(new MemoryReplayStore().maxEntries).to.equal(602_000);
    expect(new MemoryReplayStore({ peakRequestsPerSecond: 50, toleranceSeconds: 10 }).maxEntries).to.equal(1100);
    expect(() => replayCapacity({ peakRequestsPerSecond: 0 })).to.throw(ConfigError, 'peakRequestsPerSecond must be a number > 0, got 0');
    expect(() => replayCapacity({ toleranceSeconds: -1 })).to.throw(ConfigError, 'toleranceSeconds must be a number > 0, got -1');
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
    const counts = againstModel(store, { steps: 50_000, seed: 7, id: (random) => `id-${Math.floor(random() * 5000)}`, cuts: [0.05, 0.05 + tick, 0.3], after: () => grownTo.add(store.bytes) });
    // Every outcome was exercised, the full store included.
    expect(counts.true).to.be.greaterThan(1000);
    expect(counts.false, JSON.stringify(counts)).to.be.greaterThan(100);
    expect(counts.pending, JSON.stringify(counts)).to.be.greaterThan(100);
    if (maxEntries === 600) expect(counts.undefined).to.be.greaterThan(100);
    // Sizes seen: the first table, each move (both tables), each larger table.
    expect(grownTo.size, [...grownTo].join(', ')).to.be.at.least(maxEntries === 600 ? 3 : 5);
  });

  it('grows its table when half its slots are taken, not later', () => {
    const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock, digestKey: KEY });
    for (let i = 0; i < 512; i++) store.claim(`id-${i}`, expiry());
    // 1,024 slots of 20 bytes.
    expect(store.bytes).to.equal(1024 * 20);
    store.claim('id-512', expiry());
    expect(store.bytes, 'both tables while the ids move').to.equal(1024 * 20 + 2048 * 20);
  });

  it('tells apart two ids whose digests share their first word, and so their home slot', () => {
    const seen = new Map<number, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; !pair; i++) {
      const id = `c-${i}`;
      const other = seen.get(word0(id));
      if (other === undefined) seen.set(word0(id), id);
      else pair = [other, id];
    }
    const [a, b] = pair;
    const store = new MemoryReplayStore({ now: clock, digestKey: KEY });
    expect(store.claim(a, expiry())).to.equal(true);
    expect(store.claim(b, expiry()), 'a different id').to.equal(true);
    store.confirm(a, expiry());
    expect([store.claim(a, expiry()), store.claim(b, expiry())]).to.deep.equal([false, 'pending']);
    store.release(b);
    expect([store.claim(a, expiry()), store.claim(b, expiry())]).to.deep.equal([false, true]);
  });

  it('keeps every id reachable where runs of ids wrap around the end of the table and ids leave them', () => {
    // 64 ids whose home slots are the last four and the first four of 1,024: one long run
    // across the end, out of which ids are released and expire.
    const ids = [...idsAt(1020, 1023, 32, 'end'), ...idsAt(0, 3, 32, 'start')];
    const store = new MemoryReplayStore({ maxEntries: 500, now: clock, digestKey: KEY });
    const counts = againstModel(store, {
      steps: 20_000,
      seed: 11,
      id: (random) => ids[Math.floor(random() * ids.length)]!,
      cuts: [0.15, 0.2, 0.4],
      // Expired ids are swept out on reading the fill: the table then holds the model's ids.
      after: (step, model) => {
        if (step % 100 === 0) expect(Math.round(store.fill() * store.maxEntries), `step ${step}`).to.equal(model.size);
      },
    });
    expect(Math.min(counts.true, counts.false, counts.pending), JSON.stringify(counts)).to.be.greaterThan(500);
  });

  it('finds the ids not moved yet to the larger table: at its first slot, and at the slot the move has reached', () => {
    const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock, digestKey: KEY });
    const [first] = idsAt(0, 0, 1, 'first');
    const [atCursor] = idsAt(64, 64, 1, 'cursor');
    for (const id of [first!, atCursor!, ...idsAt(200, 900, 510, 'rest')]) expect(store.claim(id, expiry())).to.equal(true);
    // The 513th id: the table grows, nothing has moved yet.
    expect(store.claim('trigger', expiry())).to.equal(true);
    store.confirm(first!, expiry());
    // A claim moves the first 64 slots: the move now stands at slot 64.
    expect(store.claim('step', expiry())).to.equal(true);
    store.release(atCursor!);
    // Released twice: counted once.
    store.release(atCursor!);
    expect(store.size).to.equal(512 + 2 - 1);
    expect([store.claim(first!, expiry()), store.claim(atCursor!, expiry())]).to.deep.equal([false, true]);
  });

  it('drops the ids that expire while they wait to move, from the second they expire', () => {
    const store = new MemoryReplayStore({ maxEntries: 100_000, now: clock, digestKey: KEY });
    const expiresAt = now + 10_000;
    for (let i = 0; i < 512; i++) store.claim(`short-${i}`, expiresAt);
    expect(store.claim('long', now + 60_000)).to.equal(true);
    // Held until their expiry, not at it.
    now = expiresAt;
    // 16 claims of 64 slots each: the move is done.
    for (let i = 0; i < 16; i++) expect(store.claim(`late-${i}`, now + 60_000)).to.equal(true);
    expect(store.size).to.equal(17);
    expect(store.claim('short-0', now + 60_000)).to.equal(true);
  });

  it('counts only unexpired ids against its capacity while they move, and sweeps the moved ones when they expire', () => {
    // Ids living long at the table's start, ids expiring soon at its end: when the store is
    // full, the soon-expired ones have not moved yet.
    const store = new MemoryReplayStore({ maxEntries: 520, now: clock, digestKey: KEY });
    for (const id of idsAt(0, 400, 256, 'lasting')) store.claim(id, now + 60_000);
    for (const id of idsAt(600, 1000, 256, 'brief')) store.claim(id, now + 5_000);
    // The 513th grows the table (to twice 520 slots); 7 more move slots 0 to 447.
    for (let i = 0; i < 8; i++) expect(store.claim(`more-${i}`, now + 60_000)).to.equal(true);
    expect(store.size).to.equal(520);
    now += 5_000;
    expect(store.claim('after', now + 60_000), 'the brief ids expired: room').to.equal(true);
    expect(store.size).to.equal(256 + 8 + 1);

    // A sweep while ids move, then ids expiring sooner than every id swept over move in:
    // they are swept when they expire.
    const sweeping = new MemoryReplayStore({ maxEntries: 100_000, now: clock, digestKey: KEY });
    // Homes from slot 100 on, sparse enough that no run reaches round to the first slots.
    for (const id of idsAt(100, 199, 1, 'filler')) sweeping.claim(id, now + 60_000);
    for (const id of idsAt(200, 900, 510, 'middling')) sweeping.claim(id, now + 10_000);
    // Moved last: an id that lives long.
    for (const id of idsAt(1000, 1000, 1, 'tail')) sweeping.claim(id, now + 60_000);
    expect(sweeping.claim('trigger', now + 60_000)).to.equal(true);
    // Moves slots 0 to 63 (none held) and lands in the larger table, due first.
    expect(sweeping.claim('soon', now + 2_000)).to.equal(true);
    now += 2_000;
    // Sweeps the larger table: 'soon' goes.
    expect(Math.round(sweeping.fill() * sweeping.maxEntries)).to.equal(514 - 1);
    for (let i = 0; i < 16; i++) sweeping.claim(`later-${i}`, now + 60_000);
    now += 8_000;
    expect(Math.round(sweeping.fill() * sweeping.maxEntries), 'the middling ids expired').to.equal(3 + 16);
  });

  it('after a sweep, sweeps again when the next id expires, wherever it lies in the table', () => {
    const store = new MemoryReplayStore({ maxEntries: 100, now: clock, digestKey: KEY });
    // Slot order: the id expiring first, the next to expire, the last to expire in the last slot.
    const [first] = idsAt(10, 10, 1, 'first');
    const [next] = idsAt(20, 20, 1, 'next');
    const [last] = idsAt(1023, 1023, 1, 'last');
    store.claim(first!, now + 1_000);
    store.claim(next!, now + 5_000);
    store.claim(last!, now + 60_000);
    now += 1_000;
    expect(Math.round(store.fill() * store.maxEntries)).to.equal(2);
    now += 4_000;
    expect(Math.round(store.fill() * store.maxEntries)).to.equal(1);
  });

  it('a Redis store needs exactly one of url or client', () => {
    expect(() => redisReplayStore({})).to.throw(ConfigError, 'redisReplayStore needs exactly one of url or client');
  });

  it('a Redis store that cannot reach Redis fails each call with a retriable REPLAY_STORE error', async () => {
    const store = redisReplayStore({ url: 'redis://127.0.0.1:1', redis: { retryStrategy: () => null, maxRetriesPerRequest: 0, lazyConnect: true } });
    try {
      for (const call of [() => store.claim('evt', Date.now() + 60_000), () => store.confirm!('evt', Date.now() + 60_000), () => store.release('evt')]) {
        const error = (await Promise.resolve(call()).then(
          () => undefined,
          (e: unknown) => e,
        )) as TributaryError;
        expect(error).to.be.instanceOf(TributaryError);
        expect([error.code, error.retriable]).to.deep.equal(['REPLAY_STORE', true]);
        expect(error.message).to.match(/^replay store: Redis failed: /);
      }
    } finally {
      await store.close();
    }
  });
});
