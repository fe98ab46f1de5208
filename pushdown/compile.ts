import { createHash } from 'node:crypto';
import Ajv, { type AnySchema } from 'ajv';
import addFormats from 'ajv-formats';
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_RECORD_BYTES } from '../lib/limits';
import type { FieldRule, VendorMapping } from '../operators/normalize';
import type { PushdownPlan } from './plan';

/** A column of the target table, as `system.columns` (or `DESCRIBE`) gives it. */
export interface PushdownColumn {
  readonly name: string;
  /** Its ClickHouse type (`LowCardinality(String)`, `Decimal(18, 4)`, `DateTime64(3, 'UTC')`). */
  readonly type: string;
  /** `system.columns.default_kind`: `''`, `DEFAULT`, `MATERIALIZED`, `ALIAS`, `EPHEMERAL`. @default '' */
  readonly defaultKind?: string;
}

export interface PlanPushdownOptions {
  /** The vendor's name: the mapping's key in `normalize`'s `mappings`, stamped into `vendorField`. */
  readonly vendor: string;
  /** The vendor's mapping, as `normalize` takes it. */
  readonly mapping: VendorMapping;
  /** As `normalize` takes it. @default 'vendor' */
  readonly vendorField?: string | false;
  /** The JSON Schema given to `validate` (with its default ajv), if records are validated. */
  readonly schema?: AnySchema;
  /** As `validate` takes it. @default 'full' */
  readonly formats?: 'full' | 'fast';
  /** The target table's columns. */
  readonly columns: readonly PushdownColumn[];
  /** The record limits of the JS path (`fromFiles`): longer or deeper lines are left to it. */
  readonly limits?: { readonly maxRecordBytes?: number; readonly maxDepth?: number };
}

/**
 * Compiles a vendor mapping (`normalize`) and a JSON Schema (`validate`) into ClickHouse SQL
 * over one NDJSON line (`line String`): an expression per output column, and `accepted`, a
 * boolean that is 1 only when the JS path (parse → normalize → validate) would store the
 * record with exactly those values.
 *
 * The SQL is conservative: a line it cannot decide (non-ASCII or control characters,
 * escapes, duplicate keys, numbers JS would print otherwise, values out of a column's
 * range, …) is not accepted and goes through the JS path, which stores or dead-letters it.
 * What cannot be translated at all (a `compute` function, a `check` function, a schema
 * keyword without an exact translation) makes the plan not pushable, with a reason each.
 *
 * Time zones are read from the engine's tz database; the JS path reads the runtime's (ICU).
 * They agree for zones whose rules the two databases share (the property test checks
 * Europe/Paris across its daylight-saving changes).
 *
 * ## Example
 * ```ts
 * import { planPushdown } from 'tributary';
 * const plan = planPushdown({ vendor: 'globetrek', mapping: mappings.globetrek, schema: bookingSchema, columns });
 * if (plan.pushable) sql = `INSERT INTO bookings (${plan.columns.map((c) => c.name)}) SELECT ${plan.columns.map((c) => c.sql)} FROM t WHERE ${plan.accepted}`;
 * else console.log(plan.reasons);
 * ```
 */
export function planPushdown(options: PlanPushdownOptions): PushdownPlan {
  const reasons: string[] = [];
  bodies.clear();
  try {
    const compiler = new Compiler(options, reasons);
    const result = compiler.compile();
    if (reasons.length > 0 || !result) return { pushable: false, reasons };
    return {
      pushable: true,
      input: 'ndjson',
      columns: result.columns.map((c) => ({ name: c.name, sql: render(c.sql) })),
      accepted: render(and(result.conditions.map((c) => c.sql))),
      conditions: result.conditions.map((c) => ({ name: c.name, sql: render(c.sql) })),
      select: layered([['__pd_accepted', and(result.conditions.map((c) => c.sql))], ...result.columns.map((c, i): [string, string] => [`__pd_c${i}`, c.sql])]),
    };
  } finally {
    bodies.clear();
  }
}

/** Subexpressions by their alias, while a plan is compiled. */
const bodies = new Map<string, string>();

/**
 * `sql` as a named subexpression: computed once per row, however often it is used. The name
 * is a hash of the text, so the same subexpression is always the same node.
 */
function named(sql: string): string {
  if (/^(?:[\w.]+|'[^'\\]*')$/.test(sql) || /^\u0001\w+\u0002$/.test(sql)) return sql;
  const alias = createHash('sha256').update(sql).digest('hex').slice(0, 16);
  bodies.set(alias, sql);
  return `\u0001${alias}\u0002`;
}

const MARKER = /\u0001(\w+)\u0002/g;

/** The named subexpressions `sqls` use, in dependency levels: a level's bodies use only the levels before it. */
function levelsOf(sqls: string[]): string[][] {
  const level = new Map<string, number>();
  const visit = (alias: string): number => {
    const known = level.get(alias);
    if (known !== undefined) return known;
    let depth = 1;
    for (const [, dep] of bodies.get(alias)!.matchAll(MARKER)) depth = Math.max(depth, visit(dep!) + 1);
    level.set(alias, depth);
    return depth;
  };
  for (const sql of sqls) for (const [, alias] of sql.matchAll(MARKER)) visit(alias!);
  const levels: string[][] = [];
  for (const [alias, l] of level) (levels[l - 1] ??= []).push(alias);
  return levels;
}

/**
 * An expression with its named subexpressions bound once each, as nested `let`s: each
 * level a tuple passed to a one-element `arrayMap` whose lambda sees the levels before it
 * (`tupleElement(__pd_s1, 3)`). Writing a shared subexpression out at each use (or by
 * alias, which the engine expands) made trees the engine took seconds to analyse; these
 * stay linear in the mapping's size. (`layered` does the same work in less time.)
 */
function render(sql: string): string {
  const levels = levelsOf([sql]);
  const slot = new Map<string, string>();
  levels.forEach((members, l) => members.forEach((alias, i) => slot.set(alias, `tupleElement(__pd_s${l + 1}, ${i + 1})`)));
  const bound = (text: string) => text.replace(MARKER, (_, alias: string) => slot.get(alias)!);
  let out = bound(sql);
  for (let l = levels.length - 1; l >= 0; l--) {
    out = `arrayMap(__pd_s${l + 1} -> ${out}, [tuple(${levels[l]!.map((alias) => bound(bodies.get(alias)!)).join(', ')})])[1]`;
  }
  return out;
}

/**
 * `outputs` (name → expression) as one SELECT over `__pd_input`: each level of named
 * subexpressions a column of its own subquery, read by name in the levels above. Every
 * part is computed once per row, and the engine reads plain columns instead of building a
 * tuple and an array per level and row as `render`'s lets do.
 */
function layered(outputs: [string, string][]): string {
  const levels = levelsOf(outputs.map(([, sql]) => sql));
  const bound = (text: string) => text.replace(MARKER, (_, alias: string) => `__pd_${alias}`);
  let from = '__pd_input';
  for (const members of levels) from = `(SELECT *, ${members.map((alias) => `${bound(bodies.get(alias)!)} AS __pd_${alias}`).join(', ')} FROM ${from})`;
  return `SELECT *, ${outputs.map(([name, sql]) => `${bound(sql)} AS ${name}`).join(', ')} FROM ${from}`;
}

/** A named part of `accepted`. */
interface Condition {
  name: string;
  sql: string;
}

/** A mapped value, by the JS type it has in the normalized record. */
type Kind = 'string' | 'decimal' | 'integer' | 'boolean' | 'datetime' | 'date';

interface Value {
  kind: Kind;
  /** string/decimal: String text; integer: Int64; boolean: UInt8; datetime: Int64 ms since the epoch (UTC); date: Int64 days since the epoch. */
  sql: string;
}

/** One output field of the normalized record. */
interface FieldPlan {
  name: string;
  /** The field is in the normalized record. */
  present: string;
  /** No issue: the record passes this field's rule. */
  ok: string;
  /** Its value where present and ok; undefined when the field is never present. */
  value: Value | undefined;
}

/** Later than any time we accept: 2200-01-01T00:00:00Z. */
const MAX_MS = 7_258_118_400_000;
const DAY_MS = 86_400_000;
const INDEX = /^(?:0|[1-9]\d*)$/;
/** Keys JS reads from prototypes instead of the record: a path through them is not translated. */
const INHERITED = new Set([...Object.getOwnPropertyNames(Object.prototype), ...Object.getOwnPropertyNames(Array.prototype), ...Object.getOwnPropertyNames(String.prototype)]);

class Compiler {
  readonly #options: PlanPushdownOptions;
  readonly #reasons: string[];
  readonly #where: string;
  /** Guards of the whole record (raw JSON reads), ANDed into `accepted`. */
  readonly #guards: Condition[] = [];

  constructor(options: PlanPushdownOptions, reasons: string[]) {
    this.#options = options;
    this.#reasons = reasons;
    this.#where = `mappings.${options.vendor}`;
  }

  #refuse(where: string, why: string): void {
    this.#reasons.push(`${where}: ${why}`);
  }

  compile(): { columns: { name: string; sql: string }[]; conditions: Condition[] } | undefined {
    const { mapping, vendor } = this.#options;
    if (!mapping?.fields || typeof mapping.fields !== 'object') {
      this.#refuse(this.#where, 'fields must be an object');
      return undefined;
    }
    const fields: FieldPlan[] = [];
    for (const [name, ruleOrPath] of Object.entries(mapping.fields)) {
      const field = this.#field(name, typeof ruleOrPath === 'string' ? { from: ruleOrPath } : ruleOrPath, `${this.#where}.fields.${name}`);
      if (field) fields.push(field);
    }
    const vendorField = this.#options.vendorField ?? 'vendor';
    if (vendorField !== false && !Object.hasOwn(mapping.fields, vendorField)) {
      if (!ascii(vendor)) this.#refuse(`${this.#where}`, 'the vendor name is not ASCII');
      fields.push({ name: vendorField, present: '1', ok: '1', value: { kind: 'string', sql: lit(vendor) } });
    }
    if (mapping.check !== undefined) this.#refuse(`${this.#where}.check`, 'check is a JS function (state it as checks)');
    const checks = this.#checks(fields);
    const schema = this.#schema(fields);
    const columns = this.#columns(fields);
    if (this.#reasons.length > 0) return undefined;
    const conditions = [
      { name: 'line', sql: this.#lineGuards() },
      ...this.#guards,
      ...fields.map((f) => ({ name: `fields.${f.name}`, sql: f.ok })),
      ...checks,
      ...schema,
      ...columns.guards,
    ].filter((c) => c.sql !== '1');
    return { columns: columns.columns, conditions };
  }

  /** The line is one JSON object that JSON.parse reads as the engine does, within the JS path's limits. */
  #lineGuards(): string {
    const maxBytes = this.#options.limits?.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    const maxDepth = this.#options.limits?.maxDepth ?? DEFAULT_MAX_DEPTH;
    return and([
      // Printable ASCII only: no BOM, no invalid UTF-8, no tabs; strings hold only what JSON.parse and the engine read alike.
      // One '\r' may end the line (a CRLF file): whitespace after the value to both parsers.
      `isValidUTF8(line)`,
      `length(line) = lengthUTF8(line)`,
      `NOT match(if(endsWith(line, '\\r'), substring(line, 1, length(line) - 1), line), '[\\\\x00-\\\\x1F\\\\x7F]')`,
      // No escapes: a string's text is the text between its quotes, and keys cannot be spelled two ways.
      `position(line, '\\\\') = 0`,
      `length(line) < ${maxBytes}`,
      // No more brackets than levels allowed: cannot nest too deep.
      `countSubstrings(line, '{') + countSubstrings(line, '[') <= ${maxDepth}`,
      `isValidJSON(line)`,
      `startsWith(trimLeft(line), '{')`,
      // JSON.parse keeps the last of duplicate keys, the engine the first.
      distinctKeys('line'),
    ]);
  }

  #field(name: string, rule: FieldRule, where: string): FieldPlan | undefined {
    if (rule === null || typeof rule !== 'object') {
      this.#refuse(where, 'not a field rule');
      return undefined;
    }
    if (rule.compute !== undefined) {
      this.#refuse(where, 'compute is a JS function');
      return undefined;
    }
    if (rule.items !== undefined || rule.type === 'array') {
      this.#refuse(where, 'items (arrays of records) are not translated');
      return undefined;
    }
    let raw: { present: string; raw: string };
    if (rule.value !== undefined) {
      if (typeof rule.value === 'string' && (!ascii(rule.value) || /["\\]/.test(rule.value))) {
        this.#refuse(`${where}.value`, 'a string that is not printable ASCII without quotes or backslashes is not translated');
        return undefined;
      }
      const text = JSON.stringify(rule.value);
      if (text === undefined || (typeof rule.value === 'number' && !Number.isSafeInteger(rule.value))) {
        this.#refuse(`${where}.value`, 'only strings, booleans and safe integers are translated');
        return undefined;
      }
      raw = { present: rule.value === '' ? '0' : '1', raw: lit(text) };
    } else {
      const froms = [rule.from ?? name].flat().map(String);
      const reads = froms.map((path) => this.#read(path.split('.'), `${where}.from`));
      if (reads.some((r) => r === undefined)) return undefined;
      raw = chooseFirst(reads as { present: string; raw: string }[]);
    }
    const coerced = this.#coerce(rule, raw.raw, where);
    if (!coerced) return undefined;
    let fallback: Value | undefined;
    if (rule.default !== undefined) {
      fallback = this.#constant(rule.default, `${where}.default`);
      if (!fallback) return undefined;
      if (fallback.kind !== coerced.value.kind && !(fallback.kind === 'string' && coerced.value.kind === 'decimal')) {
        this.#refuse(`${where}.default`, `a ${fallback.kind} default for a ${coerced.value.kind} field is not translated`);
        return undefined;
      }
    }
    const required = rule.required ?? false;
    return {
      name,
      present: fallback ? '1' : raw.present,
      ok: named(`if(${raw.present}, ${coerced.ok}, ${fallback || !required ? '1' : '0'})`),
      value: { kind: coerced.value.kind, sql: named(fallback ? `if(${raw.present}, ${coerced.value.sql}, ${fallback.sql})` : coerced.value.sql) },
    };
  }

  /** A default, stored as given (uncoerced). */
  #constant(value: unknown, where: string): Value | undefined {
    if (typeof value === 'string') {
      if (!ascii(value)) {
        this.#refuse(where, 'not ASCII');
        return undefined;
      }
      return { kind: 'string', sql: lit(value) };
    }
    if (typeof value === 'number' && Number.isSafeInteger(value)) return { kind: 'integer', sql: `toInt64(${value})` };
    if (typeof value === 'boolean') return { kind: 'boolean', sql: value ? '1' : '0' };
    this.#refuse(where, 'only string, boolean and safe integer defaults are translated');
    return undefined;
  }

  /**
   * The raw JSON text at a dotted path ('' when JS reads undefined), walking objects one
   * level at a time as JS does (`t !== null && typeof t === 'object' ? t[key] : undefined`).
   */
  #read(keys: string[], where: string): { present: string; raw: string } | undefined {
    for (const key of keys) {
      if (INHERITED.has(key) || key === '__proto__') {
        this.#refuse(where, `the key '${key}' is read from a prototype in JS`);
        return undefined;
      }
    }
    let raw = rawAt('line', keys[0]!);
    for (const key of keys.slice(1)) {
      const parent = raw;
      this.#guards.push({ name: `${where}: ${keys.join('.')}`, sql: `if(startsWith(${parent}, '{'), ${distinctKeys(parent)}, 1)` });
      // An array parent: JS indexes it with a key like '0' (`pax.0`), and reads nothing else of it (other keys are refused above).
      const index = INDEX.test(key) && Number(key) < 2 ** 31 ? `, startsWith(${parent}, '['), JSONExtractRaw(${parent}, ${Number(key) + 1})` : '';
      raw = named(`multiIf(startsWith(${parent}, '{'), ${rawAt(parent, key)}${index}, '')`);
    }
    return { present: named(`(${raw} NOT IN ('', 'null', '""'))`), raw };
  }

  /** The coercion of the field's rule, on the raw JSON text of a present value. */
  #coerce(rule: FieldRule, raw: string, where: string): { ok: string; value: Value } | undefined {
    const str = named(`substring(${raw}, 2, length(${raw}) - 2)`);
    const isString = named(`startsWith(${raw}, '"')`);
    const isNumber = named(`match(${raw}, '^-?[0-9]')`);
    const isBool = named(`(${raw} IN ('true', 'false'))`);
    const numberText = named(`(${isNumber} AND ${jsNumberText(raw)})`);
    /** `String(value)` for a value that is not an object; '' where undecidable (then refused). */
    const text = named(`multiIf(${isString}, ${str}, ${isBool}, ${raw}, ${numberText}, ${raw}, '')`);
    const textOk = named(`(${isString} OR ${isBool} OR ${numberText})`);
    if (rule.values !== undefined) {
      const entries = Object.entries(rule.values ?? {});
      const kinds = new Set(entries.map(([, v]) => (typeof v === 'string' ? 'string' : typeof v === 'boolean' ? 'boolean' : Number.isSafeInteger(v) ? 'integer' : 'other')));
      if (kinds.size !== 1 || kinds.has('other')) {
        this.#refuse(`${where}.values`, 'only maps to strings, booleans or safe integers, one kind per map, are translated');
        return undefined;
      }
      const kind = [...kinds][0] as Kind;
      if (entries.some(([, v]) => typeof v === 'string' && !ascii(v))) {
        this.#refuse(`${where}.values`, 'a value is not ASCII');
        return undefined;
      }
      const key = named(`if(${isString}, trimBoth(${str}), ${text})`);
      const keys = `[${entries.map(([k]) => lit(k)).join(', ')}]`;
      const vals = `[${entries.map(([, v]) => (kind === 'string' ? lit(v as string) : kind === 'boolean' ? (v ? '1' : '0') : `toInt64(${v as number})`)).join(', ')}]`;
      const fallback = kind === 'string' ? "''" : kind === 'boolean' ? '0' : 'toInt64(0)';
      return { ok: `(${textOk} AND has(${keys}, ${key}))`, value: { kind, sql: `transform(${key}, ${keys}, ${vals}, ${fallback})` } };
    }
    const type = rule.type ?? 'string';
    switch (type) {
      case 'string': {
        const trimmed = named(`trimBoth(${text})`);
        const cased = rule.case === 'upper' ? `upper(${trimmed})` : rule.case === 'lower' ? `lower(${trimmed})` : trimmed;
        if (rule.case !== undefined && rule.case !== 'upper' && rule.case !== 'lower') {
          this.#refuse(`${where}.case`, `unknown case ${JSON.stringify(rule.case)}`);
          return undefined;
        }
        return { ok: textOk, value: { kind: 'string', sql: cased } };
      }
      case 'integer':
      case 'number': {
        // Number(text.trim()) for plain integers of at most 15 digits (exact in a double).
        const t = named(`if(${isString}, trimBoth(${str}), ${raw})`);
        return {
          ok: `((${isString} AND match(${t}, '^[+-]?[0-9]{1,15}$')) OR match(${raw}, '^-?[0-9]{1,15}$'))`,
          value: { kind: 'integer', sql: `toInt64OrZero(replaceOne(${t}, '+', ''))` },
        };
      }
      case 'boolean': {
        const t = named(`lower(trimBoth(${text}))`);
        return {
          ok: `(${textOk} AND ${t} IN ('true', '1', 'yes', 'y', 'false', '0', 'no', 'n'))`,
          value: { kind: 'boolean', sql: `if(${t} IN ('true', '1', 'yes', 'y'), 1, 0)` },
        };
      }
      case 'decimal':
        return this.#decimal(rule, raw, isString, str, isNumber, where);
      case 'datetime':
      case 'date':
        return this.#time(type, rule, raw, isString, str, isNumber, where);
      default:
        this.#refuse(`${where}.type`, `unknown type ${JSON.stringify(type)}`);
        return undefined;
    }
  }

  #decimal(rule: FieldRule, raw: string, isString: string, str: string, isNumber: string, where: string): { ok: string; value: Value } | undefined {
    const minorUnits = rule.minorUnits ?? 0;
    if (!Number.isInteger(minorUnits) || minorUnits < 0 || minorUnits > 18) {
      this.#refuse(`${where}.minorUnits`, 'must be an integer from 0 to 18');
      return undefined;
    }
    let fromString = named(`trimBoth(${str})`);
    if (rule.decimalSeparator === ',') {
      fromString = named(`if(position(${fromString}, '.') = 0, replaceOne(${fromString}, ',', '.'), replaceOne(replaceAll(${fromString}, '.', ''), ',', '.'))`);
    }
    // A number's text: toFixed(0) for an integer, String(value) otherwise; equal to the raw text within jsNumberText.
    const numberText = named(`(${isNumber} AND ${jsNumberText(raw)})`);
    const x = named(`multiIf(${isString}, ${fromString}, ${numberText}, ${raw}, '')`);
    const xOk = named(`(${isString} OR ${numberText})`);
    const groups = named(`extractGroups(${x}, '^([+-]?)([0-9]+)(?:\\\\.([0-9]+))?$')`);
    // match(x, <the same pattern without groups>): extractGroups gives [] when the pattern does not match.
    const matches = named(`notEmpty(${groups})`);
    const sign = named(`if(${groups}[1] = '-', '-', '')`);
    const whole = named(`${groups}[2]`);
    const fraction = named(`${groups}[3]`);
    const stripped = (whole: string) => `replaceRegexpOne(${whole}, '^0+([0-9])', '\\\\1')`;
    let sql: string;
    let ok: string;
    if (minorUnits === 0) {
      const canonical = `match(${x}, '^-?(?:0|[1-9][0-9]*)(?:\\\\.[0-9]+)?$')`;
      const rebuilt = `concat(${sign}, ${stripped(whole)}, if(${fraction} = '', '', concat('.', ${fraction})))`;
      sql = named(`if(${canonical}, ${x}, ${rebuilt})`);
      ok = `(${xOk} AND ${matches})`;
    } else {
      const padded = named(`leftPad(${whole}, greatest(length(${whole}), ${minorUnits + 1}), '0')`);
      sql = named(`concat(${sign}, ${stripped(`substring(${padded}, 1, length(${padded}) - ${minorUnits})`)}, '.', substring(${padded}, length(${padded}) - ${minorUnits - 1}))`);
      ok = `(${xOk} AND ${matches} AND ${fraction} = '')`;
    }
    return { ok, value: { kind: 'decimal', sql } };
  }

  #time(type: 'datetime' | 'date', rule: FieldRule, raw: string, isString: string, str: string, isNumber: string, where: string): { ok: string; value: Value } | undefined {
    const format = rule.format ?? 'iso';
    const zone = rule.timeZone ?? 'UTC';
    const day = (ms: string) => `intDiv(${ms}, ${DAY_MS})`;
    const inRange = (ms: string) => `(${ms} >= 0 AND ${ms} < ${MAX_MS})`;
    if (format === 'epoch-s' || format === 'epoch-ms') {
      const scale = format === 'epoch-s' ? 1000 : 1;
      const t = named(`if(${isString}, trimBoth(${str}), ${raw})`);
      const ms = named(`(toInt64OrZero(${t}) * ${scale})`);
      return {
        ok: `((${isString} OR ${isNumber}) AND match(${t}, '^[0-9]{1,15}$') AND ${inRange(ms)})`,
        value: type === 'date' ? { kind: 'date', sql: day(ms) } : { kind: 'datetime', sql: ms },
      };
    }
    let pattern: string;
    /** Group of each part (year … millisecond, offset), 0 when the format has none. */
    let group: number[];
    if (format === 'iso') {
      pattern = '(?i)^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?[ ]*(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$';
      group = [1, 2, 3, 4, 5, 6, 7, 8];
    } else {
      const compiled = this.#pattern(format, `${where}.format`);
      if (!compiled) return undefined;
      ({ pattern, group } = compiled);
    }
    const text = named(`trimBoth(${str})`);
    const g = named(`extractGroups(${text}, ${lit(pattern)})`);
    const part = (i: number) => (group[i] ? named(`toInt64OrZero(${g}[${group[i]}])`) : '0');
    const [year, month, dayOfMonth, hour, minute, second] = [0, 1, 2, 3, 4, 5].map(part) as [string, string, string, string, string, string];
    const millis = group[6] ? named(`toInt64OrZero(substring(rightPad(${g}[${group[6]}], 3, '0'), 1, 3))`) : '0';
    const offsetText = group[7] ? named(`${g}[${group[7]}]`) : "''";
    const leap = `(${year} % 4 = 0 AND (${year} % 100 != 0 OR ${year} % 400 = 0))`;
    const dim = `(arrayElement([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], ${month}) + if(${month} = 2 AND ${leap}, 1, 0))`;
    const valid = named(`(${month} BETWEEN 1 AND 12 AND ${dayOfMonth} >= 1 AND ${dayOfMonth} <= ${dim} AND ${hour} <= 23 AND ${minute} <= 59 AND ${second} <= 59 AND ${year} BETWEEN 1971 AND 2199)`);
    const days = named(`toInt64(makeDate32(if(${valid}, ${year}, 1971), if(${valid}, ${month}, 1), if(${valid}, ${dayOfMonth}, 1)))`);
    const local = named(`(${days} * ${DAY_MS} + ${hour} * 3600000 + ${minute} * 60000 + ${second} * 1000 + ${millis})`);
    const offsetDigits = named(`replaceOne(substring(${offsetText}, 2), ':', '')`);
    const offsetMinutes = named(`if(upper(${offsetText}) = 'Z', 0, if(startsWith(${offsetText}, '-'), -1, 1) * (toInt64OrZero(substring(${offsetDigits}, 1, 2)) * 60 + toInt64OrZero(substring(${offsetDigits}, 3))))`);
    const zoned = this.#zone(zone, local, `${where}.timeZone`);
    if (!zoned) return undefined;
    const utc = named(`if(${offsetText} != '', ${local} - ${offsetMinutes} * 60000, ${zoned.utc})`);
    // match(text, pattern), the pattern has groups: extractGroups gives [] when it does not match.
    const matched = `notEmpty(${g})`;
    const ok = `(${isString} AND ${matched} AND ${valid} AND (${offsetText} != '' OR ${zoned.ok}) AND ${inRange(utc)})`;
    if (type === 'datetime') return { ok, value: { kind: 'datetime', sql: utc } };
    // A calendar date without an offset and at midnight stays the day the vendor wrote.
    const localDay = `(${offsetText} = '' AND ${hour} = 0 AND ${minute} = 0)`;
    return { ok, value: { kind: 'date', sql: `if(${localDay}, ${day(local)}, ${day(utc)})` } };
  }

  /** Wall-clock time in `zone` to UTC, as normalize's zoneOf does it (two offset lookups from the hour). */
  #zone(zone: string, local: string, where: string): { utc: string; ok: string } | undefined {
    if (zone === 'UTC' || zone === 'Z') return { utc: local, ok: '1' };
    const fixed = /^([+-])(\d{2}):?(\d{2})$/.exec(zone);
    if (fixed) {
      const minutes = (fixed[1] === '-' ? -1 : 1) * (Number(fixed[2]) * 60 + Number(fixed[3]));
      return { utc: `(${local} - ${minutes * 60000})`, ok: '1' };
    }
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: zone });
    } catch {
      this.#refuse(where, `unknown time zone ${JSON.stringify(zone)}`);
      return undefined;
    }
    if (!/^[A-Za-z_]+(?:\/[A-Za-z0-9_+-]+)*$/.test(zone)) {
      this.#refuse(where, `time zone name ${JSON.stringify(zone)} is not translated`);
      return undefined;
    }
    const offsetAt = (seconds: string) => named(`toInt64(timeZoneOffset(toDateTime(toUInt32(least(greatest(${seconds}, 0), 4294967295)), ${lit(zone)})))`);
    const hourStart = named(`(intDiv(${local}, 3600000) * 3600)`);
    const first = offsetAt(hourStart);
    const second = offsetAt(`intDiv(${local} - ${first} * 1000, 1000)`);
    // normalize remembers the offset per wall-clock hour: only where it is the same all hour long is the result independent of record order.
    const endOfHour = offsetAt(`${hourStart} + 3599 - ${first}`);
    const startOfHour = offsetAt(`${hourStart} - ${first}`);
    return { utc: `(${local} - ${second} * 1000)`, ok: `(${startOfHour} = ${endOfHour} AND ${local} >= ${DAY_MS})` };
  }

  /** `DD/MM/YYYY HH:mm` and the like as an RE2 pattern matching exactly what normalize's scanner accepts. */
  #pattern(format: string, where: string): { pattern: string; group: number[] } | undefined {
    const order = ['YYYY', 'MM', 'DD', 'HH', 'mm', 'ss', 'SSS'];
    const steps: { token?: string; char?: string }[] = [];
    for (let i = 0; i < format.length; ) {
      const token = ['YYYY', 'SSS', 'MM', 'DD', 'HH', 'mm', 'ss'].find((t) => format.startsWith(t, i));
      if (token) {
        steps.push({ token });
        i += token.length;
      } else {
        steps.push({ char: format[i]! });
        i++;
      }
    }
    const tokens = steps.filter((s) => s.token).map((s) => s.token!);
    if (!['YYYY', 'MM', 'DD'].every((t) => tokens.includes(t))) {
      this.#refuse(where, 'must contain YYYY, MM and DD');
      return undefined;
    }
    if (new Set(tokens).size !== tokens.length) {
      this.#refuse(where, 'a part given twice is not translated');
      return undefined;
    }
    if (steps.some((s) => s.char !== undefined && !/^[ -~]$/.test(s.char))) {
      this.#refuse(where, 'a literal that is not printable ASCII is not translated');
      return undefined;
    }
    if (steps.some((s) => s.char !== undefined && /\d/.test(s.char))) {
      this.#refuse(where, 'a digit as a literal is not translated');
      return undefined;
    }
    const group = new Array<number>(8).fill(0);
    let pattern = '^';
    steps.forEach((step, i) => {
      if (step.char !== undefined) {
        pattern += /[A-Za-z ]/.test(step.char) ? step.char : `\\x{${step.char.charCodeAt(0).toString(16)}}`;
        return;
      }
      const token = step.token!;
      group[order.indexOf(token)] = group.filter((g) => g > 0).length + 1;
      if (token === 'YYYY') pattern += '([0-9]{4})';
      else if (token === 'SSS') pattern += '([0-9]{3})';
      // The scanner takes two digits when it can: followed by another part, one digit fails anyway.
      else pattern += steps[i + 1]?.token ? '([0-9]{2})' : '([0-9]{1,2})';
    });
    return { pattern: pattern + '$', group };
  }

  /** The declarative vendor checks: each record they apply to must satisfy them. */
  #checks(fields: FieldPlan[]): Condition[] {
    const checks = this.#options.mapping.checks ?? [];
    const byName = new Map(fields.map((f) => [f.name, f]));
    const out: Condition[] = [];
    checks.forEach((check, i) => {
      const where = `${this.#where}.checks[${i}]`;
      const equals = (name: string, expected: unknown, at: string): string | undefined => {
        const field = byName.get(name);
        if (!field?.value) return '0';
        const literal = this.#literalFor(field.value, expected, at);
        return literal === undefined ? undefined : literal === false ? '0' : `(${field.present} AND ${field.value.sql} = ${literal})`;
      };
      const when: string[] = [];
      for (const [name, expected] of Object.entries(check.when ?? {})) {
        const sql = equals(name, expected, `${where}.when.${name}`);
        if (sql === undefined) return;
        when.push(sql);
      }
      const holds: string[] = [];
      for (const [name, condition] of Object.entries(check.require ?? {})) {
        const field = byName.get(name);
        if (condition.equals !== undefined) {
          const sql = equals(name, condition.equals, `${where}.require.${name}`);
          if (sql === undefined) return;
          holds.push(sql);
        }
        if (condition.startsWith !== undefined) {
          if (!ascii(condition.startsWith)) {
            this.#refuse(`${where}.require.${name}.startsWith`, 'not ASCII');
            return;
          }
          // String(value): an absent field is 'undefined'.
          const text = field?.value ? this.#text(field.value, `${where}.require.${name}`) : undefined;
          if (field?.value && text === undefined) return;
          const absent = 'undefined'.startsWith(condition.startsWith) ? '1' : '0';
          holds.push(field?.value ? `if(${field.present}, startsWith(${text}, ${lit(condition.startsWith)}), ${absent})` : absent);
        }
      }
      out.push({ name: where, sql: `(NOT ${and(when)} OR ${and(holds)})` });
    });
    return out;
  }

  /** The SQL literal comparing equal (`===`) to a value of this kind, or false when no value of the kind can. */
  #literalFor(value: Value, expected: unknown, where: string): string | false | undefined {
    switch (value.kind) {
      case 'string':
      case 'decimal':
        if (typeof expected !== 'string') return false;
        if (!ascii(expected)) return false;
        return lit(expected);
      case 'integer':
        if (typeof expected !== 'number') return false;
        if (!Number.isFinite(expected)) return false;
        return Number.isInteger(expected) ? `toInt64(${expected})` : false;
      case 'boolean':
        return typeof expected === 'boolean' ? (expected ? '1' : '0') : false;
      default:
        this.#refuse(where, `comparing a ${value.kind} field is not translated`);
        return undefined;
    }
  }

  /** `String(value)`. */
  #text(value: Value, where: string): string | undefined {
    switch (value.kind) {
      case 'string':
      case 'decimal':
        return value.sql;
      case 'integer':
        return `toString(${value.sql})`;
      case 'boolean':
        return `if(${value.sql} = 1, 'true', 'false')`;
      default:
        this.#refuse(where, `the text of a ${value.kind} field is not translated`);
        return undefined;
    }
  }

  /** The schema as conditions on the normalized record; keywords without an exact translation are reasons. */
  #schema(fields: FieldPlan[]): Condition[] {
    const schema = this.#options.schema;
    if (schema === undefined) return [];
    const formats = this.#options.formats ?? 'full';
    try {
      const ajv = new Ajv({ allErrors: true, strict: true });
      addFormats(ajv, { mode: formats });
      ajv.compile(schema);
    } catch (cause) {
      this.#refuse('schema', `does not compile: ${(cause as Error).message}`);
      return [];
    }
    if (schema === true || (typeof schema === 'object' && Object.keys(schema).length === 0)) return [];
    if (typeof schema !== 'object' || schema === null) {
      this.#refuse('schema', 'must be an object');
      return [];
    }
    const s = schema as Record<string, unknown>;
    const out: Condition[] = [];
    for (const keyword of Object.keys(s)) {
      if (!['$id', '$schema', '$comment', 'title', 'description', 'type', 'properties', 'required', 'additionalProperties', 'examples'].includes(keyword)) {
        this.#refuse(`schema.${keyword}`, 'keyword not translated');
      }
    }
    if (s.type !== undefined && s.type !== 'object' && !(Array.isArray(s.type) && s.type.includes('object'))) {
      this.#refuse('schema.type', 'the normalized record is an object');
    }
    if (s.additionalProperties !== undefined && typeof s.additionalProperties !== 'boolean') {
      this.#refuse('schema.additionalProperties', 'only true or false is translated');
    }
    const properties = (s.properties ?? {}) as Record<string, unknown>;
    for (const name of (s.required ?? []) as string[]) {
      const field = fields.find((f) => f.name === name);
      if (!field) this.#refuse(`schema.required`, `'${name}' is never mapped`);
      else out.push({ name: `schema.required.${name}`, sql: field.present });
    }
    for (const field of fields) {
      const sub = Object.hasOwn(properties, field.name) ? properties[field.name] : s.additionalProperties === false ? false : true;
      const condition = this.#property(field, sub, `schema.properties.${field.name}`, formats);
      if (condition !== undefined && condition !== '1') out.push({ name: `schema.properties.${field.name}`, sql: `(NOT ${field.present} OR ${condition})` });
    }
    return out;
  }

  #property(field: FieldPlan, schema: unknown, where: string, formats: 'full' | 'fast'): string | undefined {
    if (schema === true) return '1';
    if (schema === false) return '0';
    if (schema === null || typeof schema !== 'object') {
      this.#refuse(where, 'not a schema');
      return undefined;
    }
    const value = field.value;
    if (!value) return '1';
    const kind = value.kind;
    const isString = kind === 'string' || kind === 'decimal' || kind === 'datetime' || kind === 'date';
    const jsonType = isString ? 'string' : kind === 'integer' ? 'integer' : 'boolean';
    const conditions: string[] = [];
    const textual = (keyword: string): string | undefined => {
      if (kind === 'datetime' || kind === 'date') {
        this.#refuse(`${where}.${keyword}`, `on a ${kind} field not translated`);
        return undefined;
      }
      return value.sql;
    };
    for (const [keyword, arg] of Object.entries(schema as Record<string, unknown>)) {
      switch (keyword) {
        case 'title':
        case 'description':
        case '$comment':
        case 'examples':
        case 'default':
          break;
        case 'type': {
          const types = [arg].flat() as string[];
          const holds = types.includes(jsonType) || (jsonType === 'integer' && types.includes('number'));
          if (!holds) conditions.push('0');
          break;
        }
        case 'enum':
        case 'const': {
          const options = keyword === 'const' ? [arg] : (arg as unknown[]);
          if (kind === 'datetime' || kind === 'date') {
            this.#refuse(`${where}.${keyword}`, `on a ${kind} field not translated`);
            break;
          }
          const literals = options.map((o) => this.#literalFor(value, o, `${where}.${keyword}`)).filter((l): l is string => typeof l === 'string');
          conditions.push(literals.length === 0 ? '0' : `(${value.sql} IN (${literals.join(', ')}))`);
          break;
        }
        case 'minLength':
        case 'maxLength': {
          if (!isString) break;
          const sql = textual(keyword);
          if (sql === undefined) break;
          // Every string the plan accepts is ASCII: length in bytes is length in UTF-16 units.
          conditions.push(`length(${sql}) ${keyword === 'minLength' ? '>=' : '<='} ${Number(arg)}`);
          break;
        }
        case 'minimum':
        case 'maximum':
        case 'exclusiveMinimum':
        case 'exclusiveMaximum': {
          if (kind !== 'integer') break;
          if (typeof arg !== 'number' || !Number.isFinite(arg)) {
            this.#refuse(`${where}.${keyword}`, 'not a finite number');
            break;
          }
          const op = { minimum: '>=', maximum: '<=', exclusiveMinimum: '>', exclusiveMaximum: '<' }[keyword];
          conditions.push(`${value.sql} ${op} ${Number.isInteger(arg) ? `toInt64(${arg})` : `toFloat64(${arg})`}`);
          break;
        }
        case 'pattern': {
          if (!isString) break;
          const sql = textual(keyword);
          if (sql === undefined) break;
          const why = unsupportedPattern(String(arg));
          if (why) this.#refuse(`${where}.pattern`, why);
          else conditions.push(`match(${sql}, ${lit(String(arg))})`);
          break;
        }
        case 'format': {
          if (!isString) break;
          // normalize renders these itself, always valid for ajv-formats (either mode), years 1971–2199.
          if ((arg === 'date-time' && kind === 'datetime') || (arg === 'date' && kind === 'date')) break;
          this.#refuse(`${where}.format`, `format ${JSON.stringify(arg)} on a ${kind} field is not translated (${formats})`);
          break;
        }
        default:
          this.#refuse(`${where}.${keyword}`, 'keyword not translated');
      }
    }
    return and(conditions);
  }

  /** Each output field to its column, as the JS path's JSONEachRow insert would store it. */
  #columns(fields: FieldPlan[]): { columns: { name: string; sql: string }[]; guards: Condition[] } {
    const columns: { name: string; sql: string }[] = [];
    const guards: Condition[] = [];
    const byName = new Map(this.#options.columns.map((c) => [c.name, c]));
    for (const field of fields) {
      const column = byName.get(field.name);
      const where = `columns.${field.name}`;
      if (!column) {
        // The JS path's insert would meet a field the table does not have.
        guards.push({ name: where, sql: `NOT ${field.present}` });
        continue;
      }
      if (!field.value) continue;
      const kind = column.defaultKind ?? '';
      if (kind === 'MATERIALIZED' || kind === 'ALIAS' || kind === 'EPHEMERAL') {
        this.#refuse(where, `a ${kind} column cannot be inserted`);
        continue;
      }
      const stored = this.#store(field.value, column.type, where);
      if (!stored) continue;
      guards.push({ name: where, sql: `(NOT ${field.present} OR ${stored.fits})` });
      if (field.present !== '1') {
        // An absent field takes the column's default: the type's, unless an expression gives it.
        if (kind !== '') guards.push({ name: where, sql: field.present });
        columns.push({ name: field.name, sql: `if(${field.present} AND ${stored.fits}, ${stored.sql}, defaultValueOfTypeName(${lit(column.type)}))` });
      } else {
        columns.push({ name: field.name, sql: `if(${stored.fits}, ${stored.sql}, defaultValueOfTypeName(${lit(column.type)}))` });
      }
    }
    return { columns, guards };
  }

  /** The value as the column stores it, and when it fits the column exactly. */
  #store(value: Value, type: string, where: string): { sql: string; fits: string } | undefined {
    const base = /^LowCardinality\((.*)\)$/.exec(type)?.[1] ?? type;
    const cast = (sql: string) => `CAST(${sql} AS ${type})`;
    const refuse = () => {
      this.#refuse(where, `a ${value.kind} field into ${type} is not translated`);
      return undefined;
    };
    const integer = /^(U?)Int(8|16|32|64)$/.exec(base);
    const decimal = /^Decimal(?:\((\d+),\s*(\d+)\)|(32|64|128)\((\d+)\))$/.exec(base);
    switch (value.kind) {
      case 'string':
        return base === 'String' ? { sql: cast(value.sql), fits: '1' } : refuse();
      case 'decimal': {
        if (base === 'String') return { sql: cast(value.sql), fits: '1' };
        if (!decimal) return refuse();
        const precision = decimal[1] ? Number(decimal[1]) : { '32': 9, '64': 18, '128': 38 }[decimal[3]!]!;
        const scale = Number(decimal[2] ?? decimal[4]);
        if (precision > 38 || scale > precision) return refuse();
        const digits = precision - scale;
        const fits = named(`match(${value.sql}, ${lit(`^-?[0-9]{1,${Math.max(digits, 1)}}(\\.[0-9]{1,${Math.max(scale, 1)}})?$`)})${scale === 0 ? ` AND position(${value.sql}, '.') = 0` : ''}${digits === 0 ? ` AND match(${value.sql}, '^-?0')` : ''}`);
        // Total: a value that does not fit becomes 0 before the cast (and the row is not accepted).
        return { sql: cast(`toDecimal128OrZero(if(${fits}, ${value.sql}, '0'), ${scale})`), fits: `(${fits})` };
      }
      case 'integer': {
        if (!integer) return refuse();
        const bits = Number(integer[2]);
        const [min, max] = integer[1] === 'U' ? [0n, 2n ** BigInt(bits) - 1n] : [-(2n ** BigInt(bits - 1)), 2n ** BigInt(bits - 1) - 1n];
        return { sql: cast(value.sql), fits: `(${value.sql} >= ${min} AND ${value.sql} <= ${max})` };
      }
      case 'boolean':
        return base === 'Bool' || base === 'UInt8' ? { sql: cast(value.sql), fits: '1' } : refuse();
      case 'datetime':
        return /^DateTime64\(3(?:,\s*'[A-Za-z0-9_/+-]+')?\)$/.test(base) ? { sql: cast(`fromUnixTimestamp64Milli(least(greatest(${value.sql}, 0), ${MAX_MS}), 'UTC')`), fits: '1' } : refuse();
      case 'date':
        // Date holds 1970-01-01 to 2149-06-06; Date32 more.
        if (base === 'Date') return { sql: cast(`least(greatest(${value.sql}, 0), 65534)`), fits: `(${value.sql} >= 0 AND ${value.sql} < 65535)` };
        if (base === 'Date32') return { sql: cast(`least(greatest(${value.sql}, 0), ${MAX_MS / DAY_MS})`), fits: '1' };
        return refuse();
    }
  }
}

/** The first present of several reads, as normalize's `from` list takes it. */
function chooseFirst(reads: { present: string; raw: string }[]): { present: string; raw: string } {
  if (reads.length === 1) return reads[0]!;
  return {
    present: named(`(${reads.map((r) => r.present).join(' OR ')})`),
    raw: named(`multiIf(${reads.map((r) => `${r.present}, ${r.raw}`).join(', ')}, '')`),
  };
}

/** The raw JSON text of `key` in the object whose JSON text is `json`; '' when absent. */
function rawAt(json: string, key: string): string {
  return named(`${objectOf(json)}[${lit(key)}]`);
}

/** The object's keys and raw values, one parse of its JSON text. */
function objectOf(json: string): string {
  return named(`CAST(JSONExtractKeysAndValuesRaw(${json}) AS Map(String, String))`);
}

/** The object's keys are distinct. */
function distinctKeys(json: string): string {
  const keys = named(`mapKeys(${objectOf(json)})`);
  return `(length(arrayDistinct(${keys})) = length(${keys}))`;
}

/**
 * The engine writes a double as its shortest round-trip text, as JS does; the two texts are
 * the same where JS writes no exponent and no more than 15 significant digits are involved
 * (distinct decimals of 15 digits are distinct doubles): a plain decimal of at most 15
 * digits, at most 6 after the point (JS writes 1e-7), and not -0 (JS writes '0').
 */
function jsNumberText(raw: string): string {
  return `(match(${raw}, '^-?(?:0|[1-9][0-9]*)(?:\\\\.[0-9]{1,6})?$') AND length(replaceRegexpAll(${raw}, '[^0-9]', '')) <= 15 AND ${raw} != '-0')`;
}

/**
 * Why a `pattern` is outside the subset where RE2 (`match`) and JS (`new RegExp(p, 'u')`)
 * agree on printable-ASCII text, or undefined when it is inside: literals, `.`, classes of
 * literals and ranges, `\d`, `\w` and escaped punctuation, groups, alternation, anchors and
 * quantifiers (greedy or lazy; only whether it matches counts).
 */
export function unsupportedPattern(pattern: string): string | undefined {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (!/^[ -~]$/.test(c)) return 'pattern with a character that is not printable ASCII is not translated';
    if (c === '\\') {
      const next = pattern[i + 1];
      if (next === undefined) return 'pattern ends in a backslash';
      if (!/^[dDwW.\\/^$|?*+()[\]{}-]$/.test(next)) return `pattern escape \\${next} is not translated`;
      i++;
    } else if (c === '(' && pattern[i + 1] === '?') {
      if (pattern[i + 2] !== ':') return 'pattern group (?… other than (?: is not translated';
    } else if (c === '[' && pattern[i + 1] === '^' && pattern[i + 2] === ']') {
      return 'pattern class [^] is not translated';
    } else if (c === '{' && !/^\{\d+(,\d*)?\}/.test(pattern.slice(i))) {
      return 'pattern brace that is not a quantifier is not translated';
    }
  }
  return undefined;
}

function and(conditions: string[]): string {
  const kept = conditions.filter((c) => c !== '1');
  if (kept.includes('0')) return '0';
  return kept.length === 0 ? '1' : kept.length === 1 ? kept[0]! : `(${kept.join(' AND ')})`;
}

function ascii(text: string): boolean {
  return /^[ -~]*$/.test(text);
}

/** A ClickHouse string literal. */
function lit(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
