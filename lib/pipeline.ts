import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { catchError, EMPTY, mergeMap, Subject, type Observable, type OperatorFunction } from 'rxjs';
import { batch, resolveBatchOptions, type BatchOptions } from './batch';
import { SinkBreaker, type BreakerOptions, type BreakerState } from './breaker';
import { Credits, type InFlightOptions } from './credits';
import { Envelope, utf8Head, type DeadLetterRouter, type RecordFailure, type RecordMeta, type Settlement } from './envelope';
import { ConfigError, SinkError, TributaryError } from './errors';
import { BREAKER_EVENTS, eventError, Instrumentation, type PipelineEventListener, type PipelineEventType, type PipelineStats, type SinkStage } from './events';
import { logEvents, quietLogger, type Logger } from './logger';
import { positiveInteger } from './options';
import { resolveRetryOptions, retry, type RetryOptions } from './retry';
import type { Batch, DeadLetter, Sink } from './sink';
import type { Source, SourceContext, SourceStatus } from './source';
import { writeBatches } from './writeBatches';

export type { PipelineStats } from './events';

export interface PipelineOptions<T> {
  /** Names the pipeline in dead letters, tokens and metrics. @default 'pipeline' */
  name?: string;
  source: Source<any>;
  /** The record steps, e.g. `pipe(parse(), normalize(mappings), validate(schema))`. */
  transform?: OperatorFunction<Envelope<any>, Envelope<T>>;
  sink: Sink<T>;
  /** Where refused records go; a source is acked for them once this write is durable. */
  deadLetters: Sink<DeadLetter>;
  /**
   * Batches for the sink. Records are encoded by the sink's `encode`, when it has one, and
   * let go of their values unless `protectDeadLetter` is set. @default { rows: 20000, bytes: 16 MiB, maxWaitMs: 1000 }
   */
  batch?: PipelineBatchOptions;
  /** Batches for the dead-letter sink. @default { rows: 1000, maxWaitMs: 200 } */
  deadLetterBatch?: PipelineBatchOptions;
  /**
   * The in-flight budget; must hold at least one batch, and three keep two writes going
   * while the next batch fills. @default { records: 60000, bytes: 64 MiB }
   */
  inFlight?: InFlightOptions;
  /**
   * Sink writes under way at once. Batches cut while every write is busy wait joined into
   * one (up to `batch.rows` and `batch.bytes`), so a slow sink gets fewer, larger writes;
   * a source with `batchKey` keeps its boundaries. @default 2
   */
  sinkConcurrency?: number;
  /**
   * Retries of a sink write whose error is retriable. By default a write is tried until
   * it succeeds or `stop({ timeoutMs })` gives up: records are never dropped because a
   * sink is down, the source pauses instead. @default { retries: Infinity, maxDelayMs: 5000 }
   */
  retry?: RetryOptions;
  /** The circuit breaker around each sink's writes. @default BreakerOptions' defaults */
  breaker?: BreakerOptions;
  /**
   * Where the pipeline reports starts, stops, failed writes and breaker changes (never
   * record content). `consoleLogger()` writes to the console. @default quietLogger (silent)
   */
  logger?: Logger;
  /**
   * Rewrites each dead letter before it is written, e.g. to encrypt a payload that may hold
   * personal data (`deadLetterProtector`). It may return a promise; if it throws or
   * rejects, the record is nacked rather than dead-lettered unprotected. @default none
   */
  protectDeadLetter?: (letter: DeadLetter, envelope: Envelope<unknown>) => DeadLetter | Promise<DeadLetter>;
  /**
   * Longest refused payload a dead letter holds whole, in bytes. A longer one keeps its
   * first bytes up to this length (cut at a UTF-8 character), with `raw_bytes` and
   * `raw_sha256` of the whole, so a dead letter always fits its sink (a Kafka topic's
   * `max.message.bytes`, 1 MiB by default). `Infinity` keeps every payload whole.
   * @default 256 KiB
   */
  deadLetterRawBytes?: number;
  /** Told when the pipeline starts and stops, with its configuration: feed an audit log here. @default none */
  onLifecycle?: (event: PipelineLifecycleEvent) => void;
}

/** Batch limits of a pipeline; how records are encoded is the sink's to say. */
export type PipelineBatchOptions = Omit<BatchOptions, 'encode' | 'releaseValues'>;

/** A pipeline starting or stopping, for audit logs. */
export interface PipelineLifecycleEvent {
  type: 'start' | 'stop';
  pipeline: string;
  /** The error code or message it stopped with, if any. */
  error?: string;
  /** Configuration at start (source, sinks, batch, in-flight budget); stats at stop. */
  details: Record<string, unknown>;
}

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
  #retry: ReturnType<typeof resolveRetryOptions>;
  #sinkConcurrency: number;
  #deadLetterRawBytes: number;
  #logger: Logger;
  #abort = new AbortController();
  /** Aborted when stop() runs out of patience: retries end, their records are nacked. */
  #giveUp = new AbortController();
  #breakers: { sink: SinkBreaker; deadLetters: SinkBreaker };
  #deadLetter$ = new Subject<Envelope<DeadLetter>>();
  #stats = { read: 0, written: 0, deadLettered: 0, nacked: 0 };
  /** Dead-lettered records by the stage that refused them, counted as their dead-letter write lands. */
  #deadLetteredByStage = new Map<string, number>();
  #events: Instrumentation;
  #state: PipelineState = 'idle';
  #failure: Error | undefined;
  #started: Promise<void> | undefined;
  #finished: Promise<PipelineStats> | undefined;
  #stopping: Promise<PipelineStats> | undefined;
  /** Settles once every dead letter handed to `protectDeadLetter` so far is sent on. */
  #protecting: Promise<void> = Promise.resolve();

  constructor(options: PipelineOptions<T>) {
    this.#options = options;
    this.name = options.name ?? 'pipeline';
    if (!options.source) throw new ConfigError('source is required');
    if (!options.sink) throw new ConfigError('sink is required');
    if (!options.deadLetters) throw new ConfigError('deadLetters is required: refused records must be stored somewhere');
    this.#batch = resolveBatchOptions(options.batch, 'batch');
    this.#deadLetterBatch = resolveBatchOptions({ rows: 1000, maxWaitMs: 200, ...options.deadLetterBatch }, 'deadLetterBatch');
    this.credits = new Credits(options.inFlight);
    if (this.credits.maxRecords < this.#batch.rows) {
      throw new ConfigError(`inFlight.records must be >= batch.rows (${this.#batch.rows}), got ${this.credits.maxRecords}`);
    }
    this.#deadLetterRawBytes = options.deadLetterRawBytes ?? 256 * 1024;
    if (!(this.#deadLetterRawBytes === Infinity || (Number.isInteger(this.#deadLetterRawBytes) && this.#deadLetterRawBytes >= 1))) {
      throw new ConfigError(`deadLetterRawBytes must be an integer >= 1 or Infinity, got ${options.deadLetterRawBytes}`);
    }
    this.#sinkConcurrency = positiveInteger(options.sinkConcurrency, 2, 'sinkConcurrency');
    this.#retry = resolveRetryOptions({ retries: Infinity, maxDelayMs: 5000, ...options.retry, signal: this.#giveUp.signal }, 'retry');
    this.#breakers = {
      sink: new SinkBreaker(options.sink.name, options.breaker),
      deadLetters: new SinkBreaker(options.deadLetters.name, options.breaker),
    };
    const logger = options.logger ?? quietLogger;
    this.#logger = logger;
    for (const method of ['debug', 'info', 'warn', 'error'] as const) {
      if (typeof logger?.[method] !== 'function') throw new ConfigError(`logger must have debug, info, warn and error methods, ${method} is missing`);
    }
    this.#events = new Instrumentation((error, type) =>
      logger.error('instrumentation listener threw', { pipeline: this.name, event: type, error: error instanceof Error ? error.message : String(error) }),
    );
    logEvents(this.#events, logger);
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
    return this.#deadLetteredByStage;
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
      if (!(options.timeoutMs >= 0)) throw new ConfigError(`timeoutMs must be a number >= 0, got ${options.timeoutMs}`);
      const timeoutMs = options.timeoutMs;
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
    const settlement = new PipelineSettlement(this.#options.source, this.credits, this.#stats, this.#router());
    const context = this.#sourceContext(settlement);
    const records$ = this.#options.source.open(context) as Observable<Envelope<unknown>>;
    const source = this.#options.source;
    const batchKey = source.batchKey?.bind(source);
    const replayed = batchKey && source.replayedBatch?.bind(source);
    const signal = this.#abort.signal;
    const main$ = records$.pipe(
      (this.#options.transform ?? ((x) => x)) as OperatorFunction<Envelope<unknown>, Envelope<T>>,
      catchError((error: unknown) => this.#fail(error)),
      // Values are released once encoded unless protectDeadLetter may read them for a dead letter.
      batch<T>({ ...this.#batch, ...(batchKey && { key: batchKey }), ...(replayed && { replayed }), signal, ...encoding(sink), releaseValues: !this.#options.protectDeadLetter }),
      // Batches wait for a write slot joined, unless the source's boundaries must be kept.
      writeBatches((b) => this.#write(sink, this.#breakers.sink, b, false), this.#sinkConcurrency, batchKey ? undefined : this.#batch),
    );
    const deadLetters$ = this.#deadLetter$.pipe(
      batch<DeadLetter>({ ...this.#deadLetterBatch, signal, ...encoding(deadLetters) }),
      mergeMap((b) => this.#write(deadLetters, this.#breakers.deadLetters, b, true), 1),
    );
    if (this.#state === 'idle') this.#state = 'running';
    this.#events.emit('pipeline.start', { pipeline: this.name, source: this.#options.source.name, sink: sink.name, deadLetters: deadLetters.name });
    this.#finished = new Promise<void>((resolve) => {
      deadLetters$.subscribe({ complete: resolve });
      const completeDeadLetters = (): void => {
        const protecting = this.#protecting;
        void protecting.then(() => (protecting === this.#protecting ? this.#deadLetter$.complete() : completeDeadLetters()));
      };
      main$.subscribe({ complete: completeDeadLetters });
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

  #sourceContext(settlement: PipelineSettlement): SourceContext {
    const stats = this.#stats;
    const breaker = this.#breakers.sink;
    return {
      credits: this.credits,
      signal: this.#abort.signal,
      sinkBreakerState: () => breaker.state,
      envelope<V>(value: V, meta: RecordMeta, raw: string | Uint8Array | undefined, bytes: number) {
        stats.read++;
        return new Envelope(value, meta, raw, bytes, settlement);
      },
      reject(meta, raw, bytes, failure) {
        stats.read++;
        new Envelope(undefined, meta, raw, bytes, settlement).reject(failure);
      },
    };
  }

  #router(): DeadLetterRouter {
    const pipeline = this.name;
    const subject = this.#deadLetter$;
    const stats = this.#stats;
    const byStage = this.#deadLetteredByStage;
    const protect = this.#options.protectDeadLetter;
    const maxRaw = this.#deadLetterRawBytes;
    // Letters still being protected hold the dead-letter stream open until they are sent.
    const track = (work: Promise<void>) => {
      const previous = this.#protecting;
      this.#protecting = Promise.all([previous, work.catch(() => undefined)]).then(() => undefined);
    };
    const router: DeadLetterRouter = {
      route(envelope, failure, done) {
        if (subject.closed || subject.isStopped) {
          done(new TributaryError('dead-letter sink already closed', { code: 'STOPPED' }));
          return;
        }
        const letter = deadLetterOf(pipeline, envelope, failure, maxRaw);
        if (!protect) return send(envelope, letter, failure.stage, done);
        let protectedLetter: DeadLetter | Promise<DeadLetter>;
        try {
          protectedLetter = protect(letter, envelope);
        } catch (error) {
          return done(error instanceof Error ? error : new TributaryError(String(error)));
        }
        if (!(protectedLetter instanceof Promise)) return send(envelope, protectedLetter, failure.stage, done);
        track(protectedLetter.then((ready) => send(envelope, ready, failure.stage, done), (error: unknown) => done(error instanceof Error ? error : new TributaryError(String(error)))));
      },
    };
    return router;

    function send(envelope: Envelope<unknown>, letter: DeadLetter, stage: string, done: (error?: Error) => void): void {
      if (subject.closed || subject.isStopped) {
        done(new TributaryError('dead-letter sink already closed', { code: 'STOPPED' }));
        return;
      }
      const onWritten: Settlement = {
        deadLetters: router,
        ack: () => {
          stats.deadLettered++;
          byStage.set(stage, (byStage.get(stage) ?? 0) + 1);
          done();
        },
        nack: (_e, error) => done(error),
        reject: (_e, f) => done(new SinkError(`dead-letter sink refused the record: ${f.message}`)),
      };
      subject.next(new Envelope(letter, envelope.meta, undefined, letter.raw.length, onWritten));
    }
  }

  /**
   * Writes a batch and settles its envelopes. Retriable failures are retried through the
   * breaker; a failure that blames the rows splits the batch until the bad rows stand
   * alone, and those are dead-lettered while the rest is written.
   */
  async #write<V>(sink: Sink<V>, breaker: SinkBreaker, batch: Batch<V>, deadLetters: boolean, split = false): Promise<void> {
    const beforeWrite = this.#options.source.beforeWrite;
    if (!deadLetters && !split && beforeWrite) {
      let ours: boolean;
      try {
        ours = await beforeWrite.call(this.#options.source, batch.envelopes as readonly Envelope<any>[]);
      } catch (cause) {
        ours = false;
        this.#logger.warn('the source could not prepare a batch for writing: its records are nacked and read again', { pipeline: this.name, error: cause instanceof Error ? cause.message : String(cause) });
      }
      if (!ours) {
        const error = new TributaryError(`source ${this.#options.source.name} no longer holds these records: left for their next reader`, { code: 'NOT_OURS', retriable: true });
        for (const envelope of batch.envelopes) envelope.nack(error);
        return;
      }
    }
    const token = insertToken(this.name, sink.name, batch);
    const stage: SinkStage = deadLetters ? 'dead_letters' : 'sink';
    const events = this.#events;
    const attemptWrite = async (attempt: number) => {
      const started = performance.now();
      try {
        await breaker.call(() => sink.write(batch, { token, attempt }));
      } catch (error) {
        events.emit('sink.write', { pipeline: this.name, stage, sink: sink.name, rows: batch.envelopes.length, bytes: batch.bytes, attempt, durationMs: performance.now() - started, error: eventError(error) });
        throw error;
      }
      events.emit('sink.write', { pipeline: this.name, stage, sink: sink.name, rows: batch.envelopes.length, bytes: batch.bytes, attempt, durationMs: performance.now() - started });
    };
    try {
      await retry(attemptWrite, this.#retry);
    } catch (cause) {
      const error = cause instanceof TributaryError ? cause : new SinkError(`sink ${sink.name} failed: ${String(cause)}`, { cause });
      const pending = batch.envelopes.flatMap((envelope, index) => (envelope.settled ? [] : [index]));
      if (error instanceof SinkError && error.rowsAtFault && !deadLetters && pending.length > 0) {
        if (pending.length === 1) {
          batch.envelopes[pending[0]!]!.reject({ stage: 'sink', code: error.code, message: error.message, path: '' });
          return;
        }
        events.emit('sink.split', { pipeline: this.name, stage, sink: sink.name, rows: pending.length });
        const middle = Math.ceil(pending.length / 2);
        await this.#write(sink, breaker, part(batch, pending.slice(0, middle)), deadLetters, true);
        await this.#write(sink, breaker, part(batch, pending.slice(middle)), deadLetters, true);
        return;
      }
      for (const index of pending) batch.envelopes[index]!.nack(error);
      this.#fail(error);
      return;
    }
    for (const envelope of batch.envelopes) {
      if (envelope.settled) continue;
      if (!deadLetters) this.#stats.written++;
      envelope.ack();
    }
  }
}

/** The sink's encoder for the batch step; none when the sink has none, whatever the batch options say. */
function encoding(sink: Sink<any>): Pick<BatchOptions, 'encode'> {
  return { encode: sink.encode ? (value) => sink.encode!(value) : undefined };
}

/** The records of `batch` at `indices` (ascending) as a batch of their own, with their encoded rows. */
function part<V>(batch: Batch<V>, indices: readonly number[]): Batch<V> {
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
    return { envelopes, bytes, encoded: { body: rows.body.subarray(offset, rows.ends[last]), ends: indices.map((index) => rows.ends[index]! - offset) } };
  }
  const pieces = indices.map((index) => rows.body.subarray(start(index), rows.ends[index]));
  let end = 0;
  return { envelopes, bytes, encoded: { body: Buffer.concat(pieces), ends: pieces.map((piece) => (end += piece.length)) } };
}

class PipelineSettlement implements Settlement {
  readonly #source: Source<unknown>;
  readonly #credits: Credits;
  readonly #stats: { read: number; nacked: number };
  readonly deadLetters: DeadLetterRouter;

  constructor(source: Source<unknown>, credits: Credits, stats: { read: number; nacked: number }, deadLetters: DeadLetterRouter) {
    this.#source = source;
    this.#credits = credits;
    this.#stats = stats;
    this.deadLetters = deadLetters;
  }

  ack(envelope: Envelope<unknown>): void {
    this.#settle(envelope);
  }

  nack(envelope: Envelope<unknown>, error: Error): void {
    this.#settle(envelope, error);
  }

  reject(envelope: Envelope<unknown>, failure: RecordFailure): void {
    this.deadLetters.route(envelope, failure, (error) => this.#settle(envelope, error));
  }

  /**
   * Records beyond one per envelope: a page, a request or a payload read as one that held
   * several. Splits happen in the tick the whole was read in, so a scrape never sees the
   * count go down.
   */
  count(read: number, nacked: number): void {
    this.#stats.read += read;
    this.#stats.nacked += nacked;
  }

  #settle(envelope: Envelope<unknown>, error?: Error): void {
    if (error) this.#stats.nacked++;
    envelope.raw = undefined;
    this.#credits.release(envelope.bytes);
    this.#source.settled?.(envelope, error);
  }
}

/** Same records, same token: the first and last positions and the count, hashed. */
export function insertToken(pipeline: string, sink: string, batch: Batch<unknown>): string {
  const envelopes = batch.envelopes;
  const first = envelopes[0]!.meta;
  const last = envelopes[envelopes.length - 1]!.meta;
  return createHash('sha256')
    .update(`${pipeline}\0${sink}\0${first.source}\0${first.position}\0${last.position}\0${envelopes.length}`)
    .digest('hex')
    .slice(0, 32);
}

function deadLetterOf(pipeline: string, envelope: Envelope<unknown>, failure: RecordFailure, maxRaw: number): DeadLetter {
  const { raw, encoding, bytes, sha256 } = rawOf(envelope, maxRaw);
  return {
    pipeline,
    source: envelope.meta.source,
    position: envelope.meta.position,
    vendor: envelope.meta.vendor ?? '',
    stage: failure.stage,
    code: failure.code,
    message: failure.message,
    path: failure.path,
    raw,
    raw_encoding: encoding,
    raw_bytes: bytes,
    raw_sha256: sha256,
    received_at: new Date(envelope.meta.receivedAt).toISOString(),
    failed_at: new Date().toISOString(),
  };
}

/** The refused payload for a dead letter: whole up to `maxRaw` bytes, else its head, with the length and hash of the whole. */
function rawOf(envelope: Envelope<unknown>, maxRaw: number): { raw: string; encoding: 'utf8' | 'base64'; bytes: number; sha256: string } {
  const raw = envelope.raw;
  let whole: Buffer;
  let head: Buffer;
  let bytes: number;
  let sha256: string;
  if (raw !== undefined && typeof raw !== 'string' && !(raw instanceof Uint8Array)) {
    whole = Buffer.from(raw.excerpt.buffer, raw.excerpt.byteOffset, raw.excerpt.byteLength);
    head = utf8Head(whole, maxRaw);
    ({ bytes, sha256 } = raw);
  } else {
    if (typeof raw === 'string') whole = Buffer.from(raw, 'utf8');
    else if (raw === undefined) whole = Buffer.from(JSON.stringify(envelope.value) ?? '', 'utf8');
    else whole = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    head = utf8Head(whole, maxRaw);
    bytes = whole.length;
    sha256 = createHash('sha256').update(whole).digest('hex');
  }
  return isUtf8(head) ? { raw: head.toString('utf8'), encoding: 'utf8', bytes, sha256 } : { raw: head.toString('base64'), encoding: 'base64', bytes, sha256 };
}

