import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { delay, tempDir, until } from '../helpers';
import { caughtUp, committedOffsets, createTopic, produce } from '../kafka';
import { ensureKafka } from '../services';

const run = promisify(execFile);
const child = join(__dirname, 'kafka-child.js');

describe('fromKafka: kill -9 mid-batch and restart, against embedded ClickHouse', function () {
  this.timeout(360_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('ten kills mid-batch, each followed by a restart, with batches cut by time as well as by count: ClickHouse holds every record once by plain count() after every kill, on a table no merge can deduplicate, and every record exactly once at the end', async () => {
    const { topic, remove } = await createTopic(brokers, 3);
    const work = tempDir();
    try {
      const total = 24_000;
      const messages = Array.from({ length: total }, (_, i) => ({ key: String(i), value: JSON.stringify({ id: i }) }));
      // A trickle through most of the rounds: batches reach the end of their partitions and
      // are cut by time (maxWaitMs) wherever the trickle stands, short of their block of
      // offsets, at places a replay reading what piled up since would not cut by itself.
      // The source commits where each batch ends before writing it, and the replay cuts
      // there again.
      const trickle = produce(brokers, topic, messages, 9, 20);
      trickle.catch(() => undefined);
      const groupId = `${topic}-group`;
      const chdb = join(work.path, 'chdb');
      const count = async () => JSON.parse((await run(process.execPath, [child, 'count', chdb])).stdout) as Record<string, number>;
      const committedTotal = async () => [...(await committedOffsets(brokers, groupId, topic)).values()].reduce((sum, o) => sum + Math.max(0, o), 0);

      let previousCommitted = 0;
      // Rounds whose kill left rows in ClickHouse past the committed offsets: the restart reads
      // them again, and only the insert token of the replayed batch keeps them from counting
      // twice (the table is a plain MergeTree). Batches wait 5 ms, and the in-flight budget
      // (1700) is no multiple of the batch (500), so a batch is also cut by time where the
      // credit ran out.
      const batching = { BATCH_WAIT_MS: '5', IN_FLIGHT: '1700' };
      let replays = 0;
      for (let round = 1; round <= 10; round++) {
        // Odd rounds: killed while a write is under way, before it lands. Even rounds: commits
        // held back for 1.5 s and killed right after a write landed, so stored rows are past
        // the commit and the restart reads them again.
        const landed = round % 2 === 0;
        const consumer = spawn(process.execPath, [child, 'store', brokers.join(','), topic, groupId, chdb, '60'], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, ...batching, COMMIT_INTERVAL_MS: landed ? '1500' : '0' },
        });
        let output = '';
        let writes = 0;
        consumer.stdout.on('data', (d: Buffer) => {
          output += d.toString();
          writes = output.split('\n').filter((l) => l.startsWith(landed ? 'wrote' : 'writing')).length;
        });
        consumer.stderr.on('data', (d: Buffer) => (output += d.toString()));
        const exited = new Promise<NodeJS.Signals | null>((resolve) => consumer.on('exit', (_code, signal) => resolve(signal)));
        const killAfter = 1 + (round % 4);
        await until(() => writes >= killAfter || consumer.exitCode !== null, 60_000, `write ${killAfter} of round ${round}`);
        if (!landed) await delay(10 + ((round * 17) % 40));
        consumer.kill('SIGKILL');
        expect(await exited, output).to.equal('SIGKILL');
        const committed = await committedTotal();
        // Commits never go backwards, and some progress is made overall.
        expect(committed).to.be.at.least(previousCommitted);
        previousCommitted = committed;
        const stored = await count();
        expect(stored.raw, `rows stored twice after kill ${round}: ${JSON.stringify(stored)}`).to.equal(stored.distinct);
        if (stored.distinct > committed) replays++;
      }
      expect(replays, 'no kill left stored rows past the commit: the replay was never exercised').to.be.greaterThan(0);
      expect(previousCommitted, 'ten rounds committed nothing').to.be.greaterThan(0);
      const midway = await count();
      expect(midway.distinct).to.be.within(1, total - 1);

      // The last run reads to the end.
      await trickle;
      const last = await run(process.execPath, [child, 'store', brokers.join(','), topic, groupId, chdb, '0', 'until-caught-up'], { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...batching } });
      const stats = JSON.parse(last.stdout.trim().split('\n').pop()!) as { nacked: number };
      expect(stats.nacked).to.equal(0);
      expect(await caughtUp(brokers, groupId, topic)).to.equal(true);

      const counts = await count();
      console.log(`      ${JSON.stringify({ ...counts, total, committedAfterTenKills: previousCommitted, killsWithRowsPastCommit: replays })}`);
      // Plain count(), no FINAL, on a table whose merges never drop a row: nothing lost,
      // nothing twice, though the last run reaches the end of the topic, where every batch
      // is cut by time.
      expect(counts).to.include({ raw: total, distinct: total, first: 0, last: total - 1, dead_letters: 0 });
    } finally {
      work.remove();
      await remove();
    }
  });
});
