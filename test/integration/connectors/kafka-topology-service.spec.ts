import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { GroupDescription } from 'kafkajs';
import { samplesDir } from '../../../examples/bookings/paths';
import { tempDir, until } from '../../helpers';
import { caughtUp, testKafka } from '../../kafka';
import { metricValue, parseMetrics, type Sample } from '../../metricsText';
import { ensureKafka } from '../../services';

const run = promisify(execFile);
const example = join(__dirname, '..', '..', '..', 'examples', 'kafka-topology');

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

/** The URL a stage serves its metrics at, from the line it prints once listening. */
async function metricsUrl(stage: Stage): Promise<string> {
  await until(() => /^metrics: (\S+)\/metrics$/m.test(stage.output()), 30_000, `the metrics line of ${stage.output()}`);
  return /^metrics: (\S+)\/metrics$/m.exec(stage.output())![1]!;
}

async function scrape(url: string): Promise<Sample[]> {
  return parseMetrics(await (await fetch(`${url}/metrics`)).text());
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
      /** Polls the group every `everyMs` until `reached` holds, at most `tries` times; fails saying `what` and the group's last state. */
      const groupReaches = async (reached: (group: GroupDescription) => boolean, what: string, tries: number, everyMs: number) => {
        for (let i = 0; ; i++) {
          const group = (await admin.describeGroups([groupId])).groups[0]!;
          if (reached(group)) return;
          if (i >= tries) expect.fail(`${what}: ${JSON.stringify(group)}`);
          await new Promise((resolve) => setTimeout(resolve, everyMs));
        }
      };
      await groupReaches((g) => g.state === 'Stable' && g.members.length === 2, 'the group never held both members', 600, 100);

      // An orderly stop of a member of the group: it commits, leaves and exits.
      const stopped = await terminate(b);
      expect(stopped.code, b.output()).to.equal(0);
      expect(stopped.ms, 'ms from SIGTERM to exit').to.be.below(drainMs);
      expect(b.output()).to.match(/^normalize: \{/m);
      expect(b.output()).not.to.match(/ERROR|write after end|Crash/);

      // The other is killed: it stays a member until its session times out (10 s). A new
      // instance asks to join meanwhile, and the coordinator holds its join until then.
      await groupReaches((g) => g.state === 'Stable' && g.members.length === 1, 'the group never settled on one member', 600, 100);
      // The survivor went through two rebalances (b joining, b leaving): ordinary, no ERROR.
      expect(a.output()).not.to.match(/ERROR/);
      a.child.kill('SIGKILL');
      await a.exited;
      const c = startStage('normalize', args);
      stages.push(c);
      await groupReaches((g) => g.state === 'PreparingRebalance', 'the new instance never asked to join', 300, 50);
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

  it('each stage serves /metrics, /health and /ready while it runs, and prints progress lines with its counts and lag', async () => {
    const prefix = `observed-${randomUUID().slice(0, 8)}`;
    const work = tempDir();
    const args = ['--brokers', brokers.join(','), '--prefix', prefix, '--metrics-port', '0', '--progress-ms', '200', '--drain-ms', '10000'];
    // Enough records that ingestion is still running when it is scraped.
    const lines = readSample();
    mkdirSync(join(work.path, 'staylodge'));
    writeFileSync(join(work.path, 'staylodge', 'many.ndjson'), Array.from({ length: 20_000 }, (_, i) => lines[i % lines.length]).join('\n') + '\n');
    const admin = testKafka(brokers).admin();
    await admin.connect();
    try {
      const ingest = startStage('ingest', [...args, join(work.path, 'staylodge')]);
      stages.push(ingest);
      const ingestUrl = await metricsUrl(ingest);
      const ingestRead = async () => metricValue(await scrape(ingestUrl), 'tributary_records_total', { pipeline: 'ingest', stage: 'source', outcome: 'in' }) ?? 0;
      for (let i = 0; (await ingestRead()) === 0; i++) {
        if (i > 300) expect.fail(`ingest never counted a record: ${ingest.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect((await fetch(`${ingestUrl}/health`)).status).to.equal(200);
      expect((await fetch(`${ingestUrl}/ready`)).status).to.equal(200);
      // A line every 200 ms while it runs: on a quiet machine the first record is counted
      // sooner than that after the start, so wait for one rather than stop before it.
      for (let i = 0; !/^ingest progress: /m.test(ingest.output()); i++) {
        if (i > 250) expect.fail(`ingest printed no progress line in 5 s: ${ingest.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const ingested = await terminate(ingest);
      expect(ingested.code, ingest.output()).to.equal(0);
      expect(ingest.output()).to.match(/^ingest progress: \{"read":\d+/m);

      const normalize = startStage('normalize', args);
      const store = startStage('store', [...args, '--clickhouse-path', join(work.path, 'chdb')]);
      stages.push(normalize, store);
      for (const [stage, pipelines, topic] of [
        [normalize, ['normalize'], `${prefix}.raw`],
        [store, ['store', 'store-dead'], `${prefix}.clean`],
      ] as const) {
        const url = await metricsUrl(stage);
        for (let i = 0; ; i++) {
          const samples = await scrape(url);
          const written = metricValue(samples, 'tributary_records_total', { pipeline: pipelines[0], stage: 'sink', outcome: 'written' }) ?? 0;
          const lag = samples.filter((m) => m.name === 'tributary_consumer_lag' && m.labels.pipeline === pipelines[0] && m.labels.topic === topic);
          if (written > 0 && lag.length === 6 && (await fetch(`${url}/ready`)).status === 200) break;
          if (i > 600) expect.fail(`${pipelines[0]}: nothing written, no lag on every partition, or not ready: ${stage.output()}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const samples = await scrape(url);
        for (const pipeline of pipelines) expect(metricValue(samples, 'tributary_ready', { pipeline }), `${pipeline} ready`).to.equal(1);
        expect((await fetch(`${url}/health`)).status).to.equal(200);
        await until(() => new RegExp(`^${pipelines[0]} progress: \\{.*"lag":\\d+,"partitions":6,"ready":true`, 'm').test(stage.output()), 10_000, `a progress line of ${pipelines[0]} with its lag`);
      }
      for (const stage of [normalize, store]) {
        const stopped = await terminate(stage);
        expect(stopped.code, stage.output()).to.equal(0);
        expect(stage.output()).not.to.match(/ERROR/);
      }
    } finally {
      work.remove();
      await admin.deleteTopics({ topics: ['raw', 'clean', 'dead'].map((t) => `${prefix}.${t}`) }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});

function readSample(): string[] {
  return readFileSync(join(samplesDir, 'staylodge', 'reservations.ndjson'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');
}
