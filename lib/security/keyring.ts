import { createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors';

/** One secret of a keyring, as a provider hands it over. */
export interface KeyMaterial {
  /** Written into every ciphertext and token: letters, digits, `_` and `-`, 1–64 characters. */
  id: string;
  /** Exactly 32 bytes (AES-256, HMAC-SHA256). */
  key: Uint8Array;
}

/** What a keyring is made of: its keys and the one that encrypts. */
export interface KeyringSpec {
  keys: readonly KeyMaterial[];
  /** Id of the key new ciphertexts use; the others only decrypt. @default the last key */
  primary?: string;
}

/**
 * Where keys come from: implement it over a KMS (fetch and unwrap data keys) or a secret
 * store. `load` is called once per {@link Keyring.load}; keys are held in memory as
 * `KeyObject`s after that and never written anywhere.
 */
export interface KeyProvider {
  load(): Promise<KeyringSpec> | KeyringSpec;
}

/** A rotation: the new primary key id and the one it replaced. */
export interface KeyRotation {
  keyId: string;
  previous: string;
}

const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;
const KEY_BYTES = 32;

/**
 * The keys of field encryption and tokenization, by id. One key is primary (new
 * ciphertexts use it); every key decrypts what it encrypted, so rotation is: add a new
 * key as primary, keep the old ones until the data they protect is re-encrypted or gone.
 *
 * Keys are turned into `KeyObject`s once; the raw bytes given are not kept.
 *
 * ## Example
 * ```ts
 * import { Keyring } from 'tributary';
 * const keyring = Keyring.fromEnv('TRIBUTARY_KEYRING'); // {"primary":"k2","keys":{"k1":"<base64>","k2":"<base64>"}}
 * keyring.rotate({ id: 'k3', key: newKeyBytes }); // k3 encrypts from now on; k1, k2 still decrypt
 * ```
 */
export class Keyring {
  #keys = new Map<string, KeyObject>();
  #primary!: string;
  #rotateListeners = new Set<(event: KeyRotation) => void>();

  /** @param spec The keys, and which one is primary. */
  constructor(spec: KeyringSpec) {
    if (!spec || !Array.isArray(spec.keys) || spec.keys.length === 0) throw new ConfigError('keyring.keys must hold at least one key');
    for (const material of spec.keys) this.#add(material);
    const primary = spec.primary ?? spec.keys[spec.keys.length - 1]!.id;
    if (!this.#keys.has(primary)) throw new ConfigError(`keyring.primary must be the id of one of its keys (${[...this.#keys.keys()].join(', ')}), got ${JSON.stringify(primary)}`);
    this.#primary = primary;
  }

  /** Id of the key that encrypts. */
  get primaryId(): string {
    return this.#primary;
  }

  /** Ids of every key, primary or not. */
  get ids(): string[] {
    return [...this.#keys.keys()];
  }

  /** The key with this id, or undefined. */
  key(id: string): KeyObject | undefined {
    return this.#keys.get(id);
  }

  /** The primary key. */
  primaryKey(): KeyObject {
    return this.#keys.get(this.#primary)!;
  }

  /** Adds `material` and makes it primary; earlier keys go on decrypting. */
  rotate(material: KeyMaterial): void {
    this.#add(material);
    const previous = this.#primary;
    this.#primary = material.id;
    for (const listener of this.#rotateListeners) listener({ keyId: material.id, previous });
  }

  /** Calls `listener` after each {@link rotate} (an audit log records them); returns the unsubscribe function. */
  onRotate(listener: (event: KeyRotation) => void): () => void {
    this.#rotateListeners.add(listener);
    return () => this.#rotateListeners.delete(listener);
  }

  /**
   * A keyring from a JSON document in an environment variable:
   * `{"primary":"k2","keys":{"k1":"<base64 of 32 bytes>","k2":"…"}}`.
   */
  static fromEnv(variable = 'TRIBUTARY_KEYRING', env: NodeJS.ProcessEnv = process.env): Keyring {
    const text = env[variable];
    if (text === undefined || text === '') throw new ConfigError(`environment variable ${variable} is not set: it must hold the keyring as JSON`);
    return new Keyring(parseKeyringJson(text, `environment variable ${variable}`));
  }

  /** A keyring from a JSON file of the same shape as {@link Keyring.fromEnv}'s variable. */
  static fromFile(path: string): Keyring {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (cause) {
      throw new ConfigError(`keyring file cannot be read: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`);
    }
    return new Keyring(parseKeyringJson(text, 'keyring file'));
  }

  /** A keyring from a provider (a KMS client, a secret store). */
  static async load(provider: KeyProvider): Promise<Keyring> {
    if (!provider || typeof provider.load !== 'function') throw new ConfigError('provider must have a load() method');
    return new Keyring(await provider.load());
  }

  #add(material: KeyMaterial): void {
    if (!material || typeof material.id !== 'string' || !KEY_ID.test(material.id)) {
      throw new ConfigError(`keyring key ids must be 1-64 letters, digits, _ or -, got ${JSON.stringify(material?.id)}`);
    }
    if (this.#keys.has(material.id)) throw new ConfigError(`keyring key id ${material.id} is used twice`);
    if (!(material.key instanceof Uint8Array) || material.key.byteLength !== KEY_BYTES) {
      // The message names the length, never the bytes.
      const length = material.key instanceof Uint8Array ? material.key.byteLength : typeof material.key;
      throw new ConfigError(`keyring key ${material.id} must be ${KEY_BYTES} bytes, got ${length}`);
    }
    this.#keys.set(material.id, createSecretKey(material.key));
  }
}

function parseKeyringJson(text: string, where: string): KeyringSpec {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new ConfigError(`${where} must be JSON like {"primary":"k1","keys":{"k1":"<base64>"}}`); // no parser message: it may quote the key
  }
  const keys = (document as { keys?: unknown })?.keys;
  if (keys === null || typeof keys !== 'object' || Array.isArray(keys)) throw new ConfigError(`${where}: keys must be an object of key id → base64 key`);
  const materials: KeyMaterial[] = [];
  for (const [id, encoded] of Object.entries(keys)) {
    if (typeof encoded !== 'string' || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(encoded)) throw new ConfigError(`${where}: key ${id} must be base64 text`);
    materials.push({ id, key: Buffer.from(encoded, 'base64') });
  }
  const primary = (document as { primary?: unknown }).primary;
  if (primary !== undefined && typeof primary !== 'string') throw new ConfigError(`${where}: primary must be a key id`);
  return { keys: materials, primary };
}
