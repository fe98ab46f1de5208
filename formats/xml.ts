import sax from 'sax';
import { ConfigError } from '../lib/errors';
import { tooDeep, tooLarge } from '../lib/limits';
import { bytesPerUnit, exactDecoder, type ChunkDecoder, type FileEncoding } from './encoding';
import { invalidUtf8, RefusedBytes, refusedFrame, type Frame, type Framer, type FramingLimits } from './framing';
import { HALF_CHARACTER, unpairedSurrogate } from './utf16';

/** Which elements of an XML file are records, and how they become objects. */
export interface XmlOptions {
  /**
   * Name of the element that holds one record, e.g. `Booking`: a local name matches in
   * any namespace, a prefixed one (`ota:Booking`) only with that prefix. Required.
   */
  record: string;
  /** Prefix of the keys that hold attributes. @default '@' */
  attributePrefix?: string;
  /** Key of an element's text when it also has attributes or children. @default '#text' */
  textKey?: string;
  /** Elements (local names) that are arrays even when they occur once. Repeated elements always are. @default [] */
  arrays?: readonly string[];
  /** Keys keep namespace prefixes (`ota:Name`) instead of local names (`Name`). @default false */
  keepPrefixes?: boolean;
  /** Trims whitespace around text. @default true */
  trim?: boolean;
}

export interface ResolvedXmlOptions {
  record: string;
  attributePrefix: string;
  textKey: string;
  arrays: ReadonlySet<string>;
  keepPrefixes: boolean;
  trim: boolean;
}

const NAME = /^(?:[A-Za-z_][\w.-]*:)?[A-Za-z_][\w.-]*$/;

/** Validates XML options; `prefix` names them in messages (`xml.record …`). */
export function resolveXmlOptions(options: XmlOptions | undefined, prefix = 'xml'): ResolvedXmlOptions {
  if (options === undefined || options === null || typeof options !== 'object') {
    throw new ConfigError(`${prefix}.record is required for XML: name the element that holds one record, e.g. { record: 'Booking' }`);
  }
  if (typeof options.record !== 'string' || !NAME.test(options.record)) {
    throw new ConfigError(`${prefix}.record must be an element name like 'Booking' or 'ota:Booking', got ${JSON.stringify(options.record)}`);
  }
  const attributePrefix = options.attributePrefix ?? '@';
  if (typeof attributePrefix !== 'string') throw new ConfigError(`${prefix}.attributePrefix must be a string, got ${JSON.stringify(attributePrefix)}`);
  const textKey = options.textKey ?? '#text';
  if (typeof textKey !== 'string' || textKey === '') throw new ConfigError(`${prefix}.textKey must be a non-empty string, got ${JSON.stringify(textKey)}`);
  const arrays = options.arrays ?? [];
  if (!Array.isArray(arrays) || arrays.some((a) => typeof a !== 'string')) {
    throw new ConfigError(`${prefix}.arrays must be a list of element names, got ${JSON.stringify(arrays)}`);
  }
  return { record: options.record, attributePrefix, textKey, arrays: new Set(arrays), keepPrefixes: options.keepPrefixes ?? false, trim: options.trim ?? true };
}

/** An element of the record being built. */
interface Node {
  key: string;
  /** Attributes and children; `undefined` while there are none. */
  object: Record<string, unknown> | undefined;
  text: string;
}

type Failure = { code: string; message: string };

/** The stretch a framer that gave up refuses whole: from `offset` to the end of the input. */
interface Rest {
  refused: RefusedBytes;
  offset: number;
  line: number;
  error: Failure;
}

interface Segment {
  text: string;
  /** Index of its first character in the decoded text. */
  char: number;
  /** Byte offset of its first character in the file. */
  byte: number;
}

/** Input bytes kept between records: more than sax's longest buffer can take, in any encoding. */
const KEEP_RAW_BYTES = 4 * 128 * 1024;

/** Decoded text kept behind the newest chunk: more than sax's longest buffer (64 Ki characters). */
const KEEP_CHARS = 128 * 1024;

/** How far above `maxDepth` a document may nest outside records before the file is given up. */
const DOCUMENT_DEPTH_FACTOR = 4;
/** Problems outside records reported per file; each kind once (stray text is one error per character). */
const MAX_FILE_ERRORS = 10;

/**
 * XML records streamed with sax: each element named by `record` becomes an object
 * (attributes as `@name`, children as keys, repeated children as arrays, text and CDATA
 * as strings), with the byte offset and line of its `<`.
 *
 * Hostile input stays harmless: a DTD is never read for entities and nothing is ever
 * fetched, so entity bombs and external entities (XXE) are dead letters naming the
 * undeclared entity; nesting, record size and every sax buffer are bounded.
 */
export class XmlFramer implements Framer {
  readonly #options: ResolvedXmlOptions;
  readonly #limits: FramingLimits;
  readonly #parser: sax.SAXParser;
  readonly #decoder: ChunkDecoder;
  /** Bytes per UTF-16 code unit, 0 for UTF-8 (counted per record). */
  readonly #unit: number;
  readonly #bom: number;
  #frames: Frame[] = [];
  /** Recent decoded text, oldest first, with where each piece starts in characters and bytes. */
  #segments: Segment[] = [];
  /** Characters and bytes decoded before the newest segment's end. */
  #chars = 0;
  #bytes = 0;
  /** Moves forward only: the byte offset of character `#cursorChar`. */
  #cursorChar = 0;
  #cursorByte = 0;
  /**
   * File offsets of the bytes (UTF-16: code units) not valid in the file's encoding, oldest
   * first, from the open record's start or as far back as a record can still start.
   */
  #invalid: number[] = [];
  #depth = 0;
  #dead = false;
  #fileErrors = new Set<string>();
  // The record being read.
  #stack: Node[] = [];
  #recordDepth = 0;
  #recordOffset = 0;
  #recordLine = 0;
  #recordSize = 0;
  #failure: Failure | undefined;
  #pendingStart: { char: number; line: number } | undefined;
  /** A problem found inside the record's own start tag, before the record began. */
  #pendingFailure: Failure | undefined;
  #truncated = false;
  /** After giving up: every byte from where its dead letter starts to the end of the file. */
  #rest: Rest | undefined;
  /** Input bytes as read, from file offset `#rawStart` to `#rawEnd`. */
  #raw: Buffer[] = [];
  #rawStart = 0;
  #rawEnd = 0;
  /** The open record's bytes up to `#refusedThrough`, once it outgrew the size limit. */
  #recordRefused: RefusedBytes | undefined;
  #refusedThrough = 0;

  constructor(options: ResolvedXmlOptions, limits: FramingLimits, encoding: FileEncoding, bom: number) {
    this.#options = options;
    this.#limits = limits;
    this.#decoder = exactDecoder(encoding, bom, (offset) => this.#invalid.push(offset));
    this.#unit = bytesPerUnit(encoding);
    this.#bom = bom;
    this.#bytes = bom;
    this.#cursorByte = bom;
    // strictEntities: only XML's five entities are known; anything else stays unexpanded.
    const parser = sax.parser(true, { strictEntities: true, position: true, trim: false, normalize: false } as sax.SAXOptions);
    parser.onopentagstart = (tag) => this.#openStart(tag.name);
    parser.onopentag = (tag) => this.#open(tag as sax.Tag);
    parser.onclosetag = () => this.#close();
    parser.ontext = (text) => this.#addText(text);
    parser.oncdata = (text) => this.#addText(text);
    parser.onerror = (error) => this.#onError(error);
    this.#parser = parser;
  }

  push(chunk: Buffer): Frame[] {
    this.#rest?.refused.add(chunk);
    if (!this.#dead) {
      this.#keepRaw(chunk);
      // A record that already failed holds no more interest than bytes before it.
      this.#forgetInvalidBefore(this.#recordDepth > 0 && !this.#failure ? this.#recordOffset : this.#rawStart);
      this.#write(this.#decoder.decode(chunk));
    }
    return this.#take();
  }

  /**
   * Keeps the input's bytes as read, for a refused record's dead letter: from the open
   * record's first byte (hashed as they pass once there are too many to keep), or, between
   * records, enough to reach back to the start of any tag sax can still be reading.
   */
  #keepRaw(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#raw.push(chunk);
    this.#rawEnd += chunk.length;
    const newest = this.#rawEnd - chunk.length;
    if (this.#recordDepth > 0) {
      if (this.#rawEnd - this.#recordOffset <= this.#limits.maxRecordBytes) return;
      // All but the newest chunk, which may run past the record's end.
      this.#recordRefused ??= new RefusedBytes(this.#limits.maxRecordBytes);
      this.#recordRefused.add(this.#rawSlice(this.#refusedThrough, newest));
      this.#refusedThrough = newest;
      this.#dropRawBefore(newest);
    } else this.#dropRawBefore(Math.min(newest, this.#rawEnd - KEEP_RAW_BYTES));
  }

  #dropRawBefore(offset: number): void {
    while (this.#raw.length > 1 && this.#rawStart + this.#raw[0]!.length <= offset) this.#rawStart += this.#raw.shift()!.length;
  }

  /** The kept bytes in [start, end). */
  #rawSlice(start: number, end: number): Buffer {
    const parts: Buffer[] = [];
    let base = this.#rawStart;
    for (const chunk of this.#raw) {
      const chunkEnd = base + chunk.length;
      if (chunkEnd > start && base < end) parts.push(chunk.subarray(Math.max(start - base, 0), Math.min(end, chunkEnd) - base));
      base = chunkEnd;
    }
    return Buffer.concat(parts);
  }

  end(): Frame[] {
    if (!this.#dead) {
      this.#write(this.#decoder.end());
      // sax starts over once closed: ask before.
      const sawRoot = (this.#parser as unknown as { sawRoot: boolean }).sawRoot;
      const lastLine = this.#parser.line + 1;
      try {
        this.#parser.close();
      } catch (error) {
        if (error !== GIVE_UP) throw error;
      }
      if (!sawRoot) {
        const message = this.#chars === 0 ? 'empty file: expected an XML document' : 'no root element: not an XML document';
        this.#frames.push({ bytes: EMPTY, offset: this.#bytes, line: this.#parser.line + 1, utf8: true, size: 1, error: { code: 'NOT_XML', message } });
      }
      if (this.#unit === 2 && this.#rawEnd % 2 === 1) {
        // Half a code unit, never decoded: no record holds it.
        this.#frames.push(refusedFrame(this.#rawSlice(this.#rawEnd - 1, this.#rawEnd), this.#rawEnd - 1, lastLine, HALF_CHARACTER, this.#limits.maxRecordBytes));
      }
    }
    if (this.#rest) {
      const { refused, offset, line, error } = this.#rest;
      this.#rest = undefined;
      this.#frames.push(refused.frame(offset, line, error));
    }
    return this.#take();
  }

  #take(): Frame[] {
    const frames = this.#frames;
    this.#frames = [];
    return frames;
  }

  #write(text: string): void {
    if (text.length === 0) return;
    const bytes = this.#unit === 0 ? Buffer.byteLength(text) : text.length * this.#unit;
    this.#segments.push({ text, char: this.#chars, byte: this.#bytes });
    this.#chars += text.length;
    this.#bytes += bytes;
    // Keep enough text to reach back to the start of any tag sax can still be reading.
    while (this.#segments.length > 2 && this.#segments[1]!.char < this.#chars - KEEP_CHARS) this.#segments.shift();
    try {
      this.#parser.write(text);
    } catch (error) {
      if (error !== GIVE_UP) throw error;
      // Drop what sax holds of the document: nothing more of it is read.
      (this.#parser as unknown as { tags: unknown[] }).tags = [];
    }
  }

  /** Byte offset of character `char` of the decoded text. */
  #byteOf(char: number): number {
    if (this.#unit !== 0) return this.#bom + char * this.#unit;
    if (char === this.#cursorChar) return this.#cursorByte;
    let index = this.#segments.length - 1;
    while (index > 0 && this.#segments[index]!.char > char) index--;
    const segment = this.#segments[index];
    if (!segment || char < segment.char) return this.#cursorByte;
    const fromCursor = this.#cursorChar >= segment.char && this.#cursorChar < char;
    const fromChar = fromCursor ? this.#cursorChar : segment.char;
    const fromByte = fromCursor ? this.#cursorByte : segment.byte;
    this.#cursorByte = fromByte + Buffer.byteLength(segment.text.slice(fromChar - segment.char, char - segment.char));
    this.#cursorChar = char;
    return this.#cursorByte;
  }

  #matches(name: string): boolean {
    const record = this.#options.record;
    if (name === record) return true;
    return !record.includes(':') && name.endsWith(record) && name.charCodeAt(name.length - record.length - 1) === 0x3a;
  }

  #keyOf(name: string): string {
    if (this.#options.keepPrefixes) return name;
    const colon = name.indexOf(':');
    return colon < 0 ? name : name.slice(colon + 1);
  }

  #openStart(name: string): void {
    if (this.#recordDepth === 0 && this.#matches(name)) {
      this.#pendingStart = { char: this.#parser.startTagPosition - 1, line: this.#parser.line + 1 };
    }
  }

  #open(tag: sax.Tag): void {
    if (++this.#depth > this.#limits.maxDepth * DOCUMENT_DEPTH_FACTOR) {
      this.#giveUp('FILE_TOO_DEEP', `elements nested deeper than ${this.#limits.maxDepth * DOCUMENT_DEPTH_FACTOR} levels: the rest of the file is not read`);
      return;
    }
    if (this.#recordDepth === 0) {
      if (!this.#pendingStart) return;
      const { char, line } = this.#pendingStart;
      this.#pendingStart = undefined;
      this.#recordDepth = 1;
      this.#recordOffset = this.#byteOf(char);
      this.#recordRefused = undefined;
      this.#refusedThrough = this.#recordOffset;
      this.#recordLine = line;
      this.#recordSize = 0;
      this.#failure = undefined;
      this.#stack.push(this.#node(tag));
      if (this.#pendingFailure) {
        this.#fail(this.#pendingFailure.code, `record at line ${line}: ${this.#pendingFailure.message}`);
        this.#pendingFailure = undefined;
      }
      return;
    }
    this.#recordDepth++;
    if (this.#failure) return;
    if (this.#recordDepth > this.#limits.maxDepth) {
      const { code, message } = tooDeep(`record at line ${this.#recordLine}`, this.#limits);
      this.#fail(code, message);
      return;
    }
    this.#stack.push(this.#node(tag));
  }

  #node(tag: sax.Tag): Node {
    const node: Node = { key: this.#keyOf(tag.name), object: undefined, text: '' };
    const attributes = tag.attributes;
    for (const name in attributes) {
      if (name === 'xmlns' || name.startsWith('xmlns:')) continue;
      const value = attributes[name]!;
      this.#grow(name.length + value.length);
      setKey((node.object ??= {}), this.#options.attributePrefix + this.#keyOf(name), value);
    }
    return node;
  }

  #addText(text: string): void {
    if (this.#recordDepth === 0 || this.#failure) return;
    const node = this.#stack[this.#stack.length - 1]!;
    this.#grow(text.length);
    if (this.#failure) return;
    node.text += text;
  }

  #grow(characters: number): void {
    this.#recordSize += characters;
    if (this.#recordSize > this.#limits.maxRecordBytes && !this.#failure) {
      const { code, message } = tooLarge(`record at line ${this.#recordLine}`, this.#recordSize, this.#limits)!;
      this.#fail(code, message);
    }
  }

  /** Whether a byte in [start, end) is not valid in the file's encoding; forgets those before `start`: records only move on. */
  #invalidIn(start: number, end: number): boolean {
    this.#forgetInvalidBefore(start);
    return this.#invalid.length > 0 && this.#invalid[0]! < end;
  }

  #forgetInvalidBefore(offset: number): void {
    let count = 0;
    while (count < this.#invalid.length && this.#invalid[count]! < offset) count++;
    if (count > 0) this.#invalid.splice(0, count);
  }

  /** The failure of a record with bytes not valid in the file's encoding, worded as for CSV and NDJSON lines. */
  #invalidFailure(): Failure {
    return this.#unit === 2 ? unpairedSurrogate(this.#recordLine) : invalidUtf8(this.#recordLine);
  }

  #close(): void {
    if (this.#dead) return;
    this.#depth--;
    if (this.#recordDepth === 0) return;
    this.#recordDepth--;
    if (this.#failure) {
      if (this.#recordDepth === 0) this.#finish(undefined);
      return;
    }
    const node = this.#stack.pop()!;
    const value = this.#valueOf(node);
    const parent = this.#stack[this.#stack.length - 1];
    if (!parent) {
      this.#finish(value);
      return;
    }
    const object = (parent.object ??= {});
    if (!Object.prototype.hasOwnProperty.call(object, node.key)) {
      setKey(object, node.key, this.#options.arrays.has(node.key) ? [value] : value);
      return;
    }
    // Element values are strings or objects: an array here is one we made for repeats.
    const existing = object[node.key];
    if (Array.isArray(existing)) existing.push(value);
    else setKey(object, node.key, [existing, value]);
  }

  #valueOf(node: Node): unknown {
    const text = this.#options.trim ? node.text.trim() : node.text;
    if (node.object === undefined) return text;
    if (text !== '') setKey(node.object, this.#options.textKey, text);
    return node.object;
  }

  /** The record element closed: a record, or the dead letter of a failed one. */
  #finish(value: unknown): void {
    const end = this.#byteOf(this.#parser.position);
    const refused = this.#recordRefused;
    this.#recordRefused = undefined;
    // Its text holds a stand-in for each such byte: it is no record.
    if (!this.#failure && this.#invalidIn(this.#recordOffset, end)) this.#failure = this.#invalidFailure();
    if (this.#failure) {
      // Every byte of the record, from its `<` to the end of its closing tag.
      if (refused) {
        refused.add(this.#rawSlice(this.#refusedThrough, end));
        this.#frames.push(refused.frame(this.#recordOffset, this.#recordLine, this.#failure));
      } else this.#frames.push(refusedFrame(this.#rawSlice(this.#recordOffset, end), this.#recordOffset, this.#recordLine, this.#failure, this.#limits.maxRecordBytes));
    } else this.#frames.push({ bytes: EMPTY, offset: this.#recordOffset, line: this.#recordLine, utf8: true, size: Math.max(end - this.#recordOffset, 1), value });
    this.#stack = [];
    this.#failure = undefined;
  }

  /** The record is refused: for bytes not valid in the encoding if one came before this problem. */
  #fail(code: string, message: string): void {
    this.#failure = this.#invalidIn(this.#recordOffset, this.#byteOf(this.#parser.position)) ? this.#invalidFailure() : { code, message };
    // Keep nothing more of this record: only its end is looked for.
    this.#stack = [];
  }

  #onError(error: Error): void {
    const parser = this.#parser as unknown as Record<string, unknown>;
    const message = error.message.split('\n')[0]!;
    // sax keeps the error until resumed; it recovers and reads on.
    parser.error = null;
    if (this.#dead) return;
    const buffer = /^Max buffer length exceeded: (\w+)$/.exec(message)?.[1];
    let failure: Failure;
    if (buffer) {
      // sax only complains about an over-long buffer; emptying it keeps memory bounded.
      parser[buffer] = '';
      const limit = (sax as unknown as { MAX_BUFFER_LENGTH: number }).MAX_BUFFER_LENGTH;
      failure = { code: this.#recordDepth === 0 && !this.#pendingStart ? 'XML_LIMIT' : 'RECORD_TOO_LARGE', message: `XML ${buffer} longer than ${limit} characters` };
    } else if (message === 'Invalid character entity') {
      const entity = typeof parser.entity === 'string' ? parser.entity : '';
      failure = { code: 'XML_ENTITY', message: `entity &${entity}; is not one of XML's own and is not expanded (DTDs are never read)` };
    } else if (message === 'Unclosed root tag' || message === 'Unexpected end') {
      if (this.#truncated) return;
      this.#truncated = true;
      failure = { code: 'TRUNCATED', message: 'the file ends before its root element closes' };
    } else {
      failure = { code: 'PARSE_XML', message };
    }
    // In the record's own start tag (sax recovers, e.g. takes `<B a>` as a="a"): the record's problem.
    if (this.#recordDepth === 0 && this.#pendingStart && failure.code !== 'TRUNCATED') {
      this.#pendingFailure ??= failure;
      return;
    }
    if (this.#recordDepth > 0) {
      if (!this.#failure) this.#fail(failure.code, `record at line ${this.#recordLine}: ${failure.message}`);
      if (failure.code === 'TRUNCATED') {
        this.#recordDepth = 0;
        this.#finish(undefined);
      }
      return;
    }
    if (this.#fileErrors.has(failure.message) || this.#fileErrors.size >= MAX_FILE_ERRORS) return;
    this.#fileErrors.add(failure.message);
    const line = this.#parser.line + 1;
    this.#frames.push({ bytes: EMPTY, offset: this.#byteOf(this.#parser.position), line, utf8: true, size: 1, error: { code: failure.code, message: `line ${line}: ${failure.message}` } });
  }

  /**
   * Stops reading the file. Nothing after is read, so it all goes in one dead letter, from
   * the open record's start (or where reading stopped) to the end of the file: no record
   * after it is lost unaccounted.
   */
  #giveUp(code: string, message: string): void {
    this.#dead = true;
    const line = this.#parser.line + 1;
    let rest: Rest;
    if (this.#recordDepth > 0) {
      const refused = this.#recordRefused ?? new RefusedBytes(this.#limits.maxRecordBytes);
      refused.add(this.#rawSlice(this.#refusedThrough, this.#rawEnd));
      rest = { refused, offset: this.#recordOffset, line: this.#recordLine, error: { code, message: `record at line ${this.#recordLine}: ${message}` } };
      this.#recordRefused = undefined;
      this.#recordDepth = 0;
    } else {
      const offset = this.#byteOf(this.#parser.position);
      const refused = new RefusedBytes(this.#limits.maxRecordBytes);
      refused.add(this.#rawSlice(offset, this.#rawEnd));
      rest = { refused, offset, line, error: { code, message: `line ${line}: ${message}` } };
    }
    this.#rest = rest;
    this.#raw = [];
    this.#stack = [];
    throw GIVE_UP;
  }


}

const EMPTY = Buffer.alloc(0);

/** Sets a key as an own property, even `__proto__` (an element may be named so). */
function setKey(object: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
  else object[key] = value;
}
/** Thrown from a sax handler to stop reading a file at once. */
const GIVE_UP = new Error('stop reading this XML file');
