import { expect } from 'chai';
import { renderChart } from '../../../bench/chart';
import type { StoredResult } from '../../../bench/types';

function result(name: string, ratio: number, peakRssMb: number, pass = true): StoredResult {
  return {
    name,
    unit: 'rows/s',
    value: Math.round(ratio * 1000),
    baseline: { name: 'raw <client> & co', value: 1000 },
    ratio,
    peakRssMb,
    peakHeapMb: 10,
    records: 1,
    bytes: 0,
    seconds: 1,
    runs: [],
    checks: [{ name: 'c', claim: 'x', actual: 'y', pass }],
    machine: { cpus: 'Test CPU', cores: 2, memGb: 4, node: 'v20.0.0', platform: 'linux-x64' },
    date: '2026-11-25T09:00:00.000Z',
  };
}

describe('bench chart', () => {
  it('draws a ratio bar and a memory bar per benchmark, scaled, with a line at 1 and failed checks in red', () => {
    const svg = renderChart([result('operators', 0.5, 100), result('formats', 1, 400, false)]);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).to.equal(true);
    expect(svg.trimEnd().endsWith('</svg>')).to.equal(true);
    const bars = [...svg.matchAll(/<rect x="190" y="[\d.]+" width="([\d.]+)"[^>]*fill="(#[0-9a-f]+)"/g)].map((m) => ({ width: Number(m[1]), fill: m[2] }));
    expect(bars).to.have.length(4);
    // Ratios share one scale: 0.5 is half of 1. Memory too: 100 is a quarter of 400.
    expect(bars[0]!.width / bars[1]!.width).to.be.closeTo(0.5, 0.01);
    expect(bars[2]!.width / bars[3]!.width).to.be.closeTo(0.25, 0.01);
    expect(bars[0]!.fill).to.equal('#4a7fb5');
    expect(bars[1]!.fill).to.equal('#c8553d');
    expect(svg).to.match(/<line [^>]*stroke-dasharray/);
    // Labels are escaped: the baseline name carries < and &.
    expect(svg).to.include('raw &lt;client&gt; &amp; co');
    expect(svg).to.not.include('raw <client>');
    expect(svg).to.include('2 × Test CPU, Node v20.0.0, 2026-11-25');
  });
});
