import { ConfigError, TributaryError } from '../../lib/errors';
import { booleanOption, positiveInteger } from '../../lib/options';
import { quoteIdentifier, type ClickHouseClient } from './client';
import { clickhouseFeatures, deleteRows } from './mutations';

/** How long one table keeps its rows. */
export interface RetentionRule {
  /** `dead_letters`, `raw_events` or `db.table`. */
  table: string;
  /** The time column rows age by (`received_at`, `failed_at`); Date, DateTime or DateTime64. */
  column: string;
  /** Rows older than this many days are removed. */
  days: number;
  /**
   * Rewrite the existing parts now so expired rows go at once (heavy on a large table);
   * false leaves them to the next merges. New rows already expired are never stored.
   * @default true
   */
  applyNow?: boolean;
}

/**
 * Sets a ClickHouse TTL on each table: the server drops rows older than `days` at its
 * merges (`OPTIMIZE TABLE … FINAL` forces one). Running it again changes the period.
 * Needs ClickHouse 19.6 or later: on an older server it throws `TTL_UNSUPPORTED` and
 * {@link purgeExpired} must be run on a schedule instead.
 *
 * ## Example
 * ```ts
 * import { setRetention } from 'tributary';
 * await setRetention(client, [{ table: 'dead_letters', column: 'failed_at', days: 30 }, { table: 'raw_events', column: 'received_at', days: 7 }]);
 * ```
 */
export async function setRetention(client: ClickHouseClient, rules: readonly RetentionRule[]): Promise<void> {
  const checked = rules.map(checkRule);
  const can = await clickhouseFeatures(client);
  if (!can.ttl) throw new TributaryError(`ClickHouse ${can.version} has no TTL (19.6 and later): run purgeExpired() on a schedule instead`, { code: 'TTL_UNSUPPORTED' });
  for (const rule of checked) {
    const later = rule.applyNow === false ? ' SETTINGS materialize_ttl_after_modify = 0' : '';
    await client.exec(`ALTER TABLE ${quoteIdentifier(rule.table)} MODIFY TTL toDateTime(${quoteIdentifier(rule.column)}) + INTERVAL ${rule.days} DAY${later}`);
  }
}

/**
 * Deletes the rows older than each rule's `days` now: retention for servers without TTL,
 * or a sweep before an audit. Resolves with the rows removed per table.
 */
export async function purgeExpired(client: ClickHouseClient, rules: readonly RetentionRule[]): Promise<Record<string, number>> {
  const removed: Record<string, number> = {};
  for (const rule of rules.map(checkRule)) {
    const where = `toDateTime(${quoteIdentifier(rule.column)}) < now() - INTERVAL ${rule.days} DAY`;
    const [row] = await client.query<{ n: string | number }>(`SELECT count() AS n FROM ${quoteIdentifier(rule.table)} WHERE ${where}`);
    const count = Number(row?.n ?? 0);
    if (count > 0) await deleteRows(client, rule.table, where);
    removed[rule.table] = count;
  }
  return removed;
}

function checkRule(rule: RetentionRule, index: number): RetentionRule {
  const where = `rules[${index}]`;
  if (!rule || typeof rule.table !== 'string' || !/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$/.test(rule.table)) throw new ConfigError(`${where}.table must be a name like dead_letters or db.dead_letters, got ${JSON.stringify(rule?.table)}`);
  if (typeof rule.column !== 'string' || !/^[A-Za-z_]\w*$/.test(rule.column)) throw new ConfigError(`${where}.column must be a column name, got ${JSON.stringify(rule.column)}`);
  positiveInteger(rule.days, NaN, `${where}.days`);
  booleanOption(rule.applyNow, true, `${where}.applyNow`);
  return rule;
}
