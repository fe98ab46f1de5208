import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError } from '../lib/errors';
import { booleanOption } from '../lib/options';
import { compilePaths, forEachField, type FieldPath, type FieldVisitor } from './fieldPaths';
import { REDACTED } from './sensitive';

export interface MaskOptions {
  /**
   * Paths of card numbers (`payment.pan`, `cards.*.number`), besides the fields found by
   * name anywhere in the record (`card_number`, `cardNo`, `ccNumber`, `pan`, `card`, …).
   */
  cardFields?: readonly string[];
  /**
   * Paths of further secrets to remove (a vendor's `sc` for its card code), besides the
   * fields found by name anywhere in the record (`cvv`, `CVC2`, `card_security_code`, …).
   */
  removeFields?: readonly string[];
  /** Find card numbers by field name too. @default true */
  cardsByName?: boolean;
}

/**
 * Masks payment card numbers to BIN + last 4 and removes card security codes (PCI DSS).
 *
 * A card number (spaces and dashes allowed) with 12-19 digits that passes the Luhn check
 * becomes its first 6 and last 4 digits around asterisks (`411111******1111`); any other
 * value in a card field becomes `[redacted]`, so a mistyped number never passes either
 * (a field found only by its name keeps values with fewer than 12 digits: `card: 'VISA'`).
 * CVV/CVC fields are removed wherever they are, recognised by name whatever the vendor's
 * spelling (`cvv`, `CVV2`, `card_cvc`, `securityCode`, `card-verification-value`, …).
 * Once masked, a record's received payload is dropped, so a later refusal dead-letters
 * the masked record, never the card data.
 *
 * ## Example
 * ```ts
 * import { mask } from 'tributary';
 * records$.pipe(mask({ cardFields: ['payment.instrument'] }));
 * // { payment: { instrument: '4111 1111 1111 1111', cvv: '123' } } → { payment: { instrument: '411111******1111' } }
 * ```
 *
 * @param options Card and secret fields beyond those found by name.
 * @returns An operator passing records on masked.
 */
export function mask<T>(options: MaskOptions = {}): OperatorFunction<Envelope<T>, Envelope<T>> {
  if (options === null || typeof options !== 'object') throw new ConfigError('options must be an object');
  const cardFields = options.cardFields === undefined ? [] : compilePaths(options.cardFields, 'cardFields');
  const removeFields = options.removeFields === undefined ? [] : compilePaths(options.removeFields, 'removeFields');
  const names = new KeyNames(booleanOption(options.cardsByName, true, 'cardsByName'));
  return (source) =>
    new Observable<Envelope<T>>((subscriber) =>
      source.subscribe({
        next(envelope) {
          if (!maskRecord(envelope.value, names, cardFields, removeFields)) {
            envelope.raw = JSON.stringify(REDACTED);
            envelope.reject({ stage: 'mask', code: 'MASK_DEPTH', message: `the record nests deeper than ${MAX_DEPTH} levels`, path: '' });
            return;
          }
          envelope.raw = undefined; // from here on, a dead letter shows the masked record
          subscriber.next(envelope);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
}

/**
 * A card number as BIN + last 4 (`411111******1111`) when it is one (12-19 digits, spaces
 * or dashes between, Luhn-valid), `[redacted]` otherwise. Already-masked text stays.
 */
export function maskCardNumber(value: unknown): string {
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'bigint') return REDACTED;
  const text = String(value).trim();
  if (MASKED.test(text)) return text;
  const digits = text.replace(SEPARATORS, '');
  if (!CARD.test(digits) || !luhn(digits)) return REDACTED;
  return digits.slice(0, 6) + '*'.repeat(digits.length - 10) + digits.slice(-4);
}

/** True when `digits` (0-9 only) passes the Luhn check. */
export function luhn(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double && (d *= 2) > 9) d -= 9;
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** True when a field of this name holds a card security code (CVV, CVC, CID, …). */
export function isCardSecretName(name: string): boolean {
  return SECRET_NAME.test(canonical(name));
}

const MAX_DEPTH = 64;
const MASKED = /^\d{6}\*{2,9}\d{4}$/;
const SEPARATORS = /[\s-]/g;
const CARD = /^\d{12,19}$/;
// Names are compared lower-case with everything but letters and digits removed.
const SECRET_NAME = /cvv|cvc|cvn|cvd|cav2|cid2|securitycode|verificationcode|verificationvalue|verificationnumber|^csc$|^cid$|^card(csc|cid)$/;
const CARD_NAME = /^(card|cc|creditcard|debitcard|paymentcard|card(number|num|no|nr|pan)|cc(number|num|no|nr)|ccn|pan|primaryaccountnumber|(credit|debit|payment)card(number|num|no|nr))$/;

function digitCount(value: unknown): number {
  const text = String(value);
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) count++;
  }
  return count;
}

const canonical = (name: string) => name.toLowerCase().replace(/[^a-z0-9]/g, '');

const PLAIN = 0;
const SECRET = 1;
const CARD_NUMBER = 2;

/** Classifies field names, remembering the answers (records repeat the same few names). */
class KeyNames {
  readonly #cardsByName: boolean;
  readonly #known = new Map<string, number>();

  constructor(cardsByName: boolean) {
    this.#cardsByName = cardsByName;
  }

  kind(name: string): number {
    let kind = this.#known.get(name);
    if (kind === undefined) {
      const text = canonical(name);
      kind = SECRET_NAME.test(text) ? SECRET : this.#cardsByName && CARD_NAME.test(text) ? CARD_NUMBER : PLAIN;
      if (this.#known.size >= 10_000) this.#known.clear();
      this.#known.set(name, kind);
    }
    return kind;
  }
}

const cardMasker: FieldVisitor = {
  visit(container, key) {
    container[key] = maskCardNumber(container[key]);
  },
};

const remover: FieldVisitor = {
  visit(container, key) {
    if (Array.isArray(container)) container[key as number] = REDACTED;
    else delete container[key];
  },
};

/** Masks `value` in place; false when it nests too deep to be checked. */
function maskRecord(value: unknown, names: KeyNames, cardFields: readonly FieldPath[], removeFields: readonly FieldPath[]): boolean {
  if (!walk(value, names, 0)) return false;
  for (const path of removeFields) forEachField(value, path, remover);
  for (const path of cardFields) forEachField(value, path, cardMasker);
  return true;
}

function walk(node: unknown, names: KeyNames, depth: number): boolean {
  if (node === null || typeof node !== 'object') return true;
  if (depth >= MAX_DEPTH) return false;
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) if (!walk(node[i], names, depth + 1)) return false;
    return true;
  }
  const record = node as Record<string, unknown>;
  for (const key in record) {
    if (!Object.hasOwn(record, key)) continue;
    const kind = names.kind(key);
    const value = record[key];
    if (kind === SECRET) delete record[key];
    else if (kind === CARD_NUMBER && value !== null && typeof value !== 'object' && value !== undefined) {
      // Found by name only: text with fewer than 12 digits (a brand, a country code) cannot hold a card number.
      if (digitCount(value) >= 12) record[key] = maskCardNumber(value);
    }
    else if (value !== null && typeof value === 'object' && !walk(value, names, depth + 1)) return false;
  }
  return true;
}
