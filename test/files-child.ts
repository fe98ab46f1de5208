/**
 * Reads files with `fromFiles` into a sink that keeps nothing, in a process of its own
 * (started with a small heap by the hostile-input tests), and prints what happened and
 * the process's peak memory as one JSON line.
 *
 *   node files-child.js '<FromFilesOptions as JSON>'
 */
import { readFileSync } from 'node:fs';
import { fromFiles, type FromFilesOptions } from '../connectors/files';
import { Pipeline } from '../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../lib/sink';

class CountingSink<T> implements Sink<T> {
  readonly name = 'counting';
  rows = 0;
  kept: T[] = [];
  constructor(readonly keep: number) {}
  async write(batch: Batch<T>): Promise<void> {
    this.rows += batch.envelopes.length;
    for (const e of batch.envelopes) if (this.kept.length < this.keep) this.kept.push(e.value);
  }
}

/**
 * This process's own peak RSS, in bytes. Not `resourceUsage().maxRSS`: Linux keeps that
 * across exec, so a child started by a large test runner reports the runner's size. VmHWM is
 * the high-water mark of this process's own memory; elsewhere the sampled peak stands.
 */
function ownPeakRss(): number {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return kb === undefined ? 0 : Number(kb) * 1024;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2]!) as FromFilesOptions;
  const sink = new CountingSink<unknown>(20);
  const deadLetters = new CountingSink<DeadLetter>(20);
  let peakRss = 0;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const stats = await new Pipeline({ source: fromFiles(options), sink, deadLetters, batch: { rows: 1000, maxWaitMs: 10 } }).run();
  clearInterval(timer);
  const result = {
    rows: sink.rows,
    firstRows: sink.kept,
    letters: deadLetters.kept.map((l) => ({ code: l.code, message: l.message, raw: l.raw.slice(0, 100) })),
    deadLettered: stats.deadLettered,
    maxRssMb: Math.round(Math.max(peakRss, ownPeakRss()) / 2 ** 20),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
