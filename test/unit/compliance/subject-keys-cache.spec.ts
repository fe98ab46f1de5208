import { expect } from 'chai';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { ConfigError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { MemorySubjectKeyStore, SubjectKeys, type SubjectKeyRecord, type SubjectKeyStore } from '../../../lib/security/subjectKeys';

const keyring = () => new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });

/** A memory store whose calls are counted, and whose findByIds can be held until released. */
class Store implements SubjectKeyStore {
  readonly inner = new MemorySubjectKeyStore();
  readonly calls: string[] = [];
  hold: Promise<void> | undefined;
  async findBySubjects(subjects: readonly string[]) {
    this.calls.push(`findBySubjects ${subjects.join(',')}`);
    return this.inner.findBySubjects(subjects);
  }
  async findByIds(ids: readonly string[]) {
    this.calls.push(`findByIds ${ids.join(',')}`);
    const found = await this.inner.findByIds(ids);
    await this.hold;
    return found;
  }
  put(records: readonly SubjectKeyRecord[]) {
    this.calls.push(`put ${records.map((r) => r.subject).join(',')}`);
    return this.inner.put(records);
  }
  delete(subject: string) {
    return this.inner.delete(subject);
  }
}

/** Runs `act` with Date.now() reading `clock.now`. */
async function onClock<R>(act: (clock: { now: number }) => Promise<R>): Promise<R> {
  const real = Date.now;
  const clock = { now: real() };
  Date.now = () => clock.now;
  try {
    return await act(clock);
  } finally {
    Date.now = real;
  }
}

/** The stored key ids of these subjects, made by another process. */
async function storedKeys(store: Store, ring: Keyring, subjects: string[]): Promise<string[]> {
  await new SubjectKeys({ keyring: ring, store: store.inner }).resolveSubjects(subjects);
  return Promise.all(subjects.map(async (s) => (await store.inner.findBySubjects([s]))[0]!.keyId));
}

describe('subject keys, their cache', () => {
  it('refuses a store without findBySubjects', () => {
    expect(() => new SubjectKeys({ keyring: keyring(), store: { findByIds() {}, put() {}, delete() {} } as never })).to.throw(ConfigError, 'store must be a SubjectKeyStore');
  });

  it('asks the store nothing for a subject whose key is cached, and stores nothing for a subject that has a key', async () => {
    const store = new Store();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await keys.resolveSubjects(['a']);
    await keys.resolveSubjects(['a']);
    expect(store.calls).to.deep.equal(['findBySubjects a', 'put a']);
    const reader = new SubjectKeys({ keyring: keys.keyring, store });
    await reader.resolveSubjects(['a']);
    expect(store.calls.slice(2)).to.deep.equal(['findBySubjects a']);
    expect(reader.cachedForSubject('a')!.keyId).to.equal(keys.cachedForSubject('a')!.keyId);
  });

  it('looks a subject up again once its key has left the cache', async () => {
    const store = new Store();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await keys.resolveSubjects(['a']);
    const first = keys.cachedForSubject('a')!;
    keys.clearCache();
    await keys.resolveSubjects(['a']);
    expect(store.calls).to.deep.equal(['findBySubjects a', 'put a', 'findBySubjects a']);
    expect(keys.cachedForSubject('a')!.keyId).to.equal(first.keyId);
  });

  it('trusts a cached key, and a key id known gone, until exactly cacheTtlMs after it learnt them', async () => {
    await onClock(async (clock) => {
      const store = new Store();
      const keys = new SubjectKeys({ keyring: keyring(), store, cacheTtlMs: 1000 });
      const gone = 'g'.repeat(22);
      await keys.resolveSubjects(['a']);
      const id = keys.cachedForSubject('a')!.keyId;
      await keys.resolveIds([gone]);
      clock.now += 1000;
      expect(keys.cachedForSubject('a')?.keyId).to.equal(id);
      expect(keys.cachedById(id)?.keyId).to.equal(id);
      expect(keys.cachedById(gone)).to.equal(null);
      clock.now += 1;
      expect(keys.cachedById(id)).to.equal(undefined);
      expect(keys.cachedById(gone)).to.equal(undefined);
      expect(keys.cachedForSubject('a')).to.equal(undefined);
    });
  });

  it('never remembers as gone a key the store holds, whatever order the ids were asked in', async () => {
    const store = new Store();
    const ring = keyring();
    const ids = await storedKeys(store, ring, ['a', 'b', 'c']);
    const keys = new SubjectKeys({ keyring: ring, store, cacheSize: 2 });
    await keys.resolveIds([...ids].reverse());
    // a's key was cached, then pushed out by c's: unknown, not gone.
    expect(ids.map((id) => keys.cachedById(id)?.keyId ?? keys.cachedById(id))).to.deep.equal([undefined, ids[1], ids[2]]);
  });

  it('keeps a subject\'s key for new values when another key of it, cached by id, is pushed out', async () => {
    const store = new Store();
    const ring = keyring();
    const maker = new SubjectKeys({ keyring: ring, store: store.inner });
    await maker.resolveSubjects(['s', 'x']);
    const [older] = await store.inner.findBySubjects(['s']);
    // A second key of s, made by a process that raced this one: s encrypts under the older.
    const elsewhere = new MemorySubjectKeyStore();
    await new SubjectKeys({ keyring: ring, store: elsewhere }).resolveSubjects(['s']);
    const [newer] = await elsewhere.findBySubjects(['s']);
    await store.inner.put([{ ...newer!, createdAt: older!.createdAt + 1 }]);
    const [x] = await store.inner.findBySubjects(['x']);
    const keys = new SubjectKeys({ keyring: ring, store, cacheSize: 2 });
    await keys.resolveIds([newer!.keyId]);
    await keys.resolveSubjects(['s']);
    expect(keys.cachedForSubject('s')!.keyId).to.equal(older!.keyId);
    await keys.resolveIds([x!.keyId]);
    expect(keys.cachedById(newer!.keyId), 'pushed out').to.equal(undefined);
    expect(keys.cachedForSubject('s')?.keyId).to.equal(older!.keyId);
  });

  it('bounds the keys cached by subject by cacheSize even when a lookup by id caches the same key meanwhile', async () => {
    const store = new Store();
    const ring = keyring();
    const [a] = await storedKeys(store, ring, ['a']);
    const keys = new SubjectKeys({ keyring: ring, store, cacheSize: 2 });
    let release!: () => void;
    store.hold = new Promise<void>((resolve) => (release = resolve));
    const byId = keys.resolveIds([a!]);
    await keys.resolveSubjects(['a']);
    release();
    await byId;
    expect(keys.cachedForSubject('a')?.keyId).to.equal(a);
    expect(keys.cachedById(a!)?.keyId).to.equal(a);
    await keys.resolveSubjects(['b']);
    await keys.resolveSubjects(['c']);
    expect(['a', 'b', 'c'].map((s) => keys.cachedForSubject(s)?.subject)).to.deep.equal([undefined, 'b', 'c']);
  });

  it('keeps a key cached by id when the same key cached for its subject expires first', async () => {
    await onClock(async (clock) => {
      const store = new Store();
      const ring = keyring();
      const [a] = await storedKeys(store, ring, ['a']);
      const keys = new SubjectKeys({ keyring: ring, store, cacheTtlMs: 1000 });
      let release!: () => void;
      store.hold = new Promise<void>((resolve) => (release = resolve));
      const byId = keys.resolveIds([a!]);
      await keys.resolveSubjects(['a']);
      clock.now += 10;
      release();
      await byId;
      clock.now += 995;
      expect(keys.cachedForSubject('a'), 'expired').to.equal(undefined);
      expect(keys.cachedById(a!)?.keyId).to.equal(a);
    });
  });

  it('derives pseudonyms as HMAC-SHA256 of the subject under HKDF-SHA256(data key, salt "tributary/pseudonym/v1", no info)', async () => {
    const keys = new SubjectKeys({ keyring: keyring(), store: new MemorySubjectKeyStore() });
    await keys.resolveSubjects(['customer-42']);
    const key = keys.cachedForSubject('customer-42')!;
    const macKey = Buffer.from(hkdfSync('sha256', key.key.export(), 'tributary/pseudonym/v1', Buffer.alloc(0), 32));
    expect(key.pseudonym).to.equal(`p1:${createHmac('sha256', macKey).update('customer-42').digest('base64url')}`);
  });
});
