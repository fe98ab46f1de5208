import type { IHeaders } from 'kafkajs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConnectorError } from '../../lib/errors';
import type { Cut, PartitionOffsets } from './partitionOffsets';

/**
 * The meta of a record read from Kafka, carrying its typed position beside the text one:
 * the offset as a number and the tracker of the partition that emitted it. Settling a
 * record, keying its batch and cutting it read these, never `meta.position` back.
 *
 * The typed fields are private: they are not copied into the parts of a split payload
 * (`Object.assign`, spreads), nor written by `JSON.stringify`; a part reaches them through
 * the envelope it was split from (`envelope.received`).
 *
 * The position is made when asked (insert tokens ask for a batch's first and last, dead
 * letters for theirs), from the partition's `topic/partition/` and the offset: a string
 * less for every record held in flight.
 */
export class KafkaRecordMeta implements RecordMeta {
  source: string;
  receivedAt: number;
  attempt: number;
  declare vendor?: string;
  declare key?: string;
  declare headers?: Readonly<Record<string, string>>;
  declare timestamp?: number;
  readonly #tracker: PartitionOffsets;
  readonly #offset: number;
  readonly #prefix: string;

  /** `prefix` is the partition's `topic/partition/`. */
  constructor(source: string, prefix: string, receivedAt: number, attempt: number, tracker: PartitionOffsets, offset: number) {
    this.source = source;
    this.receivedAt = receivedAt;
    this.attempt = attempt;
    this.#tracker = tracker;
    this.#offset = offset;
    this.#prefix = prefix;
  }

  get position(): string {
    return this.#prefix + this.#offset;
  }

  /** Every field, the position too, for `JSON.stringify` (a log line). */
  toJSON(): RecordMeta {
    return { ...this, position: this.position };
  }

  /** The tracker that emitted the record, when `meta` is a Kafka record's. */
  static trackerOf(meta: RecordMeta): PartitionOffsets | undefined {
    return #tracker in meta ? (meta as KafkaRecordMeta).#tracker : undefined;
  }

  /** The record's offset; only for a meta `trackerOf` knows. */
  static offsetOf(meta: RecordMeta): number {
    return (meta as KafkaRecordMeta).#offset;
  }
}

/**
 * Where a record's batch would end if it were the last: its offset, and for a part of a
 * split message (an NDJSON line) the part (`#2`), read from the part's position, whose
 * `topic/partition/offset` prefix cannot hold a `#` (topic names cannot).
 */
export function cutOf(offset: number, partPosition: string): Cut {
  const hash = partPosition.indexOf('#');
  return { offset, part: hash < 0 ? '' : partPosition.slice(hash) };
}

/** For `cutOf`: a part's position, or '' for a whole message (whose position has no part; not made for it). */
export function partPosition(envelope: Envelope<unknown>): string {
  return envelope.meta === envelope.received.meta ? '' : envelope.meta.position;
}

/**
 * A message offset as a number. Kafka offsets are 64-bit; past 2^53 a number no longer
 * holds each one exactly, and a commit could name the wrong record: such an offset
 * fails the source rather than being rounded (a partition reaches it after 285 years
 * at a million messages a second).
 */
export function safeOffset(text: string, where: string): number {
  const offset = Number(text);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new ConnectorError(`${where}: offset ${text} is past what this source tracks exactly (2^53 - 1)`, { retriable: false });
  }
  return offset;
}

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Turns message headers into text (`shortText`). A header value equal to the one before
 * under the same name (a vendor, a content type) reuses its text, and headers equal to
 * the previous message's, name for name (a producer that tags every message alike), are
 * the same frozen object: one object less per record held while it is in flight.
 */
export class MessageText {
  /** The text of the last short ASCII value seen under each header name. */
  readonly #last = new Map<string, string>();
  /** The headers last made, frozen, and how many names they hold. */
  #previous: Readonly<Record<string, string>> | undefined;
  #previousNames = 0;

  /** The message's headers as text (the last value of a repeated header), `undefined` when it has none. */
  headers(headers: IHeaders | undefined): Readonly<Record<string, string>> | undefined {
    if (headers === undefined) return undefined;
    const previous = this.#previous;
    if (previous !== undefined && sameHeaders(headers, previous, this.#previousNames)) return previous;
    let text: Record<string, string> | undefined;
    for (const name in headers) {
      const last = lastValue(headers[name]);
      if (last === undefined) continue;
      text ??= {};
      text[name] = typeof last === 'string' ? last : this.#header(name, last);
    }
    if (!text) return NO_HEADERS;
    this.#previous = Object.freeze(text);
    this.#previousNames = Object.keys(text).length;
    return text;
  }

  #header(name: string, bytes: Buffer): string {
    const seen = this.#last.get(name);
    if (seen !== undefined && asciiEquals(bytes, seen)) return seen;
    const text = shortText(bytes);
    // Only short ASCII texts, which compare with bytes one to one; one per header name,
    // for at most 64 names. The text, not the bytes: those are a view of a whole fetch.
    if (text.length <= 32 && text.length === bytes.length && (seen !== undefined || this.#last.size < 64)) this.#last.set(name, text);
    return text;
  }
}

/** Whether `headers` decode to `text`, which holds `names` names: the same names, each with the same value. */
function sameHeaders(headers: IHeaders, text: Readonly<Record<string, string>>, names: number): boolean {
  let count = 0;
  for (const name in headers) {
    const last = lastValue(headers[name]);
    if (last === undefined) continue;
    const seen = Object.hasOwn(text, name) ? text[name] : undefined;
    if (seen === undefined || (typeof last === 'string' ? last !== seen : !asciiEquals(last, seen))) return false;
    count++;
  }
  return count === names;
}

/** A header's value: the last one of a repeated header. */
function lastValue(value: IHeaders[string]): Buffer | string | undefined {
  return Array.isArray(value) ? value[value.length - 1] : value;
}

/**
 * Whether `bytes` are the ASCII text `text`. A byte past ASCII never is: 0xE9 is 'é' in
 * Latin-1, but not UTF-8, and must not read as an 'é' decoded from an earlier message.
 */
function asciiEquals(bytes: Buffer, text: string): boolean {
  const length = text.length;
  if (bytes.length !== length) return false;
  for (let i = 0; i < length; i++) {
    const byte = bytes[i]!;
    if (byte > 0x7f || byte !== text.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * UTF-8 bytes as text. Up to 32 ASCII bytes (the usual keys) are read as latin1, byte for
 * character, which is the same text and one string made, not one per character as when
 * they were appended one by one: while records are in flight, every string made costs
 * the garbage collector more than the decoding does.
 */
export function shortText(bytes: Buffer): string {
  const length = bytes.length;
  if (length > 32) return bytes.toString('utf8');
  for (let i = 0; i < length; i++) if (bytes[i]! > 0x7f) return bytes.toString('utf8');
  return bytes.toString('latin1');
}
