import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { embeddedClickHouse } from '../connectors/clickhouse/embedded';
import { migrate } from '../connectors/clickhouse/migrate';
import { serveQueries } from '../connectors/clickhouse/queryServer';
import { migrationsDir } from '../examples/bookings/paths';
import {
  BOOKINGS_BY_VENDOR_DAY,
  DEAD_LETTERS_BY_REASON,
  formatTable,
  type BookingsByVendorDay,
  type DeadLettersByReason,
} from '../examples/bookings/summary';
import { renderReport } from './report';
import { CliError, EXIT, openStore, requireFree, requireStore, type StoreReader } from './store';

const notice = (line: string) => process.stderr.write(`${line}\n`);

/** `tributary query`: the result as text in the chosen format. */
export async function queryCommand(path: string, sql: string, options: { format: string; write: boolean }): Promise<number> {
  // readonly=1 stops INSERT, DDL, file() and url(), but not INTO OUTFILE, which writes a file.
  if (!options.write && /\bOUTFILE\b/i.test(sql)) {
    throw new CliError('INTO OUTFILE writes a file: rerun with --write to allow it, or redirect the output instead (> file)', EXIT.REFUSED);
  }
  const store = await openStore(path, { write: options.write, notice });
  try {
    process.stdout.write(await store.queryText(sql, options.format));
    return EXIT.OK;
  } finally {
    await store.close();
  }
}

/** `tributary status`: tables and rows, then the booking summary when the store holds the booking schema. */
export async function statusCommand(path: string): Promise<number> {
  const store = await openStore(path, { notice });
  try {
    const tables = await store.query<{ name: string; engine: string; rows: string | number | null }>(`
      SELECT name, engine, total_rows AS rows FROM system.tables
      WHERE database = currentDatabase() AND NOT is_temporary ORDER BY name`);
    const names = new Set(tables.map((t) => t.name));
    const out: string[] = [`store: ${store.where}\n`, formatTable('Tables', tables.map((t) => ({ ...t, rows: t.rows ?? '' })))];
    if (names.has('bookings') && names.has('dead_letters')) {
      const [last] = await store.query<{ bookings: string; dead_letters: string; last_ingest: string }>(`
        SELECT (SELECT count() FROM bookings FINAL) AS bookings,
               (SELECT count() FROM dead_letters FINAL) AS dead_letters,
               greatest((SELECT max(ingested_at) FROM bookings), (SELECT max(received_at) FROM dead_letters)) AS last_ingest`);
      const empty = Number(last!.bookings) + Number(last!.dead_letters) === 0;
      out.push(
        `bookings: ${last!.bookings}, dead letters: ${last!.dead_letters}, last ingest: ${empty ? 'never' : `${last!.last_ingest} UTC`}\n`,
      );
      if (names.has('bookings_per_vendor_day')) out.push(await bookingsByDay(store, STATUS_DAYS));
      out.push(formatTable('Dead letters by reason', await store.query(DEAD_LETTERS_BY_REASON)));
    } else {
      out.push('no booking tables yet: `tributary migrate` creates them, `tributary ingest <files…>` fills them\n');
    }
    process.stdout.write(out.join('\n'));
    return EXIT.OK;
  } finally {
    await store.close();
  }
}

/** Days the status shows: enough for a first look, short enough for a terminal. */
const STATUS_DAYS = 14;

/** Bookings per day (rows) and vendor (columns) over the latest `days` days with bookings. */
async function bookingsByDay(store: StoreReader, days: number): Promise<string> {
  const rows = await store.query<{ vendor: string; day: string; bookings: string | number }>(`
    SELECT vendor, day, sum(bookings) AS bookings FROM bookings_per_vendor_day
    WHERE day IN (SELECT DISTINCT day FROM bookings_per_vendor_day ORDER BY day DESC LIMIT ${days})
    GROUP BY vendor, day ORDER BY day, vendor`);
  const vendors = (await store.query<{ vendor: string }>('SELECT DISTINCT vendor FROM bookings_per_vendor_day ORDER BY vendor')).map((r) => r.vendor);
  const table = new Map<string, Record<string, string | number>>();
  for (const { vendor, day, bookings } of rows) {
    const row = table.get(day) ?? { day, ...Object.fromEntries(vendors.map((v) => [v, 0])), total: 0 };
    row[vendor] = Number(bookings);
    row.total = Number(row.total) + Number(bookings);
    table.set(day, row);
  }
  return formatTable(`Bookings by vendor and day (latest ${days} days; \`tributary report\` charts all)`, [...table.values()]);
}

/** `tributary report`: the HTML page, written where `--out` says. */
export async function reportCommand(path: string, options: { out: string }): Promise<number> {
  const store = await openStore(path, { notice });
  let html: string;
  try {
    await requireBookings(store);
    html = renderReport({
      store: store.where,
      generatedAt: new Date(),
      bookings: await store.query<BookingsByVendorDay>(BOOKINGS_BY_VENDOR_DAY),
      deadLetters: await store.query<DeadLettersByReason>(DEAD_LETTERS_BY_REASON),
    });
  } finally {
    await store.close();
  }
  const out = resolve(options.out);
  try {
    writeFileSync(out, html);
  } catch (error) {
    throw new CliError(`cannot write ${out}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; choose another --out`);
  }
  process.stdout.write(`wrote ${out}\n`);
  return EXIT.OK;
}

async function requireBookings(store: StoreReader): Promise<void> {
  const [found] = await store.query<{ n: string | number }>(
    "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name IN ('bookings_per_vendor_day', 'dead_letters')",
  );
  if (Number(found!.n) < 2) throw new CliError(`the store at ${store.where} has no booking tables: run \`tributary ingest <files…>\` first`, EXIT.STORE);
}

/** `tributary serve`: the query endpoint over the store, until SIGINT or SIGTERM. */
export async function serveCommand(path: string, options: { host: string; port: number; user: string }): Promise<number> {
  const key = process.env.TRIBUTARY_QUERY_KEY;
  if (!key || key.length < 8) {
    throw new CliError('set TRIBUTARY_QUERY_KEY to the key analysts will give (at least 8 characters), e.g. TRIBUTARY_QUERY_KEY=$(openssl rand -hex 16)', EXIT.USAGE);
  }
  requireStore(resolve(path));
  requireFree(path, 'serve');
  const client = embeddedClickHouse({ path });
  let server: { url: string; close(): Promise<void> };
  try {
    // Hold the store from the start, so other commands know to ask the endpoint.
    await client.exec('SELECT 1');
    server = await serveQueries({ client, users: { [options.user]: key }, host: options.host, port: options.port });
  } catch (error) {
    await client.close();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new CliError(`port ${options.port} on ${options.host} is in use: choose another with --port`, EXIT.FAILED);
    throw error;
  }
  process.stdout.write(`serving ${resolve(path)} read-only at ${server.url} (user ${options.user}, key from TRIBUTARY_QUERY_KEY); Ctrl-C stops\n`);
  await new Promise<void>((done) => {
    process.once('SIGINT', done).once('SIGTERM', done);
  });
  await server.close();
  await client.close();
  return EXIT.OK;
}

/** `tributary migrate`: creates the store if needed and applies what is not applied yet. */
export async function migrateCommand(path: string, options: { migrations?: string }): Promise<number> {
  requireFree(path, 'migrate');
  const client = embeddedClickHouse({ path });
  try {
    const applied = await migrate(client, options.migrations ?? migrationsDir);
    process.stdout.write(applied.length > 0 ? `applied migrations ${applied.join(', ')} to ${resolve(path)}\n` : `${resolve(path)} is up to date\n`);
    return EXIT.OK;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CliError(`no migrations directory at ${options.migrations}: pass --migrations DIR`, EXIT.USAGE);
    throw error;
  } finally {
    await client.close();
  }
}
