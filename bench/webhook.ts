/**
 * Webhook source under load on loopback: signed NDJSON requests from concurrent senders,
 * against fromWebhook → embedded ClickHouse and against a hand-written durable handler (the
 * baseline: node:http, HMAC-SHA256 check, NDJSON parse, map, grouped insert into the same
 * table, 200 after the insert), each in a child process of its own, in paired rounds of
 * short slices alternating between the two. Then a soak: the pipeline with the senders at
 * full speed for twice its tolerance window (shortened from 300 s in proportion), its replay
 * store's size sampled every second. Between the two, one slice against a bare server that
 * answers 200 without storing anything: the ceiling the machine sets. The senders run in this
 * process.
 *
 * Checks: the pipeline's median requests/s at least the handler's and its median p99 at
 * most the handler's; every request answered 2xx has all its records in ClickHouse (counted
 * there after the run), nothing was refused but for backpressure (429/503), and in the soak
 * nothing at all was refused and the replay store's memory stayed flat once the window was
 * full. */
import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, createServer, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse, type ClickHouseClient } from '../connectors/clickhouse';
import { fromWebhook, MemoryReplayStore, signWebhook } from '../connectors/webhook';
import { AccessControl } from '../lib/security/access';
import type { Envelope } from '../lib/envelope';
import { Pipeline } from '../lib/pipeline';
import { formatAllocations, sampleAllocations } from './allocations';
import { mainThreadCpuMs, MB, quietMachine, round, sampleMemory, timed, type MemoryPeaks } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'webhook';
/** Each side's slice of a round: short slices, many of them, pair better on a shared machine than long runs. */
const SECONDS = 4;
/** Paired rounds by default (`--repeat=N` sets them). */
const ROUNDS = 6;
/** A slice of load each server gets before the rounds, not counted: the JIT warms up. */
const WARM_UP_SECONDS = 2;
/** The paced rounds' rate: this share of the slower side's median rate, so that both keep up. */
const PACED_SHARE = 0.5;
const SENDERS = 64;
const RECORDS_PER_REQUEST = 10;
const SECRET = 'bench-webhook-secret-0123456789abcdef';
/** The soak: senders at full speed for this long, against a tolerance window of SOAK_WINDOW s (10 min against 300 s, shortened in proportion to fit the suite's 15 minutes). */
const SOAK_SECONDS = 40;
const SOAK_WINDOW = 20;
/** What the soak's replay store is sized for: above what two cores serve. */
const SOAK_PEAK_RATE = 10_000;
const BATCH = { rows: 5000, maxWaitMs: 10 };
/** A run is quiet when other processes kept at most this many cores busy meanwhile. */
const QUIET_CORES = 0.3;

/** What the server child reports when told to stop. */
interface ServerReport extends MemoryPeaks {
  /** Webhook id → records of it stored in ClickHouse. */
  stored?: Record<string, number>;
  /** Soak: each second, the replay store's ids held inside the window and its bytes, and the requests accepted so far. */
  replay?: { ids: number; bytes: number; accepted: number }[];
  idleRssMb: number;
  cores: number;
}

interface LoadFigures {
  ok: number;
  refused: Record<string, number>;
  errors: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  okIds: string[];
}

function body(id: string): string {
  let text = '';
  for (let i = 1; i <= RECORDS_PER_REQUEST; i++) {
    text += `{"booking_id":"${id}-${i}","vendor":"acme","status":"confirmed","amount":"${i}99.50","currency":"EUR","updated_at":"2026-03-01T10:00:00Z"}\n`;
  }
  return text;
}

/**
 * `SENDERS` keep-alive senders posting back to back for `forSeconds`; with `perSecond`, paced
 * to that many requests per second in all, each request's latency counted from when it was
 * due (so a server that falls behind is not flattered by requests sent late).
 */
async function load(url: string, token: string, forSeconds = SECONDS, perSecond?: number): Promise<LoadFigures> {
  const agent = new Agent({ keepAlive: true, maxSockets: SENDERS });
  const target = new URL(`${url}/webhooks/acme`);
  const latencies: number[] = [];
  const okIds: string[] = [];
  const refused: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const run = Math.random().toString(36).slice(2, 8);
  const started = performance.now();
  const deadline = started + forSeconds * 1000;
  const sender = async () => {
    while (performance.now() < deadline) {
      const n = ++next;
      const due = perSecond === undefined ? undefined : started + (n * 1000) / perSecond;
      if (due !== undefined) {
        if (due >= deadline) break;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      const id = `b-${run}-${n}`;
      const payload = body(id);
      const headers = {
        'content-type': 'application/x-ndjson',
        authorization: `Bearer ${token}`,
        ...signWebhook(SECRET, id, Math.floor(Date.now() / 1000), payload),
      };
      const sent = due ?? performance.now();
      const status = await new Promise<number>((resolve) => {
        const req = request(target, { method: 'POST', agent, headers }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        req.on('error', () => resolve(0));
        req.end(payload);
      });
      if (status >= 200 && status < 300) {
        latencies.push(performance.now() - sent);
        okIds.push(id);
      } else if (status === 0) errors++;
      else {
        refused[status] = (refused[status] ?? 0) + 1;
        // Backpressure: wait as a vendor honouring Retry-After would (shortened).
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  await Promise.all(Array.from({ length: SENDERS }, sender));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pick = (q: number) => round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0, 1);
  return { ok: okIds.length, refused, errors, seconds, p50Ms: pick(0.5), p99Ms: pick(0.99), okIds };
}

type Mode = 'pipeline' | 'handler' | 'soak' | 'bare';

function startServer(mode: Mode, execArgv: string[] = []): Promise<{ child: ChildProcess; url: string; token: string }> {
  const child = fork(__filename, [mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json', execArgv: [...process.execArgv, ...execArgv] });
  return new Promise((resolve, reject) => {
    child.once('message', (message: { url: string; token: string }) => resolve({ child, ...message }));
    child.once('exit', (code) => reject(new Error(`${mode} server exited with ${code} before listening`)));
  });
}

function stopServer(child: ChildProcess): Promise<ServerReport> {
  return new Promise((resolve, reject) => {
    child.once('message', (message: ServerReport) => resolve(message));
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before reporting`)));
    child.send('stop');
  });
}

/** What a server child has done so far: CPU microseconds (all threads), bytes allocated on its JS heap, time in garbage collection, inserts into ClickHouse and the engine's merges (each insert makes a part, which merges rewrite); with its event loop's longest delay since the last ask. */
interface ServerCounters {
  cpuMicros: number;
  /** Of it, the main (JS) thread's: 0 where the system does not say (it is read from Linux's /proc). */
  jsThreadMicros: number;
  allocatedBytes: number;
  gcMs: number;
  inserts: number;
  rows: number;
  /** Milliseconds the engine spent merging parts (its MergeTotalMilliseconds). */
  mergeMs: number;
  /** Time inside inserts, and of it the engine's delays for too many parts. */
  insertMs: number;
  delayedMs: number;
  loopMaxMs: number;
}

function countersOf(child: ChildProcess): Promise<ServerCounters> {
  return new Promise((resolve) => {
    child.once('message', (message: ServerCounters) => resolve(message));
    child.send('cpu');
  });
}

interface Measured {
  load: LoadFigures;
  server: ServerReport;
  /** Cores other processes (neither the senders nor the server) kept busy during the load. */
  othersCores: number;
  /** The senders' process: cores it kept busy, and the share of the time its event loop was busy (near 1: the senders, not the server, set the pace). */
  senders: { cores: number; eventLoopBusy: number };
  /** Inserts into ClickHouse during the slice and the rows they held (paired rounds only). */
  inserts?: { count: number; rows: number; mergeMs: number };
  /** The server's JS heap during the slice: KiB allocated per request answered 2xx, and milliseconds of garbage collection (paired rounds only). */
  heap?: { kibPerRequest: number; gcMs: number };
  /** CPU microseconds per request answered 2xx of the server's main thread alone (paired rounds only; 0 where it cannot be read). */
  jsThreadMicrosPerRequest?: number;
}

async function measure(mode: Mode, budget: { ms: number }): Promise<Measured> {
  const before = await quietMachine(QUIET_CORES, budget);
  if (before >= QUIET_CORES) console.log(`  (the machine stays busy: ${before.toFixed(2)} cores in use before the run; going on)`);
  const { child, url, token } = await startServer(mode);
  const seconds = mode === 'soak' ? SOAK_SECONDS : SECONDS;
  process.stdout.write(`  ${mode.padEnd(8)}: ${SENDERS} senders for ${seconds} s … `);
  const timing = await timed(() => load(url, token, seconds));
  const figures = timing.result;
  const server = await stopServer(child);
  const othersCores = round(Math.max(0, timing.othersCores - server.cores), 2);
  const senders = { cores: timing.cores, eventLoopBusy: timing.eventLoopBusy };
  console.log(
    `${Math.round(figures.ok / figures.seconds).toLocaleString('en')} requests/s, p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, ` +
      `refused ${JSON.stringify(figures.refused)}, errors ${figures.errors}, server ${server.cores} cores, senders ${senders.cores} cores (loop ${Math.round(senders.eventLoopBusy * 100)}% busy), others ${othersCores} cores, peak RSS ${server.peakRssMb} MiB`,
  );
  return { load: figures, server, othersCores, senders };
}

/**
 * Paired rounds against both servers, started once and side by side (the one not under load
 * idles): in each round one slice of `SECONDS` against each, the order alternating, after
 * a warm-up slice each that is not counted. Slices of a few seconds pair better on a shared
 * machine than runs of minutes: whatever else runs changes less between the two halves of a
 * round. Each slice is a `Measured` whose `server` is its side's report with the slice's own
 * cores (from the child's CPU time before and after it).
 *
 * First `rounds` rounds at full speed (each side's own rate); then `pacedRounds` rounds (as
 * many: a p99 is noisier than a rate, and its median needs as many pairs) with the senders
 * paced to one rate for both, `PACED_SHARE` of the slower side's median: latency
 * compared at the same load, where a faster server is not penalised for taking more load
 * (with a fixed number of senders, a server that answers faster gets more requests, so its
 * inserts are larger and take longer).
 */
async function paired(rounds: number, budget: { ms: number }, pacedRounds = rounds): Promise<{ pipelines: Measured[]; baselines: Measured[]; paced: { perSecond: number; pipelines: Measured[]; baselines: Measured[] } }> {
  const before = await quietMachine(QUIET_CORES, budget);
  if (before >= QUIET_CORES) console.log(`  (the machine stays busy: ${before.toFixed(2)} cores in use before the rounds; going on)`);
  const servers = { pipeline: await startServer('pipeline'), handler: await startServer('handler') };
  for (const mode of ['pipeline', 'handler'] as const) await load(servers[mode].url, servers[mode].token, WARM_UP_SECONDS);
  type Slice = Omit<Measured, 'server'> & { cores: number };
  const runRounds = async (count: number, perSecond?: number): Promise<Record<'pipeline' | 'handler', Slice[]>> => {
    const slices: Record<'pipeline' | 'handler', Slice[]> = { pipeline: [], handler: [] };
    for (let i = 0; i < count; i++) {
      const order = i % 2 === 0 ? (['pipeline', 'handler'] as const) : (['handler', 'pipeline'] as const);
      const line: string[] = [];
      for (const mode of order) {
        const { child, url, token } = servers[mode];
        const before = await countersOf(child);
        const timing = await timed(() => load(url, token, SECONDS, perSecond));
        const after = await countersOf(child);
        const serverCores = round(after.cpuMicros - before.cpuMicros, 0) / 1e6 / timing.seconds;
        const inserts = after.inserts - before.inserts;
        const figures = timing.result;
        const othersCores = round(Math.max(0, timing.othersCores - serverCores), 2);
        const served = Math.max(1, figures.ok);
        const heap = { kibPerRequest: round((after.allocatedBytes - before.allocatedBytes) / served / 1024, 1), gcMs: Math.round(after.gcMs - before.gcMs) };
        const jsThreadMicrosPerRequest = Math.round((after.jsThreadMicros - before.jsThreadMicros) / served);
        slices[mode].push({ load: figures, othersCores, senders: { cores: timing.cores, eventLoopBusy: timing.eventLoopBusy }, cores: round(serverCores, 2), inserts: { count: inserts, rows: after.rows - before.rows, mergeMs: after.mergeMs - before.mergeMs }, heap, jsThreadMicrosPerRequest });
        line.push(`${mode} ${rate(figures).toLocaleString('en')}/s p99 ${figures.p99Ms} ms (server ${round(serverCores, 2)}, ${Math.round((after.cpuMicros - before.cpuMicros) / served)} µs (JS thread ${jsThreadMicrosPerRequest}) and ${heap.kibPerRequest} KiB allocated per request, GC ${heap.gcMs} ms, ${inserts} inserts of ${Math.round((after.rows - before.rows) / Math.max(1, inserts))} rows, merges ${after.mergeMs - before.mergeMs} ms, ${round(after.insertMs - before.insertMs, 0)} ms in inserts (${after.delayedMs - before.delayedMs} delayed for parts), loop delay max ${after.loopMaxMs} ms; senders ${timing.cores} cores, loop ${Math.round(timing.eventLoopBusy * 100)}%, others ${othersCores}${Object.keys(figures.refused).length + figures.errors > 0 ? `, refused ${JSON.stringify(figures.refused)}, errors ${figures.errors}` : ''})`);
      }
      console.log(`  ${perSecond === undefined ? 'round' : 'paced'} ${String(i + 1).padStart(2)}: ${line.join('; ')}`);
    }
    return slices;
  };
  const full = await runRounds(rounds);
  const slower = Math.min(middle(full.pipeline.map((m) => rate(m.load))), middle(full.handler.map((m) => rate(m.load))));
  const perSecond = Math.max(100, Math.round((slower * PACED_SHARE) / 100) * 100);
  console.log(`  then paced: both sides at ${perSecond.toLocaleString('en')} requests/s`);
  const paced = await runRounds(pacedRounds, perSecond);
  const reports = { pipeline: await stopServer(servers.pipeline.child), handler: await stopServer(servers.handler.child) };
  const side = (slices: Slice[], mode: 'pipeline' | 'handler'): Measured[] => slices.map(({ cores, ...m }) => ({ ...m, server: { ...reports[mode], cores } }));
  return { pipelines: side(full.pipeline, 'pipeline'), baselines: side(full.handler, 'handler'), paced: { perSecond, pipelines: side(paced.pipeline, 'pipeline'), baselines: side(paced.handler, 'handler') } };
}

const rate = (f: LoadFigures) => round(f.ok / f.seconds, 0);

/** The run at the median rate. */
function median(runs: Measured[]): { run: Measured; quiet: number; range: [number, number] } {
  const quiet = runs.filter((r) => r.othersCores <= QUIET_CORES);
  const pool = runs.slice().sort((a, b) => rate(a.load) - rate(b.load));
  return { run: pool[pool.length >> 1]!, quiet: quiet.length, range: [rate(pool[0]!.load), rate(pool[pool.length - 1]!.load)] };
}

/** The middle value (the mean of the two middle ones for an even count). */
function middle(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const half = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[half]! : (sorted[half - 1]! + sorted[half]!) / 2;
}

/** Every 2xx of these runs has all its records stored: the ids answered and those missing. */
function completeness(runs: Measured[]): { answered: number; missing: string[] } {
  let answered = 0;
  const missing: string[] = [];
  for (const m of runs) {
    const stored = m.server.stored ?? {};
    answered += m.load.ok;
    for (const id of m.load.okIds) if (stored[id] !== RECORDS_PER_REQUEST) missing.push(id);
  }
  return { answered, missing };
}

function refusals(runs: Measured[]): { refused: Record<string, number>; errors: number } {
  const refused: Record<string, number> = {};
  let errors = 0;
  for (const m of runs) {
    errors += m.load.errors;
    for (const [status, n] of Object.entries(m.load.refused)) refused[status] = (refused[status] ?? 0) + n;
  }
  return { refused, errors };
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? ROUNDS;
  // Waiting for a quiet machine is bounded: the rounds are paired, and the suite has 15 minutes.
  const budget = { ms: 10_000 };
  const { pipelines, baselines, paced } = await paired(repeat, budget);
  const rounds = pipelines.map((p, i) => {
    const h = baselines[i]!;
    return { round: i + 1, pipeline: rate(p.load), handler: rate(h.load), ratio: round(rate(p.load) / rate(h.load), 3), pipelineP99Ms: p.load.p99Ms, handlerP99Ms: h.load.p99Ms, pipelineCores: p.server.cores, handlerCores: h.server.cores, sendersCores: [p.senders.cores, h.senders.cores], othersCores: [p.othersCores, h.othersCores] };
  });
  const medians = {
    pipeline: round(middle(rounds.map((r) => r.pipeline)), 0),
    handler: round(middle(rounds.map((r) => r.handler)), 0),
    pipelineP99Ms: round(middle(rounds.map((r) => r.pipelineP99Ms)), 1),
    handlerP99Ms: round(middle(rounds.map((r) => r.handlerP99Ms)), 1),
    ratioOfRounds: round(middle(rounds.map((r) => r.ratio)), 3),
    pacedPipelineP99Ms: round(middle(paced.pipelines.map((m) => m.load.p99Ms)), 1),
    pacedHandlerP99Ms: round(middle(paced.baselines.map((m) => m.load.p99Ms)), 1),
    pacedPipelineP50Ms: round(middle(paced.pipelines.map((m) => m.load.p50Ms)), 1),
    pacedHandlerP50Ms: round(middle(paced.baselines.map((m) => m.load.p50Ms)), 1),
  };
  const ratio = round(medians.pipeline / medians.handler, 3);
  console.log(`  medians over ${repeat} rounds: pipeline ${medians.pipeline.toLocaleString('en')} requests/s (p99 ${medians.pipelineP99Ms} ms), handler ${medians.handler.toLocaleString('en')} requests/s (p99 ${medians.handlerP99Ms} ms); ratio of medians ${ratio}, median of the rounds' ratios ${medians.ratioOfRounds}; paced at ${paced.perSecond.toLocaleString('en')} requests/s, p99 pipeline ${medians.pacedPipelineP99Ms} ms, handler ${medians.pacedHandlerP99Ms} ms`);
  // What the machine serves when nothing is stored: the ceiling any durable server works under.
  const bare = await measure('bare', budget);
  const soak = await measure('soak', budget);
  const chosen = median(pipelines);
  const chosenBaseline = median(baselines);
  const pipeline = chosen.run;
  const baseline = chosenBaseline.run;
  const stored = completeness([...pipelines, ...paced.pipelines]);
  const storedByHandler = completeness([...baselines, ...paced.baselines]);
  const storedInSoak = completeness([soak]);
  const { refused, errors } = refusals([...pipelines, ...paced.pipelines]);
  const soakRefusals = refusals([soak]);
  const refusedOther = Object.keys(refused).filter((status) => status !== '429' && status !== '503');
  // Once the window is full, the store holds only the ids of its last window: an id lives
  // until its timestamp (whole seconds) + the window + 1 s, so those accepted in the last
  // SOAK_WINDOW + 3 s bound it. The table's size then follows the rate, not the run's length.
  const replay = soak.server.replay ?? [];
  const held = SOAK_WINDOW + 3;
  const full = replay.slice(held);
  const overheld = full.filter((r, i) => r.ids > r.accepted - replay[i]!.accepted);
  const bytesAfterFull = new Set(full.map((r) => r.bytes));
  const idsAfterFull = full.map((r) => r.ids);
  // The table doubles at half full and never shrinks: it is sized by the most ids it has held.
  // While it doubles both tables are held (60 bytes a slot of the old one: 120 per id then).
  let peakIds = 0;
  const perPeakId = replay.map((r) => {
    peakIds = Math.max(peakIds, r.ids);
    return r.bytes / Math.max(1, peakIds);
  });
  const mostPerPeakId = Math.max(0, ...perPeakId);
  const soakRate = rate(soak.load);
  const cpuPerRequest = (m: Measured) => round((m.server.cores * m.load.seconds * 1e6) / m.load.ok, 0);
  const medianCpuPerRequest = (runs: Measured[]) => round(middle(runs.map(cpuPerRequest)), 0);
  const medianJsThread = (runs: Measured[]) => round(middle(runs.map((m) => m.jsThreadMicrosPerRequest ?? 0)), 0);
  const heapOf = (runs: Measured[]) => `${round(middle(runs.map((m) => m.heap?.kibPerRequest ?? 0)), 1)} KiB per request, ${round(middle(runs.map((m) => m.heap?.gcMs ?? 0)), 0)} ms of GC per slice`;
  const insertsOf = (runs: Measured[]) => `${round(middle(runs.map((m) => (m.inserts?.count ?? 0) / m.load.seconds)), 0)}/s of ${round(middle(runs.map((m) => (m.inserts?.rows ?? 0) / Math.max(1, m.inserts?.count ?? 0))), 0)} rows, merging ${round(middle(runs.map((m) => (m.inserts?.mergeMs ?? 0) / m.load.seconds)), 0)} ms a second`;
  const sendersBusiest = Math.max(...[...pipelines, ...baselines].map((m) => m.senders.eventLoopBusy));
  const figures = (label: string, runs: Measured[], picked: ReturnType<typeof median>): RunFigures => {
    const m = picked.run;
    return {
      label,
      records: m.load.ok * RECORDS_PER_REQUEST,
      mb: round((m.load.ok * body('b-000000').length) / MB, 1),
      seconds: round(m.load.seconds, 1),
      rowsPerSecond: round((m.load.ok * RECORDS_PER_REQUEST) / m.load.seconds, 0),
      rowsPerSecondRange: [picked.range[0] * RECORDS_PER_REQUEST, picked.range[1] * RECORDS_PER_REQUEST],
      repeats: runs.length,
      quietRepeats: picked.quiet,
      peakRssMb: Math.max(...runs.map((r) => r.server.peakRssMb)),
      maxRssMb: Math.max(...runs.map((r) => r.server.maxRssMb)),
      idleRssMb: m.server.idleRssMb,
      peakHeapMb: Math.max(...runs.map((r) => r.server.peakHeapMb)),
      cores: m.server.cores,
      othersCores: Math.max(...runs.map((r) => r.othersCores)),
    };
  };
  const checks: Check[] = [
    {
      name: 'a quarter of a bare server',
      goal: true,
      claim: 'median requests/s at least 0.25 × a bare node:http server that reads each body and answers 200 without checking or storing anything (same senders, one slice after the rounds)',
      actual: `${medians.pipeline.toLocaleString('en')} vs ${rate(bare.load).toLocaleString('en')} requests/s (${round(medians.pipeline / rate(bare.load), 3)}×)`,
      pass: medians.pipeline >= 0.25 * rate(bare.load),
    },
    {
      name: 'as fast as the hand-written handler',
      goal: true,
      claim: `median requests/s over ${repeat} paired rounds at least the hand-written durable handler's`,
      actual: `${medians.pipeline.toLocaleString('en')} vs ${medians.handler.toLocaleString('en')} requests/s (${ratio}×; rounds: ${rounds.map((r) => r.ratio).join(', ')})`,
      pass: ratio >= 1,
    },
    {
      name: 'p99 no worse than the hand-written handler',
      goal: true,
      claim: `median over ${repeat} paired rounds of each round's p99 at most the hand-written durable handler's`,
      actual: `${medians.pipelineP99Ms} vs ${medians.handlerP99Ms} ms (rounds: ${rounds.map((r) => `${r.pipelineP99Ms}/${r.handlerP99Ms}`).join(', ')})`,
      pass: medians.pipelineP99Ms <= medians.handlerP99Ms,
    },
    {
      name: 'CPU per request no more than the handler',
      goal: true,
      claim: `median over ${repeat} paired rounds of each round's server CPU (all threads, user + system) per request answered at most the hand-written durable handler's`,
      actual: `${medianCpuPerRequest(pipelines)} vs ${medianCpuPerRequest(baselines)} µs (main thread ${medianJsThread(pipelines)} vs ${medianJsThread(baselines)}; paced: ${medianCpuPerRequest(paced.pipelines)} vs ${medianCpuPerRequest(paced.baselines)})`,
      pass: medianCpuPerRequest(pipelines) <= medianCpuPerRequest(baselines),
    },
    {
      name: 'p99 at the same rate no worse than the handler',
      goal: true,
      claim: `both sides paced to the same ${paced.perSecond.toLocaleString('en')} requests/s (${PACED_SHARE} of the slower side's median) for ${paced.pipelines.length} paired rounds: median of each round's p99 at most the handler's`,
      actual: `${medians.pacedPipelineP99Ms} vs ${medians.pacedHandlerP99Ms} ms (rounds: ${paced.pipelines.map((m, i) => `${m.load.p99Ms}/${paced.baselines[i]!.load.p99Ms}`).join(', ')})`,
      pass: medians.pacedPipelineP99Ms <= medians.pacedHandlerP99Ms,
    },
    {
      name: 'every 2xx is stored',
      claim: `all ${RECORDS_PER_REQUEST} records of every request answered 2xx are in ClickHouse (every pipeline run)`,
      actual: `${stored.answered - stored.missing.length} of ${stored.answered} requests complete${stored.missing.length > 0 ? `; missing e.g. ${stored.missing.slice(0, 3).join(', ')}` : ''}`,
      pass: stored.missing.length === 0 && stored.answered > 0,
    },
    {
      name: 'the baseline is durable too',
      claim: `all ${RECORDS_PER_REQUEST} records of every request the hand-written handler answered 200 are in ClickHouse`,
      actual: `${storedByHandler.answered - storedByHandler.missing.length} of ${storedByHandler.answered} requests complete`,
      pass: storedByHandler.missing.length === 0 && storedByHandler.answered > 0,
    },
    {
      name: 'refusals are backpressure only',
      claim: 'no answer other than 2xx, 429 or 503; no connection errors',
      actual: `refused ${JSON.stringify(refused)}, errors ${errors}`,
      pass: refusedOther.length === 0 && errors === 0,
    },
    {
      name: 'soak: nothing refused, every 2xx stored',
      claim: `${SENDERS} senders at full speed for ${SOAK_SECONDS} s against a ${SOAK_WINDOW} s tolerance window: 0 refusals, every 2xx in ClickHouse`,
      actual: `${soak.load.ok.toLocaleString('en')} requests (${soakRate.toLocaleString('en')}/s), refused ${JSON.stringify(soakRefusals.refused)}, errors ${soakRefusals.errors}, ${storedInSoak.missing.length} incomplete`,
      pass: soak.load.ok > 0 && Object.keys(soakRefusals.refused).length === 0 && soakRefusals.errors === 0 && storedInSoak.missing.length === 0,
    },
    {
      name: 'soak: replay store memory follows the window',
      claim: `from ${held} s on, the replay store holds no more ids than were accepted in the last ${held} s, in at most 120 bytes per id of the most it has held so far (the table never shrinks; 120 while it doubles and both tables are held, 80 once moved)`,
      actual:
        full.length === 0
          ? 'no samples'
          : `${[...bytesAfterFull].map((b) => `${round(b / MB, 1)} MiB`).join(', ')} for ${Math.min(...idsAfterFull).toLocaleString('en')}–${Math.max(...idsAfterFull).toLocaleString('en')} ids held; ${overheld.length} samples held more than the window's ids; at most ${round(mostPerPeakId, 1)} bytes per id of the most held so far, ${round(perPeakId[perPeakId.length - 1] ?? 0, 1)} at the end`,
      pass: full.length > 0 && overheld.length === 0 && mostPerPeakId <= 120,
    },
  ];
  const result: BenchmarkResult & { latencyMs: Record<string, { p50: number; p99: number }>; cpuMicrosecondsPerRequest: Record<string, number>; rounds: typeof rounds; soak: unknown } = {
    name,
    unit: 'requests/s',
    value: medians.pipeline,
    baseline: { name: 'hand-written durable handler: node:http + HMAC-SHA256 + NDJSON parse + map + grouped insert, 200 after the insert', value: medians.handler },
    ratio,
    peakRssMb: Math.max(...pipelines.map((r) => r.server.peakRssMb)),
    peakHeapMb: Math.max(...pipelines.map((r) => r.server.peakHeapMb)),
    records: pipeline.load.ok * RECORDS_PER_REQUEST,
    bytes: pipeline.load.ok * body('b-000000').length,
    seconds: round(pipeline.load.seconds, 1),
    repeat,
    method: [
      `${SENDERS} keep-alive senders in the parent process post signed ${RECORDS_PER_REQUEST}-record NDJSON bodies (~${body('b-000000').length} B) back to back over loopback; the server runs in a child process. The same senders, with the same concurrency, load both sides.`,
      `The baseline is a hand-written durable handler in the same kind of child: it checks the HMAC, parses the NDJSON, maps each record to a row, groups rows (${BATCH.rows} rows or ${BATCH.maxWaitMs} ms, two inserts at a time) into one JSONEachRow insert into the same embedded ClickHouse table, and answers 200 once that insert is done. The pipeline has the same batch settings and also answers only once the insert is done; its senders wait, so it inserts what it has as soon as no insert is under way, the last started ${BATCH.maxWaitMs} ms ago and either ended ${BATCH.maxWaitMs / 2} ms ago or the first record waiting came ${BATCH.maxWaitMs} ms ago (while the median of the last five took longer than ${BATCH.maxWaitMs} ms: the last ended ${BATCH.maxWaitMs / 2} ms ago, however long the first waited; one at a time: the default for a source that awaitsWrites), and while one is, what comes meanwhile joins the next. The handler checks no API key, timestamp or replay.`,
      `${repeat} paired rounds against both servers, started once and side by side (the one not under load idles), after a ${WARM_UP_SECONDS} s warm-up each; in each round a ${SECONDS} s slice against each, alternating which goes first; the headline figures are the medians over the rounds of each side's requests/s, the ratio is the ratio of those medians (the median of each round's own ratio: ${medians.ratioOfRounds}). Per round (pipeline/handler requests/s, p99 ms): ${rounds.map((r) => `${r.pipeline}/${r.handler} (${r.pipelineP99Ms}/${r.handlerP99Ms})`).join('; ')}.`,
      `Latency is from sending a request to its answer, of requests answered 2xx; median of the rounds' p99: pipeline **${medians.pipelineP99Ms} ms**, handler ${medians.handlerP99Ms} ms (median-rate run's p50: pipeline ${pipeline.load.p50Ms} ms, handler ${baseline.load.p50Ms} ms).`,
      `Then ${paced.pipelines.length} paired rounds with the senders paced to the same ${paced.perSecond.toLocaleString('en')} requests/s for both (${PACED_SHARE} of the slower side's median; latency from when each request was due): median p50/p99 pipeline ${medians.pacedPipelineP50Ms}/**${medians.pacedPipelineP99Ms} ms**, handler ${medians.pacedHandlerP50Ms}/${medians.pacedHandlerP99Ms} ms. At full speed a side that answers faster gets more requests from the fixed senders, so its inserts grow and its p99 is taken at a higher load; the paced rounds compare latency at the same load.`,
      `CPU per request (server process, all threads, user + system; median of the rounds): pipeline ${medianCpuPerRequest(pipelines)} µs, handler ${medianCpuPerRequest(baselines)} µs, of which the main (JS) thread's pipeline ${medianJsThread(pipelines)} µs, handler ${medianJsThread(baselines)} µs, the rest other threads' (the engine's inserts and merges, V8's collector helpers); inserts into ClickHouse (median of the rounds): pipeline ${insertsOf(pipelines)}, handler ${insertsOf(baselines)}; allocated on the server's JS heap (median of the rounds): pipeline ${heapOf(pipelines)}, handler ${heapOf(baselines)}. The senders' event loop was at most ${Math.round(sendersBusiest * 100)}% busy in any round.`,
      `Soak: the pipeline with toleranceSeconds ${SOAK_WINDOW} (10 min against 300 s, shortened in proportion) and a replay store sized for ${SOAK_PEAK_RATE.toLocaleString('en')} requests/s, ${SENDERS} senders at full speed for ${SOAK_SECONDS} s: ${soakRate.toLocaleString('en')} requests/s, p99 ${soak.load.p99Ms} ms, peak RSS ${soak.server.peakRssMb} MiB; replay store each 5 s (ids held / MiB): ${replay.filter((_, i) => i % 5 === 4).map((r) => `${r.ids.toLocaleString('en')}/${round(r.bytes / MB, 1)}`).join(', ')}.`,
      'rows/s in the table below counts records (10 per request); the headline counts requests.',
      ...(chosen.quiet < pipelines.length || chosenBaseline.quiet < baselines.length
        ? [`The machine was shared: other processes kept up to ${Math.max(...[...pipelines, ...baselines, soak].map((m) => m.othersCores))} cores (of ${cpus().length}) busy during these runs, so the rates are pessimistic; the pairing keeps the ratio fairer than either rate.`]
        : []),
    ],
    settings: { senders: SENDERS, seconds: SECONDS, rounds: repeat, pacedRounds: paced.pipelines.length, pacedRequestsPerSecond: paced.perSecond, recordsPerRequest: RECORDS_PER_REQUEST, batch: BATCH, soak: { seconds: SOAK_SECONDS, toleranceSeconds: SOAK_WINDOW, peakRequestsPerSecond: SOAK_PEAK_RATE } },
    runs: [figures('fromWebhook → embedded ClickHouse', pipelines, chosen), figures('hand-written durable handler', baselines, chosenBaseline), figures('bare server: answers 200, stores nothing', [bare], { run: bare, quiet: bare.othersCores <= QUIET_CORES ? 1 : 0, range: [rate(bare.load), rate(bare.load)] }), figures(`soak (${SOAK_SECONDS} s, ${SOAK_WINDOW} s window)`, [soak], { run: soak, quiet: soak.othersCores <= QUIET_CORES ? 1 : 0, range: [soakRate, soakRate] })],
    checks,
    latencyMs: { pipeline: { p50: pipeline.load.p50Ms, p99: medians.pipelineP99Ms }, baseline: { p50: baseline.load.p50Ms, p99: medians.handlerP99Ms }, pacedPipeline: { p50: medians.pacedPipelineP50Ms, p99: medians.pacedPipelineP99Ms }, pacedBaseline: { p50: medians.pacedHandlerP50Ms, p99: medians.pacedHandlerP99Ms }, soak: { p50: soak.load.p50Ms, p99: soak.load.p99Ms } },
    cpuMicrosecondsPerRequest: { pipeline: medianCpuPerRequest(pipelines), baseline: medianCpuPerRequest(baselines), pipelineJsThread: medianJsThread(pipelines), baselineJsThread: medianJsThread(baselines) },
    rounds,
    soak: { requestsPerSecond: soakRate, replay },
  };
  return result;
}

/**
 * CPU profiles of the pipeline child and of the handler child under the same load, written
 * into `dir` as pipeline.cpuprofile and handler.cpuprofile; then, in runs of their own (the
 * sampler costs time), where each allocates per request answered, after a warm-up.
 */
async function profile(dir: string): Promise<void> {
  for (const mode of ['pipeline', 'handler'] as const) {
    const { child, url, token } = await startServer(mode, ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${mode}.cpuprofile`]);
    const before = await countersOf(child);
    const figures = await load(url, token, 20);
    const cpu = (await countersOf(child)).cpuMicros - before.cpuMicros;
    await stopServer(child);
    await new Promise((resolve) => child.once('exit', resolve));
    console.log(`${mode} under profile: ${Math.round(figures.ok / figures.seconds)} requests/s, p99 ${figures.p99Ms} ms, server CPU ${Math.round(cpu / figures.ok)} µs per request`);
  }
  for (const mode of ['pipeline', 'handler'] as const) {
    const { child, url, token } = await startServer(mode);
    await load(url, token, WARM_UP_SECONDS);
    const file = join(dir, `${mode}.heapprofile`);
    await new Promise<void>((resolve) => {
      child.once('message', () => resolve());
      child.send({ allocations: file });
    });
    const figures = await load(url, token, 10);
    await stopServer(child);
    await new Promise((resolve) => child.once('exit', resolve));
    console.log(`\n${mode}, ${figures.ok.toLocaleString('en')} requests answered 2xx: ${file}\n${formatAllocations(file, figures.ok, 'request', 20)}`);
  }
}

/**
 * Bytes allocated on the JS heap and milliseconds spent collecting it, so far: each
 * collection adds what was in use before it less what the one before left, and the
 * heap in use now is added to what the last one left.
 */
function heapCounters(): () => { allocatedBytes: number; gcMs: number } {
  let profiler = new GCProfiler();
  profiler.start();
  let allocated = 0;
  let gcMs = 0;
  let left = getHeapStatistics().used_heap_size;
  return () => {
    for (const gc of profiler.stop()?.statistics ?? []) {
      allocated += gc.beforeGC.heapStatistics.usedHeapSize - left;
      left = gc.afterGC.heapStatistics.usedHeapSize;
      gcMs += gc.cost / 1000;
    }
    profiler = new GCProfiler();
    profiler.start();
    return { allocatedBytes: allocated + getHeapStatistics().used_heap_size - left, gcMs };
  };
}

// ---------------------------------------------------------------------------------------
// The server children: listen, say where, serve until told to stop, report, exit

/** The table both servers insert into (embedded-stalls inserts into it too). */
export const TABLE = "CREATE TABLE bookings (webhook_id String, record UInt32, booking_id String, status String, amount Decimal(18, 2), currency String, updated_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY (webhook_id, record)";

/** Serves with `serve` until the parent says stop; then reports memory, CPU and what the table holds (with a store: the bare server has none). */
async function serveUntilStopped(store: { clickhouse: ClickHouseClient; dir: string } | undefined, serve: () => Promise<{ url: string; token: string; stop(): Promise<void>; extra?: () => Partial<ServerReport> }>): Promise<void> {
  const memory = sampleMemory(100);
  await store?.clickhouse.exec(TABLE);
  const serving = await serve();
  const idleRssMb = round(process.memoryUsage().rss / MB, 1);
  const cpu = process.cpuUsage();
  const started = performance.now();
  process.send!({ url: serving.url, token: serving.token });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const heap = heapCounters();
  let allocations: { file: string; sampling: Promise<(file: string) => Promise<void>> } | undefined;
  // 'cpu' asks for the counters so far (the parent measures each slice of load); `{ allocations: file }`
  // starts sampling allocations, written to that file at the stop; anything else stops.
  await new Promise<void>((resolve) => {
    const onMessage = (message: unknown) => {
      const asked = (message as { allocations?: unknown } | null)?.allocations;
      if (typeof asked === 'string') {
        allocations = { file: asked, sampling: sampleAllocations() };
        void allocations.sampling.then(() => process.send!('sampling'));
        return;
      }
      if (message === 'cpu') {
        const usage = process.cpuUsage();
        const jsThreadMicros = (mainThreadCpuMs() ?? 0) * 1000;
        const loopMaxMs = round(loop.max / 1e6, 1);
        loop.reset();
        const engine = store ? store.clickhouse.query<{ event: string; value: string }>("SELECT event, value FROM system.events WHERE event IN ('InsertQuery', 'InsertedRows', 'MergeTotalMilliseconds', 'DelayedInsertsMilliseconds', 'InsertQueryTimeMicroseconds')") : Promise.resolve([]);
        void engine
          // The engine's counters or, if they cannot be read, none: the CPU figure still goes.
          .catch(() => [])
          .then((events) => {
            const count = (name: string) => Number(events.find((e) => e.event === name)?.value ?? 0);
            process.send!({ cpuMicros: usage.user + usage.system, jsThreadMicros, ...heap(), inserts: count('InsertQuery'), rows: count('InsertedRows'), mergeMs: count('MergeTotalMilliseconds'), insertMs: count('InsertQueryTimeMicroseconds') / 1000, delayedMs: count('DelayedInsertsMilliseconds'), loopMaxMs } satisfies ServerCounters);
          });
        return;
      }
      process.off('message', onMessage);
      resolve();
    };
    process.on('message', onMessage);
  });
  const used = process.cpuUsage(cpu);
  const cores = round((used.user + used.system) / 1000 / (performance.now() - started), 2);
  if (allocations) await (await allocations.sampling)(allocations.file);
  await serving.stop();
  const report: ServerReport = { ...memory.stop(), idleRssMb, cores, ...serving.extra?.() };
  if (store) {
    const rows = await store.clickhouse.query<{ webhook_id: string; n: string | number }>('SELECT webhook_id, count() AS n FROM bookings GROUP BY webhook_id');
    await store.clickhouse.close();
    rmSync(store.dir, { recursive: true, force: true });
    report.stored = Object.fromEntries(rows.map((r) => [r.webhook_id, Number(r.n)]));
  }
  process.send!(report, () => process.exit(0));
}

async function pipelineServer(soak: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-webhook-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  await serveUntilStopped({ clickhouse, dir }, async () => {
    const key = AccessControl.issueKey('acme', ['acme']);
    const replay = soak ? new MemoryReplayStore({ peakRequestsPerSecond: SOAK_PEAK_RATE, toleranceSeconds: SOAK_WINDOW }) : undefined;
    const source = fromWebhook({
      port: 0,
      vendors: { acme: { secrets: [SECRET] } },
      access: new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [key.record] }),
      ...(replay ? { replay, toleranceSeconds: SOAK_WINDOW } : {}),
    });
    const pipeline = new Pipeline({
      name: 'bench-webhook',
      source,
      transform: map((e: Envelope<any>) =>
        e.map({ webhook_id: e.meta.key, record: e.meta.record, booking_id: e.value.booking_id, status: e.value.status, amount: e.value.amount, currency: e.value.currency, updated_at: e.value.updated_at }),
      ),
      sink: toClickHouse({ client: clickhouse, table: 'bookings' }),
      deadLetters: toClickHouse({ client: clickhouse, table: 'bookings' }),
      batch: BATCH,
    });
    await pipeline.start();
    const samples: { ids: number; bytes: number; accepted: number }[] = [];
    // fill() sweeps out expired ids first: the count is of ids inside the window.
    const sampler = replay ? setInterval(() => samples.push({ ids: Math.round(replay.fill() * replay.maxEntries), bytes: replay.bytes, accepted: source.stats.accepted }), 1000) : undefined;
    return {
      url: await source.url(),
      token: key.token,
      stop: async () => {
        clearInterval(sampler);
        await pipeline.stop();
      },
      extra: () => (replay ? { replay: samples } : {}),
    };
  });
}

/** The hand-written peer: what a careful engineer writes for one vendor without the library. */
async function handlerServer(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-webhook-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  await serveUntilStopped({ clickhouse, dir }, async () => {
    const secret = createSecretKey(Buffer.from(SECRET, 'utf8'));
    let group: { lines: string[]; rows: number; answers: { res: ServerResponse; id: string }[] } = { lines: [], rows: 0, answers: [] };
    let timer: NodeJS.Timeout | undefined;
    let inserting = 0;
    const flush = () => {
      clearTimeout(timer);
      timer = undefined;
      if (group.rows === 0 || inserting >= 2) return;
      const { lines, answers } = group;
      group = { lines: [], rows: 0, answers: [] };
      inserting++;
      clickhouse.insert('bookings', Buffer.from(lines.join('')), {}).then(
        () => {
          for (const { res, id } of answers) res.writeHead(200, { 'content-type': 'application/json' }).end(`{"id":${JSON.stringify(id)},"records":${RECORDS_PER_REQUEST}}`);
        },
        () => {
          for (const { res } of answers) res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end('{}');
        },
      ).finally(() => {
        inserting--;
        if (group.rows >= BATCH.rows) flush();
        else if (group.rows > 0) timer ??= setTimeout(flush, BATCH.maxWaitMs);
      });
    };
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const id = String(req.headers['webhook-id']);
        const timestamp = String(req.headers['webhook-timestamp']);
        const payload = Buffer.concat(chunks);
        const presented = Buffer.from(String(req.headers['webhook-signature']).slice(3), 'base64');
        const expected = createHmac('sha256', secret).update(`${id}.${timestamp}.`).update(payload).digest();
        if (!(presented.length === expected.length && timingSafeEqual(presented, expected))) return void res.writeHead(401).end();
        let record = 0;
        for (const line of payload.toString('utf8').split('\n')) {
          if (line === '') continue;
          const v = JSON.parse(line) as Record<string, string>;
          group.lines.push(JSON.stringify({ webhook_id: id, record: ++record, booking_id: v.booking_id, status: v.status, amount: v.amount, currency: v.currency, updated_at: v.updated_at }) + '\n');
        }
        group.rows += record;
        group.answers.push({ res, id });
        if (group.rows >= BATCH.rows) flush();
        else timer ??= setTimeout(flush, BATCH.maxWaitMs);
      });
    });
    return {
      url: await listenOnLoopback(server),
      token: 'none',
      stop: async () => {
        server.close();
        while (group.rows > 0 || inserting > 0) {
          flush();
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        server.closeAllConnections();
      },
    };
  });
}

/** Listens on a free loopback port; resolves with the server's URL. */
async function listenOnLoopback(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The ceiling: reads each body and answers 200, nothing checked or stored. */
async function bareServer(): Promise<void> {
  await serveUntilStopped(undefined, async () => {
    const server = createServer((req, res) => {
      req.on('data', () => {});
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    return {
      url: await listenOnLoopback(server),
      token: 'none',
      stop: async () => {
        server.close();
        server.closeAllConnections();
      },
    };
  });
}

if (require.main === module) {
  const [mode] = process.argv.slice(2);
  if (mode !== 'pipeline' && mode !== 'handler' && mode !== 'soak' && mode !== 'bare') {
    console.error('usage (run by bench/run): webhook.js pipeline|handler|soak|bare');
    process.exit(2);
  }
  (mode === 'handler' ? handlerServer() : mode === 'bare' ? bareServer() : pipelineServer(mode === 'soak')).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}

export const benchmark: Benchmark = { name, run, profile };

/** The paired rounds alone, without the soak. */
export { paired };
