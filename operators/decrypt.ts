import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { TributaryError } from '../lib/errors';
import { pointerOf, resolveCryptoOptions, type EncryptOptions } from './encrypt';
import type { FieldCipher } from './fieldCipher';
import { forEachField, type FieldVisitor } from './fieldPaths';

export type DecryptOptions = EncryptOptions;

/**
 * Decrypts the fields `encrypt` encrypted, with whichever key of the keyring each
 * ciphertext names.
 *
 * A record is decrypted whole or not at all: if one value fails (unknown key id, altered
 * text, a ciphertext copied from another record or field), the record is dead-lettered
 * as it arrived, still encrypted, with code `DECRYPT_FAILED`, `DECRYPT_UNKNOWN_KEY` or
 * `DECRYPT_FORMAT` and the field's path; no plaintext reaches the dead letter.
 *
 * ## Example
 * ```ts
 * import { decrypt, Keyring } from 'tributary';
 * const keyring = Keyring.fromFile('/run/secrets/keyring.json');
 * encrypted$.pipe(decrypt({ keyring, fields: ['email', 'passengers.*.name'], recordId: 'booking_id' }));
 * ```
 *
 * @param options The keyring, the fields and the record id, as given to `encrypt`.
 * @returns An operator passing records on with the fields in plaintext.
 */
export function decrypt<T>(options: DecryptOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  const { fields, recordIdOf, cipher } = resolveCryptoOptions(options);
  return (source) =>
    new Observable<Envelope<T>>((subscriber) => {
      const decryptor = new Decryptor(cipher);
      return source.subscribe({
        next(envelope) {
          const id = recordIdOf(envelope.value);
          if (id === undefined) {
            envelope.reject({ stage: 'decrypt', code: 'DECRYPT_RECORD_ID', message: 'the record has no id its ciphertexts are bound to', path: '' });
            return;
          }
          decryptor.start(id);
          try {
            for (const field of fields) forEachField(envelope.value, field, decryptor);
          } catch (error) {
            decryptor.abandon();
            const code = error instanceof TributaryError ? error.code : 'DECRYPT_FAILED';
            envelope.reject({ stage: 'decrypt', code, message: (error as Error).message, path: pointerOf(decryptor.path) });
            return;
          }
          decryptor.commit();
          subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
    });
}

/** Decrypts every value first and writes the plaintexts only once all succeeded. */
class Decryptor implements FieldVisitor {
  path = '';
  #recordId = '';
  #pending: unknown[] = []; // container, key, plaintext, …
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
    this.#pending.push(container, key, this.#cipher.decrypt(container[key], this.#recordId, path));
  }

  /** Forgets the plaintexts decrypted so far. */
  abandon(): void {
    this.#pending.length = 0;
  }

  commit(): void {
    const pending = this.#pending;
    for (let i = 0; i < pending.length; i += 3) (pending[i] as any)[pending[i + 1] as string] = pending[i + 2];
    pending.length = 0;
  }
}
