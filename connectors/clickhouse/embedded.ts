import { mkdirSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Session } from 'chdb';
import { ConfigError } from '../../lib/errors';
import { quietLogger, type Logger } from '../../lib/logger';
import { sleep } from '../../lib/sleep';
import { clickhouseErrorOf as errorOf, type ClickHouseClient } from './client';
import { ResultPipes, throughPipe } from './resultPipes';
import { forgetUncommittedInserts } from './uncommittedInserts';

export interface EmbeddedClickHouseOptions {
  /**
   * Directory of the embedded database, created if missing; the engine's configuration
   * (`tributary-engine.xml`) is written into it. Only one process can hold it at a time
   * (chDB locks it). @default '.tributary/chdb'
   */
  path?: string;
  /** Where opening the store reports the inserts of a crashed process it made it forget, and that results cannot stream through a named pipe here (warn). */
  logger?: Logger;
}

/**
 * The engine's configuration, written into its directory and always given to it: without
 * one, chDB reads `config.xml` from the process's working directory, so any file of that
 * name there (another tool's, a malformed one) configured the engine or stopped it from
 * opening.
 *
 * Parts merged away are removed by the cleanup thread itself, not by a pool of removal
 * threads: with the pool, inserts took 40-90 ms each (3-8 otherwise) for 0.4-0.8 s each time
 * the cleanup ran (every 30-40 s) on two cores, holding up every caller waiting for one.
 */
const ENGINE_CONFIG = `<clickhouse>
  <merge_tree>
    <concurrent_part_removal_threshold>1000000000</concurrent_part_removal_threshold>
  </merge_tree>
</clickhouse>
`;

/** A session that runs one stream at a time, and the log_comment that marks its queries. */
interface Reader {
  session: Session;
  mark: string;
}

/**
 * Reads whose result goes out through a named pipe: those that start as a SELECT, to which
 * an INTO OUTFILE clause can be added at the end (an EXPLAIN would give it to the query it
 * explains).
 */
const PIPED = /^\s*(?:SELECT|WITH)\b/i;

/** How soon a query given up before the engine listed it is looked for again (then twice as long each time, up to a second). */
const KILL_RETRY_MS = 50;

/** Directories this process has opened: the engine is shared by every session on one. */
const opened = new Set<string>();

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
  const logger = options.logger ?? quietLogger;
  let session: Session | undefined;
  // Sessions on the same directory share the engine; each holds one stream at a time.
  // A stream runs beside inserts and queries on the other sessions, where a query through
  // `queryAsync` waits for the one before it: readers streaming a long result never hold up
  // the sink.
  //
  // A query cannot be interrupted through chDB's API: aborting one only stops the waiting
  // for it, while the engine runs it on to its end, holding one of libuv's threads (which
  // the sink's inserts need too). Each reader session is marked by its own log_comment
  // instead, and a stream that is given up kills its session's one query by that mark; it
  // ends when the engine has stopped, so a caller's slot is not free while its query runs.
  const idleReaders: Reader[] = [];
  /** Where kills run: not behind the sink's inserts and queries on the store's own session. */
  let control: Session | undefined;
  const takeReader = async (): Promise<Reader> => {
    const idle = idleReaders.pop();
    if (idle) return idle;
    const fresh = { session: connect(), mark: `tributary-reader-${randomUUID()}` };
    try {
      await fresh.session.queryAsync(`SET log_comment = '${fresh.mark}'`, { format: 'TSV' });
    } catch (cause) {
      fresh.session.close();
      throw errorOf(cause);
    }
    return fresh;
  };
  /** Kills the query of the reader session marked `mark`, again until one is killed or `settled`: a query aborted before the engine listed it is killed once it is. */
  const kill = async (mark: string, settled: () => boolean): Promise<void> => {
    for (let wait = KILL_RETRY_MS; !settled(); wait = Math.min(2 * wait, 1000)) {
      let killed: string;
      try {
        killed = (await (control ??= connect()).queryAsync(`KILL QUERY WHERE Settings['log_comment'] = '${mark}' ASYNC`, { format: 'TSV' })).text();
      } catch (cause) {
        return logger.warn('embedded ClickHouse: cannot kill a query given up; it runs to its end or its time limit', { error: errorOf(cause).message });
      }
      if (killed !== '') return;
      await sleep(wait);
    }
  };
  const connect = (): Session => {
    mkdirSync(path, { recursive: true });
    const chdb = require('chdb') as typeof import('chdb');
    const config = join(path, 'tributary-engine.xml');
    let opening: Session;
    try {
      // Read once, when the process's first session opens the engine.
      if (!opened.has(path)) writeFileSync(config, ENGINE_CONFIG);
      opening = new chdb.Session(path, { connectionArgs: [`--config-file=${config}`] });
    } catch (cause) {
      throw errorOf(cause, `cannot open the embedded ClickHouse at ${path}`);
    }
    if (!opened.has(path)) {
      // Before any insert of this process: see forgetUncommittedInserts.
      try {
        const { forgotten, unread } = forgetUncommittedInserts(opening);
        for (const { table, part } of forgotten) logger.warn('embedded ClickHouse: an insert cut off by a crash was never stored; its token is forgotten, so the batch written again is stored', { table, part });
        for (const { table, reason } of unread) logger.warn('embedded ClickHouse: deduplication log not checked for inserts cut off by a crash', { table, reason });
      } catch (cause) {
        opening.close();
        throw errorOf(cause, `cannot check the embedded ClickHouse at ${path} for inserts cut off by a crash`);
      }
      opened.add(path);
    }
    return opening;
  };
  const open = (): Session => (session ??= connect());
  const pipes = new ResultPipes(logger);
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
    async *stream(sql, { format, params, signal }) {
      open();
      const taken = await takeReader();
      if (signal?.aborted) {
        idleReaders.push(taken);
        throw errorOf(signal.reason ?? new Error('aborted'));
      }
      const { session: reader, mark } = taken;
      let settled = false;
      const giveUp = () => void kill(mark, () => settled);
      signal?.addEventListener('abort', giveUp, { once: true });
      const bound = params !== undefined && Object.keys(params).length > 0;
      const framing = framingOf(format);
      // Without the signal: the answer comes when the engine has stopped (killed, on abort).
      const run = (text: string) => (bound ? reader.queryBindAsync(text, params, { format }) : reader.queryAsync(text, { format }));
      const whole = async (): Promise<Uint8Array> => {
        try {
          return (await run(sql)).bytes();
        } catch (cause) {
          throw errorOf(cause);
        }
      };
      // A session whose query failed or was abandoned can hand that query's output to the
      // next one it runs (seen after a result limit cut a JSON answer): only a session that
      // finished cleanly goes back to the pool.
      let reusable = false;
      try {
        if (framing === 'whole') {
          yield await whole();
          reusable = true;
          return;
        }
        // Native goes a block a chunk: the query server rewrites its blocks for a driver's revision.
        const pipe = PIPED.test(sql) && format.toLowerCase() !== 'native' ? await pipes.take() : undefined;
        if (pipe !== undefined) {
          // A reader that stops before the end (and did not abort) leaves the engine writing
          // on into a closed pipe, which it does not notice: the query is killed.
          const stop = () => void (signal?.aborted || giveUp());
          try {
            yield* throughPipe(pipe, sql, format, run, stop);
            reusable = true;
          } catch (cause) {
            throw errorOf(cause);
          } finally {
            pipes.give(pipe);
          }
          return;
        }
        let chunks: ReturnType<Session['queryStream']> | undefined;
        let iterator: AsyncIterator<{ raw(): Uint8Array }> | undefined;
        let first: IteratorResult<{ raw(): Uint8Array }> | undefined;
        try {
          chunks = bound ? reader.queryStreamBind(sql, params, { format, signal }) : reader.queryStream(sql, { format, signal });
          iterator = chunks[Symbol.asyncIterator]();
          first = await iterator.next();
        } catch (cause) {
          chunks?.cancel();
          // EXPLAIN, SHOW and DESCRIBE do not stream: their answers are small, so run them whole.
          if (!/Streaming query is not supported/.test(String((cause as Error)?.message))) throw errorOf(cause);
        }
        if (!chunks || !iterator || first === undefined) {
          yield await whole();
          reusable = true;
          return;
        }
        try {
          for (let next = first, index = 0; !next.done; index++) {
            // The engine computes the next chunk while this one is on its way out.
            const ahead = iterator.next();
            ahead.catch(() => undefined);
            // Each chunk comes formatted on its own: a header repeats in every one. chDB
            // hands each over as a Buffer of its own: passed on without a copy.
            const raw = next.value.raw();
            yield index === 0 || framing === 'rows' ? raw : raw.subarray(headerLength(raw, framing));
            next = await ahead;
          }
          reusable = true;
        } catch (cause) {
          throw errorOf(cause);
        } finally {
          chunks.cancel();
        }
      } finally {
        settled = true;
        signal?.removeEventListener('abort', giveUp);
        if (session && reusable) idleReaders.push({ session: reader, mark });
        else reader.close();
      }
    },
    async insert(table, rows, settings, columns) {
      try {
        await open().insert({ table, values: rows, ...(columns ? { format: 'JSONCompactEachRow', columns } : { format: 'JSONEachRow' }), settings: { ...settings } });
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
    async readsCompactRows() {
      return true;
    },
    async close() {
      for (const idle of idleReaders.splice(0)) idle.session.close();
      control?.close();
      control = undefined;
      session?.close();
      pipes.close();
      session = undefined;
    },
  };
}

/**
 * How a streamed result's chunks join up. Formats that frame the whole result (JSON, XML,
 * Pretty, Parquet, Arrow, ORC, Avro, …) are built whole, on the reader's own session. The
 * others stream: a SELECT through a named pipe (`resultPipes`), the engine writing its
 * output as one; anything else, Native, and everything where no pipe can be made, through
 * chDB's streaming API, which formats each chunk on its own, so formats with a header
 * (`…WithNames`, `…WithNamesAndTypes`) keep it from the first chunk only.
 */
type Framing = 'rows' | 'whole' | { lines: number } | { sections: number };

const ROW_FORMATS = new Set(['tabseparated', 'tsv', 'tabseparatedraw', 'tsvraw', 'raw', 'csv', 'jsoneachrow', 'jsonlines', 'ndjson', 'jsonstringseachrow', 'jsoncompacteachrow', 'jsoncompactstringseachrow', 'rowbinary', 'native', 'lineasstring', 'rawblob', 'msgpack', 'null', 'tskv', 'bsoneachrow']);

export function framingOf(format: string): Framing {
  const name = format.toLowerCase();
  if (ROW_FORMATS.has(name)) return 'rows';
  const headed = /^(tabseparated|tsv|tabseparatedraw|tsvraw|csv|jsoncompacteachrow|jsoncompactstringseachrow|rowbinary)with(names|namesandtypes)$/.exec(name);
  if (!headed) return 'whole';
  const count = headed[2] === 'names' ? 1 : 2;
  return headed[1] === 'rowbinary' ? { sections: count } : { lines: count };
}

/** Bytes of the header a chunk starts with: text lines, or RowBinary's count and strings. */
function headerLength(chunk: Uint8Array, framing: { lines: number } | { sections: number }): number {
  if ('lines' in framing) {
    let at = 0;
    for (let line = 0; line < framing.lines; line++) at = chunk.indexOf(0x0a, at) + 1;
    return at;
  }
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = chunk[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  const columns = varint();
  for (let i = 0; i < columns * framing.sections; i++) {
    const length = varint();
    at += length;
  }
  return at;
}
