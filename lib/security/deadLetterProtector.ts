import { FieldCipher, SUBJECT_VERSION, VERSION } from './fieldCipher';
import type { Envelope } from '../envelope';
import { ConfigError } from '../errors';
import { Keyring } from './keyring';
import type { DeadLetter } from '../sink';
import { SubjectKeys } from './subjectKeys';

export interface DeadLetterProtectorOptions {
  /** Its primary key encrypts letters whose subject is not known. */
  keyring: Keyring;
  /** Subject keys: a letter whose subject is known is encrypted under that subject's key, so erasure shreds it. @default none */
  subjectKeys?: SubjectKeys;
  /**
   * The data subject of a refused record, from whatever it holds at the stage it was
   * refused (`value.customer_token`, or a token computed from the e-mail), or undefined
   * when it cannot be told. Must not throw. @default () => undefined
   */
  subjectOf?: (value: unknown, envelope: Envelope<unknown>) => string | undefined;
}

/**
 * A `Pipeline` `protectDeadLetter` that keeps plaintext out of the dead-letter sink: the
 * payload (`raw`) and the message (which may quote a refused value) are encrypted
 * (`raw_encoding` becomes `encrypted:utf8` or `encrypted:base64`); stage, code and path
 * stay readable for triage. Each ciphertext is bound to the letter's `position` and its
 * field name; read them back with `decrypt({ fields: ['raw', 'message'], recordId: 'position', … })`.
 *
 * With `subjectKeys` and a subject (the one `encrypt` noted on the record, else `subjectOf`) the letter is sealed under the subject's key (made and
 * stored first if the subject is new), so erasing the subject shreds it wherever the
 * letter was copied. A letter whose subject cannot be told is sealed under the keyring's
 * primary key: erasure cannot reach it, so give dead-letter tables a retention TTL
 * (`setRetention`) as the backstop.
 *
 * ## Example
 * ```ts
 * import { Pipeline, deadLetterProtector } from 'tributary';
 * const protect = deadLetterProtector({ keyring, subjectKeys, subjectOf: (value: any) => value?.customer_token });
 * new Pipeline({ source, transform, sink, deadLetters, protectDeadLetter: protect });
 * ```
 */
export function deadLetterProtector(options: DeadLetterProtectorOptions): (letter: DeadLetter, envelope: Envelope<unknown>) => DeadLetter | Promise<DeadLetter> {
  if (!options || !(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring: letters without a known subject are encrypted with its primary key');
  if (options.subjectKeys !== undefined && !(options.subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  if (options.subjectOf !== undefined && typeof options.subjectOf !== 'function') throw new ConfigError('subjectOf must be a function of the refused value');
  if (options.subjectOf !== undefined && options.subjectKeys === undefined) throw new ConfigError('subjectOf needs subjectKeys');
  const { subjectKeys, subjectOf } = options;
  const cipher = new FieldCipher(options.keyring, subjectKeys);

  const seal = (letter: DeadLetter, subject: string | undefined): DeadLetter => {
    const key = subject === undefined ? undefined : subjectKeys!.cachedForSubject(subject);
    cipher.beginRecord(letter.position, key ? SUBJECT_VERSION : VERSION);
    const sealed = (value: string, field: string) => (key ? cipher.seal(value, field, key.key, key.prefix) : cipher.encrypt(value, letter.position, field));
    // A hash of the plaintext would let anyone confirm a guessed payload: it goes too.
    return { ...letter, raw: sealed(letter.raw, 'raw'), message: sealed(letter.message, 'message'), raw_sha256: '', raw_encoding: `encrypted:${letter.raw_encoding}` as DeadLetter['raw_encoding'] };
  };

  return (letter, envelope) => {
    let subject: string | undefined = subjectKeys ? envelope.meta.subject : undefined;
    try {
      subject ??= subjectOf?.(envelope.value, envelope);
    } catch {
      // A record too broken to name its subject is sealed under the keyring: subject is still unset.
    }
    if (typeof subject !== 'string' || subject === '') return seal(letter, undefined);
    if (subjectKeys!.cachedForSubject(subject)) return seal(letter, subject);
    return subjectKeys!.resolveSubjects([subject]).then(() => seal(letter, subject));
  };
}
