import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { caughtUp, testKafka } from '../kafka';
import { ensureKafka } from '../services';

const run = promisify(execFile);
const example = join(__dirname, '..', '..', 'examples', 'kafka-topology');

/** A stage running as its own process, its stdout and stderr kept together. */
interface Stage {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function startStage(name: string, args: string[]): Stage {
  const child = spawn(process.execPath, [join(example, `${name}.js`), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  return { child, output: () => output, exited };
}

/** Sends SIGTERM and resolves with the exit code and how long the stage took to exit. */
async function terminate(stage: Stage): Promise<{ code: number | null; ms: number }> {
  const sent = Date.now();
  stage.child.kill('SIGTERM');
  const { code, at } = await stage.exited;
  return { code, ms: at - sent };
}

describe('examples/kafka-topology stages as services', function () {
  this.timeout(120_000);
  let brokers: string[];
  const stages: Stage[] = [];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  afterEach(async () => {
    for (const stage of stages.splice(0)) {
      if (stage.child.exitCode === null && stage.child.signalCode === null) stage.child.kill('SIGKILL');
    }
  });

  it('SIGTERM: a stage in its group, and one still joining (a killed member not yet dropped), each exit 0 within the drain timeout with no ERROR lines', async () => {
    const prefix = `service-${randomUUID().slice(0, 8)}`;
    const drainMs = 3000;
    const args = ['--brokers', brokers.join(','), '--prefix', prefix, '--drain-ms', String(drainMs), '--progress-ms', '0'];
    const groupId = `${prefix}.normalize`;
    const admin = testKafka(brokers).admin();
    await admin.connect();
    try {
      await run(process.execPath, [join(example, 'ingest.js'), ...args]);
      const [a, b] = [startStage('normalize', args), startStage('normalize', args)];
      stages.push(a, b);
      for (let i = 0; !(await caughtUp(brokers, groupId, `${prefix}.raw`)); i++) {
        if (i > 600) expect.fail('the group never committed the end of the raw topic');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const stable = async () => (await admin.describeGroups([groupId])).groups[0]!;
      for (let i = 0; (await stable()).state !== 'Stable' || (await stable()).members.length !== 2; i++) {
        if (i > 600) expect.fail(`the group never held both members: ${JSON.stringify(await stable())}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }

      // An orderly stop of a member of the group: it commits, leaves and exits.
      const stopped = await terminate(b);
      expect(stopped.code, b.output()).to.equal(0);
      expect(stopped.ms, 'ms from SIGTERM to exit').to.be.below(drainMs);
      expect(b.output()).to.match(/^normalize: \{/m);
      expect(b.output()).not.to.match(/ERROR|write after end|Crash/);

      // The other is killed: it stays a member until its session times out (10 s). A new
      // instance asks to join meanwhile, and the coordinator holds its join until then.
      for (let i = 0; (await stable()).state !== 'Stable' || (await stable()).members.length !== 1; i++) {
        if (i > 600) expect.fail(`the group never settled on one member: ${JSON.stringify(await stable())}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      a.child.kill('SIGKILL');
      await a.exited;
      const c = startStage('normalize', args);
      stages.push(c);
      for (let i = 0; (await stable()).state !== 'PreparingRebalance'; i++) {
        if (i > 300) expect.fail(`the new instance never asked to join: ${JSON.stringify(await stable())}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const joining = await terminate(c);
      expect(joining.code, c.output()).to.equal(0);
      expect(joining.ms, 'ms from SIGTERM to exit while joining').to.be.below(drainMs);
      expect(c.output()).to.match(/^normalize: \{/m);
      expect(c.output()).not.to.match(/ERROR|write after end|Crash/);
    } finally {
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
