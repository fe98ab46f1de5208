import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { CacheKeys, columnsTag, queuePuts, resolveLayout, storedBooking, timeMs } from '../../../connectors/redis/cache';
import { random } from '../../../examples/bookings/generate';
import { encodedRows } from '../../../lib/batch';
import { ConfigError } from '../../../lib/errors';

/** The commands `queuePuts` queues, read back from the Redis protocol bytes it wrote: each a list of arguments. */
function queuedCommands(keys: CacheKeys, rows: Record<string, unknown>[], now: number, encoded?: ReturnType<typeof encodedRows>): Buffer[][] {
  return queued(keys, rows, now, encoded).commands;
}

/** `queuedCommands`, and the rows `queuePuts` did not queue. */
function queued(keys: CacheKeys, rows: Record<string, unknown>[], now: number, encoded?: ReturnType<typeof encodedRows>): { commands: Buffer[][]; unqueued: ReturnType<typeof queuePuts> } {
  const written: Buffer[] = [];
  const unqueued = queuePuts((bytes) => written.push(bytes), keys, rows, now, encoded);
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
  return { commands, unqueued };
}

/** The arguments of each transaction's GUARD: the EVALs beside RESTORE's (which has 4). */
function guards(commands: Buffer[][]): Buffer[][] {
  return commands.filter((args) => args[0]!.toString() === 'EVAL' && args.length > 4);
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
  /** The entry of the booking with these key parts. */
  const entryOf = (...parts: string[]) => keys.entry(keys.member(parts));

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
    const rng = random(7);
    const unit = () => [32, 65, 0x7f, 0xe9, 0x4e2d, 34, 92, 10][Math.floor(rng() * 8)]!;
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
    expect([...storedValues(queuedCommands(keys, [], now, raw)).keys()]).to.deep.equal([entryOf('a\tb', 'B\u0001')]);
    // Escapes JSON.stringify would not write are read as the text they stand for, not copied.
    const escaped = encodedRows([`{"vendor":"a\\/b","booking_id":"B\\u0041","booked_at":${now - 1000},"updated_at":${now - 500}}`]);
    expect([...storedValues(queuedCommands(keys, [], now, escaped)).keys()]).to.deep.equal([entryOf('a/b', 'BA')]);
  });

  it('stores each booking under its entry as <version>|<time>|<row>, digits exact on both sides of 32 bits and of every eight digits', () => {
    const times = [0, 7, 99_999_999, 100_000_000, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1_000_000_000_001, 9_999_999_999_999, Number.MAX_SAFE_INTEGER, 2.5];
    const rows = times.map((version, i) => ({ vendor: 'skyway', booking_id: `B-${i}`, booked_at: now - 1000 - i, updated_at: version, note: 'é' }));
    // Encoded as a pipeline hands them over: the digits are then written into the value beside the row's bytes.
    const values = storedValues(queuedCommands(keys, rows, now, encodedRows(rows.map((row) => JSON.stringify(row)))));
    expect(values.size).to.equal(rows.length);
    for (const row of rows) {
      const entry = entryOf(row.vendor, row.booking_id);
      expect(values.get(entry), entry).to.equal(`${row.updated_at}|${row.booked_at}|${JSON.stringify(row)}`);
    }
  });

  it('starts each put afresh: rows of a put that failed part way, or of the put before, are never written again', () => {
    const row = (id: string, extra: Record<string, unknown> = {}) => ({ vendor: 'acme', booking_id: id, booked_at: now - 1000, updated_at: now - 500, ...extra });
    // 2,500 rows: two transactions, the second cut short by a row JSON cannot write.
    const failing = [...Array.from({ length: 2_500 }, (_, i) => row(`F-${i}`)), row('BAD', { n: 1n }), row('AFTER')];
    expect(() => queuedCommands(keys, failing, now)).to.throw(TypeError);
    const values = storedValues(queuedCommands(keys, [row('ONLY')], now));
    expect([...values.keys()]).to.deep.equal([entryOf('acme', 'ONLY')]);
    // And after a put that ended well, with more rows than one transaction holds.
    queuedCommands(keys, Array.from({ length: 2_001 }, (_, i) => row(`G-${i}`)), now);
    expect([...storedValues(queuedCommands(keys, [row('NEXT')], now)).keys()]).to.deep.equal([entryOf('acme', 'NEXT')]);
  });

  it('closes a transaction once its rows reach 4 MiB, counting encoded rows and JSON alike', () => {
    // Four rows of 1.5 MiB: three fill a transaction past 4 MiB, the fourth starts the next.
    const rows = Array.from({ length: 4 }, (_, i) => ({ vendor: 'acme', booking_id: `L-${i}`, booked_at: now - 1000, updated_at: now - 500, text: 'x'.repeat(1.5 * 2 ** 20) }));
    const transactions = (commands: Buffer[][]) => commands.filter((args) => args[0]!.toString() === 'MULTI').length;
    expect(transactions(queuedCommands(keys, rows, now))).to.equal(2);
    expect(transactions(queuedCommands(keys, rows, now, encodedRows(rows.map((row) => JSON.stringify(row)))))).to.equal(2);
    // Exactly at the bound: two rows of 2 MiB close it; one byte less lets the third row in.
    for (const [bytes, expected] of [[2 ** 21, 2], [2 ** 21 - 1, 1]] as const) {
      const sized = (i: number, size: number) => {
        const row = { vendor: 'acme', booking_id: `E-${i}`, booked_at: now - 1000, updated_at: now - 500, text: '' };
        return { ...row, text: 'x'.repeat(size - JSON.stringify(row).length) };
      };
      const exact = [sized(0, 2 ** 21), sized(1, bytes), sized(2, 100)];
      expect(transactions(queuedCommands(keys, exact, now)), `${bytes}`).to.equal(expected);
      expect(transactions(queuedCommands(keys, exact, now, encodedRows(exact.map((row) => JSON.stringify(row))))), `${bytes}, encoded`).to.equal(expected);
    }
  });

  it('takes a booking whose TTL ends after now, not one whose TTL ends at now', () => {
    const ttlMs = 86_400_000;
    const rows = [0, 1].map((ms) => ({ vendor: 'acme', booking_id: `T-${ms}`, booked_at: now - ttlMs + ms, updated_at: now }));
    const { commands, unqueued } = queued(keys, rows, now);
    expect(unqueued).to.deep.equal({ expired: 1, ahead: 0, unkeyed: 0 });
    expect([...storedValues(commands).keys()]).to.deep.equal([entryOf('acme', 'T-1')]);
    expect(storedBooking(`1|${now - ttlMs}|{}`, ttlMs, now)).to.equal(undefined);
    expect(storedBooking(`1|${now - ttlMs + 1}|{"a":"|"}`, ttlMs, now)).to.deep.equal({ time: now - ttlMs + 1, row: '{"a":"|"}' });
  });

  it('takes a booking no further ahead of now than maxAheadMs (by default the TTL), not one later: a time in the year 9999 would keep it for ever', () => {
    const ttlMs = 86_400_000;
    for (const [layout, ahead] of [
      [keys, ttlMs],
      [new CacheKeys(resolveLayout({ maxAheadMs: 0 })), 0],
      [new CacheKeys(resolveLayout({ ttlMs: 3_600_000 })), 3_600_000],
    ] as const) {
      const times = [now, now + ahead, now + ahead + 1, Date.parse('9999-12-31T23:59:59.999Z')];
      const rows = times.map((time, i) => ({ vendor: 'acme', booking_id: `A-${i}`, booked_at: time, updated_at: now }));
      for (const { commands, unqueued } of [queued(layout, rows, now), queued(layout, [], now, encodedRows(rows.map((row) => JSON.stringify(row))))]) {
        expect(unqueued, `${ahead}`).to.deep.equal({ expired: 0, ahead: 2, unkeyed: 0 });
        expect([...storedValues(commands).keys()], `${ahead}`).to.have.members([layout.entry(layout.member(['acme', 'A-0'])), layout.entry(layout.member(['acme', 'A-1']))]);
        // Where the two not cached lie is marked, and marks past the TTL are dropped.
        const marks = commands.filter((args) => args[1]?.toString() === layout.ahead).map((args) => args.map(String));
        const expected = [times[2]!, times[3]!].flatMap((time) => {
          const [member, end] = layout.aheadMark(time, now);
          return [String(end), member];
        });
        expect(marks, `${ahead}`).to.deep.equal([
          ['ZADD', layout.ahead, ...expected],
          ['ZREMRANGEBYSCORE', layout.ahead, '-inf', String(now - layout.layout.ttlMs)],
        ]);
      }
    }
  });

  it('marks a booking too far ahead to cache in a span holding its time: a bucket near now, wider spans further on, a few hundred of them for any times', () => {
    expect(keys.aheadMark(now + 1, now)).to.deep.equal([`0:${Math.floor((now + 1) / keys.bucketMs)}`, (Math.floor((now + 1) / keys.bucketMs) + 1) * keys.bucketMs]);
    const members = new Set<string>();
    const rng = random(7);
    const far = 8.64e15;
    for (let i = 0; i < 100_000; i++) {
      // Times spread over every order of magnitude ahead, up to the last a Date holds.
      const time = now + 1 + Math.floor(Math.exp(rng() * Math.log(far - now)));
      const [member, end] = keys.aheadMark(time, now);
      const [start, stop] = keys.aheadSpan(member, end);
      expect(start <= time && time < stop && stop === end, `${time} in ${member}`).to.equal(true);
      const level = Number(member.split(':')[0]);
      // The finest span whose 64 spans from now reach the time.
      expect(time - now < 64 * (end - start) && (level === 0 || time - now >= end - start), `${time}: ${member}`).to.equal(true);
      members.add(member);
    }
    for (const time of [now + 64 * keys.bucketMs - 1, now + 64 * keys.bucketMs]) members.add(keys.aheadMark(time, now)[0]);
    expect(keys.aheadMark(now + 64 * keys.bucketMs - 1, now)[0].startsWith('0:')).to.equal(true);
    expect(keys.aheadMark(now + 64 * keys.bucketMs, now)[0].startsWith('1:')).to.equal(true);
    expect(members.size).to.be.within(100, 64 * 2 * 7);
  });

  it('reads maxAheadMs as an integer of at least 0, the TTL when left out', () => {
    expect(resolveLayout({ ttlMs: 7_200_000 }).maxAheadMs).to.equal(7_200_000);
    expect(resolveLayout({ ttlMs: 7_200_000, maxAheadMs: 0 }).maxAheadMs).to.equal(0);
    for (const maxAheadMs of [-1, 1.5, '1000', Infinity, NaN]) {
      expect(() => resolveLayout({ maxAheadMs: maxAheadMs as never }), String(maxAheadMs)).to.throw(ConfigError, `maxAheadMs must be an integer >= 0, got ${typeof maxAheadMs === 'string' ? `"${maxAheadMs}"` : String(maxAheadMs)}`);
    }
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
      const entry = entryOf(row.vendor, row.booking_id);
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
    const rng = random(5);
    const next = (n: number) => Math.floor(rng() * n);
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
    const guard = guards(fromBytes)[0]!;
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
      const entry = entryOf(row.vendor, row.booking_id);
      expect(values.get(entry)).to.equal(`${Date.parse(row.updated_at)}|${Date.parse(row.booked_at)}|${JSON.stringify(row)}`);
    }
  });
  it('stores keys of every length an entry header can take (MessagePack str 8, 16 and 32), plain or escaped, from bytes or from values', () => {
    // Entries of 255 and 256 bytes, of 65,535 and 65,536 (a member is the id and 11 bytes, its entry 2 or 3 more), escaped (written as text) or plain (copied); last, a plain key longer than any before it (the member's buffer grows for it).
    const ids = [241, 242, 243, 244, 300, 1500, 65_521, 65_522, 65_523, 65_524, 70_000].flatMap((length) => ['x'.repeat(length), `"${'é'.repeat(length >> 1)}${length}`]);
    ids.push('y'.repeat(1 << 21));
    const rows = ids.map((id, i) => ({ vendor: 'acme', booking_id: id, booked_at: now - 1000 - i, updated_at: now - 500 }));
    // From bytes first: read from values, the longest key would grow the member's buffer first.
    for (const commands of [queuedCommands(keys, [], now, encodedRows(rows.map((row) => JSON.stringify(row)))), queuedCommands(keys, rows, now)]) {
      const values = storedValues(commands);
      for (const row of rows) expect(values.get(entryOf(row.vendor, row.booking_id)), `${row.booking_id.length} units`).to.equal(`${row.updated_at}|${row.booked_at}|${JSON.stringify(row)}`);
      // GUARD's argument: each entry as the MessagePack string cmsgpack reads.
      const guard = guards(commands)[0]!;
      const entries = new Set(unpackStrings(guard[3]!));
      for (const row of rows) expect(entries.has(entryOf(row.vendor, row.booking_id))).to.equal(true);
    }
  });

  it('lists bookings of any time ahead in their own vendor bucket (the first 64 buckets from the cut numbered in an array, later ones in a map)', () => {
    const hour = 3_600_000;
    // Two bookings in each bucket: each bucket listed once.
    // A layout that caches bookings up to 500 days ahead (a departure time, say).
    const ahead = new CacheKeys(resolveLayout({ maxAheadMs: 500 * 24 * hour }));
    const rows = [-20, -20, 39, 39, 40, 40, 41, 100, 100, 24 * 400, 24 * 400].map((hours, i) => ({ vendor: 'acme', booking_id: `B-${i}`, booked_at: now + hours * hour + (i % 2), updated_at: now }));
    const bucketOf = (row: (typeof rows)[number]) => ahead.vendorBucket('acme', Math.floor(row.booked_at / ahead.bucketMs));
    for (const commands of [queuedCommands(ahead, rows, now), queuedCommands(ahead, [], now, encodedRows(rows.map((row) => JSON.stringify(row))))]) {
      const guard = guards(commands)[0]!;
      const lists = guard.slice(6).filter((_, i) => i % 2 === 0).map(String);
      expect(lists).to.deep.equal([...new Set(rows.map(bucketOf))]);
      // Each row's list number (the last of its shard group's items) names its own bucket.
      const items = unpackItems(guard[3]!);
      const listOf = new Map<string, number>();
      for (let g = 0; g < items.length; ) {
        const c = items[g + 1] as number;
        for (let j = 0; j < c; j++) listOf.set(items[g + 2 + j] as string, items[g + 2 + 2 * c + j] as number);
        g += 2 + 3 * c;
      }
      for (const row of rows) expect(lists[listOf.get(entryOf(row.vendor, row.booking_id))! - 1]).to.equal(bucketOf(row));
    }
  });

  it('indexes a booking by customer only when it has one', () => {
    const withCustomers = new CacheKeys(resolveLayout({ customerField: 'customer_token' }));
    const rows = [
      { vendor: 'acme', booking_id: 'B-1', booked_at: now - 1000, updated_at: now, customer_token: 'tok-1' },
      { vendor: 'acme', booking_id: 'B-2', booked_at: now - 1000, updated_at: now, customer_token: '' },
      { vendor: 'acme', booking_id: 'B-3', booked_at: now - 1000, updated_at: now, customer_token: 7 },
      { vendor: 'acme', booking_id: 'B-4', booked_at: now - 1000, updated_at: now },
    ];
    for (const commands of [queuedCommands(withCustomers, rows, now), queuedCommands(withCustomers, [], now, encodedRows(rows.map((row) => JSON.stringify(row))))]) {
      const indexed = commands.filter((args) => args[0]!.toString() === 'ZADD' && args[1]!.toString() !== withCustomers.customerBuckets).flatMap((args) => args.slice(3).filter((_, i) => i % 2 === 0).map(String));
      expect(indexed).to.deep.equal([withCustomers.customerEntry('tok-1', now - 1000, withCustomers.entry(withCustomers.member(['acme', 'B-1'])))]);
    }
  });

  it('closes a transaction at a booking it holds already, also one whose slot in its table was taken by another booking first', () => {
    // Two bookings whose hashes share their low 12 bits (the table's 4,096 slots): the second lands one slot on.
    const home = new Map<number, number>();
    let pair: [number, number] | undefined;
    for (let i = 0; pair === undefined; i++) {
      const slot = keys.hash(keys.member(['acme', `B-${i}`])) & 4095;
      const first = home.get(slot);
      if (first === undefined) home.set(slot, i);
      else pair = [first, i];
    }
    const row = (i: number, updated: number) => ({ vendor: 'acme', booking_id: `B-${i}`, booked_at: now - 1000, updated_at: updated });
    const rows = [row(pair[0], now), row(pair[1], now), row(pair[1], now - 1), row(pair[0], now - 1)];
    for (const commands of [queuedCommands(keys, rows, now), queuedCommands(keys, [], now, encodedRows(rows.map((r) => JSON.stringify(r))))]) {
      // Each transaction names a booking once: [first, second] | [second again, first again].
      expect(guards(commands).map((args) => unpackStrings(args[3]!).sort())).to.deep.equal([
        [pair[0], pair[1]].map((i) => entryOf('acme', `B-${i}`)).sort(),
        [pair[0], pair[1]].map((i) => entryOf('acme', `B-${i}`)).sort(),
      ]);
    }
  });

  it('reads rows that are not objects, or lack a key, time or version, as unkeyed', () => {
    const rows = [null, 'B-1', 7, [], { vendor: 'acme', booking_id: 'B-1', booked_at: now - 1000 }, { vendor: 'acme', booked_at: now - 1000, updated_at: now }] as unknown as Record<string, unknown>[];
    expect(queued(keys, rows, now)).to.deep.equal({ commands: [], unqueued: { expired: 0, ahead: 0, unkeyed: 6 } });
  });
});

/** The items of a MessagePack array as cmsgpack reads them: strings, integers and floats (what GUARD's argument holds). */
function unpackItems(bytes: Buffer): (string | number)[] {
  expect(bytes[0]).to.equal(0xdd);
  const count = bytes.readUInt32BE(1);
  const items: (string | number)[] = [];
  let at = 5;
  for (let i = 0; i < count; i++) {
    const type = bytes[at]!;
    if (type < 0x80) {
      items.push(type);
      at += 1;
    } else if (type === 0xcb) {
      items.push(bytes.readDoubleBE(at + 1));
      at += 9;
    } else {
      const [header, length] = type === 0xd9 ? [2, bytes[at + 1]!] : type === 0xda ? [3, bytes.readUInt16BE(at + 1)] : type === 0xdb ? [5, bytes.readUInt32BE(at + 1)] : [0, -1];
      expect(length, `type 0x${type.toString(16)}`).to.be.at.least(0);
      // The narrowest header that holds the length, as MessagePack asks.
      expect(header).to.equal(length < 0x100 ? 2 : length < 0x10000 ? 3 : 5);
      items.push(bytes.toString('utf8', at + header, at + header + length));
      at += header + length;
    }
  }
  expect(at).to.equal(bytes.length);
  return items;
}

function unpackStrings(bytes: Buffer): string[] {
  return unpackItems(bytes).filter((item): item is string => typeof item === 'string');
}

describe('timeMs: the time of a booking', () => {
  it('reads ISO 8601 in UTC as Date.parse does, whatever is wrong in it', () => {
    const rng = random(7);
    const below = (n: number) => Math.floor(rng() * n);
    const texts: string[] = [];
    for (let i = 0; i < 2000; i++) texts.push(new Date(Date.UTC(1900, 0, 1) + below(300 * 366) * 86_400_000 + below(86_400_000)).toISOString());
    // Every character of a valid time replaced by each of these: separators, digits, letters, bytes past ASCII.
    const base = '2026-12-13T14:15:16.789Z';
    for (let at = 0; at < base.length; at++) for (const c of '0159-:T.Z z/+a\u00e9') texts.push(base.slice(0, at) + c + base.slice(at + 1));
    // Days Date.parse judges (it reads the 30th of February as 2 March), hours 24, leap seconds, years before 100 and far ahead.
    texts.push('2026-02-29T10:00:00.000Z', '2024-02-29T10:00:00.000Z', '2026-02-30T10:00:00.000Z', '2026-04-31T10:00:00.000Z', '2026-03-01T24:00:00.000Z', '2026-03-01T23:59:60.000Z', '0099-03-01T10:00:00.000Z', '0100-03-01T10:00:00.000Z', '9999-12-31T23:59:59.999Z');
    // Each field one past its range, and at zero.
    texts.push('2026-00-13T14:15:16.789Z', '2026-13-13T14:15:16.789Z', '2026-12-00T14:15:16.789Z', '2026-12-13T14:60:16.789Z', '0000-12-13T14:15:16.789Z', '2026-12-13T00:00:00.000Z');
    texts.push('2026-03-01T10:00:00Z', '2026-03-01T10:00:00.1Z', '2026-03-01T10:00:00.1234Z', '2026-03-01T10:00Z');
    for (const text of texts) {
      const parsed = Date.parse(text);
      expect(timeMs(text), text).to.equal(Number.isFinite(parsed) ? parsed : undefined);
    }
  });

  it('reads a time without a zone as UTC (ClickHouse text), one with an offset by it; epoch ms as they are', () => {
    const tz = process.env.TZ;
    // A zone off UTC by a fraction of an hour: local time would show.
    process.env.TZ = 'Asia/Kolkata';
    try {
      const at = Date.UTC(2026, 2, 1, 10, 0, 0);
      expect(timeMs('2026-03-01 10:00:00')).to.equal(at);
      expect(timeMs('2026-03-01T10:00:00')).to.equal(at);
      expect(timeMs('2026-03-01 10:00:00.123')).to.equal(at + 123);
      expect(timeMs('2026-03-01T10:00:00z')).to.equal(at);
      expect(timeMs('2026-03-01T12:00:00+02:00')).to.equal(at);
      expect(timeMs('2026-03-01T12:00:00+0200')).to.equal(at);
      expect(timeMs('2026-03-01T07:30:00-0230')).to.equal(at);
      expect(timeMs('2026-03-01T10:00:00+02:00:00')).to.equal(undefined);
      expect(timeMs('2026-03-01 10:00:00 garbage')).to.equal(undefined);
      // A year past 9999 (ISO's expanded form) holds what looks like an offset, not at the end.
      expect(timeMs('+002026-03-01T10:00:00')).to.equal(at);
      expect(timeMs(at + 0.5)).to.equal(at + 0.5);
      expect(timeMs(new Date(at))).to.equal(at);
      for (const bad of ['', 'Z', NaN, Infinity, new Date(NaN), null, undefined, {}, true]) expect(timeMs(bad), String(bad)).to.equal(undefined);
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
  });
});
