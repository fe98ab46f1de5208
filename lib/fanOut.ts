import { Counter, Gauge, register as globalRegistry, Registry } from 'prom-client';
import { batchPart } from './batch';
import { SinkBreaker, type BreakerOptions } from './breaker';
import { ConfigError, isRetriable } from './errors';
import { positiveInteger } from './options';
import { resolveRetryOptions, retry, type ResolvedRetryOptions, type RetryOptions } from './retry';
import type { Batch, RowBytes, Sink, WriteContext } from './sink';

/** One sink of a {@link fanOut}: required (it acks the records) or best-effort (it never holds them back). */
export interface FanOutTarget<T> {
  sink: Sink<T>;
  /** Records are acked only once this sink has them. Exactly one of `required` and `bestEffort` must be true. */
  required?: boolean;
  /**
   * Written after every required sink has the batch, in the background: its failures are
   * counted and mark it stale, never delay, nack or fail the records.
   */
  bestEffort?: boolean;
  /**
   * Best-effort only: retries of a failed write before the batch counts as failed (the
   * pipeline's `retry` governs the required sinks). @default { retries: 2, maxDelayMs: 1000 }
   */
  retry?: RetryOptions;
  /** Best-effort only: the circuit breaker around this sink's writes. @default BreakerOptions' defaults */
  breaker?: BreakerOptions;
  /**
   * Best-effort only: batches being written to this sink at once; a batch past it is
   * skipped (counted, the sink marked stale) so a slow sink cannot hold memory. @default 4
   */
  maxPending?: number;
  /**
   * This sink's own batches: each batch is written to it in consecutive parts within these
   * limits, one after the other (a part's token is the batch's with `:<part>` added, the
   * same on every retry). @default the pipeline's batches, whole
   */
  batch?: { rows?: number; bytes?: number };
}

/** What happened to the writes of one sink of a fan-out. */
export interface FanOutSinkStats {
  name: string;
  required: boolean;
  /** Batches written. */
  written: number;
  /** Best-effort batches that failed after their retries. */
  failed: number;
  /** Best-effort batches not written because `maxPending` were under way. */
  skipped: number;
  /** Rows of the batches written. */
  rowsWritten: number;
  /** Rows of the writes that failed: a required sink's are retried by the pipeline (and counted again), a best-effort sink's after its own retries. */
  rowsFailed: number;
  /** Rows of the skipped batches. */
  rowsSkipped: number;
  /** A best-effort sink missed a batch since it was last marked fresh. */
  stale: boolean;
  lastError?: string;
}

/** A sink writing every batch to several sinks. */
export interface FanOutSink<T> extends Sink<T> {
  /** Where its metrics are: `tributary_fanout_rows_total` and `tributary_fanout_stale`. */
  readonly registry: Registry;
  /** True while any best-effort sink is stale. */
  readonly stale: boolean;
  /** One entry per sink, in the order given. */
  stats(): FanOutSinkStats[];
  /** Marks a best-effort sink (by name; all when omitted) complete again, e.g. after a rebuild. */
  markFresh(name?: string): void;
  /** Resolves once the best-effort writes under way have ended. */
  idle(): Promise<void>;
  /** Waits for the best-effort writes and closes every sink. Its series stay in its registry until a fan-out of the same name takes its place there. */
  close(): Promise<void>;
}

/** Batches being retried whose required sinks are remembered; far more than sinkConcurrency ever holds. */
const MAX_REMEMBERED = 1024;

class Target<T> {
  readonly sink: Sink<T>;
  readonly required: boolean;
  readonly stats: FanOutSinkStats;
  readonly retry: ResolvedRetryOptions | undefined;
  readonly breaker: SinkBreaker | undefined;
  readonly maxPending: number;
  readonly parts: { rows: number; bytes: number } | undefined;
  readonly pending = new Set<Promise<void>>();
  opened = false;

  constructor(target: FanOutTarget<T>, index: number) {
    if (!target?.sink || typeof target.sink.write !== 'function') throw new ConfigError(`sinks[${index}].sink must be a sink`);
    if (Boolean(target.required) === Boolean(target.bestEffort)) throw new ConfigError(`sinks[${index}] must set exactly one of required and bestEffort`);
    this.sink = target.sink;
    this.required = Boolean(target.required);
    this.stats = { name: target.sink.name, required: this.required, written: 0, failed: 0, skipped: 0, rowsWritten: 0, rowsFailed: 0, rowsSkipped: 0, stale: false };
    this.parts =
      target.batch === undefined
        ? undefined
        : {
            rows: target.batch.rows === undefined ? Infinity : positiveInteger(target.batch.rows, 1, `sinks[${index}].batch.rows`),
            bytes: target.batch.bytes === undefined ? Infinity : positiveInteger(target.batch.bytes, 1, `sinks[${index}].batch.bytes`),
          };
    if (this.required) {
      for (const option of ['retry', 'breaker', 'maxPending'] as const) {
        if (target[option] !== undefined) throw new ConfigError(`sinks[${index}].${option} is for best-effort sinks; a required sink uses the pipeline's`);
      }
      this.maxPending = 0;
      return;
    }
    this.retry = resolveRetryOptions({ retries: 2, maxDelayMs: 1000, ...target.retry }, `sinks[${index}].retry`);
    this.breaker = new SinkBreaker(target.sink.name, target.breaker);
    this.maxPending = positiveInteger(target.maxPending, 4, `sinks[${index}].maxPending`);
  }

  missed(error: unknown): void {
    this.stats.stale = true;
    this.stats.lastError = error instanceof Error ? error.message : String(error);
  }

  /** Writes `batch` to this sink, in its own parts when it has its own batch limits. */
  async write(batch: Batch<T>, context: WriteContext): Promise<void> {
    const limits = this.parts;
    if (!limits || (batch.envelopes.length <= limits.rows && batch.bytes <= limits.bytes)) {
      await this.sink.write(batch, context);
      return;
    }
    const envelopes = batch.envelopes;
    let part = 0;
    for (let start = 0; start < envelopes.length; part++) {
      let end = start + 1;
      let bytes = envelopes[start]!.bytes;
      while (end < envelopes.length && end - start < limits.rows && bytes + envelopes[end]!.bytes <= limits.bytes) bytes += envelopes[end++]!.bytes;
      const indices = Array.from({ length: end - start }, (_, i) => start + i);
      await this.sink.write(batchPart(batch, indices), { token: `${context.token}:${part}`, attempt: context.attempt });
      start = end;
    }
  }
}

/** The fan-outs reporting to each registry. */
const reporting = new WeakMap<Registry, Set<Reported>>();

/** A fan-out in a registry: still reported once closed, until another of its name takes its place. */
interface Reported {
  name: string;
  targets: readonly Target<any>[];
  closed: boolean;
}

function report(registry: Registry, fanOut: Reported): void {
  let fanOuts = reporting.get(registry);
  if (!fanOuts) {
    const all = (fanOuts = new Set());
    reporting.set(registry, all);
    new Counter({
      name: 'tributary_fanout_rows_total',
      help: 'Rows a fan-out wrote to each of its sinks, by outcome: written, failed (a failed write; a required sink is retried by the pipeline) or skipped (a best-effort sink with maxPending writes under way)',
      labelNames: ['fanout', 'sink', 'required', 'outcome'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { name, targets } of all) {
          for (const { stats } of targets) {
            const labels = { fanout: name, sink: stats.name, required: String(stats.required) };
            this.inc({ ...labels, outcome: 'written' }, stats.rowsWritten);
            this.inc({ ...labels, outcome: 'failed' }, stats.rowsFailed);
            if (!stats.required) this.inc({ ...labels, outcome: 'skipped' }, stats.rowsSkipped);
          }
        }
      },
    });
    new Gauge({
      name: 'tributary_fanout_stale',
      help: '1 while a best-effort sink of a fan-out has missed a batch since it was last marked fresh',
      labelNames: ['fanout', 'sink'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { name, targets } of all) for (const { stats } of targets) if (!stats.required) this.set({ fanout: name, sink: stats.name }, stats.stale ? 1 : 0);
      },
    });
  }
  for (const other of fanOuts) {
    if (other.name !== fanOut.name) continue;
    if (!other.closed) throw new ConfigError(`a fan-out named ${JSON.stringify(fanOut.name)} already reports to this registry: give it another name`);
    fanOuts.delete(other);
  }
  fanOuts.add(fanOut);
}

/**
 * Writes each batch to several sinks with one acknowledgement: records are acked once
 * every required sink has them. Best-effort sinks (a cache) get the batch after that, in
 * the background, behind their own retry and circuit breaker; their failures are counted
 * and mark them `stale`, and never hold records back.
 *
 * Every sink gets the batch's insert token: a retried batch is absorbed where the sink
 * deduplicates by it. A required sink that failed is retried by the pipeline (its retry
 * and breaker); the required sinks that already have that token are not written again.
 * The required sinks are written at once, side by side: a sink waiting on its server
 * (Redis) overlaps one working in this process or beside it (ClickHouse).
 *
 * Rows are encoded once: the fan-out encodes as its first required sink that has an
 * `encode` does, and hands the encoded rows to every sink of the same `encoding` (a JSON
 * cache beside ClickHouse); the others get values to encode themselves. A sink with its
 * own `batch` limits gets each batch in parts within them.
 *
 * Metrics (in `registry`): `tributary_fanout_rows_total{fanout,sink,required,outcome}`
 * (written, failed, and skipped for best-effort sinks) and `tributary_fanout_stale{fanout,sink}`
 * (1 while a best-effort sink is stale).
 *
 * ## Example
 * ```ts
 * import { fanOut, toClickHouse } from 'tributary';
 * import { toRedisCache } from 'tributary/redis';
 * const cache = toRedisCache({ url: 'redis://127.0.0.1:6379' });
 * const sink = fanOut([{ sink: toClickHouse({ client, table: 'bookings' }), required: true }, { sink: cache, bestEffort: true }]);
 * ```
 *
 * @param sinks At least one required sink; names must differ.
 * @param options `name` of the fan-out (its `fanout` label); `registry`, a prom-client
 *   Registry or `'global'`. @default name `fanOut(<names>)`, registry a new one
 */
export function fanOut<T>(sinks: readonly FanOutTarget<T>[], options: { name?: string; registry?: Registry | 'global' } = {}): FanOutSink<T> {
  if (!Array.isArray(sinks) || sinks.length === 0) throw new ConfigError('fanOut needs at least one sink');
  const targets = sinks.map((target, index) => new Target(target, index));
  const required = targets.filter((t) => t.required);
  const bestEffort = targets.filter((t) => !t.required);
  if (required.length === 0) throw new ConfigError('fanOut needs at least one required sink: a best-effort sink cannot ack records');
  const names = new Set<string>();
  for (const { sink } of targets) {
    if (names.has(sink.name)) throw new ConfigError(`fanOut sink names must differ, ${JSON.stringify(sink.name)} is given twice`);
    names.add(sink.name);
  }
  const name = options.name ?? `fanOut(${targets.map((t) => t.sink.name).join(',')})`;
  const registry = options.registry === 'global' ? globalRegistry : (options.registry ?? new Registry());
  if (!(registry instanceof Registry)) throw new ConfigError(`registry must be a prom-client Registry or 'global', got ${String(options.registry)}`);
  const reported: Reported = { name, targets, closed: false };
  report(registry, reported);
  /** Required sinks that already hold a token whose batch is still being retried. */
  const landed = new Map<string, Set<Target<T>>>();
  /** The sink whose encoding batches carry. */
  const encoder = required.find((t) => typeof t.sink.encode === 'function');
  /** Whether `target` can write the encoder's rows (read after open: a sink may learn its encoding then). */
  const shares = (target: Target<T>) => {
    const encoding = encoder?.sink.encoding;
    return target === encoder || (encoding !== undefined && (target.sink.encoding === encoding || target.sink.reads?.includes(encoding) === true));
  };
  /** The batch as `target` takes it: without the encoded rows of another encoding. */
  const batchFor = (target: Target<T>, batch: Batch<T>): Batch<T> => (batch.encoded === undefined || shares(target) ? batch : { envelopes: batch.envelopes, bytes: batch.bytes });

  const writeBestEffort = (target: Target<T>, batch: Batch<T>, context: WriteContext): void => {
    const rows = batch.envelopes.length;
    if (target.pending.size >= target.maxPending) {
      target.stats.skipped++;
      target.stats.rowsSkipped += rows;
      target.missed(`${target.maxPending} writes were under way`);
      return;
    }
    // Its own batch object: the pipeline may split the original while this write goes on.
    const own: Batch<T> = { ...batchFor(target, batch) };
    const work = (async () => {
      try {
        await retry(async (attempt) => {
          await target.breaker!.call(async () => {
            if (!target.opened) {
              await target.sink.open?.();
              target.opened = true;
            }
            await target.write(own, { token: context.token, attempt });
          });
        }, target.retry!);
        target.stats.written++;
        target.stats.rowsWritten += rows;
      } catch (error) {
        target.stats.failed++;
        target.stats.rowsFailed += rows;
        target.missed(error);
      }
    })();
    target.pending.add(work);
    void work.then(() => target.pending.delete(work));
  };

  return {
    name,
    registry,
    encode: encoder && ((value: T) => encoder.sink.encode!(value)),
    encodeInto: encoder?.sink.encodeInto && ((value: T, out: RowBytes) => encoder.sink.encodeInto!(value, out)),
    get encoding() {
      return encoder?.sink.encoding;
    },
    get encodedColumns() {
      return encoder?.sink.encodedColumns;
    },
    /** Values stay beside encoded rows while a sink reads them, or encodes its own. */
    get keepsValues() {
      return targets.some((t) => t.sink.keepsValues === true || !shares(t));
    },
    get stale() {
      return bestEffort.some((t) => t.stats.stale);
    },
    stats: () => targets.map((t) => ({ ...t.stats })),
    markFresh(name?: string) {
      for (const t of bestEffort) if (name === undefined || t.sink.name === name) t.stats.stale = false;
    },
    async idle() {
      while (bestEffort.some((t) => t.pending.size > 0)) await Promise.all(bestEffort.flatMap((t) => [...t.pending]));
    },
    async open() {
      await Promise.all(required.map((t) => t.sink.open?.()));
      // A best-effort sink that cannot open now is opened again by its next write.
      await Promise.all(
        bestEffort.map(async (t) => {
          try {
            await t.sink.open?.();
            t.opened = true;
          } catch (error) {
            t.missed(error);
          }
        }),
      );
      // The encoder asked for the rows another sink reads, when it can write them.
      const wanted = encoder && targets.find((t) => t.sink.encoding !== undefined && !shares(t))?.sink.encoding;
      if (wanted !== undefined) encoder!.sink.preferEncoding?.(wanted);
    },
    async write(batch: Batch<T>, context: WriteContext) {
      const done = landed.get(context.token) ?? new Set<Target<T>>();
      const results = await Promise.allSettled(
        required.map(async (t) => {
          if (done.has(t)) return;
          try {
            await t.write(batchFor(t, batch), context);
          } catch (error) {
            t.stats.rowsFailed += batch.envelopes.length;
            throw error;
          }
          done.add(t);
          t.stats.written++;
          t.stats.rowsWritten += batch.envelopes.length;
        }),
      );
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (failures.length > 0) {
        // Kept only while the pipeline will try this token again.
        if (failures.every(isRetriable) && done.size > 0) {
          landed.set(context.token, done);
          // A batch the pipeline gave up on is never written again: forget the oldest.
          if (landed.size > MAX_REMEMBERED) landed.delete(landed.keys().next().value!);
        } else {
          landed.delete(context.token);
        }
        throw failures.find((f) => !isRetriable(f)) ?? failures[0];
      }
      landed.delete(context.token);
      for (const t of bestEffort) writeBestEffort(t, batch, context);
    },
    async close() {
      reported.closed = true;
      await this.idle();
      for (const t of bestEffort) t.breaker!.shutdown();
      const results = await Promise.allSettled(targets.map((t) => t.sink.close?.()));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    },
  } satisfies FanOutSink<T>;
}
