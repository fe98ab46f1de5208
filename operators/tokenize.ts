import { createHmac, hkdfSync, type KeyObject, createSecretKey } from 'node:crypto';
import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, TributaryError } from '../lib/errors';
import { Keyring } from '../lib/security/keyring';
import { SubjectKeys, type SubjectKey } from '../lib/security/subjectKeys';
import { pointerOf, resolveSubjectOptions, subjectKeyGate } from './encrypt';
import { compilePaths, forEachField, type FieldPath, type FieldVisitor } from './fieldPaths';
import { rejectRedacted } from './sensitive';

/** How a value is made canonical before hashing, so one customer gives one token. */
export type TokenNormalization = 'none' | 'trim' | 'email' | 'digits' | ((text: string) => string);

export interface TokenField {
  /**
   * Names what the token identifies (`customer-email`): each scope hashes with its own key
   * derived from the keyring key, so tokens of different scopes never match.
   */
  scope: string;
  /** `email`: trim and lower-case; `digits`: keep 0-9 only (phones); `trim`. @default 'none' */
  normalize?: TokenNormalization;
  /** Write the token into this field and leave the source field as it is. @default replace the value in place */
  to?: string;
}

export interface TokenizeOptions {
  /**
   * The keys of scope-keyed tokens (one key per scope, shared by every subject). Tokens use
   * one key for good: rotating it changes every token. Required unless `subjectKeys` is
   * given; not allowed with it.
   */
  keyring?: Keyring;
  /** The key id scope-keyed tokens are made with. @default the keyring's primary at construction */
  keyId?: string;
  /** Field path → how it is tokenized. Paths may use `*` for array elements; `to` then is not allowed. */
  fields: Readonly<Record<string, TokenField>>;
  /**
   * Per-subject tokens: each record's tokens are made under a key derived from its data
   * subject's key (`st1:<subjectKeyId>:…`), as `encrypt` seals with `subjectKeys`. They
   * link the subject's records only while the subject's key lives: erasing the subject
   * shreds the key, so nobody can make its tokens again, and a returning subject gets new
   * ones. Needs `subject`. @default none: one key per scope from `keyring`
   */
  subjectKeys?: SubjectKeys;
  /**
   * Path of the field naming the record's data subject (`customer_token`, as written by a
   * scope-keyed `tokenize` before this one). It is not tokenized here. A record without
   * one is dead-lettered (`TOKENIZE_SUBJECT`). Required with `subjectKeys`.
   */
  subject?: string;
}

/**
 * Replaces chosen fields by a blind index: HMAC-SHA256 under a key scoped to what the
 * field identifies, so analysts can count and join distinct customers without plaintext.
 *
 * Two kinds of key, chosen by the options:
 * - **One key per scope** (`keyring`): a token is `<keyId>:<base64url of the HMAC>`, the
 *   same for the same value, scope and key in every record of every subject. Erasing a
 *   subject does not change it: the subject's tokens keep linking its records, and whoever
 *   holds the token key and the value can find them. Use it for the subject id itself
 *   (erasure must still be able to name the subject) and for values that are not personal.
 * - **One key per subject and scope** (`subjectKeys` and `subject`): a token is
 *   `st1:<subjectKeyId>:<base64url of the HMAC>` under a key derived (HKDF) from the
 *   subject's data key and the scope. Within one subject the same value and scope give
 *   the same token, so analysts still count and join per customer; another subject's
 *   token for the same value differs. Erasing the subject shreds its key: its stored
 *   tokens can no longer be made from a value, and a returning subject gets a new key
 *   and new tokens, so they stop linking. Keys not cached are looked up for many records
 *   at once, as `encrypt` does; a record without a subject is dead-lettered, its
 *   configured fields redacted, with code `TOKENIZE_SUBJECT`.
 *
 * Another key or scope gives another token. Strings and numbers are tokenized; a record
 * with any other value there is dead-lettered, its configured fields redacted, with code
 * `TOKENIZE_TYPE`. Once tokenized, a record's received payload is dropped, so a later
 * refusal dead-letters the tokenized record, never the plaintext.
 *
 * ## Example
 * ```ts
 * import { tokenize, Keyring } from 'tributary';
 * const keyring = Keyring.fromEnv('TRIBUTARY_TOKEN_KEYS');
 * records$.pipe(
 *   tokenize({ keyring, fields: { email: { scope: 'customer-email', normalize: 'email', to: 'customer_token' } } }),
 *   tokenize({ subjectKeys, subject: 'customer_token', fields: { 'passengers.*.phone': { scope: 'phone', normalize: 'digits' } } }),
 * );
 * ```
 *
 * @param options The keyring and key id, or the subject keys and the subject; the fields.
 * @returns An operator passing records on with the tokens written.
 */
export function tokenize<T>(options: TokenizeOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  if (!options || typeof options !== 'object') throw new ConfigError('options must be an object with keyring and fields');
  if (options.subjectKeys !== undefined) return tokenizePerSubject(options);
  if (options.subject !== undefined) throw new ConfigError('subject needs subjectKeys');
  if (!(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring (Keyring.fromEnv, Keyring.fromFile, Keyring.load or new Keyring)');
  const keyId = options.keyId ?? options.keyring.primaryId;
  const master = options.keyring.key(keyId);
  if (!master) throw new ConfigError(`keyId must be one of the keyring's ids (${options.keyring.ids.join(', ')}), got ${JSON.stringify(options.keyId)}`);
  if (!options.fields || typeof options.fields !== 'object') throw new ConfigError('fields must be an object of field path → { scope }');
  const paths = compilePaths(Object.keys(options.fields), 'fields');
  const rules = paths.map((path) => {
    const field = checkField(path, options.fields[path.text]!);
    return new TokenRule(path, field.normalize, field.to).use(scopedKey(master, field.scope), `${keyId}:`);
  });
  return (source) =>
    new Observable<Envelope<T>>((subscriber) =>
      source.subscribe({
        next(envelope) {
          if (tokenizeRecord(envelope, rules, paths)) subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
}

/** Per-subject tokens: the options checked, then `tokenize`'s loop behind a key gate. */
function tokenizePerSubject<T>(options: TokenizeOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  if (!(options.subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  if (options.keyring !== undefined || options.keyId !== undefined) {
    throw new ConfigError("keyring and keyId make one key per scope; with subjectKeys each subject's key makes its tokens: give one or the other");
  }
  if ((options as { pseudonymize?: unknown }).pseudonymize !== undefined) {
    throw new ConfigError('pseudonymize is an option of encrypt: give it to the encrypt with subjectKeys that follows, so both see the same subject');
  }
  if (!options.fields || typeof options.fields !== 'object') throw new ConfigError('fields must be an object of field path → { scope }');
  const paths = compilePaths(Object.keys(options.fields), 'fields');
  const checked = paths.map((path) => checkField(path, options.fields[path.text]!));
  // Where tokens are written: the subject must not be among them, or erasure could not name it.
  const written = compilePaths([...new Set(paths.map((path, i) => (checked[i]!.to === undefined ? path.text : [...path.segments.slice(0, -1), checked[i]!.to].join('.'))))], 'fields');
  const subjects = resolveSubjectOptions({ subjectKeys: options.subjectKeys, subject: options.subject }, written, 'tokenized')!;
  return (source) => {
    const rules = paths.map((path, i) => new SubjectTokenRule(path, checked[i]!.scope, checked[i]!.normalize, checked[i]!.to));
    return source.pipe(
      subjectKeyGate<T>(subjects, paths, { stage: 'tokenize', code: 'TOKENIZE_SUBJECT' }, (envelope, key, subject, emit) => {
        for (const rule of rules) rule.begin(key);
        if (!tokenizeRecord(envelope, rules, paths)) return;
        envelope.meta.subject = subject; // a later dead letter is sealed under the subject's key
        emit(envelope);
      }),
    );
  };
}

/**
 * The token of `value` for `scope` under the keyring key `keyId`: what `tokenize` writes,
 * for looking a customer up (`WHERE customer_token = …`) without storing plaintext.
 */
export function tokenOf(keyring: Keyring, keyId: string, scope: string, value: string, normalize: TokenNormalization = 'none'): string {
  const master = keyring.key(keyId);
  if (!master) throw new ConfigError(`keyId must be one of the keyring's ids (${keyring.ids.join(', ')}), got ${JSON.stringify(keyId)}`);
  return `${keyId}:${createHmac('sha256', scopedKey(master, scope)).update(normalizerOf(normalize, 'normalize')(value)).digest('base64url')}`;
}

/**
 * The per-subject token of `value` for `scope` under the subject key `keyId` (the middle
 * of a stored `st1:<keyId>:…` token): checks whether a stored token is that value's.
 * Rejects with code `TOKENIZE_ERASED` once the key is erased (or was never stored): then
 * nobody can make the token again.
 */
export async function subjectTokenOf(subjectKeys: SubjectKeys, keyId: string, scope: string, value: string, normalize: TokenNormalization = 'none'): Promise<string> {
  if (!(subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  await subjectKeys.resolveIds([keyId]);
  const key = subjectKeys.cachedById(keyId);
  if (!key) throw new TributaryError(`subject key ${JSON.stringify(keyId.slice(0, 64))} is erased or unknown: its tokens cannot be made again`, { code: 'TOKENIZE_ERASED' });
  return subjectToken(key, scope, value, normalize);
}

/**
 * The per-subject tokens of `value` for `scope` under every stored key of `subject`:
 * what `tokenize` with `subjectKeys` wrote for it, for answering an access request
 * (`WHERE phone IN (…)`). Empty once the subject is erased. Never creates a key.
 */
export async function subjectTokensOf(subjectKeys: SubjectKeys, subject: string, scope: string, value: string, normalize: TokenNormalization = 'none'): Promise<string[]> {
  if (!(subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  const ids = (await subjectKeys.keysOf(subject)).map((record) => record.keyId);
  await subjectKeys.resolveIds(ids);
  const tokens: string[] = [];
  for (const id of ids) {
    const key = subjectKeys.cachedById(id);
    if (key) tokens.push(subjectToken(key, scope, value, normalize));
  }
  return tokens;
}

function subjectToken(key: SubjectKey, scope: string, value: string, normalize: TokenNormalization): string {
  if (typeof scope !== 'string' || scope === '') throw new ConfigError(`scope must be a non-empty string, got ${JSON.stringify(scope)}`);
  return subjectTokenPrefix(key.keyId) + createHmac('sha256', subjectScopedKey(key.key, scope)).update(normalizerOf(normalize, 'normalize')(value)).digest('base64url');
}

/**
 * Writes each rule's tokens into the record; false when a value cannot be tokenized and
 * the record was dead-lettered instead, its configured fields redacted.
 */
function tokenizeRecord(envelope: Envelope<unknown>, rules: readonly TokenRule[], paths: readonly FieldPath[]): boolean {
  let rule: TokenRule | undefined;
  try {
    for (rule of rules) forEachField(envelope.value, rule.path, rule);
  } catch (error) {
    rejectRedacted(envelope, paths, { stage: 'tokenize', code: 'TOKENIZE_TYPE', message: (error as Error).message, path: pointerOf(rule?.current ?? '') });
    return false;
  }
  envelope.raw = undefined; // the received payload holds the plaintext: a later dead letter shows this record
  return true;
}

/** Tokenizes one field path: the value (or `to`) becomes the prefix and the HMAC of the normalized value. */
class TokenRule implements FieldVisitor {
  readonly path: FieldPath;
  current = '';
  readonly #normalize: (text: string) => string;
  readonly #to: string | undefined;
  #key: KeyObject | undefined;
  #prefix = '';

  constructor(path: FieldPath, normalize: (text: string) => string, to: string | undefined) {
    this.path = path;
    this.#normalize = normalize;
    this.#to = to;
  }

  /** The key and prefix tokens are made with from now on. */
  use(key: KeyObject, prefix: string): this {
    this.#key = key;
    this.#prefix = prefix;
    return this;
  }

  visit(container: any, key: string | number, path: string): void {
    this.current = path;
    const value = container[key];
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) {
      throw new TypeError(`${path}: expected text or a number to tokenize, got ${Array.isArray(value) ? 'an array' : typeof value}`);
    }
    const token = this.#prefix + createHmac('sha256', this.#key!).update(this.#normalize(String(value))).digest('base64url');
    container[this.#to ?? key] = token;
  }
}

/**
 * A rule of per-subject tokens: before each record, {@link begin} picks the record's
 * subject key; the key derived for it and the scope is kept for as long as the subject
 * key is cached (a weak map: an evicted key takes its derived key with it).
 */
class SubjectTokenRule extends TokenRule {
  readonly #scope: string;
  readonly #derived = new WeakMap<SubjectKey, { key: KeyObject; prefix: string }>();

  constructor(path: FieldPath, scope: string, normalize: (text: string) => string, to: string | undefined) {
    super(path, normalize, to);
    this.#scope = scope;
  }

  /** The subject key of the record whose fields are visited next. */
  begin(subjectKey: SubjectKey): void {
    let derived = this.#derived.get(subjectKey);
    if (derived === undefined) {
      derived = { key: subjectScopedKey(subjectKey.key, this.#scope), prefix: subjectTokenPrefix(subjectKey.keyId) };
      this.#derived.set(subjectKey, derived);
    }
    this.use(derived.key, derived.prefix);
  }
}

/** Checks one entry of `fields`. */
function checkField(path: FieldPath, field: TokenField): { scope: string; normalize: (text: string) => string; to: string | undefined } {
  const where = `fields[${JSON.stringify(path.text)}]`;
  if (!field || typeof field !== 'object') throw new ConfigError(`${where} must be an object like { scope: 'customer-email' }`);
  if (typeof field.scope !== 'string' || field.scope === '') throw new ConfigError(`${where}.scope must be a non-empty string, got ${JSON.stringify(field.scope)}`);
  if (field.to !== undefined) {
    if (typeof field.to !== 'string' || field.to === '' || field.to.includes('.')) throw new ConfigError(`${where}.to must be a field name without dots, got ${JSON.stringify(field.to)}`);
    if (!path.plain) throw new ConfigError(`${where}.to is not allowed on a path with *: the token replaces each value in place`);
  }
  return { scope: field.scope, normalize: normalizerOf(field.normalize ?? 'none', `${where}.normalize`), to: field.to };
}

/** One key per scope, derived with HKDF-SHA256: a token of one scope says nothing about another. */
function scopedKey(master: KeyObject, scope: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', master, 'tributary/tokenize/v1', scope, 32)));
}

/**
 * One key per subject and scope, derived with HKDF-SHA256 from the subject's random data
 * key under its own label (apart from the pseudonym's and the cipher's use of that key):
 * it exists only while the data key does.
 */
function subjectScopedKey(subjectKey: KeyObject, scope: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', subjectKey, 'tributary/tokenize/subject/v1', scope, 32)));
}

/** `st1:<subjectKeyId>:`: two colons, so never a scope-keyed `<keyId>:` token. */
function subjectTokenPrefix(subjectKeyId: string): string {
  return `st1:${subjectKeyId}:`;
}

function normalizerOf(normalize: TokenNormalization, where: string): (text: string) => string {
  if (typeof normalize === 'function') return normalize;
  switch (normalize) {
    case 'none':
      return (text) => text;
    case 'trim':
      return (text) => text.trim();
    case 'email':
      return (text) => text.trim().toLowerCase();
    case 'digits':
      return (text) => text.replace(/\D+/g, '');
    default:
      throw new ConfigError(`${where} must be 'none', 'trim', 'email', 'digits' or a function, got ${JSON.stringify(normalize)}`);
  }
}
