import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Session } from 'chdb';
import { quoteName } from '../../lib/store';

/** An insert whose token the engine remembers although its rows were never committed. */
export interface UncommittedInsert {
  /** `database.table` */
  table: string;
  /** The part the insert would have made, e.g. `all_12_12_0`. */
  part: string;
  /** The block id (from the insert token) the deduplication log holds for it. */
  blockId: string;
}

/** What `forgetUncommittedInserts` did to the tables of one embedded store. */
export interface ForgetResult {
  forgotten: UncommittedInsert[];
  /** Tables whose deduplication log this code cannot read (left as they are), with why. */
  unread: { table: string; reason: string }[];
}

const ADD = '1';
const DROP = '2';
/** `<partition>_<min block>_<max block>_<level>[_<mutation>]`; partition ids have no `_`. */
const PART = /^[^_]+_(\d+)_(\d+)_\d+(?:_\d+)?$/;
const LOG = /^deduplication_log_(\d+)\.txt$/;

/**
 * Makes the embedded engine forget the tokens of inserts a crash cut off between their two
 * steps, so that the batch, written again with its token, is stored instead of dropped as a
 * duplicate of rows that do not exist.
 *
 * A plain MergeTree with `non_replicated_deduplication_window` commits an insert in two
 * steps (MergeTreeSink, ClickHouse 26.7): it appends the block id made from the insert's
 * token to the table's deduplication log, then renames the written part from
 * `tmp_insert_*` to its name, which makes the rows stored. A process killed between the two
 * leaves the block id in the log and the part as a temporary directory the next start
 * removes; from then on every insert with that token is taken for a duplicate and dropped.
 * For tributary that is one batch lost for good after a kill -9: the batch past the saved
 * position is written again with the same token, as it must be to absorb the batches that
 * did land.
 *
 * Block numbers only grow (one counter per table) and the two steps run under the table's
 * parts lock, so the insert cut off holds the highest block number of the log and no part on
 * disk reaches it: such entries are the ones forgotten. The engine has no statement for it;
 * this appends the engine's own DROP record (`2 <tab> part <tab> block id`) to the newest log
 * file while the table is detached, and attaches it again, which reloads the log. Must run
 * before the first insert after the store was opened: the next insert takes the same block
 * number and its part would hide the entry.
 *
 * A log this code cannot read (a record kind it does not know, a torn last line) is left as
 * it is and reported in `unread`.
 */
export function forgetUncommittedInserts(session: Session): ForgetResult {
  const result: ForgetResult = { forgotten: [], unread: [] };
  const sql = `SELECT database, name, data_paths FROM system.tables WHERE engine LIKE '%MergeTree' AND NOT is_temporary AND database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA')`;
  const text = session.query(sql, 'JSONEachRow').toString();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const { database, name, data_paths: paths } = JSON.parse(line) as { database: string; name: string; data_paths: string[] };
    const table = `${database}.${name}`;
    const logs = paths.map((path) => join(path, 'deduplication_logs')).find((dir) => existsSync(dir));
    if (!logs) continue;
    let entries: Map<string, string>;
    let newest: string;
    try {
      ({ entries, newest } = liveEntries(logs));
    } catch (error) {
      result.unread.push({ table, reason: (error as Error).message });
      continue;
    }
    const highest = highestBlockOnDisk(paths);
    const uncommitted = [...entries].filter(([, part]) => Number(PART.exec(part)?.[2] ?? -1) > highest);
    if (uncommitted.length === 0) continue;
    const quoted = `${quoteName(database)}.${quoteName(name)}`;
    session.query(`DETACH TABLE ${quoted}`);
    try {
      appendFileSync(join(logs, newest), uncommitted.map(([blockId, part]) => `${DROP}\t${part}\t${blockId}\n`).join(''));
    } finally {
      session.query(`ATTACH TABLE ${quoted}`);
    }
    for (const [blockId, part] of uncommitted) result.forgotten.push({ table, part, blockId });
  }
  return result;
}

/** The log files of a table, oldest first (number 0 is a newer engine's compaction marker, not a log). */
function logFiles(dir: string): string[] {
  return readdirSync(dir)
    .map((file) => ({ file, number: Number(LOG.exec(file)?.[1] ?? 0) }))
    .filter(({ number }) => number > 0)
    .sort((a, b) => a.number - b.number)
    .map(({ file }) => file);
}

/**
 * Block id → part of the entries the engine loads from the log, replayed as it does: ADD
 * records add, DROP records remove; and the newest log file, where records are appended.
 * Newer engines write more kinds (CANCEL, after a failed ADD): such a log is not read here.
 */
function liveEntries(dir: string): { entries: Map<string, string>; newest: string } {
  const entries = new Map<string, string>();
  const files = logFiles(dir);
  for (const file of files) {
    const text = readFileSync(join(dir, file), 'latin1');
    if (text !== '' && !text.endsWith('\n')) throw new Error(`${file} ends inside a record`);
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const [op, part, blockId, more] = line.split('\t');
      if (more !== undefined || blockId === undefined || (op !== ADD && op !== DROP)) throw new Error(`${file} holds a record this version does not read: ${JSON.stringify(line.slice(0, 80))}`);
      if (op === ADD) entries.set(blockId, part!);
      else entries.delete(blockId);
    }
  }
  // Without a log file there are no entries, and nothing is appended.
  return { entries, newest: files[files.length - 1] ?? '' };
}

/** The highest block number of any part directory of the table (active or outdated), -1 without one. */
function highestBlockOnDisk(paths: readonly string[]): number {
  let highest = -1;
  for (const path of paths) {
    if (!existsSync(path)) continue;
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const part = entry.isDirectory() ? PART.exec(entry.name) : null;
      if (part) highest = Math.max(highest, Number(part[2]));
    }
  }
  return highest;
}
