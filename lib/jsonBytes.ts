import type { RowBytes } from './sink';

/**
 * JSON written as UTF-8 bytes straight into a row buffer: the bytes
 * `Buffer.from(JSON.stringify(values))` holds, without the string. JSON.stringify returns
 * a rope of parts that Buffer.write must first copy into one string: two strings a row,
 * about twice the row's size, for the garbage collector. Here printable ASCII text and
 * small integers (almost every value of a booking row) are written byte by byte; any
 * other value is written as JSON.stringify writes it.
 */

/** `text` as UTF-8 at `out.at`. */
export function writeText(out: RowBytes, text: string): void {
  // At most 3 bytes of UTF-8 a UTF-16 unit.
  const buffer = out.room(3 * text.length);
  // Short ASCII text (a bare decimal, a number's or a boolean's JSON) byte by byte: cheaper
  // than a call into Buffer.write. Whatever holds another unit is written over by it.
  if (text.length <= SHORT) {
    let at = out.at;
    for (let i = 0; i < text.length; i++) {
      const unit = text.charCodeAt(i);
      if (unit > 0x7f) {
        at = -1;
        break;
      }
      buffer[at++] = unit;
    }
    if (at >= 0) {
      out.at = at;
      return;
    }
  }
  out.at += buffer.write(text, out.at);
}

/** Text up to this long is tried byte by byte first. */
const SHORT = 32;

/** `JSON.stringify(values)`'s bytes; throws what it throws (a BigInt), with `out.at` where it was. */
export function writeJsonArray(out: RowBytes, values: readonly unknown[]): void {
  const start = out.at;
  try {
    out.room(1)[out.at++] = 0x5b; // [
    for (let i = 0; i < values.length; i++) {
      if (i > 0) out.room(1)[out.at++] = 0x2c; // ,
      writeJsonValue(out, values[i]);
    }
    out.room(1)[out.at++] = 0x5d; // ]
  } catch (error) {
    out.at = start;
    throw error;
  }
}

/** One array item as JSON.stringify writes it. */
function writeJsonValue(out: RowBytes, value: unknown): void {
  if (typeof value === 'string') {
    if (!writePlainString(out, value)) writeText(out, JSON.stringify(value));
  } else if (typeof value === 'number' && value >= 0 && (value | 0) === value) {
    // -0 too: JSON.stringify writes it as 0.
    writeSmallInteger(out, value);
  } else if (value === null) {
    const buffer = out.room(4);
    buffer[out.at] = 0x6e; // n
    buffer[out.at + 1] = 0x75; // u
    buffer[out.at + 2] = 0x6c; // l
    buffer[out.at + 3] = 0x6c; // l
    out.at += 4;
  } else {
    // Other numbers (NaN is null, 1e21 is 1e+21), booleans, objects, toJSON: JSON.stringify's own
    // text; undefined, a function or a symbol, which it leaves out, is null in an array.
    writeText(out, JSON.stringify(value) ?? 'null');
  }
}

/**
 * `"text"` when every unit of `text` is printable ASCII other than `"` and `\`, which
 * JSON.stringify writes as they are; false (nothing written) otherwise.
 */
function writePlainString(out: RowBytes, text: string): boolean {
  const buffer = out.room(text.length + 2);
  let at = out.at;
  buffer[at++] = 0x22;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x20 || unit > 0x7e || unit === 0x22 || unit === 0x5c) return false;
    buffer[at++] = unit;
  }
  buffer[at++] = 0x22;
  out.at = at;
  return true;
}

/** A 31-bit non-negative integer's digits. */
function writeSmallInteger(out: RowBytes, value: number): void {
  let width = 1;
  for (let rest = value; rest >= 10; rest = (rest / 10) | 0) width++;
  const buffer = out.room(width);
  let rest = value;
  for (let at = out.at + width - 1; at >= out.at; at--) {
    buffer[at] = 0x30 + (rest % 10);
    rest = (rest / 10) | 0;
  }
  out.at += width;
}

/** Whether a for...in over `row` would visit a key it does not own: one its prototypes have. */
function inheritsEnumerable(row: object): boolean {
  const prototype = Object.getPrototypeOf(row) as object | null;
  if (prototype === null) return false;
  for (const _ in prototype) return true;
  return false;
}

/** Keys whose bytes a writer keeps: a row with more writes the rest as it goes. */
const KEPT_KEYS = 64;

/** Writes `JSON.stringify(row)`'s bytes: see {@link jsonObjectWriter}. */
export type JsonObjectWriter = (out: RowBytes, row: Record<string, unknown>, bare?: (key: string, text: string) => boolean) => boolean;

/**
 * A writer of `JSON.stringify(row)`'s bytes for plain objects (the caller checks: no class
 * instance, no toJSON), with the string value of each key `bare` accepts written without
 * its quotes; false (nothing written) when a value is an object or array and `bare` is
 * given, which the caller then writes its own way (it may hold keys to write bare too).
 * Throws what JSON.stringify throws, with `out.at` where it was.
 *
 * The writer keeps each key's bytes (`"key":`) by its place in the row: rows of one
 * shape, as a mapping makes them, copy them instead of spelling every key out again. A
 * key at a place that held another takes it over; only the first 64 places are kept.
 */
export function jsonObjectWriter(): JsonObjectWriter {
  const keys: string[] = [];
  const heads: Buffer[] = [];
  return (out, row, bare) => {
    const start = out.at;
    try {
      out.room(1)[out.at++] = 0x7b; // {
      let first = true;
      // for...in reads a row's keys (in Object.keys' order) without an array of them; it also
      // visits what the row inherits, which JSON leaves out: checked only when there is any.
      const inherits = inheritsEnumerable(row);
      let k = -1;
      for (const key in row) {
        if (inherits && !Object.hasOwn(row, key)) continue;
        k++;
        const value = row[key];
        // The value's own text when it is not written byte by byte below; undefined for a key JSON leaves out.
        let text: string | undefined;
        if (typeof value === 'object' && value !== null) {
          if (bare) {
            out.at = start;
            return false;
          }
          text = JSON.stringify(value);
          if (text === undefined) continue;
        } else if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue;
        if (!first) out.room(1)[out.at++] = 0x2c; // ,
        first = false;
        if (k < KEPT_KEYS) {
          let head = heads[k]!;
          if (keys[k] !== key) {
            head = Buffer.from(`${JSON.stringify(key)}:`);
            keys[k] = key;
            heads[k] = head;
          }
          const buffer = out.room(head.length);
          let at = out.at;
          for (let j = 0; j < head.length; j++) buffer[at++] = head[j]!;
          out.at = at;
        } else {
          writeJsonValue(out, key);
          out.room(1)[out.at++] = 0x3a; // :
        }
        if (text !== undefined) writeText(out, text);
        else if (typeof value === 'string' && bare?.(key, value)) writeText(out, value);
        else writeJsonValue(out, value);
      }
      out.room(1)[out.at++] = 0x7d; // }
      return true;
    } catch (error) {
      out.at = start;
      throw error;
    }
  };
}
