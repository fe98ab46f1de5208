import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { listenerPid, processCpuMs, timed } from '../../../bench/harness';

describe('benchmark harness: the processes a run counts as its own', () => {
  it('finds the process listening on a port, and none on a port nobody listens on', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      expect(listenerPid(port)).to.equal(process.pid);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(listenerPid(port)).to.equal(undefined);
  });

  it("reads a process's CPU time as it grows, and nothing for a process that is gone", () => {
    const before = processCpuMs(process.pid)!;
    // Spin until it reads 100 ms more (on a loaded machine that takes longer than 100 ms of wall time), at most 10 s.
    const until = Date.now() + 10_000;
    while (Date.now() < until && processCpuMs(process.pid)! - before < 100) for (let i = 0; i < 100_000; i++) Math.sqrt(Math.random());
    expect(processCpuMs(process.pid)! - before).to.be.at.least(100);
    expect(processCpuMs(2 ** 22 + 1)).to.equal(undefined);
  });

  it("leaves a helper's CPU out of what other processes kept busy, and counts it without the helper named", async () => {
    // A child spinning for a second, then idle until killed: a helper doing the run's work.
    const spin = "const until = Date.now() + 1000; while (Date.now() < until) Math.sqrt(Math.random()); console.log('done'); setInterval(() => {}, 1000)";
    const run = async (helpers: boolean) => {
      const child = spawn(process.execPath, ['-e', spin], { stdio: ['ignore', 'pipe', 'ignore'] });
      await new Promise((resolve) => child.once('spawn', resolve));
      const done = new Promise((resolve) => child.stdout.once('data', resolve));
      try {
        return await timed(() => done, helpers ? [child.pid!] : []);
      } finally {
        child.kill();
      }
    };
    const alone = await run(false);
    const helped = await run(true);
    expect(alone.othersCores).to.be.at.least(0.6);
    expect(helped.othersCores).to.be.below(alone.othersCores - 0.5);
  });
});
