import { basename, join } from 'node:path';
import type { FileProgress } from '../../connectors/files';
import { embeddedClickHouse, migrate } from '../../index';
import { migrationsDir, samplesDir } from './paths';
import { bookingPipeline, SAMPLE_VENDORS } from './pipeline';
import { BOOKINGS_BY_VENDOR_DAY, DEAD_LETTERS_BY_REASON, formatTable } from './summary';

export interface DemoOptions {
  /** The store directory. @default TRIBUTARY_DEMO_PATH, else TRIBUTARY_PATH, else '.tributary/demo' */
  path?: string;
  /** Files and directories to ingest. @default the seven sample vendors' directories */
  paths?: readonly string[];
}

/** How long Ctrl-C waits for writes under way before giving them up (they are read again on the next run). */
const STOP_TIMEOUT_MS = 30_000;

/**
 * The booking demo: ingests the sample files of the seven example vendors (or the files
 * and directories named on the command line, e.g. generated ones) into embedded ClickHouse
 * and prints what an analyst asks first. Large files get a progress bar with an ETA on
 * stderr. Running it again changes no count: the same files give the same insert tokens
 * and the same keys.
 */
export async function demo(options: DemoOptions = {}): Promise<void> {
  const path = options.path ?? process.env.TRIBUTARY_DEMO_PATH ?? process.env.TRIBUTARY_PATH ?? '.tributary/demo';
  const clickhouse = embeddedClickHouse({ path });
  try {
    const applied = await migrate(clickhouse, migrationsDir);
    if (applied.length > 0) console.log(`applied migrations ${applied.join(', ')}`);
    const paths = options.paths?.length ? [...options.paths] : SAMPLE_VENDORS.map((vendor) => join(samplesDir, vendor));
    const pipeline = bookingPipeline({
      name: 'bookings-demo',
      client: clickhouse,
      paths,
      batch: { rows: 1000, maxWaitMs: 200 },
      // Running the demo again changes no count: batches and dead-letter batches are cut
      // where the first run cut them.
      alignBatches: true,
      onProgress: progressBar(),
    });
    const stop = () => void pipeline.stop({ timeoutMs: STOP_TIMEOUT_MS }).catch(() => undefined);
    process.once('SIGINT', stop).once('SIGTERM', stop);
    const stats = await pipeline.run();
    process.off('SIGINT', stop).off('SIGTERM', stop);
    console.log(`\nthis run: ${stats.read} records read, ${stats.written} written to bookings, ${stats.deadLettered} dead-lettered\n`);

    printTable('Bookings and revenue by vendor and day', await clickhouse.query(BOOKINGS_BY_VENDOR_DAY));
    printTable('Cancellation rate by vendor', await clickhouse.query('SELECT * FROM cancellation_rate_per_vendor ORDER BY vendor'));
    printTable('Dead letters by reason', await clickhouse.query(DEAD_LETTERS_BY_REASON));
    printTable(
      'Vendor data quality (records as they arrived)',
      await clickhouse.query(`
        SELECT vendor, sum(accepted) AS accepted, sum(dead_lettered) AS dead_lettered,
               round(dead_lettered / (accepted + dead_lettered), 3) AS refused_share
        FROM vendor_quality_hourly GROUP BY vendor ORDER BY vendor`),
    );
    printTable(
      'Totals',
      await clickhouse.query(`
        SELECT (SELECT count() FROM bookings FINAL) AS bookings,
               (SELECT count() FROM dead_letters FINAL) AS dead_letters`),
    );
    const at = path === '.tributary/demo' ? '' : ` --path ${path}`;
    console.log(
      `Next: npx tributary status${at}   npx tributary query${at} "SELECT * FROM bookings_per_vendor_day"\n` +
        `      npx tributary report${at} -o report.html   npx tributary --help`,
    );
  } finally {
    await clickhouse.close();
  }
}

/** Files at least this large get a progress bar. */
const LARGE_FILE_BYTES = 8 * 1024 * 1024;

/** Draws one line per large file on stderr: bar, share done, MiB, records/s and ETA. */
function progressBar(): (progress: FileProgress) => void {
  const tty = process.stderr.isTTY === true;
  return (p) => {
    if (p.totalBytes < LARGE_FILE_BYTES) return;
    const share = p.totalBytes > 0 ? Math.min(p.bytes / p.totalBytes, 1) : 1;
    const width = 30;
    const filled = Math.round(share * width);
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
    const line =
      `${basename(p.file)} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}%` +
      `  ${mib(p.bytes)}/${mib(p.totalBytes)} MiB  ${p.recordsPerSecond.toLocaleString('en')} records/s` +
      `  ${p.done ? `done in ${clock(p.elapsedMs)}` : `ETA ${p.etaMs === undefined ? '--:--' : clock(p.etaMs)}`}`;
    // On a terminal the line redraws in place; in a log each update is a line.
    process.stderr.write(tty ? `\r${line}\x1b[K${p.done ? '\n' : ''}` : `${line}\n`);
  };
}

function clock(ms: number): string {
  const seconds = Math.round(ms / 1000);
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(seconds % 60).padStart(2, '0')}`;
}

function printTable(title: string, rows: Record<string, unknown>[]): void {
  console.log(formatTable(title, rows));
}

if (require.main === module) {
  demo({ paths: process.argv.slice(2) }).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
