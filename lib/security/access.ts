import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { AccessDeniedError, ConfigError } from '../errors';

/**
 * Permissions are colon-separated names, checked in one place for every HTTP endpoint and
 * for `decrypt`: `webhook:post:<vendor>`, `admin`, `metrics:read`, `decrypt:<field>`, … A
 * role grants patterns in which `*` stands for one whole segment, and a trailing `*` for
 * the rest (`webhook:post:*`, `decrypt:*`).
 */
export type Permission = string;

/** A stored API key: its id, the SHA-256 of its secret (never the secret), its roles. */
export interface ApiKeyRecord {
  id: string;
  /** Hex SHA-256 of the secret part, from {@link AccessControl.hashSecret}. */
  secretHash: string;
  roles: readonly string[];
}

/** Who asked, what for, and the answer: what an audit log records. */
export interface AccessDecision {
  allowed: boolean;
  permission: Permission;
  /** The key's id when it was recognised. */
  keyId: string | undefined;
  /** `ok`, `UNAUTHENTICATED` or `FORBIDDEN`. */
  outcome: 'ok' | 'UNAUTHENTICATED' | 'FORBIDDEN';
  /** Free text from the caller, e.g. the route or the reason for a decrypt. */
  context?: string;
  at: number;
}

export interface AccessControlOptions {
  /** Role name → granted permission patterns. */
  roles: Readonly<Record<string, readonly Permission[]>>;
  keys: readonly ApiKeyRecord[];
  /** Called for every decision, allowed or not: feed an audit log from here. */
  onDecision?: (decision: AccessDecision) => void;
}

/** A freshly made key: hand `token` to the caller once, store only `record`. */
export interface IssuedKey {
  token: string;
  record: ApiKeyRecord;
}

/**
 * Roles, permissions and hashed API keys. A presented key is `<id>.<secret>`; only the
 * SHA-256 of the secret is kept, which is enough because secrets are 256 random bits (a
 * slow password hash buys nothing against a guess of that size).
 *
 * ## Example
 * ```ts
 * import { AccessControl } from 'tributary';
 * const { token, record } = AccessControl.issueKey('acme-hook', ['vendor-acme']);
 * const access = new AccessControl({ roles: { 'vendor-acme': ['webhook:post:acme'] }, keys: [record] });
 * access.check(token, 'webhook:post:acme'); // returns the key id, or throws AccessDeniedError
 * ```
 */
export class AccessControl {
  readonly #roles = new Map<string, readonly RegExp[]>();
  /** Key id → its record and the bytes of its secret's hash. */
  readonly #keys = new Map<string, { record: ApiKeyRecord; hash: Buffer }>();
  readonly #onDecision: ((decision: AccessDecision) => void) | undefined;

  constructor(options: AccessControlOptions) {
    for (const [role, patterns] of Object.entries(options.roles ?? {})) {
      this.#roles.set(role, patterns.map((pattern) => patternOf(pattern, role)));
    }
    for (const key of options.keys ?? []) {
      if (!/^[A-Za-z0-9_-]+$/.test(key.id)) throw new ConfigError(`API key id must match [A-Za-z0-9_-]+, got ${JSON.stringify(key.id)}`);
      if (!/^[0-9a-f]{64}$/.test(key.secretHash)) throw new ConfigError(`API key ${key.id}: secretHash must be 64 hex digits (SHA-256)`);
      if (this.#keys.has(key.id)) throw new ConfigError(`API key id ${key.id} appears twice`);
      for (const role of key.roles) {
        if (!this.#roles.has(role)) throw new ConfigError(`API key ${key.id} names unknown role ${JSON.stringify(role)}`);
      }
      this.#keys.set(key.id, { record: key, hash: Buffer.from(key.secretHash, 'hex') });
    }
    this.#onDecision = options.onDecision;
  }

  /** Makes a new key with 256 random bits of secret. */
  static issueKey(id: string, roles: readonly string[]): IssuedKey {
    const secret = randomBytes(32).toString('base64url');
    return { token: `${id}.${secret}`, record: { id, secretHash: AccessControl.hashSecret(secret), roles } };
  }

  static hashSecret(secret: string): string {
    return createHash('sha256').update(secret).digest('hex');
  }

  /**
   * Whether each decision is reported to an `onDecision`. A caller may reuse a decision
   * (the same key asking the same permission again on one connection) only when not:
   * every decision reported stays every decision made.
   */
  get reportsDecisions(): boolean {
    return this.#onDecision !== undefined;
  }

  /** The decision for a presented token (or none) and a permission; reported to `onDecision`. */
  decide(token: string | undefined, permission: Permission, context?: string): AccessDecision {
    const key = this.#authenticate(token);
    const outcome = !key ? 'UNAUTHENTICATED' : this.#grants(key, permission) ? 'ok' : 'FORBIDDEN';
    const decision: AccessDecision = { allowed: outcome === 'ok', permission, keyId: key?.id, outcome, at: Date.now() };
    if (context !== undefined) decision.context = context;
    this.#onDecision?.(decision);
    return decision;
  }

  /** Returns the key id when allowed; throws {@link AccessDeniedError} otherwise. */
  check(token: string | undefined, permission: Permission, context?: string): string {
    const decision = this.decide(token, permission, context);
    if (decision.allowed) return decision.keyId!;
    const message =
      decision.outcome === 'UNAUTHENTICATED' ? 'a valid API key is required' : `key ${decision.keyId} lacks permission ${permission}`;
    throw new AccessDeniedError(message, decision.outcome as 'UNAUTHENTICATED' | 'FORBIDDEN', permission, decision.keyId);
  }

  #authenticate(token: string | undefined): ApiKeyRecord | undefined {
    if (typeof token !== 'string') return undefined;
    const dot = token.indexOf('.');
    if (dot <= 0) return undefined;
    const key = this.#keys.get(token.slice(0, dot));
    if (!key) return undefined;
    // One-shot hash: no Hash object per request.
    const presented = hash('sha256', token.slice(dot + 1), 'buffer');
    return timingSafeEqual(presented, key.hash) ? key.record : undefined;
  }

  #grants(key: ApiKeyRecord, permission: Permission): boolean {
    for (const role of key.roles) {
      for (const pattern of this.#roles.get(role) ?? []) if (pattern.test(permission)) return true;
    }
    return false;
  }
}

function patternOf(pattern: string, role: string): RegExp {
  if (typeof pattern !== 'string' || pattern === '' || /[^A-Za-z0-9_.*:-]/.test(pattern)) {
    throw new ConfigError(`role ${role}: permission patterns use letters, digits, _ . - : and *, got ${JSON.stringify(pattern)}`);
  }
  const segments = pattern.split(':').map((segment, i, all) => {
    if (segment === '*') return i === all.length - 1 ? '.*' : '[^:]+';
    if (segment.includes('*')) throw new ConfigError(`role ${role}: * must be a whole segment, got ${JSON.stringify(pattern)}`);
    return segment.replace(/[.-]/g, '\\$&');
  });
  return new RegExp(`^${segments.join(':')}$`);
}

/** The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 7235); `undefined` for any other header. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorization ?? '')?.[1];
}

/** The API key a request presents: `Authorization: Bearer <key>`, else `X-API-Key: <key>`. */
export function presentedKey(request: IncomingMessage): string | undefined {
  const bearer = bearerToken(request.headers.authorization);
  if (bearer !== undefined) return bearer;
  const header = request.headers['x-api-key'];
  return typeof header === 'string' ? header : undefined;
}
