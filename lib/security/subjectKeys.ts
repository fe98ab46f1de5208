import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { ConfigError, TributaryError } from '../errors';
import { positiveInteger } from '../options';
import { Keyring } from './keyring';
import { retry, type RetryOptions } from '../retry';

/** One data key of a data subject as it is stored: wrapped, never in plaintext. */
export interface SubjectKeyRecord {
  /** The data subject (a customer token, an account id). */
  subject: string;
  /** Written into every ciphertext made with this key: 22 letters, digits, `_` and `-`. */
  keyId: string;
  /** Id of the keyring key that wrapped it. */
  masterKeyId: string;
  /** base64(iv ‖ AES-256-GCM(data key) ‖ tag), bound to the subject and key id. */
  wrapped: string;
  /** Epoch milliseconds. */
  createdAt: number;
}

/**
 * Where wrapped subject keys live, durably. Erasure is `delete`: once it resolves the key
 * must not be readable through the store any more. Implement it over ClickHouse
 * (`clickHouseSubjectKeyStore`), a database or a KMS.
 */
export interface SubjectKeyStore {
  /** Every key of these subjects. */
  findBySubjects(subjects: readonly string[]): Promise<SubjectKeyRecord[]>;
  /** The keys with these ids that still exist. */
  findByIds(keyIds: readonly string[]): Promise<SubjectKeyRecord[]>;
  /** Stores new keys; durable when it resolves. */
  put(records: readonly SubjectKeyRecord[]): Promise<void>;
  /** Deletes every key of `subject`; resolves with how many there were. */
  delete(subject: string): Promise<number>;
}

/** Subject keys in this process only: for tests and single-process demos, never for data that outlives it. */
export class MemorySubjectKeyStore implements SubjectKeyStore {
  readonly #bySubject = new Map<string, SubjectKeyRecord[]>();

  async findBySubjects(subjects: readonly string[]): Promise<SubjectKeyRecord[]> {
    return subjects.flatMap((subject) => this.#bySubject.get(subject) ?? []);
  }

  async findByIds(keyIds: readonly string[]): Promise<SubjectKeyRecord[]> {
    const wanted = new Set(keyIds);
    return [...this.#bySubject.values()].flat().filter((record) => wanted.has(record.keyId));
  }

  async put(records: readonly SubjectKeyRecord[]): Promise<void> {
    for (const record of records) {
      const list = this.#bySubject.get(record.subject) ?? [];
      list.push({ ...record });
      this.#bySubject.set(record.subject, list);
    }
  }

  async delete(subject: string): Promise<number> {
    const count = this.#bySubject.get(subject)?.length ?? 0;
    this.#bySubject.delete(subject);
    return count;
  }
}

export interface SubjectKeysOptions {
  /** Its primary key wraps new subject keys; any of its keys unwraps the key it wrapped. */
  keyring: Keyring;
  store: SubjectKeyStore;
  /** Unwrapped keys kept in memory, by subject and by key id. @default 100000 */
  cacheSize?: number;
  /**
   * How long an unwrapped key (or the news that a key id is gone) is trusted before the
   * store is asked again. Bounds how long another process goes on using a key erased
   * elsewhere. @default 60000
   */
  cacheTtlMs?: number;
  /** Retries of store calls that fail with a retriable error. @default { retries: 5 } */
  retry?: RetryOptions;
}

/** An unwrapped data key, ready for the cipher. */
export interface SubjectKey {
  readonly subject: string;
  readonly keyId: string;
  readonly key: KeyObject;
  /** `sv1:<keyId>:`, the start of every ciphertext made with it. */
  readonly prefix: string;
  /** The subject's pseudonym under this key: see {@link SubjectKeys.pseudonymOf}. */
  readonly pseudonym: string;
  expires: number;
}

const KEY_ID = /^[A-Za-z0-9_-]{22}$/;

/**
 * One random data key per data subject, wrapped by the keyring's primary key and kept in
 * a {@link SubjectKeyStore}. Deleting a subject's keys (`erase`) makes every value
 * encrypted under them unreadable wherever it was copied: crypto-shredding.
 *
 * Keys are random, never derived: a derived key could be derived again after erasure.
 * A new subject's key is stored durably before anything is encrypted with it. Unwrapped
 * keys are cached (bounded, with a time to live) so encryption stays synchronous on the
 * hot path; lookups of keys not cached are made for many records at once.
 *
 * ## Example
 * ```ts
 * import { Keyring, SubjectKeys, clickHouseSubjectKeyStore, embeddedClickHouse } from 'tributary';
 * const subjectKeys = new SubjectKeys({ keyring: Keyring.fromEnv(), store: clickHouseSubjectKeyStore({ client: embeddedClickHouse() }) });
 * ```
 */
export class SubjectKeys {
  readonly keyring: Keyring;
  readonly store: SubjectKeyStore;
  readonly #cacheSize: number;
  readonly #ttlMs: number;
  readonly #retry: RetryOptions;
  readonly #bySubject = new Map<string, SubjectKey>();
  readonly #byId = new Map<string, SubjectKey>();
  /** Subjects being looked up or created right now. */
  readonly #resolving = new Map<string, Promise<void>>();
  /** Key ids the store did not have, until when: a shredded key is not asked for per record. */
  readonly #absent = new Map<string, number>();

  constructor(options: SubjectKeysOptions) {
    if (!options || !(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring');
    const store = options.store;
    if (!store || typeof store.findBySubjects !== 'function' || typeof store.findByIds !== 'function' || typeof store.put !== 'function' || typeof store.delete !== 'function') {
      throw new ConfigError('store must be a SubjectKeyStore (findBySubjects, findByIds, put, delete)');
    }
    this.keyring = options.keyring;
    this.store = store;
    this.#cacheSize = positiveInteger(options.cacheSize, 100_000, 'cacheSize');
    this.#ttlMs = options.cacheTtlMs ?? 60_000;
    if (!(this.#ttlMs >= 0) || !Number.isFinite(this.#ttlMs)) throw new ConfigError(`cacheTtlMs must be a finite number >= 0, got ${options.cacheTtlMs}`);
    this.#retry = { retries: 5, maxDelayMs: 2000, ...options.retry };
  }

  /** The cached key a subject's new values are encrypted with, or undefined: then {@link resolveSubjects}. */
  cachedForSubject(subject: string): SubjectKey | undefined {
    const entry = this.#bySubject.get(subject);
    if (entry === undefined) return undefined;
    if (entry.expires < Date.now()) {
      this.#evict(entry);
      return undefined;
    }
    return entry;
  }

  /** The cached key with this id; `null` when the store is known not to have it (erased); undefined when unknown. */
  cachedById(keyId: string): SubjectKey | null | undefined {
    const entry = this.#byId.get(keyId);
    if (entry !== undefined) {
      if (entry.expires >= Date.now()) return entry;
      this.#evict(entry);
      return undefined;
    }
    const absent = this.#absent.get(keyId);
    if (absent === undefined) return undefined;
    if (absent >= Date.now()) return null;
    this.#absent.delete(keyId);
    return undefined;
  }

  /**
   * Makes sure each subject has a cached key: the oldest stored one, or a new one stored
   * durably before this resolves.
   */
  async resolveSubjects(subjects: readonly string[]): Promise<void> {
    const waits: Promise<void>[] = [];
    const wanted: string[] = [];
    for (const subject of new Set(subjects)) {
      if (this.cachedForSubject(subject) !== undefined) continue;
      const pending = this.#resolving.get(subject);
      if (pending) waits.push(pending);
      else wanted.push(subject);
    }
    if (wanted.length > 0) {
      // Concurrent callers asking for the same subject share one lookup: two would make two keys.
      const work = this.#lookUpOrCreate(wanted);
      const settled = work.catch(() => undefined);
      for (const subject of wanted) this.#resolving.set(subject, settled);
      void settled.then(() => {
        for (const subject of wanted) if (this.#resolving.get(subject) === settled) this.#resolving.delete(subject);
      });
      waits.push(work);
    }
    await Promise.all(waits);
  }

  async #lookUpOrCreate(wanted: string[]): Promise<void> {
    const found = await this.#call(() => this.store.findBySubjects(wanted));
    found.sort((a, b) => a.createdAt - b.createdAt || (a.keyId < b.keyId ? -1 : 1));
    const created: SubjectKeyRecord[] = [];
    const keys: { record: SubjectKeyRecord; key: KeyObject }[] = [];
    for (const subject of wanted) {
      const record = found.find((r) => r.subject === subject);
      if (record) {
        keys.push({ record, key: this.#unwrap(record) });
        continue;
      }
      const material = randomBytes(32);
      const fresh = this.#wrap(subject, material);
      created.push(fresh);
      keys.push({ record: fresh, key: createSecretKey(material) });
      material.fill(0);
    }
    // Stored before use: a value must never be encrypted under a key that could be lost.
    if (created.length > 0) await this.#call(() => this.store.put(created));
    for (const { record, key } of keys) this.#cache(record, key, true);
  }

  /** Caches the keys with these ids that the store still holds, and remembers the others as gone. */
  async resolveIds(keyIds: readonly string[]): Promise<void> {
    const wanted = [...new Set(keyIds)].filter((id) => this.cachedById(id) === undefined);
    if (wanted.length === 0) return;
    const found = await this.#call(() => this.store.findByIds(wanted));
    for (const record of found) this.#cache(record, this.#unwrap(record), false);
    // Only what the store lacks is gone: a key found and pushed out of a full cache is not.
    const stored = new Set(found.map((record) => record.keyId));
    const expires = Date.now() + this.#ttlMs;
    for (const id of wanted) {
      if (stored.has(id)) continue;
      if (this.#absent.size >= this.#cacheSize) this.#absent.delete(this.#absent.keys().next().value!);
      this.#absent.set(id, expires);
    }
  }

  /** The stored keys of a subject (wrapped), e.g. to find its pseudonyms before erasure. */
  async keysOf(subject: string): Promise<SubjectKeyRecord[]> {
    return this.#call(() => this.store.findBySubjects([subject]));
  }

  /** The pseudonyms a subject has had: one per stored key. */
  async pseudonymsOf(subject: string): Promise<string[]> {
    return (await this.keysOf(subject)).map((record) => pseudonym(this.#unwrap(record), subject));
  }

  /**
   * Deletes every key of `subject` from the store and from this process's cache: the
   * crypto-shredding step of erasure. Resolves with how many keys there were.
   */
  async shred(subject: string): Promise<number> {
    const deleted = await this.#call(() => this.store.delete(subject));
    const gone = [...this.#byId.values()].filter((entry) => entry.subject === subject);
    const cached = this.#bySubject.get(subject);
    if (cached) gone.push(cached);
    // Gone here at once, whichever map held them: this process does not ask the store for them again.
    for (const entry of gone) {
      this.#evict(entry);
      this.#absent.set(entry.keyId, Date.now() + this.#ttlMs);
    }
    return deleted;
  }

  /** Forgets every unwrapped key held in memory. */
  clearCache(): void {
    this.#bySubject.clear();
    this.#byId.clear();
    this.#absent.clear();
  }

  #cache(record: SubjectKeyRecord, key: KeyObject, forSubject: boolean): void {
    const entry: SubjectKey = { subject: record.subject, keyId: record.keyId, key, prefix: `sv1:${record.keyId}:`, pseudonym: pseudonym(key, record.subject), expires: Date.now() + this.#ttlMs };
    if (this.#byId.size >= this.#cacheSize) this.#evict(this.#byId.values().next().value!);
    this.#byId.set(record.keyId, entry);
    this.#absent.delete(record.keyId);
    if (forSubject) {
      if (this.#bySubject.size >= this.#cacheSize) this.#evict(this.#bySubject.values().next().value!);
      this.#bySubject.set(record.subject, entry);
    }
  }

  #evict(entry: SubjectKey): void {
    if (this.#bySubject.get(entry.subject) === entry) this.#bySubject.delete(entry.subject);
    if (this.#byId.get(entry.keyId) === entry) this.#byId.delete(entry.keyId);
  }

  #wrap(subject: string, material: Buffer): SubjectKeyRecord {
    const keyId = randomBytes(16).toString('base64url');
    const masterKeyId = this.keyring.primaryId;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.keyring.primaryKey(), iv);
    cipher.setAAD(wrapAad(subject, keyId));
    const body = Buffer.concat([cipher.update(material), cipher.final()]);
    return { subject, keyId, masterKeyId, wrapped: Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64'), createdAt: Date.now() };
  }

  #unwrap(record: SubjectKeyRecord): KeyObject {
    const master = this.keyring.key(record.masterKeyId);
    if (!master) throw new TributaryError(`subject key ${record.keyId} is wrapped by key ${record.masterKeyId}, which the keyring does not hold`, { code: 'SUBJECT_KEY_MASTER' });
    if (!KEY_ID.test(record.keyId)) throw new TributaryError(`subject key id ${JSON.stringify(record.keyId.slice(0, 64))} is malformed`, { code: 'SUBJECT_KEY_FORMAT' });
    const sealed = Buffer.from(record.wrapped, 'base64');
    if (sealed.length !== 12 + 32 + 16) throw new TributaryError(`subject key ${record.keyId} is not a wrapped 32-byte key`, { code: 'SUBJECT_KEY_FORMAT' });
    const decipher = createDecipheriv('aes-256-gcm', master, sealed.subarray(0, 12));
    decipher.setAAD(wrapAad(record.subject, record.keyId));
    decipher.setAuthTag(sealed.subarray(44));
    try {
      const material = Buffer.concat([decipher.update(sealed.subarray(12, 44)), decipher.final()]);
      const key = createSecretKey(material);
      material.fill(0);
      return key;
    } catch {
      throw new TributaryError(`subject key ${record.keyId} does not unwrap: altered, or moved to another subject`, { code: 'SUBJECT_KEY_UNWRAP' });
    }
  }

  #call<R>(operation: () => Promise<R>): Promise<R> {
    return retry(() => operation(), this.#retry);
  }
}

/** The key's binding: a wrapped key moved to another subject does not unwrap. */
function wrapAad(subject: string, keyId: string): Buffer {
  return Buffer.from(`tributary/subject-key/v1\0${keyId}\0${subject}`, 'utf8');
}

/**
 * A subject's pseudonym: HMAC-SHA256 of the subject id under a key derived from its data
 * key. Stable while the key lives, so analysts count and join; once the key is shredded
 * nobody can compute it again from the subject id, and a returning subject gets a new one.
 */
function pseudonym(key: KeyObject, subject: string): string {
  const macKey = Buffer.from(hkdfSync('sha256', key.export(), 'tributary/pseudonym/v1', '', 32));
  return `p1:${createHmac('sha256', macKey).update(subject).digest('base64url')}`;
}
