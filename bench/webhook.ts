/**
 * Webhook source under load on loopback: signed NDJSON requests from concurrent senders
 * for a fixed time, against fromWebhook → embedded ClickHouse, in a child process of its
 * own; then the same load against a bare node:http server that reads the body, checks the
 * same HMAC-SHA256 signature and answers 200 (the baseline: what HTTP and the signature
 * cost before tributary does anything). The senders run in this process.
 *
 * Checks: every request answered 2xx has all its records in ClickHouse (counted there after
 * the run), and nothing was refused but for backpressure (429/503).
 */
import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../connectors/clickhouse';
import { fromWebhook, signWebhook } from '../connectors/webhook';
import { AccessControl } from '../lib/access';
import type { Envelope } from '../lib/envelope';
import { Pipeline } from '../lib/pipeline';
import { MB, quietMachine, round, sampleMemory, timed, type MemoryPeaks } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'webhook';
const SECONDS = 30;
const SENDERS = 64;
const RECORDS_PER_REQUEST = 10;
const SECRET = 'bench-webhook-secret-0123456789abcdef';
/** A run is quiet when other processes kept at most this many cores busy meanwhile. */
const QUIET_CORES = 0.3;

/** What the server child reports when told to stop. */
interface ServerReport extends MemoryPeaks {
  /** Webhook id → records of it stored in ClickHouse (pipeline only). */
  stored?: Record<string, number>;
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

/** `SENDERS` keep-alive senders posting back to back for `SECONDS`. */
async function load(url: string, token: string): Promise<LoadFigures> {
  const agent = new Agent({ keepAlive: true, maxSockets: SENDERS });
  const target = new URL(`${url}/webhooks/acme`);
  const latencies: number[] = [];
  const okIds: string[] = [];
  const refused: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  const sender = async () => {
    while (performance.now() < deadline) {
      const id = `b-${++next}`;
      const payload = body(id);
      const headers = {
        'content-type': 'application/x-ndjson',
        authorization: `Bearer ${token}`,
        ...signWebhook(SECRET, id, Math.floor(Date.now() / 1000), payload),
      };
      const sent = performance.now();
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

function startServer(mode: 'pipeline' | 'baseline'): Promise<{ child: ChildProcess; url: string; token: string }> {
  const child = fork(__filename, [mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
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

interface Measured {
  load: LoadFigures;
  server: ServerReport;
  /** Cores other processes (neither the senders nor the server) kept busy during the load. */
  othersCores: number;
}

async function measure(mode: 'pipeline' | 'baseline', budget: { ms: number }): Promise<Measured> {
  const before = await quietMachine(QUIET_CORES, budget);
  if (before >= QUIET_CORES) console.log(`  (the machine stays busy: ${before.toFixed(2)} cores in use before the run; going on)`);
  const { child, url, token } = await startServer(mode);
  process.stdout.write(`  ${mode}: ${SENDERS} senders for ${SECONDS} s … `);
  const timing = await timed(() => load(url, token));
  const figures = timing.result;
  const server = await stopServer(child);
  const othersCores = round(Math.max(0, timing.othersCores - server.cores), 2);
  console.log(
    `${Math.round(figures.ok / figures.seconds).toLocaleString('en')} requests/s, p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, ` +
      `refused ${JSON.stringify(figures.refused)}, errors ${figures.errors}, peak RSS ${server.peakRssMb} MiB, others ${othersCores} cores`,
  );
  return { load: figures, server, othersCores };
}

const rate = (f: LoadFigures) => round(f.ok / f.seconds, 0);

/** The run at the median rate, among the quiet runs when there are any. */
function median(runs: Measured[]): { run: Measured; quiet: number; range: [number, number] } {
  const quiet = runs.filter((r) => r.othersCores <= QUIET_CORES);
  const pool = (quiet.length > 0 ? quiet : runs).slice().sort((a, b) => rate(a.load) - rate(b.load));
  return { run: pool[pool.length >> 1]!, quiet: quiet.length, range: [rate(pool[0]!.load), rate(pool[pool.length - 1]!.load)] };
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 1;
  const budget = { ms: 120_000 };
  const pipelines: Measured[] = [];
  const baselines: Measured[] = [];
  for (let i = 0; i < repeat; i++) {
    pipelines.push(await measure('pipeline', budget));
    baselines.push(await measure('baseline', budget));
  }
  const chosen = median(pipelines);
  const chosenBaseline = median(baselines);
  const pipeline = chosen.run;
  const baseline = chosenBaseline.run;
  let answered = 0;
  const missing: string[] = [];
  for (const m of pipelines) {
    const stored = m.server.stored ?? {};
    answered += m.load.ok;
    for (const id of m.load.okIds) if (stored[id] !== RECORDS_PER_REQUEST) missing.push(id);
  }
  const refused: Record<string, number> = {};
  let errors = 0;
  for (const m of pipelines) {
    errors += m.load.errors;
    for (const [status, n] of Object.entries(m.load.refused)) refused[status] = (refused[status] ?? 0) + n;
  }
  const refusedOther = Object.keys(refused).filter((status) => status !== '429' && status !== '503');
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
      name: 'every 2xx is stored',
      claim: `all ${RECORDS_PER_REQUEST} records of every request answered 2xx are in ClickHouse (every pipeline run)`,
      actual: `${answered - missing.length} of ${answered} requests complete${missing.length > 0 ? `; missing e.g. ${missing.slice(0, 3).join(', ')}` : ''}`,
      pass: missing.length === 0 && answered > 0,
    },
    {
      name: 'refusals are backpressure only',
      claim: 'no answer other than 2xx, 429 or 503; no connection errors',
      actual: `refused ${JSON.stringify(refused)}, errors ${errors}`,
      pass: refusedOther.length === 0 && errors === 0,
    },
  ];
  const result: BenchmarkResult & { latencyMs: Record<string, { p50: number; p99: number }> } = {
    name,
    unit: 'requests/s',
    value: rate(pipeline.load),
    baseline: { name: 'bare node:http server: body read + HMAC-SHA256 check + 200', value: rate(baseline.load) },
    ratio: round(rate(pipeline.load) / rate(baseline.load), 3),
    peakRssMb: Math.max(...pipelines.map((r) => r.server.peakRssMb)),
    peakHeapMb: Math.max(...pipelines.map((r) => r.server.peakHeapMb)),
    records: pipeline.load.ok * RECORDS_PER_REQUEST,
    bytes: pipeline.load.ok * body('b-000000').length,
    seconds: round(pipeline.load.seconds, 1),
    repeat,
    method: [
      `${SENDERS} keep-alive senders in the parent process post signed ${RECORDS_PER_REQUEST}-record NDJSON bodies (~${body('b-000000').length} B) back to back for ${SECONDS} s over loopback; the server runs in a child process.`,
      `${repeat} rounds of pipeline then baseline; the figures are those of the median run, among the runs during which other processes kept at most ${QUIET_CORES} cores busy when there are any.`,
      `Latency is from sending a request to its answer, of requests answered 2xx (median run): pipeline p50 ${pipeline.load.p50Ms} ms, p99 **${pipeline.load.p99Ms} ms**; baseline p50 ${baseline.load.p50Ms} ms, p99 ${baseline.load.p99Ms} ms.`,
      'The pipeline answers only once the records are in ClickHouse (batch maxWaitMs 10 ms): its latency includes the insert, the baseline\'s does not.',
      'rows/s in the table below counts records (10 per request); the headline counts requests.',
    ],
    settings: { senders: SENDERS, seconds: SECONDS, recordsPerRequest: RECORDS_PER_REQUEST, batch: { rows: 5000, maxWaitMs: 10 } },
    runs: [figures('fromWebhook → embedded ClickHouse', pipelines, chosen), figures('baseline: node:http + HMAC', baselines, chosenBaseline)],
    checks,
    latencyMs: { pipeline: { p50: pipeline.load.p50Ms, p99: pipeline.load.p99Ms }, baseline: { p50: baseline.load.p50Ms, p99: baseline.load.p99Ms } },
  };
  return result;
}

// ---------------------------------------------------------------------------------------
// The server children: listen, say where, serve until told to stop, report, exit

async function pipelineServer(): Promise<void> {
  const memory = sampleMemory(100);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-webhook-'));
  const clickhouse = embeddedClickHouse({ path: dir });
  await clickhouse.exec('CREATE TABLE bookings (webhook_id String, record UInt32, booking_id String, status String, amount Decimal(18, 2), currency String, updated_at DateTime64(3, \'UTC\')) ENGINE = MergeTree ORDER BY (webhook_id, record)');
  const key = AccessControl.issueKey('acme', ['acme']);
  const source = fromWebhook({
    port: 0,
    vendors: { acme: { secrets: [SECRET] } },
    access: new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [key.record] }),
  });
  const pipeline = new Pipeline({
    name: 'bench-webhook',
    source,
    transform: map((e: Envelope<any>) =>
      e.map({ webhook_id: e.meta.key, record: e.meta.record, booking_id: e.value.booking_id, status: e.value.status, amount: e.value.amount, currency: e.value.currency, updated_at: e.value.updated_at }),
    ),
    sink: toClickHouse({ client: clickhouse, table: 'bookings' }),
    deadLetters: toClickHouse({ client: clickhouse, table: 'bookings' }),
    batch: { rows: 5000, maxWaitMs: 10 },
  });
  await pipeline.start();
  const idleRssMb = round(process.memoryUsage().rss / MB, 1);
  const cpu = process.cpuUsage();
  const started = performance.now();
  process.send!({ url: await source.url(), token: key.token });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  const used = process.cpuUsage(cpu);
  const cores = round((used.user + used.system) / 1000 / (performance.now() - started), 2);
  await pipeline.stop();
  const rows = await clickhouse.query<{ webhook_id: string; n: string | number }>('SELECT webhook_id, count() AS n FROM bookings GROUP BY webhook_id');
  await clickhouse.close();
  rmSync(dir, { recursive: true, force: true });
  const report: ServerReport = { ...memory.stop(), idleRssMb, cores, stored: Object.fromEntries(rows.map((r) => [r.webhook_id, Number(r.n)])) };
  process.send!(report, () => process.exit(0));
}

async function baselineServer(): Promise<void> {
  const memory = sampleMemory(100);
  const secret = createSecretKey(Buffer.from(SECRET, 'utf8'));
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const id = String(req.headers['webhook-id']);
      const timestamp = String(req.headers['webhook-timestamp']);
      const presented = Buffer.from(String(req.headers['webhook-signature']).slice(3), 'base64');
      const expected = createHmac('sha256', secret).update(`${id}.${timestamp}.`).update(Buffer.concat(chunks)).digest();
      const ok = presented.length === expected.length && timingSafeEqual(presented, expected);
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(ok ? `{"id":${JSON.stringify(id)},"records":${RECORDS_PER_REQUEST}}` : '{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const idleRssMb = round(process.memoryUsage().rss / MB, 1);
  const cpu = process.cpuUsage();
  const started = performance.now();
  process.send!({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 'none' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  const used = process.cpuUsage(cpu);
  const cores = round((used.user + used.system) / 1000 / (performance.now() - started), 2);
  server.closeAllConnections();
  server.close();
  const report: ServerReport = { ...memory.stop(), idleRssMb, cores };
  process.send!(report, () => process.exit(0));
}

if (require.main === module) {
  const [mode] = process.argv.slice(2);
  if (mode !== 'pipeline' && mode !== 'baseline') {
    console.error('usage (run by bench/run): webhook.js pipeline|baseline');
    process.exit(2);
  }
  (mode === 'pipeline' ? pipelineServer() : baselineServer()).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}

export const benchmark: Benchmark = { name, run };
