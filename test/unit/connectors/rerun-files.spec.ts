import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { concatMap, filter, map, of, tap, timer, type Observable } from 'rxjs';
import { toClickHouse } from '../../../connectors/clickhouse';
import { fromFiles } from '../../../connectors/files';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter, Sink } from '../../../lib/sink';
import { sleep } from '../../../lib/sleep';
import { MemorySink, scratchDir, testClickHouse } from '../../helpers';

/**
 * `fromFiles` keeps no state: run again, it reads every file whole. With `alignBatches` its
 * batches are cut where the next run cuts them (row limit, file end), never by time, so a
 * run again writes each batch with the insert token it had and ClickHouse absorbs it. The
 * rows are counted with plain count() on a MergeTree whose merges are stopped: only the
 * tokens can keep a row from being stored twice.
 */
describe('fromFiles with alignBatches: a run again over the same files stores nothing twice', function () {
  this.timeout(120_000);
  const dir = scratchDir();
  let table: string;
  const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
  const count = async (sql: string) => Number((await testClickHouse().query<{ n: string }>(sql))[0]!.n);

  beforeEach(async () => {
    table = `rerun_${randomUUID().slice(0, 8)}`;
    await testClickHouse().exec(`CREATE TABLE ${table} (id UInt64) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 1000`);
    await testClickHouse().exec(`SYSTEM STOP MERGES ${table}`);
    // 25 and 12 records: batches of 10 end at 10, 20, 25 and 10, 12 (each file's end).
    dir.file('a.ndjson', ids(1, 25).map((id) => JSON.stringify({ id })).join('\n'));
    dir.file('b.ndjson', ids(101, 12).map((id) => JSON.stringify({ id })).join('\n'));
  });

  afterEach(async () => {
    await testClickHouse().exec(`DROP TABLE IF EXISTS ${table}`);
  });

  type Records = Observable<Envelope<unknown>>;
  const idOf = (e: Envelope<unknown>) => (e.value as { id: number }).id;
  const pipeline = (transform?: (records$: Records) => Records) =>
    new Pipeline({
      name: 'rerun',
      source: fromFiles({ paths: dir.path, alignBatches: true }),
      ...(transform && { transform }),
      sink: toClickHouse({ client: testClickHouse(), table }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 10, maxWaitMs: 1 },
    });

  it('a run held back mid-batch (where maxWaitMs would cut) and a run at full speed store each record once', async () => {
    // Every seventh record waits 20 ms: far past maxWaitMs, which would cut its batch there.
    const stall = (records$: Records) => records$.pipe(concatMap((e) => (idOf(e) % 7 === 0 ? timer(20) : of(0)).pipe(map(() => e))));
    const first = await pipeline(stall).run();
    expect(first).to.include({ read: 37, written: 37, nacked: 0 });
    const second = await pipeline().run();
    expect(second).to.include({ read: 37, written: 37, nacked: 0 });
    expect(await count(`SELECT count() AS n FROM ${table}`), 'rows without FINAL, merges stopped').to.equal(37);
    expect(await count(`SELECT count() AS n FROM system.parts WHERE table = '${table}' AND active`), 'one part per batch').to.equal(5);
  });

  it('a run stopped mid-batch writes no batch cut short: the next run stores each record once', async () => {
    let stopped: Pipeline<unknown> | undefined;
    const stopAt15 = (records$: Records) => records$.pipe(tap((e) => idOf(e) === 15 && void stopped!.stop()));
    stopped = pipeline(stopAt15);
    const first = await stopped.run();
    // Records 11 to 15 were gathered when the stop came: nacked, not written as a batch of their own.
    expect(first.written).to.equal(10);
    expect(first.nacked).to.equal(first.read - 10);
    expect(await count(`SELECT count() AS n FROM ${table}`)).to.equal(10);
    await pipeline().run();
    expect(await count(`SELECT count() AS n FROM ${table}`), 'rows without FINAL, merges stopped').to.equal(37);
  });

  it('refuses an alignBatches that is not a boolean', () => {
    expect(() => fromFiles({ paths: dir.path, alignBatches: 'yes' as never })).to.throw(ConfigError, 'alignBatches must be true or false, got "yes"');
  });
});

/**
 * Dead letters of a source with replay-stable batches are batched like its records: by
 * file, closed where the records' batches close, never by time. Run again over the same
 * files, each dead-letter batch holds the same letters and carries the same insert token.
 */
describe('fromFiles with alignBatches: a run again stores no dead letter twice', function () {
  this.timeout(120_000);
  const dir = scratchDir();
  let table: string;
  const count = async (sql: string) => Number((await testClickHouse().query<{ n: string }>(sql))[0]!.n);
  // a: 25 lines, two of them not JSON (source) and three refused by the transform; b: 12
  // lines, one refused by the transform and the last not JSON (a file ending in a refusal).
  const lines = (from: number, n: number, broken: readonly number[]) =>
    Array.from({ length: n }, (_, i) => (broken.includes(from + i) ? `{"id": ${from + i},` : JSON.stringify({ id: from + i }))).join('\n');
  const refusedIds = [5, 14, 21, 103];
  const BAD = 2 + 3 + 1 + 1;
  const READ = 25 + 12;

  beforeEach(async () => {
    table = `rerun_dl_${randomUUID().slice(0, 8)}`;
    const ch = testClickHouse();
    await ch.exec(`CREATE TABLE ${table} (position String, stage String, code String) ENGINE = MergeTree ORDER BY position SETTINGS non_replicated_deduplication_window = 1000`);
    // Like the booking schema's views: the view's table keeps tokens too, so an insert absorbed upstream is absorbed there.
    await ch.exec(`CREATE TABLE ${table}_by_stage (stage String, n UInt64) ENGINE = SummingMergeTree ORDER BY stage SETTINGS non_replicated_deduplication_window = 1000`);
    await ch.exec(`CREATE MATERIALIZED VIEW ${table}_mv TO ${table}_by_stage AS SELECT stage, count() AS n FROM ${table} GROUP BY stage`);
    await ch.exec(`SYSTEM STOP MERGES ${table}`);
    dir.file('a.ndjson', lines(1, 25, [3, 9]));
    dir.file('b.ndjson', lines(101, 12, [112]));
  });

  afterEach(async () => {
    for (const name of [`${table}_mv`, `${table}_by_stage`, table]) await testClickHouse().exec(`DROP TABLE IF EXISTS ${name}`);
  });

  type Records = Observable<Envelope<unknown>>;
  const idOf = (e: Envelope<unknown>) => (e.value as { id: number }).id;
  const refuse = (records$: Records) =>
    records$.pipe(
      filter((e) => {
        if (!refusedIds.includes(idOf(e))) return true;
        e.reject({ stage: 'validate', code: 'REFUSED', message: `id ${idOf(e)} is refused`, path: '/id' });
        return false;
      }),
    );
  /** Dead letters into `table`, each write held back `delay()` ms first (a loaded machine). */
  const deadLetters = (delay: () => number): Sink<DeadLetter> => {
    const sink = toClickHouse<DeadLetter>({ client: testClickHouse(), table });
    const write = sink.write.bind(sink);
    sink.write = async (batch, context) => {
      await sleep(delay());
      return write(batch, context);
    };
    return sink;
  };
  const pipeline = (transform: (records$: Records) => Records, letters: Sink<DeadLetter>, stop?: (p: Pipeline<unknown>) => void) => {
    const p: Pipeline<unknown> = new Pipeline({
      name: 'rerun-dl',
      source: fromFiles({ paths: dir.path, alignBatches: true }),
      transform: (records$: Records) => transform(records$).pipe(tap(() => stop?.(p))),
      sink: new MemorySink<unknown>(),
      deadLetters: letters,
      batch: { rows: 10, maxWaitMs: 1 },
      // A dead-letter batch closed by a 1 ms wait would be cut wherever the run happens to be.
      deadLetterBatch: { maxWaitMs: 1 },
    });
    return p;
  };

  it('a run held back (records stalled, dead-letter writes delayed at random) and a run at full speed store each dead letter once', async () => {
    const stall = (records$: Records) => records$.pipe(concatMap((e) => (idOf(e) % 4 === 0 ? timer(15) : of(0)).pipe(map(() => e))), refuse);
    const first = await pipeline(stall, deadLetters(() => Math.floor(Math.random() * 40))).run();
    expect(first).to.include({ read: READ, written: READ - BAD, deadLettered: BAD, nacked: 0 });
    const second = await pipeline(refuse, deadLetters(() => 0)).run();
    expect(second).to.include({ read: READ, written: READ - BAD, deadLettered: BAD, nacked: 0 });
    expect(await count(`SELECT count() AS n FROM ${table}`), 'dead letters without FINAL, merges stopped').to.equal(BAD);
    expect(await count(`SELECT sum(n) AS n FROM ${table}_by_stage`), 'dead letters counted by the materialized view').to.equal(BAD);
    expect(await count(`SELECT count() AS n FROM ${table} WHERE stage = 'parse'`), 'refused by the source').to.equal(3);
  });

  it('a run stopped mid-file writes no dead-letter batch cut short: the next run stores each dead letter once', async () => {
    let stopping = false;
    const first = await pipeline(refuse, deadLetters(() => 0), (p) => {
      if (!stopping && p.stats.read >= 16) {
        stopping = true;
        void p.stop();
      }
    }).run();
    expect(first.read).to.equal(first.written + first.deadLettered + first.nacked);
    await pipeline(refuse, deadLetters(() => 0)).run();
    expect(await count(`SELECT count() AS n FROM ${table}`), 'dead letters without FINAL, merges stopped').to.equal(BAD);
    expect(await count(`SELECT sum(n) AS n FROM ${table}_by_stage`)).to.equal(BAD);
  });
});
