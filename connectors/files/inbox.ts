import { mkdir, readdir, readFile as readText, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { Observable } from 'rxjs';
import type { Envelope } from '../../lib/envelope';
import { ConfigError, ConnectorError } from '../../lib/errors';
import { removeDurableFile, renameDurably, writeFileDurably } from '../../lib/durable';
import type { Source, SourceContext } from '../../lib/source';
import { readFile, rejectUnreadable, type FileFormat } from './read';
import { booleanOption, positiveInteger } from '../../lib/options';
import { sleep } from '../../lib/sleep';
import { formatOfName, resolveReadSettings, vendorFunction, type FromFilesOptions } from './source';

export interface FromInboxOptions extends Omit<FromFilesOptions, 'paths'> {
  /**
   * The directory vendors drop files into. Names starting with `.` or ending in `.part`/`.tmp`
   * are left alone; a file no configured format reads (an XML file without `xml`, an
   * extension with no format) is one `UNREADABLE_FILE` dead letter naming the option to set,
   * and moves to `failedDir`.
   */
  dir: string;
  /** Where a file goes once every record of it is durable (written or dead-lettered). @default `<dir>/done` */
  doneDir?: string;
  /** Where a file goes that could not be read to its end as its format (corrupt gzip, not a JSON array). @default `<dir>/failed` */
  failedDir?: string;
  /** Where the settled position of each file in progress is kept across restarts. @default `<dir>/.tributary` */
  stateDir?: string;
  /** How often the directory is scanned; a file is taken once its size has held still for one scan. @default 1000 */
  pollMs?: number;
  /** Complete once the files present at start are done, instead of watching for more. @default false */
  once?: boolean;
  /** How often the settled position of a file in progress is saved. @default 200 */
  checkpointMs?: number;
  /**
   * Cut sink batches where a replay cuts them: records of two files never share a batch,
   * and where each batch ends is saved in its file's checkpoint before it is written, so
   * a batch read again after a crash holds the same records and carries the same insert
   * token (nothing is stored twice). `false` lets a batch hold records of several files,
   * faster with many small files (300 files of 50 records were 3 to 9 times quicker), but a
   * batch cut by `maxWaitMs` and read again after a crash may then be stored twice. @default true
   */
  alignBatches?: boolean;
}

/**
 * What is saved for a file in progress: records up to `settled` are durable; `cuts` are the
 * records where sink batches ended, from the last one at or before `settled` on (none: the
 * file's start), each saved before its batch was written.
 */
interface Checkpoint {
  name: string;
  size: number;
  mtimeMs: number;
  settled: number;
  cuts?: number[];
}

/** Where a file resumes: records up to `settled` are durable; batches past `from` end at `cuts`. */
export interface Resumed {
  settled: number;
  /** The record after which the batch holding `settled + 1` began: reading resumes after it. */
  from: number;
  /** Where batches past `from` ended, in order. */
  cuts: number[];
}

/**
 * Watches a directory and reads each file that lands there once. A file moves to `done/`
 * (or `failed/`) only after all its records are durable; until then its settled position
 * is saved, so after a crash a half-done file resumes after its last settled record.
 *
 * Records read again after a crash are not stored twice: before a sink batch is written,
 * the record where it ends (its cut) is saved in the file's checkpoint, and a restart reads
 * again from the start of the first batch not wholly settled and cuts its batches at the
 * saved cuts, so each batch written again holds the same records and carries the same
 * insert token, which ClickHouse absorbs (`non_replicated_deduplication_window` on a plain
 * MergeTree, the replicated window on a replicated one). Records of two files never share
 * a batch.
 *
 * ## Example
 * ```ts
 * import { fromInbox } from 'tributary';
 * const source = fromInbox({ dir: 'inbox/acme', vendor: 'acme', csv: { delimiter: ';' } });
 * ```
 */
export function fromInbox(options: FromInboxOptions): Source<unknown> & { readonly inbox: InboxState } {
  if (typeof options?.dir !== 'string' || options.dir === '') throw new ConfigError(`dir must name the inbox directory, got ${JSON.stringify(options?.dir)}`);
  const dir = resolve(options.dir);
  const doneDir = resolve(options.doneDir ?? join(dir, 'done'));
  const failedDir = resolve(options.failedDir ?? join(dir, 'failed'));
  const stateDir = resolve(options.stateDir ?? join(dir, '.tributary'));
  const pollMs = positiveInteger(options.pollMs, 1000, 'pollMs');
  const checkpointMs = positiveInteger(options.checkpointMs, 200, 'checkpointMs');
  const settings = resolveReadSettings(options, options.name ?? 'inbox');
  const vendorOf = vendorFunction(options.vendor);
  const aligned = booleanOption(options.alignBatches, true, 'alignBatches');
  const state = new InboxState(stateDir, doneDir, failedDir, checkpointMs, aligned);

  const formatOf = (name: string): FileFormat | undefined => {
    const format = options.format ?? formatOfName(name);
    return format === 'xml' && !settings.xml ? undefined : format;
  };

  const unreadable = (name: string) =>
    (options.format ?? formatOfName(name)) === 'xml'
      ? `${name} is XML: set xml.record to the element that holds one record`
      : `cannot tell the format of ${name} from its extension: set format`;

  async function scan(): Promise<{ name: string; size: number; mtimeMs: number }[]> {
    const entries = await readdir(dir, { withFileTypes: true }).catch((cause: NodeJS.ErrnoException) => {
      throw new ConnectorError(`cannot read inbox ${dir}: ${cause.code ?? cause.message}`, { cause });
    });
    const found: { name: string; size: number; mtimeMs: number }[] = [];
    for (const entry of entries) {
      const name = entry.name;
      if (!entry.isFile() || name.startsWith('.') || /\.(part|tmp)$/i.test(name)) continue;
      const info = await stat(join(dir, name)).catch(() => undefined);
      if (info) found.push({ name, size: info.size, mtimeMs: info.mtimeMs });
    }
    return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  let stopping: AbortSignal | undefined;
  return {
    name: settings.source,
    inbox: state,
    ...(aligned && {
      batchKey: (envelope: Envelope<unknown>) => state.batchKey(envelope.meta.file, envelope.meta.record),
      replayedBatch: (envelope: Envelope<unknown>) => state.replayedBatch(envelope.meta.file, envelope.meta.record),
      beforeWrite: (envelopes: readonly Envelope<unknown>[]) => state.beforeWrite(envelopes, stopping?.aborted === true),
    }),
    open(context: SourceContext) {
      return new Observable<Envelope<unknown>>((subscriber) => {
        const emit = (envelope: Envelope<unknown>) => subscriber.next(envelope);
        const { signal } = context;
        stopping = signal;
        (async () => {
          await Promise.all([mkdir(doneDir, { recursive: true }), mkdir(failedDir, { recursive: true }), mkdir(stateDir, { recursive: true })]);
          const seen = new Map<string, string>();
          while (!signal.aborted) {
            const files = await scan();
            for (const { name, size, mtimeMs } of files) {
              if (signal.aborted) break;
              const file = join(dir, name);
              if (state.has(file)) continue;
              // A file still being written changes between scans; take it once it holds still.
              const stamp = `${size}:${mtimeMs}`;
              if (!options.once && seen.get(name) !== stamp) {
                seen.set(name, stamp);
                continue;
              }
              seen.delete(name);
              const resumed = await state.resume(name, size, mtimeMs);
              const tracker = state.track(file, name, size, mtimeMs, resumed);
              const format = formatOf(name);
              if (format === undefined) {
                // A file no configured format reads: one dead letter, then failed/, never left unsaid.
                const why = unreadable(name);
                if (resumed.settled === 0) await rejectUnreadable(file, vendorOf(file), why, settings, context);
                tracker.read(1, `UNREADABLE_FILE: ${why}`);
                continue;
              }
              const outcome = await readFile(file, format, vendorOf(file), settings, context, emit, resumed.from);
              if (signal.aborted) {
                tracker.stopped(outcome.records);
                break;
              }
              // Its dead letters need not wait for the next file's records to close their batch.
              if (aligned) context.batchKeyEnded?.(file);
              tracker.read(outcome.records, outcome.failure);
            }
            if (options.once) break;
            await sleep(pollMs, signal);
          }
          if (options.once && !signal.aborted) await state.drained(signal);
          // Stopping (also while waiting for the last files to drain): the records read so far
          // settle as the pipeline drains, and each file's position is saved (or the file moved)
          // before the source ends, so a restart resumes right after them.
          if (signal.aborted) await state.halted();
        })().then(
          () => subscriber.complete(),
          (error: unknown) => subscriber.error(error),
        );
      });
    },
    settled(envelope, error) {
      state.settled(envelope.meta.file, envelope.meta.record, error);
    },
  };
}

/** The files an inbox has taken and how far each is settled; for tests and health checks. */
export class InboxState {
  readonly #stateDir: string;
  readonly #doneDir: string;
  readonly #failedDir: string;
  readonly #checkpointMs: number;
  readonly #files = new Map<string, FileTracker>();
  #idle: Array<() => void> = [];
  /** Files moved out of the inbox: where they went. */
  readonly moved: { file: string; to: string; failure: string | undefined }[] = [];

  /** Whether batches are cut where a replay cuts them (and checkpoints say where). */
  readonly aligned: boolean;

  constructor(stateDir: string, doneDir: string, failedDir: string, checkpointMs: number, aligned = true) {
    this.aligned = aligned;
    this.#stateDir = stateDir;
    this.#doneDir = doneDir;
    this.#failedDir = failedDir;
    this.#checkpointMs = checkpointMs;
  }

  get inProgress(): number {
    return this.#files.size;
  }

  has(file: string): boolean {
    return this.#files.has(file);
  }

  /** Where `name` resumes after an earlier run, when the file is the same one; from the start otherwise. */
  async resume(name: string, size: number, mtimeMs: number): Promise<Resumed> {
    const start: Resumed = { settled: 0, from: 0, cuts: [] };
    const text = await readText(this.#checkpointPath(name), 'utf8').catch(() => undefined);
    if (text === undefined) return start;
    let saved: Checkpoint;
    try {
      saved = JSON.parse(text) as Checkpoint;
    } catch {
      // A checkpoint is replaced whole, never cut short; one that does not parse was not ours: start over.
      return start;
    }
    if (saved?.name !== name || saved.size !== size || saved.mtimeMs !== mtimeMs || !Number.isSafeInteger(saved.settled) || saved.settled < 0) return start;
    const { settled } = saved;
    // Without cuts (a checkpoint of an older version), reading resumes after the settled records.
    if (saved.cuts === undefined) return { settled, from: settled, cuts: [] };
    const cuts = saved.cuts;
    if (!Array.isArray(cuts) || !cuts.every((cut, i) => Number.isSafeInteger(cut) && cut > (i === 0 ? 0 : cuts[i - 1]!))) return start;
    const from = cuts.filter((cut) => cut <= settled).pop() ?? 0;
    return { settled, from, cuts: cuts.filter((cut) => cut > from) };
  }

  track(file: string, name: string, size: number, mtimeMs: number, resumed: Resumed): FileTracker {
    const tracker = new FileTracker(this, file, name, size, mtimeMs, resumed);
    this.#files.set(file, tracker);
    return tracker;
  }

  /** Records of two files never share a batch, nor does a batch run past a cut an earlier run made. */
  batchKey(file: string | undefined, record: number | undefined): string {
    const end = this.#replayCut(file, record);
    return end === undefined ? (file ?? '') : `${file}\0${end}`;
  }

  /** `last` for the record where an earlier run ended a batch, `within` for those before it. */
  replayedBatch(file: string | undefined, record: number | undefined): 'within' | 'last' | undefined {
    const end = this.#replayCut(file, record);
    return end === undefined ? undefined : end === record ? 'last' : 'within';
  }

  /** Where an earlier run ended the batch holding `record` of `file`, if it did. */
  #replayCut(file: string | undefined, record: number | undefined): number | undefined {
    return file === undefined || record === undefined ? undefined : this.#files.get(file)?.replayCut(record);
  }

  /**
   * Saves where the batch ends in its file's checkpoint before the batch is written. False
   * (its records are nacked, read again next time) for a batch an earlier run cut further
   * on, cut short by a stop: written, it would carry a token of its own.
   */
  async beforeWrite(envelopes: readonly Envelope<unknown>[], stopping: boolean): Promise<boolean> {
    const first = envelopes[0]?.meta;
    const last = envelopes[envelopes.length - 1]?.meta.record;
    const tracker = first?.file === undefined ? undefined : this.#files.get(first.file);
    if (!tracker || first?.record === undefined || last === undefined) return true;
    const end = tracker.replayCut(first.record);
    if (end !== undefined && end !== last && stopping) return false;
    await tracker.cut(last);
    return true;
  }

  settled(file: string | undefined, record: number | undefined, error: Error | undefined): void {
    if (file === undefined || record === undefined) return;
    this.#files.get(file)?.settled(record, error);
  }

  /** Resolves once every file taken is done and moved, or the signal aborts. */
  drained(signal: AbortSignal): Promise<void> {
    if (this.#files.size === 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', done);
        resolve();
      };
      signal.addEventListener('abort', done, { once: true });
      this.#idle.push(done);
    });
  }

  /** Resolves once every record read is settled and the position of each file in progress is saved. */
  async halted(): Promise<void> {
    await Promise.all([...this.#files.values()].map((tracker) => tracker.halted()));
  }

  /** @internal */
  checkpointMs(): number {
    return this.#checkpointMs;
  }

  /** @internal Saves a file's settled position durably (never half a file, on disk when this resolves). */
  async save(checkpoint: Checkpoint): Promise<void> {
    await writeFileDurably(this.#checkpointPath(checkpoint.name), JSON.stringify(checkpoint));
  }

  /** @internal Moves a finished file out of the inbox, then forgets its checkpoint. */
  async finish(tracker: FileTracker, failure: string | undefined): Promise<void> {
    await tracker.saving;
    const to = freeName(failure ? this.#failedDir : this.#doneDir, tracker.name);
    // On disk in done/ (or failed/) before its checkpoint goes: a crash between the two
    // leaves a checkpoint of a file no longer in the inbox, never a file read again from 0.
    await renameDurably(tracker.file, to);
    await removeDurableFile(this.#checkpointPath(tracker.name));
    this.moved.push({ file: tracker.file, to, failure });
    this.#files.delete(tracker.file);
    if (this.#files.size === 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }

  #checkpointPath(name: string): string {
    return join(this.#stateDir, `${name}.checkpoint.json`);
  }
}

/** `name` in `dir`, or `name.2.ext`, `name.3.ext`, … when it is taken. */
export function freeName(dir: string, name: string): string {
  let candidate = join(dir, name);
  for (let n = 2; existsSync(candidate); n++) {
    const extension = extname(name);
    candidate = join(dir, `${basename(name, extension)}.${n}${extension}`);
  }
  return candidate;
}

/** One file in progress: which of its records are settled, contiguously from the first. */
class FileTracker {
  readonly file: string;
  readonly name: string;
  readonly #inbox: InboxState;
  readonly #size: number;
  readonly #mtimeMs: number;
  /** Every record up to this one is durable. */
  #contiguous: number;
  /** Durable records beyond `#contiguous`. */
  #ahead = new Set<number>();
  /** Records in the file, once it has been read to its end. */
  #total: number | undefined;
  #failure: string | undefined;
  #failed = false;
  #saved: number;
  /** The last checkpoint write asked for (it never rejects): the next one follows it. */
  saving: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #finishing = false;
  /** Records where batches ended, in order, from the last one at or before the settled position on. */
  #cuts: number[];
  /** Cuts made by the run before, which this one makes again: past where reading resumed. */
  readonly #replayCuts: readonly number[];
  #cutsNoted = 0;
  #cutsSaved = 0;

  constructor(inbox: InboxState, file: string, name: string, size: number, mtimeMs: number, resumed: Resumed) {
    this.#inbox = inbox;
    this.file = file;
    this.name = name;
    this.#size = size;
    this.#mtimeMs = mtimeMs;
    this.#contiguous = resumed.settled;
    this.#saved = resumed.settled;
    this.#replayCuts = resumed.cuts;
    this.#cuts = resumed.from > 0 ? [resumed.from, ...resumed.cuts] : [...resumed.cuts];
  }

  /** The first cut of the run before at or after `record`: where the batch holding it ends. */
  replayCut(record: number): number | undefined {
    const cuts = this.#replayCuts;
    if (cuts.length === 0 || record > cuts[cuts.length - 1]!) return undefined;
    let low = 0;
    let high = cuts.length - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (cuts[middle]! < record) low = middle + 1;
      else high = middle;
    }
    return cuts[low];
  }

  /** Notes that a batch ends at `record`; resolves once a checkpoint holding that cut is on disk. */
  async cut(record: number): Promise<void> {
    const cuts = this.#cuts;
    let at = cuts.length;
    while (at > 0 && cuts[at - 1]! > record) at--;
    if (at === 0 || cuts[at - 1] !== record) {
      cuts.splice(at, 0, record);
      this.#cutsNoted++;
    }
    const noted = this.#cutsNoted;
    while (this.#cutsSaved < noted) {
      if (this.#finishing) return;
      await this.#saveNow();
    }
  }

  /** The move out of the inbox, once every record is settled. */
  #finished: Promise<void> | undefined;
  #halt: { records: number; resolve: () => void } | undefined;
  #halting: Promise<void> | undefined;

  /** Reading stopped after `records` records (the source is stopping). */
  stopped(records: number): void {
    this.#halt ??= { records, resolve: () => undefined };
  }

  /** Resolves once the records read are settled (or one failed) and the position is saved, or the file is finished. */
  halted(): Promise<void> {
    this.#halting ??= (async () => {
      const limit = this.#halt?.records ?? this.#total;
      if (limit !== undefined && !this.#failed && this.#contiguous < limit) {
        await new Promise<void>((resolve) => (this.#halt = { records: limit, resolve }));
      }
      if (this.#finishing) return this.#finished;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      await this.#saveNow().catch((error: unknown) => this.#warn(error));
    })();
    return this.#halting;
  }

  /** The file has been read: `records` in all. */
  read(records: number, failure: string | undefined): void {
    this.#total = records;
    this.#failure = failure;
    this.#maybeFinish();
  }

  settled(record: number, error: Error | undefined): void {
    if (error) {
      // Not durable: the file stays in the inbox and resumes from before this record.
      this.#failed = true;
      this.#halt?.resolve();
      return;
    }
    if (record <= this.#contiguous) return;
    if (record !== this.#contiguous + 1) {
      this.#ahead.add(record);
      return;
    }
    this.#contiguous = record;
    while (this.#ahead.delete(this.#contiguous + 1)) this.#contiguous++;
    if (this.#halt && this.#contiguous >= this.#halt.records) this.#halt.resolve();
    if (!this.#maybeFinish()) this.#schedule();
  }

  #maybeFinish(): boolean {
    if (this.#failed || this.#finishing || this.#total === undefined || this.#contiguous < this.#total) return false;
    this.#finishing = true;
    clearTimeout(this.#timer);
    this.#finished = this.#inbox.finish(this, this.#failure).catch((error: unknown) => {
      // The file stays where it is; the next run finds it finished from its checkpoint.
      process.emitWarning(`tributary inbox: cannot move ${this.file}: ${(error as Error).message}`);
    });
    return true;
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#saveNow().then(
        () => {
          if (this.#contiguous !== this.#saved && !this.#finishing) this.#schedule();
        },
        (error: unknown) => this.#warn(error),
      );
    }, this.#inbox.checkpointMs());
    this.#timer.unref();
  }

  /** Saves the settled position and the cuts noted, after any save under way; rejects when the write fails. */
  #saveNow(): Promise<void> {
    const save = this.saving.then(() => this.#save());
    this.saving = save.catch(() => undefined);
    return save;
  }

  async #save(): Promise<void> {
    const settled = this.#contiguous;
    const noted = this.#cutsNoted;
    if (this.#finishing || (settled === this.#saved && noted === this.#cutsSaved)) return;
    // Cuts before the last one at or before the settled position are no longer needed.
    let base = 0;
    while (base + 1 < this.#cuts.length && this.#cuts[base + 1]! <= settled) base++;
    if (base > 0) this.#cuts = this.#cuts.slice(base);
    // Without aligned batches no cut is noted: a checkpoint without cuts resumes right after `settled`.
    await this.#inbox.save({ name: this.name, size: this.#size, mtimeMs: this.#mtimeMs, settled, ...(this.#inbox.aligned && { cuts: [...this.#cuts] }) });
    this.#saved = Math.max(this.#saved, settled);
    this.#cutsSaved = Math.max(this.#cutsSaved, noted);
  }

  #warn(error: unknown): void {
    process.emitWarning(`tributary inbox: cannot save the position of ${this.file}: ${(error as Error).message}`);
  }
}
