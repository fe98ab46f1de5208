import { expect } from 'chai';
import { from, lastValueFrom, map, Subject, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import { dedupe, type DedupeStats } from '../../../operators/dedupe';
import { MemoryDedupeStore, type DedupeStore } from '../../../operators/dedupeStores';
import { Recorder, until } from '../../helpers';

const stats = (): DedupeStats => ({ passed: 0, duplicates: 0, rejected: 0 });

/** A store in "another process": answers asynchronously, one batch per call, recorded. */
class RemoteStore implements DedupeStore {
  readonly inner: MemoryDedupeStore;
  readonly calls: string[][] = [];
  failures = 0;
  constructor(now?: () => number) {
    this.inner = new MemoryDedupeStore(now ? { now } : {});
  }
  async claim(keys: readonly string[], owners: readonly string[], ttlMs: number): Promise<boolean[]> {
    this.calls.push([...keys]);
    await new Promise((resolve) => setImmediate(resolve));
    if (this.failures > 0) {
      this.failures--;
      throw Object.assign(new Error('connection reset'), { retriable: true });
    }
    return this.inner.claim(keys, owners, ttlMs);
  }
}

describe('dedupe', () => {
  it('passes the first record of each key, acks and counts duplicates, on virtual time (memory store)', () => {
    const scheduler = new TestScheduler((actual, expected) => {
      expect(actual).to.deep.equal(expected);
    });
    scheduler.run(({ cold, expectObservable }) => {
      const recorder = new Recorder();
      const counts = stats();
      const store = new MemoryDedupeStore({ now: () => scheduler.now() });
      const input = cold('a-b-a-c-b 100ms a|').pipe(map((v) => recorder.envelope({ id: v })));
      const out = input.pipe(dedupe({ key: (r) => r.id, ttlMs: 50, store, stats: counts }), map((e) => e.value.id));
      // The last `a` arrives after the 50 ms window: it passes again.
      expectObservable(out).toBe('a-b---c- 100ms -a|');
      scheduler.flush();
      expect(counts).to.deep.equal({ passed: 4, duplicates: 2, rejected: 0 });
      expect(recorder.acked.map((e) => (e.value as { id: string }).id)).to.deep.equal(['a', 'b']);
      expect(recorder.rejected).to.deep.equal([]);
    });
  });

  it('lets the same record through again when it is redelivered (same source and position)', async () => {
    const recorder = new Recorder();
    const store = new MemoryDedupeStore();
    const op = () => dedupe<{ id: string }>({ key: (r) => r.id, ttlMs: 60_000, store });
    const first = await lastValueFrom(from([recorder.envelope({ id: 'x' }, { position: 'f@0' })]).pipe(op(), toArray()));
    const again = await lastValueFrom(from([recorder.envelope({ id: 'x' }, { position: 'f@0' }), recorder.envelope({ id: 'x' }, { position: 'f@9' })]).pipe(op(), toArray()));
    expect(first.map((e) => e.meta.position)).to.deep.equal(['f@0']);
    expect(again.map((e) => e.meta.position)).to.deep.equal(['f@0']);
    expect(recorder.acked.map((e) => e.meta.position)).to.deep.equal(['f@9']);
  });

  it('dead-letters a record whose key cannot be computed', async () => {
    const recorder = new Recorder();
    const counts = stats();
    const out = await lastValueFrom(
      from([recorder.envelope({ id: 'a' }), recorder.envelope({}), recorder.envelope({ id: '' })]).pipe(dedupe<any>({ key: (r) => r.id, ttlMs: 10, store: new MemoryDedupeStore(), stats: counts }), toArray()),
    );
    expect(out).to.have.length(1);
    expect(recorder.rejected.map((r) => [r.failure.stage, r.failure.code, r.failure.message])).to.deep.equal([
      ['dedupe', 'DEDUPE_KEY', 'the key must be a non-empty string, got undefined'],
      ['dedupe', 'DEDUPE_KEY', 'the key must be a non-empty string, got an empty string'],
    ]);
    expect(counts.rejected).to.equal(2);
  });

  it('claims in batches from a remote store, one round trip at a time, keeping the order', async () => {
    const recorder = new Recorder();
    const store = new RemoteStore();
    const ids = ['a', 'b', 'a', 'c', 'd', 'b', 'e', 'a', 'f'];
    const out = await lastValueFrom(from(ids.map((id) => recorder.envelope({ id }))).pipe(dedupe({ key: (r) => r.id, ttlMs: 60_000, store, batch: { rows: 4 } }), toArray()));
    expect(out.map((e) => e.value.id)).to.deep.equal(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(store.calls).to.deep.equal([['a', 'b', 'a', 'c'], ['d', 'b', 'e', 'a'], ['f']]);
    expect(recorder.acked.map((e) => (e.value as { id: string }).id)).to.deep.equal(['a', 'b', 'a']);
  });

  it('sends a partial batch when the wait runs out, without waiting for more input', async () => {
    const recorder = new Recorder();
    const store = new RemoteStore();
    const input = new Subject<Envelope<{ id: string }>>();
    const seen: string[] = [];
    input.pipe(dedupe({ key: (r) => r.id, ttlMs: 60_000, store, batch: { rows: 100, maxWaitMs: 1 } })).subscribe((e) => seen.push(e.value.id));
    input.next(recorder.envelope({ id: 'a' }));
    await until(() => seen.length === 1, 5000, 'the first record');
    expect(store.calls).to.deep.equal([['a']]);
    input.complete();
  });

  it('retries a failing store; when it stays down, nacks the records it holds and errors the stream', async () => {
    const recorder = new Recorder();
    const store = new RemoteStore();
    store.failures = 2;
    const retried = await lastValueFrom(
      from([recorder.envelope({ id: 'a' })]).pipe(dedupe({ key: (r) => r.id, ttlMs: 60_000, store, retry: { retries: 3, initialDelayMs: 1, retriable: () => true } }), toArray()),
    );
    expect(retried).to.have.length(1);
    store.failures = 100;
    const down = lastValueFrom(
      from([recorder.envelope({ id: 'b' }), recorder.envelope({ id: 'c' })]).pipe(dedupe({ key: (r) => r.id, ttlMs: 60_000, store, retry: { retries: 1, initialDelayMs: 1, retriable: () => true } }), toArray()),
    );
    let failure: Error | undefined;
    await down.catch((error: Error) => (failure = error));
    expect(failure?.message).to.match(/connection reset/);
    expect(recorder.nacked.map((e) => (e.value as { id: string }).id)).to.deep.equal(['b', 'c']);
  });

  it('refuses bad options at construction, with the rule', () => {
    const store = new MemoryDedupeStore();
    const key = (r: unknown) => String(r);
    expect(() => dedupe({ key: 'id' as never, ttlMs: 1, store })).to.throw(ConfigError, 'key must be a function of the record returning a string');
    expect(() => dedupe({ key, ttlMs: 0, store })).to.throw(ConfigError, 'ttlMs must be an integer >= 1, got 0');
    expect(() => dedupe({ key, ttlMs: 1, store: {} as never })).to.throw(ConfigError, 'store must be a DedupeStore (new MemoryDedupeStore() or redisDedupeStore({ url }))');
    expect(() => dedupe({ key, ttlMs: 1, store, batch: { rows: 0 } })).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 0');
    expect(() => dedupe({ key, ttlMs: 1, store, batch: { maxWaitMs: -1 } })).to.throw(ConfigError, 'batch.maxWaitMs must be a finite number >= 0, got -1');
    expect(() => new MemoryDedupeStore({ maxEntries: 0 })).to.throw(ConfigError, 'maxEntries must be an integer >= 1, got 0');
    expect(() => new MemoryDedupeStore({ maxBytes: 10 })).to.throw(ConfigError, 'maxBytes must be an integer >= 1024, got 10');
  });

  describe('MemoryDedupeStore', () => {
    it('stays within its entry and byte bounds, forgetting the oldest keys first', () => {
      let now = 0;
      const store = new MemoryDedupeStore({ maxEntries: 3, now: () => now });
      for (const key of ['a', 'b', 'c', 'd']) expect(store.claimNow(key, 'o', 1000)).to.equal(true);
      expect([store.size, store.evicted]).to.deep.equal([3, 1]);
      expect(store.claimNow('a', 'other', 1000), 'a was forgotten').to.equal(true);
      expect(store.claimNow('d', 'other', 1000)).to.equal(false);
      const bytes = new MemoryDedupeStore({ maxBytes: 2048, now: () => now });
      for (let i = 0; i < 1000; i++) bytes.claimNow(`key-${i}`, 'owner', 1000);
      expect(bytes.bytes).to.be.at.most(2048);
      expect(bytes.size).to.be.greaterThan(5);
      expect(bytes.claimNow('key-999', 'x', 1000)).to.equal(false);
    });

    it('forgets expired keys, sweeping them from the front as new keys come', () => {
      let now = 0;
      const store = new MemoryDedupeStore({ now: () => now });
      for (let i = 0; i < 100; i++) store.claimNow(`k${i}`, 'o', 10);
      now = 11;
      expect(store.claimNow('k5', 'other', 10), 'expired: claimed anew').to.equal(true);
      for (let i = 0; i < 100; i++) store.claimNow(`n${i}`, 'o', 1000);
      expect(store.size).to.be.lessThan(110);
      expect(store.evicted).to.equal(0);
    });

    it('frees a key at the instant its time runs out, even behind keys that live longer', () => {
      let now = 0;
      const store = new MemoryDedupeStore({ now: () => now });
      store.claimNow('long', 'o', 1000);
      store.claimNow('k', 'a', 100);
      now = 99;
      expect(store.claimNow('k', 'b', 100)).to.equal(false);
      now = 100;
      expect(store.claimNow('k', 'b', 100)).to.equal(true);
      expect(store.claimNow('k', 'a', 100), 'now held by b').to.equal(false);
    });

    it('sweeps a key from the front at the instant it expires, a bounded few per claim', () => {
      let now = 0;
      const store = new MemoryDedupeStore({ now: () => now });
      store.claimNow('k', 'o', 100);
      now = 50;
      store.claimNow('j', 'o', 100);
      now = 100;
      store.claimNow('z', 'o', 1000);
      expect(store.size, 'k expired at 100').to.equal(2);

      const many = new MemoryDedupeStore({ now: () => now });
      for (let i = 0; i < 1000; i++) many.claimNow(`old-${i}`, 'o', 10);
      now += 10;
      many.claimNow('new-0', 'o', 1000);
      expect(many.size, 'one claim does not sweep a thousand keys').to.be.within(900, 1000);
      for (let i = 1; i < 1000; i++) many.claimNow(`new-${i}`, 'o', 1000);
      expect(many.size, 'all expired keys swept as claims went by').to.equal(1000);
    });

    it('counts keys and owners by their length plus a fixed overhead per entry against maxBytes', () => {
      const fill = (key: (i: number) => string, owner: string) => {
        const store = new MemoryDedupeStore({ maxBytes: 100_000 });
        for (let i = 0; i < 1000; i++) store.claimNow(key(i), owner, 60_000);
        expect(store.bytes).to.be.at.most(100_000);
        return store.size;
      };
      expect(fill((i) => `k${i}`, 'o'), 'tiny entries: the overhead counts').to.be.within(500, 1000 - 1);
      expect(fill((i) => `k${i}`.padEnd(1000, '.'), 'o'), 'long keys: 2000+ bytes each').to.be.at.most(50);
      expect(fill((i) => `k${i}`, 'o'.repeat(1000)), 'long owners: 2000+ bytes each').to.be.at.most(50);
    });

    it('holds entries up to exactly maxBytes, and keeps the newest entry alone even when it is larger', () => {
      const probe = new MemoryDedupeStore();
      probe.claimNow('a'.repeat(300), 'owner-1', 1000);
      const entry = probe.bytes;
      const store = new MemoryDedupeStore({ maxBytes: 2 * entry });
      store.claimNow('a'.repeat(300), 'owner-1', 1000);
      store.claimNow('b'.repeat(300), 'owner-1', 1000);
      expect([store.size, store.bytes, store.evicted]).to.deep.equal([2, 2 * entry, 0]);

      const small = new MemoryDedupeStore({ maxBytes: 1024 });
      expect(small.claimNow('x'.repeat(5000), 'a', 1000)).to.equal(true);
      expect([small.size, small.evicted]).to.deep.equal([1, 0]);
      expect(small.claimNow('x'.repeat(5000), 'b', 1000), 'still a duplicate').to.equal(false);
    });

    it('forgets everything on close', async () => {
      const store = new MemoryDedupeStore();
      store.claimNow('k', 'a', 60_000);
      await store.close();
      expect([store.size, store.bytes]).to.deep.equal([0, 0]);
      expect(store.claimNow('k', 'b', 60_000)).to.equal(true);
    });
  });
});
