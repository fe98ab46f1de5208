import type { Envelope } from './envelope';

/** Records written together; every envelope is settled when the write is. */
export interface Batch<T> {
  readonly envelopes: readonly Envelope<T>[];
  /** Sum of the envelopes' received sizes. */
  readonly bytes: number;
  /**
   * The records as the sink's `encode` wrote them, in envelope order, when the sink has
   * one. An envelope may no longer hold its value then: write these bytes.
   */
  readonly encoded?: EncodedRows;
}

/** Records encoded one after the other, each followed by a newline. */
export interface EncodedRows {
  readonly body: Buffer;
  /** Where each record ends in `body`, its newline included. */
  readonly ends: readonly number[];
  /**
   * Encoding `json-compact`: the columns, in order, of a row written as a JSON array (its
   * first byte `[`); the other rows are JSON objects. @default no row is an array
   */
  readonly columns?: readonly string[];
}

/**
 * Where `Sink.encodeInto` writes a row: `room(bytes)` makes room for `bytes` more at `at`
 * and gives the buffer; it may move both, so read `at` after it (`const b = out.room(n);
 * out.at += b.write(text, out.at)`, not `out.at += out.room(n).write(…)`), then move `at`
 * past what was written.
 */
export interface RowBytes {
  at: number;
  room(bytes: number): Buffer;
}

export interface WriteContext {
  /**
   * Deterministic for the records in the batch: the same records give the same token,
   * so a retried write can be recognised and absorbed (ClickHouse
   * `insert_deduplication_token`).
   */
  readonly token: string;
  /** 1 on the first attempt. */
  readonly attempt: number;
}

/**
 * Where records land. `write` resolves only once the batch is durable. A sink may
 * `reject()` single envelopes it cannot store (poison rows); the pipeline acks the rest
 * when the write resolves. A rejected promise is retried when its error is retriable,
 * and otherwise nacks the batch.
 */
export interface Sink<T> {
  readonly name: string;
  open?(): Promise<void>;
  /**
   * The record as one line of the sink's format, without the newline (a JSONEachRow row).
   * A sink that has it gets each batch already encoded (`Batch.encoded`): the pipeline
   * encodes a record as it joins its batch and, when the record keeps its payload as
   * received for a dead letter, lets go of the value, so batches wait in memory as bytes,
   * not objects. Called only after `open()` resolved; a throw dead-letters the record
   * (stage `sink`, code `ENCODE`).
   */
  encode?(value: T): string;
  /**
   * Writes what `encode` returns, as UTF-8, straight into the batch's bytes: used instead
   * of `encode` where the sink has both, saving the string a row. @default none
   */
  encodeInto?(value: T, out: RowBytes): void;
  /**
   * What `encode` writes, when another sink could write the same bytes: `'json'` for
   * `JSON.stringify(value)`; `'json-compact'` for that or a JSON array of the values of
   * `encodedColumns` (a batch's `encoded.columns` says which). A fan-out encodes once and
   * hands the rows to every sink of the same encoding, or that `reads` it. Read after
   * `open()`. @default none
   */
  readonly encoding?: string;
  /**
   * Encoding `json-compact`: the columns of a row `encode` writes as an array, read as
   * each record joins its batch (a change closes the batch, so a batch's arrays share one
   * list). @default none
   */
  readonly encodedColumns?: readonly string[];
  /** Encodings besides its own whose rows this sink writes as they come: a fan-out shares them with it. @default none */
  readonly reads?: readonly string[];
  /**
   * Asked by a fan-out, after `open()`, when another of its sinks reads rows in `encoding`
   * and this sink encodes for both: a sink that can write them switches to them (the
   * ClickHouse sink writes JSON objects instead of arrays beside a JSON cache).
   */
  preferEncoding?(encoding: string): void;
  /**
   * The sink reads `envelope.value` in `write` even when its batches come encoded: the
   * pipeline then keeps values beside the encoded rows. @default false
   */
  readonly keepsValues?: boolean;
  write(batch: Batch<T>, context: WriteContext): Promise<void>;
  close?(): Promise<void>;
}

/** A row of the dead-letter sink: the refused payload and why. */
export interface DeadLetter {
  pipeline: string;
  source: string;
  position: string;
  vendor: string;
  stage: string;
  code: string;
  message: string;
  /** JSON Pointer of the offending value, `''` for the whole record. */
  path: string;
  /**
   * The payload as received: UTF-8 text, or base64 when it was not valid UTF-8. Only its
   * first bytes when it was longer than the pipeline's `deadLetterRawBytes` or than a
   * source could hold (`raw_bytes` then exceeds the length of what `raw` holds).
   */
  raw: string;
  /** `encrypted:utf8` / `encrypted:base64` when a `protectDeadLetter` sealed `raw` and `message`. */
  raw_encoding: 'utf8' | 'base64' | 'encrypted:utf8' | 'encrypted:base64';
  /** Length in bytes of the whole refused payload: for a source, every byte from where the record began to where reading resumed. */
  raw_bytes: number;
  /** SHA-256 of the whole refused payload, hex; `''` when a `protectDeadLetter` sealed `raw`. */
  raw_sha256: string;
  /** ISO 8601, UTC. */
  received_at: string;
  failed_at: string;
}
