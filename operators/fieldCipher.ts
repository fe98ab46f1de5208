import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { ConfigError, TributaryError } from '../lib/errors';
import type { Keyring } from '../lib/keyring';

/**
 * AES-256-GCM of single field values: the machinery shared by `encrypt` and `decrypt`.
 *
 * Ciphertext text: `v1:<keyId>:<base64(iv ‖ ciphertext ‖ tag)>`, a random 96-bit IV per
 * value and a 128-bit tag. The associated data is `v1 \0 length:recordId \0 fieldPath`, so a
 * ciphertext copied to another record or field does not decrypt. The plaintext starts
 * with one type byte (`s`: UTF-8 text, `j`: JSON of any other value), so a decrypted
 * value has the type it was encrypted with.
 *
 * IVs are cut from one buffer of random bytes refilled every 8192 values: a
 * `randomBytes(12)` per value costs more than the encryption itself.
 */
export class FieldCipher {
  readonly #keyring: Keyring;
  readonly #ivs = Buffer.allocUnsafe(IV_BYTES * IVS_PER_FILL);
  /** Reused for associated data and plaintext: the cipher copies what it is given. */
  #scratch = Buffer.allocUnsafe(4096);
  #nextIv = IVS_PER_FILL; // empty: filled on first use

  constructor(keyring: Keyring) {
    this.#keyring = keyring;
  }

  /** Encrypts `value` (anything but undefined) with the primary key. */
  encrypt(value: unknown, recordId: string, field: string): string {
    if (this.#nextIv === IVS_PER_FILL) {
      randomFillSync(this.#ivs);
      this.#nextIv = 0;
    }
    const start = this.#nextIv++ * IV_BYTES;
    const iv = this.#ivs.subarray(start, start + IV_BYTES);
    const keyId = this.#keyring.primaryId;
    const cipher = createCipheriv('aes-256-gcm', this.#keyring.primaryKey(), iv);
    const text = typeof value === 'string' ? value : jsonOf(value);
    const aad = `${VERSION}\0${recordId.length}:${recordId}\0${field}`;
    const aadBytes = Buffer.byteLength(aad, 'utf8');
    const plainBytes = 1 + Buffer.byteLength(text, 'utf8');
    const scratch = this.#scratch.length >= aadBytes + plainBytes ? this.#scratch : (this.#scratch = Buffer.allocUnsafe(2 * (aadBytes + plainBytes)));
    scratch.write(aad, 0, 'utf8');
    cipher.setAAD(scratch.subarray(0, aadBytes));
    scratch[aadBytes] = typeof value === 'string' ? STRING : JSON_VALUE;
    scratch.write(text, aadBytes + 1, 'utf8');
    const body = cipher.update(scratch.subarray(aadBytes, aadBytes + plainBytes));
    scratch.fill(0, aadBytes, aadBytes + plainBytes); // no plaintext left lying in the scratch buffer
    cipher.final(); // GCM is a stream mode: final() adds no bytes
    return `${VERSION}:${keyId}:${Buffer.concat([iv, body, cipher.getAuthTag()], IV_BYTES + body.length + TAG_BYTES).toString('base64')}`;
  }

  /** Decrypts what {@link encrypt} made for the same record id and field. */
  decrypt(text: unknown, recordId: string, field: string): unknown {
    if (typeof text !== 'string' || !text.startsWith(`${VERSION}:`)) {
      throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    }
    const colon = text.indexOf(':', VERSION.length + 1);
    if (colon < 0) throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const keyId = text.slice(VERSION.length + 1, colon);
    const key = this.#keyring.key(keyId);
    if (!key) throw new TributaryError(`${field} was encrypted with key ${JSON.stringify(keyId.slice(0, 64))}, which the keyring does not hold`, { code: 'DECRYPT_UNKNOWN_KEY' });
    const sealed = Buffer.from(text.slice(colon + 1), 'base64');
    if (sealed.length < IV_BYTES + 1 + TAG_BYTES) throw new TributaryError(`${field} is not a ${VERSION} ciphertext`, { code: 'DECRYPT_FORMAT' });
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
    decipher.setAAD(associatedData(recordId, field));
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
const IV_BYTES = 12;
const TAG_BYTES = 16;
const IVS_PER_FILL = 8192;
const STRING = 0x73; // 's'
const JSON_VALUE = 0x6a; // 'j'

function associatedData(recordId: string, field: string): Buffer {
  // The id's length makes the split unambiguous whatever characters the id holds.
  return Buffer.from(`${VERSION}\0${recordId.length}:${recordId}\0${field}`, 'utf8');
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
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  if (typeof id === 'bigint') return String(id);
  return undefined;
}
