import { isUtf8 } from 'node:buffer';
import { ConfigError } from '../lib/errors';

/** Text encodings a vendor file may use. */
export type FileEncoding = 'utf-8' | 'utf-16le' | 'utf-16be' | 'latin1' | 'windows-1252';

const LABELS: Record<string, FileEncoding> = {
  'utf-8': 'utf-8',
  utf8: 'utf-8',
  'utf-16le': 'utf-16le',
  'utf-16be': 'utf-16be',
  latin1: 'latin1',
  'iso-8859-1': 'latin1',
  'windows-1252': 'windows-1252',
  cp1252: 'windows-1252',
};

/** The encoding an option or an XML declaration names, `undefined` when unknown. */
export function encodingOf(label: string): FileEncoding | undefined {
  return LABELS[label.trim().toLowerCase()];
}

/** Validates the `encoding` option. */
export function encodingOption(value: string | undefined, name = 'encoding'): FileEncoding | undefined {
  if (value === undefined) return undefined;
  const encoding = typeof value === 'string' ? encodingOf(value) : undefined;
  if (!encoding) {
    throw new ConfigError(`${name} must be one of ${Object.keys(LABELS).join(', ')}, got ${JSON.stringify(value)}`);
  }
  return encoding;
}

/** What the first bytes of a file say about its text. */
export interface Sniffed {
  encoding: FileEncoding;
  /** Length of the byte order mark, 0 when there is none. */
  bom: number;
  /** The encoding named by an XML declaration, when there is one we do not know. */
  unknownDeclared?: string;
}

/** Bytes worth looking at before choosing an encoding: a BOM and an XML declaration. */
export const SNIFF_BYTES = 256;

/**
 * Chooses the encoding of a file from its first bytes: a byte order mark wins, then the
 * `declared` option, then (for XML) the encoding in the XML declaration, then UTF-8.
 */
export function sniffEncoding(head: Buffer, declared: FileEncoding | undefined, xml: boolean): Sniffed {
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) return { encoding: 'utf-8', bom: 3 };
  if (head[0] === 0xff && head[1] === 0xfe) return { encoding: 'utf-16le', bom: 2 };
  if (head[0] === 0xfe && head[1] === 0xff) return { encoding: 'utf-16be', bom: 2 };
  if (declared) return { encoding: declared, bom: 0 };
  if (xml) {
    // The declaration is ASCII in every encoding we read without a BOM.
    const match = /^\s*<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']/.exec(head.toString('latin1'));
    if (match) {
      const named = encodingOf(match[1]!);
      // A UTF-16 declaration without a BOM cannot be trusted: the bytes decide.
      if (named && !named.startsWith('utf-16')) return { encoding: named, bom: 0 };
      if (!named) return { encoding: 'utf-8', bom: 0, unknownDeclared: match[1]! };
    }
  }
  return { encoding: 'utf-8', bom: 0 };
}

/** Bytes one UTF-16 code unit of decoded text took in the file, 0 when it varies (UTF-8). */
export function bytesPerUnit(encoding: FileEncoding): number {
  return encoding === 'utf-8' ? 0 : encoding.startsWith('utf-16') ? 2 : 1;
}

/** Decodes a byte stream chunk by chunk, keeping characters split over chunks whole. */
export interface ChunkDecoder {
  decode(chunk: Buffer): string;
  end(): string;
}

export function chunkDecoder(encoding: FileEncoding): ChunkDecoder {
  if (encoding === 'latin1') return { decode: (chunk) => chunk.toString('latin1'), end: () => '' };
  // A leading BOM is dropped by the decoder; sniffEncoding counted its bytes.
  const decoder = new TextDecoder(encoding);
  return { decode: (chunk) => decoder.decode(chunk, { stream: true }), end: () => decoder.decode() };
}

/**
 * A decoder whose text keeps the file's byte counts, for a framer that maps positions in
 * the text back to file offsets: each byte that is not UTF-8 becomes one 1-byte character
 * (a lenient decoder's U+FFFD takes three), an unpaired UTF-16 surrogate one U+FFFD (one
 * code unit, as in the file), and a UTF-16 file's odd last byte is never decoded. The
 * first `bom` bytes are skipped; `onInvalid` gets the file offset of each byte (or
 * surrogate) that is not valid, in order.
 */
export function exactDecoder(encoding: FileEncoding, bom: number, onInvalid: (offset: number) => void): ChunkDecoder {
  if (encoding === 'utf-8') return new Utf8Decoder(bom, onInvalid);
  if (encoding === 'utf-16le' || encoding === 'utf-16be') return new Utf16Decoder(encoding, bom, onInvalid);
  return chunkDecoder(encoding);
}

/** ASCII's SUB, "substitute": stands for a byte that is not UTF-8, in one byte as that byte took. */
const SUBSTITUTE = '\x1a';

/** Bytes of the UTF-8 character that `lead` starts, 0 when no character starts with it. */
function utf8Length(lead: number): number {
  return lead < 0x80 ? 1 : lead < 0xc2 ? 0 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : lead < 0xf5 ? 4 : 0;
}

/** The bytes of `data` before a character its end cuts off (held back for the next chunk). */
function wholeCharacters(data: Buffer): number {
  for (let i = data.length - 1; i >= 0 && i >= data.length - 3; i--) {
    const byte = data[i]!;
    if ((byte & 0xc0) !== 0x80) return i + utf8Length(byte) > data.length ? i : data.length;
  }
  return data.length;
}

/**
 * The steps both exact decoders share: skip the byte order mark (it may come over several
 * chunks), hold back the bytes of a character the chunk cuts off until the next one, and
 * keep the file offset of the first byte not decoded yet for `onInvalid`.
 */
abstract class ExactDecoder implements ChunkDecoder {
  protected readonly onInvalid: (offset: number) => void;
  #skip: number;
  /** File offset of the first byte not decoded yet (the held-back one's, if any). */
  #at: number;
  protected held: Buffer | undefined;

  constructor(bom: number, onInvalid: (offset: number) => void) {
    this.#skip = bom;
    this.#at = bom;
    this.onInvalid = onInvalid;
  }

  decode(chunk: Buffer): string {
    const skipped = Math.min(this.#skip, chunk.length);
    this.#skip -= skipped;
    chunk = this.ordered(chunk.subarray(skipped));
    const data = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    const whole = this.wholeOf(data);
    this.held = whole < data.length ? Buffer.from(data.subarray(whole)) : undefined;
    return this.text(data.subarray(0, whole));
  }

  abstract end(): string;

  /** `chunk` in the byte order `decodeAt` reads (UTF-16BE is swapped to little-endian). */
  protected ordered(chunk: Buffer): Buffer {
    return chunk;
  }

  /** The bytes of `data` before a character its end cuts off. */
  protected abstract wholeOf(data: Buffer): number;

  /** `bytes` decoded, each one not valid reported at its file offset. */
  protected text(bytes: Buffer): string {
    const at = this.#at;
    this.#at += bytes.length;
    return this.decodeAt(bytes, at);
  }

  protected abstract decodeAt(bytes: Buffer, at: number): string;
}

class Utf8Decoder extends ExactDecoder {
  end(): string {
    const held = this.held ?? EMPTY;
    this.held = undefined;
    return this.text(held);
  }

  protected wholeOf(data: Buffer): number {
    return wholeCharacters(data);
  }

  protected decodeAt(bytes: Buffer, at: number): string {
    if (isUtf8(bytes)) return bytes.toString('utf8');
    let text = '';
    let from = 0;
    for (let i = 0; i < bytes.length; ) {
      const length = utf8Length(bytes[i]!);
      // A character cut off by the end of `bytes` is not valid either.
      if (length > 0 && isUtf8(bytes.subarray(i, i + length))) {
        i += length;
        continue;
      }
      text += bytes.toString('utf8', from, i) + SUBSTITUTE;
      this.onInvalid(at + i);
      from = ++i;
    }
    return text + bytes.toString('utf8', from);
  }
}

/** A surrogate without its pair. */
const UNPAIRED = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

class Utf16Decoder extends ExactDecoder {
  /** Big-endian input is read little-endian; it also holds an odd byte back. */
  readonly #swap: ByteSwapper | undefined;

  constructor(encoding: 'utf-16le' | 'utf-16be', bom: number, onInvalid: (offset: number) => void) {
    super(bom, onInvalid);
    this.#swap = encoding === 'utf-16be' ? new ByteSwapper() : undefined;
  }

  end(): string {
    // Only a held high surrogate is decoded: an odd last byte is no character.
    const held = this.held && this.held.length >= 2 ? this.held.subarray(0, 2) : EMPTY;
    this.held = undefined;
    return this.text(held);
  }

  protected override ordered(chunk: Buffer): Buffer {
    return this.#swap ? this.#swap.push(chunk) : chunk;
  }

  /** Whole code units, less a high surrogate at the end whose pair may come next. */
  protected wholeOf(data: Buffer): number {
    let whole = data.length & ~1;
    const high = data[whole - 1] ?? 0;
    if (high >= 0xd8 && high <= 0xdb) whole -= 2;
    return whole;
  }

  protected decodeAt(units: Buffer, at: number): string {
    // Node keeps an unpaired surrogate as it is, where a TextDecoder would hide it in U+FFFD.
    return units.toString('utf16le').replace(UNPAIRED, (_, index: number) => {
      this.onInvalid(at + 2 * index);
      return '\ufffd';
    });
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Windows-1252's characters for bytes 0x80–0x9F, which Latin-1 leaves as C1 controls
 * (0x81, 0x8D, 0x8F, 0x90, 0x9D are unassigned and stay as they are).
 */
const CP1252_HIGH = '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';
const C1 = /[\u0080-\u009f]/g;

/** Turns text read as Latin-1 into Windows-1252 text. */
export function latin1ToCp1252(text: string): string {
  C1.lastIndex = 0;
  if (!C1.test(text)) return text;
  return text.replace(C1, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80]!);
}

/**
 * The Latin-1 character read for `char` in a file of a single-byte `encoding` (Windows-1252
 * is read as Latin-1 and mapped after), `undefined` when the encoding has no such character.
 */
export function singleByteChar(char: string, encoding: 'latin1' | 'windows-1252'): string | undefined {
  if (encoding === 'windows-1252') {
    const high = CP1252_HIGH.indexOf(char);
    if (high >= 0) return String.fromCharCode(0x80 + high);
    if (C1_RANGE.test(char)) return undefined;
  }
  return char.length === 1 && char.charCodeAt(0) <= 0xff ? char : undefined;
}

const C1_RANGE = /^[\u0080-\u009f]$/;

/** Swaps the bytes of each UTF-16 code unit: big-endian in, little-endian out (offsets unchanged). */
export class ByteSwapper {
  #odd: number | undefined;

  push(chunk: Buffer): Buffer {
    let input = chunk;
    if (this.#odd !== undefined) {
      input = Buffer.concat([Buffer.of(this.#odd), chunk]);
      this.#odd = undefined;
    }
    const even = input.length & ~1;
    if (even !== input.length) this.#odd = input[input.length - 1];
    const out = Buffer.allocUnsafe(even);
    for (let i = 0; i < even; i += 2) {
      out[i] = input[i + 1]!;
      out[i + 1] = input[i]!;
    }
    return out;
  }

  /** A dangling odd byte at the end, if any (a broken file). */
  end(): Buffer {
    const rest = this.#odd === undefined ? Buffer.alloc(0) : Buffer.of(this.#odd);
    this.#odd = undefined;
    return rest;
  }
}
