import { ConfigError, TributaryError } from '../../lib/errors';
import type { Batch, Sink, WriteContext } from '../../lib/sink';
import { encodeRows } from '../../lib/batch';
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
 * Writes batches into a ClickHouse table as JSONEachRow, one insert per batch.
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
  let prepared: Promise<{ tokens: boolean; unquoteDecimals: string[] | undefined }> | undefined;
  const prepare = () => {
    prepared ??= (async () => {
      const tokens = await client.supportsDeduplicationToken();
      if (await client.readsDecimalStrings()) return { tokens, unquoteDecimals: undefined };
      // Old servers read decimals only as bare numbers: write the exact text unquoted.
      const columns = await client.query<{ name: string; type: string }>(`DESCRIBE TABLE ${quoteIdentifier(table)}`);
      const decimals = columns.filter((c) => /^(Nullable\()?Decimal/.test(c.type)).map((c) => decimalKey(c.name));
      return { tokens, unquoteDecimals: decimals.length > 0 ? decimals : undefined };
    })().catch((error: unknown) => {
      prepared = undefined;
      throw error;
    });
    return prepared;
  };
  // What open() found: whether decimals go unquoted. Encoding needs it synchronously.
  let opened: { unquoteDecimals: string[] | undefined } | undefined;
  return {
    name: `clickhouse:${table}`,
    async open() {
      opened = await prepare();
    },
    /** JSON when decimals go quoted, as JSON.stringify writes them (any server but an old one). */
    get encoding() {
      return opened && !opened.unquoteDecimals ? 'json' : undefined;
    },
    encode(value: T) {
      if (!opened) throw new TributaryError(`sink clickhouse:${table} must be opened before it encodes`, { code: 'NOT_OPEN' });
      return jsonRow(value, opened.unquoteDecimals);
    },
    async write(batch: Batch<T>, context: WriteContext) {
      const { tokens, unquoteDecimals } = await prepare();
      // Batches from a pipeline come encoded; others (a sink used on its own) are encoded here.
      const body = (batch.encoded ?? encodeRows(batch.envelopes, (value) => jsonRow(value, unquoteDecimals))).body;
      // With a token, views fed by this insert are deduplicated with it too.
      const perInsert = tokens
        ? { deduplicate_blocks_in_dependent_materialized_views: 1, ...settings, insert_deduplication_token: context.token }
        : settings;
      await client.insert(table, body, perInsert);
    },
  };
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
