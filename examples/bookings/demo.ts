import { join } from 'node:path';
import { embeddedClickHouse, migrate } from '../../index';
import { VENDORS } from './generate';
import { migrationsDir, samplesDir } from './paths';
import { bookingPipeline } from './pipeline';

/**
 * The booking demo: ingests the sample files of three vendors into embedded ClickHouse
 * and prints what an analyst asks first. Running it again changes no count: the same
 * files give the same insert tokens and the same keys.
 */
async function main(): Promise<void> {
  const path = process.env.TRIBUTARY_DEMO_PATH ?? '.tributary/demo';
  const clickhouse = embeddedClickHouse({ path });
  try {
    const applied = await migrate(clickhouse, migrationsDir);
    if (applied.length > 0) console.log(`applied migrations ${applied.join(', ')}`);
    const pipeline = bookingPipeline({
      name: 'bookings-demo',
      client: clickhouse,
      paths: VENDORS.map((vendor) => join(samplesDir, vendor)),
      batch: { rows: 1000, maxWaitMs: 200 },
    });
    const stop = () => void pipeline.stop();
    process.once('SIGINT', stop).once('SIGTERM', stop);
    const stats = await pipeline.run();
    process.off('SIGINT', stop).off('SIGTERM', stop);
    console.log(`\nthis run: ${stats.read} records read, ${stats.written} written to bookings, ${stats.deadLettered} dead-lettered\n`);

    printTable(
      'Bookings and revenue by vendor and day',
      await clickhouse.query(`
        SELECT vendor, toDate(booked_at) AS day, count() AS bookings,
               countIf(status = 'cancelled') AS cancelled, currency, sum(total_amount) AS revenue
        FROM bookings FINAL
        GROUP BY vendor, day, currency ORDER BY vendor, day, currency`),
    );
    printTable(
      'Dead letters by reason',
      await clickhouse.query(`
        SELECT vendor, stage, code, count() AS records, any(message) AS example
        FROM dead_letters FINAL
        GROUP BY vendor, stage, code ORDER BY vendor, records DESC, code`),
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
