import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, TributaryError } from '../lib/errors';
import { positiveInteger } from '../lib/options';
import type { DedupeStats } from '../lib/metrics';
import { resolveRetryOptions, retry, type RetryOptions } from '../lib/retry';
import type { DedupeStore } from './dedupeStores';

/** What `dedupe` counted (defined beside the metrics that read it). */
export type { DedupeStats } from '../lib/metrics';

export interface DedupeOptions<T> {
  /** The record's identity for deduplication; records with equal keys within `ttlMs` are duplicates. */
  key: (value: T, envelope: Envelope<T>) => string;
  /** How long a key is remembered after it was first seen, ms. */
  ttlMs: number;
  /** Where keys are remembered: a `MemoryDedupeStore`, or `redisDedupeStore` to share them. */
  store: DedupeStore;
  /**
   * Keys sent to a remote store per round trip, and the longest a record waits for its
   * round trip to start. Stores in this process (`claimNow`) need no batching.
   * @default { rows: 1000, maxWaitMs: 5 }
   */
  batch?: { rows?: number; maxWaitMs?: number };
  /** Retries of a failed store call whose error is retriable. @default { retries: 5 } */
  retry?: RetryOptions;
  /** Counters to add to, e.g. for metrics. */
  stats?: DedupeStats;
  /** Timers of the batching, for virtual time in tests. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/**
 * Drops records whose key was seen within a TTL window: a duplicate is acked (a
 * deliberate drop) and counted, never dead-lettered.
 *
 * A key is claimed for the record's source and position, so the same record delivered
 * again (after a nack, or a restart before its checkpoint moved) is not mistaken for a
 * duplicate of itself: it passes again. Records keep their order. With a remote store,
 * records are claimed in batches, one round trip at a time; records arriving meanwhile
 * wait in the next batch, bounded by the pipeline's in-flight credits. If the store stays
 * down after the retries, the waiting records are nacked and the stream errors.
 *
 * ## Example
 * ```ts
 * import { dedupe, MemoryDedupeStore } from 'tributary';
 * records$.pipe(dedupe({ key: (b) => `${b.vendor}/${b.booking_id}/${b.updated_at}`, ttlMs: 3_600_000, store: new MemoryDedupeStore() }));
 * ```
 *
 * @param options The key, the window and the store.
 * @returns An operator passing on the first record of each key.
 */
export function dedupe<T>(options: DedupeOptions<T>): OperatorFunction<Envelope<T>, Envelope<T>> {
  if (!options || typeof options !== 'object') throw new ConfigError('options must be an object with key, ttlMs and store');
  if (typeof options.key !== 'function') throw new ConfigError('key must be a function of the record returning a string');
  positiveInteger(options.ttlMs, NaN, 'ttlMs');
  if (!options.store || typeof options.store.claim !== 'function') throw new ConfigError('store must be a DedupeStore (new MemoryDedupeStore() or redisDedupeStore({ url }))');
  const rows = positiveInteger(options.batch?.rows, 1000, 'batch.rows');
  const maxWaitMs = options.batch?.maxWaitMs ?? 5;
  if (!(Number.isFinite(maxWaitMs) && maxWaitMs >= 0)) throw new ConfigError(`batch.maxWaitMs must be a finite number >= 0, got ${options.batch?.maxWaitMs}`);
  const retryOptions = resolveRetryOptions({ retries: 5, ...options.retry }, 'retry');
  const stats = options.stats ?? { passed: 0, duplicates: 0, rejected: 0 };
  const settings: Settings<T> = { key: options.key, ttlMs: options.ttlMs, store: options.store, rows, maxWaitMs, retry: retryOptions, stats, scheduler: options.scheduler ?? asyncScheduler };
  return (source) => new Observable<Envelope<T>>((subscriber) => new Deduper(settings, subscriber).run(source));
}

interface Settings<T> {
  key: (value: T, envelope: Envelope<T>) => string;
  ttlMs: number;
  store: DedupeStore;
  rows: number;
  maxWaitMs: number;
  retry: ReturnType<typeof resolveRetryOptions>;
  stats: DedupeStats;
  scheduler: SchedulerLike;
}

interface Output<T> {
  next(envelope: Envelope<T>): void;
  error(error: unknown): void;
  complete(): void;
}

/** One subscription's state: the waiting records and the round trip under way. */
class Deduper<T> {
  readonly #s: Settings<T>;
  readonly #out: Output<T>;
  #waiting: Envelope<T>[] = [];
  #keys: string[] = [];
  #owners: string[] = [];
  #claiming = false;
  #ended = false;
  /** Set once the stream errored or was unsubscribed: records still here are nacked with it. */
  #stopped: Error | undefined;
  #timer: Subscription | undefined;

  constructor(settings: Settings<T>, out: Output<T>) {
    this.#s = settings;
    this.#out = out;
  }

  run(source: Observable<Envelope<T>>): () => void {
    const subscription = source.subscribe({
      next: (envelope) => this.#next(envelope),
      error: (error: unknown) => this.#fail(error),
      complete: () => {
        this.#ended = true;
        this.#flush();
      },
    });
    return () => {
      subscription.unsubscribe();
      this.#timer?.unsubscribe();
      // Unsubscribed with records waiting: give them back to their source.
      this.#stopped ??= new TributaryError('dedupe stopped before these records were checked', { code: 'STOPPED', retriable: true });
      this.#nackWaiting(this.#stopped);
    };
  }

  #next(envelope: Envelope<T>): void {
    const s = this.#s;
    let key: string;
    try {
      key = s.key(envelope.value, envelope);
      if (typeof key !== 'string' || key === '') throw new TypeError(`the key must be a non-empty string, got ${key === '' ? 'an empty string' : typeof key}`);
    } catch (error) {
      s.stats.rejected++;
      envelope.reject({ stage: 'dedupe', code: 'DEDUPE_KEY', message: (error as Error).message, path: '' });
      return;
    }
    const owner = `${envelope.meta.source}\u0001${envelope.meta.position}`;
    if (s.store.claimNow) {
      this.#decide(envelope, s.store.claimNow(key, owner, s.ttlMs));
      return;
    }
    this.#waiting.push(envelope);
    this.#keys.push(key);
    this.#owners.push(owner);
    if (this.#waiting.length >= s.rows) this.#flush();
    else if (!this.#timer && !this.#claiming) this.#timer = s.scheduler.schedule(() => this.#flush(), s.maxWaitMs);
  }

  #decide(envelope: Envelope<T>, passes: boolean): void {
    if (passes) {
      this.#s.stats.passed++;
      this.#out.next(envelope);
    } else {
      this.#s.stats.duplicates++;
      envelope.ack();
    }
  }

  #flush(): void {
    this.#timer?.unsubscribe();
    this.#timer = undefined;
    if (this.#claiming || this.#stopped) return;
    if (this.#waiting.length === 0) {
      if (this.#ended) this.#out.complete();
      return;
    }
    const n = Math.min(this.#s.rows, this.#waiting.length);
    const envelopes = this.#waiting.splice(0, n);
    const keys = this.#keys.splice(0, n);
    const owners = this.#owners.splice(0, n);
    this.#claiming = true;
    const s = this.#s;
    const answer = retry(async () => s.store.claim(keys, owners, s.ttlMs), s.retry);
    answer.then(
      (passes) => {
        this.#claiming = false;
        if (this.#stopped) {
          for (const envelope of envelopes) envelope.nack(this.#stopped);
          return;
        }
        for (let i = 0; i < envelopes.length; i++) this.#decide(envelopes[i]!, passes[i] === true);
        // The next batch goes at once when full or when the input ended; otherwise after the wait.
        if (this.#waiting.length >= s.rows || this.#ended) this.#flush();
        else if (this.#waiting.length > 0) this.#timer = s.scheduler.schedule(() => this.#flush(), s.maxWaitMs);
      },
      (cause: unknown) => {
        this.#claiming = false;
        const error = cause instanceof TributaryError ? cause : new TributaryError(`dedupe store failed: ${String(cause)}`, { code: 'DEDUPE_STORE', retriable: true, cause });
        for (const envelope of envelopes) envelope.nack(error);
        this.#fail(error);
      },
    );
  }

  #fail(error: unknown): void {
    if (this.#stopped) return;
    this.#stopped = error instanceof Error ? error : new TributaryError(String(error));
    this.#timer?.unsubscribe();
    this.#nackWaiting(this.#stopped);
    this.#out.error(error);
  }

  #nackWaiting(error: Error): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    this.#keys = [];
    this.#owners = [];
    for (const envelope of waiting) envelope.nack(error);
  }
}
