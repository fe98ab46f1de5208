import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inflateSync } from 'node:zlib';
import { tempDir } from '../../helpers';
import { ensureChromium } from '../../services';
import { tributary } from './run';


/** RGBA pixels of an 8-bit RGB or RGBA PNG (what Chromium writes). */
function pixels(png: Buffer): { width: number; height: number; rgba: Buffer } {
  let at = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const data: Buffer[] = [];
  while (at < png.length) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const body = png.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      expect(body[8], 'bit depth').to.equal(8);
      channels = body[9] === 6 ? 4 : body[9] === 2 ? 3 : 0;
      expect(channels, 'colour type').to.be.above(0);
    } else if (type === 'IDAT') data.push(body);
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(data));
  const stride = width * channels;
  const out = Buffer.alloc(width * height * 4);
  let previous = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? line[x - channels]! : 0;
      const b = previous[x]!;
      const c = x >= channels ? previous[x - channels]! : 0;
      const p = a + b - c;
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c;
      const add = [0, a, b, (a + b) >> 1, paeth][filter]!;
      line[x] = (line[x]! + add) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      out[(y * width + x) * 4] = line[x * channels]!;
      out[(y * width + x) * 4 + 1] = line[x * channels + 1]!;
      out[(y * width + x) * 4 + 2] = line[x * channels + 2]!;
      out[(y * width + x) * 4 + 3] = channels === 4 ? line[x * channels + 3]! : 255;
    }
    previous = line;
  }
  return { width, height, rgba: out };
}

describe('tributary report', function () {
  this.timeout(180_000);

  let chromium: string;
  before(async function () {
    this.timeout(600_000);
    chromium = await ensureChromium();
  });

  it('writes a page whose charts draw in headless Chromium, with no console errors', async () => {
    const dir = tempDir();
    try {
      const env = { TRIBUTARY_PATH: join(dir.path, 'store'), TRIBUTARY_QUERY_URL: undefined };
      expect((await tributary(['demo'], { env })).code).to.equal(0);
      const out = join(dir.path, 'report.html');
      const run = await tributary(['report', '-o', out], { env });
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.equal(`wrote ${out}\n`);
      const html = readFileSync(out, 'utf8');
      // Self-contained: nothing fetched, nothing run.
      expect(html).not.to.match(/<script|<link|src=|url\(/i);
      for (const title of ['Bookings per vendor per day', 'Revenue per vendor per day (EUR', 'Dead letters by reason']) expect(html).to.contain(title);

      const screenshot = join(dir.path, 'report.png');
      const { stderr } = await promisify(execFile)(
        chromium,
        ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--enable-logging=stderr', '--v=0', '--window-size=1000,3400', `--screenshot=${screenshot}`, `file://${out}`],
        { timeout: 120_000 },
      );
      expect(stderr.split('\n').filter((line) => /:CONSOLE[:(]/.test(line))).to.deep.equal([]);
      const { width, height, rgba } = pixels(readFileSync(screenshot));
      expect([width, height]).to.deep.equal([1000, 3400]);
      // Each chart is a band of rows holding the vendors' colours (bars), taller than the
      // legend's squares; bands are apart where headings stand between charts.
      const vendorColours = new Set(['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442']);
      const seen = new Set<string>();
      const bands: { from: number; to: number }[] = [];
      for (let y = 0; y < height; y++) {
        let coloured = false;
        for (let x = 0; x < width; x++) {
          const i = (y * width + x) * 4;
          const hex = `#${[rgba[i]!, rgba[i + 1]!, rgba[i + 2]!].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
          if (vendorColours.has(hex)) {
            seen.add(hex);
            coloured = true;
          }
        }
        if (!coloured) continue;
        const last = bands[bands.length - 1];
        if (last && y - last.to <= 12) last.to = y;
        else bands.push({ from: y, to: y });
      }
      expect([...seen].sort()).to.deep.equal([...vendorColours].sort());
      const currencies = new Set([...html.matchAll(/Revenue per vendor per day \((\w+)/g)].map((m) => m[1]));
      expect(currencies.size).to.be.above(1);
      // Bookings, one revenue chart per currency, dead letters.
      const charts = bands.filter((b) => b.to - b.from >= 40);
      expect(charts, JSON.stringify(bands)).to.have.length(1 + currencies.size + 1);
    } finally {
      dir.remove();
    }
  });
});
