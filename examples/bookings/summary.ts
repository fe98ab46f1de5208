/** What an analyst asks a booking store first, as queries and as text tables. */

/** Bookings, cancellations and revenue per vendor, day and currency. */
export const BOOKINGS_BY_VENDOR_DAY = `
  SELECT vendor, day, bookings, cancelled, currency, revenue
  FROM bookings_per_vendor_day ORDER BY vendor, day, currency`;

/** Refused records per vendor and reason, with one message as an example. */
export const DEAD_LETTERS_BY_REASON = `
  SELECT vendor, stage, code, count() AS records, any(message) AS example
  FROM dead_letters FINAL
  GROUP BY vendor, stage, code ORDER BY vendor, records DESC, code`;

export interface BookingsByVendorDay {
  vendor: string;
  day: string;
  bookings: number | string;
  cancelled: number | string;
  currency: string;
  revenue: number | string;
}

export interface DeadLettersByReason {
  vendor: string;
  stage: string;
  code: string;
  records: number | string;
  example: string;
}

/** Rows as a titled text table, columns padded; long cells are cut to 60 characters. */
export function formatTable(title: string, rows: readonly object[]): string {
  const head = `${title}\n${'-'.repeat(title.length)}\n`;
  if (rows.length === 0) return `${head}(none)\n`;
  const columns = Object.keys(rows[0]!);
  const cells = rows.map((row) => columns.map((c) => truncate(String((row as Record<string, unknown>)[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return `${head}${[line(columns), ...cells.map(line)].join('\n')}\n`;
}

function truncate(text: string): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length > 60 ? `${flat.slice(0, 57)}...` : flat;
}
