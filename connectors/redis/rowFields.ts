import type { TimeParts } from '../../lib/dates';
import type { EncodedRows } from '../../lib/sink';

/** What a field read from a row's bytes is. */
export const enum FieldKind {
  /** The row has no such field (or the row is not a JSON object or array). */
  Missing = 0,
  String = 1,
  /** A JSON number. */
  Number = 2,
  /** null, true, false, an object or an array. */
  Other = 3,
}

/** What the last string `skipString` passed held: an escape; only ASCII characters. */
let escaped = false;
let ascii = true;

/**
 * Past the JSON string of `body` (`view` its bytes) whose opening quote is at `at`
 * (`escaped` and `ascii` say what it held); `end` when it does not close before it. Four
 * bytes at a time while none of them is a quote, a backslash or past ASCII (bytes equal
 * to one are found as zero bytes of the word XORed with it).
 */
function skipString(body: Buffer, view: DataView, at: number, end: number): number {
  escaped = false;
  ascii = true;
  let i = at + 1;
  for (; i + 4 <= end; i += 4) {
    const word = view.getInt32(i, true);
    const quotes = word ^ 0x22222222;
    const backslashes = word ^ 0x5c5c5c5c;
    if ((word | ((quotes - 0x01010101) & ~quotes) | ((backslashes - 0x01010101) & ~backslashes)) & 0x80808080) break;
  }
  for (; i < end; i++) {
    const byte = body[i]!;
    if (byte === 34 /* " */) return i + 1;
    if (byte === 92 /* \ */) {
      escaped = true;
      i++;
    } else if (byte >= 0x80) ascii = false;
  }
  return end;
}

/** Past the JSON value (not a string) at `at`: at the `,`, `]` or `}` that ends it, nested values and their strings skipped. */
function skipValue(body: Buffer, view: DataView, at: number, end: number): number {
  let depth = 0;
  for (let i = at; i < end; i++) {
    const byte = body[i]!;
    if (byte === 34) i = skipString(body, view, i, end) - 1;
    else if (byte === 91 /* [ */ || byte === 123 /* { */) depth++;
    else if (byte === 93 /* ] */ || byte === 125 /* } */) {
      if (depth === 0) return i;
      depth--;
    } else if (byte === 44 /* , */ && depth === 0) return i;
  }
  return end;
}

/**
 * Reads a few fields of JSON rows from their bytes, without parsing the rows: a row that is
 * a JSON array (`columns` given: its values in their order) or a JSON object (its keys, the
 * last of a name counting, as JSON.parse reads it). After `read`, field `i`'s value is
 * `kind(i)`, its text `string(i)` or `number(i)`; `isoUtc(i)` reads a time at once.
 * Rows come from the project's encoders, so they are well-formed JSON; bytes that are not
 * never make it read past the row, and a field they hide reads as Missing or Other.
 */
export class RowFields {
  readonly #names: readonly string[];
  /** Each name's JSON text (quoted): an object's keys are compared with these bytes. */
  readonly #quoted: readonly Buffer[];
  /** For the array rows of `#columns`: the field each column is (-1: none), and the last column read. */
  #columns: readonly string[] | undefined;
  #fieldOfColumn = new Int32Array(0);
  #lastColumn = -1;
  readonly #kinds: Uint8Array;
  readonly #starts: Float64Array;
  readonly #ends: Float64Array;
  /** Whether a string field holds an escape, or a character that is not ASCII. */
  readonly #escaped: Uint8Array;
  readonly #ascii: Uint8Array;
  #body: Buffer = Buffer.alloc(0);
  #view: DataView = new DataView(new ArrayBuffer(0));

  constructor(names: readonly string[]) {
    this.#names = names;
    this.#quoted = names.map((name) => Buffer.from(JSON.stringify(name)));
    this.#kinds = new Uint8Array(names.length);
    this.#starts = new Float64Array(names.length);
    this.#ends = new Float64Array(names.length);
    this.#escaped = new Uint8Array(names.length);
    this.#ascii = new Uint8Array(names.length);
  }

  /** Reads row `index` of `rows` (its bytes without their newline). */
  read(rows: EncodedRows, index: number): void {
    const body = rows.body;
    if (body !== this.#body) {
      this.#body = body;
      this.#view = new DataView(body.buffer, body.byteOffset, body.length);
    }
    this.#kinds.fill(FieldKind.Missing);
    const start = index === 0 ? 0 : rows.ends[index - 1]!;
    const end = rows.ends[index]! - 1;
    if (body[start] === 91 /* [ */ && rows.columns !== undefined) this.#readArray(body, start + 1, end, rows.columns);
    else if (body[start] === 123 /* { */) this.#readObject(body, start + 1, end);
  }

  #readArray(body: Buffer, at: number, end: number, columns: readonly string[]): void {
    if (columns !== this.#columns) this.#plan(columns);
    const fieldOfColumn = this.#fieldOfColumn;
    for (let column = 0; column <= this.#lastColumn && at < end; column++) {
      const valueEnd = body[at] === 34 ? skipString(body, this.#view, at, end) : skipValue(body, this.#view, at, end);
      const field = fieldOfColumn[column]!;
      if (field >= 0) this.#found(field, body, at, valueEnd);
      // Past the comma.
      at = valueEnd + 1;
    }
  }

  /** Which column is which field, for the array rows of `columns`. */
  #plan(columns: readonly string[]): void {
    this.#columns = columns;
    this.#fieldOfColumn = new Int32Array(columns.length).fill(-1);
    this.#lastColumn = -1;
    for (let field = this.#names.length - 1; field >= 0; field--) {
      const column = columns.indexOf(this.#names[field]!);
      if (column < 0) continue;
      this.#fieldOfColumn[column] = field;
      this.#lastColumn = Math.max(this.#lastColumn, column);
    }
  }

  #readObject(body: Buffer, at: number, end: number): void {
    while (at < end && body[at] === 34) {
      const keyEnd = skipString(body, this.#view, at, end);
      const field = escaped ? this.#names.indexOf(parseJson(body, at, keyEnd) as string) : this.#fieldOfKey(body, at, keyEnd);
      // Past the colon.
      const valueAt = keyEnd + 1;
      if (body[keyEnd] !== 58 /* : */ || valueAt >= end) return;
      const valueEnd = body[valueAt] === 34 ? skipString(body, this.#view, valueAt, end) : skipValue(body, this.#view, valueAt, end);
      if (field >= 0) this.#found(field, body, valueAt, valueEnd);
      at = valueEnd + 1;
    }
  }

  /** The field whose quoted name is `body[start, end)`, or -1. */
  #fieldOfKey(body: Buffer, start: number, end: number): number {
    for (let field = 0; field < this.#quoted.length; field++) {
      const quoted = this.#quoted[field]!;
      if (quoted.length !== end - start) continue;
      let i = 1;
      while (i < quoted.length && quoted[i] === body[start + i]) i++;
      if (i === quoted.length) return field;
    }
    return -1;
  }

  #found(field: number, body: Buffer, start: number, end: number): void {
    const first = body[start]!;
    if (first === 34) {
      this.#kinds[field] = FieldKind.String;
      this.#escaped[field] = escaped ? 1 : 0;
      this.#ascii[field] = ascii ? 1 : 0;
    } else this.#kinds[field] = first === 45 /* - */ || (first >= 48 && first <= 57) ? FieldKind.Number : FieldKind.Other;
    this.#starts[field] = start;
    this.#ends[field] = end;
  }

  kind(field: number): FieldKind {
    return this.#kinds[field]!;
  }

  /** A String field's text. */
  string(field: number): string {
    const start = this.#starts[field]!;
    const end = this.#ends[field]!;
    if (this.#escaped[field] === 1) return parseJson(this.#body, start, end) as string;
    return this.#ascii[field] === 1 ? latin1(this.#body, start + 1, end - 1) : this.#body.toString('utf8', start + 1, end - 1);
  }

  /** Whether a field is a String of ASCII characters without an escape, not empty: its bytes `body[start, end)` are then its JSON.stringify text, quotes included. */
  plain(field: number): boolean {
    return this.#kinds[field] === FieldKind.String && this.#escaped[field] === 0 && this.#ascii[field] === 1 && this.#ends[field]! - this.#starts[field]! > 2;
  }

  /** The rows read from; a field's bytes lie at `[start(field), end(field))` in it. */
  get body(): Buffer {
    return this.#body;
  }

  start(field: number): number {
    return this.#starts[field]!;
  }

  end(field: number): number {
    return this.#ends[field]!;
  }

  /** A Number field's value. */
  number(field: number): number {
    return Number(latin1(this.#body, this.#starts[field]!, this.#ends[field]!));
  }

  /**
   * A String field holding `YYYY-MM-DDTHH:mm:ss.sssZ`, as its parts written into `parts`;
   * false (parts undefined) for any other text.
   */
  isoUtc(field: number, parts: TimeParts): boolean {
    const start = this.#starts[field]! + 1;
    if (this.#ends[field]! - start !== 25) return false;
    const b = this.#body;
    if (b[start + 4] !== 45 || b[start + 7] !== 45 || b[start + 10] !== 84 || b[start + 13] !== 58 || b[start + 16] !== 58 || b[start + 19] !== 46 || b[start + 23] !== 90) return false;
    parts.year = digit(b, start) * 1000 + digit(b, start + 1) * 100 + digit(b, start + 2) * 10 + digit(b, start + 3);
    parts.month = digit(b, start + 5) * 10 + digit(b, start + 6);
    parts.day = digit(b, start + 8) * 10 + digit(b, start + 9);
    parts.hour = digit(b, start + 11) * 10 + digit(b, start + 12);
    parts.minute = digit(b, start + 14) * 10 + digit(b, start + 15);
    parts.second = digit(b, start + 17) * 10 + digit(b, start + 18);
    parts.millisecond = digit(b, start + 20) * 100 + digit(b, start + 21) * 10 + digit(b, start + 22);
    return true;
  }
}

/** The digit `body[at]` stands for, or NaN. */
function digit(body: Buffer, at: number): number {
  const d = body[at]! - 48;
  return d >= 0 && d <= 9 ? d : NaN;
}

/** `body.toString('latin1', start, end)` without its checks of the arguments. */
const latin1 = (body: Buffer, start: number, end: number): string => (body as unknown as { latin1Slice(start: number, end: number): string }).latin1Slice(start, end);

/** JSON.parse of `body[start, end)`; undefined where it is not JSON. */
function parseJson(body: Buffer, start: number, end: number): unknown {
  try {
    return JSON.parse(body.toString('utf8', start, end));
  } catch {
    return undefined;
  }
}
