import { ConfigError, TributaryError } from '../../lib/errors';
import type { Batch, EncodedRows, RowBytes, Sink, WriteContext } from '../../lib/sink';
import { encodeRows } from '../../lib/batch';
import { jsonObjectWriter, writeJsonArray, writeText, type JsonObjectWriter } from '../../lib/jsonBytes';
import { quoteIdentifier, type ClickHouseClient } from './client';

export interface ToClickHouseOptions {
  /** The connection: `embeddedClickHouse()` or a server client. */
  client: ClickHouseClient;
  /** Target table, optionally `database.table`. */
  table: string;
  /**
   * ClickHouse settings for every insert, passed through as they are. ISO 8601 times are
   * accepted by default (`date_time_input_format: 'best_effort'`).
   */
  settings?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * Writes batches into a ClickHouse table, one insert per batch: rows as JSONCompactEachRow
 * arrays of the table's columns where the client reads them (the embedded store) and an
 * array says what the row's object would (see `compactRows`), else as JSONEachRow objects.
 *
 * Each insert carries the batch's deterministic `insert_deduplication_token` where the
 * server supports it, so a retried or replayed batch is absorbed by tables with a
 * deduplication window.
 *
 * ## Example
 * ```ts
 * import { embeddedClickHouse, toClickHouse } from 'tributary';
 * const sink = toClickHouse({ client: embeddedClickHouse(), table: 'bookings' });
 * ```
 */
export function toClickHouse<T>(options: ToClickHouseOptions): Sink<T> {
  if (!options?.client) throw new ConfigError('client is required: embeddedClickHouse() or a server client');
  if (typeof options.table !== 'string' || !/^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)?$/.test(options.table)) {
    throw new ConfigError(`table must be a name like bookings or db.bookings, got ${JSON.stringify(options.table)}`);
  }
  const { client, table } = options;
  const settings = { date_time_input_format: 'best_effort', ...options.settings };
  const describe = () => client.query<TableColumn>(`DESCRIBE TABLE ${quoteIdentifier(table)}`);
  let prepared: Promise<{ tokens: boolean; encoder: RowEncoder }> | undefined;
  const prepare = () => {
    prepared ??= (async () => {
      const tokens = await client.supportsDeduplicationToken();
      const decimalStrings = await client.readsDecimalStrings();
      const compact = (await client.readsCompactRows?.()) === true;
      if (decimalStrings && !compact) return { tokens, encoder: {} };
      if (!decimalStrings) {
        // Old servers read decimals only as bare numbers: write the exact text unquoted.
        const decimals = (await describe()).filter((c) => /^(Nullable\()?Decimal/.test(c.type)).map((c) => c.name);
        if (decimals.length === 0) return { tokens, encoder: {} };
        const names = new Set(decimals);
        const bare = (key: string, text: string) => names.has(key) && isDecimalText(text, 0, text.length);
        return { tokens, encoder: { unquoteDecimals: decimals.map(decimalKey), bare } };
      }
      // A table that cannot be read now (not made yet) gets objects, and its inserts say why.
      const columns = await describe().catch(() => undefined);
      return { tokens, encoder: { compact: columns && compactRows(columns, settings) } };
    })().catch((error: unknown) => {
      prepared = undefined;
      throw error;
    });
    return prepared;
  };
  // What open() found. Encoding needs it synchronously.
  let opened: RowEncoder | undefined;
  const writeObject = jsonObjectWriter();
  const openedEncoder = () => {
    if (!opened) throw new TributaryError(`sink clickhouse:${table} must be opened before it encodes`, { code: 'NOT_OPEN' });
    return opened;
  };
  return {
    name: `clickhouse:${table}`,
    async open() {
      opened = (await prepare()).encoder;
    },
    /**
     * JSON when rows go as objects with decimals quoted, as JSON.stringify writes them (any
     * server but an old one); `json-compact` where they go as arrays of the table's columns.
     */
    get encoding() {
      if (!opened || opened.unquoteDecimals) return undefined;
      return opened.compact ? 'json-compact' : 'json';
    },
    get encodedColumns() {
      return opened?.compact?.columns;
    },
    /** Another sink of a fan-out reads only JSON objects: rows go as objects, encoded once for both. */
    preferEncoding(encoding: string) {
      if (encoding === 'json' && opened?.compact) opened.compact = undefined;
    },
    encode(value: T) {
      return encodeRow(value, openedEncoder());
    },
    encodeInto(value: T, out: RowBytes) {
      encodeRowInto(value, openedEncoder(), writeObject, out);
    },
    async write(batch: Batch<T>, context: WriteContext) {
      const { tokens, encoder } = await prepare();
      // Batches from a pipeline come encoded; others (a sink used on its own) are encoded here.
      const rows = batch.encoded ?? encodeRows(batch.envelopes, (value) => encodeRow(value, encoder));
      // With a token, views fed by this insert are deduplicated with it too.
      const perInsert = (token: string) => (tokens ? { deduplicate_blocks_in_dependent_materialized_views: 1, ...settings, insert_deduplication_token: token } : settings);
      // The encoder open() holds: preferEncoding and a dropped column change it.
      const compact = encoder.compact;
      const kind = compact ? kindOf(rows) : 'objects';
      if (kind === 'objects') await client.insert(table, rows.body, perInsert(context.token));
      else if (kind === 'arrays') {
        try {
          await client.insert(table, rows.body, perInsert(context.token), compact!.columns);
        } catch (error) {
          if ((error as { code?: unknown }).code !== 'CLICKHOUSE_16') throw error;
          // NO_SUCH_COLUMN_IN_TABLE: a column was dropped since the table was read. This batch
          // goes as objects (a key the table no longer has is the engine's to judge, as
          // before); the rows from now on follow the table as it is.
          const columns = await describe();
          if (encoder.compact) encoder.compact = compactRows(columns, settings);
          await client.insert(table, asObjects(rows, compact!.columns), perInsert(context.token));
        }
      }
      // Both kinds (rare): one insert still, so that the batch lands or fails whole.
      else await client.insert(table, asObjects(rows, compact!.columns), perInsert(context.token));
    },
  };
}

/** A column as DESCRIBE TABLE gives it. */
interface TableColumn {
  name: string;
  type: string;
  default_type: string;
}

/** How rows are written: objects (decimals bare for an old server), or arrays where `compact` can. */
interface RowEncoder {
  unquoteDecimals?: string[] | undefined;
  /** With `unquoteDecimals`: whether the string value of a key is a decimal to write bare (the same ones `unquoted` finds in the row's text). */
  bare?: ((key: string, text: string) => boolean) | undefined;
  compact?: CompactRows | undefined;
}

interface CompactRows {
  /** The table's columns an insert can name, in the arrays' order. */
  columns: readonly string[];
  /**
   * The row's values in the columns' order, in an array the next call writes over (so
   * stringify it first); undefined when an array would not say what its object says.
   */
  pick: (row: Record<string, unknown>) => unknown[] | undefined;
}

/** A column name the embedded store takes in an insert's column list, as it is. */
const LISTABLE = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;

/**
 * Rows as arrays of the table's columns (those an insert can name: neither MATERIALIZED,
 * ALIAS nor EPHEMERAL), when the engine reads an array as it reads the row's object. It
 * reads it in about two thirds of the CPU (no key to look up per value), and JSON.stringify
 * writes an array faster than an object. A column a row leaves out gets null, read as the
 * column's default like a key left out (input_format_null_as_default and
 * input_format_defaults_for_omitted_fields, both on unless `settings` turn them off) — except in a Nullable column
 * with a DEFAULT expression, where null stays NULL. So a row is an array only when it is a
 * plain object whose keys are all columns of the list and that leaves out no such column;
 * any other row goes as an object, as before. Undefined when no row could: settings that
 * turn those defaults off, a column name the insert cannot list or an object has already.
 */
export function compactRows(columns: readonly TableColumn[], settings: Readonly<Record<string, string | number | boolean>>): CompactRows | undefined {
  const off = (value: unknown) => value !== undefined && ['0', 'false'].includes(String(value).toLowerCase());
  if (off(settings['input_format_null_as_default']) || off(settings['input_format_defaults_for_omitted_fields'])) return undefined;
  const listed = columns.filter((c) => c.default_type === '' || c.default_type === 'DEFAULT');
  if (listed.length === 0 || listed.some((c) => !LISTABLE.test(c.name) || c.name in Object.prototype)) return undefined;
  const keepsDefault = listed.map((c) => c.default_type === 'DEFAULT' && c.type.includes('Nullable('));
  const names = listed.map((c) => c.name);
  return { columns: names, pick: picker(names, keepsDefault) };
}

/**
 * The row's values of `columns`, in order, or undefined: when a column that `keepsDefault`
 * is left out (undefined, or a value JSON leaves out: a function or a symbol), or when the
 * row has a key no column reads (more keys than values found). Allocates nothing a row:
 * the keys are counted with for…in, not listed (an enumerable key inherited from a
 * polluted prototype counts too, which sends the row as its object: still what
 * JSON.stringify writes), and the values go into one array, written over each call.
 */
function picker(columns: readonly string[], keepsDefault: readonly boolean[]): CompactRows['pick'] {
  const absent = (x: unknown) => x === undefined || typeof x === 'function' || typeof x === 'symbol';
  // Packed (not `new Array(n)`, which is holey): JSON.stringify writes a packed array faster.
  const values: unknown[] = Array.from({ length: columns.length }, () => null);
  try {
    let code = 'let found = 0;\n';
    columns.forEach((column, i) => {
      code += `const x${i} = row[${JSON.stringify(column)}];\n`;
      code += keepsDefault[i] ? `if (absent(x${i})) return undefined;\nfound++;\n` : `if (x${i} !== undefined) found++;\n`;
    });
    code += 'for (const key in row) if (found-- === 0) return undefined;\nif (found !== 0) return undefined;\n';
    code += columns.map((_, i) => `values[${i}] = x${i};\n`).join('');
    code += 'return values;';
    // Compiled once per table, from JSON literals only.
    return new Function('absent', 'values', `return function pick(row) {\n${code}\n};`)(absent, values) as CompactRows['pick'];
  } catch (error) {
    // --disallow-code-generation-from-strings: the loop does the same.
    if (!(error instanceof EvalError)) throw error;
    return (row) => {
      let found = 0;
      for (let i = 0; i < columns.length; i++) {
        const x = row[columns[i]!];
        if (keepsDefault[i] && absent(x)) return undefined;
        if (x !== undefined) found++;
        values[i] = x;
      }
      for (const _key in row) if (found-- === 0) return undefined;
      return found === 0 ? values : undefined;
    };
  }
}

function encodeRow(value: unknown, encoder: RowEncoder): string {
  if (encoder.compact && isPlainObject(value)) {
    const values = encoder.compact.pick(value);
    if (values) return JSON.stringify(values);
  }
  return jsonRow(value, encoder.unquoteDecimals);
}

/** `encodeRow`'s bytes, written into `out` without its string. */
function encodeRowInto(value: unknown, encoder: RowEncoder, writeObject: JsonObjectWriter, out: RowBytes): void {
  if (encoder.compact && isPlainObject(value)) {
    const values = encoder.compact.pick(value);
    if (values) return writeJsonArray(out, values);
  }
  if (isPlainObject(value) && writeObject(out, value, encoder.bare)) return;
  writeText(out, jsonRow(value, encoder.unquoteDecimals));
}

/** An object JSON.stringify writes key by key: no class instance, no array, no toJSON. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return (prototype === Object.prototype || prototype === null) && typeof (value as { toJSON?: unknown }).toJSON !== 'function';
}

/** Whether the rows were written as arrays, as something else (objects, `null`), or both. */
function kindOf(rows: EncodedRows): 'arrays' | 'objects' | 'both' {
  const { body, ends } = rows;
  let arrays = 0;
  for (let i = 0, start = 0; i < ends.length; start = ends[i++]!) if (body[start] === 0x5b /* [ */) arrays++;
  return arrays === ends.length ? 'arrays' : arrays === 0 ? 'objects' : 'both';
}

/**
 * The rows with each array written as the object of its columns, nulls and all: read with
 * input_format_null_as_default, a null there is what it was in the array (a row that left a Nullable
 * column with a DEFAULT out was never an array). JSON.parse and JSON.stringify give back
 * the text JSON.stringify wrote.
 */
function asObjects(rows: EncodedRows, columns: readonly string[]): Buffer {
  const { body, ends } = rows;
  const keys = columns.map((column, i) => `${i === 0 ? '{' : ','}${JSON.stringify(column)}:`);
  let text = '';
  for (let i = 0, start = 0; i < ends.length; start = ends[i++]!) {
    const line = body.toString('utf8', start, ends[i]! - 1);
    if (body[start] !== 0x5b) text += line + '\n';
    else {
      const values = JSON.parse(line) as unknown[];
      text += values.map((value, k) => keys[k] + JSON.stringify(value)).join('') + '}\n';
    }
  }
  return Buffer.from(text);
}

/** One JSONEachRow row. A value JSON cannot write (undefined) goes as `null`, which ClickHouse refuses as that row's fault. */
function jsonRow(value: unknown, unquoteDecimals: readonly string[] | undefined): string {
  const row = JSON.stringify(value) ?? 'null';
  return unquoteDecimals ? unquoted(row, unquoteDecimals) : row;
}

/**
 * What `unquoted` looks for of a decimal column: its key as JSON.stringify writes it, then
 * `:"`, without the key's opening quote. A search whose pattern starts with a quote is slow
 * on JSON, which has one every few characters (about 250 ns a row against 100).
 */
export function decimalKey(column: string): string {
  return `${JSON.stringify(column).slice(1)}:"`;
}

/**
 * `row` with the decimal columns' string values written as bare numbers, the same text
 * (`"total":"12.50"` → `"total":12.50`). `keys` as `decimalKey` makes them. A match is a
 * key of its own when a quote and `{` or `,` come before it: in a JSON string every quote
 * is escaped, so neither `,"` nor `{"` nor a `":"` after a key's name occurs there, and a
 * longer key ending in the same name (`"net_total":"`) has a letter before. Per row, not a
 * regex over the whole batch: the regex cost a third of JSON.stringify on 10k-row batches.
 * The quotes to drop are found first and the row is cut once.
 */
export function unquoted(row: string, keys: readonly string[]): string {
  let quotes: number[] | undefined;
  for (const key of keys) {
    let at = row.indexOf(key);
    while (at >= 0) {
      const start = at + key.length;
      const end = row.indexOf('"', start);
      const before = row.charCodeAt(at - 2);
      if (row.charCodeAt(at - 1) === 0x22 && (before === 0x7b || before === 0x2c) && end > start && isDecimalText(row, start, end)) {
        (quotes ??= []).push(start - 1, end);
        at = row.indexOf(key, end + 1);
      } else {
        at = row.indexOf(key, start);
      }
    }
  }
  if (!quotes) return row;
  if (keys.length > 1) quotes.sort((a, b) => a - b);
  let out = '';
  let from = 0;
  for (const quote of quotes) {
    out += row.slice(from, quote);
    from = quote + 1;
  }
  return out + row.slice(from);
}

/** Whether `text` from `start` to `end` is `-?\d+(\.\d+)?`: a decimal the server reads bare. */
function isDecimalText(text: string, start: number, end: number): boolean {
  let i = text.charCodeAt(start) === 0x2d ? start + 1 : start;
  const digits = (): boolean => {
    const first = i;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      i++;
    }
    return i > first;
  };
  if (!digits()) return false;
  if (i === end) return true;
  if (text.charCodeAt(i) !== 0x2e) return false;
  i++;
  return digits() && i === end;
}
