import { isAscii, isUtf8 } from 'node:buffer';
import { createHash, type Hash } from 'node:crypto';
import type { RawExcerpt } from '../lib/envelope';
import { tooDeep, tooLarge, type ResolvedRecordLimits } from '../lib/limits';
import type { FileEncoding } from './encoding';
import { HALF_CHARACTER, isUtf16, unpairedSurrogate, Utf16Units } from './utf16';

/** One record cut from a byte stream, or the reason a stretch of bytes is not one. */
export interface Frame {
  /** The record's bytes (a view into the chunk: decode before the next push). */
  bytes: Buffer;
  /** Byte offset of the record's first byte in the file. */
  offset: number;
  /** 1-based line of the record's first byte. */
  line: number;
  /** Set when `bytes` could not be framed as a record. */
  error?: { code: string; message: string };
  /** False when `bytes` is not valid UTF-8. */
  utf8: boolean;
  /** The record's text, when the framer decoded it already (ASCII lines); `bytes` is then empty. */
  text?: string;
  /** The record, when the framer parsed it already (CSV, XML); `bytes` is then empty. */
  value?: unknown;
  /** Bytes the record took in the input, when `bytes` does not hold them all. */
  size?: number;
  /**
   * Set on a refused stretch too long to keep: `bytes` is then its first bytes, `size` its
   * length and this its SHA-256 (hex).
   */
  sha256?: string;
}

export interface Framer {
  /** Frames the records completed by `chunk`. */
  push(chunk: Buffer): Frame[];
  /** Frames what is left at the end of the input. */
  end(): Frame[];
}

/** Longest record and deepest nesting: the limits every entry shares (`lib/limits.ts`). */
export type FramingLimits = ResolvedRecordLimits;

const NEWLINE = 0x0a;
const CR = 0x0d;
/** How much of a refused record a frame keeps, for the dead letter. */
export const EXCERPT_BYTES = 1024;
const BOM = [0xef, 0xbb, 0xbf];
/** A UTF-16 byte order mark, as the one code unit it is. */
const UTF16_BOM = [0xfeff];

/**
 * A refused stretch of input, from where its record began to where reading resumes, as
 * it streams by: kept whole while it is within `keep` bytes; beyond, only its first
 * {@link EXCERPT_BYTES}, with the length and SHA-256 of all of it. So a dead letter
 * accounts for every byte it stands for, and no record can hide in it unseen.
 */
export class RefusedBytes {
  readonly #keep: number;
  readonly #hash: Hash = createHash('sha256');
  #head: Buffer[] = [];
  #kept = 0;
  #length = 0;

  constructor(keep: number) {
    this.#keep = keep;
  }

  get length(): number {
    return this.#length;
  }

  add(part: Buffer): void {
    if (part.length === 0) return;
    this.#hash.update(part);
    this.#length += part.length;
    if (this.#length > this.#keep) {
      if (this.#kept < EXCERPT_BYTES) this.#head.push(Buffer.from(part.subarray(0, EXCERPT_BYTES - this.#kept)));
      this.#head = [Buffer.concat(this.#head).subarray(0, EXCERPT_BYTES)];
      this.#kept = this.#head[0]!.length;
    } else {
      // Copy: the chunk's buffer may be reused by the reader.
      this.#head.push(Buffer.from(part));
      this.#kept += part.length;
    }
  }

  /** The dead-letter frame of the stretch (at least one byte of credit, even when empty). */
  frame(offset: number, line: number, error: { code: string; message: string }): Frame {
    const bytes = Buffer.concat(this.#head);
    const frame: Frame = { bytes, offset, line, utf8: isUtf8(bytes), error, size: Math.max(this.#length, 1) };
    if (this.#length > this.#keep) frame.sha256 = this.#hash.digest('hex');
    return frame;
  }
}

/** A refused stretch held whole: its frame, as {@link RefusedBytes} would give it. */
export function refusedFrame(bytes: Buffer, offset: number, line: number, error: { code: string; message: string }, keep: number): Frame {
  const refused = new RefusedBytes(keep);
  refused.add(bytes);
  return refused.frame(offset, line, error);
}

/** The dead-letter error of a record whose bytes are not UTF-8, in every format that reads UTF-8 (NDJSON, JSON arrays, CSV, XML). */
export function invalidUtf8(line: number): { code: string; message: string } {
  return { code: 'INVALID_UTF8', message: `line ${line} is not valid UTF-8` };
}

function startsWithBom(data: Buffer, at: number): boolean {
  return data[at] === 0xef && data[at + 1] === 0xbb && data[at + 2] === 0xbf;
}

/**
 * Newline-delimited records: one per line, blank lines skipped, CRLF accepted, BOM dropped.
 * A UTF-16 file is framed on its own bytes, a code unit at a time (see {@link Utf16Units}).
 */
export class LineFramer implements Framer {
  /** Set for a UTF-16 file. */
  readonly #units: Utf16Units | undefined;
  /** Bytes of a code unit: 2 in UTF-16, else 1. */
  readonly #unit: number;
  #carry: Buffer | undefined;
  /** File offset of `#carry`'s first byte (or of the next chunk when there is no carry). */
  #offset = 0;
  #line = 1;
  /** A line over the limit, dropped as it streams by until its end. */
  #overlong: { refused: RefusedBytes; offset: number; line: number } | undefined;
  readonly #limits: FramingLimits;

  constructor(limits: FramingLimits, encoding: FileEncoding = 'utf-8') {
    this.#limits = limits;
    this.#units = isUtf16(encoding) ? new Utf16Units(encoding) : undefined;
    this.#unit = this.#units ? 2 : 1;
  }

  push(input: Buffer): Frame[] {
    const chunk = this.#units ? this.#units.whole(input) : input;
    let data = this.#carry ? Buffer.concat([this.#carry, chunk]) : chunk;
    let start = 0;
    if (this.#offset === 0) start = this.#bomLength(data);
    const frames: Frame[] = [];
    let allUtf8 = false;
    if (!this.#units) {
      const last = data.lastIndexOf(NEWLINE);
      if (last > start && !this.#overlong && isAscii(data.subarray(start, last))) start = this.#asciiLines(data, start, last, frames);
      allUtf8 = last < 0 || isUtf8(data.subarray(start, last));
    }
    let newline = this.#indexOf(data, NEWLINE, start);
    while (newline >= 0) {
      if (this.#overlong) this.#endOverlong(data.subarray(start, newline), frames);
      else this.#frame(data, start, newline, allUtf8, frames);
      this.#line++;
      start = newline + this.#unit;
      newline = this.#indexOf(data, NEWLINE, start);
    }
    this.#offset += start;
    // A CR last is the line's end if a line feed comes next: it waits for the next character.
    const end = data.length > start && this.#unitBefore(data, data.length) === CR ? data.length - this.#unit : data.length;
    if (start === data.length) {
      this.#carry = undefined;
    } else if (this.#overlong || end - start > this.#limits.maxRecordBytes) {
      // Over the limit before its end: kept no further, its dead letter waits for its end.
      this.#overlong ??= { refused: new RefusedBytes(this.#limits.maxRecordBytes), offset: this.#offset, line: this.#line };
      this.#overlong.refused.add(data.subarray(start, end));
      this.#offset += end - start;
      this.#carry = end < data.length ? data.subarray(end) : undefined;
    } else {
      this.#carry = data.subarray(start);
    }
    return frames;
  }

  /**
   * Moves past `bytes` bytes of input holding `lines` whole lines (newline included) that
   * the caller framed itself, as if they had been pushed; only between whole lines.
   * Returns the line number of the first of them.
   */
  skip(bytes: number, lines: number): number {
    if (this.#carry || this.#overlong) throw new Error('LineFramer.skip inside a line');
    const first = this.#line;
    this.#offset += bytes;
    this.#line += lines;
    return first;
  }

  end(): Frame[] {
    const frames: Frame[] = [];
    if (this.#overlong) this.#endOverlong(EMPTY, frames);
    else if (this.#carry) this.#frame(this.#carry, 0, this.#carry.length, false, frames);
    this.#carry = undefined;
    const half = this.#units?.end();
    if (half) frames.push(refusedFrame(half.byte, half.offset, this.#line, HALF_CHARACTER, this.#limits.maxRecordBytes));
    return frames;
  }

  /** Bytes of a byte order mark at the start of `data` (the file's first bytes), 0 when there is none. */
  #bomLength(data: Buffer): number {
    if (this.#units) return data.length >= 2 && this.#units.at(data, 0) === UTF16_BOM[0] ? 2 : 0;
    return startsWithBom(data, 0) ? 3 : 0;
  }

  /** Byte index of the first character `ascii` at or after `from`, -1 when none. */
  #indexOf(data: Buffer, ascii: number, from: number): number {
    return this.#units ? this.#units.indexOf(data, ascii, from) : data.indexOf(ascii, from);
  }

  /** The code unit that ends at byte `end` (a UTF-8 byte, or a UTF-16 unit). */
  #unitBefore(data: Buffer, end: number): number {
    return this.#units ? this.#units.at(data, end - 2) : data[end - 1]!;
  }

  /** `end` moved before a CR that ends the line there. */
  #beforeCr(data: Buffer, start: number, end: number): number {
    return end > start && this.#unitBefore(data, end) === CR ? end - this.#unit : end;
  }

  /** The line over the limit ends after `rest`: its dead letter, with every byte of it. */
  #endOverlong(rest: Buffer, frames: Frame[]): void {
    const { refused, offset, line } = this.#overlong!;
    this.#overlong = undefined;
    refused.add(rest.subarray(0, this.#beforeCr(rest, 0, rest.length)));
    frames.push(refused.frame(offset, line, this.#tooLargeError(line)));
  }

  #tooLargeError(line: number): { code: string; message: string } {
    return reason(tooLarge(`line ${line}`, Infinity, this.#limits)!);
  }

  /**
   * The common case, lines of plain ASCII: one decode for the whole stretch, each line a
   * slice of it (no Buffer view and no decode per line; char index = byte offset).
   * Frames every line that ends at or before `last`; returns where the rest begins.
   */
  #asciiLines(data: Buffer, start: number, last: number, frames: Frame[]): number {
    const text = data.toString('latin1', start, last + 1);
    let from = 0;
    let newline = text.indexOf('\n');
    while (newline >= 0) {
      let end = newline;
      if (end > from && text.charCodeAt(end - 1) === CR) end--;
      if (end - from > this.#limits.maxRecordBytes) frames.push(this.#tooLarge(data, start + from, start + end));
      else if (!isBlankText(text, from, end)) {
        frames.push({ bytes: EMPTY, text: text.slice(from, end), offset: this.#offset + start + from, line: this.#line, utf8: true, size: end - from });
      }
      this.#line++;
      from = newline + 1;
      newline = text.indexOf('\n', from);
    }
    return last + 1;
  }

  #frame(data: Buffer, start: number, end: number, knownUtf8: boolean, frames: Frame[]): void {
    const offset = this.#offset + start;
    end = this.#beforeCr(data, start, end);
    if (end - start > this.#limits.maxRecordBytes) {
      frames.push(this.#tooLarge(data, start, end));
      return;
    }
    if (this.#units ? isBlankUnits(this.#units, data, start, end) : isBlank(data, start, end)) return;
    const bytes = data.subarray(start, end);
    if (this.#units && !this.#units.paired(bytes)) {
      // Decoded, the lone surrogate would be stored as U+FFFD: a silent change.
      frames.push(refusedFrame(bytes, offset, this.#line, unpairedSurrogate(this.#line), this.#limits.maxRecordBytes));
      return;
    }
    frames.push({ bytes, offset, line: this.#line, utf8: knownUtf8 || isUtf8(bytes) });
  }

  #tooLarge(data: Buffer, start: number, end: number): Frame {
    return refusedFrame(data.subarray(start, end), this.#offset + start, this.#line, this.#tooLargeError(this.#line), this.#limits.maxRecordBytes);
  }
}

const EMPTY = Buffer.alloc(0);

/** A frame's error from a refusal of the shared limits. */
function reason(failure: { code: string; message: string }): { code: string; message: string } {
  return { code: failure.code, message: failure.message };
}

function isBlankText(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== CR) return false;
  }
  return true;
}

function isBlank(data: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = data[i];
    if (c !== 0x20 && c !== 0x09 && c !== CR) return false;
  }
  return true;
}

function isBlankUnits(units: Utf16Units, data: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i += 2) {
    const c = units.at(data, i);
    if (c !== 0x20 && c !== 0x09 && c !== CR) return false;
  }
  return true;
}

const enum JsonState {
  /** Before the opening `[`. */
  Start,
  /** After `[` or `,`: a value or `]` comes next. */
  BeforeValue,
  /** Inside a value. */
  InValue,
  /** After a value: `,` or `]` comes next. */
  AfterValue,
  /** After the closing `]`. */
  Done,
  /** The input is not a JSON array; the rest is ignored. */
  Broken,
}

/**
 * The elements of one top-level JSON array, cut from the bytes without parsing them:
 * the array is never held whole, only the element being read. A UTF-16 file is framed on
 * its own bytes, a code unit at a time (see {@link Utf16Units}).
 */
export class JsonArrayFramer implements Framer {
  /** Set for a UTF-16 file. */
  readonly #units: Utf16Units | undefined;
  /** Bytes of a code unit: 2 in UTF-16, else 1. */
  readonly #unit: number;
  /** The byte order mark dropped at the start, in code units. */
  readonly #bom: readonly number[];
  #state = JsonState.Start;
  /** Bytes of the element being read, from earlier chunks. */
  #carry: Buffer[] = [];
  #carryBytes = 0;
  #position = 0;
  #line = 1;
  #seenAnyByte = false;
  /** Units of the byte order mark read so far at the very start (all of them: a whole one, dropped). */
  #bomUnits = 0;
  // The element being read.
  #depth = 0;
  #inString = false;
  #escaped = false;
  #scalar = false;
  #elementOffset = 0;
  #elementLine = 1;
  #elementError: Frame['error'];
  /** The element being read once it is over the size limit: only its head and hash are kept. */
  #overlong: RefusedBytes | undefined;
  /** After the input stopped being a JSON array: every byte from there to the end, for one dead letter. */
  #rest: { refused: RefusedBytes; offset: number; line: number; error: { code: string; message: string } } | undefined;
  /** Right after `[`: a `]` now closes an empty array. */
  #justOpened = false;
  readonly #limits: FramingLimits;

  constructor(limits: FramingLimits, encoding: FileEncoding = 'utf-8') {
    this.#limits = limits;
    this.#units = isUtf16(encoding) ? new Utf16Units(encoding) : undefined;
    this.#unit = this.#units ? 2 : 1;
    this.#bom = this.#units ? UTF16_BOM : BOM;
  }

  push(input: Buffer): Frame[] {
    const units = this.#units;
    const chunk = units ? units.whole(input) : input;
    const frames: Frame[] = [];
    let i = 0;
    const chunkStart = this.#position;
    let elementStart = this.#state === JsonState.InValue ? 0 : -1;
    for (; i < chunk.length; i += this.#unit) {
      const c = units ? units.at(chunk, i) : chunk[i]!;
      if (c === NEWLINE) this.#line++;
      switch (this.#state) {
        case JsonState.InValue: {
          if (this.#inString) {
            if (this.#escaped) this.#escaped = false;
            else if (c === 0x5c) this.#escaped = true;
            else if (c === 0x22) {
              this.#inString = false;
              if (this.#depth === 0) this.#finishElement(chunk, elementStart, i + this.#unit, frames);
            }
          } else if (this.#scalar) {
            if (c === 0x2c || c === 0x5d || isJsonSpace(c)) {
              this.#finishElement(chunk, elementStart, i, frames);
              i -= this.#unit; // let AfterValue see the delimiter
              if (c === NEWLINE) this.#line--;
            }
          } else if (c === 0x22) {
            this.#inString = true;
          } else if (c === 0x7b || c === 0x5b) {
            if (++this.#depth > this.#limits.maxDepth && !this.#elementError) {
              this.#elementError = reason(tooDeep(`element at byte ${this.#elementOffset}`, this.#limits));
            }
          } else if (c === 0x7d || c === 0x5d) {
            if (--this.#depth === 0) this.#finishElement(chunk, elementStart, i + this.#unit, frames);
          }
          break;
        }
        case JsonState.BeforeValue:
          if (isJsonSpace(c)) break;
          if (c === 0x5d && this.#justOpened) {
            this.#state = JsonState.Done;
            break;
          }
          this.#justOpened = false;
          this.#state = JsonState.InValue;
          elementStart = i;
          this.#elementOffset = chunkStart + i;
          this.#elementLine = this.#line;
          this.#elementError = undefined;
          this.#depth = 0;
          this.#inString = false;
          this.#escaped = false;
          this.#scalar = false;
          if (c === 0x22) this.#inString = true;
          else if (c === 0x7b || c === 0x5b) this.#depth = 1;
          else this.#scalar = true;
          break;
        case JsonState.AfterValue:
          if (isJsonSpace(c)) break;
          if (c === 0x2c) this.#state = JsonState.BeforeValue;
          else if (c === 0x5d) this.#state = JsonState.Done;
          else this.#broken(chunk, i, `expected ',' or ']' at byte ${chunkStart + i}`);
          break;
        case JsonState.Start:
          // A UTF-8 byte order mark may arrive split over chunks; only a whole one is dropped.
          if (chunkStart + i === this.#bomUnits * this.#unit && this.#bomUnits < this.#bom.length && c === this.#bom[this.#bomUnits]) {
            this.#bomUnits++;
            break;
          }
          this.#seenAnyByte = true;
          if (this.#partialBom()) {
            this.#broken(chunk, i, "expected '[' at byte 0: not a JSON array", Buffer.from(BOM.slice(0, this.#bomUnits)));
            break;
          }
          if (isJsonSpace(c)) break;
          if (c === 0x5b) {
            this.#state = JsonState.BeforeValue;
            this.#justOpened = true;
          } else this.#broken(chunk, i, `expected '[' at byte ${chunkStart + i}: not a JSON array`);
          break;
        case JsonState.Done:
          if (!isJsonSpace(c)) this.#broken(chunk, i, `unexpected data after the closing ']' at byte ${chunkStart + i}`);
          break;
        case JsonState.Broken:
          // The rest of the chunk that broke it went in already.
          if (i === 0) this.#rest!.refused.add(chunk);
          i = chunk.length;
          break;
      }
    }
    if (this.#state === JsonState.InValue) this.#keep(chunk.subarray(Math.max(elementStart, 0)));
    this.#position = chunkStart + chunk.length;
    return frames;
  }

  end(): Frame[] {
    const half = this.#units?.end();
    if (!half) return this.#end();
    // A file of a byte order mark and half a character holds no array to miss, only that byte.
    const frames = this.#state === JsonState.Start && !this.#seenAnyByte ? [] : this.#end();
    frames.push(refusedFrame(half.byte, half.offset, this.#line, HALF_CHARACTER, this.#limits.maxRecordBytes));
    return frames;
  }

  /** Part of a UTF-8 byte order mark read at the start, not all of it. */
  #partialBom(): boolean {
    return this.#bomUnits > 0 && this.#bomUnits < this.#bom.length;
  }

  #end(): Frame[] {
    switch (this.#state) {
      case JsonState.Done:
        return [];
      case JsonState.Broken: {
        const { refused, offset, line, error } = this.#rest!;
        this.#rest = undefined;
        return [refused.frame(offset, line, error)];
      }
      case JsonState.Start:
        if (this.#partialBom()) {
          // The file is part of a byte order mark: its bytes go to the dead letter.
          const refused = new RefusedBytes(this.#limits.maxRecordBytes);
          refused.add(Buffer.from(BOM.slice(0, this.#bomUnits)));
          return [refused.frame(0, 1, { code: 'NOT_ARRAY', message: 'no JSON array found' })];
        }
        return [this.#fileError(this.#seenAnyByte ? 'NOT_ARRAY' : 'EMPTY_FILE', this.#seenAnyByte ? 'no JSON array found' : 'empty file: expected a JSON array')];
      case JsonState.InValue: {
        if (this.#scalar) {
          const frames: Frame[] = [];
          this.#finishElement(Buffer.alloc(0), 0, 0, frames);
          return frames.concat(this.#fileError('TRUNCATED', 'truncated JSON array: the closing \']\' is missing'));
        }
        const refused = this.#overlong ?? new RefusedBytes(this.#limits.maxRecordBytes);
        if (!this.#overlong) for (const kept of this.#carry) refused.add(kept);
        this.#carry = [];
        this.#overlong = undefined;
        return [refused.frame(this.#elementOffset, this.#elementLine, { code: 'TRUNCATED', message: `truncated JSON array: the element at byte ${this.#elementOffset} is cut off` })];
      }
      default:
        return [this.#fileError('TRUNCATED', "truncated JSON array: the closing ']' is missing")];
    }
  }

  #keep(part: Buffer): void {
    if (this.#overlong) {
      this.#overlong.add(part);
      return;
    }
    this.#carryBytes += part.length;
    if (this.#carryBytes > this.#limits.maxRecordBytes) {
      this.#elementError = reason(tooLarge(`element at byte ${this.#elementOffset}`, this.#carryBytes, this.#limits)!);
      // Keep the head for the dead letter and hash the rest as it streams by.
      this.#overlong = new RefusedBytes(this.#limits.maxRecordBytes);
      for (const kept of this.#carry) this.#overlong.add(kept);
      this.#overlong.add(part);
      this.#carry = [];
      return;
    }
    // Copy: the chunk's buffer may be reused by the reader.
    this.#carry.push(Buffer.from(part));
  }

  #finishElement(chunk: Buffer, start: number, end: number, frames: Frame[]): void {
    this.#state = JsonState.AfterValue;
    let bytes: Buffer;
    if (this.#carry.length === 0 && !this.#overlong) bytes = chunk.subarray(start, end);
    else {
      this.#keep(chunk.subarray(0, end));
      bytes = this.#overlong ? EMPTY : Buffer.concat(this.#carry);
    }
    this.#carry = [];
    this.#carryBytes = 0;
    // Over the size limit wins over too deep, however the element was cut into reads.
    if (bytes.length > this.#limits.maxRecordBytes) {
      this.#elementError = reason(tooLarge(`element at byte ${this.#elementOffset}`, bytes.length, this.#limits)!);
    }
    const overlong = this.#overlong;
    this.#overlong = undefined;
    // Decoded, a lone surrogate would be stored as U+FFFD: a silent change.
    if (!this.#elementError && this.#units && !this.#units.paired(bytes)) this.#elementError = unpairedSurrogate(this.#elementLine);
    if (this.#elementError) {
      frames.push(overlong ? overlong.frame(this.#elementOffset, this.#elementLine, this.#elementError) : refusedFrame(bytes, this.#elementOffset, this.#elementLine, this.#elementError, this.#limits.maxRecordBytes));
      return;
    }
    frames.push({ bytes, offset: this.#elementOffset, line: this.#elementLine, utf8: isUtf8(bytes) });
  }

  /** The input stops being a JSON array at `at`: nothing after is read, and it all goes in one dead letter at the end. */
  /** From `chunk[at]` on, after `head` (bytes of earlier chunks held back), every byte goes to one dead letter. */
  #broken(chunk: Buffer, at: number, message: string, head?: Buffer): void {
    this.#state = JsonState.Broken;
    const refused = new RefusedBytes(this.#limits.maxRecordBytes);
    if (head) refused.add(head);
    refused.add(chunk.subarray(at));
    this.#rest = { refused, offset: this.#position + at - (head?.length ?? 0), line: this.#line, error: { code: 'NOT_ARRAY', message } };
  }

  #fileError(code: string, message: string): Frame {
    return { bytes: Buffer.alloc(0), offset: this.#position, line: this.#line, utf8: true, error: { code, message } };
  }
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === NEWLINE || c === CR || c === 0x09;
}

/** What a refused frame's dead letter holds: its bytes, or their head with the length and hash of all. */
export function refusedRaw(frame: Frame): Uint8Array | RawExcerpt {
  const bytes = Buffer.from(frame.bytes);
  return frame.sha256 === undefined ? bytes : { excerpt: bytes, bytes: frame.size ?? bytes.length, sha256: frame.sha256 };
}
