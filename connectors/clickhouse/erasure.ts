import { createHash } from 'node:crypto';
import { AuditLog } from '../../lib/security/audit';
import { ConfigError, TributaryError } from '../../lib/errors';
import { SubjectKeys } from '../../lib/security/subjectKeys';
import { SUBJECT_VERSION } from '../../lib/security/fieldCipher';
import { quoteIdentifier, type ClickHouseClient } from './client';
import { deleteRows, literal, updateRows } from './mutations';

/** One table holding rows about data subjects, and what erasure does to them. */
export interface ErasureTable {
  /** `bookings` or `db.bookings`. */
  table: string;
  /** The column that tells the subject's rows: see `match`. */
  column: string;
  /**
   * `delete` removes the rows; `anonymise` keeps them, so counts and sums stay right, with
   * the subject column emptied and the `set` columns overwritten. @default 'delete'
   */
  action?: 'delete' | 'anonymise';
  /** With `anonymise`: column → value written (strings and numbers, e.g. encrypted fields → ''). @default {} */
  set?: Readonly<Record<string, string | number>>;
  /**
   * What the column holds: the subject id; its pseudonym (`encrypt({ pseudonymize: true })`);
   * or values sealed under the subject's keys (`key`: a dead letter's `raw`), matched by
   * their `sv1:<keyId>:` prefix. @default 'subject'
   */
  match?: 'subject' | 'pseudonym' | 'key';
}

export interface SubjectErasureOptions {
  client: ClickHouseClient;
  /** The keys to shred. */
  subjectKeys: SubjectKeys;
  /** The tables whose rows name subjects. */
  tables: readonly ErasureTable[];
  /** Records each request and its outcome; erase resolves only once they are durable. */
  audit: AuditLog;
}

/** Who asks for an erasure and on what ground. */
export interface ErasureRequest {
  /** The person or service asking (an operator's name, an API key id). */
  actor: string;
  /** The ground: `GDPR art. 17 request #123`. */
  reason: string;
}

/** What one `erase` touched. */
export interface ErasureReport {
  /** SHA-256 of the subject id (hex, 32 characters): how the audit log names the subject. */
  subjectHash: string;
  /** Keys deleted: every value encrypted under them is unreadable from now on. */
  keysShredded: number;
  /** Rows deleted or anonymised, per table. */
  tables: { table: string; action: 'delete' | 'anonymise'; rows: number }[];
  /** False when there was nothing left to erase: a repeated request. */
  touched: boolean;
}

/**
 * Erasure of a data subject ("right to be forgotten") by crypto-shredding: `erase`
 * deletes the subject's keys first, so every field encrypted under them becomes
 * unreadable wherever it was copied (tables, dead letters, Kafka topics, backups), then
 * deletes or anonymises the subject's rows in the given tables (lightweight `DELETE` where
 * the server has it, else `ALTER TABLE … DELETE`; `ALTER TABLE … UPDATE` to anonymise).
 *
 * Each request and its outcome are in the audit log (`erasure.request`, then
 * `erasure.done` or `erasure.failed`), naming the subject only by a hash. A repeated
 * request is a no-op that reports `touched: false`; a request that failed half-way can be
 * repeated to finish it.
 *
 * ## Example
 * ```ts
 * import { subjectErasure } from 'tributary';
 * const erasure = subjectErasure({ client, subjectKeys, audit, tables: [
 *   { table: 'bookings', column: 'customer_token', match: 'pseudonym', action: 'anonymise', set: { travellers_sealed: '' } },
 *   { table: 'dead_letters', column: 'raw', match: 'key' },
 * ] });
 * const report = await erasure.erase(customerToken, { actor: 'dpo@example.com', reason: 'GDPR art. 17, ticket 123' });
 * ```
 */
export function subjectErasure(options: SubjectErasureOptions): { erase(subject: string, request: ErasureRequest): Promise<ErasureReport> } {
  if (!options?.client) throw new ConfigError('client is required');
  if (!(options.subjectKeys instanceof SubjectKeys)) throw new ConfigError('subjectKeys must be a SubjectKeys');
  if (!(options.audit instanceof AuditLog)) throw new ConfigError('audit must be an AuditLog: erasure requests must be recorded');
  if (!Array.isArray(options.tables)) throw new ConfigError('tables must be an array of { table, column }');
  const tables = options.tables.map((t, i) => checkTable(t, `tables[${i}]`));
  const { client, subjectKeys, audit } = options;

  return {
    async erase(subject, request) {
      if (typeof subject !== 'string' || subject === '') throw new ConfigError('subject must be a non-empty string');
      if (!request || typeof request.actor !== 'string' || request.actor === '' || typeof request.reason !== 'string' || request.reason === '') {
        throw new ConfigError('request must name the actor and the reason: { actor, reason }');
      }
      const subjectHash = createHash('sha256').update(subject).digest('hex').slice(0, 32);
      const event = { actor: request.actor, purpose: request.reason, target: `subject:${subjectHash}` };
      audit.record({ type: 'erasure.request', ...event, outcome: 'requested' });
      await audit.flush();
      try {
        // Pseudonyms and key ids come from the keys: find them before the keys are gone.
        const pseudonyms = tables.some((t) => t.match === 'pseudonym') ? await subjectKeys.pseudonymsOf(subject) : [];
        const prefixes = tables.some((t) => t.match === 'key') ? (await subjectKeys.keysOf(subject)).map((k) => `${SUBJECT_VERSION}:${k.keyId}:`) : [];
        const keysShredded = await subjectKeys.shred(subject);
        const report: ErasureReport = { subjectHash, keysShredded, tables: [], touched: keysShredded > 0 };
        for (const t of tables) {
          const values = t.match === 'pseudonym' ? pseudonyms : t.match === 'key' ? prefixes : [subject];
          let rows = 0;
          if (values.length > 0) {
            // Every sv1 prefix has the same length; substring() is there on old servers too.
            const tested = t.match === 'key' ? `substring(${quoteIdentifier(t.column)}, 1, ${values[0]!.length})` : quoteIdentifier(t.column);
            const where = `${tested} IN (${values.map(literal).join(',')})`;
            const [row] = await client.query<{ n: string | number }>(`SELECT count() AS n FROM ${quoteIdentifier(t.table)} WHERE ${where}`);
            rows = Number(row?.n ?? 0);
            if (rows > 0 && t.action === 'delete') await deleteRows(client, t.table, where);
            if (rows > 0 && t.action === 'anonymise') await updateRows(client, t.table, assignments(t), where);
          }
          report.tables.push({ table: t.table, action: t.action, rows });
          if (rows > 0) report.touched = true;
        }
        audit.record({ type: 'erasure.done', ...event, outcome: report.touched ? 'ok' : 'nothing-to-erase', details: { keysShredded, tables: report.tables } });
        await audit.flush();
        return report;
      } catch (error) {
        const code = error instanceof TributaryError ? error.code : 'ERASURE_FAILED';
        audit.record({ type: 'erasure.failed', ...event, outcome: code, details: { message: (error as Error).message } });
        await audit.flush();
        throw error;
      }
    },
  };
}

function checkTable(t: ErasureTable, where: string): Required<ErasureTable> {
  if (!t || typeof t.table !== 'string' || !/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$/.test(t.table)) throw new ConfigError(`${where}.table must be a name like bookings or db.bookings, got ${JSON.stringify(t?.table)}`);
  if (typeof t.column !== 'string' || !/^[A-Za-z_]\w*$/.test(t.column)) throw new ConfigError(`${where}.column must be a column name, got ${JSON.stringify(t.column)}`);
  const action = t.action ?? 'delete';
  if (action !== 'delete' && action !== 'anonymise') throw new ConfigError(`${where}.action must be 'delete' or 'anonymise', got ${JSON.stringify(t.action)}`);
  const set = t.set ?? {};
  if (action === 'delete' && Object.keys(set).length > 0) throw new ConfigError(`${where}.set is only for action 'anonymise'`);
  for (const [column, value] of Object.entries(set)) {
    if (!/^[A-Za-z_]\w*$/.test(column)) throw new ConfigError(`${where}.set keys must be column names, got ${JSON.stringify(column)}`);
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) throw new ConfigError(`${where}.set.${column} must be a string or a finite number`);
  }
  const match = t.match ?? 'subject';
  if (match !== 'subject' && match !== 'pseudonym' && match !== 'key') throw new ConfigError(`${where}.match must be 'subject', 'pseudonym' or 'key', got ${JSON.stringify(t.match)}`);
  if (match === 'key' && action === 'anonymise') throw new ConfigError(`${where}: match 'key' goes with action 'delete' (the sealed column is what would be emptied)`);
  return { table: t.table, column: t.column, action, set, match };
}

function assignments(t: Required<ErasureTable>): string {
  const set: Record<string, string | number> = { ...t.set, [t.column]: '' };
  return Object.entries(set)
    .map(([column, value]) => `${quoteIdentifier(column)} = ${typeof value === 'number' ? String(value) : literal(value)}`)
    .join(', ');
}
