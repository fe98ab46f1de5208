import type { OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { isoDate, isoDateTime, parseIso, patternParser, TimeOutOfRange, validParts, wallClockMs, zoneOf } from '../lib/dates';
import { ConfigError, ValidationError, type FieldIssue } from '../lib/errors';
import { integerInRange } from '../lib/options';
import { recordOperator } from './recordOperator';

export type FieldType = 'string' | 'integer' | 'number' | 'decimal' | 'boolean' | 'datetime' | 'date' | 'array';

/** How one field of the unified model is read from a vendor's record. */
export interface FieldRule {
  /** Dotted path(s) in the vendor record (`price.total`, `pax.0.name`); the first present (not absent, null or empty) wins. */
  from?: string | readonly string[];
  /** Coercion applied to the value. @default 'string' */
  type?: FieldType;
  /** A missing (absent, null or empty) value is an error. @default false */
  required?: boolean;
  /** Used when the value is missing. */
  default?: unknown;
  /** Enum map: the vendor's value (as text) to ours; an unlisted value is an error. */
  values?: Readonly<Record<string, unknown>>;
  /** `decimal`: the value is in minor units (cents) with this many digits. */
  minorUnits?: number;
  /** `decimal`: the vendor's decimal separator. @default '.' */
  decimalSeparator?: '.' | ',';
  /**
   * `datetime`/`date`: `iso` (ISO 8601), `epoch-s`, `epoch-ms`, or a pattern of
   * `YYYY MM DD HH mm ss SSS` with any separators (`DD/MM/YYYY HH:mm`). @default 'iso'
   */
  format?: string;
  /**
   * `datetime`/`date`: zone of vendor times that carry no offset: `UTC`, `+02:00`, or an
   * IANA name (`Europe/Paris`). @default 'UTC'
   */
  timeZone?: string;
  /** `string`: change case after trimming. */
  case?: 'upper' | 'lower';
  /**
   * The field's value, the same for every record, instead of reading `from`: a constant
   * stated as data (`{ value: 'flight' }`), coerced like a value read from the record. Unlike
   * `compute`, a bulk import can run it in the engine (see `planPushdown`).
   */
  value?: string | number | boolean;
  /** Computes the value from the whole vendor record instead of reading `from`. */
  compute?: (record: any) => unknown;
  /**
   * `array`: the value is a list (passengers, segments) and each element, an object, is
   * mapped by these rules; paths inside are relative to the element, and issues name the
   * element (`/pax/1/name`). Build the list with `compute` when a vendor flattens it into
   * columns (`pax1_name`, `pax2_name`).
   */
  items?: Readonly<Record<string, FieldRule | string>>;
}

/**
 * A vendor rule on the mapped record, stated as data: when the record matches `when`, each
 * field in `require` must satisfy its condition, or the record is dead-lettered (code
 * `MAPPING`) with `path` and `message`.
 *
 * ## Example
 * ```ts
 * // A refund must have a negative total.
 * { when: { status: 'refunded' }, require: { total_amount: { startsWith: '-' } }, path: '/total', message: 'a refund must have a negative total' }
 * ```
 */
export interface VendorCheck {
  /** The check applies when every listed output field equals (`===`) its value; to every record when left out. */
  when?: Readonly<Record<string, string | number | boolean>>;
  /** Output field → what it must satisfy; every condition given must hold. */
  require: Readonly<Record<string, FieldCondition>>;
  /** The dead letter's path (JSON Pointer into the vendor record). */
  path: string;
  /** The dead letter's message. */
  message: string;
}

/** A condition on one output field of a mapped record. */
export interface FieldCondition {
  /** The field, as text (`String(value)`: an absent field is `'undefined'`), starts with this. */
  startsWith?: string;
  /** The field equals (`===`) this. */
  equals?: string | number | boolean;
}

export interface VendorMapping {
  /** Output field → rule; a string is shorthand for `{ from: thatPath }`. */
  fields: Readonly<Record<string, FieldRule | string>>;
  /**
   * Vendor rules on the mapped record, as data; checked in order when every field mapped
   * without an issue, each failing one an issue.
   */
  checks?: readonly VendorCheck[];
  /** Vendor-specific checks on the mapped record, as a function (after `checks`); each issue dead-letters it. */
  check?: (output: Record<string, unknown>, input: any) => FieldIssue[] | undefined | void;
}

export interface NormalizeOptions {
  /** One mapping per vendor name. */
  mappings: Readonly<Record<string, VendorMapping>>;
  /** The vendor of a record. @default `envelope.meta.vendor` */
  vendorOf?: (envelope: Envelope<unknown>) => string | undefined;
  /**
   * The output field that receives the record's vendor (the name of the mapping that read
   * it, e.g. the `vendor` given to `fromFiles`), unless the mapping sets that field itself;
   * `false` writes none. @default 'vendor'
   */
  vendorField?: string | false;
}

/**
 * Maps each vendor's record shape into the unified model, by a declarative mapping per
 * vendor.
 *
 * Every issue in a record is collected (missing fields, bad numbers, unknown status
 * codes, unparseable dates) and the record is dead-lettered with code `MAPPING` and the
 * vendor path of the first issue. Mappings are compiled once, at construction.
 *
 * ## Example
 * ```ts
 * import { normalize } from 'tributary';
 * normalize({ mappings: { acme: { fields: {
 *   booking_id: { from: 'ref', required: true },
 *   total: { from: 'price.cents', type: 'decimal', minorUnits: 2 },
 *   status: { from: 'state', values: { C: 'confirmed', X: 'cancelled' } },
 * } } } });
 * ```
 *
 * @returns An operator from vendor records to unified records.
 */
export function normalize(options: NormalizeOptions): OperatorFunction<Envelope<unknown>, Envelope<Record<string, unknown>>> {
  if (!options?.mappings || typeof options.mappings !== 'object') throw new ConfigError('mappings must be an object of vendor → mapping');
  const compiled = new Map<string, (input: any) => Record<string, unknown>>();
  const vendorField = options.vendorField ?? 'vendor';
  if (vendorField !== false && (typeof vendorField !== 'string' || vendorField === '')) {
    throw new ConfigError(`vendorField must be a field name or false, got ${JSON.stringify(options.vendorField)}`);
  }
  for (const [vendor, mapping] of Object.entries(options.mappings)) compiled.set(vendor, compileMapping(vendor, mapping, vendorField));
  const vendorOf = options.vendorOf ?? ((envelope: Envelope<unknown>) => envelope.meta.vendor);
  // Records come in runs of one vendor (a file, a topic): the last one's mapping is at hand.
  let lastVendor: string | undefined;
  let lastMap: ((input: any) => Record<string, unknown>) | undefined;
  return recordOperator('normalize', (value: unknown, envelope) => {
    const vendor = vendorOf(envelope);
    let map = lastMap;
    if (vendor !== lastVendor || vendor === undefined) {
      map = vendor === undefined ? undefined : compiled.get(vendor);
      lastVendor = vendor;
      lastMap = map;
    }
    if (!map) {
      throw new ValidationError([{ path: '', message: vendor === undefined ? 'record has no vendor' : `no mapping for vendor '${vendor}'` }], 'UNKNOWN_VENDOR');
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new ValidationError([{ path: '', message: `expected an object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}` }], 'MAPPING');
    }
    return map(value);
  });
}

type Coerce = (value: unknown) => unknown;

/** Thrown by coercions; becomes a field issue at the rule's path. */
class CoercionIssue extends Error {}

function compileMapping(vendor: string, mapping: VendorMapping, vendorField: string | false): (input: any) => Record<string, unknown> {
  if (!mapping?.fields || typeof mapping.fields !== 'object') throw new ConfigError(`mappings.${vendor}.fields must be an object`);
  const map = compileFields(mapping.fields, `mappings.${vendor}.fields`);
  const checks = compileChecks(mapping.checks, `mappings.${vendor}.checks`);
  const check = mapping.check;
  // The mapping's own rule for the field wins.
  const stamp = vendorField !== false && !Object.hasOwn(mapping.fields, vendorField) ? vendorField : undefined;
  return (input) => {
    // One array serves every record (mapping is synchronous); a failing record gets a copy.
    if (scratch.length > 0) scratch.length = 0;
    const output = map(input, '', scratch);
    if (stamp !== undefined) output[stamp] = vendor;
    if (scratch.length > 0) throw new ValidationError([...scratch], 'MAPPING');
    const failed = checks?.(output);
    if (failed) throw new ValidationError(failed, 'MAPPING');
    const issues = check?.(output, input);
    if (issues && issues.length > 0) throw new ValidationError(issues, 'MAPPING');
    return output;
  };
}

const scratch: FieldIssue[] = [];

/** The declarative checks of a mapping as one function giving the issues of a mapped record, `undefined` when it has none. */
function compileChecks(checks: VendorMapping['checks'], where: string): ((output: Record<string, unknown>) => FieldIssue[] | undefined) | undefined {
  if (checks === undefined) return undefined;
  if (!Array.isArray(checks)) throw new ConfigError(`${where} must be an array of checks`);
  const literal = (value: unknown) => typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
  for (const [i, check] of checks.entries()) {
    const at = `${where}[${i}]`;
    if (check === null || typeof check !== 'object') throw new ConfigError(`${at} must be an object with require, path and message`);
    if (typeof check.path !== 'string' || typeof check.message !== 'string') throw new ConfigError(`${at}.path and ${at}.message must be strings`);
    if (check.when !== undefined && (check.when === null || typeof check.when !== 'object' || !Object.values(check.when).every(literal))) {
      throw new ConfigError(`${at}.when must be an object of output field → string, number or boolean`);
    }
    if (check.require === null || typeof check.require !== 'object' || Object.keys(check.require).length === 0) {
      throw new ConfigError(`${at}.require must be an object of output field → condition`);
    }
    for (const [field, condition] of Object.entries(check.require) as [string, FieldCondition][]) {
      const known = condition !== null && typeof condition === 'object' && Object.keys(condition).every((key) => key === 'startsWith' || key === 'equals');
      if (!known || Object.keys(condition).length === 0) throw new ConfigError(`${at}.require.${field} must be a condition: { startsWith: text } and/or { equals: value }`);
      if (condition.startsWith !== undefined && typeof condition.startsWith !== 'string') throw new ConfigError(`${at}.require.${field}.startsWith must be a string`);
      if (condition.equals !== undefined && !literal(condition.equals)) throw new ConfigError(`${at}.require.${field}.equals must be a string, number or boolean`);
    }
  }
  const compiled = checks.map((check) => ({
    when: Object.entries(check.when ?? {}) as [string, string | number | boolean][],
    require: Object.entries(check.require) as [string, FieldCondition][],
    issue: { path: check.path, message: check.message },
  }));
  // Plain loops: this runs for every record, and most pass every check.
  return (output) => {
    let issues: FieldIssue[] | undefined;
    for (const check of compiled) {
      if (!holdsAll(check.when, output) || holdsAll(check.require, output)) continue;
      (issues ??= []).push({ ...check.issue });
    }
    return issues;
  };
}

/** Whether `output` satisfies every condition, or equals every value given, of `entries`. */
function holdsAll(entries: readonly [string, FieldCondition | string | number | boolean][], output: Record<string, unknown>): boolean {
  for (const [field, expected] of entries) {
    const value = output[field];
    if (typeof expected !== 'object') {
      if (value !== expected) return false;
      continue;
    }
    if (expected.startsWith !== undefined && !String(value).startsWith(expected.startsWith)) return false;
    if (expected.equals !== undefined && value !== expected.equals) return false;
  }
  return true;
}

/** Maps `input`, adding what is wrong to `issues` (paths below `base`). */
type FieldsMapper = (input: any, base: string, issues: FieldIssue[]) => Record<string, unknown>;

/** One field of a compiled mapping. */
interface CompiledField {
  name: string;
  required: boolean;
  fallback: unknown;
  /** Dotted paths split into keys, tried in order; empty for a computed field. */
  paths: string[][];
  compute: ((record: any) => unknown) | undefined;
  /** JSON Pointer of the field's (first) vendor path, for issues. */
  pointer: string;
  coerce: Coerce | undefined;
  items: FieldsMapper | undefined;
}

/**
 * Compiles a set of field rules (the top of a mapping, or the `items` of an array field)
 * into one function of straight-line code, as ajv does with a schema: each field's read,
 * coercion and store is its own site, so property loads and stores stay monomorphic and
 * coercions inline. Field names and paths enter the code only as JSON string literals.
 * Where code cannot be generated from strings, the same fields are interpreted.
 */
function compileFields(rules: Readonly<Record<string, FieldRule | string>>, where: string): FieldsMapper {
  const fields: CompiledField[] = Object.entries(rules).map(([name, ruleOrPath]) => {
    let rule: FieldRule = typeof ruleOrPath === 'string' ? { from: ruleOrPath } : ruleOrPath;
    const at = `${where}.${name}`;
    if (rule.value !== undefined) {
      if (rule.compute !== undefined || rule.from !== undefined || rule.items !== undefined) throw new ConfigError(`${at}.value is the field's value: leave out from, compute and items`);
      if (!['string', 'number', 'boolean'].includes(typeof rule.value)) throw new ConfigError(`${at}.value must be a string, number or boolean, got ${JSON.stringify(rule.value)}`);
      const constant = rule.value;
      rule = { ...rule, compute: () => constant };
    }
    const froms = rule.compute ? [] : [rule.from ?? name].flat();
    if (rule.items !== undefined && (rule.items === null || typeof rule.items !== 'object')) throw new ConfigError(`${at}.items must be an object of field rules for each element`);
    if (rule.items && rule.type !== undefined && rule.type !== 'array') throw new ConfigError(`${at}.type must be 'array' (or left out) when items is given, got ${JSON.stringify(rule.type)}`);
    if (rule.type === 'array' && !rule.items) throw new ConfigError(`${at}.items is required when type is 'array'`);
    return {
      name,
      required: rule.required ?? false,
      fallback: rule.default,
      paths: froms.map((path) => String(path).split('.')),
      compute: rule.compute,
      pointer: rule.compute ? `/${name}` : '/' + String(froms[0]).split('.').join('/'),
      coerce: rule.items ? undefined : coercionOf(rule, at),
      items: rule.items ? compileFields(rule.items, `${at}.items`) : undefined,
    };
  });
  try {
    return generatedMapper(fields);
  } catch (error) {
    // --disallow-code-generation-from-strings, or a CSP: the loop below does the same work.
    if (!(error instanceof EvalError)) throw error;
    return interpretedMapper(fields);
  }
}

function generatedMapper(fields: CompiledField[]): FieldsMapper {
  const code: string[] = [];
  fields.forEach((field, i) => {
    const key = JSON.stringify(field.name);
    code.push(field.compute ? `v = f[${i}].compute(input);` : readCode(field.paths));
    code.push(`if (v === undefined || v === null || v === '') {`);
    if (field.fallback !== undefined) code.push(`  out[${key}] = f[${i}].fallback;`);
    else if (field.required) code.push(`  missing(f[${i}], base, issues);`);
    code.push('} else {');
    if (field.items) code.push(`  out[${key}] = list(f[${i}], v, base, issues);`);
    else code.push(`  try { out[${key}] = f[${i}].coerce(v); } catch (error) { refused(f[${i}], error, base, issues); }`);
    code.push('}');
  });
  const body = `return function map(input, base, issues) {\n  const out = {};\n  let v, t;\n  ${code.join('\n  ')}\n  return out;\n};`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- compiled once per mapping, from JSON literals only
  return new Function('f', 'missing', 'list', 'refused', body)(fields, missing, list, refused) as FieldsMapper;
}

/**
 * Code reading the first present value of `paths` into `v`: `input.a`, then `input.b.c`
 * if that is missing. `input` is always an object; keys below it are read only from
 * objects.
 */
function readCode(paths: string[][]): string {
  let code = 'v = undefined;';
  for (let p = paths.length - 1; p >= 0; p--) {
    const [first, ...rest] = paths[p]!;
    const walk = [`t = input[${JSON.stringify(first)}];`, ...rest.map((key) => `t = t !== null && typeof t === 'object' ? t[${JSON.stringify(key)}] : undefined;`)];
    code = p === paths.length - 1 ? `${walk.join(' ')} v = t;` : `${walk.join(' ')} if (t !== undefined && t !== null && t !== '') v = t; else { ${code} }`;
  }
  return code;
}

function interpretedMapper(fields: CompiledField[]): FieldsMapper {
  const readers = fields.map((field) => field.compute ?? readerOf(field.paths));
  return (input, base, issues) => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i]!;
      const value = readers[i]!(input);
      if (value === undefined || value === null || value === '') {
        if (field.fallback !== undefined) out[field.name] = field.fallback;
        else if (field.required) missing(field, base, issues);
      } else if (field.items) {
        out[field.name] = list(field, value, base, issues);
      } else {
        try {
          out[field.name] = field.coerce!(value);
        } catch (error) {
          refused(field, error, base, issues);
        }
      }
    }
    return out;
  };
}

function missing(field: CompiledField, base: string, issues: FieldIssue[]): void {
  issues.push({ path: base + field.pointer, message: `${field.name} is required` });
}

/** A coercion's refusal becomes an issue at the field; any other error is a bug and goes on. */
function refused(field: CompiledField, error: unknown, base: string, issues: FieldIssue[]): void {
  if (!(error instanceof CoercionIssue || error instanceof TimeOutOfRange)) throw error;
  issues.push({ path: base + field.pointer, message: `${field.name}: ${error.message}` });
}

/**
 * An array field: each element mapped by the field's item rules. A value that is not an
 * array, or an element that is not an object, is an issue; the list keeps its length.
 */
function list(field: CompiledField, value: unknown, base: string, issues: FieldIssue[]): unknown[] | undefined {
  if (!Array.isArray(value)) {
    issues.push({ path: base + field.pointer, message: `${field.name}: expected an array, got ${value === null ? 'null' : typeof value}` });
    return undefined;
  }
  const items = new Array<unknown>(value.length);
  for (let index = 0; index < value.length; index++) {
    const element: unknown = value[index];
    const at = `${base}${field.pointer}/${index}`;
    if (element === null || typeof element !== 'object' || Array.isArray(element)) issues.push({ path: at, message: `${field.name}[${index}]: expected an object` });
    else items[index] = field.items!(element, at, issues);
  }
  return items;
}

function readerOf(paths: string[][]): (input: any) => unknown {
  return (input) => {
    for (const path of paths) {
      let value = input;
      for (const key of path) {
        if (value === null || typeof value !== 'object') {
          value = undefined;
          break;
        }
        value = value[key];
      }
      // An empty value (a blank CSV column) is missing too: the next path is tried.
      if (value !== undefined && value !== null && value !== '') return value;
    }
    return undefined;
  };
}

function coercionOf(rule: FieldRule, where: string): Coerce {
  const type = rule.type ?? 'string';
  let coerce: Coerce;
  switch (type) {
    case 'string':
      coerce = toText(rule.case);
      break;
    case 'integer':
      coerce = toInteger;
      break;
    case 'number':
      coerce = toNumber;
      break;
    case 'boolean':
      coerce = toBoolean;
      break;
    case 'decimal':
      coerce = toDecimal(rule, where);
      break;
    case 'datetime':
    case 'date':
      coerce = toTime(type, rule, where);
      break;
    default:
      throw new ConfigError(`${where}.type must be one of string, integer, number, decimal, boolean, datetime, date; got ${JSON.stringify(type)}`);
  }
  const values = rule.values;
  if (!values) return coerce;
  const known = Object.keys(values).join(', ');
  const byKey = new Map(Object.entries(values));
  return (value) => {
    const key = typeof value === 'string' ? value.trim() : String(value);
    const mapped = byKey.get(key);
    if (mapped === undefined && !byKey.has(key)) throw new CoercionIssue(`'${key}' is not one of ${known}`);
    return mapped;
  };
}

function toText(letterCase: FieldRule['case']): Coerce {
  return (value) => {
    if (typeof value === 'object') throw new CoercionIssue(`expected text, got ${Array.isArray(value) ? 'an array' : 'an object'}`);
    const text = String(value).trim();
    return letterCase === 'upper' ? text.toUpperCase() : letterCase === 'lower' ? text.toLowerCase() : text;
  };
}

function toInteger(value: unknown): number {
  const number = typeof value === 'string' ? Number(value.trim()) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || (typeof value === 'string' && value.trim() === '')) {
    throw new CoercionIssue(`expected an integer, got ${JSON.stringify(value)}`);
  }
  return number;
}

function toNumber(value: unknown): number {
  const number = typeof value === 'string' && value.trim() !== '' ? Number(value.trim()) : value;
  if (typeof number !== 'number' || !Number.isFinite(number)) throw new CoercionIssue(`expected a number, got ${JSON.stringify(value)}`);
  return number;
}

const TRUE = new Set(['true', '1', 'yes', 'y']);
const FALSE = new Set(['false', '0', 'no', 'n']);

function toBoolean(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  const text = String(value).trim().toLowerCase();
  if (TRUE.has(text)) return true;
  if (FALSE.has(text)) return false;
  throw new CoercionIssue(`expected a boolean, got ${JSON.stringify(value)}`);
}

const DECIMAL = /^([+-]?)(\d+)(?:\.(\d+))?$/;

/**
 * Where `text` is a canonical decimal (`-?(0|[1-9]\d*)(<separator>\d+)?`): the index of
 * its separator, 0 when it has none, -1 when it is not one. One pass over the characters,
 * where a regex and a replace took three.
 */
function canonicalSeparator(text: string, separator: number): number {
  let i = text.charCodeAt(0) === 0x2d ? 1 : 0;
  const first = i;
  while (i < text.length && isDigit(text.charCodeAt(i))) i++;
  const whole = i - first;
  if (whole === 0 || (whole > 1 && text.charCodeAt(first) === 0x30)) return -1;
  if (i === text.length) return 0;
  if (text.charCodeAt(i) !== separator) return -1;
  const at = i++;
  if (i === text.length) return -1;
  while (i < text.length && isDigit(text.charCodeAt(i))) i++;
  return i === text.length ? at : -1;
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** Decimals stay text end to end (`"1234.50"`), so no amount passes through a float. */
function toDecimal(rule: FieldRule, where: string): Coerce {
  const minorUnits = integerInRange(rule.minorUnits, 0, `${where}.minorUnits`, 0, 18);
  const comma = rule.decimalSeparator === ',';
  return (value) => {
    let text: string;
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new CoercionIssue(`expected a decimal, got ${value}`);
      text = Number.isInteger(value) ? value.toFixed(0) : String(value);
      if (/e/i.test(text)) throw new CoercionIssue(`expected a decimal, got ${value}`);
      // A number's text without an exponent is canonical already (no plus, no leading zeros).
      if (minorUnits === 0) return text;
    } else if (typeof value === 'string') {
      text = value.trim();
      // Most amounts are already in their canonical form (with the vendor's separator).
      if (minorUnits === 0) {
        const separator = canonicalSeparator(text, comma ? 0x2c : 0x2e);
        if (separator === 0) return text;
        if (separator > 0) return comma ? `${text.slice(0, separator)}.${text.slice(separator + 1)}` : text;
      }
      if (comma) text = text.indexOf('.') < 0 ? text.replace(',', '.') : text.replace(/\./g, '').replace(',', '.');
    } else {
      throw new CoercionIssue(`expected a decimal, got ${JSON.stringify(value)}`);
    }
    const match = DECIMAL.exec(text);
    if (!match) throw new CoercionIssue(`expected a decimal, got ${JSON.stringify(value)}`);
    let [, sign, whole, fraction = ''] = match as unknown as [string, string, string, string?];
    if (minorUnits > 0) {
      if (fraction !== '') throw new CoercionIssue(`expected an integer amount in minor units, got ${JSON.stringify(value)}`);
      whole = whole.padStart(minorUnits + 1, '0');
      fraction = whole.slice(-minorUnits);
      whole = whole.slice(0, -minorUnits);
    }
    whole = whole.replace(/^0+(?=\d)/, '');
    return `${sign === '-' ? '-' : ''}${whole}${fraction ? '.' + fraction : ''}`;
  };
}

function toTime(type: 'datetime' | 'date', rule: FieldRule, where: string): Coerce {
  const format = rule.format ?? 'iso';
  const zone = zoneOf(rule.timeZone ?? 'UTC', `${where}.timeZone`);
  const render = type === 'date' ? isoDate : isoDateTime;
  if (format === 'epoch-s' || format === 'epoch-ms') {
    const scale = format === 'epoch-s' ? 1000 : 1;
    return (value) => {
      const number = typeof value === 'string' ? Number(value.trim()) : value;
      if (typeof number !== 'number' || !Number.isFinite(number)) throw new CoercionIssue(`expected ${format} time, got ${JSON.stringify(value)}`);
      return render(number * scale);
    };
  }
  const parse = format === 'iso' ? parseIso : patternParser(format, where);
  return (value) => {
    if (typeof value !== 'string') throw new CoercionIssue(`expected ${format === 'iso' ? 'an ISO 8601' : `a ${format}`} time, got ${JSON.stringify(value)}`);
    const parts = parse(value.trim());
    if (!parts || !validParts(parts)) throw new CoercionIssue(`expected ${format === 'iso' ? 'an ISO 8601' : `a ${format}`} time, got ${JSON.stringify(value)}`);
    const local = wallClockMs(parts);
    // A calendar date has no zone: it stays the day the vendor wrote.
    if (type === 'date' && parts.offset === undefined && parts.hour === 0 && parts.minute === 0) return render(local);
    return render(parts.offset !== undefined ? local - parts.offset * 60_000 : zone(local));
  };
}
