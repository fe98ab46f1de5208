import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, TributaryError } from '../lib/errors';
import { Keyring } from '../lib/keyring';
import { FieldCipher, recordIdReader, type RecordIdOption } from './fieldCipher';
import { compilePaths, forEachField, type FieldPath, type FieldVisitor } from './fieldPaths';
import { rejectRedacted } from './sensitive';

export interface EncryptOptions {
  /** The keys; its primary key encrypts. Rotate it at any time: the next value uses the new primary. */
  keyring: Keyring;
  /** Paths of the fields to encrypt, `*` for every array element (`passengers.*.email`). Absent and null values stay as they are. */
  fields: readonly string[];
  /**
   * What identifies the record, bound into every ciphertext: the path of a field that is
   * not encrypted (`booking_id`), or a function of the record. Decrypt needs the same id.
   */
  recordId: RecordIdOption;
}

/**
 * Encrypts chosen fields of each record with AES-256-GCM, one ciphertext per value.
 *
 * Each value becomes `v1:<keyId>:<base64(iv ‖ ciphertext ‖ tag)>`, bound to the record id
 * and the field's path. Once a record is encrypted, its received payload is dropped, so a
 * later refusal (a sink rejecting the row) dead-letters the encrypted record, never the
 * plaintext. A record that cannot be encrypted (no record id, a value that is not JSON) is
 * dead-lettered with the configured fields redacted, code `ENCRYPT_*`.
 *
 * ## Example
 * ```ts
 * import { encrypt, Keyring } from 'tributary';
 * const keyring = Keyring.fromEnv('TRIBUTARY_KEYRING');
 * records$.pipe(encrypt({ keyring, fields: ['email', 'phone', 'passengers.*.name'], recordId: 'booking_id' }));
 * ```
 *
 * @param options The keyring, the fields and the record id.
 * @returns An operator passing records on with the fields encrypted.
 */
export function encrypt<T>(options: EncryptOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  const { fields, recordIdOf, cipher } = resolveCryptoOptions(options);
  return (source) =>
    new Observable<Envelope<T>>((subscriber) => {
      const encryptor = new Encryptor(cipher);
      return source.subscribe({
        next(envelope) {
          const id = recordIdOf(envelope.value);
          if (id === undefined) {
            rejectRedacted(envelope, fields, { stage: 'encrypt', code: 'ENCRYPT_RECORD_ID', message: 'the record has no id to bind its ciphertexts to', path: '' });
            return;
          }
          encryptor.recordId = id;
          try {
            for (const field of fields) forEachField(envelope.value, field, encryptor);
          } catch (error) {
            const code = error instanceof TributaryError ? error.code : 'ENCRYPT_FAILED';
            rejectRedacted(envelope, fields, { stage: 'encrypt', code, message: `${encryptor.path}: ${(error as Error).message}`, path: pointerOf(encryptor.path) });
            return;
          }
          envelope.raw = undefined; // from here on, a dead letter shows the encrypted record
          subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
    });
}

class Encryptor implements FieldVisitor {
  recordId = '';
  path = '';
  readonly #cipher: FieldCipher;

  constructor(cipher: FieldCipher) {
    this.#cipher = cipher;
  }

  visit(container: any, key: string | number, path: string): void {
    this.path = path;
    container[key] = this.#cipher.encrypt(container[key], this.recordId, path);
  }
}

/** Checks the options `encrypt` and `decrypt` share. */
export function resolveCryptoOptions(options: EncryptOptions): { fields: FieldPath[]; recordIdOf: (value: any) => string | undefined; cipher: FieldCipher } {
  if (!options || typeof options !== 'object') throw new ConfigError('options must be an object with keyring, fields and recordId');
  if (!(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring (Keyring.fromEnv, Keyring.fromFile, Keyring.load or new Keyring)');
  const fields = compilePaths(options.fields, 'fields');
  const recordIdOf = recordIdReader(options.recordId, fields);
  return { fields, recordIdOf, cipher: new FieldCipher(options.keyring) };
}

/** `passengers.1.email` → `/passengers/1/email`. */
export function pointerOf(path: string): string {
  return path === '' ? '' : '/' + path.split('.').map((s) => s.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}
