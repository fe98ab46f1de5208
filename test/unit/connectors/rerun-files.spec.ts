import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { concatMap, map, of, tap, timer, type Observable } from 'rxjs';
import { toClickHouse } from '../../../connectors/clickhouse';
import { fromFiles } from '../../../connectors/files';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
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
