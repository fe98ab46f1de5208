import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { ConfigError, TributaryError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { MemorySubjectKeyStore, SubjectKeys, type SubjectKeyRecord, type SubjectKeyStore } from '../../../lib/security/subjectKeys';

const keyring = (id = 'm1') => new Keyring({ keys: [{ id, key: randomBytes(32) }] });

/** A store whose calls are counted. */
class Counted implements SubjectKeyStore {
  readonly inner = new MemorySubjectKeyStore();
  readonly calls: string[] = [];
  findBySubjects(subjects: readonly string[]) {
    this.calls.push(`findBySubjects ${subjects.join(',')}`);
    return this.inner.findBySubjects(subjects);
  }
  findByIds(ids: readonly string[]) {
    this.calls.push(`findByIds ${ids.join(',')}`);
    return this.inner.findByIds(ids);
  }
  put(records: readonly SubjectKeyRecord[]) {
    this.calls.push(`put ${records.map((r) => r.subject).join(',')}`);
    return this.inner.put(records);
  }
  delete(subject: string) {
    this.calls.push(`delete ${subject}`);
    return this.inner.delete(subject);
  }
}

async function rejection(promise: Promise<unknown>): Promise<TributaryError> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (e: TributaryError) => e,
  );
}

describe('subject keys, in detail', () => {
  it('keeps what a memory store is given apart from the caller, finds by subject and id, and deletes a subject whole', async () => {
    const store = new MemorySubjectKeyStore();
    const record = { subject: 'a', keyId: 'k'.repeat(22), masterKeyId: 'm1', wrapped: 'w', createdAt: 1 };
    await store.put([record, { ...record, keyId: 'j'.repeat(22) }, { ...record, subject: 'b', keyId: 'b'.repeat(22) }]);
    record.wrapped = 'changed';
    expect((await store.findBySubjects(['a'])).map((r) => [r.keyId[0], r.wrapped])).to.deep.equal([
      ['k', 'w'],
      ['j', 'w'],
    ]);
    expect((await store.findByIds(['b'.repeat(22), 'x'.repeat(22)])).map((r) => r.subject)).to.deep.equal(['b']);
    expect(await store.findBySubjects(['nobody'])).to.deep.equal([]);
    expect(await store.delete('a')).to.equal(2);
    expect(await store.delete('a')).to.equal(0);
    expect(await store.findBySubjects(['a', 'b'])).to.have.length(1);
  });

  it('uses the oldest stored key of a subject, wrapped by the primary key, with a 22-character id and the sv1 prefix', async () => {
    const store = new Counted();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await keys.resolveSubjects(['a', 'a']);
    expect(store.calls).to.deep.equal(['findBySubjects a', 'put a']);
    const [stored] = await store.inner.findBySubjects(['a']);
    expect(stored!.masterKeyId).to.equal('m1');
    expect(stored!.keyId).to.match(/^[A-Za-z0-9_-]{22}$/);
    expect(Buffer.from(stored!.wrapped, 'base64')).to.have.length(60);
    const key = keys.cachedForSubject('a')!;
    expect(key).to.deep.include({ subject: 'a', keyId: stored!.keyId, prefix: `sv1:${stored!.keyId}:` });
    expect(key.pseudonym).to.match(/^p1:[A-Za-z0-9_-]{43}$/);
    expect(keys.cachedById(stored!.keyId)).to.equal(key);
    // Keys of the same subject made by two processes that raced: the oldest wins, then the lowest id, whatever the store's order.
    const elsewhere = new MemorySubjectKeyStore();
    await new SubjectKeys({ keyring: keys.keyring, store: elsewhere }).resolveSubjects(['a']);
    const [second] = await elsewhere.findBySubjects(['a']);
    const winner = (records: SubjectKeyRecord[]) => {
      const both = new MemorySubjectKeyStore();
      void both.put(records);
      const reader = new SubjectKeys({ keyring: keys.keyring, store: both });
      return reader.resolveSubjects(['a']).then(() => reader.cachedForSubject('a')!.keyId);
    };
    const older = { ...second!, createdAt: stored!.createdAt - 1 };
    expect(await winner([stored!, older])).to.equal(second!.keyId);
    expect(await winner([older, stored!])).to.equal(second!.keyId);
    const tied = { ...second!, createdAt: stored!.createdAt };
    const lowest = stored!.keyId < second!.keyId ? stored!.keyId : second!.keyId;
    expect(await winner([stored!, tied])).to.equal(lowest);
    expect(await winner([tied, stored!])).to.equal(lowest);
    await store.inner.put([second!]);
    expect(await keys.keysOf('a')).to.have.length(2);
    const other = new SubjectKeys({ keyring: keys.keyring, store: store.inner });
    await other.resolveIds([second!.keyId]);
    expect(await keys.pseudonymsOf('a')).to.deep.equal([key.pseudonym, other.cachedById(second!.keyId)!.pseudonym]);
    expect(key.pseudonym).to.not.equal(other.cachedById(second!.keyId)!.pseudonym);
  });

  it('looks up only ids not cached, caches those found, and remembers the others as gone until their time to live ends', async () => {
    const store = new Counted();
    const keys = new SubjectKeys({ keyring: keyring(), store, cacheTtlMs: 40 });
    await keys.resolveSubjects(['a']);
    const id = keys.cachedForSubject('a')!.keyId;
    const other = new SubjectKeys({ keyring: keys.keyring, store, cacheTtlMs: 40 });
    const gone = 'g'.repeat(22);
    expect(other.cachedById(id)).to.equal(undefined);
    store.calls.length = 0;
    await other.resolveIds([id, gone, id]);
    expect(store.calls).to.deep.equal([`findByIds ${id},${gone}`]);
    expect(other.cachedById(id)!.subject).to.equal('a');
    expect(other.cachedForSubject('a'), 'a key found by id does not encrypt new values').to.equal(undefined);
    expect(other.cachedById(gone)).to.equal(null);
    await other.resolveIds([id, gone]);
    expect(store.calls).to.have.length(1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(other.cachedById(gone)).to.equal(undefined);
    expect(other.cachedById(id)).to.equal(undefined);
    await other.resolveIds([gone]);
    expect(store.calls).to.have.length(2);
    other.clearCache();
    expect(other.cachedById(gone)).to.equal(undefined);
  });

  it('bounds the ids remembered as gone by cacheSize', async () => {
    const keys = new SubjectKeys({ keyring: keyring(), store: new MemorySubjectKeyStore(), cacheSize: 2 });
    const ids = ['a', 'b', 'c'].map((c) => c.repeat(22));
    await keys.resolveIds(ids);
    expect(ids.map((id) => keys.cachedById(id))).to.deep.equal([undefined, null, null]);
  });

  it('bounds keys cached by id by cacheSize, oldest out first, never taking a key pushed out for one the store lacks', async () => {
    const store = new MemorySubjectKeyStore();
    const maker = new SubjectKeys({ keyring: keyring(), store });
    await maker.resolveSubjects(['a', 'b', 'c']);
    const ids = (await store.findBySubjects(['a', 'b', 'c'])).map((r) => r.keyId);
    const keys = new SubjectKeys({ keyring: maker.keyring, store, cacheSize: 2 });
    await keys.resolveIds(ids);
    expect(ids.map((id) => (keys.cachedById(id) === undefined ? 'unknown' : keys.cachedById(id) === null ? 'gone' : 'cached'))).to.deep.equal(['unknown', 'cached', 'cached']);
  });

  it('shreds a subject: its keys leave the store and the cache, and its ids read as gone', async () => {
    const store = new MemorySubjectKeyStore();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await keys.resolveSubjects(['a', 'b']);
    const a = keys.cachedForSubject('a')!;
    const b = keys.cachedForSubject('b')!;
    // Another process holds a's key by id only (it decrypted with it).
    const reader = new SubjectKeys({ keyring: keys.keyring, store });
    await reader.resolveIds([a.keyId, b.keyId]);
    expect(await keys.shred('a')).to.equal(1);
    expect(keys.cachedForSubject('a')).to.equal(undefined);
    expect(keys.cachedById(a.keyId), 'the shredding process knows at once too').to.equal(null);
    await keys.resolveIds([a.keyId]);
    expect(keys.cachedById(a.keyId)).to.equal(null);
    expect(await reader.shred('a')).to.equal(0);
    expect(reader.cachedById(a.keyId), 'gone at once, without asking the store').to.equal(null);
    expect(reader.cachedById(b.keyId)!.subject).to.equal('b');
    expect(keys.cachedForSubject('b')).to.equal(b);
    expect(keys.cachedById(b.keyId)).to.equal(b);
    expect(await store.findBySubjects(['a'])).to.deep.equal([]);
    expect(await keys.shred('nobody')).to.equal(0);
    keys.clearCache();
    expect(keys.cachedForSubject('b')).to.equal(undefined);
    expect(keys.cachedById(b.keyId)).to.equal(undefined);
    expect(keys.cachedById(a.keyId)).to.equal(undefined);
  });

  it('refuses a stored key wrapped by a key the keyring lacks, a malformed id or wrapping, with the reason', async () => {
    const store = new MemorySubjectKeyStore();
    const keys = new SubjectKeys({ keyring: keyring('m1'), store });
    await keys.resolveSubjects(['a']);
    const [record] = await store.findBySubjects(['a']);
    const reading = (altered: Partial<SubjectKeyRecord>) => {
      const altStore = new MemorySubjectKeyStore();
      void altStore.put([{ ...record!, ...altered }]);
      return rejection(new SubjectKeys({ keyring: keys.keyring, store: altStore }).resolveSubjects(['a']));
    };
    const master = await reading({ masterKeyId: 'm9' });
    expect([master.code, master.message]).to.deep.equal(['SUBJECT_KEY_MASTER', `subject key ${record!.keyId} is wrapped by key m9, which the keyring does not hold`]);
    const id = await reading({ keyId: 'short' });
    expect([id.code, id.message]).to.deep.equal(['SUBJECT_KEY_FORMAT', 'subject key id "short" is malformed']);
    const long = await reading({ keyId: 'x'.repeat(100) });
    expect(long.message).to.equal(`subject key id ${JSON.stringify('x'.repeat(64))} is malformed`);
    const wrapped = await reading({ wrapped: Buffer.alloc(59).toString('base64') });
    expect([wrapped.code, wrapped.message]).to.deep.equal(['SUBJECT_KEY_FORMAT', `subject key ${record!.keyId} is not a wrapped 32-byte key`]);
    const tampered = Buffer.from(record!.wrapped, 'base64');
    tampered[20]! ^= 1;
    const altered = await reading({ wrapped: tampered.toString('base64') });
    expect([altered.code, altered.message]).to.deep.equal(['SUBJECT_KEY_UNWRAP', `subject key ${record!.keyId} does not unwrap: altered, or moved to another subject`]);
    const renamed = await reading({ keyId: 'r'.repeat(22) });
    expect(renamed.code, 'the id is bound too').to.equal('SUBJECT_KEY_UNWRAP');
    // A rotated keyring still unwraps the keys its older key wrapped, and wraps new ones with the new primary.
    keys.keyring.rotate({ id: 'm2', key: randomBytes(32) });
    const later = new SubjectKeys({ keyring: keys.keyring, store });
    await later.resolveSubjects(['a', 'b']);
    expect((await store.findBySubjects(['b']))[0]!.masterKeyId).to.equal('m2');
  });

  it('refuses bad options with the rule', () => {
    const store = new MemorySubjectKeyStore();
    expect(() => new SubjectKeys(undefined as never)).to.throw(ConfigError, 'keyring must be a Keyring');
    expect(() => new SubjectKeys({ keyring: {} as Keyring, store })).to.throw(ConfigError, 'keyring must be a Keyring');
    for (const bad of [undefined, { ...store, findBySubjects: undefined }, { findBySubjects() {}, findByIds() {}, put() {} }, { findBySubjects() {}, findByIds() {}, delete() {} }, { findBySubjects() {}, put() {}, delete() {} }]) {
      expect(() => new SubjectKeys({ keyring: keyring(), store: bad as never })).to.throw(ConfigError, 'store must be a SubjectKeyStore (findBySubjects, findByIds, put, delete)');
    }
    for (const ttl of [-1, NaN, Infinity]) {
      expect(() => new SubjectKeys({ keyring: keyring(), store, cacheTtlMs: ttl }), String(ttl)).to.throw(ConfigError, `cacheTtlMs must be a finite number >= 0, got ${ttl}`);
    }
    expect(() => new SubjectKeys({ keyring: keyring(), store, cacheTtlMs: 0 })).to.not.throw();
  });

  it('retries a failing store five times by default', async () => {
    let calls = 0;
    const store: SubjectKeyStore = {
      ...new MemorySubjectKeyStore(),
      findBySubjects: async () => {
        calls++;
        throw new TributaryError('down', { retriable: true });
      },
      findByIds: async () => [],
      put: async () => undefined,
      delete: async () => 0,
    };
    const keys = new SubjectKeys({ keyring: keyring(), store, retry: { initialDelayMs: 1, maxDelayMs: 1 } });
    expect((await rejection(keys.resolveSubjects(['a']))).message).to.equal('down');
    expect(calls).to.equal(6);
  });
});
