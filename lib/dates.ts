import { ConfigError } from './errors';

/**
 * Dates and times as vendors write them, into the ISO 8601 text the unified model keeps:
 * ISO 8601 and `DD/MM/YYYY HH:mm`-style patterns read without a regex or a Date per value,
 * wall-clock times in a zone (UTC, a fixed offset or an IANA name) turned into UTC, and
 * rendering with per-day and per-time caches. Used by `normalize`.
 */

/** A time past what a Date can hold (±MAX_TIME_MS). */
export class TimeOutOfRange extends Error {}
/** The latest time a Date holds (and, negated, the earliest), epoch ms. */
export const MAX_TIME_MS = 8.64e15;
export interface TimeParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  millisecond: number;
  /** Minutes east of UTC, when the text carries an offset. */
  offset?: number;
}

/**
 * ISO 8601 as vendors write it: `YYYY-MM-DD`, then optionally `T` or a space and `HH:mm`,
 * `:ss` and a fraction of 1 to 9 digits after `.` or `,`; then optionally whitespace and
 * `Z` or an offset (`+HH`, `+HHmm`, `+HH:mm`). `T` and `Z` in either case. Read by a scanner
 * over char codes: a regex made a match array and eight strings per value, about 0.3 µs.
 */
export function parseIso(text: string): TimeParts | undefined {
  const length = text.length;
  if (length < 10 || text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d) return undefined;
  const year = digitsAt(text, 0, 4);
  const month = digitsAt(text, 5, 2);
  const day = digitsAt(text, 8, 2);
  if (year < 0 || month < 0 || day < 0) return undefined;
  let hour = 0;
  let minute = 0;
  let second = 0;
  let millisecond = 0;
  let i = 10;
  const separator = text.charCodeAt(i);
  // A time only when `HH:mm` follows whole; else what follows is read as whitespace and an offset.
  if ((separator === 0x54 || separator === 0x74 || separator === 0x20) && length >= i + 6 && text.charCodeAt(i + 3) === 0x3a) {
    const h = digitsAt(text, i + 1, 2);
    const m = digitsAt(text, i + 4, 2);
    if (h >= 0 && m >= 0) {
      hour = h;
      minute = m;
      i += 6;
      if (text.charCodeAt(i) === 0x3a) {
        second = digitsAt(text, i + 1, 2);
        if (second < 0) return undefined;
        i += 3;
        const point = text.charCodeAt(i);
        if (point === 0x2e || point === 0x2c) {
          const from = ++i;
          while (i < length && isDigitCode(text.charCodeAt(i))) i++;
          if (i === from || i - from > 9) return undefined;
          // The first three digits, padded: .5 is 500 ms, .123456789 is 123.
          for (let k = 0; k < 3; k++) millisecond = millisecond * 10 + (from + k < i ? text.charCodeAt(from + k) - 0x30 : 0);
        }
      }
    }
  }
  while (i < length && isRegexSpace(text.charCodeAt(i))) i++;
  let offset: number | undefined;
  if (i < length) {
    const sign = text.charCodeAt(i);
    if ((sign === 0x5a || sign === 0x7a) && i + 1 === length) offset = 0;
    else if (sign === 0x2b || sign === 0x2d) {
      const hours = digitsAt(text, i + 1, 2);
      if (hours < 0) return undefined;
      let minutes = 0;
      const rest = length - (i + 3);
      if (rest === 2) minutes = digitsAt(text, i + 3, 2);
      else if (rest === 3 && text.charCodeAt(i + 3) === 0x3a) minutes = digitsAt(text, i + 4, 2);
      else if (rest !== 0) return undefined;
      if (minutes < 0) return undefined;
      offset = sign === 0x2d ? -(hours * 60 + minutes) : hours * 60 + minutes;
    } else return undefined;
  }
  const parts: TimeParts = { year, month, day, hour, minute, second, millisecond };
  if (offset !== undefined) parts.offset = offset;
  return parts;
}

/** A `±HH:mm` or `±HHmm` offset in minutes east of UTC. */
function offsetMinutes(text: string): number {
  const digits = text.slice(1).replace(':', '');
  const minutes = +digits.slice(0, 2) * 60 + +(digits.slice(2) || 0);
  return text[0] === '-' ? -minutes : minutes;
}

/** The number written by the `count` digits at `at`, -1 when one of them is not a digit (or missing). */
function digitsAt(text: string, at: number, count: number): number {
  let value = 0;
  for (let k = at; k < at + count; k++) {
    const code = text.charCodeAt(k);
    if (!isDigitCode(code)) return -1;
    value = value * 10 + code - 0x30;
  }
  return value;
}

function isDigitCode(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** What `\s` matches in a JavaScript regex. */
function isRegexSpace(code: number): boolean {
  return (
    (code >= 0x09 && code <= 0x0d) ||
    code === 0x20 ||
    code === 0xa0 ||
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}

/** The part of a time each token fills, by index: year, month, day, hour, minute, second, millisecond. */
const TOKENS: Record<string, number> = { YYYY: 0, MM: 1, DD: 2, HH: 3, mm: 4, ss: 5, SSS: 6 };
/** A step that is a literal character, not a part. */
const LITERAL = -1;

/**
 * Compiles `DD/MM/YYYY HH:mm` and the like into a scanner over char codes: no regex, no
 * match array, and one parts object reused for every value (coercion is synchronous).
 * Steps are kept in typed arrays so the scanner's loads stay monomorphic.
 */
export function patternParser(pattern: string, where: string): (text: string) => TimeParts | undefined {
  const kinds: number[] = [];
  const mins: number[] = [];
  const maxes: number[] = [];
  for (let i = 0; i < pattern.length; ) {
    const token = ['YYYY', 'SSS', 'MM', 'DD', 'HH', 'mm', 'ss'].find((t) => pattern.startsWith(t, i));
    if (token) {
      kinds.push(TOKENS[token]!);
      mins.push(token === 'YYYY' ? 4 : token === 'SSS' ? 3 : 1);
      maxes.push(token.length);
      i += token.length;
    } else {
      kinds.push(LITERAL);
      mins.push(pattern.charCodeAt(i));
      maxes.push(0);
      i++;
    }
  }
  if (![0, 1, 2].every((part) => kinds.includes(part))) {
    throw new ConfigError(`${where}.format must contain YYYY, MM and DD (or be iso, epoch-s, epoch-ms), got ${JSON.stringify(pattern)}`);
  }
  try {
    return compiledPattern(kinds, mins, maxes);
  } catch (error) {
    // --disallow-code-generation-from-strings, or a CSP: the steps are interpreted.
    if (!(error instanceof EvalError)) throw error;
  }
  const kind = Int8Array.from(kinds);
  const min = Int32Array.from(mins);
  const max = Int8Array.from(maxes);
  const steps = kind.length;
  const values = new Int32Array(7);
  const result: TimeParts = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0, millisecond: 0 };
  // Each value that parses sets every part the pattern names; the others stay 0.
  return (text) => {
    let at = 0;
    for (let s = 0; s < steps; s++) {
      const part = kind[s]!;
      if (part === LITERAL) {
        if (text.charCodeAt(at) !== min[s]) return undefined;
        at++;
        continue;
      }
      let value = 0;
      let digits = 0;
      while (digits < max[s]!) {
        const digit = text.charCodeAt(at) - 48;
        if (!(digit >= 0 && digit <= 9)) break;
        value = value * 10 + digit;
        at++;
        digits++;
      }
      if (digits < min[s]!) return undefined;
      values[part] = value;
    }
    if (at !== text.length) return undefined;
    result.year = values[0]!;
    result.month = values[1]!;
    result.day = values[2]!;
    result.hour = values[3]!;
    result.minute = values[4]!;
    result.second = values[5]!;
    result.millisecond = values[6]!;
    return result;
  };
}

/**
 * The steps of a pattern as straight-line code, as `normalize` compiles its mappings: each
 * literal a compare and each part a loop of its own, read into locals. Only numbers enter
 * the code.
 */
function compiledPattern(kinds: readonly number[], mins: readonly number[], maxes: readonly number[]): (text: string) => TimeParts | undefined {
  const code = kinds.map((part, s) =>
    part === LITERAL
      ? `if (text.charCodeAt(at) !== ${mins[s]}) return undefined; at++;`
      : `value = 0; digits = 0; while (digits < ${maxes[s]}) { c = text.charCodeAt(at) - 48; if (!(c >= 0 && c <= 9)) break; value = value * 10 + c; at++; digits++; } if (digits < ${mins[s]}) return undefined; p${part} = value;`,
  );
  const body = `return function parse(text) {
  let at = 0, c = 0, value = 0, digits = 0, p0 = 0, p1 = 0, p2 = 0, p3 = 0, p4 = 0, p5 = 0, p6 = 0;
  ${code.join('\n  ')}
  if (at !== text.length) return undefined;
  result.year = p0; result.month = p1; result.day = p2; result.hour = p3; result.minute = p4; result.second = p5; result.millisecond = p6;
  return result;
};`;
  const result: TimeParts = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0, millisecond: 0 };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- compiled once per pattern, from numbers only
  return new Function('result', body)(result) as (text: string) => TimeParts | undefined;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

export function validParts(p: TimeParts): boolean {
  if (p.month < 1 || p.month > 12 || p.day < 1 || p.hour > 23 || p.minute > 59 || p.second > 59) return false;
  const leap = p.month === 2 && p.year % 4 === 0 && (p.year % 100 !== 0 || p.year % 400 === 0);
  return p.day <= DAYS_IN_MONTH[p.month - 1]! + (leap ? 1 : 0);
}

const DAY_MS = 86_400_000;

/**
 * The parts read as a UTC time, in milliseconds: days from the civil date by integer
 * arithmetic (H. Hinnant's algorithm) instead of `Date.UTC`, a call into the runtime that
 * also reads years 0–99 as 1900–1999.
 */
export function wallClockMs(p: TimeParts): number {
  const year = p.month <= 2 ? p.year - 1 : p.year;
  const era = Math.floor(year / 400);
  const yearOfEra = year - era * 400;
  const dayOfYear = Math.floor((153 * (p.month > 2 ? p.month - 3 : p.month + 9) + 2) / 5) + p.day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  const days = era * 146_097 + dayOfEra - 719_468;
  return days * DAY_MS + p.hour * 3_600_000 + p.minute * 60_000 + p.second * 1000 + p.millisecond;
}
/** Year 10000: past it, ISO 8601 needs an expanded year and the slow path renders it. */
const FAST_RENDER_LIMIT = 253_402_300_800_000;
const TWO_DIGITS = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
/**
 * `YYYY-MM-DD` per day number, in a direct-mapped cache: a slot per day modulo its size,
 * so 11 years of consecutive days never evict each other, and a lookup is two array reads.
 */
const DAY_SLOTS = 4096;
const dayKeys = new Float64Array(DAY_SLOTS).fill(NaN);
const dayTexts = new Array<string>(DAY_SLOTS).fill('');

function dayText(day: number): string {
  const slot = day & (DAY_SLOTS - 1);
  if (dayKeys[slot] === day) return dayTexts[slot]!;
  const text = new Date(day * DAY_MS).toISOString().slice(0, 10);
  dayKeys[slot] = day;
  dayTexts[slot] = text;
  return text;
}

function checkedTime(ms: number): void {
  if (!Number.isFinite(ms) || Math.abs(ms) > MAX_TIME_MS) throw new TimeOutOfRange(`time out of range: ${ms}`);
}

/** `new Date(ms).toISOString()`, without a Date per call on the common range. */
export function isoDateTime(ms: number): string {
  if (!(ms >= 0 && ms < FAST_RENDER_LIMIT)) {
    checkedTime(ms);
    return new Date(ms).toISOString();
  }
  const day = Math.floor(ms / DAY_MS);
  return dayText(day) + timeText(ms - day * DAY_MS);
}

/**
 * `Thh:mm:ss.sssZ` per millisecond of the day, in a direct-mapped cache with a slot per
 * second modulo its size: vendor times repeat their times of day, and building the text
 * from its pieces each time allocated ten times the string it made.
 */
const TIME_SLOTS = 8192;
const timeKeys = new Float64Array(TIME_SLOTS).fill(NaN);
const timeTexts = new Array<string>(TIME_SLOTS).fill('');

function timeText(msOfDay: number): string {
  const slot = Math.floor(msOfDay / 1000) & (TIME_SLOTS - 1);
  if (timeKeys[slot] === msOfDay) return timeTexts[slot]!;
  const millis = Math.floor(msOfDay % 1000);
  const seconds = Math.floor(msOfDay / 1000);
  const text = `T${TWO_DIGITS[Math.floor(seconds / 3600)]}:${TWO_DIGITS[Math.floor(seconds / 60) % 60]}:${TWO_DIGITS[seconds % 60]}.${String(millis).padStart(3, '0')}Z`;
  timeKeys[slot] = msOfDay;
  timeTexts[slot] = text;
  return text;
}

export function isoDate(ms: number): string {
  if (!(ms >= 0 && ms < FAST_RENDER_LIMIT)) {
    checkedTime(ms);
    const iso = new Date(ms).toISOString();
    return iso.slice(0, iso.indexOf('T'));
  }
  return dayText(Math.floor(ms / DAY_MS));
}

/** Converts a wall-clock time (as if UTC) in `zone` to real UTC milliseconds. */
export function zoneOf(zone: string, where: string): (local: number) => number {
  if (zone === 'UTC' || zone === 'Z') return (local) => local;
  if (/^[+-]\d{2}:?\d{2}$/.test(zone)) {
    const offset = offsetMinutes(zone) * 60_000;
    return (local) => local - offset;
  }
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
    });
  } catch {
    throw new ConfigError(`${where} must be UTC, an offset like +02:00, or an IANA zone name, got ${JSON.stringify(zone)}`);
  }
  // The wall clock read back by wallClockMs: Date.UTC would read years 1-99 as 1901-1999.
  const offsetAt = (utc: number) => {
    const p: Record<string, number> = {};
    let bc = false;
    for (const { type, value } of format.formatToParts(utc)) {
      if (type === 'era') bc = value === 'BC';
      else p[type] = +value;
    }
    const wall = wallClockMs({ year: bc ? 1 - p.year! : p.year!, month: p.month!, day: p.day!, hour: p.hour!, minute: p.minute!, second: p.second!, millisecond: 0 });
    return wall - Math.floor(utc / 1000) * 1000;
  };
  // Offsets change on the hour at most: remember them per hour of wall-clock time, in a
  // direct-mapped cache (a slot per hour modulo its size: the hours of a year fit).
  const HOUR = 3_600_000;
  const SLOTS = 16_384;
  const hours = new Float64Array(SLOTS).fill(NaN);
  const offsets = new Float64Array(SLOTS);
  return (local) => {
    const hour = Math.floor(local / HOUR);
    const slot = hour & (SLOTS - 1);
    let offset: number;
    if (hours[slot] === hour) offset = offsets[slot]!;
    else {
      // Two passes settle the offset also next to a daylight-saving change.
      offset = offsetAt(local - offsetAt(hour * HOUR));
      hours[slot] = hour;
      offsets[slot] = offset;
    }
    return local - offset;
  };
}
