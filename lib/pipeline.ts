import { asapScheduler, asyncScheduler, catchError, EMPTY, identity, mergeMap, type Observable, type OperatorFunction } from 'rxjs';
import { SourceAlignedDeadLetters } from './alignedDeadLetters';
import { batch, type BatchOptions, type resolveBatchOptions } from './batch';
import { BatchWriter } from './batchWriter';
import type { BreakerState, SinkBreaker } from './breaker';
import type { Credits } from './credits';
import { DeadLetterRouting } from './deadLetters';
import type { Envelope } from './envelope';
import { TributaryError } from './errors';
import { BREAKER_EVENTS, eventError, Instrumentation, type PipelineEventListener, type PipelineEventType, type PipelineStats, type SinkStage } from './events';
import { logEvents, type Logger } from './logger';
import { resolvePipelineOptions, type PipelineOptions } from './pipelineOptions';
import { numberAtLeast } from './options';
import { PipelineSettlement, sourceContext, type PipelineCounts } from './settlement';
import type { Batch, DeadLetter, Sink } from './sink';
import type { SourceStatus } from './source';
import { writeBatches } from './writeBatches';

export type { PipelineStats } from './events';
export type { PipelineBatchOptions, PipelineLifecycleEvent, PipelineOptions } from './pipelineOptions';
export { insertToken } from './batchWriter';

/** Where a pipeline is in its life. */
export type PipelineState = 'idle' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface StopOptions {
  /**
   * How long to keep retrying writes of records already read before giving up and
   * nacking them. @default no limit
   */
  timeoutMs?: number;
}

/** What `readiness()` found. */
export interface Readiness {
  ready: boolean;
  state: PipelineState;
  sinkBreaker: BreakerState;
  deadLetterBreaker: BreakerState;
  /** The source's own report, when it gives one. */
  source?: SourceStatus;
  /** Why it is not ready; empty when it is. */
  reasons: string[];
}


/**
 * Runs a source through record steps into a sink, acking each record only once it is
 * durable in the sink or the dead-letter sink.
 *
 * ## Example
 * ```ts
 * import { pipe } from 'rxjs';
 * import { Pipeline, fromFiles, normalize, validate, toClickHouse, embeddedClickHouse } from 'tributary';
 * const clickhouse = embeddedClickHouse({ path: './data' });
 * const pipeline = new Pipeline({
 *   source: fromFiles({ paths: ['bookings.ndjson'], format: 'ndjson', vendor: 'acme' }),
 *   transform: pipe(normalize({ mappings }), validate({ schema })),
 *   sink: toClickHouse({ client: clickhouse, table: 'bookings' }),
 *   deadLetters: toClickHouse({ client: clickhouse, table: 'dead_letters' }),
 * });
 * const stats = await pipeline.run();
 * ```
 */
export class Pipeline<T> implements AsyncDisposable {
  readonly name: string;
  readonly credits: Credits;
  #options: PipelineOptions<T>;
  #batch: ReturnType<typeof resolveBatchOptions>;
  #deadLetterBatch: ReturnType<typeof resolveBatchOptions>;
  #sinkConcurrency: number;
  #logger: Logger;
  #abort = new AbortController();
  /** Aborted when stop() runs out of patience: retries end, their records are nacked. */
  #giveUp = new AbortController();
  #breakers: { sink: SinkBreaker; deadLetters: SinkBreaker };
  #stats: PipelineCounts = { read: 0, written: 0, deadLettered: 0, nacked: 0 };
  #deadLetters: DeadLetterRouting;
  /** With a source whose batches replays reproduce: dead-letter batches cut where the records' are. */
  #aligned: SourceAlignedDeadLetters<T> | undefined;
  #writer: BatchWriter;
  #events: Instrumentation;
  #state: PipelineState = 'idle';
  #failure: Error | undefined;
  #started: Promise<void> | undefined;
  #finished: Promise<PipelineStats> | undefined;
  #stopping: Promise<PipelineStats> | undefined;

  constructor(options: PipelineOptions<T>) {
    this.#options = options;
    const resolved = resolvePipelineOptions(options, this.#giveUp.signal);
    this.name = resolved.name;
    this.#batch = resolved.batch;
    this.#deadLetterBatch = resolved.deadLetterBatch;
    this.credits = resolved.credits;
    this.#sinkConcurrency = resolved.sinkConcurrency;
    this.#breakers = resolved.breakers;
    const logger = resolved.logger;
    this.#logger = logger;
    this.#events = new Instrumentation((error, type) =>
      logger.error('instrumentation listener threw', { pipeline: this.name, event: type, error: error instanceof Error ? error.message : String(error) }),
    );
    logEvents(this.#events, logger);
    const source = options.source;
    const batchKey = source.batchKey?.bind(source);
    if (batchKey) {
      const { rows, bytes, maxWaitMs, scheduler } = resolved.deadLetterBatch;
      const encode = options.deadLetters.encode;
      this.#aligned = new SourceAlignedDeadLetters(source, batchKey, { rows, bytes, maxWaitMs, scheduler, signal: this.#abort.signal, ...(encode && { encode: (letter: DeadLetter) => encode.call(options.deadLetters, letter) }) });
    }
    this.#deadLetters = new DeadLetterRouting(this.name, options.protectDeadLetter, resolved.deadLetterRawBytes, this.#stats, this.#aligned?.tag);
    this.#writer = new BatchWriter({ pipeline: this.name, source: this.#aligned?.source ?? source, events: this.#events, logger, retry: resolved.retry, stats: this.#stats, fail: (error) => this.#fail(error) });
    this.#watchBreaker('sink', options.sink.name, this.#breakers.sink);
    this.#watchBreaker('dead_letters', options.deadLetters.name, this.#breakers.deadLetters);
  }

  /**
   * Listens to instrumentation events (`pipeline.start`, `sink.write`, `breaker.open`, …),
   * each in the envelope `{ id, type, timestamp, payload }`. Returns the function that
   * removes the listener.
   *
   * ## Example
   * ```ts
   * pipeline.on('sink.write', ({ payload }) => console.log(payload.sink, payload.rows, payload.durationMs));
   * ```
   */
  on<K extends PipelineEventType>(type: K, listener: PipelineEventListener<K>): () => void {
    return this.#events.on(type, listener);
  }

  /** Where the pipeline is: `failed` once it ended, or is ending, on an infrastructure failure. */
  get state(): PipelineState {
    return this.#state;
  }

  /** The source's name, as in records' `meta.source`. */
  get sourceName(): string {
    return this.#options.source.name;
  }

  /** The sink's name. */
  get sinkName(): string {
    return this.#options.sink.name;
  }

  /** The dead-letter sink's name. */
  get deadLetterSinkName(): string {
    return this.#options.deadLetters.name;
  }

  /** What the source reports about itself (connection, lag, cursor age); undefined when it cannot tell. */
  sourceStatus(): SourceStatus | undefined {
    return this.#options.source.status?.();
  }

  /**
   * Whether the pipeline can do its work now: running, the sink's breaker closed (writes
   * go through) and the source connected when it reports a connection. For `/ready`.
   */
  readiness(): Readiness {
    const source = this.sourceStatus();
    const reasons: string[] = [];
    if (this.#state !== 'running') reasons.push(`pipeline is ${this.#state}`);
    const sink = this.breakerState;
    if (sink !== 'closed') reasons.push(`sink ${this.#options.sink.name}: circuit breaker ${sink}`);
    if (source && !source.connected) reasons.push(`source ${this.#options.source.name} is not connected`);
    return { ready: reasons.length === 0, state: this.#state, sinkBreaker: sink, deadLetterBreaker: this.deadLetterBreakerState, ...(source ? { source } : {}), reasons };
  }

  /** The dead-letter sink's circuit breaker. */
  get deadLetterBreakerState(): BreakerState {
    return this.#breakers.deadLetters.state;
  }

  /** Records durably dead-lettered so far, by the stage that refused them (`parse`, `validate`, `sink`, …). */
  deadLetteredByStage(): ReadonlyMap<string, number> {
    return this.#deadLetters.byStage;
  }

  #watchBreaker(stage: SinkStage, sink: string, breaker: SinkBreaker): void {
    breaker.onStateChange((state) => this.#events.emit(BREAKER_EVENTS[state], { pipeline: this.name, stage, sink }));
  }

  /** The sink's circuit breaker: `open` while the sink is failing and writes are held back. */
  get breakerState(): BreakerState {
    return this.#breakers.sink.state;
  }

  get stats(): PipelineStats {
    return {
      ...this.#stats,
      inFlightRecords: this.credits.inFlightRecords,
      inFlightBytes: this.credits.inFlightBytes,
    };
  }

  /** Opens the sinks and starts reading. Resolves once running; safe to call twice. */
  start(): Promise<void> {
    this.#started ??= this.#start();
    return this.#started;
  }

  /**
   * Resolves when the source has ended and every record is settled; rejects with the
   * first infrastructure failure (an unreadable source, a sink that stayed down), after
   * everything already read has been settled.
   */
  finished(): Promise<PipelineStats> {
    if (!this.#finished) throw new TributaryError('finished() needs start() first', { code: 'NOT_STARTED' });
    return this.#finished;
  }

  /** Starts and waits until the source ends. */
  async run(): Promise<PipelineStats> {
    await this.start();
    return this.finished();
  }

  /**
   * Stops reading, writes what is in flight (a batch being gathered goes at once, without
   * waiting out `maxWaitMs`), closes the sinks. Safe to call twice.
   */
  stop(options: StopOptions = {}): Promise<PipelineStats> {
    if (options.timeoutMs !== undefined) {
      const timeoutMs = numberAtLeast(options.timeoutMs, 0, 'timeoutMs', 0);
      setTimeout(() => {
        if (this.#giveUp.signal.aborted || this.#state === 'stopped' || this.#state === 'failed') return;
        // Say what is given up: these records are nacked, their sources redeliver them.
        this.#logger.warn('stop gave up waiting for writes: the records in flight are nacked', { pipeline: this.name, timeoutMs, inFlightRecords: this.credits.inFlightRecords, inFlightBytes: this.credits.inFlightBytes });
        this.#giveUp.abort();
      }, timeoutMs).unref();
    }
    this.#stopping ??= (async () => {
      if (this.#state === 'running') this.#state = 'stopping';
      this.#events.emit('pipeline.stop', { pipeline: this.name });
      this.#abort.abort();
      if (!this.#started) return this.stats;
      await this.#started;
      return this.finished();
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => undefined);
  }

  async #start(): Promise<void> {
    const { sink, deadLetters } = this.#options;
    await sink.open?.();
    if (deadLetters !== (sink as unknown)) await deadLetters.open?.();
    this.#options.onLifecycle?.({
      type: 'start',
      pipeline: this.name,
      details: { source: this.#options.source.name, sink: sink.name, deadLetters: deadLetters.name, batch: this.#batch, inFlight: { records: this.credits.maxRecords, bytes: this.credits.maxBytes }, sinkConcurrency: this.#sinkConcurrency, protectedDeadLetters: Boolean(this.#options.protectDeadLetter) },
    });
    const settlement = new PipelineSettlement(this.#options.source, this.credits, this.#stats, this.#deadLetters);
    const sinkBreaker = this.#breakers.sink;
    const aligned = this.#aligned;
    const context = sourceContext(settlement, this.credits, this.#abort.signal, () => sinkBreaker.state, this.#stats, aligned);
    const records$ = this.#options.source.open(context) as Observable<Envelope<unknown>>;
    const source = this.#options.source;
    const replayed = aligned && source.replayedBatch?.bind(source);
    const signal = this.#abort.signal;
    // Dead-letter batches follow the records': told when the records move to another key and where each record batch ends.
    const key = aligned?.key;
    const cuts: OperatorFunction<Batch<T>, Batch<T>> = aligned ? aligned.cuts() : identity;
    const main$ = records$.pipe(
      (this.#options.transform ?? ((x) => x)) as OperatorFunction<Envelope<unknown>, Envelope<T>>,
      catchError((error: unknown) => this.#fail(error)),
      // Values are released once encoded unless protectDeadLetter may read them for a dead letter, or the sink reads them.
      // A source whose callers wait hands its records over as a batch once the task that
      // emitted them is done (a microtask, not a timer tick): writeBatches writes it when no
      // write is under way and the last started maxWaitMs ago, else holds it, joined.
      batch<T>({ ...this.#batch, ...(key ? { key } : source.awaitsWrites && { maxWaitMs: 0, ...(this.#batch.scheduler === asyncScheduler && { scheduler: asapScheduler }) }), ...(replayed && { replayed }), signal, ...encoding(sink), releaseValues: !this.#options.protectDeadLetter && !sink.keepsValues }),
      cuts,
      // Batches wait for a write slot joined, unless the source's boundaries must be kept.
      writeBatches((b) => this.#writer.write(sink, this.#breakers.sink, b, false), this.#sinkConcurrency, aligned ? undefined : { ...this.#batch, ...(source.awaitsWrites && { writeIntervalMs: this.#batch.maxWaitMs }) }),
    );
    const deadLetters$ = (aligned ? aligned.batches(this.#deadLetters.letters$) : this.#deadLetters.letters$.pipe(batch<DeadLetter>({ ...this.#deadLetterBatch, signal, ...encoding(deadLetters) }))).pipe(
      mergeMap((b) => this.#writer.write(deadLetters, this.#breakers.deadLetters, b, true), 1),
    );
    this.#state = 'running';
    this.#events.emit('pipeline.start', { pipeline: this.name, source: this.#options.source.name, sink: sink.name, deadLetters: deadLetters.name });
    this.#finished = new Promise<void>((resolve) => {
      deadLetters$.subscribe({ complete: resolve });
      // The dead letters end after the records: refused ones are still being routed.
      main$.subscribe({ complete: () => this.#deadLetters.complete() });
    }).then(async () => {
      this.#breakers.sink.shutdown();
      this.#breakers.deadLetters.shutdown();
      await sink.close?.();
      if (deadLetters !== (sink as unknown)) await deadLetters.close?.();
      const error = this.#failure ? ((this.#failure as TributaryError).code ?? this.#failure.message) : undefined;
      this.#options.onLifecycle?.({ type: 'stop', pipeline: this.name, ...(error && { error }), details: { ...this.stats } });
      this.#state = this.#failure ? 'failed' : 'stopped';
      this.#events.emit('pipeline.end', { pipeline: this.name, stats: this.stats, ...(this.#failure ? { error: eventError(this.#failure) } : {}) });
      if (this.#failure) throw this.#failure;
      return this.stats;
    });
    // A caller that only awaits stop() must not see an unhandled rejection here.
    this.#finished.catch(() => undefined);
  }

  #fail(error: unknown): Observable<never> {
    if (!this.#failure) {
      this.#failure = error instanceof Error ? error : new TributaryError(String(error));
      this.#state = 'failed';
      this.#events.emit('pipeline.crash', { pipeline: this.name, error: eventError(this.#failure) });
    }
    this.#abort.abort();
    return EMPTY;
  }
}

/** The sink's encoder for the batch step; none when the sink has none. */
function encoding(sink: Sink<any>): Pick<BatchOptions, 'encode' | 'encodeInto' | 'columns'> {
  if (!sink.encode) return {};
  return {
    encode: (value) => sink.encode!(value),
    ...(sink.encodeInto && { encodeInto: (value, out) => sink.encodeInto!(value, out) }),
    ...('encodedColumns' in sink && { columns: () => sink.encodedColumns }),
  };
}
