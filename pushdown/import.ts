/**
 * Bulk imports of NDJSON files at engine speed: the records a {@link PushdownPlan} accepts
 * are mapped and stored by the embedded ClickHouse itself; every other record goes
 * through the JS path (parse → the caller's transform → the sink or dead letters),
 * exactly as a plain pipeline reading the same files would have handled it.
 *
 * How a file is read:
 * - JS reads it a chunk at a time (`chunkBytes`, cut after the last newline) and frames
 *   every chunk with the NDJSON framer the files source uses, so records, positions,
 *   record numbers and refusals are the files source's own. A chunk of plain lines only
 *   (ASCII, `{…}`, within the limits: every line one the framer would hand over as it is)
 *   is numbered from native searches and skipped by the framer instead.
 * - The engine gets each chunk as a private temporary file and runs
 *   `INSERT INTO <table> SELECT <columns> FROM file(<chunk>, LineAsString) WHERE <accepted>`
 *   (through the plan's `select` when it has one: the parts they share computed once per line)
 *   with an insert token of the file and the chunk's byte range: a re-run (after kill -9)
 *   repeats every chunk and the table absorbs the ones it already holds. A chunk is one
 *   insert block, so it is stored whole or not at all.
 * - The engine sees only lines the JS path would parse as they are: a line starting with
 *   `{` and ending with `}` with nothing around (no byte order mark, no CR), valid UTF-8,
 *   within the size and depth limits. JS spoils the first byte of any other line that
 *   would pass that test, in its own copy, before the engine reads it.
 * - A chunk whose lines the plan all accepts is stored in one pass (a refused line makes
 *   that pass fail, storing nothing); otherwise the engine names the refused lines and
 *   stores the rest. Refused and unseen lines then go through the JS path, in file order.
 *
 * The user's file path never enters SQL: the engine reads only the temporary chunk files.
 */
import { isAscii } from 'node:buffer';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readSync, renameSync, rmSync, writeFileSync, type Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { Observable, type OperatorFunction } from 'rxjs';
import { toClickHouse, type ClickHouseClient } from '../connectors/clickhouse';
import { freeName } from '../connectors/files/inbox';
import { deliverFrame, readFile, type ReadSettings } from '../connectors/files/read';
import { resolveReadSettings } from '../connectors/files/source';
import { LineFramer, type Frame } from '../formats/framing';
import type { Envelope, RecordMeta } from '../lib/envelope';
import { ConfigError, ConnectorError, TributaryError } from '../lib/errors';
import { numberAtLeast } from '../lib/options';
import { hasMoreOpenings } from '../lib/limits';
import { quietLogger, type Logger } from '../lib/logger';
import { Pipeline, type PipelineBatchOptions } from '../lib/pipeline';
import type { DeadLetter } from '../lib/sink';
import type { Source, SourceContext } from '../lib/source';
import { quoteIdentifier } from '../lib/store';
import type { InFlightOptions } from '../lib/credits';
import type { PushdownPlan } from './plan';

export interface BulkImportOptions<T> {
  /** Where the records go. Only the embedded store (`embeddedClickHouse`) runs the plan; any other client imports in JS. */
  client: ClickHouseClient;
  /** NDJSON files (plain, gzipped or not: a gzipped or UTF-16 file is read in JS). */
  files: string | readonly string[];
  /** Target table, like `bookings` or `db.bookings`. */
  table: string;
  /** Where refused records go. @default 'dead_letters' */
  deadLetterTable?: string;
  /** The SQL the engine runs (`planPushdown(…)`); a plan that is not pushable imports in JS, saying why. */
  plan: PushdownPlan;
  /** The JS path, the same steps a plain pipeline runs: `pipe(normalize(…), validate(…))`. */
  transform: OperatorFunction<Envelope<any>, Envelope<T>>;
  /** The vendor of a file's records (`meta.vendor`): fixed, or decided per file. */
  vendor?: string | ((file: string) => string | undefined);
  /** Names the pipeline in dead letters and insert tokens, as the plain pipeline's `name`. @default 'pipeline' */
  name?: string;
  /** `meta.source` of the records, as the plain pipeline's files source names it. @default 'files' */
  source?: string;
  /**
   * Bytes of a file the engine takes in one insert (one part), cut after the last newline;
   * at least twice `maxRecordBytes`. Memory holds two chunks. Measured on 2M globetrek
   * bookings: 64 MiB used 10–25% less CPU than 16 MiB (fewer parts to write and merge), and
   * 128 MiB about a quarter less again (the engine plans each insert's SQL anew), for
   * ~0.35 GiB more peak RSS.
   * @default 128 MiB
   */
  chunkBytes?: number;
  /** Where the private chunk files go while the engine reads them. @default the OS temporary directory */
  tempDir?: string;
  /** Longest line in bytes; longer ones are dead-lettered. @default 1 MiB */
  maxRecordBytes?: number;
  /** Deepest nesting of a line; deeper ones are dead-lettered. @default 64 */
  maxDepth?: number;
  /** Batches of the JS path (see `PipelineOptions.batch`). */
  batch?: PipelineBatchOptions;
  /** In-flight budget of the JS path (see `PipelineOptions.inFlight`). */
  inFlight?: InFlightOptions;
  /** Where the import says how it runs (pushed down or in JS, and why), and the JS path logs. @default quietLogger */
  logger?: Logger;
  /** Called as files are imported (at most every `progressEveryMs`) and at the end of each. */
  onProgress?: (progress: BulkImportProgress) => void;
  /** Least time between two progress events of a file. @default 1000 */
  progressEveryMs?: number;
  /**
   * Inbox semantics: once every record is durable, each file moves here (created if
   * missing); a file that could not be read as NDJSON (empty, corrupt gzip) moves to
   * `failedDir` instead. A failed import, or one with nacked records, moves nothing.
   * @default files stay where they are
   */
  doneDir?: string;
  /** Where a file that could not be read as NDJSON goes, with `doneDir`. @default `<doneDir>/../failed` */
  failedDir?: string;
}

/** How far a file's import has come. */
export interface BulkImportProgress {
  file: string;
  /** Bytes of the file read so far, and its size. */
  bytes: number;
  totalBytes: number;
  /** Records read so far (every non-blank line). */
  records: number;
  /** Of those, stored by the engine. */
  storedByEngine: number;
  /** Of those, handed to the JS path (stored or dead-lettered there). */
  toJs: number;
  elapsedMs: number;
  recordsPerSecond: number;
  /** True on the last event of the file. */
  done: boolean;
}

/** Whether the engine ran the plan, and why not when it did not. */
export interface PushdownDecision {
  pushedDown: boolean;
  /** Why the import runs in JS; empty when pushed down. */
  reasons: readonly string[];
}

/** What an import came to: read = storedByEngine + storedByJs + deadLettered + nacked. */
export interface BulkImportResult extends PushdownDecision {
  /** Records read: every non-blank line of every file (refused ones included). */
  read: number;
  /** Records the engine mapped and stored. */
  storedByEngine: number;
  /** Records the JS path stored. */
  storedByJs: number;
  /** Records the JS path dead-lettered. */
  deadLettered: number;
  /** Records that could not be made durable. */
  nacked: number;
  /** Engine inserts run (chunks), and of those, chunks where the plan refused some lines (two passes). */
  chunks: number;
  chunksWithRefusals: number;
  /** With `doneDir`: where each file went, and why a failed one failed. */
  moved: { file: string; to: string; failure?: string }[];
}

const MB = 1024 * 1024;
/** Marks the engine's refusal of a line in the one-pass insert (code 395, FUNCTION_THROW_IF_VALUE_IS_NON_ZERO). */
const REFUSED_MARKER = 'tributary bulk import: the plan does not accept a line of this chunk';
/** The lines the engine may store: a JSON object with nothing around it. JS sees to it that no other line passes. */
const LINE_GUARD = "startsWith(line, '{') AND endsWith(line, '}')";
/** Chunks stored at once. */
const STORING = 2;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const NEWLINE = 0x0a;
const SPACE = 0x20;

/**
 * Whether an import of `files` into `client` with `plan` runs in the engine, and if not,
 * why: what {@link bulkImport} will do, without doing it.
 */
export function bulkImportDecision(client: ClickHouseClient, plan: PushdownPlan): PushdownDecision {
  const reasons: string[] = [];
  if (!plan.pushable) reasons.push(...plan.reasons);
  else if (plan.input !== 'ndjson') reasons.push(`plan input ${JSON.stringify(plan.input)} is not read by bulk imports (ndjson only)`);
  if (client.kind !== 'embedded') reasons.push(`client is ${client.kind}: only the embedded store reads the chunk files a plan runs on`);
  return { pushedDown: reasons.length === 0, reasons };
}

/**
 * Imports NDJSON files into a ClickHouse table: in the engine when the plan is pushable
 * and the store is embedded, the records it does not accept (and every record otherwise)
 * through `transform` into the table or `deadLetterTable`. Idempotent: a re-run of the
 * same files, after a crash or not, stores each record once.
 *
 * ## Example
 * ```ts
 * import { bulkImport, embeddedClickHouse } from 'tributary';
 * const result = await bulkImport({ client: embeddedClickHouse(), files: ['feed.ndjson'], table: 'bookings',
 *   plan, transform: pipe(normalize({ mappings }), validate({ schema })), vendor: 'globetrek', name: 'bookings' });
 * console.log(result.pushedDown, result.storedByEngine, result.deadLettered);
 * ```
 */
export async function bulkImport<T>(options: BulkImportOptions<T>): Promise<BulkImportResult> {
  const files = (typeof options.files === 'string' ? [options.files] : [...(options.files ?? [])]).map((file) => resolve(file));
  if (files.length === 0) throw new ConfigError('files must name at least one NDJSON file');
  if (!options.plan || typeof options.plan.pushable !== 'boolean') throw new ConfigError('plan must be a PushdownPlan (from planPushdown)');
  if (typeof options.transform !== 'function') throw new ConfigError('transform must be the JS path, e.g. pipe(normalize(…), validate(…))');
  const settings = resolveReadSettings({ format: 'ndjson', maxRecordBytes: options.maxRecordBytes, maxDepth: options.maxDepth }, options.source ?? 'files');
  const chunkBytes = options.chunkBytes ?? 128 * MB;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 2 * settings.limits.maxRecordBytes) {
    throw new ConfigError(`chunkBytes must be an integer >= 2 × maxRecordBytes (${2 * settings.limits.maxRecordBytes}), got ${options.chunkBytes}`);
  }
  const progressEveryMs = numberAtLeast(options.progressEveryMs, 1000, 'progressEveryMs', 0);
  const logger = options.logger ?? quietLogger;
  const name = options.name ?? 'pipeline';
  const decision = bulkImportDecision(options.client, options.plan);
  if (decision.pushedDown) logger.info('bulk import runs in the engine', { pipeline: name, table: options.table, files: files.length });
  else logger.warn('bulk import runs in JS, not in the engine', { pipeline: name, table: options.table, reasons: decision.reasons.join('; ') });

  const vendor = typeof options.vendor === 'function' ? options.vendor : () => options.vendor as string | undefined;
  const counts: ImportCounts = { read: 0, storedByEngine: 0, toJs: 0, chunks: 0, chunksWithRefusals: 0 };
  const runner =
    decision.pushedDown && options.plan.pushable
      ? new EngineImport(options.client, options.table, options.plan, name, settings, chunkBytes, options.tempDir ?? tmpdir(), counts, options.onProgress, progressEveryMs)
      : undefined;
  const keys = new WeakMap<Envelope<unknown>, string>();
  /** Per file read to its end: why it could not be read as NDJSON, if it could not. */
  const failures = new Map<string, string | undefined>();
  const source: Source<unknown> = {
    name: settings.source,
    open(context: SourceContext) {
      return new Observable<Envelope<unknown>>((subscriber) => {
        (async () => {
          for (const file of files) {
            if (context.signal.aborted) return;
            const emit = (key: string) => (envelope: Envelope<unknown>) => {
              keys.set(envelope, key);
              subscriber.next(envelope);
            };
            if (runner) failures.set(file, await runner.file(file, vendor(file), context, emit));
            else {
              const outcome = await readFile(file, 'ndjson', vendor(file), settings, context, emit(file));
              counts.read += outcome.records;
              counts.toJs += outcome.records;
              failures.set(file, outcome.failure);
            }
          }
        })().then(
          () => subscriber.complete(),
          (error: unknown) => subscriber.error(error),
        );
      });
    },
    // A chunk's JS records never share a batch with another chunk's: batches, and so
    // their insert tokens, come out the same on a re-run.
    batchKey: (envelope) => keys.get(envelope) ?? '',
  };

  const pipeline = new Pipeline<T>({
    name,
    source,
    transform: options.transform,
    sink: toClickHouse<T>({ client: options.client, table: options.table }),
    deadLetters: toClickHouse<DeadLetter>({ client: options.client, table: options.deadLetterTable ?? 'dead_letters' }),
    // Batches are cut by rows, bytes and chunk only: a time limit would cut them where a re-run may not.
    batch: runner ? { ...options.batch, maxWaitMs: 24 * 3600 * 1000 } : options.batch,
    ...(options.inFlight && { inFlight: options.inFlight }),
    logger,
  });
  try {
    const stats = await pipeline.run();
    if (stats.read !== counts.toJs) {
      throw new TributaryError(`bulk import lost count: ${counts.toJs} records handed to the JS path, its pipeline read ${stats.read}`, { code: 'ACCOUNTING' });
    }
    const moved = options.doneDir !== undefined && stats.nacked === 0 ? moveFiles(failures, resolve(options.doneDir), resolve(options.failedDir ?? join(options.doneDir, '..', 'failed'))) : [];
    return {
      ...decision,
      moved,
      read: counts.read,
      storedByEngine: counts.storedByEngine,
      storedByJs: stats.written,
      deadLettered: stats.deadLettered,
      nacked: stats.nacked,
      chunks: counts.chunks,
      chunksWithRefusals: counts.chunksWithRefusals,
    };
  } finally {
    runner?.close();
  }
}

/** Running totals of an import, all files together. */
interface ImportCounts {
  read: number;
  storedByEngine: number;
  toJs: number;
  chunks: number;
  chunksWithRefusals: number;
}

/** A stretch of a file the engine reads as one insert, and the records JS keeps from it. */
interface Chunk {
  index: number;
  /** File offset of the first byte the engine reads, and of the byte after its last. */
  start: number;
  end: number;
  /** What the engine reads: whole lines, spoiled where JS must keep them away from it. */
  data: Buffer;
  /** Records the engine may store, ascending: their offsets in the file, lines and record numbers (their frames are rebuilt should the plan refuse them). */
  eligible: EligibleLines;
  /** Records only the JS path may read, in file order. */
  js: PendingFrame[];
}

/** The records of a chunk the engine may store, ascending by offset. */
interface EligibleLines {
  offsets: number[];
  lines: number[];
  records: number[];
}

/** The index of `value` in ascending `values`, or where it would go. */
function sortedIndex(values: readonly number[], value: number): number {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (values[mid]! < value) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** A frame with its record number, its bytes its own (not a view of a reused buffer). */
interface PendingFrame {
  frame: Frame;
  record: number;
}

/** Reads files a chunk at a time, stores what the plan accepts, hands the rest to the JS path. */
class EngineImport {
  readonly #client: ClickHouseClient;
  readonly #table: string;
  readonly #plan: Extract<PushdownPlan, { pushable: true }>;
  readonly #pipeline: string;
  readonly #settings: ReadSettings;
  readonly #chunkBytes: number;
  readonly #dir: string;
  readonly #counts: ImportCounts;
  readonly #onProgress: ((progress: BulkImportProgress) => void) | undefined;
  readonly #progressEveryMs: number;
  readonly #planId: string;
  readonly #columns: string;
  /** `line`, `__pd_row` (the engine's 0-based line number), `__pd_accepted` and the columns `__pd_c0`, `__pd_c1`, … of the lines of `input`. */
  readonly #lines: (input: string) => string;

  constructor(
    client: ClickHouseClient,
    table: string,
    plan: Extract<PushdownPlan, { pushable: true }>,
    pipeline: string,
    settings: ReadSettings,
    chunkBytes: number,
    tempDir: string,
    counts: ImportCounts,
    onProgress: ((progress: BulkImportProgress) => void) | undefined,
    progressEveryMs: number,
  ) {
    if (plan.columns.length === 0) throw new ConfigError('plan.columns must name at least one column');
    this.#client = client;
    this.#table = table;
    this.#plan = plan;
    this.#pipeline = pipeline;
    this.#settings = settings;
    this.#chunkBytes = chunkBytes;
    this.#counts = counts;
    this.#onProgress = onProgress;
    this.#progressEveryMs = progressEveryMs;
    this.#planId = createHash('sha256').update(JSON.stringify([plan.columns, plan.accepted])).digest('hex');
    this.#columns = plan.columns.map((c) => quoteIdentifier(c.name)).join(', ');
    // The plan's layered SELECT computes each part `accepted` and the columns share once per
    // line; without one, `accepted` and each column are computed apart.
    this.#lines = plan.select
      ? (input) => `(WITH __pd_input AS (SELECT _row_number AS __pd_row, line FROM ${input}) ${plan.select})`
      : (input) => `(SELECT _row_number AS __pd_row, line, (${plan.accepted}) AS __pd_accepted, ${plan.columns.map((c, i) => `(${c.sql}) AS __pd_c${i}`).join(', ')} FROM ${input})`;
    // Readable by this process only: the chunks are the user's data.
    this.#dir = mkdtempSync(join(tempDir, 'tributary-import-'));
  }

  close(): void {
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /**
   * Imports one file, its records for the JS path to `emit(key)` with their chunk's key;
   * resolves with why it could not be read as NDJSON, if it could not.
   */
  async file(file: string, vendor: string | undefined, context: SourceContext, emit: (key: string) => (envelope: Envelope<unknown>) => void): Promise<string | undefined> {
    let fd: number | undefined = openFile(file);
    try {
      const first = fstatSync(fd);
      if (!plainUtf8(fd)) {
        // gzip or UTF-16: the files source's own reading, record for record.
        closeSync(fd);
        fd = undefined;
        const outcome = await readFile(file, 'ndjson', vendor, this.#settings, context, emit(file));
        this.#counts.read += outcome.records;
        this.#counts.toJs += outcome.records;
        return outcome.failure;
      }
      const reader = new ChunkReader(fd, file, first, this.#chunkBytes, this.#settings.limits);
      const progress = new Progress(file, first.size, this.#onProgress, this.#progressEveryMs);
      const mine = { storedByEngine: 0, toJs: 0 };
      const identity = `${first.dev}:${first.ino}:${first.size}:${first.mtimeMs}`;
      let records = 0;
      // Two chunks stored at once, each on a session of its own: one writes its part (one
      // thread) while the next is parsed and mapped (every thread), and JS frames a third.
      const storing: { chunk: Chunk; stored: Promise<PendingFrame[]> }[] = [];
      let next = reader.next();
      while (next || storing.length > 0) {
        while (next && storing.length < STORING) {
          const stored = this.#insert(next, file, identity);
          stored.catch(() => undefined);
          storing.push({ chunk: next, stored });
          try {
            next = reader.next();
          } catch (error) {
            // The file changed: fail once the engine is done with the chunks it reads.
            await Promise.allSettled(storing.map((s) => s.stored));
            throw error;
          }
        }
        const { chunk, stored } = storing.shift()!;
        let refused: PendingFrame[];
        try {
          refused = await stored;
        } catch (error) {
          await Promise.allSettled(storing.map((s) => s.stored));
          throw error;
        }
        this.#counts.chunks++;
        const toJs = mergeByRecord(chunk.js, refused);
        this.#counts.storedByEngine += chunk.eligible.offsets.length - refused.length;
        this.#counts.toJs += toJs.length;
        mine.storedByEngine += chunk.eligible.offsets.length - refused.length;
        mine.toJs += toJs.length;
        const inChunk = chunk.eligible.offsets.length + chunk.js.length;
        this.#counts.read += inChunk;
        records += inChunk;
        const key = `${file}#${chunk.index}`;
        const deliver = emit(key);
        const receivedAt = Date.now();
        for (const { frame, record } of toJs) {
          const bytes = frame.size ?? frame.bytes.length;
          const wait = context.credits.take(bytes);
          if (wait) await wait;
          const meta: RecordMeta = { source: this.#settings.source, position: `${file}@${frame.offset}`, file, record, line: frame.line, offset: frame.offset, receivedAt, attempt: 1 };
          if (vendor !== undefined) meta.vendor = vendor;
          deliverFrame(frame, meta, bytes, this.#settings.limits, context, deliver);
        }
        progress.update(chunk.end, records, mine, false);
        if (context.signal.aborted) {
          await Promise.allSettled(storing.map((s) => s.stored));
          return undefined;
        }
      }
      reader.checkUnchanged();
      progress.update(first.size, records, mine, true);
      if (records === 0) {
        // Nothing but blank lines: the files source's EMPTY_FILE dead letter, as it gives it.
        const outcome = await readFile(file, 'ndjson', vendor, this.#settings, context, emit(file));
        this.#counts.read += outcome.records;
        this.#counts.toJs += outcome.records;
        return outcome.failure;
      }
      return undefined;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  /** Runs an insert on a session of its own (a stream runs beside other queries on the embedded store). */
  async #store(sql: string): Promise<void> {
    for await (const answer of this.#client.stream(sql, { format: 'TSV' })) {
      if (answer.length > 0) throw new TributaryError(`bulk import: an insert answered ${answer.length} bytes`, { code: 'ACCOUNTING' });
    }
  }

  /**
   * Stores the lines of `chunk` the plan accepts; resolves with the eligible frames it
   * refused (for the JS path). One pass when it accepts them all, two when it does not.
   */
  async #insert(chunk: Chunk, file: string, identity: string): Promise<PendingFrame[]> {
    if (chunk.eligible.offsets.length === 0) return [];
    const path = join(this.#dir, `chunk-${chunk.index}.ndjson`);
    writeFileSync(path, chunk.data, { mode: 0o600 });
    try {
      const input = `file(${sqlString(path)}, 'LineAsString', 'line String')`;
      const lines = this.#lines(input);
      const accepted = 'ifNull(__pd_accepted, 0)';
      const token = createHash('sha256')
        .update([this.#pipeline, this.#table, file, identity, chunk.start, chunk.end, chunk.eligible.offsets.length, this.#planId].join('\0'))
        .digest('hex')
        .slice(0, 32);
      // One block per chunk: stored whole or not at all, and the same block on a re-run.
      // Planning the globetrek plan's insert took ~1 s of CPU each time (a one-line chunk costs
      // it too). optimize_and_compare_chain looks for comparisons to infer across the plan's
      // long AND (~0.4 s of it), to no use here. A plan's select keeps its layers as steps of
      // their own: merged into one, planning and the run cost more (the whole import: ~30%
      // more CPU); columns alone need the merge, which puts the WHERE before them.
      const settings = `SETTINGS insert_deduplicate = 1, insert_deduplication_token = ${sqlString(token)}, max_insert_threads = 1, min_insert_block_size_rows = 1000000000000, min_insert_block_size_bytes = 1000000000000000, optimize_and_compare_chain = 0${this.#plan.select ? ', query_plan_merge_expressions = 0' : ''}`;
      const values = this.#plan.columns.map((_, i) => `__pd_c${i}`);
      const insert = (first: string, where: string) => `INSERT INTO ${quoteIdentifier(this.#table)} (${this.#columns}) SELECT ${[first, ...values.slice(1)].join(', ')} FROM ${lines} WHERE ${where} ${settings}`;
      try {
        const refusing = sqlString(REFUSED_MARKER);
        // A plan's select computes its columns for every line: there the guard filters and the
        // first column throws on a line the plan refuses (the same test in the WHERE costs
        // ~0.6 s more CPU per insert to plan). Columns alone may fail on a refused line.
        await this.#store(
          this.#plan.select
            ? insert(`[__pd_c0][1 + throwIf(NOT ${accepted}, ${refusing})]`, LINE_GUARD)
            : insert(values[0]!, `throwIf((${LINE_GUARD}) AND NOT ${accepted}, ${refusing}) = 0 AND ${LINE_GUARD}`),
        );
        return [];
      } catch (error) {
        if (!String((error as Error).message).includes(REFUSED_MARKER)) throw error;
      }
      this.#counts.chunksWithRefusals++;
      const rows = await this.#client.query<{ row: string | number; sha256: string }>(
        `SELECT __pd_row AS row, lower(hex(SHA256(line))) AS sha256 FROM ${lines} WHERE ${LINE_GUARD} AND NOT ${accepted}`,
      );
      const refused = refusedFrames(chunk, rows.map((r) => ({ row: Number(r.row), sha256: r.sha256 })));
      await this.#store(insert(values[0]!, `${LINE_GUARD} AND ${accepted}`));
      return refused;
    } finally {
      rmSync(path, { force: true });
    }
  }
}

/**
 * The eligible frames of `chunk` at the engine's 0-based line numbers `rows`, each checked
 * to be the very line the engine refused (its SHA-256): a wrong match would store one
 * record twice and lose another, so it fails the import instead.
 */
function refusedFrames(chunk: Chunk, lines: { row: number; sha256: string }[]): PendingFrame[] {
  lines.sort((a, b) => a.row - b.row);
  const refused: PendingFrame[] = [];
  let line = 0;
  let at = 0;
  for (const { row, sha256 } of lines) {
    while (line < row) {
      const newline = chunk.data.indexOf(NEWLINE, at);
      if (newline < 0) throw new TributaryError(`bulk import: the engine refused line ${row} of a chunk of ${line + 1} lines`, { code: 'ACCOUNTING' });
      at = newline + 1;
      line++;
    }
    const { offsets, lines, records } = chunk.eligible;
    const index = sortedIndex(offsets, chunk.start + at);
    if (offsets[index] !== chunk.start + at) throw new TributaryError(`bulk import: the engine refused a line JS did not give it (byte ${chunk.start + at})`, { code: 'ACCOUNTING' });
    const newline = chunk.data.indexOf(NEWLINE, at);
    const bytes = Buffer.from(chunk.data.subarray(at, newline < 0 ? chunk.data.length : newline));
    if (createHash('sha256').update(bytes).digest('hex') !== sha256) {
      throw new TributaryError(`bulk import: the line the engine refused as line ${row} of a chunk is not the one at byte ${chunk.start + at}`, { code: 'ACCOUNTING' });
    }
    refused.push({ frame: { bytes, offset: offsets[index]!, line: lines[index]!, utf8: true }, record: records[index]! });
  }
  return refused;
}

/** Two lists ascending by record number, as one. */
function mergeByRecord(a: PendingFrame[], b: PendingFrame[]): PendingFrame[] {
  if (b.length === 0) return a;
  const out: PendingFrame[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]!.record < b[j]!.record)) out.push(a[i++]!);
    else out.push(b[j++]!);
  }
  return out;
}

/**
 * A file cut into chunks of whole lines, each framed by the NDJSON framer: every byte is
 * pushed to the framer once and in order, so its records, lines and offsets are the
 * files source's. A line longer than a chunk never reaches the engine (the framer
 * refuses it as too large).
 */
class ChunkReader {
  readonly #fd: number;
  readonly #file: string;
  readonly #stat: Stats;
  readonly #chunkBytes: number;
  readonly #limits: ReadSettings['limits'];
  readonly #framer: LineFramer;
  #position = 0;
  #carry: Buffer = Buffer.alloc(0);
  /** Inside a line over the limit: the framer drops it until its newline. */
  #overlong = false;
  /** Records for JS met while no chunk was cut (inside a long line): they go with the next chunk. */
  #pendingJs: PendingFrame[] = [];
  #record = 0;
  #index = 0;
  #ended = false;

  constructor(fd: number, file: string, stat: Stats, chunkBytes: number, limits: ReadSettings['limits']) {
    this.#fd = fd;
    this.#file = file;
    this.#stat = stat;
    this.#chunkBytes = chunkBytes;
    this.#limits = limits;
    this.#framer = new LineFramer(limits);
  }

  /** Fails when the file is no longer the one the import started on (size or modification time). */
  checkUnchanged(): void {
    const now = fstatSync(this.#fd);
    if (now.size !== this.#stat.size || now.mtimeMs !== this.#stat.mtimeMs) {
      throw new ConnectorError(
        `${this.#file} changed while being imported (size ${this.#stat.size} → ${now.size}, modified ${new Date(this.#stat.mtimeMs).toISOString()} → ${new Date(now.mtimeMs).toISOString()}): import it again once it holds still`,
      );
    }
  }

  /** The next chunk, or undefined at the end of the file. */
  next(): Chunk | undefined {
    while (!this.#ended) {
      this.checkUnchanged();
      const size = this.#stat.size;
      const want = Math.min(this.#chunkBytes - this.#carry.length, size - this.#position);
      const buffer = Buffer.allocUnsafe(this.#carry.length + want);
      this.#carry.copy(buffer, 0);
      let filled = this.#carry.length;
      while (filled < buffer.length) {
        const n = readSync(this.#fd, buffer, filled, buffer.length - filled, this.#position);
        if (n === 0) {
          this.checkUnchanged();
          throw new ConnectorError(`${this.#file} ended at byte ${this.#position}, before its size ${size}: it changed while being imported`);
        }
        filled += n;
        this.#position += n;
      }
      const base = this.#position - buffer.length;
      const atEnd = this.#position >= size;
      this.#ended = atEnd;
      this.#carry = Buffer.alloc(0);
      let start = 0;
      const frames: Frame[] = [];
      if (this.#overlong) {
        const newline = buffer.indexOf(NEWLINE);
        if (newline < 0 && !atEnd) {
          this.#keep(this.#framer.push(buffer), this.#pendingJs, { offsets: [], lines: [], records: [] }, buffer, base);
          continue;
        }
        start = newline < 0 ? buffer.length : newline + 1;
        frames.push(...this.#framer.push(buffer.subarray(0, start)));
        this.#overlong = false;
      }
      let end = atEnd ? buffer.length : buffer.lastIndexOf(NEWLINE) + 1;
      if (end < start) end = start;
      const rest = buffer.subarray(end);
      const js: PendingFrame[] = this.#pendingJs;
      this.#pendingJs = [];
      const eligible: EligibleLines = { offsets: [], lines: [], records: [] };
      // Records before the engine's part (the end of a line over the limit) go to JS.
      this.#keep(frames, js, eligible, buffer, base, -1);
      const data = buffer.subarray(start, end);
      if (!this.#plainLines(data, base + start, eligible)) {
        const chunkFrames = this.#framer.push(data);
        if (atEnd) chunkFrames.push(...this.#framer.end());
        this.#keep(chunkFrames, js, eligible, buffer, base, end);
      }
      if (rest.length > this.#limits.maxRecordBytes) {
        // Too long to be a record: the framer refuses it whole, the engine never sees it.
        const dropped = this.#framer.push(rest);
        this.#overlong = true;
        this.#keep(dropped, js, eligible, buffer, base, -1);
      } else {
        this.#carry = Buffer.from(rest);
      }
      if (eligible.offsets.length === 0 && js.length === 0 && data.length === 0 && !atEnd) continue;
      return { index: this.#index++, start: base + start, end: base + end, data, eligible, js };
    }
    return undefined;
  }

  /**
   * Numbers `frames` and sorts them: eligible for the engine (its line is exactly the
   * record, a JSON object within the limits) or for JS only. A JS-only line the engine
   * would take (`{…}`) has its first byte spoiled in `buffer`, after its bytes are copied.
   * `engineEnd` is where the engine's part of `buffer` ends (-1: no part of it).
   */
  #keep(frames: Frame[], js: PendingFrame[], eligible: EligibleLines, buffer: Buffer, base: number, engineEnd = -1): void {
    for (const frame of frames) {
      const record = ++this.#record;
      const at = frame.offset - base;
      const size = frame.size ?? frame.bytes.length;
      const inBuffer = at >= 0 && at + size <= buffer.length;
      if (engineEnd >= 0 && inBuffer && at + size <= engineEnd && this.#eligible(frame, buffer, at, size, engineEnd)) {
        eligible.offsets.push(frame.offset);
        eligible.lines.push(frame.line);
        eligible.records.push(record);
        continue;
      }
      // Copied before the line is spoiled below.
      js.push({ frame: { ...frame, bytes: Buffer.from(frame.bytes) }, record });
      // The engine must not read this line as a record: spoil its opening brace.
      if (engineEnd >= 0 && inBuffer && at < engineEnd && buffer[at] === OPEN_BRACE) buffer[at] = SPACE;
    }
  }

  /**
   * The common case, every line of `data` one the engine may read as it is: ASCII, `{…}`
   * with nothing around, within the limits (what #keep finds of each line one by one).
   * Then they are all eligible, numbered from native searches alone, and the framer skips
   * them; otherwise nothing is taken (false) and the caller frames `data`.
   */
  #plainLines(data: Buffer, offset: number, eligible: EligibleLines): boolean {
    if (data.length === 0 || data[data.length - 1] !== NEWLINE || !isAscii(data)) return false;
    const { maxRecordBytes, maxDepth } = this.#limits;
    const starts: number[] = [];
    let brace = data.indexOf(OPEN_BRACE);
    let bracket = data.indexOf(OPEN_BRACKET);
    for (let at = 0; at < data.length; ) {
      const newline = data.indexOf(NEWLINE, at);
      const size = newline - at;
      if (size < 2 || size > maxRecordBytes || data[at] !== OPEN_BRACE || data[newline - 1] !== CLOSE_BRACE) return false;
      // hasMoreOpenings, over the chunk at once.
      let openings = 0;
      for (; brace >= 0 && brace < newline; brace = data.indexOf(OPEN_BRACE, brace + 1)) if (++openings > maxDepth) return false;
      for (; bracket >= 0 && bracket < newline; bracket = data.indexOf(OPEN_BRACKET, bracket + 1)) if (++openings > maxDepth) return false;
      starts.push(at);
      at = newline + 1;
    }
    const line = this.#framer.skip(data.length, starts.length);
    for (let i = 0; i < starts.length; i++) {
      eligible.offsets.push(offset + starts[i]!);
      eligible.lines.push(line + i);
      eligible.records.push(++this.#record);
    }
    return true;
  }

  /** Whether the engine's line is exactly this record's bytes, and JS would parse it as they are. */
  #eligible(frame: Frame, buffer: Buffer, at: number, size: number, engineEnd: number): boolean {
    if (frame.error || !frame.utf8 || size < 2) return false;
    if (buffer[at] !== OPEN_BRACE || buffer[at + size - 1] !== CLOSE_BRACE) return false;
    // The whole line: a newline (or the start of the buffer, always a line's start) before, a
    // newline (or the end) after: no BOM, no CR.
    if (at > 0 && buffer[at - 1] !== NEWLINE) return false;
    if (at + size !== engineEnd && buffer[at + size] !== NEWLINE) return false;
    const text = frame.text ?? buffer.toString('latin1', at, at + size);
    return !tooDeepOrLarge(text, size, this.#limits);
  }
}

function tooDeepOrLarge(text: string, bytes: number, limits: ReadSettings['limits']): boolean {
  return bytes > limits.maxRecordBytes || hasMoreOpenings(text, limits.maxDepth);
}

class Progress {
  readonly #file: string;
  readonly #total: number;
  readonly #callback: ((progress: BulkImportProgress) => void) | undefined;
  readonly #everyMs: number;
  readonly #started = Date.now();
  #last = 0;

  constructor(file: string, totalBytes: number, callback: ((progress: BulkImportProgress) => void) | undefined, everyMs: number) {
    this.#file = file;
    this.#total = totalBytes;
    this.#callback = callback;
    this.#everyMs = everyMs;
  }

  update(bytes: number, records: number, counts: { storedByEngine: number; toJs: number }, done: boolean): void {
    if (!this.#callback) return;
    const now = Date.now();
    if (!done && now - this.#last < this.#everyMs) return;
    this.#last = now;
    const elapsedMs = now - this.#started;
    const { storedByEngine, toJs } = counts;
    this.#callback({ file: this.#file, bytes, totalBytes: this.#total, records, storedByEngine, toJs, elapsedMs, recordsPerSecond: elapsedMs > 0 ? Math.round((records * 1000) / elapsedMs) : 0, done });
  }
}

/** Moves each file read to its end into `doneDir`, or `failedDir` when it failed, under a name free there. */
function moveFiles(failures: ReadonlyMap<string, string | undefined>, doneDir: string, failedDir: string): BulkImportResult['moved'] {
  const moved: BulkImportResult['moved'] = [];
  for (const [file, failure] of failures) {
    const dir = failure === undefined ? doneDir : failedDir;
    mkdirSync(dir, { recursive: true });
    const to = freeName(dir, basename(file));
    renameSync(file, to);
    moved.push(failure === undefined ? { file, to } : { file, to, failure });
  }
  return moved;
}

function openFile(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (cause) {
    throw new ConnectorError(`cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, { cause });
  }
}

/** Whether the file is neither gzipped nor UTF-16 (by its first bytes): the engine reads it as it is. */
function plainUtf8(fd: number): boolean {
  const head = Buffer.alloc(2);
  const n = readSync(fd, head, 0, 2, 0);
  if (n < 2) return true;
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  const utf16 = (head[0] === 0xff && head[1] === 0xfe) || (head[0] === 0xfe && head[1] === 0xff);
  return !gzip && !utf16;
}

/** A ClickHouse string literal: quotes and backslashes escaped (the engine's rules). */
function sqlString(text: string): string {
  if (text.includes('\0')) throw new ConfigError(`a path spliced into SQL must not contain NUL: ${JSON.stringify(basename(text))}`);
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
