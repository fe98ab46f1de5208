import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The repository root: the nearest folder up from here that holds scripts/services. */
function repoRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'scripts', 'services', 'redis.sh'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find scripts/services/redis.sh above the test directory');
    dir = parent;
  }
  return dir;
}

function run(script: string, command: string, env?: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('bash', [join(repoRoot(), 'scripts', 'services', script), command], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024, ...(env && { env: { ...process.env, ...env } }) }, (error, stdout, stderr) => {
      if (error) reject(new Error(`scripts/services/${script} ${command} failed (${error.code ?? error.signal}):\n${stdout}${stderr}`));
      else resolve();
    });
  });
}

/** Whether `script status` finds its service running (exit 0); stopped is 3, unhealthy 1. */
function isRunning(script: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('bash', [join(repoRoot(), 'scripts', 'services', script), 'status'], { timeout: 60_000 }, (error) => resolve(!error));
  });
}

/** Services this test process started (not found running): stopped once the run ends. */
const startedHere = new Set<string>();

/** Starts a service, remembering it when it was not already running (someone else's stays theirs). */
async function start(script: string): Promise<void> {
  if (!(await isRunning(script))) startedHere.add(script);
  await run(script, 'start');
}

/**
 * Stops every service this process started, unless `TRIBUTARY_KEEP_SERVICES` is set (to
 * keep them for the next run). Services that were already running are left alone.
 */
export async function stopServicesStartedHere(): Promise<string[]> {
  if (process.env.TRIBUTARY_KEEP_SERVICES) return [];
  const stopped: string[] = [];
  for (const script of startedHere) {
    await run(script, 'stop');
    stopped.push(script);
  }
  startedHere.clear();
  return stopped;
}

/** For starts done synchronously elsewhere (the ClickHouse server helper). */
export function noteStarted(script: string): void {
  startedHere.add(script);
}

let redis: Promise<string> | undefined;

/**
 * Installs (Debian's redis-server, once) and starts the test Redis on loopback, and
 * resolves with its URL. Both steps are idempotent; a Redis that cannot be started fails
 * the test with the script's output. Call it from a mocha `before` hook with a long timeout.
 */
export function ensureRedis(): Promise<string> {
  redis ??= (async () => {
    await run('redis.sh', 'install');
    await start('redis.sh');
    return `redis://127.0.0.1:${process.env.REDIS_PORT ?? 16379}`;
  })();
  redis.catch(() => (redis = undefined));
  return redis;
}

/** The TLS-only test Redis: on the port after the test Redis's, with its own run directory. */
function redisTlsEnv(): Record<string, string> {
  return { REDIS_PORT: String(Number(process.env.REDIS_PORT ?? 16379) + 1), REDIS_TLS: '1' };
}

/**
 * Installs and starts a second test Redis that speaks only TLS, with a self-signed
 * certificate for 127.0.0.1, and resolves with its `rediss://` URL and the certificate
 * (PEM) to trust. Stop it with `stopRedisTls` in an `after` hook.
 */
export async function ensureRedisTls(): Promise<{ url: string; ca: string }> {
  const env = redisTlsEnv();
  await run('redis.sh', 'install');
  await run('redis.sh', 'start', env);
  const { readFileSync } = await import('node:fs');
  const dir = process.env.TRIBUTARY_SERVICES_DIR ?? join(process.env.TMPDIR ?? '/tmp', 'tributary-services');
  return { url: `rediss://127.0.0.1:${env.REDIS_PORT}`, ca: readFileSync(join(dir, 'redis', `run-${env.REDIS_PORT}`, 'tls', 'redis.crt'), 'utf8') };
}

/** Stops the TLS test Redis. */
export function stopRedisTls(): Promise<void> {
  return run('redis.sh', 'stop', redisTlsEnv());
}

/** Stops the test Redis; resolves once its process is gone (its data goes with it: it has no persistence). Pair with `startRedis` in a `finally`. */
export function stopRedis(): Promise<void> {
  return run('redis.sh', 'stop');
}

/** Starts the test Redis again and resolves once it answers PING. */
export function startRedis(): Promise<void> {
  return run('redis.sh', 'start');
}

let kafka: Promise<string[]> | undefined;

/**
 * Installs (Kafka from Maven Central, once) and starts the test broker on loopback, and
 * resolves with its bootstrap address. Both steps are idempotent; a broker that cannot be
 * started fails the test with the script's output. Call it from a mocha `before` hook
 * with a long timeout.
 */
export function ensureKafka(): Promise<string[]> {
  kafka ??= (async () => {
    await run('kafka.sh', 'install');
    await start('kafka.sh');
    return [`127.0.0.1:${process.env.KAFKA_PORT ?? 19092}`];
  })();
  kafka.catch(() => (kafka = undefined));
  return kafka;
}

/** Restarts the test broker (stop, then start and wait until it answers). */
export function restartKafka(): Promise<void> {
  return run('kafka.sh', 'restart');
}

/** Stops the test broker; resolves once its process is gone. Pair with `startKafka` in a `finally`. */
export function stopKafka(): Promise<void> {
  return run('kafka.sh', 'stop');
}

/** Starts the test broker again and resolves once it answers. */
export function startKafka(): Promise<void> {
  return run('kafka.sh', 'start');
}

let promtool: Promise<string> | undefined;

/**
 * Installs promtool (Debian's `prometheus` package, once) through
 * scripts/services/prometheus.sh and resolves with the command name. A promtool that
 * cannot be installed fails the test with the script's output.
 */
export function ensurePromtool(): Promise<string> {
  promtool ??= run('prometheus.sh', 'install').then(() => 'promtool');
  promtool.catch(() => (promtool = undefined));
  return promtool;
}

let chromium: Promise<string> | undefined;

/**
 * Installs headless Chromium (Debian's `chromium` package, once) through
 * scripts/services/chromium.sh and resolves with the command name. A browser that cannot be
 * installed fails the test with the script's output.
 */
export function ensureChromium(): Promise<string> {
  chromium ??= run('chromium.sh', 'install').then(() => 'chromium');
  chromium.catch(() => (chromium = undefined));
  return chromium;
}
