import { asyncScheduler, Observable, tap, type MonoTypeOperatorFunction, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs';
import { encodedRows, REPLAY_WAIT_MS } from './batch';
import type { Envelope } from './envelope';
import { TributaryError } from './errors';
import type { Batch, DeadLetter } from './sink';
import type { Source } from './source';

export interface AlignedDeadLetterOptions {
  /** Most letters in one batch. */
  rows: number;
  /** Most bytes (as received) in one batch. */
  bytes: number;
  /** Longest a letter waits for its batch to close before it is written all the same. @default 30 s */
  maxWaitMs?: number;
  /** The sink's encoder: each letter is encoded as it joins its batch. */
  encode?: (value: any) => string;
  /** Once aborted, letters still gathering are nacked (read again), never written cut short. */
  signal?: AbortSignal;
  scheduler?: SchedulerLike;
}

/** Where a letter belongs: its refused record's batch key, and the record's place in the read order. */
interface Tag {
  key: string;
  order: number;
}

interface Gathering {
  letters: Envelope<DeadLetter>[];
  orders: number[];
  rows: string[];
  bytes: number;
  timer: Subscription | undefined;
}

/**
 * Dead-letter batches cut where a run again over the same records cuts them, for a source
 * with replay-stable batches (`Source.batchKey`): a letter joins the batch of its refused
 * record's key, and that batch closes where the record batches close, never by time. When
 * the record batch of a key is cut (at its row or byte limit, at a replayed cut, by time
 * where the source records the cut), the letters of records read before its last record go
 * with it, sent once the source allows that records batch to be written (`beforeWrite`);
 * when the records move to another key, or the source says a key ended (an inbox file read
 * to its end), every letter of those keys goes. A batch also closes at the dead-letter rows
 * or bytes limit, and, so that nothing waits for ever (an in-flight budget that holds the
 * reading back, a partition gone quiet), after `maxWaitMs`. A batch's letters are in the
 * order their records were read. Read in the same order (transforms that refuse records as
 * they come), the same letters then share a batch again and carry the same insert token.
 */
export class AlignedDeadLetters {
  readonly #options: AlignedDeadLetterOptions;
  readonly #tags = new WeakMap<Envelope<DeadLetter>, Tag>();
  readonly #gathering = new Map<string, Gathering>();
  #subscriber: Subscriber<Batch<DeadLetter>> | undefined;
  /** Batches cut, waiting for their records' batch to be written. */
  readonly #held = new Set<Batch<DeadLetter>>();

  constructor(options: AlignedDeadLetterOptions) {
    this.#options = options;
  }

  /** Notes the key and read order of `letter`'s refused record, before the letter is sent. */
  tag(letter: Envelope<DeadLetter>, key: string, order: number): void {
    this.#tags.set(letter, { key, order });
  }

  /** The records' batch step saw a record of `key`: letters of every other key are complete. */
  keyChanged(key: string): void {
    for (const [other, gathering] of this.#gathering) if (other !== key) this.#close(other, gathering, Infinity);
  }

  /**
   * A record batch of `key` was cut after the record read as `last`: the letters read
   * before it make a batch. With `held`, that batch waits to be sent until the function
   * returned is called: `true` sends it (the records' batch is written: its source made
   * the cut durable), `false` nacks it (the records' batch is not written here: cut
   * elsewhere by the next reader, so would be its letters).
   */
  cut(key: string, last: number): void;
  cut(key: string, last: number, held: true): (send: boolean) => void;
  cut(key: string, last: number, held = false): ((send: boolean) => void) | void {
    const gathering = this.#gathering.get(key);
    const taken = gathering && this.#take(key, gathering, last);
    if (!held) return this.#send(taken);
    if (!taken) return () => undefined;
    this.#held.add(taken);
    return (send) => {
      if (!this.#held.delete(taken)) return;
      if (send) this.#subscriber?.next(taken);
      else nack(taken.envelopes);
    };
  }

  /** Gathers the letters of `letters$` into batches (subscribe once). */
  batches(letters$: Observable<Envelope<DeadLetter>>): Observable<Batch<DeadLetter>> {
    return new Observable<Batch<DeadLetter>>((subscriber) => {
      this.#subscriber = subscriber;
      const signal = this.#options.signal;
      const stop = () => this.#closeAll();
      signal?.addEventListener('abort', stop, { once: true });
      const subscription = letters$.subscribe({
        next: (letter) => this.#add(letter),
        error: (error: unknown) => subscriber.error(error),
        complete: () => {
          this.#closeAll();
          // Every records' batch is written by now: a batch still held never will be sent.
          for (const batch of this.#held) nack(batch.envelopes);
          this.#held.clear();
          subscriber.complete();
        },
      });
      return () => {
        signal?.removeEventListener('abort', stop);
        subscription.unsubscribe();
        for (const gathering of this.#gathering.values()) gathering.timer?.unsubscribe();
      };
    });
  }

  #add(letter: Envelope<DeadLetter>): void {
    if (this.#options.signal?.aborted) return nack([letter]);
    const tag = this.#tags.get(letter) ?? { key: '', order: Infinity };
    let gathering = this.#gathering.get(tag.key);
    if (!gathering) {
      gathering = { letters: [], orders: [], rows: [], bytes: 0, timer: undefined };
      this.#gathering.set(tag.key, gathering);
    }
    const encode = this.#options.encode;
    if (encode) {
      try {
        gathering.rows.push(encode(letter.value));
      } catch (error) {
        letter.reject({ stage: 'sink', code: 'ENCODE', message: `cannot encode the record: ${error instanceof Error ? error.message : String(error)}`, path: '' });
        return;
      }
    }
    gathering.letters.push(letter);
    gathering.orders.push(tag.order);
    gathering.bytes += letter.bytes;
    if (gathering.letters.length >= this.#options.rows || gathering.bytes >= this.#options.bytes) this.#close(tag.key, gathering, Infinity);
    else this.#wait(tag.key, gathering);
  }

  /** Starts the wait after which a gathering batch goes whatever its records do. */
  #wait(key: string, gathering: Gathering): void {
    if (gathering.timer) return;
    const { scheduler = asyncScheduler, maxWaitMs = REPLAY_WAIT_MS } = this.#options;
    gathering.timer = scheduler.schedule(() => {
      gathering.timer = undefined;
      this.#close(key, gathering, Infinity);
    }, maxWaitMs);
  }

  /** Sends the letters of `gathering` read up to `last` as one batch (nacks them once stopping); the rest go on gathering. */
  #close(key: string, gathering: Gathering, last: number): void {
    this.#send(this.#take(key, gathering, last));
  }

  /** Stopping: a batch cut here would be cut elsewhere by the next reader; its records are read again. */
  #send(batch: Batch<DeadLetter> | undefined): void {
    if (!batch) return;
    if (this.#options.signal?.aborted) nack(batch.envelopes);
    else this.#subscriber?.next(batch);
  }

  /** The letters of `gathering` read up to `last`, as one batch; the rest go on gathering. */
  #take(key: string, gathering: Gathering, last: number): Batch<DeadLetter> | undefined {
    gathering.timer?.unsubscribe();
    gathering.timer = undefined;
    const { letters, orders, rows } = gathering;
    let taken: Envelope<DeadLetter>[] = letters;
    let takenRows = rows;
    if (orders.every((order) => order <= last)) {
      this.#gathering.delete(key);
    } else {
      taken = [];
      takenRows = [];
      const kept: Gathering = { letters: [], orders: [], rows: [], bytes: 0, timer: undefined };
      letters.forEach((letter, i) => {
        if (orders[i]! <= last) {
          taken.push(letter);
          if (rows.length > 0) takenRows.push(rows[i]!);
        } else {
          kept.letters.push(letter);
          kept.orders.push(orders[i]!);
          if (rows.length > 0) kept.rows.push(rows[i]!);
          kept.bytes += letter.bytes;
        }
      });
      this.#gathering.set(key, kept);
      this.#wait(key, kept);
    }
    if (taken.length === 0) return undefined;
    // In the order the records were read: letters refused by the source come before those a
    // transform refuses, whatever the order they reached here in, and the token is built from
    // the first and last letters.
    [taken, takenRows] = sortByOrder(taken, takenRows, this.#tags);
    let bytes = 0;
    for (const letter of taken) bytes += letter.bytes;
    return this.#options.encode ? { envelopes: taken, bytes, encoded: encodedRows(takenRows) } : { envelopes: taken, bytes };
  }

  #closeAll(): void {
    for (const [key, gathering] of [...this.#gathering]) this.#close(key, gathering, Infinity);
  }
}

/**
 * A pipeline's dead letters batched where its records are, for a source with replay-stable
 * batches (`Source.batchKey`): what the pipeline hands each of its parts. The source's
 * context numbers each record as it is read (`onRead`) and says when a key ended; the dead
 * letters are tagged with their refused record's key and number (`tag`); the records' batch
 * step reports each key it sees (`key`) and each batch it cuts (`cuts`); the batch writer
 * asks `source`, which sends a cut's held dead letters once the records' batch may be written.
 */
export class SourceAlignedDeadLetters<T> {
  readonly #deadLetters: AlignedDeadLetters;
  /** The source for the batch writer: the pipeline's, its `beforeWrite` releasing the dead letters held with each batch. */
  readonly source: Source<T>;
  readonly #batchKey: (envelope: Envelope<T>) => string;
  readonly #readOrder = new WeakMap<Envelope<unknown>, number>();
  #read = 0;
  /** Dead-letter batches cut with a records' batch, sent once the source lets that batch be written. */
  readonly #held: WeakMap<readonly Envelope<unknown>[], (send: boolean) => void> | undefined;
  #lastKey: string | undefined;

  /** `batchKey` is the source's; `options.maxWaitMs` is raised to the replay wait: a batch a replay cuts by time waits at least that long. */
  constructor(source: Source<T>, batchKey: (envelope: Envelope<T>) => string, options: AlignedDeadLetterOptions) {
    this.#batchKey = batchKey;
    this.#deadLetters = new AlignedDeadLetters({ ...options, maxWaitMs: Math.max(options.maxWaitMs ?? REPLAY_WAIT_MS, REPLAY_WAIT_MS) });
    const beforeWrite = source.beforeWrite?.bind(source);
    if (!beforeWrite) {
      this.source = source;
      return;
    }
    const held = new WeakMap<readonly Envelope<unknown>[], (send: boolean) => void>();
    this.#held = held;
    // A batch's dead letters are written only once its source has made the cut durable (Kafka: committed it), and never when it refuses the batch.
    this.source = {
      name: source.name,
      open: (context) => source.open(context),
      beforeWrite: async (envelopes) => {
        let ours = false;
        try {
          ours = await beforeWrite(envelopes);
          return ours;
        } finally {
          const release = held.get(envelopes);
          held.delete(envelopes);
          release?.(ours);
        }
      },
    };
  }

  /** For the source's context: each envelope is numbered as it is made, a refused one before its dead letter is routed. */
  readonly onRead = (envelope: Envelope<unknown>): void => {
    this.#readOrder.set(envelope, ++this.#read);
  };

  /** For the source's context: every letter of `key` goes (an inbox file read to its end). */
  readonly batchKeyEnded = (key: string): void => {
    this.#deadLetters.cut(key, Infinity);
  };

  /** For the dead-letter routing: notes the key and read order of `refused`, before `letter` is sent. */
  readonly tag = (letter: Envelope<DeadLetter>, refused: Envelope<unknown>): void => {
    this.#deadLetters.tag(letter, this.#batchKey(refused as Envelope<T>), this.#readOrder.get(refused.received) ?? Infinity);
  };

  /** The records' batch key, telling the dead letters when the records move to another key. */
  readonly key = (envelope: Envelope<T>): string => {
    const next = this.#batchKey(envelope);
    if (next !== this.#lastKey) this.#deadLetters.keyChanged((this.#lastKey = next));
    return next;
  };

  /** After the records' batch step: each batch cut takes the letters read before its last record with it. */
  cuts(): MonoTypeOperatorFunction<Batch<T>> {
    return tap((b) => {
      const last = b.envelopes[b.envelopes.length - 1]!;
      const order = this.#readOrder.get(last.received) ?? Infinity;
      if (this.#held) this.#held.set(b.envelopes, this.#deadLetters.cut(this.#batchKey(last), order, true));
      else this.#deadLetters.cut(this.#batchKey(last), order);
    });
  }

  /** The dead-letter batches of `letters$` (subscribe once). */
  batches(letters$: Observable<Envelope<DeadLetter>>): Observable<Batch<DeadLetter>> {
    return this.#deadLetters.batches(letters$);
  }
}

/** `letters` and their encoded rows in the order their records were read (a stable sort: ties, letters of one record or of none, keep their order). */
function sortByOrder(letters: Envelope<DeadLetter>[], rows: string[], tags: WeakMap<Envelope<DeadLetter>, Tag>): [Envelope<DeadLetter>[], string[]] {
  const order = (letter: Envelope<DeadLetter>) => tags.get(letter)?.order ?? Infinity;
  const indices = letters.map((_, i) => i).sort((a, b) => order(letters[a]!) - order(letters[b]!));
  return [indices.map((i) => letters[i]!), rows.length > 0 ? indices.map((i) => rows[i]!) : rows];
}

function nack(letters: readonly Envelope<DeadLetter>[]): void {
  const error = stopped();
  for (const letter of letters) letter.nack(error);
}

function stopped(): TributaryError {
  return new TributaryError('stopped before its dead-letter batch closed: left for the next reader', { code: 'STOPPED', retriable: true });
}
