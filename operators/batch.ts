import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError } from '../lib/errors';
import type { Batch } from '../lib/sink';

export interface BatchOptions {
  /** Emit when this many records are gathered. @default 10000 */
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
}

export function resolveBatchOptions(options: BatchOptions = {}, where = 'batch'): Required<Omit<BatchOptions, 'key'>> & Pick<BatchOptions, 'key'> {
  const resolved = {
    rows: options.rows ?? 10_000,
    bytes: options.bytes ?? 16 * 1024 * 1024,
    maxWaitMs: options.maxWaitMs ?? 1000,
    scheduler: options.scheduler ?? asyncScheduler,
    key: options.key,
  };
  if (resolved.key !== undefined && typeof resolved.key !== 'function') {
    throw new ConfigError(`${where}.key must be a function, got ${typeof resolved.key}`);
  }
  if (!Number.isInteger(resolved.rows) || resolved.rows < 1) {
    throw new ConfigError(`${where}.rows must be an integer >= 1, got ${options.rows}`);
  }
  if (!Number.isInteger(resolved.bytes) || resolved.bytes < 1) {
    throw new ConfigError(`${where}.bytes must be an integer >= 1, got ${options.bytes}`);
  }
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
 * records$.pipe(batch({ rows: 10_000, maxWaitMs: 500 }));
 * ```
 *
 * @param options Limits of one batch; whichever is reached first closes it.
 * @returns An operator emitting {@link Batch}es.
 */
export function batch<T>(options: BatchOptions = {}): OperatorFunction<Envelope<T>, Batch<T>> {
  const { rows, bytes, maxWaitMs, scheduler, key } = resolveBatchOptions(options);
  return (source) =>
    new Observable<Batch<T>>((subscriber) => {
      let envelopes: Envelope<T>[] = [];
      let size = 0;
      let timer: Subscription | undefined;
      let batchKey: string | undefined;
      const flush = () => {
        timer?.unsubscribe();
        timer = undefined;
        if (envelopes.length === 0) return;
        const full: Batch<T> = { envelopes, bytes: size };
        envelopes = [];
        size = 0;
        subscriber.next(full);
      };
      const subscription = source.subscribe({
        next(envelope) {
          if (key) {
            const next = key(envelope);
            if (next !== batchKey && envelopes.length > 0) flush();
            batchKey = next;
          }
          envelopes.push(envelope);
          size += envelope.bytes;
          if (envelopes.length >= rows || size >= bytes) flush();
          else if (envelopes.length === 1) timer = scheduler.schedule(flush, maxWaitMs);
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
        subscription.unsubscribe();
        timer?.unsubscribe();
      };
    });
}
