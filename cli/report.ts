/**
 * `tributary report`: one HTML page, with no scripts and nothing fetched, that draws its
 * charts as inline SVG, so it opens from a file, an e-mail or an artifact store alike.
 */
import type { BookingsByVendorDay, DeadLettersByReason } from '../examples/bookings/summary';

export interface ReportData {
  store: string;
  generatedAt: Date;
  bookings: readonly BookingsByVendorDay[];
  deadLetters: readonly DeadLettersByReason[];
}

/** Colour-blind-safe (Okabe–Ito, then Tol's muted), one per vendor in name order. */
const PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#332288', '#88ccee', '#44aa99', '#999933', '#aa4499'];

export function renderReport(data: ReportData): string {
  const vendors = [...new Set(data.bookings.map((r) => r.vendor))].sort();
  const colour = new Map(vendors.map((v, i) => [v, PALETTE[i % PALETTE.length]!]));
  // A currency whose bookings were all cancelled has no revenue to chart.
  const currencies = [...new Set(data.bookings.filter((r) => Number(r.revenue) !== 0).map((r) => r.currency))].sort();
  const count = (rows: readonly BookingsByVendorDay[]) => sumBy(rows, (r) => Number(r.bookings));
  const sections = [
    section('Bookings per vendor per day', stackedBars(data.bookings, vendors, colour, (rows) => count(rows), 'bookings')),
    ...currencies.map((currency) =>
      section(
        `Revenue per vendor per day (${escape(currency)}, cancellations excluded)`,
        stackedBars(
          data.bookings.filter((r) => r.currency === currency),
          vendors,
          colour,
          (rows) => sumBy(rows, (r) => Number(r.revenue)),
          currency,
        ),
      ),
    ),
    section('Dead letters by reason', reasonBars(data.deadLetters, colour)),
  ];
  const totalBookings = count(data.bookings);
  const totalLetters = sumBy(data.deadLetters, (r) => Number(r.records));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tributary report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #666; } .legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
svg { display: block; max-width: 100%; height: auto; } .empty { color: #666; font-style: italic; }
</style>
</head>
<body>
<h1>tributary report</h1>
<p class="meta">${escape(data.store)}, ${escape(data.generatedAt.toISOString().replace('T', ' ').slice(0, 19))} UTC:
${totalBookings.toLocaleString('en')} bookings, ${totalLetters.toLocaleString('en')} dead letters</p>
<p class="legend">${vendors.map((v) => `<span><i style="background:${colour.get(v)}"></i>${escape(v)}</span>`).join('')}</p>
${sections.join('\n')}
</body>
</html>
`;
}

function section(title: string, body: string): string {
  return `<section><h2>${title}</h2>\n${body}\n</section>`;
}

/**
 * One bar per day, stacked by vendor, height by `value`; negative amounts (refunds) stack
 * below the axis. Days are labelled sparsely enough to stay readable.
 */
function stackedBars(
  rows: readonly BookingsByVendorDay[],
  vendors: readonly string[],
  colour: Map<string, string>,
  value: (rows: readonly BookingsByVendorDay[]) => number,
  unit: string,
): string {
  if (rows.length === 0) return '<p class="empty">no bookings</p>';
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const cells = days.map((day) => vendors.map((vendor) => value(rows.filter((r) => r.day === day && r.vendor === vendor))));
  const marks = ticks(
    Math.min(0, ...cells.map((c) => sumBy(c, (n) => Math.min(n, 0)))),
    Math.max(0, ...cells.map((c) => sumBy(c, (n) => Math.max(n, 0)))),
  );
  const low = marks[0]!;
  const high = marks[marks.length - 1]!;
  const span = high - low || 1;
  const left = 64;
  const plot = 220;
  const top = 10;
  const width = 860;
  const step = (width - left - 10) / days.length;
  const bar = Math.max(1, Math.min(28, step * 0.8));
  const height = top + plot + 30;
  const y = (v: number) => top + ((high - v) / span) * plot;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-size="11" font-family="sans-serif">`];
  for (const tick of marks) {
    out.push(`<line x1="${left}" x2="${width - 4}" y1="${y(tick).toFixed(1)}" y2="${y(tick).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${left - 6}" y="${(y(tick) + 4).toFixed(1)}" text-anchor="end" fill="#555">${number(tick)}</text>`);
  }
  const labelEvery = Math.ceil(days.length / 10);
  days.forEach((day, d) => {
    const x = left + d * step + (step - bar) / 2;
    let up = 0;
    let down = 0;
    vendors.forEach((vendor, v) => {
      const n = cells[d]![v]!;
      if (n === 0) return;
      const from = n > 0 ? up : down;
      const to = from + n;
      if (n > 0) up = to;
      else down = to;
      const y0 = Math.min(y(from), y(to));
      const h = Math.max(0.5, Math.abs(y(from) - y(to)));
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y0.toFixed(1)}" width="${bar.toFixed(1)}" height="${h.toFixed(1)}" fill="${colour.get(vendor)}"><title>${escape(`${vendor} ${day}: ${number(n)} ${unit}`)}</title></rect>`,
      );
    });
    if (d % labelEvery === 0) out.push(`<text x="${(x + bar / 2).toFixed(1)}" y="${top + plot + 16}" text-anchor="middle" fill="#333">${escape(day)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${width - 4}" y1="${y(0).toFixed(1)}" y2="${y(0).toFixed(1)}" stroke="#888"/>`, '</svg>');
  return out.join('\n');
}

/** One horizontal bar per vendor and reason, longest first. */
function reasonBars(rows: readonly DeadLettersByReason[], colour: Map<string, string>): string {
  if (rows.length === 0) return '<p class="empty">no dead letters</p>';
  const sorted = [...rows].sort((a, b) => Number(b.records) - Number(a.records));
  const max = Math.max(...sorted.map((r) => Number(r.records)), 1);
  const label = 260;
  const plot = 380;
  const row = 22;
  const width = label + plot + 60;
  const height = sorted.length * row + 10;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-size="11" font-family="sans-serif">`];
  sorted.forEach((r, i) => {
    const y = 5 + i * row;
    const n = Number(r.records);
    const w = Math.max(2, (n / max) * plot);
    out.push(
      `<text x="${label - 8}" y="${y + 14}" text-anchor="end" fill="#333">${escape(`${r.vendor || '(no vendor)'} · ${r.stage}/${r.code}`)}</text>`,
      `<rect x="${label}" y="${y + 3}" width="${w.toFixed(1)}" height="${row - 6}" fill="${colour.get(r.vendor) ?? '#999'}"><title>${escape(`${n} records, e.g. ${r.example}`)}</title></rect>`,
      `<text x="${(label + w + 6).toFixed(1)}" y="${y + 14}" fill="#333">${number(n)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

/** About five round ticks covering `low` to `high` (0 among them). */
function ticks(low: number, high: number): number[] {
  const rough = (high - low) / 5 || 1;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? rough;
  const out: number[] = [];
  // Whole steps from the one at or below `low` to the one at or above `high`.
  for (let i = Math.floor(low / step); ; i++) {
    out.push(i * step + 0);
    if (i * step >= high) break;
  }
  return out;
}

function sumBy<T>(rows: readonly T[], value: (row: T) => number): number {
  return rows.reduce((sum, row) => sum + value(row), 0);
}

function number(n: number): string {
  return n.toLocaleString('en', { maximumFractionDigits: 2 });
}

function escape(text: string): string {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
