import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { noteStarted } from './services';

const script = join(__dirname, '..', '..', 'scripts', 'services', 'clickhouse.sh');
const port = Number(process.env.CLICKHOUSE_HTTP_PORT ?? 18123);

function run(command: 'install' | 'start' | 'stop' | 'status'): void {
  try {
    execFileSync('bash', [script, command], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: Buffer; stderr?: Buffer };
    throw new Error(`scripts/services/clickhouse.sh ${command} failed; the ClickHouse server tests need it:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

function running(): boolean {
  try {
    execFileSync('bash', [script, 'status'], { stdio: 'ignore', timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

/** The project's ClickHouse server (Debian's clickhouse-server on loopback), installed and started. */
export const clickhouseServer = {
  url: `http://127.0.0.1:${port}`,
  ensure(): void {
    run('install');
    if (!running()) noteStarted('clickhouse.sh');
    run('start');
  },
  stop: () => run('stop'),
  start: () => run('start'),
};
