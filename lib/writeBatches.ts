import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import type { Envelope } from './envelope';
import { withColumns } from './batch';
import type { Batch } from './sink';

/** How far batches waiting for the sink may be joined: the batch limits. */
export interface JoinLimits {
  rows: number;
  bytes: number;
  /**
   * How long a partial batch waits for the write under way while a slot is free; then it
   * takes the slot all the same. Counted from when the batch came, also when it first had
   * to wait for every slot. @default until that write ends
   */
  maxWaitMs?: number;
  /**
   * With no write under way, a partial batch starts one only this long after the last
   * write started and half this long after the last one ended, joined meanwhile with what
   * comes. Unless writes are slow (the median of the last five took longer than this), the
   * rest never holds a batch past this long after it came: one that came during a long write
   * goes when it ends; while they are slow, the half rest holds for it too. For
   * batches handed over at once rather than cut by time (a source whose callers wait for
   * each write): a lone batch goes at once, writes start no more often than time-cut
   * batches would make them, the callers the last write answered are back to join the next
   * one (a write started as soon as the last ended would cut their group in two, and the
   * half left out waits a write more), and slow writes are not started back to back. While
   * the engine or the machine is busy (an insert into ClickHouse costs about the same
   * whatever its size, most of it making the part), writes are then fewer and larger
   * instead of keeping the engine busy with small ones. A write slow now and then (a merge
   * beside it) is no reason for a rest: the batches behind it have waited long enough
   * already, and would only wait longer. Writes ending within half of this of their start
   * are never held longer. @default 0
   */
  writeIntervalMs?: number;
  /** Scheduler for these waits, for tests on virtual time. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/**
 * Writes batches with at most `concurrency` writes at once, like `mergeMap(write,
 * concurrency)`, except that a batch arriving while every write slot is busy joins the
 * batch already waiting, up to `limits`. A sink whose writes cost about the same whatever
 * their size (an insert into ClickHouse) then writes more rows per write the slower it
 * is, instead of a queue of small batches each waiting its turn: latency stays near one
 * write, not one write per queued batch. Without `limits` batches are never joined (a
 * source whose batch boundaries must be reproducible, for its insert tokens).
 *
 * With `limits`, only a full batch (one that reached them) starts a write beside another
 * at once: a partial one (cut by time) waits for the write under way, up to
 * `limits.maxWaitMs`, and is joined with what comes meanwhile. An insert into ClickHouse
 * makes a part whatever its size: two inserts of 200 rows into the embedded engine cost
 * about three times one insert of 400, and run at once they end hardly sooner than one
 * after the other. The wait is bounded so that a slow write delays the next by at most
 * that much. When a wait runs out, the write starts once the event loop has read what it
 * already received (on the real clock): those records join it rather than wait a write.
 */
export function writeBatches<T>(write: (batch: Batch<T>) => Promise<void>, concurrency: number, limits: JoinLimits | undefined): OperatorFunction<Batch<T>, never> {
  return (source) =>
    new Observable<never>((subscriber) => {
      /** Batches waiting for a slot, each entry written as one batch: its parts joined. */
      const waiting: Waiting<T>[] = [];
      let writing = 0;
      let ended = false;
      const scheduler = limits?.scheduler ?? asyncScheduler;
      const intervalMs = limits?.writeIntervalMs ?? 0;
      /** When the last write started, and when the sink has rested after the last one that ended (scheduler time). */
      let lastStart = -Infinity;
      let restUntil = -Infinity;
      /** How long the last writes took, the oldest written over. */
      const durations = new Float64Array(RECENT_WRITES);
      let writesEnded = 0;
      /** Whether the median of the last writes took longer than the interval. */
      let slow = false;
      /** When a partial batch that came at `since` may start a write on the idle sink: see `JoinLimits.writeIntervalMs`. */
      const restedAt = (since: number) => Math.max(lastStart + intervalMs, slow ? restUntil : Math.min(restUntil, since + intervalMs));
      /** Runs while the first waiting batch is partial and a slot is free: it then takes the slot. */
      let overdue: Subscription | undefined;
      let overdueAt = Infinity;
      /**
       * Set once `overdue` ran, on the real clock: the write starts after the event loop
       * has read what it already received. Timers run before the loop reads its sockets, so
       * a batch cut in the timer would leave records that came meanwhile (callers of a
       * webhook answered by the last write, already back) a whole write behind.
       */
      let taking: ReturnType<typeof setImmediate> | undefined;
      const cancel = () => {
        overdue?.unsubscribe();
        overdue = undefined;
        clearImmediate(taking);
        taking = undefined;
        overdueAt = Infinity;
      };
      const take = () => {
        taking = undefined;
        overdueAt = Infinity;
        startWaiting(true);
      };
      const schedule = (at: number) => {
        cancel();
        overdueAt = at;
        overdue = scheduler.schedule(() => {
          overdue = undefined;
          if (scheduler === asyncScheduler) taking = setImmediate(take);
          else take();
        }, Math.max(0, at - scheduler.now()));
      };
      const startable = (batch: { rows: number; bytes: number; since?: number }) => {
        if (writing >= concurrency) return false;
        if (!limits || full(batch, limits)) return true;
        // Due, and taking in what the loop has received first.
        if (taking !== undefined) return false;
        // Once the input has ended, nothing more is coming to join: no interval.
        if (writing === 0) return ended || scheduler.now() >= restedAt(batch.since ?? scheduler.now());
        // Beside a write under way: once the batch has waited maxWaitMs in all.
        return batch.since !== undefined && limits.maxWaitMs !== undefined && scheduler.now() - batch.since >= limits.maxWaitMs;
      };
      const startWaiting = (late: boolean) => {
        while (waiting.length > 0 && writing < concurrency && (late || startable(waiting[0]!))) {
          // The next batch waits its own time.
          cancel();
          start(joined(waiting.shift()!.parts));
        }
        if (waiting.length === 0 || writing === concurrency) cancel();
        // No write under way: the first waiting batch goes once the sink has rested.
        else if (writing === 0) {
          const at = restedAt(waiting[0]!.since);
          if (at < overdueAt) schedule(at);
        } else if (limits?.maxWaitMs !== undefined) {
          // Counted from when the batch came, not from when a slot came free: a batch that
          // waited for both writes under way does not wait its time again after one ends.
          const due = waiting[0]!.since + limits.maxWaitMs;
          if (due < overdueAt) schedule(due);
        }
      };
      const start = (batch: Batch<T>) => {
        writing++;
        const started = (lastStart = scheduler.now());
        write(batch).then(
          () => {
            writing--;
            const now = scheduler.now();
            durations[writesEnded++ % RECENT_WRITES] = now - started;
            // Half a rest, for the callers it answered to come back: while writes are slow, also for a batch that has waited the interval.
            slow = median(durations) > intervalMs;
            restUntil = now + intervalMs / 2;
            startWaiting(false);
            if (ended && writing === 0) subscriber.complete();
          },
          (error: unknown) => subscriber.error(error),
        );
      };
      const subscription = source.subscribe({
        next(batch) {
          if (waiting.length === 0 && startable({ rows: batch.envelopes.length, bytes: batch.bytes })) return start(batch);
          const last = waiting[waiting.length - 1];
          if (last && limits && joinable(last, batch, limits)) {
            last.parts.push(batch);
            last.rows += batch.envelopes.length;
            last.bytes += batch.bytes;
          } else {
            waiting.push({ parts: [batch], rows: batch.envelopes.length, bytes: batch.bytes, since: scheduler.now() });
          }
          startWaiting(false);
        },
        error: (error: unknown) => subscriber.error(error),
        complete() {
          ended = true;
          if (writing === 0 && waiting.length === 0) subscriber.complete();
          else startWaiting(false);
        },
      });
      return () => {
        subscription.unsubscribe();
        cancel();
      };
    });
}

/** Writes whose durations tell whether writes are slow: a median of five, so one or two slow ones do not. */
const RECENT_WRITES = 5;

/** The median of `values` (an odd number of them; zeros for writes not yet ended). */
function median(values: Float64Array): number {
  return values.slice().sort()[values.length >> 1]!;
}

/** Batches waiting to be written as one, their total size, and since when the first waits (scheduler time). */
interface Waiting<T> {
  parts: Batch<T>[];
  rows: number;
  bytes: number;
  since: number;
}

/** Whether `batch` reached a limit (cut by size, not by time). */
function full(batch: { rows: number; bytes: number }, limits: JoinLimits): boolean {
  return batch.rows >= limits.rows || batch.bytes >= limits.bytes;
}

/** Whether `b` may join the batches of `a`: within `limits`, and of the same form (encoded rows or not, arrays of the same columns). */
function joinable<T>(a: Waiting<T>, b: Batch<T>, limits: JoinLimits): boolean {
  if (a.rows + b.envelopes.length > limits.rows || a.bytes + b.bytes > limits.bytes) return false;
  const first = a.parts[0]!.encoded;
  return (first === undefined) === (b.encoded === undefined) && first?.columns === b.encoded?.columns;
}

/**
 * One batch of `parts`' records in order, their encoded rows copied once into one body.
 * Sized up front and filled by index: a join runs a few dozen times a second, too seldom
 * for its loops to be optimised, and growing arrays and for-of iterators then allocated
 * at every record.
 */
function joined<T>(parts: readonly Batch<T>[]): Batch<T> {
  if (parts.length === 1) return parts[0]!;
  let count = 0;
  let bytes = 0;
  for (let p = 0; p < parts.length; p++) {
    count += parts[p]!.envelopes.length;
    bytes += parts[p]!.bytes;
  }
  const envelopes = new Array<Envelope<T>>(count);
  let at = 0;
  for (let p = 0; p < parts.length; p++) {
    const part = parts[p]!.envelopes;
    for (let i = 0; i < part.length; i++) envelopes[at++] = part[i]!;
  }
  if (!parts[0]!.encoded) return { envelopes, bytes };
  const ends = new Array<number>(count);
  const bodies = new Array<Buffer>(parts.length);
  let offset = 0;
  at = 0;
  for (let p = 0; p < parts.length; p++) {
    const encoded = parts[p]!.encoded!;
    for (let i = 0; i < encoded.ends.length; i++) ends[at++] = encoded.ends[i]! + offset;
    bodies[p] = encoded.body;
    offset += encoded.body.length;
  }
  // Joined only with parts of the same columns.
  return { envelopes, bytes, encoded: withColumns({ body: Buffer.concat(bodies, offset), ends }, parts[0]!.encoded.columns) };
}
