import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, until } from '../../helpers';
import { caughtUp, createTopic, endOffsets, produce, readAll } from '../../kafka';
import { ensureKafka } from '../../services';

const child = join(__dirname, 'kafka-child.js');

interface GroupEvent {
  pid: number;
  at: number;
  type: 'join' | 'heartbeat' | 'commit' | 'started' | 'stopped';
  member?: string;
  generation?: number;
  assignment?: Record<string, number[]>;
  partitions?: { topic: string; partition: number; offset: number }[];
}

describe('fromKafka: three instances in one group, one killed and one added mid-run', function () {
  this.timeout(300_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('loses nothing, and no instance ever commits to a partition it does not own', async () => {
    const input = await createTopic(brokers, 6, 'group-in');
    const output = await createTopic(brokers, 6, 'group-out');
    const work = tempDir();
    const children: ChildProcess[] = [];
    try {
      const total = 30_000;
      const more = 6000;
      await produce(brokers, input.topic, Array.from({ length: total }, (_, i) => ({ key: String(i), value: JSON.stringify({ id: i }) })));
      const groupId = `${input.topic}-group`;
      const eventsFile = join(work.path, 'events.ndjson');
      // Children append while this reads: only whole lines (ended by a newline) count.
      const events = () => {
        if (!existsSync(eventsFile)) return [];
        const text = readFileSync(eventsFile, 'utf8');
        return text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as GroupEvent);
      };
      const start = () => {
        const c = spawn(process.execPath, [child, 'relay', brokers.join(','), input.topic, output.topic, groupId, eventsFile, '40'], { stdio: ['ignore', 'inherit', 'inherit'] });
        children.push(c);
        return c;
      };
      const [first] = [start(), start(), start()];
      await until(() => new Set(events().filter((e) => e.type === 'commit').map((e) => e.pid)).size === 3, 90_000, 'commits from all three');

      // One dies without warning while its records are in flight; another joins.
      first!.kill('SIGKILL');
      const added = start();
      // Once it has partitions, more input for every partition: the ones it got may already
      // be drained by their former owners, and an instance with nothing to read commits nothing.
      await until(() => events().some((e) => e.type === 'join' && e.pid === added.pid), 90_000, 'the added instance joining');
      await produce(brokers, input.topic, Array.from({ length: more }, (_, i) => ({ key: String(total + i), value: JSON.stringify({ id: total + i }) })));
      await until(() => events().some((e) => e.type === 'commit' && e.pid === added.pid), 90_000, 'a commit from the added instance');
      for (let i = 0; !(await caughtUp(brokers, groupId, input.topic).catch(() => false)); i++) {
        if (i > 1200) expect.fail('the group never committed the end of the input');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const survivors = children.filter((c) => c !== first);
      await Promise.all(survivors.map((c) => new Promise((resolve) => (c.once('exit', resolve), c.kill('SIGTERM')))));

      // None lost: every id reached the output topic (some more than once).
      const written = [...(await endOffsets(brokers, output.topic)).values()].reduce((a, b) => a + b, 0);
      const messages = await readAll(brokers, output.topic, written);
      const ids = new Set(messages.map((m) => JSON.parse(m.value.toString()).id as number));
      expect(ids.size).to.equal(total + more);

      // No commit to a revoked partition: each commit names only partitions of the
      // assignment its member got at its latest join, under the generation of that join;
      // and within one generation no partition is committed by two members.
      const log = events();
      const latestJoin = new Map<number, GroupEvent>();
      const generationOfJoin = new Map<GroupEvent, number>();
      const committers = new Map<string, string>();
      let commits = 0;
      const generations = new Set<number>();
      for (const event of log) {
        if (event.type === 'join') latestJoin.set(event.pid, event);
        if (event.type !== 'heartbeat' && event.type !== 'commit') continue;
        const join = latestJoin.get(event.pid);
        expect(join, `${event.type} before any join: ${JSON.stringify(event)}`).to.not.equal(undefined);
        const known = generationOfJoin.get(join!);
        if (known === undefined) generationOfJoin.set(join!, event.generation!);
        else expect(event.generation, `generation changed without a join: ${JSON.stringify(event)}`).to.equal(known);
        if (event.type !== 'commit') continue;
        commits++;
        generations.add(event.generation!);
        for (const { topic, partition } of event.partitions!) {
          expect(join!.assignment![topic] ?? [], `commit to a partition not owned: ${JSON.stringify(event)} after ${JSON.stringify(join)}`).to.include(partition);
          const key = `${event.generation}/${topic}/${partition}`;
          const other = committers.get(key);
          expect(other === undefined || other === event.member, `two members committed ${key}`).to.equal(true);
          committers.set(key, event.member!);
        }
      }
      console.log(`      ${JSON.stringify({ total: total + more, written, commits, generations: [...generations].sort((a, b) => a - b) })}`);
      // The kill and the addition rebalanced the group while it committed.
      expect(generations.size).to.be.at.least(2);
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      work.remove();
      await Promise.all([input.remove(), output.remove()]);
    }
  });
});
