import { isUtf8 } from 'node:buffer';
import { Parser } from 'csv-parse';
import { ConfigError } from '../lib/errors';
import { tooLarge } from '../lib/limits';
import { ByteSwapper, latin1ToCp1252, singleByteChar, type FileEncoding } from './encoding';
import { EXCERPT_BYTES, invalidUtf8, RefusedBytes, refusedFrame, type Frame, type Framer, type FramingLimits } from './framing';
import { HALF_CHARACTER, pairedSurrogates, unpairedSurrogate } from './utf16';

/** How a CSV file is laid out. */
export interface CsvOptions {
  /** Field separator, one character. @default ',' */
  delimiter?: string;
  /** Quote character, one character, or `false` when fields are never quoted. @default '"' */
  quote?: string | false;
  /** Escape character inside quoted fields, one character. @default the quote (a doubled quote) */
  escape?: string;
  /**
   * `true`: the first row names the columns (a name it repeats becomes `name_2`, `name_3`…
   * for its later columns, so no value is lost). A list: the column names, and every row
   * is data. Records are objects keyed by column name. @default true
   */
  columns?: true | readonly string[];
  /**
   * Rows with more or fewer fields than there are columns: dead letters (`false`), or
   * records with the fields they have (`true`). @default false
   */
  relaxColumnCount?: boolean;
  /** Trims whitespace around unquoted fields. @default false */
  trim?: boolean;
  /** Lines starting with this character are comments, one character. @default none */
  comment?: string;
}

export interface ResolvedCsvOptions {
  delimiter: string;
  quote: string | false;
  escape: string | undefined;
  columns: true | readonly string[];
  relaxColumnCount: boolean;
  trim: boolean;
  comment: string | undefined;
}

/** Validates CSV options; `prefix` names them in messages (`csv.delimiter …`). */
export function resolveCsvOptions(options: CsvOptions = {}, prefix = 'csv'): ResolvedCsvOptions {
  const oneChar = (value: unknown, name: string): void => {
    if (typeof value !== 'string' || [...value].length !== 1 || value === '\n' || value === '\r') {
      throw new ConfigError(`${prefix}.${name} must be one character other than a line break, got ${shown(value)}`);
    }
  };
  const delimiter = options.delimiter ?? ',';
  oneChar(delimiter, 'delimiter');
  const quote = options.quote ?? '"';
  if (quote !== false) oneChar(quote, 'quote');
  if (options.escape !== undefined) oneChar(options.escape, 'escape');
  if (options.comment !== undefined) oneChar(options.comment, 'comment');
  if (quote !== false && quote === delimiter) throw new ConfigError(`${prefix}.quote must differ from ${prefix}.delimiter, both are ${shown(quote)}`);
  const columns = options.columns ?? true;
  if (columns !== true) {
    if (!Array.isArray(columns) || columns.length === 0 || columns.some((c) => typeof c !== 'string' || c === '')) {
      throw new ConfigError(`${prefix}.columns must be true or a non-empty list of non-empty names, got ${JSON.stringify(columns)}`);
    }
    const seen = new Set<string>();
    for (const c of columns) {
      if (seen.has(c)) throw new ConfigError(`${prefix}.columns names ${JSON.stringify(c)} twice`);
      seen.add(c);
    }
  }
  return {
    delimiter,
    quote,
    escape: options.escape,
    columns,
    relaxColumnCount: options.relaxColumnCount ?? false,
    trim: options.trim ?? false,
    comment: options.comment,
  };
}

/**
 * The options as the parser matches them in a file of `encoding`: a single-byte file can
 * hold only its 256 characters (a Windows-1252 file is read as Latin-1, so its '€' is
 * matched as byte 0x80). Throws when an option character is not one of them: matched as
 * the Latin-1 byte of its low 8 bits, '€' would split a Latin-1 file at every '¬'.
 */
export function csvOptionsIn(options: ResolvedCsvOptions, encoding: FileEncoding | undefined, prefix = 'csv'): ResolvedCsvOptions {
  if (encoding !== 'latin1' && encoding !== 'windows-1252') return options;
  const inFile = (value: string, name: string): string => {
    const char = singleByteChar(value, encoding);
    if (char === undefined) throw new ConfigError(`${prefix}.${name} ${shown(value)} is not a ${encoding} character: a ${encoding} file cannot hold it`);
    return char;
  };
  return {
    ...options,
    delimiter: inFile(options.delimiter, 'delimiter'),
    quote: options.quote === false ? false : inFile(options.quote, 'quote'),
    escape: options.escape === undefined ? undefined : inFile(options.escape, 'escape'),
    comment: options.comment === undefined ? undefined : inFile(options.comment, 'comment'),
  };
}

function shown(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}

/** The synchronous core of csv-parse's stream (`Parser#api`), which `_transform` drives. */
interface CsvCore {
  parse(chunk: Buffer | undefined, end: boolean, push: (record: Record<string, string>) => void, close: () => void): Error | undefined;
  readonly info: { bytes: number; empty_lines: number; comment_lines: number };
  /** `bufBytesStart`: bytes read so far, short of those held back to look ahead. */
  readonly state: { record: unknown[]; field: { length: number }; bufBytesStart: number };
}

interface CsvParseError extends Error {
  code?: string;
  /** Bytes the parser had consumed when it failed. */
  bytes?: number;
  record?: string[];
}

/** Thrown from csv-parse's `on_skip` to stop the core at a broken quote: it is read again from the next line. */
const RESYNC = new Error('read the broken record again from its next line');

/** Error codes after which csv-parse knows where the record ended: the row is whole, only its field count (against the columns) is wrong. */
const RAGGED = new Set(['CSV_RECORD_INCONSISTENT_COLUMNS']);

/**
 * CSV records cut from a byte stream by csv-parse, each with its exact byte offset and the
 * line of its first byte (quoted fields may hold line breaks). A ragged row is a frame
 * with an error, and the file goes on.
 *
 * A broken quote (left open, closed in the middle of a field, opened inside one) says
 * nothing reliable about where its record ends: an opening quote that is never closed
 * would swallow every following row. So the broken record is refused as its first line
 * only, and reading starts again on the next line with a fresh parser: the rows after it
 * are read as rows. A record over the size limit is refused the same way when it spans
 * lines; a single line over the limit is dropped as it streams by, up to its end. Each
 * refused frame holds every byte from where its record began to where reading resumed
 * (the head of it, with length and SHA-256, when it is over the limit).
 */
export class CsvFramer implements Framer {
  readonly #options: ResolvedCsvOptions;
  readonly #limits: FramingLimits;
  readonly #csvEncoding: BufferEncoding;
  readonly #cp1252: boolean;
  readonly #utf16: boolean;
  readonly #utf8: boolean;
  readonly #swap: ByteSwapper | undefined;
  /** UTF-16 text as the current core reads it (UTF-8), and the way back to file offsets. */
  #asUtf8: Utf16AsUtf8 | undefined;
  readonly #history: ByteHistory;
  #core!: CsvCore;
  /** File offset of the first byte the current core was given. */
  #base = 0;
  #columns: true | readonly string[];
  #emptyLines = 0;
  #commentLines = 0;
  /** Where the next record starts. */
  #nextStart = 0;
  #nextLine = 1;
  /** Bytes fed so far (after a byte swap, the same offsets). */
  #fed = 0;
  /** The record a broken quote stopped the core in. */
  #broken: { offset: number; line: number; error: CsvParseError } | undefined;
  /** A line over the limit, dropped as it streams by until its end; its dead letter waits for that end. */
  #overlong: { refused: RefusedBytes; offset: number; line: number; code: string; message: string; through: number } | undefined;
  #frames: Frame[] = [];
  readonly #onRecord = (record: Record<string, string>) => this.#record(record);
  readonly #close = () => undefined;

  constructor(options: ResolvedCsvOptions, limits: FramingLimits, encoding: FileEncoding) {
    this.#options = csvOptionsIn(options, encoding);
    this.#limits = limits;
    this.#columns = options.columns;
    this.#utf16 = encoding.startsWith('utf-16');
    this.#utf8 = encoding === 'utf-8';
    this.#csvEncoding = encoding === 'utf-8' || this.#utf16 ? 'utf8' : 'latin1';
    this.#cp1252 = encoding === 'windows-1252';
    this.#swap = encoding === 'utf-16be' ? new ByteSwapper() : undefined;
    this.#history = new ByteHistory(this.#utf16 ? 2 : 1, limits.maxRecordBytes);
    this.#core = this.#newCore();
  }

  push(chunk: Buffer): Frame[] {
    if (this.#swap) chunk = this.#swap.push(chunk);
    this.#history.append(chunk);
    const start = this.#fed;
    this.#fed += chunk.length;
    if (this.#overlong) {
      // From the last character seen: a CR that ended the last read ends the line.
      const at = this.#history.nextLineStart(Math.max(start - 2, this.#overlong.offset), false);
      if (at < 0) {
        // Still inside the refused line: keep none of it.
        this.#overlong.refused.add(this.#raw(chunk));
        this.#overlong.through = this.#fed;
        this.#history.release(this.#fed, chunk.length);
        return [];
      }
      this.#endOverlong(at);
      chunk = chunk.subarray(at - start);
    }
    return this.#parse(chunk, false);
  }

  end(): Frame[] {
    if (this.#overlong) {
      // A CR that ended the last read ends the refused line: a UTF-16BE file's odd last
      // byte, held back until now, is then refused on its own, as in UTF-16LE.
      const at = this.#history.nextLineStart(Math.max(this.#fed - 2, this.#overlong.offset), true);
      if (at >= 0) this.#endOverlong(at);
    }
    if (this.#swap) {
      // A dangling odd byte, as the file holds it.
      const rest = this.#swap.end();
      this.#history.append(rest);
      this.#fed += rest.length;
    }
    const frames = this.#overlong ? (this.#endOverlong(this.#fed), this.#take()) : this.#parse(undefined, true);
    if (this.#utf16 && this.#fed % 2 === 1 && this.#nextStart < this.#fed) {
      // Half a character after the last record (or its line break): no record holds it.
      frames.push(refusedFrame(this.#raw(this.#history.slice(this.#fed - 1, this.#fed)), this.#fed - 1, this.#history.lineAt(this.#fed - 1), HALF_CHARACTER, this.#limits.maxRecordBytes));
    }
    return frames;
  }

  #parse(chunk: Buffer | undefined, end: boolean): Frame[] {
    let error = this.#core.parse(this.#text(chunk, end), end, this.#onRecord, this.#close) as CsvParseError | undefined;
    while (error === RESYNC) {
      const { offset, line, error: cause } = this.#broken!;
      this.#broken = undefined;
      let resume = this.#history.nextLineStart(offset, end);
      if (resume < 0) {
        if (!end) {
          // The broken record's first line has not ended yet: drop it up to its end.
          this.#startOverlong(offset, line, 'PARSE_CSV', this.#csvMessage(cause, line));
          break;
        }
        resume = this.#fed;
      }
      const code = cause.code === 'CSV_QUOTE_NOT_CLOSED' && resume === this.#fed && end ? 'TRUNCATED' : 'PARSE_CSV';
      this.#frames.push(refusedFrame(this.#raw(this.#history.slice(offset, resume)), offset, line, { code, message: this.#csvMessage(cause, line) }, this.#limits.maxRecordBytes));
      this.#restart(resume);
      error = this.#core.parse(this.#text(this.#history.slice(resume, this.#fed), end), end, this.#onRecord, this.#close) as CsvParseError | undefined;
    }
    if (error && error !== RESYNC) {
      // Only option or hook failures get here: record errors are skipped and reported.
      this.#frames.push(this.#error('PARSE_CSV', error.message, this.#fed));
      this.#restart(this.#fed);
    } else if (!end && !this.#overlong && this.#pending() && this.#at(this.#core.state.bufBytesStart) - this.#pendingStart().offset > this.#limits.maxRecordBytes) {
      // Over the limit by the bytes read: those held back to look ahead may end the record.
      const { offset, line } = this.#startOfRecord();
      const { message } = tooLarge(`record at line ${line}`, Infinity, this.#limits)!;
      const resume = this.#history.nextLineStart(offset, false);
      if (resume < 0) this.#startOverlong(offset, line, 'RECORD_TOO_LARGE', message);
      else {
        // It runs over lines, most likely from a quote left open: refuse its first line and read on from the next.
        this.#frames.push(refusedFrame(this.#raw(this.#history.slice(offset, resume)), offset, line, { code: 'RECORD_TOO_LARGE', message }, this.#limits.maxRecordBytes));
        this.#restart(resume);
        return this.#parse(this.#history.slice(resume, this.#fed), false);
      }
    }
    // Past the blank and comment lines read since the last record: their bytes may be released.
    const { offset, line } = this.#startOfRecord();
    this.#nextStart = offset;
    this.#nextLine = line;
    this.#history.release(this.#nextStart, chunk?.length ?? 0);
    return this.#take();
  }

  #take(): Frame[] {
    const frames = this.#frames;
    this.#frames = [];
    return frames;
  }

  #newCore(): CsvCore {
    const o = this.#options;
    const parser = new Parser({
      delimiter: o.delimiter,
      quote: o.quote === false ? null : o.quote,
      escape: o.escape ?? (o.quote === false ? null : o.quote),
      ...(o.comment !== undefined && { comment: o.comment }),
      columns: this.#columns === true ? (header: string[]) => this.#header(header) : [...this.#columns],
      relax_column_count: o.relaxColumnCount,
      trim: o.trim,
      bom: this.#base === 0,
      encoding: this.#csvEncoding,
      // Every line break ends a row, whichever the file began with: a file whose lines
      // mix CRLF and LF (appended to by two tools) is read row by row, not as ragged rows.
      record_delimiter: ['\r\n', '\n', '\r'],
      skip_empty_lines: true,
      skip_records_with_error: true,
      on_skip: (error: CsvParseError | undefined) => {
        if (error) this.#skipped(error);
        return undefined;
      },
    });
    this.#emptyLines = 0;
    this.#commentLines = 0;
    this.#asUtf8 = this.#utf16 ? new Utf16AsUtf8() : undefined;
    return (parser as unknown as { api: CsvCore }).api;
  }

  /** What the core reads of file bytes (after a byte swap): UTF-16 goes in as UTF-8. */
  #text(chunk: Buffer | undefined, end: boolean): Buffer | undefined {
    return this.#asUtf8 ? this.#asUtf8.text(chunk, end) : chunk;
  }

  /** The file offset of the core's byte count `bytes`. */
  #at(bytes: number): number {
    return this.#base + (this.#asUtf8 ? this.#asUtf8.fileBytes(bytes) : bytes);
  }

  /** Starts a fresh core at `offset`, keeping the column names already read. */
  #restart(offset: number): void {
    this.#base = offset;
    this.#nextStart = offset;
    this.#nextLine = this.#history.lineAt(offset);
    this.#core = this.#newCore();
  }

  #startOverlong(offset: number, line: number, code: string, message: string): void {
    const refused = new RefusedBytes(this.#limits.maxRecordBytes);
    refused.add(this.#raw(this.#history.slice(offset, this.#fed)));
    this.#overlong = { refused, offset, line, code, message, through: this.#fed };
    this.#restart(this.#fed);
  }

  /** The overlong line ends at `at`: its dead letter, then a fresh core from there. */
  #endOverlong(at: number): void {
    const { refused, offset, line, code, message, through } = this.#overlong!;
    this.#overlong = undefined;
    refused.add(this.#raw(this.#history.slice(through, at)));
    this.#frames.push(refused.frame(offset, line, { code, message }));
    this.#restart(at);
  }

  /** Whether the core is inside a record (a field or a quote begun). */
  #pending(): boolean {
    const state = this.#core.state as CsvCore['state'] & { quoting?: boolean };
    return state.record.length > 0 || state.field.length > 0 || state.quoting === true;
  }

  #header(header: string[]): string[] {
    if (this.#cp1252) header = header.map(latin1ToCp1252);
    header = uniqueNames(header);
    this.#columns = header;
    this.#advance(this.#at(this.#core.info.bytes));
    return header;
  }

  /** Where the record being read starts, past blank and comment lines skipped since the last one (counters untouched). */
  #pendingStart(): { offset: number; line: number } {
    const info = this.#core.info;
    const skipped = info.empty_lines - this.#emptyLines + info.comment_lines - this.#commentLines;
    let offset = this.#nextStart;
    // Each ended by a line break: a record follows them.
    for (let i = 0; i < skipped; i++) offset = this.#history.nextLineStart(offset, true);
    return { offset, line: this.#nextLine + skipped };
  }

  /** The start and line of the record that just ended, after skipped blank and comment lines. */
  #startOfRecord(): { offset: number; line: number } {
    const start = this.#pendingStart();
    this.#emptyLines = this.#core.info.empty_lines;
    this.#commentLines = this.#core.info.comment_lines;
    return start;
  }

  #advance(end: number): void {
    this.#nextStart = end;
    this.#nextLine = this.#history.lineAt(end);
  }

  #record(record: Record<string, string>): void {
    const { offset, line } = this.#startOfRecord();
    const end = this.#at(this.#core.info.bytes);
    if (end - offset > this.#limits.maxRecordBytes) {
      // Within one read: it ended before the check between reads could see it.
      const { code, message } = tooLarge(`record at line ${line}`, end - offset, this.#limits)!;
      this.#frames.push(refusedFrame(this.#raw(this.#history.slice(offset, end)), offset, line, { code, message }, this.#limits.maxRecordBytes));
      this.#advance(end);
      return;
    }
    if (this.#utf8 || this.#utf16) {
      // Decoded leniently, bytes that are not UTF-8 (or an unpaired UTF-16 surrogate) would be stored as U+FFFD.
      const raw = this.#history.slice(offset, end);
      if (this.#utf8 ? !isUtf8(raw) : !pairedSurrogates(raw)) {
        const error = this.#utf8 ? invalidUtf8(line) : unpairedSurrogate(line);
        this.#frames.push(refusedFrame(this.#raw(raw), offset, line, error, this.#limits.maxRecordBytes));
        this.#advance(end);
        return;
      }
    }
    if (this.#cp1252) for (const key in record) record[key] = latin1ToCp1252(record[key]!);
    this.#frames.push({ bytes: EMPTY, offset, line, utf8: true, value: record, size: end - offset });
    this.#advance(end);
  }

  #skipped(error: CsvParseError): void {
    const { offset, line } = this.#startOfRecord();
    if (!RAGGED.has(error.code ?? '')) {
      // The core is lost inside a quote: stop it; #parse reads on from the record's next line.
      this.#broken = { offset, line, error };
      throw RESYNC;
    }
    const at = Math.max(this.#at(error.bytes ?? 0), offset);
    // Over the limit, it is refused for that, as it is when it streams over reads.
    const { code, message } = tooLarge(`record at line ${line}`, at - offset, this.#limits) ?? { code: 'PARSE_CSV', message: this.#csvMessage(error, line) };
    this.#frames.push(refusedFrame(this.#raw(this.#history.slice(offset, at)), offset, line, { code, message }, this.#limits.maxRecordBytes));
    this.#advance(at);
  }

  #csvMessage(error: CsvParseError, line: number): string {
    if (RAGGED.has(error.code ?? '') && error.record) {
      const columns = Array.isArray(this.#columns) ? this.#columns.length : undefined;
      return `line ${line}: ${error.record.length} fields, expected ${columns ?? 'as many as the first row'}`;
    }
    return `line ${line}: ${error.message.replace(/,? (at|on) line \d+/, '')}`;
  }

  /** Bytes as the file holds them: UTF-16BE is read with its bytes swapped (as UTF-16LE), and swapped back for dead letters. */
  #raw(bytes: Buffer): Buffer {
    if (!this.#swap) return bytes;
    const raw = Buffer.from(bytes);
    // Slices start and end between characters: even lengths.
    raw.subarray(0, raw.length & ~1).swap16();
    return raw;
  }

  #error(code: string, message: string, end: number): Frame {
    const offset = this.#nextStart;
    const frame = refusedFrame(this.#raw(this.#history.slice(offset, end)), offset, this.#nextLine, { code, message }, this.#limits.maxRecordBytes);
    this.#nextStart = Math.max(end, offset + 1);
    return frame;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Header names made unique: a name the header repeats keeps its first column, and each
 * later one becomes `name_2`, `name_3`… (a number no other column has): a record keyed by
 * name would otherwise hold only the last of them.
 */
function uniqueNames(names: string[]): string[] {
  const taken = new Set(names);
  if (taken.size === names.length) return names;
  const seen = new Set<string>();
  return names.map((name) => {
    if (!seen.has(name)) {
      seen.add(name);
      return name;
    }
    let n = 2;
    while (taken.has(`${name}_${n}`)) n++;
    taken.add(`${name}_${n}`);
    return `${name}_${n}`;
  });
}

/**
 * UTF-16 text handed to csv-parse as UTF-8. csv-parse matches line breaks, delimiters and
 * quotes byte by byte, and in UTF-16 their bytes also appear across two characters (U+0A41
 * U+0100 holds 0A 00 at an odd offset: a line feed to a byte scanner). Maps csv-parse's byte
 * counts back to the file's: two bytes per UTF-16 code unit, one unit per UTF-8 character
 * (two for a 4-byte one; an unpaired surrogate becomes U+FFFD, still one unit).
 */
class Utf16AsUtf8 {
  // A BOM is text to csv-parse (it drops a leading one) and its bytes count.
  readonly #decoder = new TextDecoder('utf-16le', { ignoreBOM: true });
  /** The first byte of a code unit split over reads (a file's odd last byte is never decoded). */
  #odd: Buffer | undefined;
  /** UTF-8 handed out and not yet passed by the cursor, with the UTF-8 offset of each. */
  #chunks: { bytes: Buffer; start: number; units: number }[] = [];
  #bytes = 0;
  #units = 0;
  /** Counting cursor: UTF-8 offset and the code units before it. */
  #at = 0;
  #atUnits = 0;

  text(chunk: Buffer | undefined, end: boolean): Buffer | undefined {
    let text = '';
    if (chunk) {
      let units = this.#odd ? Buffer.concat([this.#odd, chunk]) : chunk;
      this.#odd = units.length % 2 === 1 ? units.subarray(units.length - 1) : undefined;
      if (this.#odd) units = units.subarray(0, units.length - 1);
      text = this.#decoder.decode(units, { stream: true });
    }
    // A high surrogate left at the end becomes U+FFFD: one unit, as in the file.
    if (end) text += this.#decoder.decode();
    if (text.length === 0) return chunk && EMPTY;
    const bytes = Buffer.from(text, 'utf8');
    this.#chunks.push({ bytes, start: this.#bytes, units: this.#units });
    this.#bytes += bytes.length;
    this.#units += text.length;
    return bytes;
  }

  /** File bytes behind the first `utf8` bytes handed out (asked in increasing order). */
  fileBytes(utf8: number): number {
    if (utf8 < this.#at) {
      const first = this.#chunks[0]!;
      this.#at = first.start;
      this.#atUnits = first.units;
    }
    for (const chunk of this.#chunks) {
      const chunkEnd = chunk.start + chunk.bytes.length;
      if (chunkEnd <= this.#at) continue;
      const stop = Math.min(utf8, chunkEnd) - chunk.start;
      let units = this.#atUnits;
      for (let i = this.#at - chunk.start; i < stop; i++) {
        const byte = chunk.bytes[i]!;
        if ((byte & 0xc0) !== 0x80) units += byte >= 0xf0 ? 2 : 1;
      }
      this.#atUnits = units;
      this.#at = chunk.start + stop;
      if (utf8 <= chunkEnd) break;
    }
    while (this.#chunks.length > 1 && this.#chunks[0]!.start + this.#chunks[0]!.bytes.length <= this.#at) this.#chunks.shift();
    return 2 * this.#atUnits;
  }
}

/**
 * The bytes from the start of the oldest unfinished record on: enough to count lines up
 * to any record's end and to excerpt a refused one. Line counting moves forward only.
 */
class ByteHistory {
  readonly #step: number;
  readonly #keep: number;
  #chunks: Buffer[] = [];
  /** File offset of `#chunks[0]`. */
  #start = 0;
  #end = 0;
  #cursor = 0;
  #cursorLine = 1;

  /** `step` 2 for UTF-16 (a line feed is 0x0A 0x00 at an even offset). */
  constructor(step: number, maxRecordBytes: number) {
    this.#step = step;
    this.#keep = maxRecordBytes + EXCERPT_BYTES;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#end += chunk.length;
  }

  /**
   * 1-based line of the byte at `offset` (offsets before the cursor get the cursor's line).
   * A UTF-16 line feed whose second byte is not read yet stops the cursor before it: it is
   * counted once that byte comes.
   */
  lineAt(offset: number): number {
    if (offset <= this.#cursor) return this.#cursorLine;
    let reached = Math.min(offset, this.#end);
    let base = this.#start;
    scan: for (const chunk of this.#chunks) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > this.#cursor) {
        let i = Math.max(this.#cursor - base, 0);
        const stop = Math.min(offset, chunkEnd) - base;
        while ((i = chunk.indexOf(0x0a, i)) >= 0 && i < stop) {
          if (this.#step === 1) this.#cursorLine++;
          else if ((base + i) % 2 === 0) {
            const second = this.#byteAt(base + i + 1);
            if (second === undefined) {
              reached = base + i;
              break scan;
            }
            if (second === 0) this.#cursorLine++;
          }
          i++;
        }
      }
      if (chunkEnd >= offset) break;
      base = chunkEnd;
    }
    this.#cursor = reached;
    return this.#cursorLine;
  }

  /**
   * File offset of the first byte after the first line break (LF, CR or CRLF) at or after
   * `from`; -1 when none yet. A CR as the last byte seen counts as a break only `atEnd`.
   */
  nextLineStart(from: number, atEnd: boolean): number {
    const step = this.#step;
    let base = this.#start;
    for (let c = 0; c < this.#chunks.length; c++) {
      const chunk = this.#chunks[c]!;
      const chunkEnd = base + chunk.length;
      if (chunkEnd > from) {
        for (let i = Math.max(from - base, 0); i < chunk.length; i++) {
          const byte = chunk[i]!;
          if ((byte !== 0x0a && byte !== 0x0d) || (step === 2 && ((base + i) % 2 !== 0 || this.#byteAt(base + i + 1) !== 0))) continue;
          const after = base + i + step;
          if (byte === 0x0a) return after;
          const next = this.#byteAt(after);
          // A CR last, or followed by a UTF-16 line feed's first byte only: the next read may make it a CRLF.
          if (next === undefined || (next === 0x0a && step === 2 && this.#byteAt(after + 1) === undefined)) return atEnd ? after : -1;
          return next === 0x0a && (step === 1 || this.#byteAt(after + 1) === 0) ? after + step : after;
        }
      }
      base = chunkEnd;
    }
    return -1;
  }

  #byteAt(offset: number): number | undefined {
    let base = this.#start;
    for (const chunk of this.#chunks) {
      if (offset < base + chunk.length) return offset >= base ? chunk[offset - base] : undefined;
      base += chunk.length;
    }
    return undefined;
  }

  /**
   * The bytes in [start, end) that are still kept: a view when they lie in one chunk (a
   * line of broken rows after another must not cost a copy of the rest of the read each),
   * else a copy.
   */
  slice(start: number, end: number): Buffer {
    let at = this.#start;
    for (const chunk of this.#chunks) {
      if (start >= at && end <= at + chunk.length) return chunk.subarray(start - at, end - at);
      if (start < at + chunk.length) break;
      at += chunk.length;
    }
    const parts: Buffer[] = [];
    let base = this.#start;
    for (const chunk of this.#chunks) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > start && base < end) parts.push(chunk.subarray(Math.max(start - base, 0), Math.min(end, chunkEnd) - base));
      base = chunkEnd;
    }
    return Buffer.from(Buffer.concat(parts));
  }

  /**
   * Forgets chunks before `offset` (counting their lines first), but for the character
   * just before it: a CR there ends a line over the limit only once the next byte is seen.
   * A record still being read began at most the size limit before the last chunk, so
   * nothing older than that and `chunkLength` is kept (blank lines do not hold bytes).
   */
  release(offset: number, chunkLength: number): void {
    const floor = Math.max(offset - 2, this.#end - this.#keep - chunkLength);
    if (floor > this.#cursor) this.lineAt(floor);
    while (this.#chunks.length > 1 && this.#start + this.#chunks[0]!.length <= Math.min(floor, this.#cursor)) {
      this.#start += this.#chunks.shift()!.length;
    }
  }
}
