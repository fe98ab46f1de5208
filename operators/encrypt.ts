import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, TributaryError } from '../lib/errors';
import { booleanOption } from '../lib/options';
import { Keyring } from '../lib/security/keyring';
import { SubjectKeys, type SubjectKey } from '../lib/security/subjectKeys';
import { FieldCipher, recordIdReader, SUBJECT_VERSION, VERSION, type RecordIdOption } from '../lib/security/fieldCipher';
import { keyGate } from './keyGate';
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
  /**
   * Per-subject keys: each record's fields are encrypted under its data subject's own
   * key (`sv1:` ciphertexts), so erasing the subject shreds them everywhere they were
   * copied. Needs `subject`. @default none: the keyring's primary key encrypts every record
   */
  subjectKeys?: SubjectKeys;
  /**
   * Path of the field naming the record's data subject (`customer_token`, as written by
   * `tokenize`). It is not encrypted. A record without one is dead-lettered
   * (`ENCRYPT_SUBJECT`). Required with `subjectKeys`.
   */
  subject?: string;
  /**
   * Replace the subject id in the record by the subject's pseudonym (`p1:…`, derived
   * from its key): analysts still count and join per subject, but once the subject is
   * erased no copy of the record can be linked to it again. @default false
   */
  pseudonymize?: boolean;
}

/**
 * Encrypts chosen fields of each record with AES-256-GCM, one ciphertext per value.
 *
 * Each value becomes `v1:<keyId>:<base64(iv ‖ ciphertext ‖ tag)>`, bound to the record id
 * and the field's path; with `subjectKeys`, `sv1:<subjectKeyId>:…` under the key of the
 * record's data subject, looked up (or created and stored) for many records at once and
 * cached, so that erasing the subject shreds every copy. Once a record is encrypted, its received payload is dropped, so a
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
  const subjects = resolveSubjectOptions(options, fields);
  if (subjects) return encryptPerSubject(fields, recordIdOf, cipher, subjects);
  return (source) =>
    new Observable<Envelope<T>>((subscriber) => {
      const encryptor = new Encryptor(cipher);
      return source.subscribe({
        next(envelope) {
          if (encryptRecord(envelope, fields, recordIdOf, encryptor, undefined)) subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
    });
}

/** The per-subject options as `encrypt` and `tokenize` resolve them. */
export interface SubjectOptions {
  keys: SubjectKeys;
  subjectOf: (value: any) => string | undefined;
  subjectPath: FieldPath;
  pseudonymize: boolean;
}

function encryptPerSubject<T>(fields: FieldPath[], recordIdOf: (value: any) => string | undefined, cipher: FieldCipher, subjects: SubjectOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  return (source) => {
    const encryptor = new Encryptor(cipher);
    return source.pipe(
      subjectKeyGate<T>(subjects, fields, { stage: 'encrypt', code: 'ENCRYPT_SUBJECT' }, (envelope, key, subject, emit) => {
        if (!encryptRecord(envelope, fields, recordIdOf, encryptor, key)) return;
        envelope.meta.subject = subject;
        if (subjects.pseudonymize) forEachField(envelope.value, subjects.subjectPath, { visit: (container, name) => (container[name] = key.pseudonym) });
        emit(envelope);
      }),
    );
  };
}

/**
 * The per-subject machinery `encrypt` and `tokenize` share: each record waits in a
 * {@link keyGate} until its data subject's key is cached, then goes to `process` with that
 * key. A record naming no subject is dead-lettered with `fields` redacted.
 */
export function subjectKeyGate<T>(
  subjects: Pick<SubjectOptions, 'keys' | 'subjectOf' | 'subjectPath'>,
  fields: readonly FieldPath[],
  refusal: { stage: string; code: string },
  process: (envelope: Envelope<T>, key: SubjectKey, subject: string, emit: (envelope: Envelope<T>) => void) => void,
): OperatorFunction<Envelope<T>, Envelope<T>> {
  const { keys, subjectOf, subjectPath } = subjects;
  const none: readonly string[] = [];
  return keyGate<T, T>(
    (envelope) => {
      const subject = subjectOf(envelope.value);
      return subject === undefined || keys.cachedForSubject(subject) ? none : [subject];
    },
    (missing) => keys.resolveSubjects(missing),
    (envelope, emit) => {
      const subject = subjectOf(envelope.value);
      const key = subject === undefined ? undefined : keys.cachedForSubject(subject);
      if (!key) {
        rejectRedacted(envelope, fields, { ...refusal, message: `the record has no data subject at ${subjectPath.text}`, path: pointerOf(subjectPath.text) });
        return;
      }
      process(envelope, key, subject!, emit);
    },
  );
}

/** Encrypts one record's fields in place; false when it was dead-lettered instead. */
function encryptRecord(envelope: Envelope<unknown>, fields: readonly FieldPath[], recordIdOf: (value: any) => string | undefined, encryptor: Encryptor, key: SubjectKey | undefined): boolean {
  const id = recordIdOf(envelope.value);
  if (id === undefined) {
    rejectRedacted(envelope, fields, { stage: 'encrypt', code: 'ENCRYPT_RECORD_ID', message: 'the record has no id to bind its ciphertexts to', path: '' });
    return false;
  }
  encryptor.begin(id, key);
  try {
    for (const field of fields) forEachField(envelope.value, field, encryptor);
  } catch (error) {
    const code = error instanceof TributaryError ? error.code : 'ENCRYPT_FAILED';
    rejectRedacted(envelope, fields, { stage: 'encrypt', code, message: `${encryptor.path}: ${(error as Error).message}`, path: pointerOf(encryptor.path) });
    return false;
  }
  envelope.raw = undefined; // from here on, a dead letter shows the encrypted record
  return true;
}

class Encryptor implements FieldVisitor {
  path = '';
  #recordId = '';
  #key: SubjectKey | undefined;
  readonly #cipher: FieldCipher;

  constructor(cipher: FieldCipher) {
    this.#cipher = cipher;
  }

  /** The record whose fields are visited next, and its subject's key (none: the keyring's primary). */
  begin(recordId: string, key: SubjectKey | undefined): void {
    this.#recordId = recordId;
    this.#key = key;
    this.#cipher.beginRecord(recordId, key ? SUBJECT_VERSION : VERSION);
  }

  visit(container: any, key: string | number, path: string): void {
    this.path = path;
    const subjectKey = this.#key;
    container[key] = subjectKey ? this.#cipher.seal(container[key], path, subjectKey.key, subjectKey.prefix) : this.#cipher.encrypt(container[key], this.#recordId, path);
  }
}

/** Checks the options `encrypt` and `decrypt` share. */
export function resolveCryptoOptions(options: Pick<EncryptOptions, 'keyring' | 'fields' | 'recordId' | 'subjectKeys'>): { fields: FieldPath[]; recordIdOf: (value: any) => string | undefined; cipher: FieldCipher } {
  if (!options || typeof options !== 'object') throw new ConfigError('options must be an object with keyring, fields and recordId');
  if (!(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring (Keyring.fromEnv, Keyring.fromFile, Keyring.load or new Keyring)');
  const fields = compilePaths(options.fields, 'fields');
  const recordIdOf = recordIdReader(options.recordId, fields);
  if (options.subjectKeys !== undefined && !(options.subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  return { fields, recordIdOf, cipher: new FieldCipher(options.keyring, options.subjectKeys) };
}

/**
 * Checks `subjectKeys`, `subject` and `pseudonymize`, shared by `encrypt` and `tokenize`:
 * undefined without `subjectKeys`. `fields` are the paths the operator writes (`written`
 * names them in errors); the subject may not be among them, or erasure could not find it.
 */
export function resolveSubjectOptions(options: Pick<EncryptOptions, 'subjectKeys' | 'subject' | 'pseudonymize'>, fields: readonly FieldPath[], written = 'encrypted'): SubjectOptions | undefined {
  if (options.subjectKeys === undefined) {
    if (options.subject !== undefined || options.pseudonymize !== undefined) throw new ConfigError('subject and pseudonymize need subjectKeys');
    return undefined;
  }
  if (!(options.subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  if (typeof options.subject !== 'string' || options.subject === '' || options.subject.includes('*')) {
    throw new ConfigError(`subject must be the path of the field naming the record's data subject (e.g. "customer_token"), got ${JSON.stringify(options.subject)}`);
  }
  const [subjectPath] = compilePaths([options.subject], 'subject');
  if (fields.some((f) => f.segments.length <= subjectPath!.segments.length && f.segments.every((s, i) => s === '*' || s === subjectPath!.segments[i]))) {
    throw new ConfigError(`subject ${options.subject} is among the ${written} fields: erasure could not find the subject`);
  }
  const pseudonymize = booleanOption(options.pseudonymize, false, 'pseudonymize');
  const subjectOf = recordIdReader(options.subject, []);
  return { keys: options.subjectKeys, subjectOf, subjectPath: subjectPath!, pseudonymize };
}

/** `passengers.1.email` → `/passengers/1/email`. */
export function pointerOf(path: string): string {
  return path === '' ? '' : '/' + path.split('.').map((s) => s.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}
