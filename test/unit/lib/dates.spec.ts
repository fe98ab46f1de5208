import { expect } from 'chai';
import fc from 'fast-check';
import { ConfigError } from '../../../lib/errors';
import { isoDate, isoDateTime, parseIso, patternParser, TimeOutOfRange, validParts, wallClockMs, zoneOf, type TimeParts } from '../../../lib/dates';

const parts = (year: number, month: number, day: number, hour = 0, minute = 0, second = 0, millisecond = 0): TimeParts => ({ year, month, day, hour, minute, second, millisecond });

/** `patternParser` as it runs where code cannot be generated from strings (a CSP, --disallow-code-generation-from-strings). */
function interpretedParser(pattern: string): (text: string) => TimeParts | undefined {
  const real = globalThis.Function;
  globalThis.Function = function () {
    throw new EvalError('Code generation from strings disallowed for this context');
  } as unknown as FunctionConstructor;
  try {
    return patternParser(pattern, 'test');
  } finally {
    globalThis.Function = real;
  }
}

describe('dates', () => {
  it('reads ISO 8601: date alone, time to the minute, second or fraction, T or space, Z or an offset', () => {
    expect(parseIso('2026-03-01')).to.deep.equal(parts(2026, 3, 1));
    expect(parseIso('2026-03-01T10:20')).to.deep.equal(parts(2026, 3, 1, 10, 20));
    expect(parseIso('2026-03-01 10:20:30')).to.deep.equal(parts(2026, 3, 1, 10, 20, 30));
    expect(parseIso('2026-03-01T10:20:30.5Z')).to.deep.equal({ ...parts(2026, 3, 1, 10, 20, 30, 500), offset: 0 });
    expect(parseIso('2026-03-01t10:20:30,123456789z')).to.deep.equal({ ...parts(2026, 3, 1, 10, 20, 30, 123), offset: 0 });
    expect(parseIso('2026-03-01T10:20:30.04+02:30')).to.deep.equal({ ...parts(2026, 3, 1, 10, 20, 30, 40), offset: 150 });
    expect(parseIso('2026-03-01T10:20:30 -0530')).to.deep.equal({ ...parts(2026, 3, 1, 10, 20, 30), offset: -330 });
    expect(parseIso('2026-03-01T10:20:30-03')).to.deep.equal({ ...parts(2026, 3, 1, 10, 20, 30), offset: -180 });
    expect(parseIso('2026-03-01T10:20:30')).not.to.have.property('offset');
    for (const text of ['26-03-01', '2026-3-01', '2026-03-01T10', 'x2026-03-01', '2026-03-01x', '2026-03-01T10:20:30.1234567890', '2026-03-01T10:20:30+2']) {
      expect(parseIso(text), text).to.equal(undefined);
    }
    // Each part's digits and separators, one wrong at a time.
    for (const text of ['2026/03/01', '2026-03/01', '2O26-03-01', '2026-0x-01', '2026-03-0x', '2026-03-01X10:20', '2026-03-01T10:20:x0', '2026-03-01T10:20:5', '2026-03-01T10:20:30.', '2026-03-01T10:20:30,Z', '2026-03-01T10:20:30+0x', '2026-03-01T10:20:30+02x30', '2026-03-01T10:20:30+02:3']) {
      expect(parseIso(text), text).to.equal(undefined);
    }
  });

  it('reads the whitespace a regex \\s matches before the offset, and no other character', () => {
    const spaces = [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0, 0x1680, 0x2000, 0x2005, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff];
    for (const code of spaces) {
      expect(/\s/.test(String.fromCharCode(code)), code.toString(16)).to.equal(true);
      expect(parseIso(`2026-03-01T10:20${String.fromCharCode(code)}Z`), code.toString(16)).to.deep.equal({ ...parts(2026, 3, 1, 10, 20), offset: 0 });
    }
    for (const code of [0x08, 0x0e, 0x1f, 0x85, 0x167f, 0x1fff, 0x200b, 0x2027, 0x202a, 0x205e, 0x2fff, 0xfefe]) {
      expect(/\s/.test(String.fromCharCode(code)), code.toString(16)).to.equal(false);
      expect(parseIso(`2026-03-01T10:20${String.fromCharCode(code)}Z`), code.toString(16)).to.equal(undefined);
    }
  });

  it('reads ISO 8601 exactly as the regular expression that states the format does, on random near-ISO text', () => {
    // The format as one regex (what parseIso ran before its scanner), and what it meant.
    const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;
    const byRegex = (text: string): TimeParts | undefined => {
      const m = ISO.exec(text);
      if (!m) return undefined;
      const read: TimeParts = parts(+m[1]!, +m[2]!, +m[3]!, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0), m[7] ? Math.floor(+m[7].padEnd(3, '0').slice(0, 3)) : 0);
      if (m[8]) {
        const digits = m[8].slice(1).replace(':', '');
        const minutes = +digits.slice(0, 2) * 60 + +(digits.slice(2) || 0);
        read.offset = m[8][0] === '-' ? -minutes : m[8].length === 1 ? 0 : minutes;
      }
      return read;
    };
    const digit = fc.constantFrom(...'0123456789');
    const digits = (min: number, max: number) => fc.array(digit, { minLength: min, maxLength: max }).map((d) => d.join(''));
    const space = fc.constantFrom('', '', ' ', '  ', '\t', '\u00a0', '\u2003', '\ufeff', '\n');
    const piece = fc.oneof(
      fc.tuple(digits(3, 5), fc.constantFrom('-', '/', ''), digits(1, 3), fc.constantFrom('-', ''), digits(1, 3)).map((p) => p.join('')),
      fc.tuple(fc.constantFrom('T', 't', ' ', 'X', ''), digits(1, 3), fc.constantFrom(':', ''), digits(1, 3)).map((p) => p.join('')),
      fc.tuple(fc.constantFrom(':', ''), digits(0, 3)).map((p) => p.join('')),
      fc.tuple(fc.constantFrom('.', ',', ''), digits(0, 11)).map((p) => p.join('')),
      space,
      fc.tuple(fc.constantFrom('Z', 'z', '+', '-', 'Q'), digits(0, 2), fc.constantFrom(':', '', '::'), digits(0, 3)).map((p) => p.join('')),
      fc.string({ maxLength: 2 }),
    );
    // Mostly well-formed: a date, then a time, fraction, space and offset, each maybe bent.
    const text = fc.tuple(
      fc.tuple(digits(4, 4), fc.constant('-'), digits(2, 2), fc.constant('-'), digits(2, 2)).map((p) => p.join('')),
      fc.array(piece, { maxLength: 5 }),
    ).map(([date, rest]) => date + rest.join(''));
    // Sometimes one character changed anywhere, to bend what the pieces keep well-formed.
    const bent = fc.tuple(fc.oneof(text, fc.array(piece, { maxLength: 6 }).map((p) => p.join(''))), fc.option(fc.tuple(fc.nat(30), fc.constantFrom('x', '/', '-', ':', '.', ' ', 'Z', '0', '')), { freq: 3 })).map(
      ([value, change]) => (change && change[0] < value.length ? value.slice(0, change[0]) + change[1] + value.slice(change[0] + 1) : value),
    );
    fc.assert(
      fc.property(bent, (value) => {
        expect(parseIso(value), JSON.stringify(value)).to.deep.equal(byRegex(value));
      }),
      { numRuns: 20_000, seed: 19 },
    );
  });

  for (const [how, parserOf] of [
    ['compiled', (pattern: string) => patternParser(pattern, 'test')],
    ['interpreted', interpretedParser],
  ] as const) {
    it(`reads a pattern of parts and literals, each part 1 to its width in digits (YYYY exactly 4, SSS exactly 3) (${how})`, () => {
      const dmy = parserOf('DD/MM/YYYY HH:mm:ss.SSS');
      expect({ ...dmy('05/04/2026 07:08:09.010')! }).to.deep.equal(parts(2026, 4, 5, 7, 8, 9, 10));
      expect({ ...dmy('5/4/2026 7:8:9.010')! }).to.deep.equal(parts(2026, 4, 5, 7, 8, 9, 10));
      for (const text of ['05/04/2026 07:08:09.01', '05/04/26 07:08:09.010', '05-04-2026 07:08:09.010', '05/04/2026 07:08:09.0100', '05/04/2026 07:08:09.010 ', '/04/2026 07:08:09.010', '05/04/2026 07:08', '']) {
        expect(dmy(text), JSON.stringify(text)).to.equal(undefined);
      }
      const ymd = parserOf('YYYYMMDD');
      expect({ ...ymd('20260405')! }).to.deep.equal(parts(2026, 4, 5));
      expect({ ...ymd('2026045')! }).to.deep.equal(parts(2026, 4, 5));
      expect(ymd('202604')).to.equal(undefined);
      const date = parserOf('MM.DD.YYYY');
      expect({ ...date('12.31.1999')! }).to.deep.equal(parts(1999, 12, 31));
      expect(date('12.31.199a')).to.equal(undefined);
      expect(date('1a.31.1999')).to.equal(undefined);
    });
  }

  it('refuses a pattern without YYYY, MM and DD, naming where', () => {
    for (const pattern of ['MM/DD', 'YYYY-DD', 'YYYY-MM', 'HH:mm']) {
      expect(() => patternParser(pattern, 'fields.t'), pattern).to.throw(ConfigError, `fields.t.format must contain YYYY, MM and DD (or be iso, epoch-s, epoch-ms), got ${JSON.stringify(pattern)}`);
    }
    expect(() => interpretedParser('MM/DD')).to.throw(ConfigError, 'must contain YYYY, MM and DD');
  });

  it('passes any error but an EvalError from compiling a pattern on', () => {
    const real = globalThis.Function;
    globalThis.Function = function () {
      throw new RangeError('out of memory');
    } as unknown as FunctionConstructor;
    try {
      expect(() => patternParser('YYYY-MM-DD', 'test')).to.throw(RangeError, 'out of memory');
    } finally {
      globalThis.Function = real;
    }
  });

  it('tells real calendar dates and times of day from the rest, leap days included', () => {
    expect(validParts(parts(2026, 1, 31, 23, 59, 59))).to.equal(true);
    expect(validParts(parts(2026, 12, 1))).to.equal(true);
    expect(validParts(parts(2026, 4, 30))).to.equal(true);
    for (const p of [parts(2026, 0, 1), parts(2026, 13, 1), parts(2026, 1, 0), parts(2026, 1, 32), parts(2026, 4, 31), parts(2026, 1, 1, 24), parts(2026, 1, 1, 0, 60), parts(2026, 1, 1, 0, 0, 60)]) {
      expect(validParts(p), JSON.stringify(p)).to.equal(false);
    }
    expect(validParts(parts(2024, 2, 29))).to.equal(true);
    expect(validParts(parts(2000, 2, 29))).to.equal(true);
    expect(validParts(parts(2026, 2, 29))).to.equal(false);
    expect(validParts(parts(1900, 2, 29))).to.equal(false);
    expect(validParts(parts(2024, 3, 32))).to.equal(false);
  });

  it('counts wall-clock milliseconds as Date.UTC does, every month, leap years, before 1970 and years 0-99', () => {
    const samples: TimeParts[] = [parts(1970, 1, 1), parts(2026, 3, 1, 10, 20, 30, 400), parts(1969, 12, 31, 23, 59, 59, 999), parts(2000, 2, 29), parts(1600, 3, 1), parts(1, 1, 1), parts(99, 12, 31), parts(-1, 6, 15)];
    for (let month = 1; month <= 12; month++) samples.push(parts(2024, month, 28, 12), parts(2023, month, 1), parts(2100, month, 15));
    for (const p of samples) {
      const utc = new Date(0);
      utc.setUTCFullYear(p.year, p.month - 1, p.day);
      utc.setUTCHours(p.hour, p.minute, p.second, p.millisecond);
      expect(wallClockMs(p), JSON.stringify(p)).to.equal(utc.getTime());
    }
  });

  it('renders ISO text as toISOString does, on the fast range, past it and before 1970, twice from its caches', () => {
    const times = [0, 1, 999, 1000, 59_999, 3_599_999, 86_399_999, 86_400_000, 1_772_359_200_123, 1_772_359_200_123 + 4096 * 86_400_000, 1_772_359_200_123 + 8192_000, 253_402_300_799_999, 253_402_300_800_000, -1, -86_400_001, 8.64e15, -8.64e15];
    for (const pass of [1, 2]) {
      for (const ms of times) {
        const iso = new Date(ms).toISOString();
        expect(isoDateTime(ms), `${ms} pass ${pass}`).to.equal(iso);
        expect(isoDate(ms), `${ms} pass ${pass}`).to.equal(iso.slice(0, iso.indexOf('T')));
      }
    }
  });

  it('turns wall-clock times of years 0 to 99 in an IANA zone into UTC (local mean time before zones had offsets)', () => {
    const paris = zoneOf('Europe/Paris', 'f');
    const newYork = zoneOf('America/New_York', 'f');
    for (const year of [0, 1, 99, 100]) {
      const local = wallClockMs(parts(year, 6, 1, 12));
      const date = `${String(year).padStart(4, '0')}-06-01`;
      expect(isoDateTime(paris(local)), `${year}`).to.equal(`${date}T11:50:39.000Z`);
      expect(isoDateTime(newYork(local)), `${year}`).to.equal(`${date}T16:56:02.000Z`);
    }
  });

  it('refuses times a Date cannot hold', () => {
    for (const ms of [8.64e15 + 1, -8.64e15 - 1, NaN, Infinity]) {
      expect(() => isoDateTime(ms), String(ms)).to.throw(TimeOutOfRange, `time out of range: ${ms}`);
      expect(() => isoDate(ms), String(ms)).to.throw(TimeOutOfRange, `time out of range: ${ms}`);
    }
  });

  it('turns wall-clock times in UTC, a fixed offset or an IANA zone into UTC, across daylight saving', () => {
    const local = Date.UTC(2026, 2, 29, 12, 0);
    expect(zoneOf('UTC', 'f')(local)).to.equal(local);
    expect(zoneOf('Z', 'f')(local)).to.equal(local);
    expect(zoneOf('+02:00', 'f')(local)).to.equal(local - 2 * 3_600_000);
    expect(zoneOf('-0530', 'f')(local)).to.equal(local + 330 * 60_000);
    const paris = zoneOf('Europe/Paris', 'f');
    // Winter (+01:00), summer (+02:00) a day apart, and the same hour again from the cache.
    expect(new Date(paris(Date.UTC(2026, 2, 28, 12, 30))).toISOString()).to.equal('2026-03-28T11:30:00.000Z');
    expect(new Date(paris(Date.UTC(2026, 2, 29, 12, 30))).toISOString()).to.equal('2026-03-29T10:30:00.000Z');
    expect(new Date(paris(Date.UTC(2026, 2, 29, 12, 45))).toISOString()).to.equal('2026-03-29T10:45:00.000Z');
    // Next to the change: 01:30 is still winter, 03:30 already summer.
    expect(new Date(paris(Date.UTC(2026, 2, 29, 1, 30))).toISOString()).to.equal('2026-03-29T00:30:00.000Z');
    expect(new Date(paris(Date.UTC(2026, 2, 29, 3, 30))).toISOString()).to.equal('2026-03-29T01:30:00.000Z');
    expect(new Date(zoneOf('America/New_York', 'f')(Date.UTC(2026, 0, 15, 9, 0, 5, 250))).toISOString()).to.equal('2026-01-15T14:00:05.250Z');
    // An hour before Samoa skipped 30 December 2011 (-10:00 to +14:00): still -10:00, though its 1970 offset (-11:00) would cross the change.
    expect(new Date(zoneOf('Pacific/Apia', 'f')(Date.UTC(2011, 11, 29, 23, 30))).toISOString()).to.equal('2011-12-30T09:30:00.000Z');
    for (const zone of ['Mars/Olympus', '+2:00', 'utc+1', 'UTC+02:00', '+02:00x']) {
      expect(() => zoneOf(zone, 'fields.t.timeZone'), zone).to.throw(ConfigError, `fields.t.timeZone must be UTC, an offset like +02:00, or an IANA zone name, got ${JSON.stringify(zone)}`);
    }
  });
});
