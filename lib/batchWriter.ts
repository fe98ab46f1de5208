import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { batchPart } from './batch';
import type { SinkBreaker } from './breaker';
import type { Envelope } from './envelope';
import { SinkError, TributaryError } from './errors';
import { eventError, type Instrumentation, type SinkStage } from './events';
import type { Logger } from './logger';
import { retry, type resolveRetryOptions } from './retry';
import type { Batch, Sink } from './sink';
import type { Source } from './source';

/** What the batch writer works with: the pipeline it writes for and where it reports. */
export interface BatchWriterContext {
  /** The pipeline's name, in tokens and events. */
  pipeline: string;
  source: Source<any>;
  events: Instrumentation;
  logger: Logger;
  retry: ReturnType<typeof resolveRetryOptions>;
  /** Counts the records written to the sink. */
  stats: { written: number };
  /** Ends the pipeline on an infrastructure failure (a sink that stayed down). */
  fail: (error: unknown) => void;
}

/**
 * Writes a pipeline's batches into a sink (or its dead-letter sink) and settles their
 * envelopes: asks the source first whether its records are still its own, retries through
 * the breaker, splits a batch whose rows are at fault until the bad ones stand alone.
 */
export class BatchWriter {
  readonly #context: BatchWriterContext;

  constructor(context: BatchWriterContext) {
    this.#context = context;
  }

  /**
   * Writes a batch and settles its envelopes. Retriable failures are retried through the
   * breaker; a failure that blames the rows splits the batch until the bad rows stand
   * alone, and those are dead-lettered while the rest is written.
   */
  async write<V>(sink: Sink<V>, breaker: SinkBreaker, batch: Batch<V>, deadLetters: boolean, split = false): Promise<void> {
    const { pipeline, source, events, logger } = this.#context;
    const beforeWrite = source.beforeWrite;
    if (!deadLetters && !split && beforeWrite) {
      let ours: boolean;
      try {
        ours = await beforeWrite.call(source, batch.envelopes as readonly Envelope<any>[]);
      } catch (cause) {
        ours = false;
        logger.warn('the source could not prepare a batch for writing: its records are nacked and read again', { pipeline, error: cause instanceof Error ? cause.message : String(cause) });
      }
      if (!ours) {
        const error = new TributaryError(`source ${source.name} no longer holds these records: left for their next reader`, { code: 'NOT_OURS', retriable: true });
        for (const envelope of batch.envelopes) envelope.nack(error);
        return;
      }
    }
    const token = insertToken(pipeline, sink.name, batch);
    const stage: SinkStage = deadLetters ? 'dead_letters' : 'sink';
    const attemptWrite = async (attempt: number) => {
      const started = performance.now();
      try {
        await breaker.call(() => sink.write(batch, { token, attempt }));
      } catch (error) {
        events.emit('sink.write', { pipeline, stage, sink: sink.name, rows: batch.envelopes.length, bytes: batch.bytes, attempt, durationMs: performance.now() - started, error: eventError(error) });
        throw error;
      }
      events.emit('sink.write', { pipeline, stage, sink: sink.name, rows: batch.envelopes.length, bytes: batch.bytes, attempt, durationMs: performance.now() - started });
    };
    try {
      await retry(attemptWrite, this.#context.retry);
    } catch (cause) {
      const error = cause instanceof TributaryError ? cause : new SinkError(`sink ${sink.name} failed: ${String(cause)}`, { cause });
      const pending = batch.envelopes.flatMap((envelope, index) => (envelope.settled ? [] : [index]));
      if (error instanceof SinkError && error.rowsAtFault && !deadLetters && pending.length > 0) {
        if (pending.length === 1) {
          batch.envelopes[pending[0]!]!.reject({ stage: 'sink', code: error.code, message: error.message, path: '' });
          return;
        }
        events.emit('sink.split', { pipeline, stage, sink: sink.name, rows: pending.length });
        const middle = Math.ceil(pending.length / 2);
        await this.write(sink, breaker, batchPart(batch, pending.slice(0, middle)), deadLetters, true);
        await this.write(sink, breaker, batchPart(batch, pending.slice(middle)), deadLetters, true);
        return;
      }
      for (const index of pending) batch.envelopes[index]!.nack(error);
      this.#context.fail(error);
      return;
    }
    // By index: a for-of over a batch's envelopes allocated an iterator result a record in this seldom-optimised function.
    const envelopes = batch.envelopes;
    for (let i = 0; i < envelopes.length; i++) {
      const envelope = envelopes[i]!;
      if (envelope.settled) continue;
      if (!deadLetters) this.#context.stats.written++;
      envelope.ack();
    }
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
