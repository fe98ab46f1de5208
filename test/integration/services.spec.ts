import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from '../helpers';

const run = promisify(execFile);
const root = join(__dirname, '..', '..', '..');
const redisScript = join(root, 'scripts', 'services', 'redis.sh');

/** `redis.sh status` for `env`: 0 running, 3 stopped. */
async function redisStatus(env: NodeJS.ProcessEnv): Promise<number> {
  try {
    await run('bash', [redisScript, 'status'], { env });
    return 0;
  } catch (error) {
    return (error as { code?: number }).code ?? -1;
  }
}

describe('npm test stops the services it started', function () {
  this.timeout(300_000);

  it('stops a service the run started, keeps it with TRIBUTARY_KEEP_SERVICES, and never stops one it found running', async () => {
    const dir = tempDir('tributary-services-');
    // A port and state directory of its own: nobody else's Redis is touched.
    const env: NodeJS.ProcessEnv = { ...process.env, TRIBUTARY_SERVICES_DIR: dir.path, REDIS_PORT: String(40000 + (process.pid % 20000)) };
    delete env.TRIBUTARY_KEEP_SERVICES;
    const mocha = (extra: NodeJS.ProcessEnv) =>
      run(process.execPath, [join(root, 'node_modules', 'mocha', 'bin', 'mocha.js'), '--no-config', '--require', join(__dirname, '..', 'hooks.js'), '--timeout', '120000', '--exit', join(__dirname, 'servicesRun.js')], { env: { ...env, ...extra }, cwd: root });
    try {
      await mocha({});
      expect(await redisStatus(env), 'stopped after the run that started it').to.equal(3);
      await mocha({ TRIBUTARY_KEEP_SERVICES: '1' });
      expect(await redisStatus(env), 'kept when asked').to.equal(0);
      await mocha({});
      expect(await redisStatus(env), 'found running: left running').to.equal(0);
    } finally {
      await run('bash', [redisScript, 'stop'], { env }).catch(() => undefined);
      dir.remove();
    }
  });
});
