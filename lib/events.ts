import type { BreakerState } from './breaker';

/** What a pipeline has done with the records it read; once it has finished, read = written + deadLettered + nacked. */
export interface PipelineStats {
  /**
   * Records the source emitted (dead-lettered source payloads included); a payload split
   * into records (a webhook body, a polled page, an NDJSON message) counts its records.
   */
  read: number;
  /** Records acked after the sink write. */
  written: number;
  /** Records acked after the dead-letter write. */
  deadLettered: number;
  /** Records failed back to the source. */
  nacked: number;
  inFlightRecords: number;
  inFlightBytes: number;
}

/** Which of a pipeline's two writers: the sink, or the dead-letter sink. */
export type SinkStage = 'sink' | 'dead_letters';

/** An error as events and logs carry it: its kind and code, never the records involved. */
export interface EventError {
  name: string;
  code: string;
  retriable: boolean;
  message: string;
}

/** What each instrumentation event carries, by event type. */
export interface PipelineEventPayloads {
  /** The sinks are open and the source is being read. */
  'pipeline.start': { pipeline: string; source: string; sink: string; deadLetters: string };
  /** `stop()` was called: reading stops, what is in flight is written. */
  'pipeline.stop': { pipeline: string };
  /** Everything read was settled and the sinks closed; `error` when it ended on a failure. */
  'pipeline.end': { pipeline: string; stats: PipelineStats; error?: EventError };
  /** An infrastructure failure (an unreadable source, a sink that stayed down): the pipeline winds down. */
  'pipeline.crash': { pipeline: string; error: EventError };
  /** One attempt to write a batch, after it resolved or failed. */
  'sink.write': {
    pipeline: string;
    stage: SinkStage;
    sink: string;
    rows: number;
    bytes: number;
    attempt: number;
    durationMs: number;
    /** Absent when the write succeeded. */
    error?: EventError;
  };
  /** A batch the sink refused because of its rows was split in two to isolate them. */
  'sink.split': { pipeline: string; stage: SinkStage; sink: string; rows: number };
  /** The breaker around a sink opened, let a probe through, or closed again. */
  'breaker.open': { pipeline: string; stage: SinkStage; sink: string };
  'breaker.half_open': { pipeline: string; stage: SinkStage; sink: string };
  'breaker.close': { pipeline: string; stage: SinkStage; sink: string };
}

export type PipelineEventType = keyof PipelineEventPayloads;

/** The one envelope every instrumentation event shares (like kafkajs's `on`). */
export interface PipelineEvent<K extends PipelineEventType = PipelineEventType> {
  /** Increasing within the process. */
  id: number;
  type: K;
  /** Epoch milliseconds. */
  timestamp: number;
  payload: PipelineEventPayloads[K];
}

export type PipelineEventListener<K extends PipelineEventType> = (event: PipelineEvent<K>) => void;

export const BREAKER_EVENTS: Record<BreakerState, 'breaker.open' | 'breaker.half_open' | 'breaker.close'> = {
  open: 'breaker.open',
  halfOpen: 'breaker.half_open',
  closed: 'breaker.close',
};

let nextId = 0;

/**
 * Listeners by event type. Emitting with no listener costs a map lookup, and events are
 * per batch or per state change, never per record. A throwing listener is reported to
 * `onListenerError` and does not disturb the pipeline or the other listeners.
 */
export class Instrumentation {
  readonly #listeners = new Map<PipelineEventType, Set<PipelineEventListener<any>>>();
  readonly #onListenerError: (error: unknown, type: PipelineEventType) => void;

  constructor(onListenerError: (error: unknown, type: PipelineEventType) => void) {
    this.#onListenerError = onListenerError;
  }

  on<K extends PipelineEventType>(type: K, listener: PipelineEventListener<K>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  listening(type: PipelineEventType): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0;
  }

  emit<K extends PipelineEventType>(type: K, payload: PipelineEventPayloads[K]): void {
    const set = this.#listeners.get(type);
    if (!set || set.size === 0) return;
    const event: PipelineEvent<K> = { id: ++nextId, type, timestamp: Date.now(), payload };
    for (const listener of set) {
      try {
        listener(event);
      } catch (error) {
        this.#onListenerError(error, type);
      }
    }
  }
}

/** An error reduced to what may be shown: never a record's content. */
export function eventError(error: unknown): EventError {
  const e = error as { name?: unknown; code?: unknown; retriable?: unknown; message?: unknown; rowsAtFault?: unknown };
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const code = typeof e?.code === 'string' ? e.code : 'UNKNOWN';
  // A sink's complaint about rows may quote them (ClickHouse parse errors do): only the code then.
  const message = e?.rowsAtFault === true ? `${code} (rows at fault; message withheld: it may quote record data)` : typeof e?.message === 'string' ? e.message : String(error);
  return { name, code, retriable: e?.retriable === true, message };
}
