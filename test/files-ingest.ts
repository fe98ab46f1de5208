import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { tap } from 'rxjs';
import { fromFiles, type FromFilesOptions } from '../connectors/files';
import type { Envelope } from '../lib/envelope';
import { Pipeline } from '../lib/pipeline';
import type { DeadLetter } from '../lib/sink';
import { MemorySink, observed } from './helpers';

/** The file fixtures live in the source tree; compiled tests run from dist/test. */
export const fixturesDir = resolve(__dirname, __dirname.includes(`${'/'}dist${'/'}`) ? '../../test/fixtures/files' : './fixtures/files');

export const fixture = (name: string) => resolve(fixturesDir, name);

/** Runs `fromFiles` through a pipeline into memory sinks; keeps each record's meta. */
export async function ingestFiles(options: FromFilesOptions) {
  const source = observed(fromFiles(options));
  const sink = new MemorySink<unknown>();
  const deadLetters = new MemorySink<DeadLetter>();
  const metas: Envelope<unknown>['meta'][] = [];
  const pipeline = new Pipeline({
    source,
    transform: tap((e: Envelope<unknown>) => metas.push(e.meta)),
    sink,
    deadLetters,
    batch: { rows: 7, maxWaitMs: 5 },
    deadLetterBatch: { maxWaitMs: 1 },
  });
  let error: unknown;
  const stats = await pipeline.run().catch((e: unknown) => {
    error = e;
    return pipeline.stats;
  });
  return { rows: sink.rows, letters: deadLetters.rows, metas, stats, error, source };
}

const run = promisify(execFile);

/** Reads with fromFiles in a child process with a small heap; its result and peak RSS. */
export async function readInChild(options: object, heapMb: number) {
  const { stdout } = await run(process.execPath, [`--max-old-space-size=${heapMb}`, join(__dirname, 'files-child.js'), JSON.stringify(options)], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout) as {
    rows: number;
    firstRows: unknown[];
    letters: { code: string; message: string; raw: string }[];
    deadLettered: number;
    maxRssMb: number;
  };
}

/** Writes `parts` to a file, calling generators for the big ones, without holding the file. */
export async function writeBig(path: string, parts: (string | (() => Iterable<string>))[]): Promise<void> {
  const out = createWriteStream(path);
  for (const part of parts) {
    for (const piece of typeof part === 'string' ? [part] : part()) {
      if (!out.write(piece)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
    }
  }
  await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
}

export function* repeat(piece: string, times: number): Iterable<string> {
  const block = piece.repeat(Math.max(1, Math.floor(65536 / piece.length)));
  const perBlock = block.length / piece.length;
  let left = times;
  while (left >= perBlock) {
    yield block;
    left -= perBlock;
  }
  if (left > 0) yield piece.repeat(left);
}

