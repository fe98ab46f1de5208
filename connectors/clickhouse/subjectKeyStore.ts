import { ConfigError } from '../../lib/errors';
import type { SubjectKeyRecord, SubjectKeyStore } from '../../lib/security/subjectKeys';
import { clickhouseErrorOf, quoteIdentifier, type ClickHouseClient } from './client';
import { deleteRows, literal } from './mutations';

export interface ClickHouseSubjectKeyStoreOptions {
  client: ClickHouseClient;
  /**
   * The table, made by the compliance migration (see `docs/compliance.md`):
   * `subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64`.
   * @default 'subject_keys'
   */
  table?: string;
}

/** Subjects asked for in one query, at most. */
const CHUNK = 1000;

/**
 * Subject keys in a ClickHouse table: the durable default of {@link SubjectKeys}. Keys
 * are stored wrapped; deleting a subject's keys is a mutation that rewrites the table's
 * parts (not a lightweight delete that only masks rows), so the wrapped bytes leave the
 * live data; the replaced parts are dropped by the server after `old_parts_lifetime`.
 *
 * ## Example
 * ```ts
 * import { SubjectKeys, Keyring, clickHouseSubjectKeyStore, embeddedClickHouse } from 'tributary';
 * const subjectKeys = new SubjectKeys({ keyring: Keyring.fromEnv(), store: clickHouseSubjectKeyStore({ client: embeddedClickHouse() }) });
 * ```
 */
export function clickHouseSubjectKeyStore(options: ClickHouseSubjectKeyStoreOptions): SubjectKeyStore {
  if (!options?.client) throw new ConfigError('client is required');
  const table = options.table ?? 'subject_keys';
  if (!/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$/.test(table)) throw new ConfigError(`table must be a name like subject_keys or db.subject_keys, got ${JSON.stringify(table)}`);
  const { client } = options;
  const quoted = quoteIdentifier(table);
  const select = async (column: 'subject' | 'key_id', values: readonly string[]): Promise<SubjectKeyRecord[]> => {
    const records: SubjectKeyRecord[] = [];
    for (let i = 0; i < values.length; i += CHUNK) {
      const list = values.slice(i, i + CHUNK).map(literal).join(',');
      const rows = await client.query<{ subject: string; key_id: string; master_key_id: string; wrapped: string; created_ms: string | number }>(
        `SELECT subject, key_id, master_key_id, wrapped, created_ms FROM ${quoted} WHERE ${column} IN (${list})`,
      );
      for (const row of rows) records.push({ subject: row.subject, keyId: row.key_id, masterKeyId: row.master_key_id, wrapped: row.wrapped, createdAt: Number(row.created_ms) });
    }
    return records;
  };
  return {
    findBySubjects: (subjects) => select('subject', subjects),
    findByIds: (keyIds) => select('key_id', keyIds),
    async put(records) {
      const text = records.map((r) => JSON.stringify({ subject: r.subject, key_id: r.keyId, master_key_id: r.masterKeyId, wrapped: r.wrapped, created_ms: r.createdAt })).join('\n');
      try {
        await client.insert(table, Buffer.from(text + '\n'), {});
      } catch (cause) {
        throw clickhouseErrorOf(cause, `cannot store subject keys in ${table}`);
      }
    },
    async delete(subject) {
      const where = `subject = ${literal(subject)}`;
      const [row] = await client.query<{ n: string | number }>(`SELECT count() AS n FROM ${quoted} WHERE ${where}`);
      const count = Number(row?.n ?? 0);
      if (count > 0) await deleteRows(client, table, where, { physical: true });
      return count;
    },
  };
}
