import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { CacheKeys, columnsTag, queuePuts, resolveLayout } from '../../../connectors/redis/cache';
import { encodedRows } from '../../../lib/batch';

/** The commands `queuePuts` queues, read back from the Redis protocol bytes it wrote: each a list of arguments. */
function queuedCommands(keys: CacheKeys, rows: Record<string, unknown>[], now: number, encoded?: ReturnType<typeof encodedRows>): Buffer[][] {
  const written: Buffer[] = [];
  const pipeline = { sendCommand: (command: { toWritable(): Buffer }) => written.push(command.toWritable()) };
  queuePuts(pipeline as never, keys, rows, now, encoded);
  const bytes = Buffer.concat(written);
  const commands: Buffer[][] = [];
  let at = 0;
  const line = () => {
    const end = bytes.indexOf('\r\n', at);
    const text = bytes.toString('latin1', at, end);
    at = end + 2;
    return text;
  };
  while (at < bytes.length) {
    const count = line();
    expect(count[0]).to.equal('*');
    const args: Buffer[] = [];
    for (let i = 0; i < Number(count.slice(1)); i++) {
      const header = line();
      expect(header[0]).to.equal('$');
      const length = Number(header.slice(1));
      args.push(bytes.subarray(at, at + length));
      expect(bytes.toString('latin1', at + length, at + length + 2)).to.equal('\r\n');
      at += length + 2;
    }
    commands.push(args);
  }
  return commands;
}

/** Each booking's stored value by its entry, from the HSETs. */
function storedValues(commands: Buffer[][]): Map<string, string> {
  const values = new Map<string, string>();
  for (const args of commands) {
    if (args[0]!.toString() !== 'HSET') continue;
    for (let i = 2; i < args.length; i += 2) values.set(args[i]!.toString(), args[i + 1]!.toString());
  }
  return values;
}

describe('toRedisCache protocol bytes', () => {
  const keys = new CacheKeys(resolveLayout({}));
  const now = Date.parse('2026-12-03T12:00:00.000Z');

  it('stores each booking under the entry the reader looks it up by (its member hashed as text), read from bytes or from values', () => {
    const samples: string[][] = [
      ['skyway', 'SKY-00000001'],
      ['a'],
      ['a', 'b', 'c'],
      ['', 'x'],
      ['vendor', 'é—中文'],
      ['vendor', 'quote"inside'],
      ['vendor', 'back\\slash'],
      ['vendor', 'tab\there'],
      ['vendor', 'emoji 😀'],
      ['vendor', 'lone \ud800'],
      ['\u001f', 'x'],
      ['~\u007f', '\u0020'],
    ];
    let seed = 7;
    const unit = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      // The high bits: an LCG's low bits cycle.
      return [32, 65, 0x7f, 0xe9, 0x4e2d, 34, 92, 10][(seed >>> 16) % 8]!;
    };
    for (let n = 0; n < 200; n++) samples.push(Array.from({ length: 1 + (n % 3) }, (_, i) => String.fromCharCode(...Array.from({ length: (n + i) % 9 }, unit))));
    let stored = 0;
    for (const width of [1, 2, 3]) {
      const layout = new CacheKeys(resolveLayout({ keyFields: ['k0', 'k1', 'k2'].slice(0, width) }));
      const keyed = samples.filter((parts) => parts.length === width);
      const rows = keyed.map((parts) => ({ ...Object.fromEntries(parts.map((part, k) => [`k${k}`, part])), booked_at: now - 1000, updated_at: now - 500 }));
      const fromValues = storedValues(queuedCommands(layout, rows, now));
      const fromBytes = storedValues(queuedCommands(layout, [], now, encodedRows(rows.map((row) => JSON.stringify(row)))));
      expect([...fromBytes.keys()]).to.deep.equal([...fromValues.keys()]);
      // A booking with an empty key part is not stored.
      const expected = new Set(keyed.filter((parts) => !parts.includes('')).map((parts) => layout.entry(layout.member(parts))));
      expect(new Set(fromBytes.keys())).to.deep.equal(expected);
      stored += expected.size;
    }
    expect(stored).to.be.greaterThan(150);
    // A control character left raw in an encoded row (JSON.stringify would escape it) is read as the text it stands for.
    const raw = encodedRows([`{"vendor":"a\tb","booking_id":"B\u0001","booked_at":${now - 1000},"updated_at":${now - 500}}`]);
    expect([...storedValues(queuedCommands(keys, [], now, raw)).keys()]).to.deep.equal([keys.entry(keys.member(['a\tb', 'B\u0001']))]);
    // Escapes JSON.stringify would not write are read as the text they stand for, not copied.
    const escaped = encodedRows([`{"vendor":"a\\/b","booking_id":"B\\u0041","booked_at":${now - 1000},"updated_at":${now - 500}}`]);
    expect([...storedValues(queuedCommands(keys, [], now, escaped)).keys()]).to.deep.equal([keys.entry(keys.member(['a/b', 'BA']))]);
  });

  it('stores each booking under its entry as <version>|<time>|<row>, digits exact on both sides of 32 bits and of every eight digits', () => {
    const times = [0, 7, 99_999_999, 100_000_000, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1_000_000_000_001, 9_999_999_999_999, Number.MAX_SAFE_INTEGER, 2.5];
    const rows = times.map((version, i) => ({ vendor: 'skyway', booking_id: `B-${i}`, booked_at: now - 1000 - i, updated_at: version, note: 'é' }));
    // Encoded as a pipeline hands them over: the digits are then written into the value beside the row's bytes.
    const values = storedValues(queuedCommands(keys, rows, now, encodedRows(rows.map((row) => JSON.stringify(row)))));
    expect(values.size).to.equal(rows.length);
    for (const row of rows) {
      const entry = keys.entry(keys.member([row.vendor, row.booking_id]));
      expect(values.get(entry), entry).to.equal(`${row.updated_at}|${row.booked_at}|${JSON.stringify(row)}`);
    }
  });

  it('starts each put afresh: rows of a put that failed part way, or of the put before, are never written again', () => {
    const row = (id: string, extra: Record<string, unknown> = {}) => ({ vendor: 'acme', booking_id: id, booked_at: now - 1000, updated_at: now - 500, ...extra });
    // 2,500 rows: two transactions, the second cut short by a row JSON cannot write.
    const failing = [...Array.from({ length: 2_500 }, (_, i) => row(`F-${i}`)), row('BAD', { n: 1n }), row('AFTER')];
    expect(() => queuedCommands(keys, failing, now)).to.throw(TypeError);
    const values = storedValues(queuedCommands(keys, [row('ONLY')], now));
    expect([...values.keys()]).to.deep.equal([keys.entry(keys.member(['acme', 'ONLY']))]);
    // And after a put that ended well, with more rows than one transaction holds.
    queuedCommands(keys, Array.from({ length: 2_001 }, (_, i) => row(`G-${i}`)), now);
    expect([...storedValues(queuedCommands(keys, [row('NEXT')], now)).keys()]).to.deep.equal([keys.entry(keys.member(['acme', 'NEXT']))]);
  });

  it('closes a transaction once its rows reach 4 MiB, counting encoded rows and JSON alike', () => {
    // Four rows of 1.5 MiB: three fill a transaction past 4 MiB, the fourth starts the next.
    const rows = Array.from({ length: 4 }, (_, i) => ({ vendor: 'acme', booking_id: `L-${i}`, booked_at: now - 1000, updated_at: now - 500, text: 'x'.repeat(1.5 * 2 ** 20) }));
    const transactions = (commands: Buffer[][]) => commands.filter((args) => args[0]!.toString() === 'MULTI').length;
    expect(transactions(queuedCommands(keys, rows, now))).to.equal(2);
    expect(transactions(queuedCommands(keys, rows, now, encodedRows(rows.map((row) => JSON.stringify(row)))))).to.equal(2);
  });

  it('stores an array row after its columns\' tag and an object row as it is, the columns kept under the tag in each transaction', () => {
    const columns = ['vendor', 'booking_id', 'booked_at', 'updated_at', 'note'];
    const rows = Array.from({ length: 2_003 }, (_, i) => ({ vendor: 'skyway', booking_id: `B-${i}`, booked_at: now - 1000 - i, updated_at: now - i, note: i % 2 ? null : 'é' }));
    // As ClickHouse's sink writes them: arrays of its columns, and an object where an array would not say the same.
    const lines = rows.map((row, i) => (i === 1 ? JSON.stringify(row) : JSON.stringify(columns.map((c) => row[c as keyof typeof row]))));
    const tag = columnsTag(columns);
    expect(tag).to.equal(createHash('sha256').update(JSON.stringify(columns)).digest('hex').slice(0, 16));
    expect(columnsTag([...columns]), 'by the list, not the array').to.equal(tag);
    expect(columnsTag(columns.slice(0, 4))).to.not.equal(tag);
    const commands = queuedCommands(keys, rows, now, { ...encodedRows(lines), columns });
    const values = storedValues(commands);
    rows.forEach((row, i) => {
      const entry = keys.entry(keys.member([row.vendor, row.booking_id]));
      expect(values.get(entry), entry).to.equal(`${row.updated_at}|${row.booked_at}|${i === 1 ? '' : tag}${lines[i]}`);
    });
    // Each transaction names the columns of its tag, after its rows and before its EXEC.
    const names = commands.map((args) => args[0]!.toString());
    const columnSets = commands.flatMap((args, i) => (args[0]!.toString() === 'HSET' && args[1]!.toString() === keys.columns ? [i] : []));
    expect(columnSets).to.have.length(2);
    for (const at of columnSets) {
      expect(commands[at]!.slice(2).map(String)).to.deep.equal([tag, JSON.stringify(columns)]);
      expect(names.slice(at + 1)).to.include('EXEC');
      expect(names.lastIndexOf('MULTI', at)).to.be.greaterThan(names.lastIndexOf('EXEC', at));
    }
    // Without columns (JSON objects only), no tag and no list.
    const plain = queuedCommands(keys, rows.slice(0, 3), now, encodedRows(rows.slice(0, 3).map((row) => JSON.stringify(row))));
    expect(plain.some((args) => args[1]?.toString() === keys.columns)).to.equal(false);
  });

  it('reads a row from its encoded bytes as from its value: the same commands, byte for byte, for hostile rows', () => {
    // mulberry32 (a bare LCG's low bits cycle, and `% n` reads them).
    let seed = 5;
    const next = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
      return ((x ^ (x >>> 14)) >>> 0) % n;
    };
    const texts = ['skyway', 'a"b', 'back\\slash', 'é中😀', 'lone \ud800', 'tab\t', '', ' ', '1e3', 'x'.repeat(300)];
    const parts = () => [texts[next(texts.length)], 42, -0.5, 1e21, null, true, undefined, { vendor: 'x' }, ['x']][next(9)];
    const times = () => [now - 1000 * next(90_000), new Date(now - 60_000 * next(2_000)).toISOString(), '2026-12-03 10:00:00.123', '2026-12-02T23:00:00+01:00', '2026-02-29T10:00:00.000Z', 'soon', null, now + 1e9, -5][next(9)];
    const rows = Array.from({ length: 3_000 }, (_, i) => {
      const row: Record<string, unknown> = { vendor: parts(), booking_id: next(4) > 0 ? `B-${next(2_500)}` : parts(), booked_at: times(), updated_at: times(), customer_token: parts(), note: texts[i % texts.length] };
      // Key order and keys left out vary as an upstream encoder would have them.
      return next(2) ? row : Object.fromEntries(Object.entries(row).reverse());
    });
    const customers = new CacheKeys(resolveLayout({ customerField: 'customer_token' }));
    const fromValues = queuedCommands(customers, rows, now);
    const fromBytes = queuedCommands(customers, [], now, encodedRows(rows.map((row) => JSON.stringify(row))));
    expect(fromBytes.length).to.be.greaterThan(10);
    expect(fromBytes.map((args) => Buffer.concat(args).toString('base64'))).to.deep.equal(fromValues.map((args) => Buffer.concat(args).toString('base64')));
    // As arrays of columns: the same entries, versions and indexes; each value the array after its tag.
    const columns = ['note', 'customer_token', 'updated_at', 'vendor', 'booked_at', 'booking_id'];
    const arrays = queuedCommands(customers, [], now, { ...encodedRows(rows.map((row) => JSON.stringify(columns.map((c) => row[c] ?? null)))), columns });
    const withoutValues = (commands: Buffer[][]) => commands.filter((args) => args[1]?.toString() !== customers.columns).map((args) => (args[0]!.toString() === 'HSET' ? args.filter((_, i) => i < 2 || i % 2 === 0) : args).map(String));
    expect(withoutValues(arrays)).to.deep.equal(withoutValues(fromValues));
  });

  it("lists each booking read from bytes in its own vendor's time bucket, vendors of one length taking turns", () => {
    const rows = Array.from({ length: 60 }, (_, i) => ({ vendor: ['acme', 'acmf', 'bcme'][i % 3], booking_id: `B-${i}`, booked_at: now - 1000, updated_at: now - 500 }));
    const fromBytes = queuedCommands(keys, [], now, encodedRows(rows.map((row) => JSON.stringify(row))));
    const guard = fromBytes.find((args) => args[0]!.toString() === 'EVAL')!;
    // After the script, its 0 keys, the rows, the cut and the prefix: each vendor's list and its end.
    expect(guard.slice(6).filter((_, i) => i % 2 === 0).map(String)).to.deep.equal(['acme', 'acmf', 'bcme'].map((vendor) => keys.vendorBucket(vendor, Math.floor((now - 1000) / keys.bucketMs))));
    expect(fromBytes.map((args) => Buffer.concat(args).toString('base64'))).to.deep.equal(queuedCommands(keys, rows, now).map((args) => Buffer.concat(args).toString('base64')));
  });

  it('copies encoded rows from where they lie in a larger buffer', () => {
    const rows = Array.from({ length: 50 }, (_, i) => ({ vendor: i % 2 ? 'acme' : 'globex', booking_id: `B-${i}`, booked_at: new Date(now - 60_000 * i).toISOString(), updated_at: new Date(now - i).toISOString(), text: 'x'.repeat(i) }));
    const encoded = encodedRows(rows.map((row) => JSON.stringify(row)));
    // The body as a batch holds it: a view at an offset of a larger buffer.
    const larger = Buffer.alloc(encoded.body.length + 100, 0x21);
    encoded.body.copy(larger, 37);
    const values = storedValues(queuedCommands(keys, rows, now, { body: larger.subarray(37, 37 + encoded.body.length), ends: encoded.ends }));
    for (const row of rows) {
      const entry = keys.entry(keys.member([row.vendor, row.booking_id]));
      expect(values.get(entry)).to.equal(`${Date.parse(row.updated_at)}|${Date.parse(row.booked_at)}|${JSON.stringify(row)}`);
    }
  });
});
