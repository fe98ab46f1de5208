import type { FileEncoding } from './encoding';

/**
 * UTF-16 text read straight from the file's bytes, one code unit (two bytes) at a time,
 * so that framers count offsets and sizes in the file's bytes and hand on the file's
 * bytes, whichever byte order it has. A unit split over reads is held back until its
 * second byte comes; a file's odd last byte never becomes part of a unit.
 */
export class Utf16Units {
  /** Index of a unit's low byte: 0 in UTF-16LE, 1 in UTF-16BE. */
  readonly #low: 0 | 1;
  #odd: Buffer | undefined;
  /** Bytes handed out as whole units so far. */
  #handedOut = 0;

  constructor(encoding: FileEncoding) {
    this.#low = encoding === 'utf-16be' ? 1 : 0;
  }

  /** `chunk` as whole units: after the byte held from the last read, without its own odd last byte. */
  whole(chunk: Buffer): Buffer {
    let data = this.#odd ? Buffer.concat([this.#odd, chunk]) : chunk;
    // Copy: the reader may reuse the chunk's buffer before the next read.
    this.#odd = data.length % 2 === 1 ? Buffer.from(data.subarray(data.length - 1)) : undefined;
    if (this.#odd) data = data.subarray(0, data.length - 1);
    this.#handedOut += data.length;
    return data;
  }

  /** The code unit at byte `i` of `data` (an even index). */
  at(data: Buffer, i: number): number {
    return unitAt(data, i, this.#low);
  }

  /** Byte index of the first unit `ascii` (below 0x80) at or after byte `from` (even), -1 when none. */
  indexOf(data: Buffer, ascii: number, from: number): number {
    for (let i = data.indexOf(ascii, from + this.#low); i >= 0; i = data.indexOf(ascii, i + 1)) {
      // A match at a unit's high byte, or beside a high byte that is not 0, is part of another character.
      const start = i - this.#low;
      if (start % 2 === 0 && data[start + 1 - this.#low] === 0) return start;
    }
    return -1;
  }

  /** Whether every surrogate in `data` (whole units) is paired. */
  paired(data: Buffer): boolean {
    return pairedSurrogates(data, this.#low);
  }

  /** At the end of the file: its odd last byte and that byte's offset, when it has one. */
  end(): { byte: Buffer; offset: number } | undefined {
    const odd = this.#odd;
    this.#odd = undefined;
    return odd && { byte: odd, offset: this.#handedOut };
  }
}

function unitAt(data: Buffer, i: number, low: 0 | 1): number {
  return data[i + low]! | (data[i + 1 - low]! << 8);
}

/**
 * Whether UTF-16 `units` (an even number of bytes; `low` the index of a unit's low byte,
 * 0 for little-endian) pair every surrogate: decoded, an unpaired one becomes U+FFFD.
 */
export function pairedSurrogates(units: Buffer, low: 0 | 1 = 0): boolean {
  for (let i = 0; i < units.length; i += 2) {
    const unit = unitAt(units, i, low);
    if (unit < 0xd800 || unit > 0xdfff) continue;
    const next = i + 2 < units.length ? unitAt(units, i + 2, low) : 0;
    // A low surrogate first, or a high one not followed by a low one.
    if (unit >= 0xdc00 || next < 0xdc00 || next > 0xdfff) return false;
    i += 2;
  }
  return true;
}

/** The dead-letter error of a record holding a surrogate without its pair. */
export function unpairedSurrogate(line: number): { code: string; message: string } {
  return { code: 'INVALID_ENCODING', message: `line ${line} is not valid UTF-16: a surrogate without its pair` };
}

/** The dead-letter error of a file's odd last byte: half a character, which no record holds. */
export const HALF_CHARACTER = { code: 'TRUNCATED', message: 'the file ends inside a UTF-16 character' };

/** Whether `encoding` is UTF-16 (either byte order). */
export function isUtf16(encoding: FileEncoding): boolean {
  return encoding.startsWith('utf-16');
}
