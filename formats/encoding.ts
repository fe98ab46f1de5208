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
