import { expect } from 'chai';
import { delay } from '../../helpers';
import { caughtUp, committedOffsets, createTopic, produce } from '../../kafka';
import { ensureKafka } from '../../services';
import { sourceConformance, type SourceInput } from '../../conformance/source';

const PARTITIONS = 3;
const ALIGNMENT = 500;

/**
 * fromKafka with aligned batches (`batchAlignment` = `batch.rows`): JSON messages spread over
 * three partitions; the group's committed offsets say which are durable. A batch written
 * past the commit at a kill is read again and cut at the same records, and its insert
 * token drops the replay: every message is stored exactly once, by plain count(), after
 * every kill and at the end.
 *
 * The kill test kills ten times, each round restarting where the last one left off, while
 * the topic trickles in (batches reach the end of their partitions and are cut by time,
 * wherever the trickle stands, at places a replay reading what piled up since would not
 * cut by itself). Odd rounds are killed early, while a write is under way, before it
 * lands. Even rounds hold commits back for 1.5 s and run on to the trickle's head, where
 * batches are cut by time, and are killed right after a write landed, before its records
 * are acked: stored rows are past the commit, and the restart reads them again. The
 * in-flight budget (1700) is no multiple of the batch (500), so batches are also cut by
 * time where credit ran out.
 */
sourceConformance('fromKafka', {
  kind: 'kafka',
  timeoutMs: 360_000,
  async input(_dir, promise): Promise<SourceInput> {
    const brokers = await ensureKafka();
    const { topic, remove } = await createTopic(brokers, PARTITIONS, 'conformance');
    const groupId = `${topic}-group`;
    const kill = promise === 'kill';
    const total = kill ? 24_000 : 5000;
    // Message i goes to partition i mod 3, where it is the (i div 3)-th: its offset.
    const refOf = (partition: number, offset: number) => `k-${offset * PARTITIONS + partition}`;
    const messages = Array.from({ length: total }, (_, i) => ({ partition: i % PARTITIONS, value: JSON.stringify({ ref: `k-${i}` }) }));
    let halted = false;
    // The kill test's trickle: sends of 9 messages 20 ms apart, in runs of 100 sends, until halted.
    const feeding = kill
      ? (async () => {
          for (let i = 0; i < total && !halted; i += 900) await produce(brokers, topic, messages.slice(i, i + 900), 9, 20);
        })()
      : produce(brokers, topic, messages);
    feeding.catch(() => undefined);
    if (!kill) await feeding;
    const promised = async () => {
      const committed = await committedOffsets(brokers, groupId, topic);
      return [...committed].flatMap(([partition, offset]) => Array.from({ length: Math.max(0, offset) }, (_, o) => refOf(partition, o)));
    };
    const options = {
      brokers,
      groupId,
      topics: topic,
      fromBeginning: true,
      logLevel: 'nothing',
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: 1000,
      batchAlignment: ALIGNMENT,
      commitIntervalMs: 0,
    };
    let committedBefore = 0;
    let replays = 0;
    let timedKills = true;
    let killedAt = 0;
    return {
      options,
      batch: { rows: ALIGNMENT, maxWaitMs: kill ? 5 : 200 },
      ...(kill && { inFlight: 1700, rounds: 10 }),
      optionsOf: (round) => ({ ...options, commitIntervalMs: round % 2 === 0 ? 1500 : 0 }),
      writesBefore: 4,
      slowMs: kill ? 60 : 100,
      ackDelayMs: 30,
      endless: true,
      refs: () => messages.map((m) => JSON.parse(m.value).ref as string),
      promised,
      midway(run) {
        if (!kill) return run!.seen('wrote') >= 3;
        const { round, seen } = run!;
        const landed = round % 2 === 0;
        // Even rounds: past the backlog the last round left, at the trickle's head, where batches are cut by time.
        if (seen(landed ? 'wrote' : 'writing') < (landed ? 12 + round : 1 + (round % 4))) return false;
        if (landed) return true;
        // Odd rounds: a little way into the write (each waits 60 ms before it inserts).
        killedAt ||= Date.now() + 10 + ((round * 17) % 40);
        if (Date.now() < killedAt) return false;
        killedAt = 0;
        return true;
      },
      // Exactly once: the replay of a batch carries its insert token.
      copies: () => 1,
      async drained() {
        await feeding;
        while (!(await caughtUp(brokers, groupId, topic).catch(() => false))) await delay(200);
      },
      afterFirst({ counts, promised: committed, round, placedKill }) {
        if (!kill) return;
        timedKills = !placedKill;
        // Commits never go backwards.
        expect(committed.length, `the committed offsets after kill ${round}`).to.be.at.least(committedBefore);
        committedBefore = committed.length;
        if (counts.distinct > committed.length) replays++;
      },
      afterLast({ counts, stats, first }) {
        // The ten timed kills must have exercised the replay; a kill at a set point may come before any commit.
        if (kill && timedKills) {
          expect(replays, 'no kill left stored rows past the commit: the replay was never exercised').to.be.greaterThan(0);
          expect(committedBefore, 'ten rounds committed nothing').to.be.greaterThan(0);
          console.log(`      ${JSON.stringify({ total, committedAfterTenKills: committedBefore, killsWithRowsPastCommit: replays })}`);
        }
        // The restart reads from the commit, each message once.
        expect(stats!.read).to.equal(total - first.promised.length);
        expect(stats!.nacked).to.equal(0);
        expect(counts.deadLetters).to.equal(0);
      },
      async teardown() {
        halted = true;
        await feeding.catch(() => undefined);
        await remove();
      },
    };
  },
});
