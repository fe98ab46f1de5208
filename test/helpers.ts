import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Observable } from 'rxjs';
import { Envelope, type DeadLetterRouter, type RecordFailure, type RecordMeta, type Settlement } from '../lib/envelope';
import type { Batch, DeadLetter, RowBytes, Sink, WriteContext } from '../lib/sink';
import type { Source } from '../lib/source';

/** A sink that keeps what it was given; writes can be slowed, gated or made to fail. */
export class MemorySink<T> implements Sink<T> {
  readonly name: string;
  readonly rows: T[] = [];
  readonly writes: { size: number; token: string; attempt: number }[] = [];
  /** Resolves a write when it returns; default resolves at once. */
  gate: (batch: Batch<T>, context: WriteContext) => Promise<void> = async () => undefined;
  closed = 0;

  constructor(name = 'memory') {
    this.name = name;
  }

  async write(batch: Batch<T>, context: WriteContext): Promise<void> {
    this.writes.push({ size: batch.envelopes.length, token: context.token, attempt: context.attempt });
    await this.gate(batch, context);
    for (const envelope of batch.envelopes) if (!envelope.settled) this.rows.push(envelope.value);
  }

  async close(): Promise<void> {
    this.closed++;
  }
}

export type DeadLetterSink = MemorySink<DeadLetter>;

/** The outcomes a source was told about, by position. */
export interface Observed<T> extends Source<T> {
  readonly acked: string[];
  readonly nacked: { position: string; error: Error }[];
}

/** Wraps a source to record what it learns through `settled`. */
export function observed<T>(source: Source<T>): Observed<T> {
  const acked: string[] = [];
  const nacked: { position: string; error: Error }[] = [];
  return {
    name: source.name,
    acked,
    nacked,
    open: (context) => source.open(context) as Observable<Envelope<T>>,
    settled(envelope, error) {
      if (error) nacked.push({ position: envelope.meta.position, error });
      else acked.push(envelope.meta.position);
      source.settled?.(envelope, error);
    },
  };
}

/** Envelopes outside a pipeline, whose fate is recorded; for operator tests. */
export class Recorder implements Settlement {
  readonly acked: Envelope<unknown>[] = [];
  readonly nacked: Envelope<unknown>[] = [];
  readonly rejected: { envelope: Envelope<unknown>; failure: RecordFailure }[] = [];
  readonly deadLetters: DeadLetterRouter = {
    route: (envelope, failure, done) => {
      this.rejected.push({ envelope, failure });
      done();
    },
  };

  envelope<T>(value: T, meta: Partial<RecordMeta> = {}): Envelope<T> {
    const position = meta.position ?? `test@${this.#next++}`;
    return new Envelope(value, { source: 'test', receivedAt: 0, attempt: 1, ...meta, position }, undefined, 1, this);
  }

  #next = 1;

  ack(envelope: Envelope<unknown>): void {
    this.acked.push(envelope);
  }

  nack(envelope: Envelope<unknown>): void {
    this.nacked.push(envelope);
  }

  reject(envelope: Envelope<unknown>, failure: RecordFailure): void {
    this.deadLetters.route(envelope, failure, () => undefined);
  }
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix = 'tributary-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A fresh directory for each test of the calling suite, with a writer of files in it. */
export function scratchDir(): { readonly path: string; file: (name: string, content: string | Buffer) => string } {
  let dir: ReturnType<typeof tempDir> | undefined;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir?.remove());
  return {
    get path() {
      return dir!.path;
    },
    file: (name, content) => {
      const path = join(dir!.path, name);
      writeFileSync(path, content);
      return path;
    },
  };
}

/**
 * A value as JSON with every ciphertext (`v1:…`, `sv1:…`) replaced by `<ciphertext>`: what a
 * "no plaintext left" check reads, so random base64 that happens to spell a name cannot fail it.
 */
export const withoutCiphertexts = (value: unknown): string => JSON.stringify(value).replace(/\bs?v1:[^:"]+:[A-Za-z0-9+/]+=*/g, '<ciphertext>');

export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Reads `stream` to its end: what it throws, or 'read to its end'. */
export async function readToEnd(stream: AsyncIterable<unknown>): Promise<unknown> {
  try {
    for await (const chunk of stream) void chunk;
    return 'read to its end';
  } catch (error) {
    return error;
  }
}

/** What `promise` rejects with, or undefined when it resolves. */
export const rejection = (promise: Promise<unknown>): Promise<unknown> => promise.then(() => undefined, (error: unknown) => error);

/** Polls `condition` (awaited: it may ask a store) every `everyMs` until true, or fails after `timeoutMs`. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition', everyMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(everyMs);
  }
}

let shared: { client: import('../connectors/clickhouse').ClickHouseClient; dir: { path: string; remove: () => void } } | undefined;

/**
 * The embedded ClickHouse of this test process. chDB holds one data directory per
 * process, so tests share it and each recreates the tables it uses.
 */
export function testClickHouse(): import('../connectors/clickhouse').ClickHouseClient {
  if (!shared) {
    const { embeddedClickHouse } = require('../connectors/clickhouse') as typeof import('../connectors/clickhouse');
    const dir = tempDir('tributary-chdb-');
    shared = { client: embeddedClickHouse({ path: dir.path }), dir };
    process.once('exit', () => dir.remove());
  }
  return shared.client;
}

/** Queries running in `client` whose text holds `marker`, the count's own left out. */
export async function runningQueries(marker: string, client: import('../connectors/clickhouse').ClickHouseClient = testClickHouse()): Promise<number> {
  const rows = await client.query<{ n: string }>(`SELECT count() AS n FROM system.processes WHERE query LIKE '%${marker}%' AND query NOT LIKE '%system.processes%'`);
  return Number(rows[0]!.n);
}

/** `real` with `overrides` in place of some of its methods: every other call goes to `real`. */
export function clientLike(real: import('../connectors/clickhouse').ClickHouseClient, overrides: Partial<import('../connectors/clickhouse').ClickHouseClient>): import('../connectors/clickhouse').ClickHouseClient {
  return {
    kind: real.kind,
    exec: (sql) => real.exec(sql),
    query: (sql) => real.query(sql),
    queryText: (sql, format) => real.queryText(sql, format),
    stream: (sql, options) => real.stream(sql, options),
    supportsDeduplicationToken: () => real.supportsDeduplicationToken(),
    readsDecimalStrings: () => real.readsDecimalStrings(),
    ...(real.readsCompactRows && { readsCompactRows: () => real.readsCompactRows!() }),
    insert: (table, rows, settings, columns) => real.insert(table, rows, settings, columns),
    close: () => real.close(),
    ...overrides,
  };
}

/** The data directory of {@link testClickHouse}, held by this process. */
export function testClickHousePath(): string {
  testClickHouse();
  return shared!.dir.path;
}

/**
 * fast-check parameters of a seeded property. `TRIBUTARY_PROPERTY_RUNS=N` (`npm run
 * test:properties`) runs N times as many cases from a random seed instead, which
 * fast-check prints with a failure: the long runs CI has no time for.
 */
export function seeded(seed: number, numRuns: number): { seed: number; numRuns: number } {
  const factor = Number(process.env.TRIBUTARY_PROPERTY_RUNS ?? 0);
  return factor > 0 ? { seed: Math.floor(Math.random() * 2 ** 31), numRuns: Math.ceil(numRuns * factor) } : { seed, numRuns };
}

/** A RowBytes that starts with `buffer` and moves to a new one, twice as large, whenever room runs out. */
export class GrowingBytes implements RowBytes {
  at = 0;
  moves = 0;
  constructor(public buffer: Buffer) {}
  room(bytes: number): Buffer {
    if (this.at + bytes > this.buffer.length) {
      const larger = Buffer.alloc(Math.max(2 * this.buffer.length, this.at + bytes));
      this.buffer.copy(larger, 0, 0, this.at);
      // The old buffer is spoilt: a writer still holding it would write where nobody reads.
      this.buffer.fill(0x3f);
      this.buffer = larger;
      this.moves++;
    }
    return this.buffer;
  }
  get written(): string {
    return this.buffer.toString('utf8', 0, this.at);
  }
}
