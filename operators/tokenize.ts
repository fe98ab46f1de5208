import { createHmac, hkdfSync, type KeyObject, createSecretKey } from 'node:crypto';
import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError } from '../lib/errors';
import { Keyring } from '../lib/keyring';
import { pointerOf } from './encrypt';
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
  /** The keys. Tokens use one key for good: rotating it changes every token. */
  keyring: Keyring;
  /** The key id tokens are made with. @default the keyring's primary at construction */
  keyId?: string;
  /** Field path → how it is tokenized. Paths may use `*` for array elements; `to` then is not allowed. */
  fields: Readonly<Record<string, TokenField>>;
}

/**
 * Replaces chosen fields by a blind index: HMAC-SHA256 under a key scoped to what the
 * field identifies, so analysts can count and join distinct customers without plaintext.
 *
 * A token is `<keyId>:<base64url of the HMAC>`: the same value, scope and key always give
 * the same token; another key or scope gives another. Strings and numbers are tokenized;
 * a record with any other value there is dead-lettered, its configured fields redacted,
 * with code `TOKENIZE_TYPE`. Once tokenized, a record's received payload is dropped, so a
 * later refusal dead-letters the tokenized record, never the plaintext.
 *
 * ## Example
 * ```ts
 * import { tokenize, Keyring } from 'tributary';
 * const keyring = Keyring.fromEnv('TRIBUTARY_TOKEN_KEYS');
 * records$.pipe(tokenize({ keyring, fields: {
 *   email: { scope: 'customer-email', normalize: 'email', to: 'customer_token' },
 *   'passengers.*.phone': { scope: 'phone', normalize: 'digits' },
 * } }));
 * ```
 *
 * @param options The keyring, the key id and the fields.
 * @returns An operator passing records on with the tokens written.
 */
export function tokenize<T>(options: TokenizeOptions): OperatorFunction<Envelope<T>, Envelope<T>> {
  if (!options || typeof options !== 'object') throw new ConfigError('options must be an object with keyring and fields');
  if (!(options.keyring instanceof Keyring)) throw new ConfigError('keyring must be a Keyring (Keyring.fromEnv, Keyring.fromFile, Keyring.load or new Keyring)');
  const keyId = options.keyId ?? options.keyring.primaryId;
  const master = options.keyring.key(keyId);
  if (!master) throw new ConfigError(`keyId must be one of the keyring's ids (${options.keyring.ids.join(', ')}), got ${JSON.stringify(options.keyId)}`);
  if (!options.fields || typeof options.fields !== 'object') throw new ConfigError('fields must be an object of field path → { scope }');
  const paths = compilePaths(Object.keys(options.fields), 'fields');
  const rules = paths.map((path) => compileRule(path, options.fields[path.text]!, master, keyId));
  return (source) =>
    new Observable<Envelope<T>>((subscriber) =>
      source.subscribe({
        next(envelope) {
          let rule: TokenRule | undefined;
          try {
            for (rule of rules) forEachField(envelope.value, rule.path, rule);
          } catch (error) {
            rejectRedacted(envelope, paths, { stage: 'tokenize', code: 'TOKENIZE_TYPE', message: (error as Error).message, path: pointerOf(rule?.current ?? '') });
            return;
          }
          envelope.raw = undefined; // the received payload holds the plaintext: a later dead letter shows this record
          subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
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

class TokenRule implements FieldVisitor {
  readonly path: FieldPath;
  current = '';
  readonly #key: KeyObject;
  readonly #prefix: string;
  readonly #normalize: (text: string) => string;
  readonly #to: string | undefined;

  constructor(path: FieldPath, key: KeyObject, prefix: string, normalize: (text: string) => string, to: string | undefined) {
    this.path = path;
    this.#key = key;
    this.#prefix = prefix;
    this.#normalize = normalize;
    this.#to = to;
  }

  visit(container: any, key: string | number, path: string): void {
    this.current = path;
    const value = container[key];
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) {
      throw new TypeError(`${path}: expected text or a number to tokenize, got ${Array.isArray(value) ? 'an array' : typeof value}`);
    }
    const token = this.#prefix + createHmac('sha256', this.#key).update(this.#normalize(String(value))).digest('base64url');
    container[this.#to ?? key] = token;
  }
}

function compileRule(path: FieldPath, field: TokenField, master: KeyObject, keyId: string): TokenRule {
  const where = `fields[${JSON.stringify(path.text)}]`;
  if (!field || typeof field !== 'object') throw new ConfigError(`${where} must be an object like { scope: 'customer-email' }`);
  if (typeof field.scope !== 'string' || field.scope === '') throw new ConfigError(`${where}.scope must be a non-empty string, got ${JSON.stringify(field.scope)}`);
  if (field.to !== undefined) {
    if (typeof field.to !== 'string' || field.to === '' || field.to.includes('.')) throw new ConfigError(`${where}.to must be a field name without dots, got ${JSON.stringify(field.to)}`);
    if (!path.plain) throw new ConfigError(`${where}.to is not allowed on a path with *: the token replaces each value in place`);
  }
  return new TokenRule(path, scopedKey(master, field.scope), `${keyId}:`, normalizerOf(field.normalize ?? 'none', `${where}.normalize`), field.to);
}

/** One key per scope, derived with HKDF-SHA256: a token of one scope says nothing about another. */
function scopedKey(master: KeyObject, scope: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', master, 'tributary/tokenize/v1', scope, 32)));
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
