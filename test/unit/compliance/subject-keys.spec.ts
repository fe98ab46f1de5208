import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { from, lastValueFrom, toArray } from 'rxjs';
import { fromIterable } from '../../../connectors/iterable';
import { AccessControl } from '../../../lib/security/access';
import { AuditLog, type AuditRow } from '../../../lib/security/audit';
import { deadLetterProtector } from '../../../lib/security/deadLetterProtector';
import type { Envelope } from '../../../lib/envelope';
import { ClickHouseError, ConfigError, SinkError, TributaryError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySubjectKeyStore, SubjectKeys, type SubjectKeyRecord, type SubjectKeyStore } from '../../../lib/security/subjectKeys';
import { decrypt } from '../../../operators/decrypt';
import { encrypt } from '../../../operators/encrypt';
import { recordOperator } from '../../../operators/recordOperator';
import { MemorySink, Recorder, until } from '../../helpers';

const keyring = () => new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });
const reader = AccessControl.issueKey('reader', ['reader']);
const READ = { access: new AccessControl({ roles: { reader: ['decrypt:*'] }, keys: [reader.record] }), principal: reader.token, purpose: 'tests' };

/** A store that counts calls and can be made to fail. */
class CountingStore implements SubjectKeyStore {
  readonly inner = new MemorySubjectKeyStore();
  calls = { findBySubjects: 0, findByIds: 0, put: 0, delete: 0 };
  failures: Error[] = [];

  #maybeFail(): void {
    const failure = this.failures.shift();
    if (failure) throw failure;
  }

  async findBySubjects(subjects: readonly string[]): Promise<SubjectKeyRecord[]> {
    this.calls.findBySubjects++;
    this.#maybeFail();
    await new Promise((resolve) => setTimeout(resolve, 5));
    return this.inner.findBySubjects(subjects);
  }

  async findByIds(ids: readonly string[]): Promise<SubjectKeyRecord[]> {
    this.calls.findByIds++;
    this.#maybeFail();
    return this.inner.findByIds(ids);
  }

  async put(records: readonly SubjectKeyRecord[]): Promise<void> {
    this.calls.put++;
    this.#maybeFail();
    return this.inner.put(records);
  }

  async delete(subject: string): Promise<number> {
    this.calls.delete++;
    this.#maybeFail();
    return this.inner.delete(subject);
  }
}

const records = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `r${i}`, subject: `s${i % 4}`, email: `user${i}@example.com` }));

async function run<T>(operator: (source: any) => any, values: T[], recorder = new Recorder()) {
  const out: Envelope<T>[] = await lastValueFrom(from(values.map((v) => recorder.envelope(v))).pipe(operator, toArray()));
  return { values: out.map((e) => e.value), recorder };
}

describe('subject keys', () => {
  it('looks keys up for many records at once, keeps record order, and stores a new key before using it', async () => {
    const store = new CountingStore();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    const { values } = await run(encrypt({ keyring: keys.keyring, subjectKeys: keys, subject: 'subject', fields: ['email'], recordId: 'id' }), records(100));
    expect(values.map((v) => v.id)).to.deep.equal(records(100).map((r) => r.id));
    expect(store.calls.findBySubjects, 'one lookup for the first record, one for all held behind it').to.be.at.most(2);
    expect(store.calls.put).to.equal(store.calls.findBySubjects);
    expect(await store.inner.findBySubjects(['s0', 's1', 's2', 's3'])).to.have.length(4);
    for (const v of values) expect(v.email).to.match(/^sv1:[A-Za-z0-9_-]{22}:/);
    const keyOf = (v: { email: string }) => v.email.split(':')[1];
    expect(new Set(values.filter((v) => v.subject === 's0').map(keyOf)).size).to.equal(1);
    expect(new Set(values.map(keyOf)).size).to.equal(4);
    // A second process reads the same keys from the store.
    const other = new SubjectKeys({ keyring: keys.keyring, store });
    const back = await run(decrypt({ keyring: keys.keyring, subjectKeys: other, fields: ['email'], recordId: 'id', ...READ }), values);
    expect(back.values).to.deep.equal(records(100));
  });

  it('makes one key per subject even when asked concurrently', async () => {
    const store = new CountingStore();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await Promise.all([keys.resolveSubjects(['a', 'b']), keys.resolveSubjects(['b', 'a']), keys.resolveSubjects(['a'])]);
    expect((await store.inner.findBySubjects(['a', 'b'])).map((r) => r.subject).sort()).to.deep.equal(['a', 'b']);
  });

  it('bounds the cache and forgets keys after their time to live', async () => {
    const store = new CountingStore();
    const keys = new SubjectKeys({ keyring: keyring(), store, cacheSize: 2, cacheTtlMs: 30 });
    await keys.resolveSubjects(['a', 'b', 'c']);
    expect(['a', 'b', 'c'].filter((s) => keys.cachedForSubject(s))).to.have.length(2);
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(['a', 'b', 'c'].filter((s) => keys.cachedForSubject(s))).to.deep.equal([]);
    await keys.resolveSubjects(['a']);
    expect((await store.inner.findBySubjects(['a'])).length, 'an expired key is read again, not replaced').to.equal(1);
  });

  it('retries a store that fails retriably, and errors the stream (nothing encrypted) when it stays down', async () => {
    const store = new CountingStore();
    const keys = new SubjectKeys({ keyring: keyring(), store, retry: { retries: 2, initialDelayMs: 1, maxDelayMs: 2 } });
    store.failures.push(new ClickHouseError('timeout', 159, { retriable: true }));
    const ok = await run(encrypt({ keyring: keys.keyring, subjectKeys: keys, subject: 'subject', fields: ['email'], recordId: 'id' }), records(3));
    expect(ok.values).to.have.length(3);
    const down = new CountingStore();
    const broken = new SubjectKeys({ keyring: keys.keyring, store: down, retry: { retries: 2, initialDelayMs: 1, maxDelayMs: 2 } });
    for (let i = 0; i < 3; i++) down.failures.push(new ClickHouseError('connection refused', undefined, { retriable: true }));
    const seen: unknown[] = [];
    const error = await lastValueFrom(from(records(3).map((v) => new Recorder().envelope(v))).pipe(encrypt({ keyring: keys.keyring, subjectKeys: broken, subject: 'subject', fields: ['email'], recordId: 'id' }), toArray())).then(
      (values) => seen.push(...values),
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(ClickHouseError);
    expect(seen).to.deep.equal([]);
    expect(down.calls.findBySubjects).to.equal(3);
    expect(await down.inner.findBySubjects(['s0', 's1', 's2'])).to.deep.equal([]);
  });

  it('dead-letters a record without a subject with its fields redacted, and shreds: erased keys do not decrypt, others do', async () => {
    const store = new CountingStore();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    const input = [...records(8), { id: 'x', email: 'nobody@example.com' }];
    const { values, recorder } = await run(encrypt({ keyring: keys.keyring, subjectKeys: keys, subject: 'subject', fields: ['email'], recordId: 'id' }), input);
    expect(recorder.rejected.map((r) => [r.failure.code, r.envelope.raw])).to.deep.equal([['ENCRYPT_SUBJECT', '{"id":"x","email":"[redacted]"}']]);
    expect(await keys.shred('s1')).to.equal(1);
    expect(await keys.shred('s1')).to.equal(0);
    const fresh = new SubjectKeys({ keyring: keys.keyring, store });
    for (const k of [keys, fresh]) {
      const back = await run(decrypt({ keyring: k.keyring, subjectKeys: k, fields: ['email'], recordId: 'id', ...READ }), structuredClone(values));
      expect(back.values.map((v) => v.id)).to.deep.equal(['r0', 'r2', 'r3', 'r4', 'r6', 'r7']);
      expect(back.recorder.rejected.map((r) => [r.failure.code, (r.envelope.value as { email: string }).email.startsWith('sv1:')])).to.deep.equal([
        ['DECRYPT_ERASED', true],
        ['DECRYPT_ERASED', true],
      ]);
    }
    const lookups = store.calls.findByIds;
    await run(decrypt({ keyring: keys.keyring, subjectKeys: fresh, fields: ['email'], recordId: 'id', ...READ }), structuredClone(values));
    expect(store.calls.findByIds, 'a key known to be gone is not asked for again').to.equal(lookups);
  });

  it('refuses a wrapped key moved to another subject, and bad options with the rule', async () => {
    const store = new MemorySubjectKeyStore();
    const keys = new SubjectKeys({ keyring: keyring(), store });
    await keys.resolveSubjects(['a']);
    const [record] = await store.findBySubjects(['a']);
    await store.put([{ ...record!, subject: 'b' }]);
    const other = new SubjectKeys({ keyring: keys.keyring, store });
    await other.resolveSubjects(['b']).then(
      () => expect.fail('a moved key must not unwrap'),
      (e: TributaryError) => expect(e.code).to.equal('SUBJECT_KEY_UNWRAP'),
    );
    expect(() => new SubjectKeys({ keyring: keys.keyring, store: {} as SubjectKeyStore })).to.throw(ConfigError, /findBySubjects, findByIds, put, delete/);
    expect(() => new SubjectKeys({ keyring: keys.keyring, store, cacheSize: 0 })).to.throw(ConfigError, 'cacheSize must be an integer >= 1, got 0');
    expect(() => encrypt({ keyring: keys.keyring, subjectKeys: keys, subject: 'email', fields: ['email'], recordId: 'id' })).to.throw(ConfigError, /among the encrypted fields/);
    expect(() => encrypt({ keyring: keys.keyring, subjectKeys: keys, fields: ['email'], recordId: 'id' })).to.throw(ConfigError, /subject must be the path/);
    expect(() => encrypt({ keyring: keys.keyring, subject: 'subject', fields: ['email'], recordId: 'id' })).to.throw(ConfigError, 'subject and pseudonymize need subjectKeys');
    expect(() => encrypt({ keyring: keys.keyring, subjectKeys: keys, subject: 'subject', pseudonymize: 'yes' as never, fields: ['email'], recordId: 'id' })).to.throw(ConfigError, 'pseudonymize must be true or false, got "yes"');
    expect(() => decrypt({ keyring: keys.keyring, fields: ['email'], recordId: 'id', ...READ, purpose: ' ' })).to.throw(ConfigError, /purpose must say why/);
  });
});

describe('audit log', () => {
  it('writes every event once through batches, waits out a sink that is down, and flush() resolves only when durable', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    let failures = 3;
    sink.gate = async () => {
      if (failures-- > 0) throw new SinkError('audit table unreachable', { retriable: true });
    };
    const audit = new AuditLog({ sink, batch: { rows: 10, maxWaitMs: 5 }, retry: { initialDelayMs: 1, maxDelayMs: 5 }, breaker: { resetTimeoutMs: 50 } });
    for (let i = 0; i < 25; i++) audit.record({ type: 'decrypt', actor: 'k1', purpose: 'p', target: `r${i}`, outcome: 'ok', details: { fields: ['email'] } });
    let flushed = false;
    const flush = audit.flush().then(() => (flushed = true));
    await until(() => sink.writes.length >= 1, 2000, 'a first write');
    await flush;
    expect(flushed).to.equal(true);
    expect(sink.rows.map((r) => r.target)).to.deep.equal(Array.from({ length: 25 }, (_, i) => `r${i}`));
    expect(sink.writes.some((w) => w.attempt > 1), 'the failed writes were retried').to.equal(true);
    expect(new Set(sink.rows.map((r) => r.id)).size).to.equal(25);
    expect(sink.rows[0]).to.deep.include({ type: 'decrypt', actor: 'k1', purpose: 'p', outcome: 'ok', details: '{"fields":["email"]}' });
    await audit.close();
    await audit.close();
    expect(() => audit.record({ type: 'x', actor: 'a', outcome: 'ok' })).to.throw(TributaryError, 'audit log is closed');
  });

  it('fails loudly rather than drop a row the sink refuses as malformed', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.gate = async () => {
      throw new SinkError('Cannot parse input', { rowsAtFault: true });
    };
    const audit = new AuditLog({ sink, batch: { rows: 1, maxWaitMs: 1 } });
    audit.record({ type: 'erasure.request', actor: 'dpo', outcome: 'requested' });
    const error = await audit.flush().then(() => undefined, (e: Error) => e);
    expect(error?.message).to.match(/audit sink refused 1 row/);
    expect(() => audit.record({ type: 'x', actor: 'a', outcome: 'ok' })).to.throw(TributaryError, /audit log failed/);
  });
});

describe('dead-letter protection', () => {
  const letterOf = async (options: { protect: Parameters<typeof deadLetterProtector>[0] | ((letter: DeadLetter) => never); input: unknown[]; transform: any }) => {
    const sink = new MemorySink<unknown>('sink');
    const deadLetters = new MemorySink<DeadLetter>('dead');
    const protect = typeof options.protect === 'function' ? options.protect : deadLetterProtector(options.protect);
    const pipeline = new Pipeline({ source: fromIterable(options.input.map((v) => JSON.stringify(v))), transform: options.transform, sink, deadLetters, protectDeadLetter: protect, batch: { rows: 5, maxWaitMs: 5 } });
    const stats = await pipeline.run().catch((e: Error) => e);
    return { stats, letters: deadLetters.rows };
  };
  const parseThenRefuse = (refuse: (v: any) => boolean) =>
    (source: any) =>
      source.pipe(
        recordOperator('parse', (text: string) => JSON.parse(text)),
        recordOperator('validate', (v: any) => {
          if (refuse(v)) throw new TributaryError(`expected an integer, got ${JSON.stringify(v.email)}`, { code: 'VALIDATION' });
          return v;
        }),
      );

  it('seals payload and message of a letter whose subject is unknown under the keyring, readable only with decrypt', async () => {
    const ring = keyring();
    const { letters } = await letterOf({ protect: { keyring: ring }, input: [{ id: 'a', email: 'ada@example.com' }, { id: 'b', email: 'ok' }], transform: parseThenRefuse((v) => v.id === 'a') });
    expect(letters).to.have.length(1);
    expect(JSON.stringify(letters)).not.to.contain('ada@example.com');
    expect(letters[0]).to.deep.include({ stage: 'validate', code: 'VALIDATION', raw_encoding: 'encrypted:utf8' });
    expect(letters[0]!.raw).to.match(/^v1:m1:/);
    const back = await run(decrypt({ keyring: ring, fields: ['raw', 'message'], recordId: 'position', ...READ }), letters);
    expect(JSON.parse(back.values[0]!.raw)).to.deep.equal({ id: 'a', email: 'ada@example.com' });
    expect(back.values[0]!.message).to.contain('ada@example.com');
  });

  it('seals under the subject key when the subject is known, so shredding it shreds the letter', async () => {
    const keys = new SubjectKeys({ keyring: keyring(), store: new MemorySubjectKeyStore() });
    const { letters } = await letterOf({
      protect: { keyring: keys.keyring, subjectKeys: keys, subjectOf: (v: any) => v?.email },
      input: [{ id: 'a', email: 'ada@example.com' }, { id: 'b', email: 'bo@example.com' }, 'not json'],
      transform: parseThenRefuse(() => true),
    });
    letters.sort((a, b) => (a.position < b.position ? -1 : 1));
    expect(letters.map((l) => l.raw.slice(0, 4))).to.deep.equal(['sv1:', 'sv1:', 'v1:m']);
    await keys.shred('ada@example.com');
    const back = await run(decrypt({ keyring: keys.keyring, subjectKeys: keys, fields: ['raw', 'message'], recordId: 'position', ...READ }), letters);
    expect(back.recorder.rejected.map((r) => r.failure.code)).to.deep.equal(['DECRYPT_ERASED']);
    expect(back.values.map((l) => l.raw)).to.deep.equal(['{"id":"b","email":"bo@example.com"}', '"not json"']);
  });

  it('nacks a record whose letter cannot be protected instead of storing it in plaintext', async () => {
    const { stats, letters } = await letterOf({
      protect: () => {
        throw new Error('KMS unreachable');
      },
      input: [{ id: 'a', email: 'ada@example.com' }],
      transform: parseThenRefuse(() => true),
    });
    expect(letters).to.deep.equal([]);
    expect(stats).to.deep.include({ deadLettered: 0, nacked: 1 });
  });

  it('reports pipeline starts and stops with the configuration', async () => {
    const events: unknown[] = [];
    await new Pipeline({ name: 'p', source: fromIterable([1, 2]), sink: new MemorySink('s'), deadLetters: new MemorySink('d'), onLifecycle: (e) => events.push(e) }).run();
    expect(events).to.have.length(2);
    expect(events[0]).to.deep.include({ type: 'start', pipeline: 'p' });
    expect((events[0] as { details: Record<string, unknown> }).details).to.deep.include({ source: 'iterable', sink: 's', deadLetters: 'd', protectedDeadLetters: false });
    expect(events[1]).to.deep.include({ type: 'stop', pipeline: 'p' });
    expect((events[1] as { details: Record<string, unknown> }).details).to.deep.include({ read: 2, written: 2 });
  });
});
