import type { Observable } from 'rxjs';
import type { BreakerState } from './breaker';
import type { Credits } from './credits';
import type { Envelope, RawExcerpt, RecordFailure, RecordMeta } from './envelope';

/** What a pipeline hands a source when it starts it. */
export interface SourceContext {
  /** Take one before emitting each record; wait when there is none. */
  readonly credits: Credits;
  /** Aborted when the pipeline stops: stop reading, then complete. */
  readonly signal: AbortSignal;
  /** Wraps a received record whose credit was taken. */
  envelope<T>(value: T, meta: RecordMeta, raw: string | Uint8Array | undefined, bytes: number): Envelope<T>;
  /**
   * Dead-letters a payload the source itself could not read (a malformed line, a
   * truncated file). Its credit must have been taken, like any record's.
   */
  reject(meta: RecordMeta, raw: string | Uint8Array | RawExcerpt | undefined, bytes: number, failure: RecordFailure): void;
  /**
   * The sink's circuit breaker right now. A source that can refuse work early (a webhook
   * answering 503) reads it instead of accepting records that cannot be written.
   */
  readonly sinkBreakerState?: () => BreakerState;
  /**
   * With `Source.batchKey`: no more records of `key` are coming (a file read to its end),
   * so the dead letters of its records close their batch now rather than when records of
   * another key arrive. Absent when the pipeline does not batch dead letters by key.
   */
  readonly batchKeyEnded?: (key: string) => void;
}

/**
 * Where records come from. `open` returns a cold stream of envelopes that completes
 * when the input ends or the context's signal aborts; it errors only when the source
 * itself breaks (an unreadable path, a lost connection), never for bad records.
 */
export interface Source<T> {
  readonly name: string;
  open(context: SourceContext): Observable<Envelope<T>>;
  /**
   * The fate of a record this source emitted: called once it is durable in the sink or
   * the dead-letter sink (no error), or could not be made durable (the error). This is
   * where a source moves its checkpoint.
   */
  settled?(envelope: Envelope<T>, error?: Error): void;
  /**
   * What the source can tell about itself right now, for `/ready` and metrics. Sources
   * without a connection need not implement it.
   */
  status?(): SourceStatus;
  /**
   * Records with different keys never share a sink batch. A source whose positions can be
   * replayed (Kafka offsets) uses it to give batches boundaries that a replay after a
   * crash reproduces, so the batch's insert token is the same and the write is absorbed.
   */
  batchKey?(envelope: Envelope<T>): string;
  /**
   * With `batchKey`: whether the record belongs to a batch an earlier reader already cut
   * (a replay after a crash or a rebalance). `within`: its batch ends at a later record, so
   * it is not cut by time; `last`: the batch ends with this record, so it is cut now. A
   * replayed batch then holds the same records as the first time, and the same insert token.
   */
  replayedBatch?(envelope: Envelope<T>): 'within' | 'last' | undefined;
  /**
   * Called once before each sink batch of this source's records is written, and the write
   * waits for it: a source whose replays must cut batches where this run cut them makes
   * the batch's boundary durable here (Kafka: in the offset commit's metadata). False when
   * the records are no longer this reader's to write (a partition handed to another
   * member, or a replayed batch cut short by a stop): they are nacked unwritten, and read
   * again by whoever reads them next.
   */
  beforeWrite?(envelopes: readonly Envelope<T>[]): boolean | Promise<boolean>;
  /**
   * True when a caller waits for each record's write (a webhook's sender holds its request
   * open until its records are stored): a partial batch then goes to the sink as soon as
   * no write is under way and the last one started `batch.maxWaitMs` ago or more and either
   * ended half that ago or the batch came `batch.maxWaitMs` ago (while writes take longer
   * than that: once the last ended half that ago, however long the batch waited), instead of
   * `batch.maxWaitMs` after its first record. So a lone request is written at once, writes
   * start no more often than with batches cut by time, the callers a write answered are back
   * to join the next, slow writes are not started back to back, and while a write is
   * under way a batch still waits for it, joined with what comes, up to `batch.maxWaitMs`.
   * Ignored with `batchKey`. Without it, the pipeline's `sinkConcurrency` defaults to 1.
   */
  readonly awaitsWrites?: boolean;
}

/** A source's own readings. */
export interface SourceStatus {
  /** False while the source cannot reach what it reads (a broker, a vendor API). */
  connected: boolean;
  /** Messages behind the newest, per partition (`topic/partition` → count). */
  lag?: Readonly<Record<string, number>>;
  /** Seconds since a poller's saved cursor last moved. */
  cursorAgeSeconds?: number;
  /** Share of a webhook replay store's capacity in use, 0 to 1 (at 1 new requests are refused). */
  replayFill?: number;
}
