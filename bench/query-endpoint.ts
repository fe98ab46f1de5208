/**
 * The analyst endpoint over embedded ClickHouse, in two claims.
 *
 * - Streaming: a 100M-row SELECT (RowBinary, 800 MB) read through the endpoint by curl,
 *   against chDB writing the same result to /dev/null itself (`INTO OUTFILE`), same
 *   process, same store, round by round. Peak RSS of the serving process against its
 *   RSS before the query.
 * - Readers do not stall ingestion: a pipeline writes rows into the same store as fast as
 *   it can, first alone, then while 4 analysts run ~5 s queries in a loop through the
 *   endpoint; the p99 of its sink writes in each phase.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedClickHouse, serveQueries, toClickHouse } from '../connectors/clickhouse';
import { fromIterable } from '../connectors/iterable';
import { Pipeline } from '../lib/pipeline';
import type { DeadLetter, Sink } from '../lib/sink';
import { MB, ownAndChildrenCpuMs, quantile, quietMachine, round, sampleMemory, table, timed } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

const name = 'query-endpoint';
const ROWS = 100_000_000;
const KEY = 'bench-analyst-key';
const ANALYSTS = 4;
const PHASE_MS = 20_000;
/** At most this long, in all, waiting for a quiet machine before the streaming rounds. */
const QUIET_BUDGET_MS = 60_000;

const nowhere: Sink<DeadLetter> = { name: 'nowhere', write: async () => undefined };

/** Reads `url` with curl into /dev/null; resolves with the bytes it received. */
function curl(url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '--fail-with-body', '-o', '/dev/null', '-w', '%{size_download}', '-H', 'X-ClickHouse-User: analyst', '-H', `X-ClickHouse-Key: ${KEY}`, '--data-binary', body, url]);
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`curl exited ${code}: ${out}`))));
  });
}

async function run(options: { repeat?: number } = {}): Promise<BenchmarkResult> {
  const repeat = options.repeat ?? 3;
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-endpoint-'));
  const store = embeddedClickHouse({ path: dir });
  const seconds = { endpoint: [] as number[], engine: [] as number[] };
  // CPU of the whole read (the engine's threads, the endpoint, curl) against the engine's own write: the cost of the path, less swayed by other load than the time.
  const cpuMs = { endpoint: [] as number[], engine: [] as number[] };
  const cores = { endpoint: [] as number[], engine: [] as number[] };
  let othersCores = 0;
  const quietBudget = { ms: QUIET_BUDGET_MS };
  let idleRss = 0;
  let peakRss = 0;
  let bytes = 0;
  const writes = { alone: [] as number[], readers: [] as number[] };
  const written = { alone: 0, readers: 0 };
  let analystQueries = 0;
  let analystSeconds = 0;
  try {
    await store.exec('CREATE TABLE bench_numbers (n UInt64) ENGINE = MergeTree ORDER BY n');
    await store.exec(`INSERT INTO bench_numbers SELECT number FROM numbers(${ROWS})`);
    await store.exec('CREATE TABLE bench_rows (id UInt64, vendor String, booking_id String, amount Decimal(18, 4), at DateTime) ENGINE = MergeTree ORDER BY id');
    // The streaming round reads with the engine's own thread count, as the baseline does;
    // the analysts below use the endpoint's defaults (one thread each).
    const streamer = await serveQueries({ client: store, users: { analyst: KEY }, port: 0, limits: { maxExecutionTimeS: 600, maxThreads: 2 } });
    const server = await serveQueries({ client: store, users: { analyst: KEY }, port: 0, limits: { maxExecutionTimeS: 600 } });
    try {
      const query = 'SELECT n FROM bench_numbers FORMAT RowBinary';
      for (let round = 0; round <= repeat; round++) {
        if (round > 0) await quietMachine(0.3, quietBudget);
        global.gc?.();
        const before = process.memoryUsage().rss;
        const memory = sampleMemory(50);
        let cpu = ownAndChildrenCpuMs();
        const viaEndpoint = await timed(() => curl(`${streamer.url}/`, query));
        const endpointCpuMs = ownAndChildrenCpuMs() - cpu;
        const peaks = memory.stop();
        bytes = viaEndpoint.result;
        if (bytes !== ROWS * 8) throw new Error(`the endpoint sent ${bytes} bytes for ${ROWS} UInt64 rows`);
        cpu = ownAndChildrenCpuMs();
        const byEngine = await timed(() => store.exec("SELECT n FROM bench_numbers INTO OUTFILE '/dev/null' TRUNCATE FORMAT RowBinary SETTINGS max_threads = 2"));
        const engineCpuMs = ownAndChildrenCpuMs() - cpu;
        if (round === 0) continue; // warm-up
        seconds.endpoint.push(viaEndpoint.seconds);
        seconds.engine.push(byEngine.seconds);
        cpuMs.endpoint.push(endpointCpuMs);
        cpuMs.engine.push(engineCpuMs);
        cores.endpoint.push(viaEndpoint.cores);
        cores.engine.push(byEngine.cores);
        othersCores = Math.max(othersCores, viaEndpoint.othersCores, byEngine.othersCores);
        idleRss = Math.max(idleRss, before);
        peakRss = Math.max(peakRss, peaks.peakRssMb * MB - before + idleRss);
      }

      // How many rows one analyst query reads in about 5 s at one thread.
      let span = 20_000_000;
      const probe = async (rows: number) => {
        const started = performance.now();
        await curl(`${server.url}/`, `SELECT sum(cityHash64(n, n * 3, n * 7)) FROM bench_numbers WHERE n < ${rows}`);
        return (performance.now() - started) / 1000;
      };
      span = Math.min(ROWS, Math.max(1_000_000, Math.round((span * 5) / (await probe(span)))));

      const phase = async (key: 'alone' | 'readers', readers: number) => {
        let producing = true;
        async function* bookings() {
          for (let id = 0; producing; id++) yield { id, vendor: 'skyway', booking_id: `B${id}`, amount: '12.50', at: '2026-03-01 10:00:00' };
        }
        const pipeline = new Pipeline({ source: fromIterable(bookings()), sink: toClickHouse({ client: store, table: 'bench_rows' }), deadLetters: nowhere, batch: { rows: 20_000, maxWaitMs: 1000 } });
        pipeline.on('sink.write', ({ payload }) => {
          if (!payload.error) writes[key].push(payload.durationMs);
        });
        let reading = readers > 0;
        const loops = Array.from({ length: readers }, async () => {
          while (reading) {
            const started = performance.now();
            await curl(`${server.url}/`, `SELECT sum(cityHash64(n, n * 3, n * 7)) FROM bench_numbers WHERE n < ${span}`);
            analystQueries++;
            analystSeconds += (performance.now() - started) / 1000;
          }
        });
        await pipeline.start();
        await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
        producing = false;
        reading = false;
        const stats = await pipeline.finished();
        await Promise.all(loops);
        written[key] = stats.written;
      };
      await phase('alone', 0);
      await phase('readers', ANALYSTS);
    } finally {
      await server.close();
      await streamer.close();
    }
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => quantile(xs, 0.5);
  const roundRatios = seconds.engine.map((engine, i) => round(engine / seconds.endpoint[i]!, 3));
  const ratio = median(roundRatios);
  const cpuRatio = round(median(cpuMs.endpoint.map((endpoint, i) => endpoint / cpuMs.engine[i]!)), 2);
  const overIdleMb = round((peakRss - idleRss) / MB, 1);
  const aloneP99 = quantile(writes.alone, 0.99);
  const readersP99 = quantile(writes.readers, 0.99);
  const figures = (label: string, rows: number, s: number): RunFigures => ({ label, records: rows, mb: round(bytes / MB), seconds: round(s, 2), rowsPerSecond: round(rows / s), repeats: repeat, peakRssMb: round(peakRss / MB, 1), maxRssMb: round(peakRss / MB, 1), idleRssMb: round(idleRss / MB, 1), peakHeapMb: 0 });
  const runs: RunFigures[] = [
    { ...figures(`100M-row SELECT through the endpoint (RowBinary, curl): ${cpuRatio}x the engine's CPU`, ROWS, median(seconds.endpoint)), cores: round(median(cores.endpoint), 2), othersCores },
    { ...figures('chDB writing the same result to /dev/null', ROWS, median(seconds.engine)), cores: round(median(cores.engine), 2), othersCores },
    figures(`pipeline alone: sink write p99 ${round(aloneP99)} ms`, written.alone, PHASE_MS / 1000),
    figures(`pipeline with ${ANALYSTS} analysts (${analystQueries} queries, ${round(analystSeconds / Math.max(1, analystQueries), 1)} s each): sink write p99 ${round(readersP99)} ms`, written.readers, PHASE_MS / 1000),
  ];
  const checks: Check[] = [
    { name: 'streamed result vs the engine alone', claim: '≥ 0.5 × chDB writing the result to /dev/null', actual: ratio.toFixed(3), pass: ratio >= 0.5 },
    { name: 'memory while streaming 100M rows', claim: 'peak RSS ≤ 100 MB above idle', actual: `${overIdleMb} MB`, pass: overIdleMb <= 100 },
    { name: 'sink write p99 with 4 analysts', claim: '≤ 2 × the p99 with none (goal)', actual: `${round(readersP99)} vs ${round(aloneP99)} ms (${(readersP99 / aloneP99).toFixed(2)}×)`, pass: readersP99 <= 2 * aloneP99 },
  ];
  console.log(table(['run', 'rows', 'rows/s', 's'], runs.map((r) => [r.label, r.records.toLocaleString('en'), r.rowsPerSecond.toLocaleString('en'), r.seconds])));
  console.log(`ratio per round: ${roundRatios.join(', ')}; CPU per round, endpoint vs engine (ms): ${cpuMs.endpoint.map((ms, i) => `${round(ms)}/${round(cpuMs.engine[i]!)}`).join(', ')}; other processes kept up to ${othersCores} cores busy`);
  return {
    name,
    unit: 'rows/s',
    value: round(ROWS / median(seconds.endpoint)),
    baseline: { name: 'chDB writing the same result to /dev/null', value: round(ROWS / median(seconds.engine)) },
    ratio: round(ratio, 3),
    peakRssMb: round(peakRss / MB, 1),
    peakHeapMb: 0,
    records: ROWS,
    bytes,
    seconds: round(seconds.endpoint.reduce((a, b) => a + b, 0), 1),
    repeat,
    method: [
      `Streaming: ${ROWS.toLocaleString('en')} UInt64 rows as RowBinary read by curl into /dev/null, against the engine's own INTO OUTFILE '/dev/null' of the same query in the same process, both at max_threads 2; ratio = median of per-round ratios after a warm-up round (each round waits, ${QUIET_BUDGET_MS / 1000} s at most in all, for the machine to fall under 0.3 busy cores); peak RSS sampled every 50 ms against the RSS just before the query; CPU = the process's and curl's, endpoint over engine, median of the rounds.`,
      `Ingestion under readers: a pipeline writes 20k-row batches into the same store for ${PHASE_MS / 1000} s alone, then ${PHASE_MS / 1000} s while ${ANALYSTS} analysts loop a ~5 s scan through the endpoint with its defaults (one thread each, two queries at a time with libuv's default pool of 4, the others queued); p99 of sink write durations.`,
    ],
    settings: { analysts: ANALYSTS, phaseMs: PHASE_MS, analystRows: 'calibrated to ~5 s', roundRatios, cpuRatio, othersCores },
    runs,
    checks,
  };
}

export const benchmark: Benchmark = { name, run };
