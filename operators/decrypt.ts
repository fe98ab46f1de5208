import { Observable, type OperatorFunction } from 'rxjs';
import { AccessControl } from '../lib/security/access';
import { AuditLog } from '../lib/security/audit';
import type { Envelope } from '../lib/envelope';
import { ConfigError, TributaryError } from '../lib/errors';
import type { Keyring } from '../lib/security/keyring';
import type { SubjectKeys } from '../lib/security/subjectKeys';
import { pointerOf, resolveCryptoOptions } from './encrypt';
import { FieldCipher, type RecordIdOption } from '../lib/security/fieldCipher';
import { forEachField, type FieldPath, type FieldVisitor } from './fieldPaths';
import { keyGate } from './keyGate';

export interface DecryptOptions {
  /** Holds the keys `v1` ciphertexts name (and the master keys that wrap subject keys). */
  keyring: Keyring;
  /** The paths given to `encrypt`. */
  fields: readonly string[];
  /** The record id given to `encrypt`. */
  recordId: RecordIdOption;
  /** Where `sv1` (per-subject) ciphertexts find their keys. @default none: such values fail with `DECRYPT_UNKNOWN_KEY` */
  subjectKeys?: SubjectKeys;
  /** Decides who may read which field: the principal needs `decrypt:<field path>` for every field. */
  access: AccessControl;
  /** Who reads: the API key (`<id>.<secret>`) presented to `access`. */
  principal: string;
  /** Why, in words (`support ticket 4711`): kept with every audit entry. */
  purpose: string;
  /** Records one `decrypt` event per record (who, which fields, why, outcome). @default none */
  audit?: AuditLog;
}

/**
 * Decrypts the fields `encrypt` encrypted, with whichever key each ciphertext names: a
 * keyring key (`v1`) or a data subject's key (`sv1`, looked up for many records at once).
 *
 * Reading plaintext is a privileged act: `access` must grant `principal` the permission
 * `decrypt:<field path>` for every configured field, checked once at construction (a
 * denial throws {@link AccessDeniedError} and reaches `access`'s `onDecision`, hence the
 * audit log), and every record decrypted or refused is recorded in `audit` with the key
 * id, the purpose and the fields.
 *
 * Empty strings (what erasure's anonymisation leaves) pass as they are. A record is
 * decrypted whole or not at all: if one value fails (unknown or erased key,
 * altered text, a ciphertext copied from another record or field), the record is
 * dead-lettered as it arrived, still encrypted, with code `DECRYPT_FAILED`,
 * `DECRYPT_UNKNOWN_KEY`, `DECRYPT_ERASED` or `DECRYPT_FORMAT` and the field's path; no
 * plaintext reaches the dead letter.
 *
 * ## Example
 * ```ts
 * import { decrypt, Keyring } from 'tributary';
 * encrypted$.pipe(decrypt({ keyring, subjectKeys, fields: ['email'], recordId: 'booking_id', access, principal: apiKey, purpose: 'ticket 4711', audit }));
 * ```
 *
 * @param options The keys, the fields, the record id, and who reads why.
 * @returns An operator passing records on with the fields in plaintext.
 */
export function decrypt<T>(options: DecryptOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  const { fields, recordIdOf, cipher } = resolveCryptoOptions(options);
  if (!(options.access instanceof AccessControl)) throw new ConfigError('access must be an AccessControl: decrypt checks decrypt:<field> for the principal');
  if (typeof options.principal !== 'string' || options.principal === '') throw new ConfigError('principal must be the API key of who reads the plaintext');
  if (typeof options.purpose !== 'string' || options.purpose.trim() === '') throw new ConfigError('purpose must say why the plaintext is read (e.g. "support ticket 4711")');
  if (options.audit !== undefined && !(options.audit instanceof AuditLog)) throw new ConfigError('audit must be an AuditLog');
  let actor = '';
  for (const field of fields) actor = options.access.check(options.principal, `decrypt:${field.text}`, options.purpose);
  const reader: Reader = { actor, purpose: options.purpose, audit: options.audit };
  const subjectKeys = options.subjectKeys;
  if (!subjectKeys) {
    return (source) =>
      new Observable<Envelope<T>>((subscriber) => {
        const decryptor = new Decryptor(cipher);
        return source.subscribe({
          next: (envelope) => decryptRecord(envelope, fields, recordIdOf, decryptor, reader) && subscriber.next(envelope),
          error: (error: unknown) => subscriber.error(error),
          complete: () => subscriber.complete(),
        });
      });
  }
  const collector = new MissingKeys(subjectKeys);
  return (source) => {
    const decryptor = new Decryptor(cipher);
    return source.pipe(
      keyGate<T, T>(
        (envelope) => collector.of(envelope.value, fields),
        (keyIds) => subjectKeys.resolveIds(keyIds),
        (envelope, emit) => decryptRecord(envelope, fields, recordIdOf, decryptor, reader) && emit(envelope),
      ),
    );
  };
}

interface Reader {
  actor: string;
  purpose: string;
  audit: AuditLog | undefined;
}

function decryptRecord(envelope: Envelope<unknown>, fields: readonly FieldPath[], recordIdOf: (value: any) => string | undefined, decryptor: Decryptor, reader: Reader): boolean {
  const id = recordIdOf(envelope.value);
  if (id === undefined) {
    reader.audit?.record({ type: 'decrypt', actor: reader.actor, purpose: reader.purpose, target: '', outcome: 'DECRYPT_RECORD_ID', details: { position: envelope.meta.position } });
    envelope.reject({ stage: 'decrypt', code: 'DECRYPT_RECORD_ID', message: 'the record has no id its ciphertexts are bound to', path: '' });
    return false;
  }
  decryptor.start(id);
  try {
    for (const field of fields) forEachField(envelope.value, field, decryptor);
  } catch (error) {
    decryptor.abandon();
    const code = error instanceof TributaryError ? error.code : 'DECRYPT_FAILED';
    reader.audit?.record({ type: 'decrypt', actor: reader.actor, purpose: reader.purpose, target: id, outcome: code, details: { field: decryptor.path } });
    envelope.reject({ stage: 'decrypt', code, message: (error as Error).message, path: pointerOf(decryptor.path) });
    return false;
  }
  const paths = decryptor.commit();
  reader.audit?.record({ type: 'decrypt', actor: reader.actor, purpose: reader.purpose, target: id, outcome: 'ok', details: { fields: paths } });
  return true;
}

/** The `sv1` key ids of a record that are neither cached nor known to be gone. */
class MissingKeys implements FieldVisitor {
  #found: string[] = [];
  readonly #keys: SubjectKeys;

  constructor(keys: SubjectKeys) {
    this.#keys = keys;
  }

  of(value: unknown, fields: readonly FieldPath[]): readonly string[] {
    this.#found = [];
    for (const field of fields) forEachField(value, field, this);
    return this.#found;
  }

  visit(container: any, key: string | number): void {
    const keyId = FieldCipher.subjectKeyIdOf(container[key]);
    if (keyId !== undefined && this.#keys.cachedById(keyId) === undefined) this.#found.push(keyId);
  }
}

/** Decrypts every value first and writes the plaintexts only once all succeeded. */
class Decryptor implements FieldVisitor {
  path = '';
  #recordId = '';
  #pending: unknown[] = []; // container, key, plaintext, path, …
  readonly #cipher: FieldCipher;

  constructor(cipher: FieldCipher) {
    this.#cipher = cipher;
  }

  start(recordId: string): void {
    this.#recordId = recordId;
    this.#pending.length = 0;
  }

  visit(container: any, key: string | number, path: string): void {
    this.path = path;
    if (container[key] === '') return; // what erasure leaves in a column: nothing to decrypt
    this.#pending.push(container, key, this.#cipher.decrypt(container[key], this.#recordId, path), path);
  }

  /** Forgets the plaintexts decrypted so far. */
  abandon(): void {
    this.#pending.length = 0;
  }

  /** Writes the plaintexts; returns the paths decrypted. */
  commit(): string[] {
    const pending = this.#pending;
    const paths: string[] = [];
    for (let i = 0; i < pending.length; i += 4) {
      (pending[i] as any)[pending[i + 1] as string] = pending[i + 2];
      paths.push(pending[i + 3] as string);
    }
    pending.length = 0;
    return paths;
  }
}
