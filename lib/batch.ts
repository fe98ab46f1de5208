import { asapScheduler, asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import type { Envelope } from './envelope';
import { ConfigError } from './errors';
import { positiveInteger } from './options';
import type { Batch, EncodedRows, RowBytes } from './sink';

export interface BatchOptions {
  /** Emit when this many records are gathered. @default 20000 */
  rows?: number;
  /** Emit when the gathered records reach this many bytes (as received). @default 16 MiB */
  bytes?: number;
  /** Emit a partial batch this long after its first record arrived. @default 1000 */
  maxWaitMs?: number;
  /** Scheduler for the wait, for tests on virtual time. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /**
   * Records with different keys never share a batch: a change of key closes the batch.
   * @default every record may share a batch
   */
  key?: (envelope: Envelope<any>) => string;
  /**
   * With `key`: whether a record belongs to a batch cut before, in an earlier run, that a
   * replay must cut at the same place. `within`: the batch is not cut by `maxWaitMs` (its
   * last record is still to come; only after 30 s, in case it never does, e.g. an
   * in-flight budget below two batches keeping the source paused); `last`: this record
   * ends the batch, which is emitted now. @default no record is replayed
   */
  replayed?: (envelope: Envelope<any>) => 'within' | 'last' | undefined;
  /**
   * Once aborted, a batch no longer waits `maxWaitMs`: the one gathering is emitted at
   * once and later ones in the next turn, so a stop does not wait out the batch's time.
   * @default never
   */
  signal?: AbortSignal;
  /**
   * Encodes each record as it joins the batch (a sink's `encode`): the batch carries the
   * bytes as `encoded`. A record whose encoding throws is dead-lettered (stage `sink`,
   * code `ENCODE`) and left out of the batch. @default records are not encoded
   */
  encode?: (value: any) => string;
  /** With `encode`: writes the same bytes as `encode` returns into the batch (a sink's `encodeInto`), used instead. @default none */
  encodeInto?: (value: any, out: RowBytes) => void;
  /**
   * With `encode`: drop each encoded record's value when it keeps its payload as received
   * (`raw`, what a dead letter stores), so the batch holds bytes, not objects.
   * @default false
   */
  releaseValues?: boolean;
  /**
   * With `encode`: the columns of a record `encode` writes as a JSON array (a sink's
   * `encodedColumns`), read as each record joins the batch. A change closes the batch, so
   * its arrays share one list, carried as `encoded.columns`. @default none
   */
  columns?: () => readonly string[] | undefined;
}

/** How long a replayed batch waits for its last record before it is cut all the same. */
export const REPLAY_WAIT_MS = 30_000;

export function resolveBatchOptions(options: BatchOptions = {}, where = 'batch'): Required<Omit<BatchOptions, 'key' | 'encode' | 'encodeInto' | 'replayed' | 'signal' | 'columns'>> & Pick<BatchOptions, 'key' | 'encode' | 'encodeInto' | 'replayed' | 'signal' | 'columns'> {
  const resolved = {
    rows: options.rows ?? 20_000,
    bytes: options.bytes ?? 16 * 1024 * 1024,
    maxWaitMs: options.maxWaitMs ?? 1000,
    scheduler: options.scheduler ?? asyncScheduler,
    key: options.key,
    encodeInto: options.encodeInto,
    encode: options.encode,
    replayed: options.replayed,
    signal: options.signal,
    releaseValues: options.releaseValues ?? false,
    columns: options.columns,
  };
  for (const name of ['key', 'encode', 'encodeInto', 'replayed', 'columns'] as const) {
    if (resolved[name] !== undefined && typeof resolved[name] !== 'function') {
      throw new ConfigError(`${where}.${name} must be a function, got ${typeof resolved[name]}`);
    }
  }
  if (resolved.encodeInto !== undefined && resolved.encode === undefined) throw new ConfigError(`${where}.encodeInto needs encode, which the batch's retries and splits use`);
  positiveInteger(options.rows, resolved.rows, `${where}.rows`);
  positiveInteger(options.bytes, resolved.bytes, `${where}.bytes`);
  if (!(resolved.maxWaitMs >= 0) || resolved.maxWaitMs === Infinity) {
    throw new ConfigError(`${where}.maxWaitMs must be a finite number >= 0, got ${options.maxWaitMs}`);
  }
  return resolved;
}

/**
 * Gathers envelopes into batches by rows, bytes and time.
 *
 * Envelopes travel inside the batch, so the sink's outcome can be fanned back out to
 * every record. A partial batch is emitted when the wait runs out and when the input
 * completes.
 *
 * ## Example
 * ```ts
 * import { batch } from 'tributary';
 * records$.pipe(batch({ rows: 20_000, maxWaitMs: 500 }));
 * ```
 *
 * @param options Limits of one batch; whichever is reached first closes it.
 * @returns An operator emitting {@link Batch}es.
 */
export function batch<T>(options: BatchOptions = {}): OperatorFunction<Envelope<T>, Batch<T>> {
  const { rows, bytes, maxWaitMs, scheduler, key, encode, encodeInto, replayed, signal, releaseValues, columns } = resolveBatchOptions(options);
  return (source) =>
    new Observable<Batch<T>>((subscriber) => {
      let envelopes: Envelope<T>[] = [];
      let size = 0;
      let timer: Subscription | undefined;
      let batchKey: string | undefined;
      const body = encode ? new BodyBuilder() : undefined;
      /** The columns of the batch's array rows. */
      let batchColumns: readonly string[] | undefined;
      // Without a wait on the asap scheduler (a source whose callers wait), a batch is cut in
      // a microtask queued once per batch: the same turn as an asap action, without the
      // action, promise and handle the scheduler makes for each.
      const inMicrotask = maxWaitMs === 0 && scheduler === asapScheduler && !replayed;
      let cutQueued = false;
      let closed = false;
      const cut = () => {
        cutQueued = false;
        if (!closed) flush();
      };
      const flush = () => {
        timer?.unsubscribe();
        timer = undefined;
        if (envelopes.length === 0) return;
        const full: Batch<T> = body ? { envelopes, bytes: size, encoded: body.take(batchColumns) } : { envelopes, bytes: size };
        envelopes = [];
        size = 0;
        subscriber.next(full);
      };
      // Stopping: what is gathered goes now, not when its wait runs out.
      const hurry = () => flush();
      signal?.addEventListener('abort', hurry, { once: true });
      const subscription = source.subscribe({
        next(envelope) {
          if (key) {
            const next = key(envelope);
            if (next !== batchKey && envelopes.length > 0) flush();
            batchKey = next;
          }
          if (body) {
            if (columns) {
              const now = columns();
              if (now !== batchColumns) {
                // The batch so far goes with its own list (nothing when it is empty).
                flush();
                batchColumns = now;
              }
            }
            try {
              if (encodeInto) body.addInto(encodeInto, envelope.value);
              else body.add(encode!(envelope.value));
            } catch (error) {
              envelope.reject({ stage: 'sink', code: 'ENCODE', message: `cannot encode the record: ${error instanceof Error ? error.message : String(error)}`, path: '' });
              return;
            }
            if (releaseValues) envelope.release();
          }
          envelopes.push(envelope);
          size += envelope.bytes;
          const replay = replayed?.(envelope);
          if (envelopes.length >= rows || size >= bytes || replay === 'last') flush();
          else if (envelopes.length === 1 && inMicrotask) {
            if (!cutQueued) {
              cutQueued = true;
              queueMicrotask(cut);
            }
          } else if (envelopes.length === 1) timer = scheduler.schedule(flush, signal?.aborted ? 0 : replay === 'within' ? Math.max(maxWaitMs, REPLAY_WAIT_MS) : maxWaitMs);
        },
        error(error) {
          subscriber.error(error);
        },
        complete() {
          flush();
          subscriber.complete();
        },
      });
      return () => {
        closed = true;
        signal?.removeEventListener('abort', hurry);
        subscription.unsubscribe();
        timer?.unsubscribe();
      };
    });
}

/** `envelopes` encoded by `encode`, one row each, as a batch's `encoded` holds them. */
export function encodeRows<T>(envelopes: readonly Envelope<T>[], encode: (value: T) => string): EncodedRows {
  const body = new BodyBuilder();
  for (const envelope of envelopes) body.add(encode(envelope.value));
  return body.take();
}

/** Rows already encoded, one after the other, as a batch's `encoded` holds them. */
export function encodedRows(rows: readonly string[]): EncodedRows {
  const body = new BodyBuilder();
  for (const row of rows) body.add(row);
  return body.take();
}

/**
 * `rows` with `columns`, when there are any (no `columns` key otherwise). Named fields, not
 * a spread: V8 copies a spread through a generic path (~0.9 µs against ~0.04 here), and a
 * webhook source makes one of these for every request.
 */
export const withColumns = (rows: EncodedRows, columns: readonly string[] | undefined): EncodedRows => (columns ? { body: rows.body, ends: rows.ends, columns } : rows);

/** The records of `batch` at `indices` (ascending) as a batch of their own, with their encoded rows (and their columns). */
export function batchPart<V>(batch: Batch<V>, indices: readonly number[]): Batch<V> {
  const envelopes = indices.map((index) => batch.envelopes[index]!);
  let bytes = 0;
  for (const envelope of envelopes) bytes += envelope.bytes;
  const rows = batch.encoded;
  if (!rows) return { envelopes, bytes };
  const start = (index: number) => (index === 0 ? 0 : rows.ends[index - 1]!);
  const first = indices[0]!;
  const last = indices[indices.length - 1]!;
  if (last - first + 1 === indices.length) {
    // Consecutive records: their rows are one stretch of the body.
    const offset = start(first);
    return { envelopes, bytes, encoded: withColumns({ body: rows.body.subarray(offset, rows.ends[last]), ends: indices.map((index) => rows.ends[index]! - offset) }, rows.columns) };
  }
  const pieces = indices.map((index) => rows.body.subarray(start(index), rows.ends[index]));
  let end = 0;
  return { envelopes, bytes, encoded: withColumns({ body: Buffer.concat(pieces), ends: pieces.map((piece) => (end += piece.length)) }, rows.columns) };
}

/**
 * Encoded records appended to one buffer, sized from the last batch and grown as needed.
 * Batches cut small and often (a source whose callers wait) share a buffer: each takes
 * its stretch, and a new buffer comes only when the rest would not hold another like it.
 */
class BodyBuilder implements RowBytes {
  #buffer = Buffer.allocUnsafe(64 * 1024);
  /** Where the rows of the batch being built begin. */
  #start = 0;
  at = 0;
  #ends: number[] = [];

  /** The buffer, with room for `bytes` more at `at`. */
  room(bytes: number): Buffer {
    if (this.at + bytes > this.#buffer.length) {
      // The batch moves to a buffer of its own, twice as large only when it outgrew a whole
      // one: one that merely came after others moves to one the same size.
      const length = this.at - this.#start;
      const larger = Buffer.allocUnsafe(Math.max(this.#start === 0 ? this.#buffer.length * 2 : this.#buffer.length, length + bytes));
      this.#buffer.copy(larger, 0, this.#start, this.at);
      this.#buffer = larger;
      this.#start = 0;
      this.at = length;
    }
    return this.#buffer;
  }

  add(row: string): void {
    // At most 3 bytes of UTF-8 per UTF-16 unit, and the newline.
    const buffer = this.room(row.length * 3 + 1);
    this.at += buffer.write(row, this.at);
    this.#end();
  }

  /** A row `encodeInto` writes; nothing of it stays when it throws. */
  addInto(encodeInto: (value: any, out: RowBytes) => void, value: unknown): void {
    const from = this.at - this.#start;
    try {
      encodeInto(value, this);
    } catch (error) {
      this.at = this.#start + from;
      throw error;
    }
    this.room(1);
    this.#end();
  }

  #end(): void {
    this.#buffer[this.at++] = 0x0a;
    this.#ends.push(this.at - this.#start);
  }

  /** The rows so far (`columns`, those of its arrays); the next batch goes on in the same buffer, or a new one a quarter larger than these when the rest is smaller. */
  take(columns?: readonly string[]): EncodedRows {
    const length = this.at - this.#start;
    const rows = withColumns({ body: this.#buffer.subarray(this.#start, this.at), ends: this.#ends }, columns);
    const like = Math.ceil(length * 1.25);
    if (this.#buffer.length - this.at < like) {
      this.#buffer = Buffer.allocUnsafe(Math.max(64 * 1024, like));
      this.at = 0;
    }
    this.#start = this.at;
    this.#ends = [];
    return rows;
  }
}
