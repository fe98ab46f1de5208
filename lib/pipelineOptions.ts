import type { OperatorFunction } from 'rxjs';
import { resolveBatchOptions, type BatchOptions } from './batch';
import { SinkBreaker, type BreakerOptions } from './breaker';
import { Credits, type InFlightOptions } from './credits';
import type { Envelope } from './envelope';
import { ConfigError } from './errors';
import { quietLogger, type Logger } from './logger';
import { integerAtLeastOrInfinity, positiveInteger } from './options';
import { resolveRetryOptions, type RetryOptions } from './retry';
import type { DeadLetter, Sink } from './sink';
import type { Source } from './source';

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
  /**
   * Batches for the dead-letter sink. With a source that has a `batchKey` they are cut like
   * its records' batches, not by `maxWaitMs` (which only raises the 30 s they may wait at
   * most). @default { rows: 1000, maxWaitMs: 200 }
   */
  deadLetterBatch?: PipelineBatchOptions;
  /**
   * The in-flight budget; must hold at least one batch, and three keep two writes going
   * while the next batch fills. @default { records: 60000, bytes: 64 MiB }
   */
  inFlight?: InFlightOptions;
  /**
   * Sink writes under way at once. Batches cut while every write is busy wait joined into
   * one (up to `batch.rows` and `batch.bytes`), so a slow sink gets fewer, larger writes.
   * A batch cut by time starts a write beside another only after waiting up to
   * `batch.maxWaitMs` for it, joined with what comes meanwhile (an insert costs much the
   * same whatever its size); a full batch starts at once. A source with `batchKey` keeps
   * its boundaries. A source that `awaitsWrites` (a webhook) writes one batch at a time by
   * default: its callers wait for each insert, and two inserts at once into one table
   * contend in the engine (with the webhook benchmark on the embedded engine, one at a
   * time gave lower p99 latency and more requests/s in every paired run).
   * @default 2, or 1 for a source that `awaitsWrites` (without `batchKey`)
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
export type PipelineBatchOptions = Omit<BatchOptions, SetByThePipeline>;

/** Batch options a pipeline sets itself, and why; given in its `batch` options, they are refused. */
const SET_BY_THE_PIPELINE = {
  encode: 'its sink encodes the records (Sink.encode)',
  encodeInto: 'its sink encodes the records (Sink.encodeInto)',
  columns: 'its sink names the columns it encodes',
  releaseValues: 'it lets values go once nothing can need them again',
  signal: 'stop() ends its batches',
} as const;
type SetByThePipeline = keyof typeof SET_BY_THE_PIPELINE;

function pipelineBatchOptions(options: PipelineBatchOptions | undefined, where: string, defaults: PipelineBatchOptions = {}) {
  for (const [name, why] of Object.entries(SET_BY_THE_PIPELINE)) {
    if ((options as Record<string, unknown> | undefined)?.[name] !== undefined) throw new ConfigError(`${where}.${name} is not a pipeline option: ${why}`);
  }
  return resolveBatchOptions({ ...defaults, ...options }, where);
}

/** A pipeline starting or stopping, for audit logs. */
export interface PipelineLifecycleEvent {
  type: 'start' | 'stop';
  pipeline: string;
  /** The error code or message it stopped with, if any. */
  error?: string;
  /** Configuration at start (source, sinks, batch, in-flight budget); stats at stop. */
  details: Record<string, unknown>;
}

/** A pipeline's options checked and filled in with their defaults. */
export interface ResolvedPipelineOptions {
  name: string;
  batch: ReturnType<typeof resolveBatchOptions>;
  deadLetterBatch: ReturnType<typeof resolveBatchOptions>;
  credits: Credits;
  deadLetterRawBytes: number;
  sinkConcurrency: number;
  retry: ReturnType<typeof resolveRetryOptions>;
  breakers: { sink: SinkBreaker; deadLetters: SinkBreaker };
  logger: Logger;
}

/**
 * Checks a pipeline's options, in the order a user meets their errors, and fills in the
 * defaults. `giveUp` ends the sink writes' retries (stop's timeout).
 */
export function resolvePipelineOptions<T>(options: PipelineOptions<T>, giveUp: AbortSignal): ResolvedPipelineOptions {
  const name = options.name ?? 'pipeline';
  if (!options.source) throw new ConfigError('source is required');
  if (!options.sink) throw new ConfigError('sink is required');
  if (!options.deadLetters) throw new ConfigError('deadLetters is required: refused records must be stored somewhere');
  const batch = pipelineBatchOptions(options.batch, 'batch');
  const deadLetterBatch = pipelineBatchOptions(options.deadLetterBatch, 'deadLetterBatch', { rows: 1000, maxWaitMs: 200 });
  const credits = new Credits(options.inFlight);
  if (credits.maxRecords < batch.rows) {
    throw new ConfigError(`inFlight.records must be >= batch.rows (${batch.rows}), got ${credits.maxRecords}`);
  }
  const deadLetterRawBytes = integerAtLeastOrInfinity(options.deadLetterRawBytes, 256 * 1024, 'deadLetterRawBytes', 1);
  const sinkConcurrency = positiveInteger(options.sinkConcurrency, options.source.awaitsWrites === true && !options.source.batchKey ? 1 : 2, 'sinkConcurrency');
  const retry = resolveRetryOptions({ retries: Infinity, maxDelayMs: 5000, ...options.retry, signal: giveUp }, 'retry');
  const breakers = {
    sink: new SinkBreaker(options.sink.name, options.breaker),
    deadLetters: new SinkBreaker(options.deadLetters.name, options.breaker),
  };
  const logger = options.logger ?? quietLogger;
  for (const method of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof logger?.[method] !== 'function') throw new ConfigError(`logger must have debug, info, warn and error methods, ${method} is missing`);
  }
  return { name, batch, deadLetterBatch, credits, deadLetterRawBytes, sinkConcurrency, retry, breakers, logger };
}
