import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Redis } from 'ioredis';
import { wallClockMs, type TimeParts } from '../../lib/dates';
import { ConfigError, SinkError } from '../../lib/errors';
import { booleanOption, integerAtLeast } from '../../lib/options';
import { loadPackage } from '../../lib/packages';
import { connectRedis, redisFailure, type RedisConnectionOptions } from '../../lib/redis';
import type { Batch, EncodedRows, Sink, WriteContext } from '../../lib/sink';
import { FieldKind, RowFields } from './rowFields';

export type { RedisConnectionOptions };

/** Where and how bookings are laid out in Redis; shared by the cache sink and its reader. */
export interface RedisCacheLayoutOptions {
  /** Prefix of every key. @default 'tributary:bookings:' */
  prefix?: string;
  /** The columns that name a booking, vendor first. @default ['vendor', 'booking_id'] */
  keyFields?: readonly string[];
  /** The booking's time: the TTL and the time indexes count from it. @default 'booked_at' */
  timeField?: string;
  /** The version column: a row never replaces one with a later version. @default 'updated_at' */
  versionField?: string;
  /** A column to index bookings by (a customer token); none when omitted. @default none */
  customerField?: string;
  /** How long a booking stays, from its time. @default 86_400_000 (24 h) */
  ttlMs?: number;
  /**
   * How far ahead of now a booking's time may lie and the booking still be cached. A later
   * one is not stored (counted in `stats.ahead`), only the span of time it lies in is marked
   * (`CacheKeys.aheadMark`); reads of it, or of a range its span touches, go to ClickHouse.
   * A vendor's clock, a time zone misread or a time in the year 9999 would otherwise keep it
   * in Redis that much longer than the TTL, and the TTL would bound nothing. Set it longer
   * when `timeField` is a time that lies ahead (a departure), and size Redis for it: the
   * cache holds the bookings of `ttlMs + maxAheadMs`. @default ttlMs
   */
  maxAheadMs?: number;
}

export interface ToRedisCacheOptions extends RedisCacheLayoutOptions, RedisConnectionOptions {
  /**
   * Whether batches of at least 256 encoded rows (what a pipeline hands a cache beside
   * ClickHouse) are packed into Redis commands on a worker thread (one for every cache of
   * the process, kept while it lives, holding nothing open; on Linux it runs at nice 10, below
   * the JS thread), not on the JS thread, where the
   * pipeline's parsing and mapping run and which bounds its speed. The JS thread then copies
   * the rows' bytes (once) and sends the commands packed. The same bytes go to Redis either
   * way. Where a worker cannot run (one fails before its first answer), every batch is
   * packed on the JS thread. @default true
   */
  packInWorker?: boolean;
}

export type ResolvedLayout = Required<Omit<RedisCacheLayoutOptions, 'customerField'>> & { customerField: string | undefined };

/** Stats of a cache sink. */
export interface RedisCacheStats {
  /** Rows stored or replacing an older version. */
  stored: number;
  /** Rows not stored: a newer version was there. */
  older: number;
  /** Rows past their TTL already (time + ttlMs before now). */
  expired: number;
  /** Rows whose time is more than `maxAheadMs` ahead of now. */
  ahead: number;
  /** Rows without a key, time or version that can be read. */
  unkeyed: number;
}

/** Rows per transaction: a long one holds up every other client of Redis. */
const ROWS_PER_CALL = 2000;
/** Expired bookings a guard call removes at most: twice what it puts, so removal keeps up. */
const SWEEP = 2 * ROWS_PER_CALL;

/**
 * Guards a transaction's rows before their values are set: ARGV[1] is one MessagePack
 * array of the rows, a group a shard: the shard, its row count c, then c entries (shard,
 * ':' and the key parts as JSON), c versions, and c numbers of the rows' vendor time
 * buckets among the list keys ARGV[4], ARGV[6]… (1 for ARGV[4]; ARGV[5] is that bucket's
 * end, epoch ms). ARGV[2] is the cut (now - TTL, epoch ms), ARGV[3] the prefix. Each entry
 * appears once.
 *
 * The values themselves are set by plain HSETs that follow in the same MULTI (Lua costs
 * Redis more per argument than the work a row needs). So the guard reads the version
 * there of each row (one HMGET per shard); where it is later than the row's, the booking
 * there is copied to `<prefix>keep`, and RESTORE puts it back after the HSETs. A row new
 * to the cache, or replacing an older version, is listed in its vendor's time bucket (a
 * list, registered in `<prefix>buckets` by its end); a replay (same version) is not.
 *
 * Hash fields have no TTL of their own (Redis 7.0): each call first removes up to SWEEP
 * bookings of buckets whose end is past the cut, when their time still is. Returns
 * { stored, older }.
 */
const GUARD = `
local a = cmsgpack.unpack(ARGV[1])
local cut = tonumber(ARGV[2])
local prefix = ARGV[3]
local bucketSet = prefix .. 'buckets'
-- Sweep: bookings of buckets past the TTL, unless a later version moved their time on.
local budget = ${SWEEP}
for _, list in ipairs(redis.call('ZRANGEBYSCORE', bucketSet, '-inf', cut, 'LIMIT', 0, 16)) do
  if budget <= 0 then break end
  local entries = redis.call('LPOP', list, budget)
  if entries then
    budget = budget - #entries
    local byShard = {}
    for _, entry in ipairs(entries) do
      local shard = string.match(entry, '^(%d+):')
      local group = byShard[shard]
      if not group then
        group = {}
        byShard[shard] = group
      end
      group[#group + 1] = entry
    end
    for shard, group in pairs(byShard) do
      local hash = prefix .. 'h:' .. shard
      local values = redis.call('HMGET', hash, unpack(group))
      local gone = {}
      for j = 1, #group do
        local time = values[j] and tonumber(string.match(values[j], '^[^|]*|([^|]*)|'))
        if time and math.floor(time) <= cut then gone[#gone + 1] = group[j] end
      end
      if #gone > 0 then redis.call('HDEL', hash, unpack(gone)) end
    end
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', bucketSet, list) end
end
-- Guard: one HMGET a shard, of its group's entries as they lie in the array.
local size = #a
local rows = 0
local older = 0
local kept = {}
local keptItems = 0
local lists = {}
local listed = {}
local g = 1
while g <= size do
  local c = a[g + 1]
  local e = g + 2
  local current = redis.call('HMGET', prefix .. 'h:' .. a[g], unpack(a, e, e + c - 1))
  for j = 1, c do
    local there = current[j]
    local list = a[e + 2 * c + j - 1]
    if there then
      local version = tonumber(string.match(there, '^([^|]*)|'))
      local incoming = a[e + c + j - 1]
      if version and version > incoming then
        older = older + 1
        kept[keptItems + 1] = a[e + j - 1]
        kept[keptItems + 2] = there
        keptItems = keptItems + 2
        list = nil
      elseif version == incoming then
        list = nil
      end
    end
    if list then
      local k = (listed[list] or 0) + 1
      listed[list] = k
      if k == 1 then lists[list] = { a[e + j - 1] } else lists[list][k] = a[e + j - 1] end
    end
  end
  rows = rows + c
  g = e + 3 * c
end
if #kept > 0 then redis.call('HSET', prefix .. 'keep', unpack(kept)) end
local ends = {}
for list, entries in pairs(lists) do
  local key = ARGV[2 + 2 * list]
  redis.call('RPUSH', key, unpack(entries))
  ends[#ends + 1] = ARGV[3 + 2 * list]
  ends[#ends + 1] = key
end
if #ends > 0 then redis.call('ZADD', bucketSet, unpack(ends)) end
return { rows - older, older }
`;

/** Puts back the later versions GUARD kept aside (ARGV[1] is the prefix). */
const RESTORE = `
local keep = ARGV[1] .. 'keep'
local kept = redis.call('HGETALL', keep)
for i = 1, #kept, 2 do
  redis.call('HSET', ARGV[1] .. 'h:' .. string.match(kept[i], '^(%d+):'), kept[i], kept[i + 1])
end
if #kept > 0 then redis.call('DEL', keep) end
return #kept / 2
`;

/** Shards of the booking hashes (a power of two): a put call's rows of one shard share an HMGET and an HSET. Changing it needs a `warm()`. */
export const SHARDS = 64;
/** Time buckets of the vendor index per TTL (at least 1 ms each): a vendor's range read lists the buckets it covers. */
const BUCKETS_PER_TTL = 24;

/** Bytes of stored rows per transaction, however few rows: a long transaction holds up other clients. */
const BYTES_PER_CALL = 4 << 20;

/** 10^0 … 10^15: how many digits an integer takes, without dividing. */
const POWERS_OF_TEN = Array.from({ length: 16 }, (_, i) => 10 ** i);

/**
 * Bytes written into a reused Buffer and copied out by `take()`: MessagePack items (what
 * GUARD unpacks with cmsgpack) and Redis protocol (RESP) commands, so a row costs no
 * ioredis argument and no string of its own. Strings are written once, their header sized
 * by the most bytes they can take (3 a UTF-16 unit) and fixed after.
 */
class Bytes {
  #buffer: Buffer;
  /** The buffer's words, for `copy`. */
  #view: DataView;
  at = 0;

  /** `size`: the bytes it starts with, and shrinks back to. */
  constructor(readonly size = 1 << 20) {
    this.#buffer = Buffer.allocUnsafe(size);
    this.#view = Bytes.#viewOf(this.#buffer);
  }

  static #viewOf(buffer: Buffer): DataView {
    return new DataView(buffer.buffer, buffer.byteOffset, buffer.length);
  }

  room(bytes: number): Buffer {
    if (this.at + bytes > this.#buffer.length) {
      const larger = Buffer.allocUnsafe(Math.max(2 * this.#buffer.length, this.at + bytes));
      this.#buffer.copy(larger, 0, 0, this.at);
      this.#buffer = larger;
      this.#view = Bytes.#viewOf(larger);
    }
    return this.#buffer;
  }

  /** Bytes `[start, end)` of `source`: a key's few dozen four at a time (faster so than byte by byte or through a view made for them), more through a view. */
  copy(source: Bytes, start: number, end: number): void {
    if (end - start > 128) return this.bytes(source.#buffer, start, end);
    this.room(end - start);
    const from = source.#view;
    const to = this.#view;
    let at = this.at;
    let i = start;
    for (; i + 4 <= end; i += 4, at += 4) to.setInt32(at, from.getInt32(i));
    const bytes = source.#buffer;
    const buffer = this.#buffer;
    for (; i < end; i++) buffer[at++] = bytes[i]!;
    this.at = at;
  }

  /** The bytes written, copied out; starts again. */
  take(): Buffer {
    const taken = Buffer.from(this.#buffer.subarray(0, this.at));
    this.reset();
    return taken;
  }

  /** Starts again, and lets go of a buffer a huge row grew. */
  reset(): void {
    if (this.#buffer.length > Math.max(16 << 20, this.size)) {
      this.#buffer = Buffer.allocUnsafe(this.size);
      this.#view = Bytes.#viewOf(this.#buffer);
    }
    this.at = 0;
  }

  /** `text`'s UTF-8 bytes; how many. */
  text(text: string): number {
    const written = Bytes.write(this.room(3 * text.length), text, this.at);
    this.at += written;
    return written;
  }

  /** Writes `text` as UTF-8 at `at` (room made); how many bytes. A short ASCII text is copied unit by unit: cheaper than Buffer.write's call. */
  static write(buffer: Buffer, text: string, at: number): number {
    if (text.length > 128) return buffer.write(text, at);
    for (let i = 0; i < text.length; i++) {
      const unit = text.charCodeAt(i);
      if (unit >= 0x80) return buffer.write(text, at);
      buffer[at + i] = unit;
    }
    return text.length;
  }

  /** Bytes `body[start, end)`: a few copied one by one, more through a view (`body.subarray` makes a Buffer, which costs more than the copy). */
  bytes(body: Buffer, start: number, end: number): void {
    const buffer = this.room(end - start);
    if (end - start <= 64) {
      let at = this.at;
      for (let i = start; i < end; i++) buffer[at++] = body[i]!;
    } else buffer.set(new Uint8Array(body.buffer, body.byteOffset + start, end - start), this.at);
    this.at += end - start;
  }

  /** A number as text: digits without a string for a non-negative integer, as `String(n)` otherwise. */
  decimal(value: number): number {
    const width = Bytes.width(value);
    if (width === undefined) return this.text(String(value));
    this.digits(value, width);
    return width;
  }

  /**
   * The `width` digits of a safe non-negative integer. Eight digits at a time are split off
   * with one division while the rest is past 32 bits, and then taken in 32-bit integers:
   * `%` on a larger number is a floating-point remainder, the slowest step of an epoch-ms
   * time's text.
   */
  digits(value: number, width: number): void {
    const buffer = this.room(width);
    let i = this.at + width - 1;
    let rest = value;
    while (rest > 0x7fffffff) {
      const high = Math.floor(rest / 1e8);
      let low = (rest - high * 1e8) | 0;
      for (const stop = i - 8; i > stop; i--) {
        buffer[i] = 48 + (low % 10);
        low = (low / 10) | 0;
      }
      rest = high;
    }
    let small = rest | 0;
    for (; i >= this.at; i--) {
      buffer[i] = 48 + (small % 10);
      small = (small / 10) | 0;
    }
    this.at += width;
  }

  /** The width of `value`'s text when `decimal` writes it without a string. */
  static width(value: number): number | undefined {
    // Epoch ms from 2001 to 2286 at once.
    if (value >= 1e12 && value < 1e13 && Math.floor(value) === value) return 13;
    if (!(value >= 0 && Number.isSafeInteger(value))) return undefined;
    let width = 1;
    while (width < POWERS_OF_TEN.length && value >= POWERS_OF_TEN[width]!) width++;
    return width;
  }

  // MessagePack.

  /** Room for an array 32 header; `packArray` fills it in. */
  packArrayStart(): number {
    const at = this.at;
    this.room(5);
    this.at += 5;
    return at;
  }

  packArray(at: number, count: number): void {
    const buffer = this.room(0);
    buffer[at] = 0xdd; // array 32
    buffer.writeUInt32BE(count, at + 1);
  }

  /** A booking's entry, `<shard>:<member>`, as a MessagePack string, its member the bytes `member[start, end)`. Returns where the entry's bytes start (they end at `at`). */
  packEntry(shard: number, member: Bytes, start: number, end: number): number {
    // A shard has at most two digits.
    const length = (shard >= 10 ? 3 : 2) + end - start;
    const headerBytes = length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
    const buffer = this.room(headerBytes + length);
    const head = this.at;
    if (headerBytes === 2) {
      buffer[head] = 0xd9; // str 8
      buffer[head + 1] = length;
    } else if (headerBytes === 3) {
      buffer[head] = 0xda; // str 16
      buffer.writeUInt16BE(length, head + 1);
    } else {
      buffer[head] = 0xdb; // str 32
      buffer.writeUInt32BE(length, head + 1);
    }
    const entry = head + headerBytes;
    let at = entry;
    if (shard >= 10) buffer[at++] = 48 + ((shard / 10) | 0);
    buffer[at++] = 48 + (shard % 10);
    buffer[at++] = 58; // :
    this.at = at;
    this.copy(member, start, end);
    return entry;
  }

  packNumber(value: number): void {
    if (value >= 0 && value < 0x80 && Number.isInteger(value)) {
      this.room(1)[this.at++] = value; // positive fixint
      return;
    }
    const buffer = this.room(9);
    buffer[this.at] = 0xcb; // float 64: exact for every integer up to 2^53
    buffer.writeDoubleBE(value, this.at + 1);
    this.at += 9;
  }

  // RESP.

  /** `*<count>`: a command of `count` arguments (its name included) follows. */
  command(count: number): void {
    this.room(1)[this.at++] = 42; // *
    this.decimal(count);
    this.#crlf();
  }

  /** `$<length>` and its line end. */
  #bulkHeader(length: number): void {
    this.room(1)[this.at++] = 36; // $
    this.decimal(length);
    this.#crlf();
  }

  #crlf(): void {
    const buffer = this.room(2);
    buffer[this.at] = 13;
    buffer[this.at + 1] = 10;
    this.at += 2;
  }

  /** A string argument: written after the widest header it can need, moved back when its header is narrower. */
  bulk(text: string): void {
    const widest = 3 + Bytes.width(3 * text.length)!;
    const start = this.at;
    const buffer = this.room(widest + 3 * text.length + 2);
    const length = Bytes.write(buffer, text, start + widest);
    this.#bulkHeader(length);
    if (this.at !== start + widest) buffer.copyWithin(this.at, start + widest, start + widest + length);
    this.at += length;
    this.#crlf();
  }

  /** Bytes `[start, end)` of `source` as one argument. */
  bulkCopy(source: Bytes, start: number, end: number): void {
    this.#bulkHeader(end - start);
    this.copy(source, start, end);
    this.#crlf();
  }

  /** A stored booking, `<version>|<time>|<row>`: the row's bytes `body[start, end)`, or `row` as text; an array row after `tag` (ASCII bytes, empty for none), its columns' id. */
  bulkBooking(version: number, time: number, body: Buffer | undefined, start: number, end: number, row: string, tag: Buffer): void {
    const versionWidth = Bytes.width(version);
    const timeWidth = Bytes.width(time);
    const tagged = body !== undefined && body[start] === 0x5b /* [ */ ? tag.length : 0;
    if (versionWidth === undefined || timeWidth === undefined || body === undefined) {
      this.bulk(`${version}|${time}|${body === undefined ? row : tag.toString('latin1', 0, tagged) + body.toString('utf8', start, end)}`);
      return;
    }
    this.#bulkHeader(versionWidth + timeWidth + 2 + tagged + end - start);
    this.digits(version, versionWidth);
    this.room(1)[this.at++] = 124; // |
    this.digits(time, timeWidth);
    this.room(1)[this.at++] = 124;
    this.bytes(tag, 0, tagged);
    this.bytes(body, start, end);
    this.#crlf();
  }
}

/** Marks the cache complete at the end of a warm-up, unless a loss happened meanwhile (`warming` no longer holds ARGV[1]). */
const FRESH = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1')
  return 1
end
return 0
`;

type CacheRedis = Redis & {
  tributaryCacheFresh(warming: string, fresh: string, id: string): Promise<number>;
};

type Command = InstanceType<typeof import('ioredis').Command>;
/** A command whose Redis protocol bytes are written already. */
let RawCommand: (new (name: string, bytes: Buffer) => Command) | undefined;
function rawCommand(name: string, bytes: Buffer): Command {
  if (RawCommand === undefined) {
    const { Command: IoredisCommand } = loadPackage<typeof import('ioredis')>('ioredis', 'toRedisCache');
    RawCommand = class extends IoredisCommand {
      constructor(
        name: string,
        readonly bytes: Buffer,
      ) {
        super(name, [], { replyEncoding: 'utf8' });
      }
      override toWritable(): Buffer {
        return this.bytes;
      }
    };
  }
  return new RawCommand(name, bytes);
}

export function resolveLayout(options: RedisCacheLayoutOptions): ResolvedLayout {
  const prefix = options.prefix ?? 'tributary:bookings:';
  if (typeof prefix !== 'string') throw new ConfigError(`prefix must be a string, got ${JSON.stringify(prefix)}`);
  const keyFields = options.keyFields ?? ['vendor', 'booking_id'];
  if (!Array.isArray(keyFields) || keyFields.length === 0 || keyFields.some((f) => typeof f !== 'string' || f === '')) {
    throw new ConfigError(`keyFields must be a non-empty list of column names, vendor first, got ${JSON.stringify(options.keyFields)}`);
  }
  const field = (name: string, value: unknown, fallback: string | undefined) => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !/^[A-Za-z_]\w*$/.test(value)) throw new ConfigError(`${name} must be a column name, got ${JSON.stringify(value)}`);
    return value;
  };
  for (const name of keyFields) field('keyFields[]', name, undefined);
  const ttlMs = integerAtLeast(options.ttlMs, 86_400_000, 'ttlMs', 1000);
  return {
    prefix,
    keyFields,
    timeField: field('timeField', options.timeField, 'booked_at')!,
    versionField: field('versionField', options.versionField, 'updated_at')!,
    customerField: field('customerField', options.customerField, undefined),
    ttlMs,
    maxAheadMs: integerAtLeast(options.maxAheadMs, ttlMs, 'maxAheadMs', 0),
  };
}

/** Makes or takes the ioredis client, with the cache's scripts defined on it. */
export function redisClient(options: RedisConnectionOptions, what: string): { client: CacheRedis; close(): Promise<void> } {
  const { client, close } = connectRedis(options, what);
  if (typeof (client as unknown as Partial<CacheRedis>).tributaryCacheFresh !== 'function') {
    client.defineCommand('tributaryCacheFresh', { numberOfKeys: 2, lua: FRESH });
  }
  return { client: client as unknown as CacheRedis, close };
}

/** The digit at `i` of `text`, or NaN. */
function digit(text: string, i: number): number {
  const d = text.charCodeAt(i) - 48;
  return d >= 0 && d <= 9 ? d : NaN;
}

/** The parts `isoUtcMs` reads, one object for every value. */
const isoParts: TimeParts = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0, millisecond: 0 };

/** `YYYY-MM-DDTHH:mm:ss.sssZ` as epoch ms; undefined for anything else, or a day Date.parse should judge (past the 28th). */
function isoUtcMs(text: string): number | undefined {
  if (text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 || text.charCodeAt(10) !== 84 || text.charCodeAt(13) !== 58 || text.charCodeAt(16) !== 58 || text.charCodeAt(19) !== 46) return undefined;
  const p = isoParts;
  p.year = digit(text, 0) * 1000 + digit(text, 1) * 100 + digit(text, 2) * 10 + digit(text, 3);
  p.month = digit(text, 5) * 10 + digit(text, 6);
  p.day = digit(text, 8) * 10 + digit(text, 9);
  p.hour = digit(text, 11) * 10 + digit(text, 12);
  p.minute = digit(text, 14) * 10 + digit(text, 15);
  p.second = digit(text, 17) * 10 + digit(text, 18);
  p.millisecond = digit(text, 20) * 100 + digit(text, 21) * 10 + digit(text, 22);
  return isoPartsMs(p);
}

/** The epoch ms of ISO parts read digit by digit (NaN for a character not a digit); undefined where they are not a time, or a day Date.parse should judge (past the 28th). */
function isoPartsMs(p: TimeParts): number | undefined {
  // NaN fails every test.
  if (!(p.month >= 1 && p.month <= 12 && p.day >= 1 && p.day <= 28 && p.hour <= 23 && p.minute <= 59 && p.second <= 59 && p.millisecond >= 0 && p.year >= 100)) return undefined;
  return wallClockMs(p);
}

/** Milliseconds since the epoch of a time column: epoch ms, or ISO 8601 / ClickHouse text (UTC when it names no zone). */
export function timeMs(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.getTime() : undefined;
  if (typeof value !== 'string' || value === '') return undefined;
  // The common case, ISO 8601 in UTC, without the zone test; `YYYY-MM-DDTHH:mm:ss.sssZ` without Date.parse.
  if (value.charCodeAt(value.length - 1) === 90 /* Z */) {
    if (value.length === 24) {
      const ms = isoUtcMs(value);
      if (ms !== undefined) return ms;
    }
    const ms = Date.parse(value);
    return Number.isFinite(ms) ? ms : undefined;
  }
  const zoned = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value.replace(' ', 'T')}Z`;
  const ms = Date.parse(zoned);
  return Number.isFinite(ms) ? ms : undefined;
}

/** A character JSON.stringify escapes. */
const NEEDS_ESCAPE = /[\u0000-\u001f"\\\ud800-\udfff]/;

/**
 * The keys of one cache. Key parts are JSON-quoted so no vendor value can reach into
 * another's keys. A booking is a field of one of SHARDS hashes, named by its entry:
 * `<shard>:<key parts as JSON>`; the indexes list entries.
 */
export class CacheKeys {
  /** The width of a vendor index's time bucket, ms. */
  readonly bucketMs: number;
  constructor(readonly layout: ResolvedLayout) {
    this.bucketMs = Math.max(1, Math.floor(layout.ttlMs / BUCKETS_PER_TTL));
  }
  member(parts: readonly string[]): string {
    // JSON.stringify's text without its call when no part needs escaping (the common case).
    for (const part of parts) if (NEEDS_ESCAPE.test(part)) return JSON.stringify(parts);
    return parts.length === 2 ? `["${parts[0]}","${parts[1]}"]` : `["${parts.join('","')}"]`;
  }
  /** FNV-1a of a member's UTF-16 units: its shard is this modulo SHARDS. */
  hash(member: string): number {
    let hash = 0x811c9dc5;
    for (let i = 0; i < member.length; i++) hash = Math.imul(hash ^ member.charCodeAt(i), 0x01000193);
    return hash >>> 0;
  }
  /** The shard of a booking. */
  shard(member: string): number {
    return this.hash(member) % SHARDS;
  }
  /** The booking's entry: its shard, ':', its member. */
  entry(member: string): string {
    return `${this.shard(member)}:${member}`;
  }
  /** The hash holding the booking of `entry`. */
  shardOf(entry: string): string {
    return `${this.layout.prefix}h:${entry.slice(0, entry.indexOf(':'))}`;
  }
  /** The list of a vendor's entries whose time falls in `bucket` (time / bucketMs, floored). */
  vendorBucket(vendor: string, bucket: number): string {
    return `${this.layout.prefix}v:${JSON.stringify(vendor)}:${bucket}`;
  }
  /** Every vendor bucket list, scored by its end (epoch ms). */
  get buckets(): string {
    return `${this.layout.prefix}buckets`;
  }
  /** The sorted set of customer index entries whose time falls in `bucket`: all scored 0, ordered by their text (`customerEntry`). */
  customerBucket(bucket: number): string {
    return `${this.layout.prefix}c:${bucket}`;
  }
  /** Every customer bucket, scored by its end (epoch ms). */
  get customerBuckets(): string {
    return `${this.layout.prefix}cbuckets`;
  }
  /** What a customer bucket lists of a booking: the customer (JSON), its time (whole ms, 15 digits) and its entry, NUL between. */
  customerEntry(customer: string, time: number, entry: string): string {
    return `${this.customerFrom(customer, time)}\0${entry}`;
  }
  /** The start of `customer`'s entries at `time` in a customer bucket (ZRANGEBYLEX bounds). */
  customerFrom(customer: string, time: number): string {
    return `${JSON.stringify(customer)}\0${String(Math.max(0, Math.floor(time))).padStart(15, '0')}`;
  }
  /** Column lists of array rows by their tag (`columnsTag`). */
  get columns(): string {
    return `${this.layout.prefix}columns`;
  }
  /** Present only while the cache is known complete (set by `warm()`). */
  get fresh(): string {
    return `${this.layout.prefix}fresh`;
  }
  get warming(): string {
    return `${this.layout.prefix}warming`;
  }
  /** Spans of time holding bookings not cached for lying too far ahead when written (`aheadMark`), each scored by its end. */
  get ahead(): string {
    return `${this.layout.prefix}ahead`;
  }
  /**
   * The span a booking of `time`, not cached for lying more than `maxAheadMs` ahead of `now`,
   * is marked in: its member (`<level>:<index>`) and end. Level k spans bucketMs × 64^k,
   * the first level whose 64 spans from now reach `time`: a few hundred members at most
   * (about 64 a level, and levels up to what a Date holds), however many bookings and times.
   */
  aheadMark(time: number, now: number): [member: string, end: number] {
    let size = this.bucketMs;
    let level = 0;
    while (time - now >= AHEAD_SPANS * size) {
      size *= AHEAD_SPANS;
      level++;
    }
    const index = Math.floor(time / size);
    return [`${level}:${index}`, (index + 1) * size];
  }
  /** The span of a mark: [start, end). */
  aheadSpan(member: string, end: number): [number, number] {
    return [end - this.bucketMs * AHEAD_SPANS ** Number(member.slice(0, member.indexOf(':'))), end];
  }
}

/** Spans of a level of `CacheKeys.aheadMark` (and how many of one level make one of the next). */
const AHEAD_SPANS = 64;

/** The tag of each column list: 16 hex digits of its JSON's SHA-256. */
const tags = new WeakMap<readonly string[], string>();

/** The tag an array row of `columns` is stored after (its columns are kept under it in `CacheKeys.columns`). */
export function columnsTag(columns: readonly string[]): string {
  let tag = tags.get(columns);
  if (tag === undefined) tags.set(columns, (tag = createHash('sha256').update(JSON.stringify(columns)).digest('hex').slice(0, TAG_LENGTH)));
  return tag;
}

/** Hex digits of a columns tag. */
export const TAG_LENGTH = 16;

/** A stored booking: its version, its time and its row (JSON), or undefined for none or one past its TTL at `now`. */
export function storedBooking(value: string | null, ttlMs: number, now: number): { time: number; row: string } | undefined {
  if (value === null) return undefined;
  const first = value.indexOf('|');
  const second = value.indexOf('|', first + 1);
  const time = Number(value.slice(first + 1, second));
  if (!(Math.floor(time) + ttlMs > now)) return undefined;
  return { time, row: value.slice(second + 1) };
}

export type PutOutcome = 'stored' | 'older' | 'expired' | 'ahead' | 'unkeyed';

/** Rows not queued, by why. */
export type Unqueued = Record<Exclude<PutOutcome, 'stored' | 'older'>, number>;

/** Slots of a transaction's table of bookings by hash: a power of two, over twice ROWS_PER_CALL. */
const SLOTS = 4096;
/** Vendor time buckets from the cut's that a transaction numbers in an array; later ones (bookings in the future) in a Map. */
const NEAR_BUCKETS = 64;

/** A vendor's time bucket lists in one transaction: each one's number among its list arguments, 0 for none yet. */
interface VendorLists {
  readonly near: Int32Array;
  readonly far: Map<number, number>;
}

/**
 * The rows of one transaction, in columns sized for ROWS_PER_CALL rows and reused from one
 * transaction to the next (emptied arrays would drop their storage and grow it again, push
 * by push, every 2,000 rows): numbers in typed arrays, strings in arrays let go of on clear.
 * A row's entry is not made as a string: its member's bytes are kept, copied from `member`.
 */
class Transaction {
  size = 0;
  /** Each row's member (its key parts as JSON), as bytes: row i's are `members[memberStarts[i], memberEnds[i])`. */
  readonly members = new Bytes(64 << 10);
  readonly memberStarts = new Uint32Array(ROWS_PER_CALL);
  readonly memberEnds = new Uint32Array(ROWS_PER_CALL);
  readonly shards = new Uint8Array(ROWS_PER_CALL);
  readonly versions = new Float64Array(ROWS_PER_CALL);
  readonly times = new Float64Array(ROWS_PER_CALL);
  /** Each row's vendor bucket list: its number among `listArguments` (1 for the first). */
  readonly lists = new Uint32Array(ROWS_PER_CALL);
  /** Each row's bytes in the encoded body, or its JSON. */
  readonly starts = new Float64Array(ROWS_PER_CALL);
  readonly ends = new Float64Array(ROWS_PER_CALL);
  readonly rows: string[] = Array.from({ length: ROWS_PER_CALL }, () => '');
  /** Each row's customer, '' for none. */
  readonly customers: string[] = Array.from({ length: ROWS_PER_CALL }, () => '');
  /** Each row's member hash, and the rows by hash (open addressing, row + 1, 0 for a free slot). */
  readonly hashes = new Uint32Array(ROWS_PER_CALL);
  readonly slots = new Int32Array(SLOTS);
  /** Where each row's entry is in the GUARD argument, in shard order (written by `queueTransaction`). */
  readonly entryStarts = new Uint32Array(ROWS_PER_CALL);
  readonly entryEnds = new Uint32Array(ROWS_PER_CALL);
  /** Vendor bucket lists and their ends, in GUARD's order; each one's number by vendor and bucket (from `firstBucket`). */
  listArguments: string[] = [];
  listNumbers = new Map<string, VendorLists>();
  firstBucket = 0;
  #lastVendor: string | undefined;
  #lastLists: VendorLists | undefined;
  bytes = 0;
  /** Whether the booking of `member` (hashing to `memberHash`) is in this transaction already. */
  has(): boolean {
    const hash = memberHash;
    const length = member.at;
    const wanted = member.room(0);
    const members = this.members.room(0);
    for (let slot = hash & (SLOTS - 1); ; slot = (slot + 1) & (SLOTS - 1)) {
      const row = this.slots[slot]! - 1;
      if (row < 0) return false;
      if (this.hashes[row] !== hash) continue;
      const start = this.memberStarts[row]!;
      if (this.memberEnds[row]! - start !== length) continue;
      let k = 0;
      while (k < length && members[start + k] === wanted[k]) k++;
      if (k === length) return true;
    }
  }
  /** Adds the booking of `member` (hashing to `memberHash`). */
  add(version: number, time: number, list: number, start: number, end: number, row: string, customer: string): void {
    const i = this.size++;
    const hash = memberHash;
    this.hashes[i] = hash;
    let slot = hash & (SLOTS - 1);
    while (this.slots[slot] !== 0) slot = (slot + 1) & (SLOTS - 1);
    this.slots[slot] = i + 1;
    this.memberStarts[i] = this.members.at;
    this.members.copy(member, 0, member.at);
    this.memberEnds[i] = this.members.at;
    this.shards[i] = hash & (SHARDS - 1);
    this.versions[i] = version;
    this.times[i] = time;
    this.lists[i] = list;
    this.starts[i] = start;
    this.ends[i] = end;
    this.rows[i] = row;
    this.customers[i] = customer;
    // One of the two is empty: the row's stretch of the body, or its JSON.
    this.bytes += end - start + row.length;
  }
  /** The number of `vendor`'s list of `bucket` among the list arguments: 0 when it has none yet. */
  listNumber(vendor: string, bucket: number): number {
    const lists = this.#listsOf(vendor);
    const near = bucket - this.firstBucket;
    return near >= 0 && near < NEAR_BUCKETS ? lists.near[near]! : (lists.far.get(bucket) ?? 0);
  }
  /** Numbers `vendor`'s list of `bucket` (`key`, ending at `end`): the next one. */
  addList(vendor: string, bucket: number, key: string, end: string): number {
    this.listArguments.push(key, end);
    const number = this.listArguments.length / 2;
    const lists = this.#listsOf(vendor);
    const near = bucket - this.firstBucket;
    if (near >= 0 && near < NEAR_BUCKETS) lists.near[near] = number;
    else lists.far.set(bucket, number);
    return number;
  }
  #listsOf(vendor: string): VendorLists {
    if (vendor === this.#lastVendor) return this.#lastLists!;
    let lists = this.listNumbers.get(vendor);
    if (lists === undefined) this.listNumbers.set(vendor, (lists = { near: new Int32Array(NEAR_BUCKETS), far: new Map() }));
    this.#lastVendor = vendor;
    this.#lastLists = lists;
    return lists;
  }
  /** Row i's entry as text (for the customer index). */
  entry(i: number): string {
    return `${this.shards[i]}:${this.members.room(0).toString('utf8', this.memberStarts[i], this.memberEnds[i])}`;
  }
  clear(firstBucket: number): void {
    // The strings are let go of; the numbers are written over.
    this.rows.fill('', 0, this.size);
    this.customers.fill('', 0, this.size);
    this.size = 0;
    this.members.reset();
    this.slots.fill(0);
    this.listArguments = [];
    this.listNumbers = new Map();
    this.#lastVendor = undefined;
    this.#lastLists = undefined;
    this.firstBucket = firstBucket;
    this.bytes = 0;
  }
}

/** The one transaction `queuePuts` fills (it runs to its end without waiting: never two at once). */
const transaction = new Transaction();
const packed = new Bytes();
const protocol = new Bytes();

/**
 * Queues one MULTI … EXEC on `pipeline`: GUARD, one HSET per shard with the rows' values,
 * the customer index (one ZADD and PEXPIREAT per time bucket), RESTORE. Every command is
 * written as Redis protocol bytes here.
 */
function queueTransaction(out: PutCommands, keys: CacheKeys, cut: number, t: Transaction, body: Buffer | undefined, columns: readonly string[] | undefined): void {
  const tag = columns === undefined ? '' : columnsTag(columns);
  const tagBytes = Buffer.from(tag, 'latin1');
  const { prefix, ttlMs } = keys.layout;
  const n = t.size;
  const commands: [string, number][] = [];
  const end = (name: string) => commands.push([name, protocol.at]);
  // Whatever a transaction that threw left behind is written over.
  packed.reset();
  protocol.reset();
  protocol.command(1);
  protocol.bulk('MULTI');
  end('multi');
  // The rows in shard order (a counting sort): GUARD reads, and HSET writes, a shard's rows at once.
  const counts = new Array<number>(SHARDS + 1).fill(0);
  for (let i = 0; i < n; i++) counts[t.shards[i]! + 1]!++;
  for (let shard = 0; shard < SHARDS; shard++) counts[shard + 1]! += counts[shard]!;
  const order = new Array<number>(n);
  const next = counts.slice();
  for (let i = 0; i < n; i++) order[next[t.shards[i]!]!++] = i;
  const header = packed.packArrayStart();
  let items = 0;
  for (let shard = 0; shard < SHARDS; shard++) {
    const from = counts[shard]!;
    const to = counts[shard + 1]!;
    if (from === to) continue;
    packed.packNumber(shard);
    packed.packNumber(to - from);
    for (let k = from; k < to; k++) {
      const i = order[k]!;
      t.entryStarts[k] = packed.packEntry(shard, t.members, t.memberStarts[i]!, t.memberEnds[i]!);
      t.entryEnds[k] = packed.at;
    }
    for (let k = from; k < to; k++) packed.packNumber(t.versions[order[k]!]!);
    for (let k = from; k < to; k++) packed.packNumber(t.lists[order[k]!]!);
    items += 2 + 3 * (to - from);
  }
  packed.packArray(header, items);
  protocol.command(6 + t.listArguments.length);
  protocol.bulk('EVAL');
  protocol.bulk(GUARD);
  protocol.bulk('0');
  protocol.bulkCopy(packed, 0, packed.at);
  protocol.bulk(String(cut));
  protocol.bulk(prefix);
  for (const argument of t.listArguments) protocol.bulk(argument);
  end('eval');
  for (let shard = 0; shard < SHARDS; shard++) {
    const from = counts[shard]!;
    const to = counts[shard + 1]!;
    if (from === to) continue;
    protocol.command(2 + 2 * (to - from));
    protocol.bulk('HSET');
    protocol.bulk(`${prefix}h:${shard}`);
    for (let k = from; k < to; k++) {
      const i = order[k]!;
      // The entry's bytes, as GUARD got them.
      protocol.bulkCopy(packed, t.entryStarts[k]!, t.entryEnds[k]!);
      protocol.bulkBooking(t.versions[i]!, t.times[i]!, body, t.starts[i]!, t.ends[i]!, t.rows[i]!, tagBytes);
    }
    end('hset');
  }
  if (tag !== '') {
    // What the tag of the array rows stands for, beside them.
    protocol.command(4);
    protocol.bulk('HSET');
    protocol.bulk(keys.columns);
    protocol.bulk(tag);
    protocol.bulk(JSON.stringify(columns));
    end('hset');
  }
  // The customer index: one sorted set per time bucket, living until its last booking's TTL is out.
  const byBucket = new Map<number, string[]>();
  for (let i = 0; i < n; i++) {
    const customer = t.customers[i]!;
    if (customer === '') continue;
    const bucket = Math.floor(t.times[i]! / keys.bucketMs);
    const members = byBucket.get(bucket);
    const member = keys.customerEntry(customer, t.times[i]!, t.entry(i));
    if (members) members.push(member);
    else byBucket.set(bucket, [member]);
  }
  if (byBucket.size > 0) {
    for (const [bucket, members] of byBucket) {
      const key = keys.customerBucket(bucket);
      protocol.command(2 + 2 * members.length);
      protocol.bulk('ZADD');
      protocol.bulk(key);
      for (const member of members) {
        protocol.bulk('0');
        protocol.bulk(member);
      }
      end('zadd');
      protocol.command(3);
      protocol.bulk('PEXPIREAT');
      protocol.bulk(key);
      protocol.bulk(String((bucket + 1) * keys.bucketMs + ttlMs));
      end('pexpireat');
    }
    protocol.command(2 + 2 * byBucket.size);
    protocol.bulk('ZADD');
    protocol.bulk(keys.customerBuckets);
    for (const bucket of byBucket.keys()) {
      protocol.bulk(String((bucket + 1) * keys.bucketMs));
      protocol.bulk(keys.customerBucket(bucket));
    }
    end('zadd');
    protocol.command(4);
    protocol.bulk('ZREMRANGEBYSCORE');
    protocol.bulk(keys.customerBuckets);
    protocol.bulk('-inf');
    protocol.bulk(String(cut));
    end('zremrangebyscore');
  }
  protocol.command(4);
  protocol.bulk('EVAL');
  protocol.bulk(RESTORE);
  protocol.bulk('0');
  protocol.bulk(prefix);
  end('eval');
  protocol.command(1);
  protocol.bulk('EXEC');
  end('exec');
  sendWritten(out, commands);
}

/**
 * Where `queuePuts` hands the commands it wrote: their Redis protocol bytes, and each
 * command's name (lower case) with where it ends in them.
 */
export type PutCommands = (bytes: Buffer, commands: readonly (readonly [name: string, end: number])[]) => void;

/** Queues commands written as bytes on `pipeline`, each as it is. */
export function onPipeline(pipeline: ReturnType<Redis['pipeline']>): PutCommands {
  return (bytes, commands) => {
    let from = 0;
    for (const [name, to] of commands) {
      (pipeline as unknown as { sendCommand(command: Command): void }).sendCommand(rawCommand(name, bytes.subarray(from, to)));
      from = to;
    }
  };
}

/** Hands `out` the commands written in `protocol`, each named with where it ends there; starts `protocol` again. */
function sendWritten(out: PutCommands, commands: readonly [name: string, end: number][]): void {
  out(protocol.take(), commands);
}

/** What `readValues` or `readBytes` read of a row: its vendor (the first key part), time, version and customer ('' for none); its member is in `member`. */
let rowVendor = '';
let rowTime = 0;
let rowVersion = 0;
let rowCustomer = '';

/** The member (key parts as JSON) of the row read last, as UTF-8 bytes, and its hash (`CacheKeys.hash` of its text). */
const member = new Bytes(1 << 10);
let memberHash = 0;

/** Writes `member` and `memberHash` from key parts as text. */
function memberOfParts(keys: CacheKeys, parts: readonly string[]): void {
  const text = keys.member(parts);
  memberHash = keys.hash(text);
  member.reset();
  member.text(text);
}

/**
 * Writes `member` and `memberHash` from the bytes of a row's key parts when each is
 * `plain` and holds no control character (JSON.stringify would have escaped it): their
 * bytes are then the member's text, quotes included, a byte a UTF-16 unit, so the hash is
 * the text's. False otherwise (`member` is then written from the parts as text).
 */
function memberOfBytes(fields: RowFields, width: number): boolean {
  for (let k = 0; k < width; k++) if (!fields.plain(k)) return false;
  const body = fields.body;
  member.reset();
  let length = 1 + width;
  for (let k = 0; k < width; k++) length += fields.end(k) - fields.start(k);
  const buffer = member.room(length);
  let hash = Math.imul(0x811c9dc5 ^ 91, 0x01000193); // [
  buffer[0] = 91;
  let at = 1;
  for (let k = 0; k < width; k++) {
    if (k > 0) {
      buffer[at++] = 44; // ,
      hash = Math.imul(hash ^ 44, 0x01000193);
    }
    for (let i = fields.start(k), end = fields.end(k); i < end; i++) {
      const byte = body[i]!;
      if (byte < 0x20) return false;
      buffer[at++] = byte;
      hash = Math.imul(hash ^ byte, 0x01000193);
    }
  }
  buffer[at++] = 93; // ]
  member.at = at;
  memberHash = Math.imul(hash ^ 93, 0x01000193) >>> 0;
  return true;
}

/** The vendor's text of the last row read from bytes, and those bytes (quoted): rows of one vendor in a row make one string. */
let lastVendor = '';
let lastVendorBytes = Buffer.alloc(0);

/** The text of plain field 0 (the vendor). */
function vendorOf(fields: RowFields): string {
  const body = fields.body;
  const start = fields.start(0);
  const length = fields.end(0) - start;
  const last = lastVendorBytes;
  if (length === last.length) {
    let i = 0;
    while (i < length && body[start + i] === last[i]) i++;
    if (i === length) return lastVendor;
  }
  lastVendorBytes = Buffer.from(body.subarray(start, start + length));
  lastVendor = body.toString('latin1', start + 1, start + length - 1);
  return lastVendor;
}

/** Reads a row's member, and its vendor, time, version and customer; false when a key part, the time or the version is missing. */
function readValues(row: Record<string, unknown> | undefined, keys: CacheKeys, parts: string[]): boolean {
  if (row === null || typeof row !== 'object') return false;
  const layout = keys.layout;
  const keyFields = layout.keyFields;
  for (let k = 0; k < keyFields.length; k++) {
    // The first two key columns each read at a place of their own (one column name a place reads fastest).
    const part = k === 0 ? row[keyFields[0]!] : k === 1 ? row[keyFields[1]!] : row[keyFields[k]!];
    if (typeof part === 'string' && part !== '') parts[k] = part;
    else if (typeof part === 'number') parts[k] = String(part);
    else return false;
  }
  const time = timeMs(row[layout.timeField]);
  const version = time === undefined ? undefined : timeMs(row[layout.versionField]);
  if (version === undefined) return false;
  rowTime = time!;
  rowVersion = version;
  const customer = layout.customerField === undefined ? undefined : row[layout.customerField];
  rowCustomer = typeof customer === 'string' ? customer : '';
  memberOfParts(keys, parts);
  rowVendor = parts[0]!;
  return true;
}

/** The reader of each layout's columns (key parts, time, version, customer) in encoded rows. */
const rowFields = new WeakMap<ResolvedLayout, RowFields>();
function rowFieldsOf(layout: ResolvedLayout): RowFields {
  let fields = rowFields.get(layout);
  if (fields === undefined) rowFields.set(layout, (fields = new RowFields([...layout.keyFields, layout.timeField, layout.versionField, ...(layout.customerField === undefined ? [] : [layout.customerField])])));
  return fields;
}

/** `readValues` of encoded row `index`, read from its bytes (the fields: key parts, time, version, customer). */
function readBytes(fields: RowFields, encoded: EncodedRows, index: number, keys: CacheKeys, parts: string[]): boolean {
  fields.read(encoded, index);
  const width = parts.length;
  const time = fieldTime(fields, width);
  const version = time === undefined ? undefined : fieldTime(fields, width + 1);
  if (version === undefined) return false;
  if (memberOfBytes(fields, width)) rowVendor = vendorOf(fields);
  else {
    for (let k = 0; k < width; k++) {
      const kind = fields.kind(k);
      if (kind === FieldKind.String) {
        const part = fields.string(k);
        if (part === '') return false;
        parts[k] = part;
      } else if (kind === FieldKind.Number) parts[k] = String(fields.number(k));
      else return false;
    }
    memberOfParts(keys, parts);
    rowVendor = parts[0]!;
  }
  rowTime = time!;
  rowVersion = version;
  rowCustomer = fields.kind(width + 2) === FieldKind.String ? fields.string(width + 2) : '';
  return true;
}

/** `timeMs` of a field read from bytes: ISO 8601 in UTC without a string. */
function fieldTime(fields: RowFields, field: number): number | undefined {
  const kind = fields.kind(field);
  if (kind === FieldKind.String) {
    const ms = fields.isoUtc(field, isoParts) ? isoPartsMs(isoParts) : undefined;
    return ms ?? timeMs(fields.string(field));
  }
  return kind === FieldKind.Number ? timeMs(fields.number(field)) : undefined;
}

/**
 * Queues the puts of `rows` on `pipeline`: one MULTI … EXEC per ROWS_PER_CALL rows (fewer
 * when a booking comes again: each transaction names a booking once). Rows are stored as
 * JSON as they are given (encrypted fields stay encrypted). With `encoded` rows (JSON
 * objects, or arrays of its columns) `rows` are not read: each encoded row is copied as
 * bytes, its key, time, version and customer read from them. Rows past their TTL, or more
 * than `maxAheadMs` ahead of `now`, are not queued.
 */
export function queuePuts(out: PutCommands, keys: CacheKeys, rows: readonly Record<string, unknown>[], now: number, encoded?: EncodedRows): Unqueued {
  const { layout, bucketMs } = keys;
  const unqueued: Unqueued = { expired: 0, ahead: 0, unkeyed: 0 };
  const cut = now - layout.ttlMs;
  const horizon = now + layout.maxAheadMs;
  /** Spans holding the rows too far ahead to cache (`CacheKeys.aheadMark`): member → end. */
  const marks = new Map<string, number>();
  const t = transaction;
  const firstBucket = Math.floor(cut / bucketMs);
  t.clear(firstBucket);
  const body = encoded?.body;
  // Written over row by row (emptying it would drop its storage, grown again by each row's pushes).
  const parts: string[] = Array.from({ length: layout.keyFields.length }, () => '');
  const fields = encoded === undefined ? undefined : rowFieldsOf(layout);
  const count = encoded === undefined ? rows.length : encoded.ends.length;
  for (let index = 0; index < count; index++) {
    const keyed = fields === undefined ? readValues(rows[index], keys, parts) : readBytes(fields, encoded!, index, keys, parts);
    if (!keyed) {
      unqueued.unkeyed++;
      continue;
    }
    const time = rowTime;
    const version = rowVersion;
    if (Math.floor(time) <= cut) {
      unqueued.expired++;
      continue;
    }
    if (time > horizon) {
      unqueued.ahead++;
      const [member, end] = keys.aheadMark(time, now);
      marks.set(member, end);
      continue;
    }
    if (t.size === ROWS_PER_CALL || t.bytes >= BYTES_PER_CALL || t.has()) {
      queueTransaction(out, keys, cut, t, body, encoded?.columns);
      t.clear(firstBucket);
    }
    const vendor = rowVendor;
    const bucket = Math.floor(time / bucketMs);
    let listNumber = t.listNumber(vendor, bucket);
    if (listNumber === 0) listNumber = t.addList(vendor, bucket, keys.vendorBucket(vendor, bucket), String((bucket + 1) * bucketMs));
    // The row's bytes in the encoded body (without its newline), or its JSON.
    const start = encoded ? (index === 0 ? 0 : encoded.ends[index - 1]!) : 0;
    const end = encoded ? encoded.ends[index]! - 1 : 0;
    t.add(version, time, listNumber, start, end, encoded ? '' : JSON.stringify(rows[index]), rowCustomer);
  }
  if (t.size > 0) queueTransaction(out, keys, cut, t, body, encoded?.columns);
  t.clear(firstBucket);
  if (marks.size > 0) queueAheadMarks(out, keys, marks, cut);
  return unqueued;
}

/**
 * Marks where rows too far ahead to cache lie (`marks`: member → end), so that a reader
 * does not answer a range reaching them from the cache once they are no longer ahead; and
 * drops the marks whose span is past the TTL (its bookings would be expired).
 */
function queueAheadMarks(out: PutCommands, keys: CacheKeys, marks: Map<string, number>, cut: number): void {
  protocol.reset();
  protocol.command(2 + 2 * marks.size);
  protocol.bulk('ZADD');
  protocol.bulk(keys.ahead);
  for (const [member, end] of marks) {
    protocol.bulk(String(end));
    protocol.bulk(member);
  }
  const added = protocol.at;
  protocol.command(4);
  protocol.bulk('ZREMRANGEBYSCORE');
  protocol.bulk(keys.ahead);
  protocol.bulk('-inf');
  protocol.bulk(String(cut));
  sendWritten(out, [
    ['zadd', added],
    ['zremrangebyscore', protocol.at],
  ]);
}

/** Runs a pipeline of puts; counts outcomes. Redis failures become retriable `SinkError`s. */
export async function execPuts(client: Redis, pipeline: ReturnType<Redis['pipeline']>, what: string): Promise<{ stored: number; older: number }> {
  let replies: [Error | null, unknown][] | null;
  try {
    replies = await pipeline.exec();
  } catch (cause) {
    throw new SinkError(redisFailure(client, `${what}: Redis failed: ${(cause as Error).message}`), { code: 'REDIS', retriable: true, cause });
  }
  const failed = (error: Error) =>
    new SinkError(redisFailure(client, `${what}: Redis failed: ${error.message}`), { code: 'REDIS', retriable: !/WRONGTYPE|NOPERM|ERR syntax/.test(error.message), cause: error });
  let stored = 0;
  let older = 0;
  for (const [error, reply] of replies ?? []) {
    if (error) throw failed(error);
    // An EXEC's replies: GUARD's counts first.
    if (Array.isArray(reply)) {
      for (const item of reply) if (item instanceof Error) throw failed(item);
      const counts = reply[0] as [number, number];
      stored += Number(counts[0]);
      older += Number(counts[1]);
    }
  }
  return { stored, older };
}

/** A batch the pack worker packs: its layout (JSON), its rows as bytes of their own, where each ends, their columns; now. */
export interface PackRequest {
  id: number;
  layout: string;
  body: Uint8Array;
  ends: Float64Array;
  columns: readonly string[] | undefined;
  now: number;
}

/** A packed batch: its commands, as `queuePuts` handed them over (bytes, and each command's name and end in them), and the rows not queued; or why it failed. */
export type PackReply = { id: number; chunks: { bytes: Uint8Array; commands: (readonly [name: string, end: number])[] }[]; unqueued: Unqueued } | { id: number; error: string };

type Packed = Extract<PackReply, { chunks: unknown }>;

/** Encoded rows a batch has at least for a sink to pack them on the worker: fewer pack faster than a message goes there and back. */
const WORKER_ROWS = 256;

/** The nice the pack worker's thread runs at (Linux): below the pipeline's thread. */
export const PACK_NICE = 10;

/** The worker's script, beside this one (absent where the sources run untranspiled: batches are then packed on the sink's thread). */
const PACK_WORKER = join(__dirname, 'packWorker.js');

/**
 * The thread every cache sink of the process packs its large batches on (`queuePuts`
 * there): one, started on the first such batch and kept, so that its code stays compiled
 * from one sink to the next. It holds the process open only while a batch is on it. A
 * worker that fails or exits fails the batches on it (their writes fail, retriable), and
 * the next batch starts another; one that does so before its first answer cannot run here,
 * and the sinks pack on their own thread from then on.
 */
class PackWorker {
  #worker: Worker | undefined;
  readonly #pending = new Map<number, { resolve(reply: Packed): void; reject(error: Error): void }>();
  #next = 0;

  #script = PACK_WORKER;
  /** Whether a worker can run here: its script is there, and none failed before its first answer. */
  #available = existsSync(PACK_WORKER);

  get available(): boolean {
    return this.#available;
  }

  /** The worker's script (a spec's hook); setting it stops the worker and tries workers again. */
  get script(): string {
    return this.#script;
  }

  set script(script: string) {
    void this.terminate();
    this.#script = script;
    this.#available = existsSync(script);
  }

  /** Whether a worker is running now. */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** Batches on the worker now. */
  get busy(): number {
    return this.#pending.size;
  }

  /** Packs `encoded` as `queuePuts` with keys of `layout` (JSON) at `now` does, on the worker. */
  pack(layout: string, encoded: EncodedRows, now: number): Promise<Packed> {
    const worker = this.#worker ?? this.#start();
    const id = this.#next++;
    // Copies of their own, moved to the worker: the body goes on to ClickHouse meanwhile.
    const ends = Float64Array.from(encoded.ends);
    const body = new Uint8Array(ends[ends.length - 1] ?? 0);
    body.set(encoded.body.subarray(0, body.length));
    const request: PackRequest = { id, layout, body, ends, columns: encoded.columns, now };
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) worker.ref();
      worker.postMessage(request, [body.buffer, ends.buffer]);
    });
  }

  #start(): Worker {
    let worker: Worker;
    try {
      worker = new Worker(this.#script);
    } catch (error) {
      this.#available = false;
      throw error;
    }
    // It holds the process open from its start (as its 'message' listener would anyway) until an answer leaves no batch on it; after that only while pack() has one on it.
    let answered = false;
    worker.on('message', (reply: PackReply) => {
      answered = true;
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      if ('error' in reply) pending.reject(new Error(`packing a batch failed: ${reply.error}`));
      else pending.resolve(reply);
    });
    // One that fails before its first answer cannot run here: batches are packed on the sink's thread from now on.
    worker.on('error', (error) => this.#stopped(worker, error, !answered));
    worker.on('exit', (code) => this.#stopped(worker, new Error(`the packing worker stopped (exit code ${code})`), !answered));
    this.#worker = worker;
    return worker;
  }

  /** Stops the worker: the batches on it fail; the next batch starts another. */
  async terminate(): Promise<void> {
    const worker = this.#worker;
    if (worker === undefined) return;
    this.#stopped(worker, new Error('the packing worker was stopped'));
    await worker.terminate();
  }

  /** Fails the batches on `worker`, which is gone; `unable`: it never answered. */
  #stopped(worker: Worker, error: Error, unable = false): void {
    if (this.#worker !== worker) return;
    this.#worker = undefined;
    if (unable) this.#available = false;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const { reject } of pending) reject(error);
  }
}

/** The pack worker of this process. */
export const packWorker = new PackWorker();

/** A cache sink: `stats` counts rows by outcome; `close()` quits a client it made. */
export interface RedisCacheSink<T> extends Sink<T> {
  readonly stats: RedisCacheStats;
  close(): Promise<void>;
}

/**
 * Keeps recent bookings in Redis (7.0 or later) under their natural key, for as long as
 * their TTL counted from the booking's time, with indexes by vendor (time bucket lists)
 * and (optionally) customer token (a sorted set per time bucket, ordered by token and
 * time). Idempotent: in each transaction a Lua script sets aside the bookings there with a
 * later version than the row's and puts them back after plain HSETs wrote the rows, so a
 * replayed or older row never replaces a newer one. One pipelined round trip per batch.
 * Rows are stored as the sink receives them (JSON): fields encrypted upstream stay encrypted.
 *
 * Bookings live as fields of a few hashes (one HMGET and one HSET per hash and
 * transaction, not two commands a booking): a booking past its TTL is no longer read at
 * once, and removed by the writes that follow (each removes up to twice the rows it puts).
 *
 * After a failed write, the next write first marks the cache incomplete (the reader then
 * reads through to ClickHouse until `warm()` rebuilds it). Use it in a {@link fanOut}
 * beside ClickHouse; read with `recentBookings`.
 *
 * ## Example
 * ```ts
 * import { fanOut, toClickHouse } from 'tributary';
 * import { toRedisCache } from 'tributary/redis';
 * const cache = toRedisCache({ url: 'redis://127.0.0.1:6379', customerField: 'customer_token' });
 * const sink = fanOut([{ sink: toClickHouse({ client, table: 'bookings' }), required: true }, { sink: cache, bestEffort: true }]);
 * ```
 */
export function toRedisCache<T extends object>(options: ToRedisCacheOptions): RedisCacheSink<T> {
  const layout = resolveLayout(options ?? {});
  const inWorker = booleanOption(options?.packInWorker, true, 'packInWorker');
  const { client, close } = redisClient(options, 'toRedisCache');
  const keys = new CacheKeys(layout);
  const layoutJson = JSON.stringify(layout);
  const stats: RedisCacheStats = { stored: 0, older: 0, expired: 0, ahead: 0, unkeyed: 0 };
  const name = `redis-cache:${layout.prefix}`;
  /** Tokens of batches whose write failed and has not landed since. */
  const missed = new Set<string>();
  return {
    name,
    stats,
    encoding: 'json',
    // Arrays of ClickHouse's columns beside it: stored as they are, the columns kept once.
    reads: ['json-compact'],
    encode: (value: T) => JSON.stringify(value) ?? 'null',
    // keepsValues left unset: the key, time and version columns are read from the encoded rows, so the values can go once they are encoded.
    async write(batch: Batch<T>, context: WriteContext) {
      // A sink written beside this one (ClickHouse) starts its insert before this one packs.
      await new Promise(setImmediate);
      const pipeline = client.pipeline();
      // Another batch failed and was not written since: this cache is no longer complete,
      // whatever a warm-up said. (The same batch retried is not a loss.)
      const lost = missed.size > (missed.has(context.token) ? 1 : 0);
      if (lost) pipeline.del(keys.fresh, keys.warming);
      const encoded = batch.encoded;
      let unqueued: Unqueued;
      let packed: Packed | undefined;
      if (inWorker && packWorker.available && encoded !== undefined && encoded.ends.length >= WORKER_ROWS) {
        try {
          packed = await packWorker.pack(layoutJson, encoded, Date.now());
        } catch (cause) {
          // A worker that cannot run here leaves the batch to this thread; one that stopped fails it, retriable.
          if (packWorker.available) {
            missed.add(context.token);
            throw new SinkError(`sink ${name}: ${(cause as Error).message}`, { code: 'CACHE_PACK', retriable: true, cause });
          }
        }
      }
      if (packed !== undefined) {
        const queue = onPipeline(pipeline);
        for (const { bytes, commands } of packed.chunks) queue(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), commands);
        unqueued = packed.unqueued;
      } else {
        const values = encoded === undefined ? batch.envelopes.map((envelope) => envelope.value as Record<string, unknown>) : [];
        unqueued = queuePuts(onPipeline(pipeline), keys, values, Date.now(), encoded);
      }
      stats.expired += unqueued.expired;
      stats.ahead += unqueued.ahead;
      stats.unkeyed += unqueued.unkeyed;
      // Nothing to write: rows too far ahead are not counted here, where they lie is written.
      const skipped = unqueued.expired + unqueued.unkeyed;
      if (skipped === batch.envelopes.length && !lost) return;
      try {
        const { stored, older } = await execPuts(client, pipeline, `sink ${name}`);
        stats.stored += stored;
        stats.older += older;
      } catch (error) {
        missed.add(context.token);
        throw error;
      }
      if (lost) missed.clear();
      else missed.delete(context.token);
    },
    close,
  };
}
