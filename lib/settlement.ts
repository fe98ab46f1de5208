import type { BreakerState } from './breaker';
import type { Credits } from './credits';
import { Envelope, type DeadLetterRouter, type RecordFailure, type RecordMeta, type Settlement } from './envelope';
import type { Source, SourceContext } from './source';

/** A pipeline's record counts: read = written + dead-lettered + nacked once all is settled. */
export interface PipelineCounts {
  read: number;
  written: number;
  deadLettered: number;
  nacked: number;
}

/**
 * What a pipeline hands its source: the in-flight budget, the stop signal, the sink's
 * breaker, and envelopes that count as read and settle through `settlement`.
 */
export function sourceContext(
  settlement: PipelineSettlement,
  credits: Credits,
  signal: AbortSignal,
  sinkBreakerState: () => BreakerState,
  stats: { read: number },
  aligned?: { onRead: (envelope: Envelope<unknown>) => void; batchKeyEnded: (key: string) => void },
): SourceContext {
  // With aligned dead letters, each envelope is told as it is made, a refused one before its dead letter is routed.
  const onRead = aligned?.onRead;
  return {
    credits,
    signal,
    sinkBreakerState,
    ...(aligned && { batchKeyEnded: aligned.batchKeyEnded }),
    envelope<V>(value: V, meta: RecordMeta, raw: string | Uint8Array | undefined, bytes: number) {
      stats.read++;
      const envelope = new Envelope(value, meta, raw, bytes, settlement);
      onRead?.(envelope as Envelope<unknown>);
      return envelope;
    },
    reject(meta, raw, bytes, failure) {
      stats.read++;
      const envelope = new Envelope(undefined, meta, raw, bytes, settlement);
      onRead?.(envelope);
      envelope.reject(failure);
    },
  };
}

/**
 * Where a record's fate lands: its credit is given back, a nack is counted, the source is
 * told; a refused record goes to the dead letters first and is settled once that write is.
 */
export class PipelineSettlement implements Settlement {
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
