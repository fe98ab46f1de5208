/**
 * formats: `fromFiles` parsing a generated ~1 GiB file of each format (CSV, XML, JSON
 * array, NDJSON) through a pipeline into a sink that keeps nothing, against the bare
 * parser alone on the same file in the same run (csv-parse's stream, sax's parser, a
 * JSON.parse loop over lines). A second pipeline run on a file 4× smaller shows whether
 * memory grows with file size.
 *
 * Every measured run is a child process of its own, so its RSS is its own.
 *
 *   import { benchmark } from './formats';   // a Benchmark for bench/run.ts
 *   node dist/bench/formats.js [csv|xml|json|ndjson …]   // or alone: prints the result; a
 *                                                        // full run writes bench/results/formats.json
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { parse as csvParse } from 'csv-parse';
import sax from 'sax';
import { fromFiles, type FileFormat } from '../connectors/files';
import { Pipeline } from '../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../lib/sink';
import { answerParent, dataDir, machine, MB, resultsDir, round, runChild, sampleMemory, timed } from './harness';
import type { Benchmark, BenchmarkResult, Check, RunFigures } from './types';

export const name = 'formats';

const FORMATS: readonly FileFormat[] = ['csv', 'xml', 'json', 'ndjson'];
const EXTENSION: Record<FileFormat, string> = { csv: 'csv', xml: 'xml', json: 'json', ndjson: 'ndjson' };
/** The large file's size: 1 GiB, or TRIBUTARY_BENCH_FORMATS_MB for a quick look. */
const LARGE_BYTES = Number(process.env.TRIBUTARY_BENCH_FORMATS_MB ?? 1024) * MB;
/** The memory-scaling run reads a file this many times smaller. */
const SCALE = 4;
const RSS_LIMIT_MB = 200;
const RSS_GROWTH_LIMIT = 0.15;
const CHUNK_BYTES = 256 * 1024;

// ---------------------------------------------------------------------------------------
// The data: the same booking-like records in every format, about 250 bytes each.

interface DataFile {
  file: string;
  records: number;
  bytes: number;
}

const VENDORS = ['globetrek', 'skyway', 'staylodge', 'acme', 'nordtrip'];
const STATUSES = ['HK', 'XX', 'TK', 'UN'];
const CITIES = ['CDG', 'FRA', 'JFK', 'NRT', 'GRU', 'SYD', 'LHR', 'ZRH'];
const NAMES = ['Zoë Müller', 'Li, Wei', 'Ana "Nina" Souza', 'Ørjan Ås', 'José García', 'Smith, John'];

function recordOf(i: number) {
  // A cheap deterministic mix: the same file on every machine.
  const h = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  return {
    booking_id: `BK-${String(i).padStart(9, '0')}`,
    vendor: VENDORS[h % VENDORS.length]!,
    status: STATUSES[(h >>> 3) % STATUSES.length]!,
    booked_at: new Date(Date.UTC(2026, 0, 1) + (h % 31_536_000) * 1000).toISOString(),
    origin: CITIES[(h >>> 5) % CITIES.length]!,
    destination: CITIES[(h >>> 8) % CITIES.length]!,
    passengers: 1 + ((h >>> 11) % 6),
    total: `${(h % 500_000) / 100}`,
    currency: (h >>> 13) % 2 ? 'EUR' : 'USD',
    name: NAMES[(h >>> 17) % NAMES.length]!,
  };
}
type Row = ReturnType<typeof recordOf>;
const COLUMNS = Object.keys(recordOf(0)) as (keyof Row)[];

const csvField = (v: string | number) => {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};
const xmlText = (v: string | number) => String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

const WRITERS: Record<FileFormat, { head: string; row: (r: Row, first: boolean) => string; tail: string }> = {
  csv: { head: COLUMNS.join(',') + '\n', row: (r) => COLUMNS.map((c) => csvField(r[c])).join(',') + '\n', tail: '' },
  ndjson: { head: '', row: (r) => JSON.stringify(r) + '\n', tail: '' },
  json: { head: '[\n', row: (r, first) => (first ? '' : ',\n') + JSON.stringify(r), tail: '\n]\n' },
  xml: {
    head: '<?xml version="1.0" encoding="UTF-8"?>\n<Bookings xmlns:b="urn:bookings">\n',
    row: (r) =>
      `<b:Booking id="${r.booking_id}" vendor="${r.vendor}"><Status>${r.status}</Status><BookedAt>${r.booked_at}</BookedAt>` +
      `<Route from="${r.origin}" to="${r.destination}"/><Passengers>${r.passengers}</Passengers>` +
      `<Total currency="${r.currency}">${r.total}</Total><Lead><Name>${xmlText(r.name)}</Name></Lead></b:Booking>\n`,
    tail: '</Bookings>\n',
  },
};

/** The data file of `format` of about `bytes`, generated once into bench/data/formats/. */
async function dataFile(format: FileFormat, bytes: number): Promise<DataFile> {
  const dir = join(dataDir, 'formats');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bookings-${Math.round(bytes / MB)}MiB.${EXTENSION[format]}`);
  const metaFile = `${file}.meta.json`;
  if (existsSync(file) && existsSync(metaFile)) {
    const meta = JSON.parse(readFileSync(metaFile, 'utf8')) as DataFile;
    if (statSync(file).size === meta.bytes) return { ...meta, file };
  }
  console.log(`generating ${file} …`);
  const writer = WRITERS[format];
  const partial = `${file}.part`;
  const out = createWriteStream(partial);
  let written = 0;
  let records = 0;
  let chunk = writer.head;
  while (written + chunk.length < bytes) {
    chunk += writer.row(recordOf(records), records === 0);
    records++;
    if (chunk.length >= 1 << 20) {
      written += Buffer.byteLength(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  chunk += writer.tail;
  written += Buffer.byteLength(chunk);
  out.end(chunk);
  await once(out, 'finish');
  renameSync(partial, file);
  const meta: DataFile = { file, records, bytes: statSync(file).size };
  writeFileSync(metaFile, JSON.stringify(meta, null, 2));
  return meta;
}

// ---------------------------------------------------------------------------------------
// What a child measures

type Mode = 'tributary' | 'bare';

interface Measured {
  records: number;
  deadLettered: number;
  seconds: number;
  peakRssMb: number;
  maxRssMb: number;
  idleRssMb: number;
  peakHeapMb: number;
  cores: number;
  eventLoopBusy: number;
}

/** Acks every batch at once and keeps nothing. */
class NullSink<T> implements Sink<T> {
  readonly name = 'null';
  rows = 0;
  async write(batch: Batch<T>): Promise<void> {
    this.rows += batch.envelopes.length;
  }
}

async function throughPipeline(format: FileFormat, file: string): Promise<{ records: number; deadLettered: number }> {
  const sink = new NullSink<unknown>();
  const stats = await new Pipeline({
    name: 'formats',
    source: fromFiles({ paths: file, format, xml: { record: 'Booking' }, chunkBytes: CHUNK_BYTES }),
    sink,
    deadLetters: new NullSink<DeadLetter>(),
    batch: { rows: 10_000, maxWaitMs: 1000 },
  }).run();
  return { records: sink.rows, deadLettered: stats.deadLettered };
}

/** The parser alone: no envelopes, credits or batches, records counted and dropped. */
async function bare(format: FileFormat, file: string): Promise<number> {
  if (format === 'csv') {
    let records = 0;
    const parser = createReadStream(file, { highWaterMark: CHUNK_BYTES }).pipe(csvParse({ columns: true }));
    parser.on('data', () => records++);
    await once(parser, 'end');
    return records;
  }
  if (format === 'xml') {
    let records = 0;
    const parser = sax.parser(true, { position: true });
    parser.onclosetag = (tag) => {
      if (tag === 'b:Booking') records++;
    };
    for await (const chunk of createReadStream(file, { highWaterMark: CHUNK_BYTES, encoding: 'utf8' })) parser.write(chunk as string);
    parser.close();
    return records;
  }
  // A JSON.parse loop over lines; in the array file each element is a line of its own.
  let records = 0;
  let carry = '';
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK_BYTES, encoding: 'utf8' })) {
    const text = carry + (chunk as string);
    let start = 0;
    let newline = text.indexOf('\n');
    while (newline >= 0) {
      records += parseLine(text, start, newline, format);
      start = newline + 1;
      newline = text.indexOf('\n', start);
    }
    carry = text.slice(start);
  }
  records += parseLine(carry, 0, carry.length, format);
  return records;
}

function parseLine(text: string, start: number, end: number, format: FileFormat): number {
  if (format === 'json') {
    if (text.charCodeAt(start) !== 0x7b) return 0;
    if (text.charCodeAt(end - 1) === 0x2c) end--;
  } else if (end === start) return 0;
  JSON.parse(text.slice(start, end));
  return 1;
}

async function measure(mode: Mode, format: FileFormat, file: string): Promise<Measured> {
  const idleRssMb = round(process.memoryUsage().rss / MB, 1);
  const memory = sampleMemory(100);
  const run = await timed(async () => (mode === 'bare' ? { records: await bare(format, file), deadLettered: 0 } : throughPipeline(format, file)));
  const peaks = memory.stop();
  return {
    records: run.result.records,
    deadLettered: run.result.deadLettered,
    seconds: round(run.seconds, 2),
    peakRssMb: peaks.peakRssMb,
    maxRssMb: peaks.maxRssMb,
    idleRssMb,
    peakHeapMb: peaks.peakHeapMb,
    cores: run.cores,
    eventLoopBusy: run.eventLoopBusy,
  };
}

// ---------------------------------------------------------------------------------------
// The parent

interface FormatFigures {
  format: FileFormat;
  mbPerSecond: number;
  recordsPerSecond: number;
  bareMbPerSecond: number;
  bareRecordsPerSecond: number;
  ratio: number;
  peakRssMb: number;
  smallPeakRssMb: number;
}

function figures(label: string, data: DataFile, m: Measured): RunFigures & { mbPerSecond: number } {
  return {
    label,
    records: m.records,
    mb: round(data.bytes / MB, 0),
    seconds: m.seconds,
    rowsPerSecond: Math.round(m.records / m.seconds),
    mbPerSecond: round(data.bytes / MB / m.seconds, 1),
    peakRssMb: m.peakRssMb,
    maxRssMb: m.maxRssMb,
    idleRssMb: m.idleRssMb,
    peakHeapMb: m.peakHeapMb,
    cores: m.cores,
    eventLoopBusy: m.eventLoopBusy,
  };
}

/**
 * Runs the format benchmark: for each format, the bare parser and the pipeline on the
 * ~1 GiB file, and the pipeline on a file 4× smaller.
 */
export async function runFormats(formats: readonly FileFormat[] = FORMATS): Promise<BenchmarkResult & { formats: FormatFigures[] }> {
  const script = __filename;
  const runs: RunFigures[] = [];
  const checks: Check[] = [];
  const perFormat: FormatFigures[] = [];
  let records = 0;
  let bytes = 0;
  let seconds = 0;
  for (const format of formats) {
    const large = await dataFile(format, LARGE_BYTES);
    const small = await dataFile(format, LARGE_BYTES / SCALE);
    const child = (mode: Mode, data: DataFile) => runChild<Measured>(script, ['child', mode, format, data.file]);
    console.log(`${format}: bare parser …`);
    const b = await child('bare', large);
    console.log(`${format}: pipeline …`);
    const t = await child('tributary', large);
    console.log(`${format}: pipeline on the ${SCALE}× smaller file …`);
    const s = await child('tributary', small);
    const bareRun = figures(`${format} bare parser`, large, b);
    const pipeRun = figures(`${format} fromFiles → null sink`, large, t);
    const smallRun = figures(`${format} fromFiles → null sink, ${SCALE}× smaller`, small, s);
    runs.push(bareRun, pipeRun, smallRun);
    records += t.records;
    bytes += large.bytes;
    seconds += t.seconds;
    const growth = t.peakRssMb / s.peakRssMb - 1;
    checks.push(
      { name: `${format}: every record read`, claim: `${large.records.toLocaleString('en')} records, none dead-lettered`, actual: `${t.records.toLocaleString('en')} (+${t.deadLettered} dead letters), bare ${b.records.toLocaleString('en')}`, pass: t.records === large.records && b.records === large.records && t.deadLettered === 0 },
      { name: `${format}: peak RSS`, claim: `< ${RSS_LIMIT_MB} MiB`, actual: `${t.peakRssMb} MiB`, pass: t.peakRssMb < RSS_LIMIT_MB },
      { name: `${format}: RSS does not grow with file size`, claim: `${LARGE_BYTES / MB} MiB vs ${LARGE_BYTES / SCALE / MB} MiB file: < +${RSS_GROWTH_LIMIT * 100}%`, actual: `${t.peakRssMb} vs ${s.peakRssMb} MiB (${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(1)}%)`, pass: growth < RSS_GROWTH_LIMIT },
    );
    perFormat.push({
      format,
      mbPerSecond: pipeRun.mbPerSecond,
      recordsPerSecond: pipeRun.rowsPerSecond,
      bareMbPerSecond: bareRun.mbPerSecond,
      bareRecordsPerSecond: bareRun.rowsPerSecond,
      ratio: round(pipeRun.rowsPerSecond / bareRun.rowsPerSecond, 2),
      peakRssMb: t.peakRssMb,
      smallPeakRssMb: s.peakRssMb,
    });
  }
  // Headline: the format that keeps least of its bare parser's speed.
  const worst = perFormat.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  return {
    name,
    unit: 'rows/s',
    value: worst.recordsPerSecond,
    baseline: { name: `${worst.format}: bare parser`, value: worst.bareRecordsPerSecond },
    ratio: worst.ratio,
    peakRssMb: Math.max(...perFormat.map((f) => f.peakRssMb)),
    peakHeapMb: Math.max(...runs.filter((r) => r.label.includes('fromFiles')).map((r) => r.peakHeapMb)),
    records,
    bytes,
    seconds: round(seconds, 1),
    settings: { chunkBytes: CHUNK_BYTES, batch: { rows: 10_000, maxWaitMs: 1000 }, inFlight: 'defaults (30000 records, 64 MiB)', headline: 'the format with the lowest ratio to its bare parser' },
    runs,
    checks,
    formats: perFormat,
  };
}

export const benchmark: Benchmark = { name, run: () => runFormats() };

function table(result: Awaited<ReturnType<typeof runFormats>>): string {
  const rows = [
    ['format', 'fromFiles MB/s', 'records/s', 'bare MB/s', 'bare records/s', 'ratio', 'peak RSS MiB (1 GiB)', `peak RSS MiB (1/${SCALE})`],
    ...result.formats.map((f) => [f.format, f.mbPerSecond, f.recordsPerSecond.toLocaleString('en'), f.bareMbPerSecond, f.bareRecordsPerSecond.toLocaleString('en'), f.ratio, f.peakRssMb, f.smallPeakRssMb].map(String)),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
  const checks = result.checks.map((c) => `${c.pass ? 'PASS' : 'FAIL'}  ${c.name}: ${c.actual} (claim ${c.claim})`);
  return [...lines, '', ...checks].join('\n');
}

if (require.main === module) {
  const [first, ...rest] = process.argv.slice(2);
  if (first === 'child') {
    const [mode, format, file] = rest as [Mode, FileFormat, string];
    answerParent(() => measure(mode, format, file));
  } else {
    const chosen = [first, ...rest].filter((a): a is FileFormat => a !== undefined && FORMATS.includes(a as FileFormat));
    runFormats(chosen.length > 0 ? chosen : FORMATS).then(
      (result) => {
        // Only a run of every format at full size stands as the stored result.
        const complete = result.formats.length === FORMATS.length && LARGE_BYTES === 1024 * MB;
        if (complete) {
          mkdirSync(resultsDir, { recursive: true });
          writeFileSync(join(resultsDir, `${name}.json`), JSON.stringify({ ...result, machine: machine(), date: new Date().toISOString() }, null, 2) + '\n');
        }
        console.log(`\n${table(result)}\n\n${complete ? `(written to bench/results/${name}.json)` : '(a partial run: not stored)'}`);
      },
      (error: unknown) => {
        console.error(error);
        process.exitCode = 1;
      },
    );
  }
}
