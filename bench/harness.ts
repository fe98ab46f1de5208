/**
 * What every benchmark shares: where files go, the machine it ran on, memory sampling,
 * and running a measurement in a child process of its own (so its RSS is its own, and so
 * each embedded ClickHouse gets the one data directory a process may hold).
 */
import { execFileSync, fork } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

/** bench/ in the source tree: compiled code runs from dist/bench. */
export const benchDir = basename(dirname(__dirname)) === 'dist' ? resolve(__dirname, '../../bench') : __dirname;
export const dataDir = join(benchDir, 'data');
export const resultsDir = join(benchDir, 'results');

/** The project's test Redis, where its script starts it (REDIS_PORT), as the tests find it. */
export const TEST_REDIS_URL = `redis://127.0.0.1:${process.env.REDIS_PORT ?? 16379}`;

/** Installs and starts the test Redis with the project's script (both steps idempotent). */
export function startTestRedis(): void {
  const script = join(benchDir, '..', 'scripts', 'services', 'redis.sh');
  execFileSync('bash', [script, 'install'], { stdio: 'ignore' });
  execFileSync('bash', [script, 'start'], { stdio: 'ignore' });
}

export interface Machine {
  cpus: string;
  cores: number;
  memGb: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  const list = cpus();
  return {
    cpus: list[0]?.model.trim() ?? 'unknown',
    cores: list.length,
    memGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

export const MB = 1024 * 1024;

export interface MemoryPeaks {
  /** Highest `process.memoryUsage().rss` seen by the sampler, MiB. */
  peakRssMb: number;
  /** Highest V8 `heapUsed` seen by the sampler, MiB. */
  peakHeapMb: number;
  /** The kernel's high-water mark of the process (`resourceUsage().maxRSS`), MiB. */
  maxRssMb: number;
  /** Highest RSS in each second since the sampler started, MiB: growth or a plateau. */
  rssTimelineMb: number[];
  samples: number;
}

/** Samples RSS and V8 heap every `everyMs` until stopped. */
export function sampleMemory(everyMs = 100): { stop(): MemoryPeaks } {
  const started = performance.now();
  const timeline: number[] = [];
  let rss = 0;
  let heap = 0;
  let samples = 0;
  const sample = () => {
    const usage = process.memoryUsage();
    if (usage.rss > rss) rss = usage.rss;
    if (usage.heapUsed > heap) heap = usage.heapUsed;
    const second = Math.floor((performance.now() - started) / 1000);
    timeline[second] = Math.max(timeline[second] ?? 0, usage.rss);
    samples++;
  };
  sample();
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    stop() {
      sample();
      clearInterval(timer);
      return {
        peakRssMb: round(rss / MB, 1),
        peakHeapMb: round(heap / MB, 1),
        maxRssMb: round((process.resourceUsage().maxRSS * 1024) / MB, 1),
        // A second with no sample (a long synchronous stretch) carries the one before.
        rssTimelineMb: Array.from(timeline, (v, i) => round((v ?? timeline[i - 1] ?? 0) / MB, 0)),
        samples,
      };
    },
  };
}

export interface Timed<R> {
  result: R;
  seconds: number;
  /** CPU time of the whole process (all threads, user + system) over `seconds`: cores kept busy. */
  cores: number;
  /** Share of the time the main thread was running JS or native calls, not waiting (0..1). */
  eventLoopBusy: number;
  /**
   * Cores the rest of the machine kept busy meanwhile (all CPUs' busy time minus this
   * process's): above ~0.2 on a 2-core machine, something else competed with the run.
   */
  othersCores: number;
}

/** Busy milliseconds of all CPUs together since boot. */
export function machineBusyMs(): number {
  let busy = 0;
  for (const { times } of cpus()) busy += times.user + times.nice + times.sys + times.irq;
  return busy;
}

/**
 * CPU milliseconds of this process and of its children that have ended (Linux, from
 * /proc/self/stat; the process alone elsewhere): what a benchmark run itself used.
 */
export function ownAndChildrenCpuMs(): number {
  const self = process.cpuUsage();
  // cutime and cstime (fields 16 and 17); not Linux: children's CPU is not counted.
  const fields = statFields('/proc/self/stat');
  const children = fields ? ticksMs(fields[13]) + ticksMs(fields[14]) : 0;
  return (self.user + self.system) / 1000 + children;
}

/**
 * The fields of a /proc `stat` file after the command name (state, field 3, first; the
 * name may hold spaces and parentheses); undefined where it cannot be read (not Linux, the
 * process or thread gone).
 */
function statFields(path: string): string[] | undefined {
  try {
    return readFileSync(path, 'utf8').replace(/^.*\) /, '').split(' ');
  } catch {
    return undefined;
  }
}

/** A count of clock ticks (100 a second) in a stat field, as milliseconds. */
const ticksMs = (field: string | undefined) => (Number(field) || 0) * 10;

/**
 * CPU milliseconds (utime + stime, fields 14 and 15) a /proc `stat` file gives: a process's
 * `/proc/<pid>/stat`, a thread's `/proc/self/task/<tid>/stat`; undefined where it cannot be read.
 */
export function statCpuMs(path: string): number | undefined {
  const fields = statFields(path);
  return fields && ticksMs(fields[11]) + ticksMs(fields[12]);
}

/**
 * CPU milliseconds this process's main (JS) thread has run: from its schedstat (nanoseconds)
 * where Linux keeps one, else its stat (10 ms ticks); undefined where neither can be read.
 */
export function mainThreadCpuMs(): number | undefined {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return statCpuMs(`/proc/self/task/${process.pid}/stat`);
  }
}

/**
 * Times `work`: wall clock, CPU of the process, and how busy the event loop was. `helpers`
 * are processes doing the work with it (a ClickHouse server it inserts into): their CPU
 * over the run is the run's own, not a disturbance, so it is left out of `othersCores`.
 */
export async function timed<R>(work: () => Promise<R>, helpers: readonly number[] = []): Promise<Timed<R>> {
  const helpersCpuMs = () => helpers.reduce((sum, pid) => sum + (processCpuMs(pid) ?? 0), 0);
  const machine = machineBusyMs();
  const helped = helpersCpuMs();
  const cpu = process.cpuUsage();
  const loop = performance.eventLoopUtilization();
  const started = performance.now();
  const result = await work();
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  const cores = (used.user + used.system) / 1e6 / seconds;
  const machineCores = (machineBusyMs() - machine) / 1000 / seconds;
  const helpersCores = (helpersCpuMs() - helped) / 1000 / seconds;
  return {
    result,
    seconds,
    cores: round(cores, 2),
    eventLoopBusy: round(performance.eventLoopUtilization(loop).utilization, 3),
    othersCores: round(Math.max(0, machineCores - cores - helpersCores), 2),
  };
}

/** CPU milliseconds process `pid` has used so far (Linux, from /proc); undefined elsewhere or once it is gone. */
export function processCpuMs(pid: number): number | undefined {
  return statCpuMs(`/proc/${pid}/stat`);
}

/**
 * The process listening on TCP `port` of the loopback or every address (Linux, from
 * /proc/net/tcp and the processes' open sockets); undefined when none can be seen.
 */
export function listenerPid(port: number): number | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines: string[];
    try {
      lines = readFileSync(table, 'utf8').split('\n').slice(1);
    } catch {
      continue;
    }
    for (const line of lines) {
      // sl, local address, remote address, state (0A: listening), …, inode (field 10).
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A' && fields[1]?.endsWith(`:${hexPort}`)) inodes.add(fields[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode !== undefined && inodes.has(inode)) return Number(pid);
    }
  }
  return undefined;
}

/** Cores the whole machine keeps busy over the next `ms`. */
export async function machineLoad(ms = 1000): Promise<number> {
  const busy = machineBusyMs();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (machineBusyMs() - busy) / (performance.now() - started);
}

/**
 * Waits until the machine is quiet (under `cores` busy over a second), at most `budget.ms`
 * in all: a shared budget, so a machine that stays busy delays the whole benchmark only
 * so long. Resolves with the load last seen.
 */
export async function quietMachine(cores: number, budget: { ms: number }): Promise<number> {
  for (;;) {
    const started = performance.now();
    const load = await machineLoad(1000);
    budget.ms -= performance.now() - started;
    if (load < cores || budget.ms <= 0) return load;
  }
}

export interface ChildOptions {
  /** Extra node flags for the child (`--cpu-prof`, `--max-old-space-size=…`). */
  execArgv?: string[];
  /** Kill the child after this long. @default 10 minutes */
  timeoutMs?: number;
}

/**
 * Runs `script args…` in a fresh Node process and resolves with the one message it
 * sends over IPC. The child's output is passed through; a child that exits without a
 * message, or with a non-zero code, rejects.
 */
export function runChild<R>(script: string, args: string[], options: ChildOptions = {}): Promise<R> {
  return new Promise<R>((resolvePromise, reject) => {
    const child = fork(script, args, {
      execArgv: options.execArgv ?? [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json',
    });
    let result: { ok: true; value: R } | { ok: false; error: string } | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args.join(' ')}: no answer after ${(options.timeoutMs ?? 600_000) / 1000} s, killed`));
    }, options.timeoutMs ?? 600_000);
    child.on('message', (message) => {
      result = message as typeof result;
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (result?.ok) resolvePromise(result.value);
      else if (result) reject(new Error(`${args.join(' ')}: ${result.error}`));
      else reject(new Error(`${args.join(' ')}: child exited with ${signal ?? code} and no result`));
    });
  });
}

/** The child's side of {@link runChild}: run `main`, send its result or error, exit. */
export function answerParent<R>(main: () => Promise<R>): void {
  main().then(
    (value) => process.send!({ ok: true, value }, () => process.exit(0)),
    (error: unknown) => {
      const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
      if (process.send) process.send({ ok: false, error: text }, () => process.exit(1));
      else {
        console.error(text);
        process.exit(1);
      }
    },
  );
}

/** The value at quantile `q` (0.5: the median, 0.99: p99) of `values`; 0 for none. */
/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0;
}

export function round(value: number, digits = 0): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** A plain-text table, columns padded to their widest cell. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  // Figures right, text left.
  const numeric = header.map((_, i) => rows.every((r) => typeof r[i] === 'number' || /^[\d,.–+-]+$/.test(String(r[i]))));
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}
