/**
 * A faster decoder of the records in a Kafka record batch, in place of kafkajs 2.2.4's own
 * (`src/protocol/recordBatch/record/v0/decoder.js`), giving the same records.
 *
 * kafkajs decodes every record's offset and timestamp with 64-bit `Long` arithmetic: the
 * batch's base offset parsed from its decimal text again at each record, and each byte of
 * a varlong a few `Long` objects. On the Kafka benchmark's bookings that was a sixth of
 * the consuming thread and half of what it allocated. Here both are plain numbers where
 * the sum is exact (a base of at most 15 characters, a delta of at most 7 varint bytes, as every
 * offset and booking time is), and kafkajs' own `Long` sum otherwise; headers are gathered
 * into one object rather than a copy of it per header. One difference, on hostile bytes only:
 * a header count the record's bytes cannot hold is refused where kafkajs reads past the end.
 *
 * kafkajs reads the decoder once, when its batch decoder loads, so it is put in place
 * before kafkajs is first loaded (see `installRecordDecoder`), only for the kafkajs version
 * it was written against (2.2.4, the last release). The records are the same for every
 * consumer in the process.
 */

/** What kafkajs' `Decoder` offers the record decoder (src/protocol/decoder.js). */
interface KafkajsDecoder {
  buffer: Buffer;
  offset: number;
  readInt8(): number;
  readVarInt(): number;
  readVarLong(): { add(other: unknown): { toString(): string } };
  readVarIntBytes(): Buffer | null;
  readVarIntString(): string | null;
}

/** What kafkajs' batch decoder passes each record (src/protocol/recordBatch/v0/decoder.js). */
interface BatchContext {
  firstOffset?: string;
  firstTimestamp?: string;
  magicByte?: number;
  isControlBatch?: boolean;
  timestampType?: number;
  maxTimestamp?: string;
}

interface LongModule {
  fromValue(value: unknown): { add(other: unknown): { toString(): string } };
}

/** kafkajs' record timestamp type: the broker's append time (src/protocol/timestampTypes.js). */
const LOG_APPEND_TIME = 1;
/** Varint bytes read as a number: 49 bits, so a sum with a base under 10^15 stays exact. */
const NUMBER_VARINT_BYTES = 7;
/** Decimal text of at most this many characters (sign included) is a number below 10^15. */
const EXACT_DIGITS = 15;

/** The last base offset and time parsed (the same for every record of a batch). */
let baseText = '';
let base = 0;
let timeText = '';
let time = 0;

/**
 * A zigzag varlong as a number when it has at most NUMBER_VARINT_BYTES bytes (the decoder
 * moved past it); `undefined`, with the decoder where it was, when it has more.
 */
function varlongNumber(decoder: KafkajsDecoder): number | undefined {
  const bytes = decoder.buffer;
  let at = decoder.offset;
  let value = 0;
  let scale = 1;
  for (let i = 0; i < NUMBER_VARINT_BYTES; i++) {
    // Past the end, a byte is undefined: it reads as a last 0 neither here nor in kafkajs
    // (0x7f and undefined give 0; undefined < 0x80 is false), so the loop ends without one
    // and kafkajs' own reading decides what such a varlong gives.
    const byte = bytes[at++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      decoder.offset = at;
      return value % 2 === 0 ? value / 2 : -(value + 1) / 2;
    }
    scale *= 128;
  }
  return undefined;
}

/** Makes the record decoder around kafkajs' `Long`. */
export function recordDecoder(Long: LongModule): (decoder: KafkajsDecoder, batchContext?: BatchContext) => unknown {
  return (decoder, batchContext = {}) => {
    const { firstOffset, firstTimestamp, magicByte, isControlBatch = false, timestampType, maxTimestamp } = batchContext;
    const attributes = decoder.readInt8();
    const deltaAt = decoder.offset;
    const delta = varlongNumber(decoder);
    let timestamp: string | undefined;
    if (timestampType === LOG_APPEND_TIME && maxTimestamp) {
      if (delta === undefined) decoder.readVarLong();
      timestamp = maxTimestamp;
    } else if (delta !== undefined && typeof firstTimestamp === 'string' && firstTimestamp.length <= EXACT_DIGITS) {
      if (firstTimestamp !== timeText) {
        timeText = firstTimestamp;
        time = Number(firstTimestamp);
      }
      timestamp = String(time + delta);
    } else {
      decoder.offset = deltaAt;
      timestamp = Long.fromValue(firstTimestamp).add(decoder.readVarLong()).toString();
    }
    const offsetDelta = decoder.readVarInt();
    let offset: string;
    if (typeof firstOffset === 'string' && firstOffset.length <= EXACT_DIGITS) {
      if (firstOffset !== baseText) {
        baseText = firstOffset;
        base = Number(firstOffset);
      }
      offset = String(base + offsetDelta);
    } else {
      offset = Long.fromValue(firstOffset).add(offsetDelta).toString();
    }
    const key = decoder.readVarIntBytes();
    const value = decoder.readVarIntBytes();
    return { magicByte, attributes, timestamp, offset, key, value, headers: readHeaders(decoder), isControlRecord: isControlBatch, batchContext };
  };
}

/**
 * A record's headers as kafkajs gives them: by key, a key seen more than once with an
 * array of its values (kafkajs looks keys up on a plain object, so an inherited name such
 * as `toString` starts its array with what it inherits; kept as it is).
 */
function readHeaders(decoder: KafkajsDecoder): Record<string, unknown> {
  const count = decoder.readVarInt();
  const headers: Record<string, unknown> = {};
  // kafkajs makes an array of the count first: what a negative count other than -1 throws.
  if (count < -1) throw new RangeError('Invalid array length');
  // A header takes two bytes at least. kafkajs reads on past the end of the record (as
  // zeros), up to 2^31 times for a hostile count; refused here instead, as is any count
  // of a record already read past its end.
  const left = decoder.buffer.length - decoder.offset;
  if (count > 0 && 2 * count > left) throw new RangeError(`${count} record headers cannot fit in the ${Math.max(0, left)} bytes left`);
  for (let i = 0; i < count; i++) {
    const key = headerKey(decoder);
    const value = decoder.readVarIntBytes();
    const there = headers[key];
    const next = there === undefined ? value : Array.isArray(there) ? there.concat([value]) : [there, value];
    // An own property, as kafkajs' object literal makes it, never the prototype.
    if (key === '__proto__') Object.defineProperty(headers, key, { value: next, writable: true, enumerable: true, configurable: true });
    else headers[key] = next;
  }
  return headers;
}

/** The header keys last read (short ASCII ones), reused while the same bytes come. */
const KEPT_KEYS = 8;
const keptKeys: string[] = [];

/**
 * A header's key as kafkajs reads it (`readVarIntString`: its UTF-8 text, `"null"` for
 * none, as the object key kafkajs makes of it). Producers put the same few keys on every
 * message: a key whose bytes are one of the last short ASCII keys read is that string,
 * compared in place, with no slice and no new string.
 */
function headerKey(decoder: KafkajsDecoder): string {
  const start = decoder.offset;
  const length = decoder.readVarInt();
  const bytes = decoder.buffer;
  const at = decoder.offset;
  // Past the record's end a byte reads as undefined: no kept key matches there.
  if (length > 0) {
    for (let k = 0; k < keptKeys.length; k++) {
      const kept = keptKeys[k]!;
      if (kept.length !== length) continue;
      let i = 0;
      while (i < length && bytes[at + i] === kept.charCodeAt(i)) i++;
      if (i === length) {
        decoder.offset = at + length;
        return kept;
      }
    }
  }
  decoder.offset = start;
  const key = String(decoder.readVarIntString());
  // Kept when it has one unit a byte: each an ASCII byte or a bad byte's U+FFFD (a valid
  // sequence past ASCII is fewer units than bytes). Compared unit to byte, only ASCII can
  // match, and equal ASCII bytes are the equal text.
  if (length <= 32 && key.length === length) {
    if (keptKeys.length === KEPT_KEYS) keptKeys.pop();
    keptKeys.unshift(key);
  }
  return key;
}

/** The kafkajs release this decoder gives the same records as. */
const KAFKAJS_VERSION = '2.2.4';

/**
 * Puts the decoder in place of kafkajs' before kafkajs loads. Says why not otherwise: another
 * kafkajs version, kafkajs already loaded (its batch decoder holds its own), or its files not
 * where 2.2.4 has them. Either way kafkajs works as it is, at its own speed.
 */
export function installRecordDecoder(): 'installed' | 'already' | 'other version' | 'loaded before' | 'unavailable' {
  try {
    if ((require('kafkajs/package.json') as { version: string }).version !== KAFKAJS_VERSION) return 'other version';
    const recordPath = require.resolve('kafkajs/src/protocol/recordBatch/record/v0/decoder.js');
    const loaded = require.cache[recordPath];
    if (loaded && (loaded.exports as { tributary?: boolean }).tributary) return 'already';
    if (require.cache[require.resolve('kafkajs/src/protocol/recordBatch/v0/decoder.js')]) return 'loaded before';
    require(recordPath);
    const decode = Object.assign(recordDecoder(require('kafkajs/src/utils/long') as LongModule), { tributary: true });
    require.cache[recordPath]!.exports = decode;
    return 'installed';
  } catch {
    // Not laid out as kafkajs 2.2.4 is (a bundle, a pruned install): kafkajs as it is.
    return 'unavailable';
  }
}
