import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { embeddedClickHouse } from '../connectors/clickhouse/embedded';
import { migrate } from '../connectors/clickhouse/migrate';
import type { FileProgress } from '../connectors/files/read';
import { mappings } from '../examples/bookings/mappings';
import { migrationsDir } from '../examples/bookings/paths';
import { bookingPipeline } from '../examples/bookings/pipeline';
import { formatTable } from '../examples/bookings/summary';
import { CliError, EXIT, requireFree } from './store';

/**
 * `tributary ingest <paths…>`: the booking pipeline over the given files into the store,
 * with a progress bar over all their bytes on stderr, then what this run did and its
 * dead letters by reason.
 */
export async function ingestCommand(path: string, paths: string[], options: { progress: boolean; vendor?: string }): Promise<number> {
  if (options.vendor !== undefined && !Object.hasOwn(mappings, options.vendor)) {
    throw new CliError(`--vendor must be one of ${Object.keys(mappings).sort().join(', ')}, got ${JSON.stringify(options.vendor)}`, EXIT.USAGE);
  }
  // Each file or directory once, however often it is named.
  const toRead = new Map<string, string>();
  let totalBytes = 0;
  const add = (p: string, bytes: number) => {
    if (toRead.has(resolve(p))) return;
    toRead.set(resolve(p), p);
    totalBytes += bytes;
  };
  for (const p of paths) {
    const info = statSync(p, { throwIfNoEntry: false });
    if (!info) throw new CliError(`no such file or directory: ${p}`, EXIT.USAGE);
    if (!info.isDirectory()) {
      add(p, info.size);
      continue;
    }
    add(p, directoryBytes(p));
    // A directory of vendors' directories (examples/bookings/data) is read as those directories.
    for (const entry of readdirSync(p, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (entry.isDirectory() && !entry.name.startsWith('.')) add(join(p, entry.name), directoryBytes(join(p, entry.name)));
    }
  }
  requireFree(path, 'ingest');
  const client = embeddedClickHouse({ path });
  try {
    await migrate(client, migrationsDir);
    const reasons = new Map<string, { vendor: string; stage: string; code: string; records: number; example: string }>();
    const bar = options.progress ? progressBar(totalBytes) : undefined;
    const pipeline = bookingPipeline({
      name: 'ingest',
      client,
      paths: [...toRead.values()],
      ...(options.vendor !== undefined && { vendor: options.vendor }),
      batch: { rows: 10_000, maxWaitMs: 500 },
      // Reading the same files again changes no count (see `alignBatches`).
      alignBatches: true,
      ...(bar && { onProgress: bar.update }),
      onDeadLetter: (letter) => {
        const key = `${letter.vendor}\0${letter.stage}\0${letter.code}`;
        const entry = reasons.get(key) ?? { vendor: letter.vendor, stage: letter.stage, code: letter.code, records: 0, example: letter.message };
        entry.records++;
        reasons.set(key, entry);
      },
    });
    // On a signal, writes of what was read are retried at most this long; what is then
    // given up is nacked, and said.
    let signalled = false;
    const stop = () => {
      signalled = true;
      void pipeline.stop({ timeoutMs: STOP_TIMEOUT_MS }).catch(() => undefined);
    };
    process.once('SIGINT', stop).once('SIGTERM', stop);
    const started = Date.now();
    let stats;
    try {
      stats = await pipeline.run();
    } catch (error) {
      const { nacked } = pipeline.stats;
      if (!signalled || nacked === 0) throw error;
      throw new CliError(`stopped by a signal: gave up on ${plural(nacked, 'record')} read but not stored after ${STOP_TIMEOUT_MS / 1000} s (${error instanceof Error ? error.message : String(error)})`, EXIT.FAILED);
    } finally {
      process.off('SIGINT', stop).off('SIGTERM', stop);
      bar?.end();
    }
    const seconds = (Date.now() - started) / 1000;
    const rows = [...reasons.values()].sort((a, b) => a.vendor.localeCompare(b.vendor) || b.records - a.records || a.code.localeCompare(b.code));
    process.stdout.write(
      `${stats.read.toLocaleString('en')} records read from ${bar ? plural(bar.files(), 'file') : plural(paths.length, 'path')} in ${seconds.toFixed(1)} s: ` +
        `${stats.written.toLocaleString('en')} written to bookings, ${stats.deadLettered.toLocaleString('en')} dead-lettered` +
        `${stats.nacked > 0 ? `, ${stats.nacked.toLocaleString('en')} not stored${signalled ? ' (batches the stop cut short: the next run stores them)' : ''}` : ''} (store ${resolve(path)})\n\n` +
        formatTable('Dead letters by reason (this run)', rows),
    );
    if (stats.read === 0) process.stderr.write(`tributary: nothing was read: ${paths.join(' ')} holds no files (hidden files are skipped)\n`);
    const unknown = rows.filter((r) => r.code === 'UNKNOWN_VENDOR');
    if (unknown.length > 0) {
      const names = [...new Set(unknown.map((r) => r.vendor || '(none)'))].join(', ');
      process.stdout.write(
        `\nno mapping for vendor ${names}: a file's vendor is its directory's name; put the files in a directory named after their vendor, or pass --vendor (one of ${Object.keys(mappings).sort().join(', ')})\n`,
      );
    }
    // Batches are aligned (a run again stores nothing twice): a stop leaves the batches it
    // would cut short unwritten, for the next run, rather than storing them cut elsewhere.
    return stats.nacked > 0 && !signalled ? EXIT.FAILED : EXIT.OK;
  } finally {
    await client.close();
  }
}

function directoryBytes(directory: string): number {
  let bytes = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    if (entry.isFile()) bytes += statSync(join(directory, entry.name)).size;
  }
  return bytes;
}

/** One bar over all files on stderr: redrawn in place on a terminal, a line per finished file otherwise. */
function progressBar(totalBytes: number) {
  const tty = process.stderr.isTTY === true;
  const done = new Map<string, { bytes: number; records: number }>();
  const current = new Map<string, FileProgress>();
  const started = Date.now();
  let drawn = 0;
  let finished = 0;
  const draw = () => {
    let bytes = 0;
    let records = 0;
    for (const p of current.values()) {
      bytes += p.bytes;
      records += p.records;
    }
    for (const d of done.values()) {
      bytes += d.bytes;
      records += d.records;
    }
    const share = totalBytes > 0 ? Math.min(bytes / totalBytes, 1) : 1;
    const width = 30;
    const seconds = (Date.now() - started) / 1000;
    const eta = share > 0 && share < 1 ? clock(((seconds / share) * (1 - share)) * 1000) : '--:--';
    const line =
      `[${'#'.repeat(Math.round(share * width)).padEnd(width, '-')}] ${(share * 100).toFixed(0).padStart(3)}%` +
      `  ${plural(finished, 'file')}  ${mib(bytes)}/${mib(totalBytes)} MiB  ${seconds > 0 ? Math.round(records / seconds).toLocaleString('en') : 0} records/s  ETA ${eta}`;
    process.stderr.write(`\r${line}\x1b[K`);
  };
  return {
    update(p: FileProgress) {
      if (p.done) {
        current.delete(p.file);
        done.set(p.file, { bytes: p.bytes, records: p.records });
        finished++;
        if (!tty) process.stderr.write(`${shown(p.file)}: ${plural(p.records, 'record')}\n`);
      } else {
        current.set(p.file, p);
      }
      if (tty && (p.done || Date.now() - drawn >= 100)) {
        drawn = Date.now();
        draw();
      }
    },
    end() {
      if (tty && finished > 0) process.stderr.write('\n');
    },
    files: () => finished,
  };
}

/** A path as short as it stays clear: relative below the working directory, else absolute. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' || rel.startsWith('..') ? path : rel;
}

/** How long a signalled ingest keeps trying to write what it has read. */
const STOP_TIMEOUT_MS = 30_000;

const plural = (n: number, noun: string) => `${n.toLocaleString('en')} ${noun}${n === 1 ? '' : 's'}`;

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

function clock(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}
