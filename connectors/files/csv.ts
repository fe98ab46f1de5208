import { Parser } from 'csv-parse';
import { ConfigError } from '../../lib/errors';
import { ByteSwapper, latin1ToCp1252, type FileEncoding } from './encoding';
import { EXCERPT_BYTES, type Frame, type Framer, type FramingLimits } from './framing';

/** How a CSV file is laid out. */
export interface CsvOptions {
  /** Field separator, one character. @default ',' */
  delimiter?: string;
  /** Quote character, one character, or `false` when fields are never quoted. @default '"' */
  quote?: string | false;
  /** Escape character inside quoted fields, one character. @default the quote (a doubled quote) */
  escape?: string;
  /**
   * `true`: the first row names the columns. A list: the column names, and every row is
   * data. Records are objects keyed by column name. @default true
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

function shown(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}

/** The synchronous core of csv-parse's stream (`Parser#api`), which `_transform` drives. */
interface CsvCore {
  parse(chunk: Buffer | undefined, end: boolean, push: (record: Record<string, string>) => void, close: () => void): Error | undefined;
  readonly info: { bytes: number; empty_lines: number; comment_lines: number };
  readonly state: { record_length: number; field: { length: number }; recordDelimiterMaxLength: number };
}

interface CsvParseError extends Error {
  code?: string;
  /** Bytes the parser had consumed when it failed. */
  bytes?: number;
  record?: string[];
}

/**
 * CSV records cut from a byte stream by csv-parse, each with its exact byte offset and the
 * line of its first byte (quoted fields may hold line breaks). A ragged row or a broken
 * quote is a frame with an error, and the file goes on. A record over the size limit is
 * dropped as it streams by and the parser starts again at the next line.
 */
export class CsvFramer implements Framer {
  readonly #options: ResolvedCsvOptions;
  readonly #limits: FramingLimits;
  readonly #csvEncoding: BufferEncoding;
  readonly #cp1252: boolean;
  readonly #swap: ByteSwapper | undefined;
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
  /** After a record over the limit: bytes are dropped up to the next line break. */
  #resyncing = false;
  #frames: Frame[] = [];
  readonly #onRecord = (record: Record<string, string>) => this.#record(record);
  readonly #close = () => undefined;

  constructor(options: ResolvedCsvOptions, limits: FramingLimits, encoding: FileEncoding) {
    this.#options = options;
    this.#limits = limits;
    this.#columns = options.columns;
    this.#csvEncoding = encoding === 'utf-8' ? 'utf8' : encoding.startsWith('utf-16') ? 'utf16le' : 'latin1';
    this.#cp1252 = encoding === 'windows-1252';
    this.#swap = encoding === 'utf-16be' ? new ByteSwapper() : undefined;
    this.#history = new ByteHistory(encoding.startsWith('utf-16') ? 2 : 1, limits.maxRecordBytes);
    this.#core = this.#newCore();
  }

  push(chunk: Buffer): Frame[] {
    if (this.#swap) chunk = this.#swap.push(chunk);
    this.#history.append(chunk);
    const start = this.#fed;
    this.#fed += chunk.length;
    if (this.#resyncing) {
      const at = this.#history.nextNewline(start);
      if (at < 0) {
        // Still inside the refused record: keep none of it.
        this.#history.release(this.#fed);
        return [];
      }
      this.#resyncing = false;
      this.#base = at;
      this.#nextStart = at;
      this.#nextLine = this.#history.lineAt(at);
      chunk = chunk.subarray(at - start);
    }
    return this.#parse(chunk, false);
  }

  end(): Frame[] {
    if (this.#swap) {
      const rest = this.#swap.end();
      if (rest.length > 0) this.#frames.push(this.#error('TRUNCATED', `the file ends inside a UTF-16 character`, this.#fed));
    }
    if (this.#resyncing) return this.#take();
    return this.#parse(undefined, true);
  }

  #parse(chunk: Buffer | undefined, end: boolean): Frame[] {
    const error = this.#core.parse(chunk, end, this.#onRecord, this.#close) as CsvParseError | undefined;
    if (error) {
      // Only option or hook failures get here: record errors are skipped and reported.
      this.#frames.push(this.#error('PARSE_CSV', error.message, this.#fed));
      this.#restart(this.#fed);
    } else if (!end && this.#core.state.record_length + this.#core.state.field.length > this.#limits.maxRecordBytes) {
      this.#frames.push(this.#error('RECORD_TOO_LARGE', `record at line ${this.#nextLine} is longer than ${this.#limits.maxRecordBytes} bytes`, this.#fed));
      this.#restart(this.#fed);
      this.#resyncing = true;
    }
    this.#history.release(this.#nextStart);
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
      skip_empty_lines: true,
      skip_records_with_error: true,
      on_skip: (error: CsvParseError | undefined) => {
        if (error) this.#skipped(error);
        return undefined;
      },
    });
    this.#emptyLines = 0;
    this.#commentLines = 0;
    return (parser as unknown as { api: CsvCore }).api;
  }

  /** Starts a fresh core at `offset`, keeping the column names already read. */
  #restart(offset: number): void {
    this.#base = offset;
    this.#nextStart = offset;
    this.#core = this.#newCore();
  }

  #header(header: string[]): string[] {
    if (this.#cp1252) header = header.map(latin1ToCp1252);
    this.#columns = header;
    this.#advance(this.#base + this.#core.info.bytes);
    return header;
  }

  /** The start and line of the record that just ended, after skipped blank and comment lines. */
  #startOfRecord(): { offset: number; line: number } {
    const info = this.#core.info;
    const blank = info.empty_lines - this.#emptyLines;
    const comments = info.comment_lines - this.#commentLines;
    this.#emptyLines = info.empty_lines;
    this.#commentLines = info.comment_lines;
    return {
      offset: this.#nextStart + blank * (this.#core.state.recordDelimiterMaxLength || 1),
      line: this.#nextLine + blank + comments,
    };
  }

  #advance(end: number): void {
    this.#nextStart = end;
    this.#nextLine = this.#history.lineAt(end);
  }

  #record(record: Record<string, string>): void {
    const { offset, line } = this.#startOfRecord();
    const end = this.#base + this.#core.info.bytes;
    if (this.#cp1252) for (const key in record) record[key] = latin1ToCp1252(record[key]!);
    this.#frames.push({ bytes: EMPTY, offset, line, utf8: true, value: record, size: end - offset });
    this.#advance(end);
  }

  #skipped(error: CsvParseError): void {
    const { offset, line } = this.#startOfRecord();
    const at = this.#base + (error.bytes ?? 0);
    const ragged = error.code === 'CSV_RECORD_INCONSISTENT_COLUMNS' || error.code === 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH';
    const columns = Array.isArray(this.#columns) ? this.#columns.length : undefined;
    const message = ragged && error.record
      ? `line ${line}: ${error.record.length} fields, expected ${columns ?? 'as many as the first row'}`
      : `line ${line}: ${error.message.replace(/,? (at|on) line \d+/, '').replace(/ at line \d+/, '')}`;
    const code = error.code === 'CSV_QUOTE_NOT_CLOSED' ? 'TRUNCATED' : 'PARSE_CSV';
    // A quote left open runs to the end of the input.
    const end = error.code === 'CSV_QUOTE_NOT_CLOSED' ? this.#fed : Math.max(at, offset);
    const bytes = this.#history.slice(offset, Math.min(end > offset ? end : this.#fed, offset + EXCERPT_BYTES));
    this.#frames.push({ bytes, offset, line, utf8: false, error: { code, message }, size: Math.max(end - offset, 1) });
    // A ragged row has ended; after a broken quote the row goes on, and the next record
    // starts somewhere after the error.
    if (ragged) this.#advance(at);
    else {
      this.#nextStart = Math.max(end, offset + 1);
      this.#nextLine = line;
    }
  }

  #error(code: string, message: string, end: number): Frame {
    const offset = this.#nextStart;
    const bytes = this.#history.slice(offset, Math.min(end, offset + EXCERPT_BYTES));
    const frame: Frame = { bytes, offset, line: this.#nextLine, utf8: false, error: { code, message }, size: Math.max(end - offset, 1) };
    this.#nextStart = Math.max(end, offset + 1);
    return frame;
  }
}

const EMPTY = Buffer.alloc(0);

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

  /** 1-based line of the byte at `offset` (offsets before the cursor get the cursor's line). */
  lineAt(offset: number): number {
    if (offset <= this.#cursor) return this.#cursorLine;
    let base = this.#start;
    for (const chunk of this.#chunks) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > this.#cursor) {
        let i = Math.max(this.#cursor - base, 0);
        const stop = Math.min(offset, chunkEnd) - base;
        while ((i = chunk.indexOf(0x0a, i)) >= 0 && i < stop) {
          if (this.#step === 1 || ((base + i) % 2 === 0 && (chunk[i + 1] ?? 0) === 0)) this.#cursorLine++;
          i++;
        }
      }
      if (chunkEnd >= offset) break;
      base = chunkEnd;
    }
    this.#cursor = Math.min(offset, this.#end);
    return this.#cursorLine;
  }

  /** File offset of the byte after the first line feed at or after `from`, -1 when none yet. */
  nextNewline(from: number): number {
    let base = this.#start;
    for (const chunk of this.#chunks) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > from) {
        let i = Math.max(from - base, 0);
        while ((i = chunk.indexOf(0x0a, i)) >= 0) {
          if (this.#step === 1 || (base + i) % 2 === 0) return base + i + this.#step;
          i++;
        }
      }
      base = chunkEnd;
    }
    return -1;
  }

  /** A copy of the bytes in [start, end) that are still kept. */
  slice(start: number, end: number): Buffer {
    const parts: Buffer[] = [];
    let base = this.#start;
    for (const chunk of this.#chunks) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > start && base < end) parts.push(chunk.subarray(Math.max(start - base, 0), Math.min(end, chunkEnd) - base));
      base = chunkEnd;
    }
    return Buffer.from(Buffer.concat(parts));
  }

  /** Forgets chunks before `offset` (counting their lines first), and anything beyond the limit. */
  release(offset: number): void {
    const floor = Math.max(offset, this.#end - this.#keep);
    if (floor > this.#cursor) this.lineAt(floor);
    while (this.#chunks.length > 1 && this.#start + this.#chunks[0]!.length <= Math.min(floor, this.#cursor)) {
      this.#start += this.#chunks.shift()!.length;
    }
  }
}
