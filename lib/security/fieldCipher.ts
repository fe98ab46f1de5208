import { createCipheriv, createDecipheriv, randomFillSync, type KeyObject } from 'node:crypto';
import { ConfigError, TributaryError } from '../errors';
import type { Keyring } from './keyring';
import type { SubjectKeys } from './subjectKeys';

/**
 * AES-256-GCM of single field values: the machinery shared by `encrypt` and `decrypt`.
 *
 * Ciphertext text: `v1:<keyId>:<base64(iv ‖ ciphertext ‖ tag)>` under a keyring key, or
 * `sv1:<subjectKeyId>:<…>` under a data subject's own key ({@link SubjectKeys}); a random
 * 96-bit IV per value and a 128-bit tag. The associated data is
 * `<version> \0 length:recordId \0 fieldPath`, so a ciphertext copied to another record or
 * field does not decrypt. The plaintext starts with one type byte (`s`: UTF-8 text, `j`:
 * JSON of any other value), so a decrypted value has the type it was encrypted with.
 *
 * IVs are cut from one buffer of random bytes refilled every 8192 values: a
 * `randomBytes(12)` per value costs more than the encryption itself. The record part of
 * the associated data is written once per record ({@link beginRecord}), and the sealed
 * bytes are assembled and base64-encoded in one reused buffer: per value, the only
 * allocations left are the cipher, its output and the text returned.
 */
export class FieldCipher {
  readonly #keyring: Keyring;
  readonly #subjectKeys: SubjectKeys | undefined;
  readonly #ivs = Buffer.allocUnsafe(IV_BYTES * IVS_PER_FILL);
  /** Associated data then plaintext: the cipher copies what it is given. */
  #scratch = Buffer.allocUnsafe(4096);
  /** iv ‖ ciphertext ‖ tag, encoded from here. */
  #sealed = Buffer.allocUnsafe(4096);
  #nextIv = IVS_PER_FILL; // empty: filled on first use
  /** Bytes of `<version>\0length:recordId\0` at the start of the scratch buffer. */
  #head = 0;
  #headVersion = '';
  #headRecordId: string | undefined;
  #primaryId = '';
  #primaryPrefix = '';

  constructor(keyring: Keyring, subjectKeys?: SubjectKeys) {
    this.#keyring = keyring;
    this.#subjectKeys = subjectKeys;
  }

  /** Writes the record part of the associated data once for the values of one record. */
  beginRecord(recordId: string, version: typeof VERSION | typeof SUBJECT_VERSION = VERSION): void {
    if (recordId === this.#headRecordId && version === this.#headVersion) return;
    const head = `${version}\0${recordId.length}:${recordId}\0`;
    const bytes = Buffer.byteLength(head, 'utf8');
    if (this.#scratch.length < bytes + 256) this.#scratch = Buffer.allocUnsafe(2 * (bytes + 256));
    this.#scratch.write(head, 0, 'utf8');
    this.#head = bytes;
    this.#headVersion = version;
    this.#headRecordId = recordId;
  }

  /** Encrypts `value` (anything but undefined) with the keyring's primary key. */
  encrypt(value: unknown, recordId: string, field: string): string {
    this.beginRecord(recordId, VERSION);
    const keyId = this.#keyring.primaryId;
    if (keyId !== this.#primaryId) {
      this.#primaryId = keyId;
      this.#primaryPrefix = `${VERSION}:${keyId}:`;
    }
    return this.seal(value, field, this.#keyring.primaryKey(), this.#primaryPrefix);
  }

  /**
   * Encrypts `value` for the record of the last {@link beginRecord} with `key`; `prefix`
   * (`v1:<keyId>:` or `sv1:<keyId>:`) must name the key and the version begun with.
   */
  seal(value: unknown, field: string, key: KeyObject, prefix: string): string {
    if (this.#nextIv === IVS_PER_FILL) {
      randomFillSync(this.#ivs);
      this.#nextIv = 0;
    }
    const ivStart = this.#nextIv++ * IV_BYTES;
    const isString = typeof value === 'string';
    const text = isString ? (value as string) : jsonOf(value);
    const head = this.#head;
    // Worst case of UTF-8: 3 bytes per UTF-16 unit.
    const room = head + 3 * field.length + 1 + 3 * text.length;
    if (this.#scratch.length < room) {
      const grown = Buffer.allocUnsafe(2 * room);
      this.#scratch.copy(grown, 0, 0, head);
      this.#scratch = grown;
    }
    const scratch = this.#scratch;
    const aadEnd = head + scratch.write(field, head, 'utf8');
    scratch[aadEnd] = isString ? STRING : JSON_VALUE;
    const plainEnd = aadEnd + 1 + scratch.write(text, aadEnd + 1, 'utf8');
    const cipher = createCipheriv('aes-256-gcm', key, this.#ivs.subarray(ivStart, ivStart + IV_BYTES));
    cipher.setAAD(scratch.subarray(0, aadEnd));
    const body = cipher.update(scratch.subarray(aadEnd, plainEnd));
    scratch.fill(0, aadEnd, plainEnd); // no plaintext left lying in the scratch buffer
    cipher.final(); // GCM is a stream mode: final() adds no bytes
    const total = IV_BYTES + body.length + TAG_BYTES;
    if (this.#sealed.length < total) this.#sealed = Buffer.allocUnsafe(2 * total);
    const sealed = this.#sealed;
    this.#ivs.copy(sealed, 0, ivStart, ivStart + IV_BYTES);
    body.copy(sealed, IV_BYTES);
    cipher.getAuthTag().copy(sealed, IV_BYTES + body.length);
    return prefix + sealed.toString('base64', 0, total);
  }

  /** The subject key id a `sv1` ciphertext names, or undefined for any other text. */
  static subjectKeyIdOf(text: unknown): string | undefined {
    if (typeof text !== 'string' || !text.startsWith(`${SUBJECT_VERSION}:`)) return undefined;
    const colon = text.indexOf(':', SUBJECT_VERSION.length + 1);
    return colon < 0 ? undefined : text.slice(SUBJECT_VERSION.length + 1, colon);
  }

  /**
   * Decrypts what {@link encrypt} or {@link seal} made for the same record id and field.
   * A subject key must have been resolved into the cache first.
   */
  decrypt(text: unknown, recordId: string, field: string): unknown {
    if (typeof text !== 'string') throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const version = text.startsWith(`${VERSION}:`) ? VERSION : text.startsWith(`${SUBJECT_VERSION}:`) ? SUBJECT_VERSION : undefined;
    if (version === undefined) throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const colon = text.indexOf(':', version.length + 1);
    if (colon < 0) throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const keyId = text.slice(version.length + 1, colon);
    let key: KeyObject | undefined;
    if (version === VERSION) {
      key = this.#keyring.key(keyId);
      if (!key) throw new TributaryError(`${field} was encrypted with key ${JSON.stringify(keyId.slice(0, 64))}, which the keyring does not hold`, { code: 'DECRYPT_UNKNOWN_KEY' });
    } else {
      const subjectKey = this.#subjectKeys?.cachedById(keyId);
      if (!subjectKey) {
        throw new TributaryError(`${field} was encrypted with subject key ${JSON.stringify(keyId.slice(0, 64))}, which is erased or unknown`, { code: subjectKey === null ? 'DECRYPT_ERASED' : 'DECRYPT_UNKNOWN_KEY' });
      }
      key = subjectKey.key;
    }
    const sealed = Buffer.from(text.slice(colon + 1), 'base64');
    if (sealed.length < IV_BYTES + 1 + TAG_BYTES) throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
    decipher.setAAD(associatedData(version, recordId, field));
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    let plain: Buffer;
    try {
      plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new TributaryError(`${field} does not decrypt for this record: wrong key, record id or field, or altered text`, { code: 'DECRYPT_FAILED' });
    }
    if (plain[0] === STRING) return plain.toString('utf8', 1);
    if (plain[0] === JSON_VALUE) return JSON.parse(plain.toString('utf8', 1)) as unknown;
    throw new TributaryError(`${field} holds an unknown plaintext type`, { code: 'DECRYPT_FORMAT' });
  }
}

export const VERSION = 'v1';
/** Version of ciphertexts under a data subject's key. */
export const SUBJECT_VERSION = 'sv1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const IVS_PER_FILL = 8192;
const STRING = 0x73; // 's'
const JSON_VALUE = 0x6a; // 'j'

function associatedData(version: string, recordId: string, field: string): Buffer {
  // The id's length makes the split unambiguous whatever characters the id holds.
  return Buffer.from(`${version}\0${recordId.length}:${recordId}\0${field}`, 'utf8');
}

function jsonOf(value: unknown): string {
  const json = JSON.stringify(value);
  if (json === undefined) throw new TributaryError(`cannot encrypt a ${typeof value}`, { code: 'ENCRYPT_TYPE' });
  return json;
}

/** How `encrypt` and `decrypt` find the id a record's ciphertexts are bound to. */
export type RecordIdOption = string | ((value: any) => unknown);

/** Compiles the `recordId` option; the reader returns undefined when the record has no usable id. */
export function recordIdReader(option: unknown, fields: readonly { segments: readonly string[] }[]): (value: any) => string | undefined {
  if (typeof option === 'function') return (value) => idText((option as (value: unknown) => unknown)(value));
  if (typeof option !== 'string' || option === '' || option.includes('*')) {
    throw new ConfigError('recordId must be the path of a field that identifies the record (e.g. "booking_id"), or a function of the record');
  }
  const segments = option.split('.');
  if (fields.some((f) => f.segments.length <= segments.length && f.segments.every((s, i) => s === '*' || s === segments[i]))) {
    throw new ConfigError(`recordId ${option} is among the encrypted fields: decrypt would not find it`);
  }
  return (value) => {
    let node = value;
    for (const segment of segments) {
      if (node === null || typeof node !== 'object') return undefined;
      node = node[segment];
    }
    return idText(node);
  };
}

function idText(id: unknown): string | undefined {
  if (typeof id === 'string') return id === '' ? undefined : id;
  if (Number.isFinite(id)) return String(id); // a number: Number.isFinite does not convert
  if (typeof id === 'bigint') return String(id);
  return undefined;
}
