import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Envelope, RecordFailure, RecordMeta } from '../../lib/envelope';
import { ConnectorError } from '../../lib/errors';
import { checkJsonText, hasMoreOpenings } from '../../lib/limits';
import type { SourceContext } from '../../lib/source';
import { CsvFramer, type ResolvedCsvOptions } from '../../formats/csv';
import { latin1ToCp1252, sniffEncoding, SNIFF_BYTES, type FileEncoding } from '../../formats/encoding';
import { invalidUtf8, JsonArrayFramer, LineFramer, refusedRaw, type Frame, type Framer, type FramingLimits } from '../../formats/framing';
import { isUtf16 } from '../../formats/utf16';
import { XmlFramer, type ResolvedXmlOptions } from '../../formats/xml';

export type FileFormat = 'ndjson' | 'json' | 'csv' | 'xml';

/** How far a file has been read; sent while reading and once at its end. */
export interface FileProgress {
  file: string;
  /** Bytes of the file read so far (compressed bytes for a gzip file). */
  bytes: number;
  /** Size of the file on disk. */
  totalBytes: number;
  /** Records read so far, dead letters included. */
  records: number;
  elapsedMs: number;
  /** Bytes per second since the file was opened. */
  bytesPerSecond: number;
  recordsPerSecond: number;
  /** Estimated time left, from the byte rate; `undefined` until there is a rate. */
  etaMs: number | undefined;
  /** True on the last event of the file. */
  done: boolean;
}

/** Everything about reading files that is fixed when the source is built. */
export interface ReadSettings {
  source: string;
  limits: FramingLimits;
  /** Read size; undefined for the format's default. */
  chunkBytes: number | undefined;
  encoding: FileEncoding | undefined;
  csv: ResolvedCsvOptions;
  xml: ResolvedXmlOptions | undefined;
  onProgress: ((progress: FileProgress) => void) | undefined;
  progressEveryMs: number;
}

/** What reading one file came to. */
export interface FileOutcome {
  /** Records read (dead letters included), skipped ones counted. */
  records: number;
  /** Set when the file could not be read to its end as its format (a corrupt gzip, not an array). */
  failure: string | undefined;
}

/** What the records of one read of a file share: held once, not by every record's meta. */
class FileRead {
  constructor(
    readonly source: string,
    readonly file: string,
    readonly vendor: string | undefined,
    readonly receivedAt: number,
    /** `<file>@`: a record's position is this and its offset. */
    readonly positionPrefix: string,
  ) {}
}

/**
 * A file record's meta: its own numbers, and what the records of its read share through
 * `read` (source, file, vendor, time). Its position is made when asked (insert tokens ask
 * for a batch's first and last; dead letters for theirs), not for every record. Every
 * record in flight holds one until its batch is written, so each field it leaves out is
 * memory every young-generation collection does not copy: with the position string and
 * five shared fields gone, a third fewer bytes survive them. Built by a constructor rather than
 * as a literal: V8 then keeps room in the object for the fields later steps add
 * (`schemaVersion`), where a literal grows a second object for them.
 */
class FileRecordMeta implements RecordMeta {
  declare schemaVersion?: string;
  declare subject?: string;
  readonly #read: FileRead;
  readonly record: number;
  readonly line: number;
  readonly offset: number;
  constructor(read: FileRead, record: number, line: number, offset: number) {
    this.#read = read;
    this.record = record;
    this.line = line;
    this.offset = offset;
  }
  get source(): string {
    return this.#read.source;
  }
  get file(): string {
    return this.#read.file;
  }
  get vendor(): string | undefined {
    return this.#read.vendor;
  }
  get receivedAt(): number {
    return this.#read.receivedAt;
  }
  get position(): string {
    return this.#read.positionPrefix + this.offset;
  }
  get attempt(): number {
    return 1;
  }
  /** Every field, the accessors' too, for `JSON.stringify` (a log line). */
  toJSON(): RecordMeta {
    const { source, position, vendor, file, record, line, offset, receivedAt, schemaVersion, subject } = this;
    return { source, position, ...(vendor !== undefined && { vendor }), file, record, line, offset, receivedAt, attempt: 1, ...(schemaVersion !== undefined && { schemaVersion }), ...(subject !== undefined && { subject }) };
  }
}

/** What each format expected of a file that turned out empty. */
const EXPECTED: Record<FileFormat, string> = {
  ndjson: 'NDJSON records, one per line',
  json: 'a JSON array',
  csv: 'CSV records',
  xml: 'an XML document',
};

/** A failure of the file rather than of one record: no bytes of its own, one credit byte. */
function fileFailure(offset: number, line: number, code: string, message: string): Frame {
  return { bytes: Buffer.alloc(0), offset, line, utf8: true, size: 1, error: { code, message } };
}

/**
 * A file that no configured format reads, as one dead letter (`UNREADABLE_FILE`) naming
 * it and the option to set: a file is never passed over in silence.
 */
export async function rejectUnreadable(file: string, vendor: string | undefined, message: string, settings: ReadSettings, context: SourceContext): Promise<void> {
  const wait = context.credits.take(1);
  if (wait) await wait;
  const meta: RecordMeta = { source: settings.source, position: `${file}@0`, file, record: 1, line: 1, offset: 0, receivedAt: Date.now(), attempt: 1 };
  if (vendor !== undefined) meta.vendor = vendor;
  context.reject(meta, undefined, 1, { stage: 'source', code: 'UNREADABLE_FILE', message, path: '' });
}

/** The dead letter of a file with nothing in it (no bytes, or only a byte order mark and whitespace). */
function emptyFile(format: FileFormat): Frame {
  return fileFailure(0, 1, 'EMPTY_FILE', `empty file: expected ${EXPECTED[format]}`);
}

const BOMS = [Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from([0xff, 0xfe]), Buffer.from([0xfe, 0xff])];

/**
 * True when `chunk`, found at byte `at` of the file, holds only whitespace (and a byte
 * order mark at the start). In UTF-16 (`highByte` the parity of the offsets of a code
 * unit's high byte: 1 little-endian, 0 big-endian) a whitespace unit's high byte is 0.
 */
function isBlank(chunk: Buffer, at: number, highByte: number | undefined): boolean {
  let i = 0;
  if (at === 0) {
    const bom = BOMS.find((b) => chunk.subarray(0, b.length).equals(b));
    if (bom) i = bom.length;
  }
  for (; i < chunk.length; i++) {
    const c = chunk[i]!;
    if ((at + i) % 2 === highByte ? c !== 0 : c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return false;
  }
  return true;
}

/** Frame codes that stop a file or mean it holds nothing readable. */
const FILE_FAILURES = new Set(['NOT_ARRAY', 'EMPTY_FILE', 'NOT_XML', 'GZIP', 'UNKNOWN_ENCODING', 'FILE_TOO_DEEP']);

/**
 * Reads one file into envelopes: gunzips it when its first bytes say gzip, chooses its
 * encoding, frames and parses its records, takes a credit for each. Records numbered up
 * to `from` were settled in an earlier run and are read but not emitted; those after it
 * are emitted (and refused) again even when they had settled, so the batch and the
 * dead-letter batch they shared with unsettled records are written whole once more, with
 * the insert tokens they had (and absorbed).
 */
export async function readFile(
  file: string,
  format: FileFormat,
  vendor: string | undefined,
  settings: ReadSettings,
  context: SourceContext,
  emit: (envelope: Envelope<unknown>) => void,
  from = 0,
): Promise<FileOutcome> {
  const { source, limits } = settings;
  let record = 0;
  let failure: string | undefined;
  let decodeText: (bytes: Buffer) => string = utf8Text;
  let checkUtf8 = true;

  // Every position of the file starts with this: one concatenation when a position is asked for, not two.
  const positionPrefix = `${file}@`;
  const deliver = async (frames: Frame[]) => {
    const read = new FileRead(source, file, vendor, Date.now(), positionPrefix);
    for (const frame of frames) {
      record++;
      if (frame.error && FILE_FAILURES.has(frame.error.code)) failure ??= `${frame.error.code}: ${frame.error.message}`;
      if (record <= from) continue;
      const bytes = frame.size ?? frame.bytes.length;
      const wait = context.credits.take(bytes);
      if (wait) await wait;
      const meta = new FileRecordMeta(read, record, frame.line, frame.offset);
      deliverFrame(frame, meta, bytes, limits, context, emit, decodeText, checkUtf8);
    }
  };

  const input = await openInput(file, settings.chunkBytes ?? (format === 'xml' ? 256 * 1024 : 1024 * 1024));
  const progress = new ProgressReporter(file, input.totalBytes, settings);
  let framer: Framer | undefined;
  /** In UTF-16, the parity of the offsets of each code unit's high byte (see isBlank). */
  let highByte: number | undefined;
  let head: Buffer[] = [];
  let headBytes = 0;
  const start = () => {
    const first = Buffer.concat(head);
    head = [];
    headBytes = 0;
    const sniffed = sniffEncoding(first, settings.encoding, format === 'xml');
    const { encoding } = sniffed;
    if (format === 'csv') framer = new CsvFramer(settings.csv, limits, encoding);
    else if (format === 'xml') framer = new XmlFramer(settings.xml!, limits, encoding, sniffed.bom);
    else {
      // UTF-16 is framed on the file's bytes: offsets, sizes and dead letters are the file's.
      framer = format === 'ndjson' ? new LineFramer(limits, encoding) : new JsonArrayFramer(limits, encoding);
      if (isUtf16(encoding)) {
        checkUtf8 = false;
        decodeText = encoding === 'utf-16le' ? utf16leText : utf16beText;
      } else if (encoding !== 'utf-8') {
        checkUtf8 = false;
        decodeText = encoding === 'latin1' ? latin1Text : cp1252Text;
      }
    }
    if (isUtf16(encoding)) highByte = encoding === 'utf-16le' ? 1 : 0;
    const frames = sniffed.unknownDeclared === undefined ? [] : [unknownEncoding(sniffed.unknownDeclared)];
    return frames.concat(push(first));
  };
  let uncompressed = 0;
  // Whether everything so far is a byte order mark or whitespace: such a file is empty.
  let blank = true;
  const push = (chunk: Buffer) => {
    if (blank) blank = isBlank(chunk, uncompressed, highByte);
    uncompressed += chunk.length;
    return framer!.push(chunk);
  };
  try {
    for await (const chunk of input.chunks) {
      if (framer) await deliver(push(chunk as Buffer));
      else {
        head.push(chunk as Buffer);
        headBytes += (chunk as Buffer).length;
        if (headBytes >= SNIFF_BYTES) await deliver(start());
      }
      progress.update(input.bytesRead(), record, false);
      if (context.signal.aborted) return { records: record, failure };
    }
    if (!framer) await deliver(start());
    const last = framer!.end();
    // An empty file is the same failure in every format: one EMPTY_FILE dead letter at its start.
    // (Half a UTF-16 character at the end is not whitespace.)
    await deliver(blank && record === 0 && (highByte === undefined || uncompressed % 2 === 0) ? [emptyFile(format)] : last);
  } catch (cause) {
    if (cause instanceof ConnectorError) throw cause;
    const code = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    if (typeof code === 'string' && code.startsWith('Z_')) {
      // A corrupt or cut-off gzip file is bad data, not a broken source.
      const offset = uncompressed + headBytes;
      const message = `gzip data is corrupt or cut off after ${offset} uncompressed bytes: ${(cause as Error).message}`;
      await deliver([fileFailure(offset, 0, 'GZIP', message)]);
    } else {
      throw new ConnectorError(`cannot read ${file}: ${code}`, { cause });
    }
  } finally {
    input.close();
  }
  progress.update(input.bytesRead(), record, true);
  return { records: record, failure };
}

/**
 * What one framed record becomes: an envelope with its parsed value, or a dead letter
 * through `context.reject` (a framing error, bad UTF-8, over a limit, bad JSON). Its
 * credit must have been taken. Shared by `readFile` and bulk imports, so a record read
 * either way is refused with the same stage, code, message and bytes.
 */
export function deliverFrame(
  frame: Frame,
  meta: RecordMeta,
  bytes: number,
  limits: FramingLimits,
  context: SourceContext,
  emit: (envelope: Envelope<unknown>) => void,
  decodeText: (bytes: Buffer) => string = utf8Text,
  checkUtf8 = true,
): void {
  if (frame.error) {
    context.reject(meta, refusedRaw(frame), bytes, { stage: 'source', path: '', ...frame.error });
    return;
  }
  if (frame.value !== undefined) {
    emit(context.envelope(frame.value, meta, undefined, bytes));
    return;
  }
  if (frame.text !== undefined) {
    // ASCII reads the same in every supported encoding.
    const refused = suspect(frame.text, bytes, limits) ? checkJsonText(frame.text, bytes, `line ${frame.line}`, limits) : undefined;
    if (refused) {
      context.reject(meta, frame.text, bytes, refused);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(frame.text);
    } catch (error) {
      context.reject(meta, frame.text, bytes, jsonFailure(frame.line, error));
      return;
    }
    emit(context.envelope(value, meta, frame.text, bytes));
    return;
  }
  if (checkUtf8 && !frame.utf8) {
    context.reject(meta, Buffer.from(frame.bytes), bytes, { stage: 'source', path: '', ...invalidUtf8(frame.line) });
    return;
  }
  const text = decodeText(frame.bytes);
  const refused = suspect(text, bytes, limits) ? checkJsonText(text, bytes, `line ${frame.line}`, limits) : undefined;
  if (refused) {
    context.reject(meta, decodeText === utf8Text || UTF16_TEXT.has(decodeText) ? Buffer.from(frame.bytes) : text, bytes, refused);
    return;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // A UTF-16 record's dead letter holds its bytes: its text would be counted in UTF-8.
    context.reject(meta, UTF16_TEXT.has(decodeText) ? Buffer.from(frame.bytes) : text, bytes, jsonFailure(frame.line, error));
    return;
  }
  // UTF-8 input keeps a view of its bytes for a later dead letter, not a second copy as text.
  emit(context.envelope(value, meta, decodeText === utf8Text ? frame.bytes : text, bytes));
}

/**
 * Whether JSON text could be over a limit: only then is it checked, with the message
 * naming its line, which is not built for every record that is within both.
 */
function suspect(text: string, bytes: number, limits: FramingLimits): boolean {
  return bytes > limits.maxRecordBytes || hasMoreOpenings(text, limits.maxDepth);
}

function jsonFailure(line: number, error: unknown): RecordFailure {
  return { stage: 'parse', code: 'PARSE_JSON', message: `line ${line}: ${(error as Error).message}`, path: '' };
}

function unknownEncoding(name: string): Frame {
  return fileFailure(0, 1, 'UNKNOWN_ENCODING', `the XML declaration names encoding ${JSON.stringify(name)}, which is not supported: read as UTF-8`);
}

const utf8Text = (bytes: Buffer) => bytes.toString('utf8');
// A BOM inside a record is a character of it, not one to drop.
const utf16le = new TextDecoder('utf-16le', { ignoreBOM: true });
const utf16be = new TextDecoder('utf-16be', { ignoreBOM: true });
const utf16leText = (bytes: Buffer) => utf16le.decode(bytes);
const utf16beText = (bytes: Buffer) => utf16be.decode(bytes);
const UTF16_TEXT = new Set([utf16leText, utf16beText]);
const latin1Text = (bytes: Buffer) => bytes.toString('latin1');
const cp1252Text = (bytes: Buffer) => latin1ToCp1252(bytes.toString('latin1'));

interface Input {
  chunks: AsyncIterable<Buffer>;
  totalBytes: number;
  bytesRead(): number;
  close(): void;
}

const GZIP_MAGIC = [0x1f, 0x8b];

/** The bytes of a file, gunzipped when its first two bytes are gzip's magic number. */
async function openInput(file: string, chunkBytes: number): Promise<Input> {
  let totalBytes: number;
  let gzip: boolean;
  try {
    const handle = await open(file, 'r');
    try {
      totalBytes = (await handle.stat()).size;
      const magic = Buffer.alloc(2);
      const { bytesRead } = await handle.read(magic, 0, 2, 0);
      gzip = bytesRead === 2 && magic[0] === GZIP_MAGIC[0] && magic[1] === GZIP_MAGIC[1];
    } finally {
      await handle.close();
    }
  } catch (cause) {
    throw new ConnectorError(`cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, { cause });
  }
  const raw = createReadStream(file, { highWaterMark: chunkBytes });
  if (!gzip) return { chunks: raw, totalBytes, bytesRead: () => raw.bytesRead, close: () => raw.destroy() };
  const gunzip = createGunzip({ chunkSize: chunkBytes });
  pipeline(raw, gunzip, () => undefined);
  return {
    chunks: gunzip,
    totalBytes,
    bytesRead: () => raw.bytesRead,
    close: () => {
      gunzip.destroy();
      raw.destroy();
    },
  };
}

class ProgressReporter {
  readonly #file: string;
  readonly #total: number;
  readonly #callback: ((progress: FileProgress) => void) | undefined;
  readonly #everyMs: number;
  readonly #started = Date.now();
  #last = 0;

  constructor(file: string, totalBytes: number, settings: ReadSettings) {
    this.#file = file;
    this.#total = totalBytes;
    this.#callback = settings.onProgress;
    this.#everyMs = settings.progressEveryMs;
  }

  update(bytes: number, records: number, done: boolean): void {
    if (!this.#callback) return;
    const now = Date.now();
    if (!done && now - this.#last < this.#everyMs) return;
    this.#last = now;
    const elapsedMs = now - this.#started;
    const seconds = elapsedMs / 1000;
    const bytesPerSecond = seconds > 0 ? bytes / seconds : 0;
    const progress: FileProgress = {
      file: this.#file,
      bytes,
      totalBytes: this.#total,
      records,
      elapsedMs,
      bytesPerSecond: Math.round(bytesPerSecond),
      recordsPerSecond: seconds > 0 ? Math.round(records / seconds) : 0,
      etaMs: done ? 0 : bytesPerSecond > 0 ? Math.round(((this.#total - bytes) / bytesPerSecond) * 1000) : undefined,
      done,
    };
    this.#callback(progress);
  }
}
