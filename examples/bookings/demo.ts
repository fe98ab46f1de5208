import { basename, join } from 'node:path';
import { embeddedClickHouse, migrate, type FileProgress } from '../../index';
import { migrationsDir, samplesDir } from './paths';
import { bookingPipeline, SAMPLE_VENDORS } from './pipeline';

/** How long Ctrl-C waits for writes under way before giving them up (they are read again on the next run). */
const STOP_TIMEOUT_MS = 30_000;

/**
 * The booking demo: ingests the sample files of the seven example vendors (or the files
 * and directories named on the command line, e.g. generated ones) into embedded ClickHouse
 * and prints what an analyst asks first. Large files get a progress bar with an ETA on
 * stderr. Running it again changes no count: the same files give the same insert tokens
 * and the same keys.
 */
async function main(): Promise<void> {
  const path = process.env.TRIBUTARY_DEMO_PATH ?? '.tributary/demo';
  const clickhouse = embeddedClickHouse({ path });
  try {
    const applied = await migrate(clickhouse, migrationsDir);
    if (applied.length > 0) console.log(`applied migrations ${applied.join(', ')}`);
    const paths = process.argv.length > 2 ? process.argv.slice(2) : SAMPLE_VENDORS.map((vendor) => join(samplesDir, vendor));
    const pipeline = bookingPipeline({
      name: 'bookings-demo',
      client: clickhouse,
      paths,
      batch: { rows: 1000, maxWaitMs: 200 },
      onProgress: progressBar(),
    });
    const stop = () => void pipeline.stop({ timeoutMs: STOP_TIMEOUT_MS }).catch(() => undefined);
    process.once('SIGINT', stop).once('SIGTERM', stop);
    const stats = await pipeline.run();
    process.off('SIGINT', stop).off('SIGTERM', stop);
    console.log(`\nthis run: ${stats.read} records read, ${stats.written} written to bookings, ${stats.deadLettered} dead-lettered\n`);

    printTable(
      'Bookings and revenue by vendor and day',
      await clickhouse.query(`
        SELECT vendor, day, bookings, cancelled, currency, revenue
        FROM bookings_per_vendor_day ORDER BY vendor, day, currency`),
    );
    printTable('Cancellation rate by vendor', await clickhouse.query('SELECT * FROM cancellation_rate_per_vendor ORDER BY vendor'));
    printTable(
      'Dead letters by reason',
      await clickhouse.query(`
        SELECT vendor, stage, code, count() AS records, any(message) AS example
        FROM dead_letters FINAL
        GROUP BY vendor, stage, code ORDER BY vendor, records DESC, code`),
    );
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
  console.log(`${title}\n${'-'.repeat(title.length)}`);
  if (rows.length === 0) {
    console.log('(none)\n');
    return;
  }
  const columns = Object.keys(rows[0]!);
  const cells = rows.map((row) => columns.map((c) => truncate(String(row[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(columns));
  for (const row of cells) console.log(line(row));
  console.log('');
}

function truncate(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
