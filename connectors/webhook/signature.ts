import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { ConfigError } from '../../lib/errors';

/**
 * The signing scheme (that of the Standard Webhooks specification): the vendor sends
 * `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
 * space-separated list of `v1,<base64 HMAC-SHA256>` computed with a shared secret over
 * `<id>.<timestamp>.<raw body>`. Signing id and timestamp with the body means neither
 * can be changed to get around the replay window.
 */
export const SIGNATURE_HEADERS = { id: 'webhook-id', timestamp: 'webhook-timestamp', signature: 'webhook-signature' } as const;

/** A secret as given: bytes, or text (`whsec_<base64>` is decoded, other text taken as UTF-8). */
export type WebhookSecret = string | Uint8Array;

/** The secret's key bytes: `whsec_` prefixed secrets carry base64, as Standard Webhooks issues them. */
export function secretKey(secret: WebhookSecret, where: string): KeyObject {
  let bytes: Buffer;
  if (typeof secret === 'string') bytes = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
  else if (secret instanceof Uint8Array) bytes = Buffer.from(secret);
  else throw new ConfigError(`${where} must be a string or bytes, got ${typeof secret}`);
  // Fewer than 16 bytes can be guessed; Standard Webhooks asks for 24 to 64.
  if (bytes.length < 16) throw new ConfigError(`${where} must hold at least 16 bytes, got ${bytes.length}`);
  return createSecretKey(bytes);
}

/**
 * The `webhook-signature` header a vendor sends for `body`: what a sender must compute.
 *
 * ## Example
 * ```ts
 * import { signWebhook } from 'tributary/webhook';
 * const headers = signWebhook('whsec_…', 'msg_1', Math.floor(Date.now() / 1000), body);
 * ```
 */
export function signWebhook(secret: WebhookSecret | KeyObject, id: string, timestamp: number, body: string | Uint8Array): Record<string, string> {
  const key = isKeyObject(secret) ? secret : secretKey(secret, 'secret');
  return {
    [SIGNATURE_HEADERS.id]: id,
    [SIGNATURE_HEADERS.timestamp]: String(timestamp),
    [SIGNATURE_HEADERS.signature]: `v1,${mac(key, id, String(timestamp), body).toString('base64')}`,
  };
}

/**
 * True when one of the `v1` signatures of `header` was made with one of `keys` (several
 * during a rotation). Every comparison is constant-time and every key is tried, so the
 * time taken says nothing about which part matched.
 */
export function signatureMatches(keys: readonly KeyObject[], id: string, timestamp: string, body: Uint8Array, header: string): boolean {
  const presented: Buffer[] = [];
  for (const part of header.split(' ')) {
    if (!part.startsWith('v1,')) continue;
    const bytes = Buffer.from(part.slice(3), 'base64');
    if (bytes.length === 32) presented.push(bytes);
  }
  if (presented.length === 0) return false;
  let matched = false;
  for (const key of keys) {
    const expected = mac(key, id, timestamp, body);
    for (const candidate of presented) if (timingSafeEqual(expected, candidate)) matched = true;
  }
  return matched;
}

function mac(key: KeyObject, id: string, timestamp: string, body: string | Uint8Array): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
}

function isKeyObject(value: unknown): value is KeyObject {
  return typeof value === 'object' && value !== null && (value as KeyObject).type === 'secret' && typeof (value as KeyObject).export === 'function';
}
