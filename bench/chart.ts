/**
 * The benchmark chart: each benchmark's headline throughput as a share of its baseline,
 * and its peak memory, as an SVG drawn here (no plotting dependency).
 */
import type { StoredResult } from './types';

const WIDTH = 760;
const LABEL = 190;
const BAR = 18;
const GAP = 8;
const PANEL_GAP = 46;

/** An SVG with two bar panels: ratio to baseline (a line at 1 = as fast), and peak RSS in MiB. */
export function renderChart(results: readonly StoredResult[]): string {
  const plot = WIDTH - LABEL - 70;
  const rows = results.length;
  const panelHeight = rows * (BAR + GAP);
  const top1 = 58;
  const top2 = top1 + panelHeight + PANEL_GAP;
  const height = top2 + panelHeight + 36;
  const maxRatio = Math.max(1.2, ...results.map((r) => r.ratio));
  const maxRss = Math.max(1, ...results.map((r) => r.peakRssMb));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">tributary benchmarks${results[0] ? ` — ${escape(machineLine(results[0]))}` : ''}</text>`,
    `<text x="12" y="${top1 - 12}" font-weight="bold">Throughput ÷ baseline in the same run (1 = as fast as the baseline)</text>`,
  ];
  results.forEach((r, i) => {
    const y = top1 + i * (BAR + GAP);
    const w = (r.ratio / maxRatio) * plot;
    out.push(
      `<text x="${LABEL - 8}" y="${y + BAR - 5}" text-anchor="end">${escape(r.name)}</text>`,
      `<rect x="${LABEL}" y="${y}" width="${w.toFixed(1)}" height="${BAR}" fill="${r.checks.every((c) => c.pass) ? '#4a7fb5' : '#c8553d'}"><title>${escape(`${r.value} ${r.unit} vs ${r.baseline.name} ${r.baseline.value} ${r.unit}`)}</title></rect>`,
      `<text x="${(LABEL + w + 5).toFixed(1)}" y="${y + BAR - 5}">${r.ratio}</text>`,
    );
  });
  const one = LABEL + plot / maxRatio;
  out.push(`<line x1="${one.toFixed(1)}" y1="${top1 - 4}" x2="${one.toFixed(1)}" y2="${top1 + panelHeight}" stroke="#333" stroke-dasharray="4 3"/>`);
  out.push(`<text x="12" y="${top2 - 12}" font-weight="bold">Peak RSS, MiB (highest measured process of the benchmark)</text>`);
  results.forEach((r, i) => {
    const y = top2 + i * (BAR + GAP);
    const w = (r.peakRssMb / maxRss) * plot;
    out.push(
      `<text x="${LABEL - 8}" y="${y + BAR - 5}" text-anchor="end">${escape(r.name)}</text>`,
      `<rect x="${LABEL}" y="${y}" width="${w.toFixed(1)}" height="${BAR}" fill="#7a9a5a"/>`,
      `<text x="${(LABEL + w + 5).toFixed(1)}" y="${y + BAR - 5}">${r.peakRssMb}</text>`,
    );
  });
  out.push(`<text x="12" y="${height - 12}" fill="#666">Red bars: a check of that benchmark failed (see RESULTS.md).</text>`, '</svg>');
  return out.join('\n') + '\n';
}

function machineLine(r: StoredResult): string {
  const m = r.machine;
  return `${m.cores} × ${m.cpus}, Node ${m.node}, ${r.date.slice(0, 10)}`;
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
