import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Session } from 'chdb';
import { ConfigError } from '../../lib/errors';
import { clickhouseErrorOf as errorOf, type ClickHouseClient } from './client';

export interface EmbeddedClickHouseOptions {
  /**
   * Directory of the embedded database, created if missing. Only one process can hold
   * it at a time (chDB locks it). @default '.tributary/chdb'
   */
  path?: string;
}

/**
 * ClickHouse in this process (chDB): the zero-setup store. Queries and inserts run off
 * the event loop. The chdb package is loaded on first use, so importing tributary does
 * not pay for it.
 *
 * ## Example
 * ```ts
 * import { embeddedClickHouse } from 'tributary';
 * const clickhouse = embeddedClickHouse({ path: './data/bookings' });
 * console.log(await clickhouse.query('SELECT count() AS n FROM bookings'));
 * await clickhouse.close();
 * ```
 */
export function embeddedClickHouse(options: EmbeddedClickHouseOptions = {}): ClickHouseClient {
  const path = resolve(options.path ?? '.tributary/chdb');
  if (path.includes('\0')) throw new ConfigError('path must not contain NUL');
  let session: Session | undefined;
  const open = (): Session => {
    if (session) return session;
    mkdirSync(path, { recursive: true });
    const chdb = require('chdb') as typeof import('chdb');
    try {
      session = new chdb.Session(path);
    } catch (cause) {
      throw errorOf(cause, `cannot open the embedded ClickHouse at ${path}`);
    }
    return session;
  };
  return {
    kind: 'embedded',
    async exec(sql) {
      try {
        await open().queryAsync(sql, { format: 'TSV' });
      } catch (cause) {
        throw errorOf(cause);
      }
    },
    async query<R>(sql: string) {
      let text: string;
      try {
        text = (await open().queryAsync(sql, { format: 'JSONEachRow' })).text();
      } catch (cause) {
        throw errorOf(cause);
      }
      return text === '' ? [] : text.trimEnd().split('\n').map((line) => JSON.parse(line) as R);
    },
    async queryText(sql, format) {
      try {
        return (await open().queryAsync(sql, { format })).text();
      } catch (cause) {
        throw errorOf(cause);
      }
    },
    async insert(table, rows, settings) {
      try {
        await open().insert({ table, values: rows, format: 'JSONEachRow', settings: { ...settings } });
      } catch (cause) {
        throw errorOf(cause);
      }
    },
    async supportsDeduplicationToken() {
      return true;
    },
    async readsDecimalStrings() {
      return true;
    },
    async close() {
      session?.close();
      session = undefined;
    },
  };
}
