import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { Subject, type Observable } from 'rxjs';
import { Envelope, utf8Head, type DeadLetterRouter, type RecordFailure, type Settlement } from './envelope';
import { SinkError, TributaryError } from './errors';
import type { DeadLetter } from './sink';

/** Rewrites a dead letter before it is written (a pipeline's `protectDeadLetter`). */
export type ProtectDeadLetter = (letter: DeadLetter, envelope: Envelope<unknown>) => DeadLetter | Promise<DeadLetter>;

/**
 * Where a pipeline's refused records go: each becomes a dead letter (its payload cut to
 * `maxRaw` bytes, then `protect`ed when given) on `letters$`, for the dead-letter sink's
 * batches. The record is settled once its letter's write lands: acked and counted by stage
 * when it is durable, nacked when it cannot be (the sink refused it, `protect` threw, the
 * stream was already closed).
 */
export class DeadLetterRouting implements DeadLetterRouter {
  /** Dead-lettered records by the stage that refused them, counted as their dead-letter write lands. */
  readonly byStage = new Map<string, number>();
  readonly #pipeline: string;
  readonly #protect: ProtectDeadLetter | undefined;
  readonly #maxRaw: number;
  readonly #stats: { deadLettered: number };
  readonly #subject = new Subject<Envelope<DeadLetter>>();
  /** Settles once every dead letter handed to `protect` so far is sent on. */
  #protecting: Promise<void> = Promise.resolve();

  /** Told of each letter and the record it refuses, before the letter is sent on `letters$`. */
  readonly #onLetter: ((letter: Envelope<DeadLetter>, refused: Envelope<unknown>) => void) | undefined;

  constructor(pipeline: string, protect: ProtectDeadLetter | undefined, maxRaw: number, stats: { deadLettered: number }, onLetter?: (letter: Envelope<DeadLetter>, refused: Envelope<unknown>) => void) {
    this.#onLetter = onLetter;
    this.#pipeline = pipeline;
    this.#protect = protect;
    this.#maxRaw = maxRaw;
    this.#stats = stats;
  }

  /** The dead letters, each in an envelope whose settlement settles the refused record. */
  get letters$(): Observable<Envelope<DeadLetter>> {
    return this.#subject;
  }

  route(envelope: Envelope<unknown>, failure: RecordFailure, done: (error?: Error) => void): void {
    const subject = this.#subject;
    if (subject.closed || subject.isStopped) {
      done(new TributaryError('dead-letter sink already closed', { code: 'STOPPED' }));
      return;
    }
    const letter = deadLetterOf(this.#pipeline, envelope, failure, this.#maxRaw);
    const protect = this.#protect;
    if (!protect) return this.#send(envelope, letter, failure.stage, done);
    let protectedLetter: DeadLetter | Promise<DeadLetter>;
    try {
      protectedLetter = protect(letter, envelope);
    } catch (error) {
      return done(error instanceof Error ? error : new TributaryError(String(error)));
    }
    if (!(protectedLetter instanceof Promise)) return this.#send(envelope, protectedLetter, failure.stage, done);
    this.#track(protectedLetter.then((ready) => this.#send(envelope, ready, failure.stage, done), (error: unknown) => done(error instanceof Error ? error : new TributaryError(String(error)))));
  }

  /** Ends `letters$` once the letters still being protected are sent: those hold it open. */
  complete(): void {
    const protecting = this.#protecting;
    void protecting.then(() => (protecting === this.#protecting ? this.#subject.complete() : this.complete()));
  }

  /** Letters still being protected hold the dead-letter stream open until they are sent. */
  #track(work: Promise<void>): void {
    const previous = this.#protecting;
    this.#protecting = Promise.all([previous, work.catch(() => undefined)]).then(() => undefined);
  }

  /**
   * Sends `letter` on. The stream is open here: `route` checked it, and it closes only in
   * `complete()`, a turn later and once every letter being protected has been sent.
   */
  #send(envelope: Envelope<unknown>, letter: DeadLetter, stage: string, done: (error?: Error) => void): void {
    const stats = this.#stats;
    const byStage = this.byStage;
    const onWritten: Settlement = {
      deadLetters: this,
      ack: () => {
        stats.deadLettered++;
        byStage.set(stage, (byStage.get(stage) ?? 0) + 1);
        done();
      },
      nack: (_e, error) => done(error),
      reject: (_e, f) => done(new SinkError(`dead-letter sink refused the record: ${f.message}`)),
    };
    const sent = new Envelope(letter, envelope.meta, undefined, letter.raw.length, onWritten);
    this.#onLetter?.(sent, envelope);
    this.#subject.next(sent);
  }
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
