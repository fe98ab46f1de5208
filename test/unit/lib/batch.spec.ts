import { expect } from 'chai';
import { getEventListeners } from 'node:events';
import { asapScheduler, from, lastValueFrom, map, Subject, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { batch, batchPart } from '../../../lib/batch';
import { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import type { Batch, RowBytes } from '../../../lib/sink';
import { Recorder } from '../../helpers';

describe('batch', () => {
  const recorder = new Recorder();
  const scheduler = () =>
    new TestScheduler((actual, expected) => {
      expect(actual).to.deep.equal(expected);
    });
  const toBatches = map((b: { envelopes: readonly { value: string }[]; bytes: number }) => b.envelopes.map((e) => e.value).join(''));

  it('emits a batch when it reaches the row limit, and the rest on completion', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const input = cold('a-b-c-d-e-|').pipe(map((v) => recorder.envelope(v)));
      expectObservable(input.pipe(batch({ rows: 2, maxWaitMs: 1000 }), toBatches)).toBe('--x---y---(z|)', { x: 'ab', y: 'cd', z: 'e' });
    });
  });

  it('emits a partial batch when the wait runs out', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const input = cold('a 9ms b 20ms c|').pipe(map((v) => recorder.envelope(v)));
      expectObservable(input.pipe(batch({ rows: 100, maxWaitMs: 5 }), toBatches)).toBe('5ms x 9ms y 16ms (z|)', { x: 'a', y: 'b', z: 'c' });
    });
  });

  it('holds a replayed batch past the wait until its last record, which emits it at once; other batches are cut by time', () => {
    scheduler().run(({ cold, expectObservable }) => {
      // a, b, c were one batch for an earlier reader (c its last record); d is new.
      const input = cold('a 9ms b 9ms c 9ms d 20ms |').pipe(map((v) => recorder.envelope(v)));
      const replayed = (e: { value: unknown }) => (e.value === 'c' ? 'last' : e.value === 'd' ? undefined : 'within');
      const key = (e: { value: unknown }) => (e.value === 'd' ? 'new' : 'replayed');
      expectObservable(input.pipe(batch({ rows: 100, maxWaitMs: 5, key, replayed }), toBatches)).toBe('20ms x 14ms y 15ms |', { x: 'abc', y: 'd' });
    });
  });

  it('once its signal aborts, emits what it holds at once and waits no more for later records', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const stop = new AbortController();
      const input = cold('a 9ms b 9ms c 99ms |').pipe(map((v) => recorder.envelope(v)));
      // Aborted as b arrives: a goes at once, b and c each in the turn they arrive in.
      const aborting = input.pipe(map((e) => (e.value === 'b' && stop.abort(), e)));
      expectObservable(aborting.pipe(batch({ rows: 100, maxWaitMs: 1000, signal: stop.signal }), toBatches)).toBe('10ms (xy) 6ms z 99ms |', { x: 'a', y: 'b', z: 'c' });
    });
  });

  it('a batch cut by its size leaves no wait behind: the next batch waits its own time', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const input = cold('abcd 20ms |').pipe(map((v) => recorder.envelope(v)));
      expectObservable(input.pipe(batch({ rows: 3, maxWaitMs: 5 }), toBatches)).toBe('--x 5ms y 15ms |', { x: 'abc', y: 'd' });
    });
  });

  it('on the asap scheduler with no wait, cuts a batch at the end of the turn its first record came in; with a wait, or for a replayed batch, waits as on any scheduler', async () => {
    const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
    const run = (options: Parameters<typeof batch>[0]) => {
      const input = new Subject<string>();
      const batches: string[] = [];
      input.pipe(map((v) => recorder.envelope(v)), batch({ rows: 100, scheduler: asapScheduler, ...options }), toBatches).subscribe((b) => batches.push(b));
      return { input, batches };
    };
    const asap = run({ maxWaitMs: 0 });
    asap.input.next('a');
    asap.input.next('b');
    expect(asap.batches, 'cut before the turn ends').to.deep.equal([]);
    await nextTurn();
    asap.input.next('c');
    await nextTurn();
    expect(asap.batches).to.deep.equal(['ab', 'c']);

    const waiting = run({ maxWaitMs: 60_000 });
    waiting.input.next('a');
    await nextTurn();
    waiting.input.next('b');
    await nextTurn();
    expect(waiting.batches, 'cut before its wait ran out').to.deep.equal([]);
    waiting.input.complete();
    expect(waiting.batches).to.deep.equal(['ab']);

    // a and b were one batch for an earlier reader, b its last record.
    const replayed = run({ maxWaitMs: 0, replayed: (e) => (e.value === 'b' ? 'last' : 'within') });
    replayed.input.next('a');
    await nextTurn();
    expect(replayed.batches, 'a replayed batch cut before its last record').to.deep.equal([]);
    replayed.input.next('b');
    expect(replayed.batches).to.deep.equal(['ab']);
    replayed.input.complete();
  });

  it('unsubscribed, lets go of its input and its signal', () => {
    const stop = new AbortController();
    const input = new Subject<string>();
    const subscription = input.pipe(map((v) => recorder.envelope(v)), batch({ rows: 100, signal: stop.signal })).subscribe();
    input.next('a');
    expect(getEventListeners(stop.signal, 'abort')).to.have.length(1);
    subscription.unsubscribe();
    expect(input.observed, 'input still subscribed').to.equal(false);
    expect(getEventListeners(stop.signal, 'abort'), 'abort listener left on the signal').to.have.length(0);
  });

  it('emits a batch when it reaches the byte limit', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const input = cold('a-b-c|').pipe(map((v) => recorder.envelope(v))); // one byte each
      expectObservable(input.pipe(batch({ rows: 100, bytes: 2, maxWaitMs: 1000 }), toBatches)).toBe('--x--(y|)', { x: 'ab', y: 'c' });
    });
  });

  it('passes errors on without emitting the partial batch', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const input = cold('a-#').pipe(map((v) => recorder.envelope(v)));
      expectObservable(input.pipe(batch({ rows: 100 }), toBatches)).toBe('--#');
    });
  });

  it('encodes each record as it joins the batch, releases values kept as raw, and dead-letters what will not encode', async () => {
    const recorder = new Recorder();
    const withRaw = (value: unknown, raw?: string) => {
      const envelope = recorder.envelope(value);
      envelope.raw = raw;
      return envelope;
    };
    const big = 'ü€😀'.repeat(30_000); // past the first buffer: it must grow
    const inputs = [withRaw({ id: 1 }, '{"id":1}'), withRaw({ id: 2 }), withRaw({ id: 3, n: 10n }, 'n=10'), withRaw({ id: 4, text: big }, 'big'), withRaw({ id: 5 }, '5')];
    const batches = await lastValueFrom(from(inputs).pipe(batch({ rows: 3, encode: (value) => JSON.stringify(value), releaseValues: true }), toArray()));
    const rowsOf = (b: Batch<unknown>) => b.encoded!.ends.map((end, i) => b.encoded!.body.toString('utf8', i === 0 ? 0 : b.encoded!.ends[i - 1], end));
    expect(batches.map(rowsOf)).to.deep.equal([
      ['{"id":1}\n', '{"id":2}\n', `{"id":4,"text":"${big}"}\n`],
      ['{"id":5}\n'],
    ]);
    expect(batches.map((b) => b.encoded!.body.length)).to.deep.equal(batches.map((b) => b.encoded!.ends.at(-1)));
    // Released where a dead letter could use raw instead; kept where it could not.
    expect(batches[0]!.envelopes.map((e) => e.value)).to.deep.equal([undefined, { id: 2 }, undefined]);
    expect(recorder.rejected.map((r) => [r.envelope.raw, r.failure.stage, r.failure.code, r.failure.path])).to.deep.equal([['n=10', 'sink', 'ENCODE', '']]);
    expect(recorder.rejected[0]!.failure.message).to.match(/^cannot encode the record: .*BigInt/);
  });

  it('writes rows with encodeInto where given: the same rows as encode, nothing left of a row it throws on, a row moved whole when it outgrows the buffer', async () => {
    const recorder = new Recorder();
    let encodes = 0;
    const encode = (value: { id: number; text: string }) => {
      encodes++;
      return JSON.stringify(value);
    };
    /** Writes its row in pieces, asking for room before each, as a sink's writer does; throws after writing half of row 3. */
    const encodeInto = (value: { id: number; text: string }, out: RowBytes) => {
      const row = JSON.stringify(value);
      for (let at = 0; at < row.length; at += 1000) {
        if (value.id === 3 && at > row.length / 2) throw new Error('no room for row 3');
        const piece = row.slice(at, at + 1000);
        const buffer = out.room(3 * piece.length); // first: it may move `at`
        out.at += buffer.write(piece, out.at);
      }
    };
    // Batches of two: the second starts inside the first's buffer; row 3 moves it to a larger one before it throws, row 6 once more.
    const sizes: Record<number, number> = { 1: 10, 2: 10, 4: 20, 3: 100_000, 5: 30, 6: 70_000, 7: 5 };
    const values = [1, 2, 4, 3, 5, 6, 7].map((id) => ({ id, text: (id === 6 ? 'ü' : 'x').repeat(sizes[id]!) }));
    const batches = await lastValueFrom(from(values.map((v) => recorder.envelope(v))).pipe(batch({ rows: 2, encode, encodeInto }), toArray()));
    expect(encodes, 'encodeInto used instead').to.equal(0);
    const rowsOf = (b: Batch<unknown>) => b.encoded!.ends.map((end, i) => b.encoded!.body.toString('utf8', i === 0 ? 0 : b.encoded!.ends[i - 1], end));
    const row = (id: number) => `${JSON.stringify(values.find((v) => v.id === id))}\n`;
    expect(batches.map(rowsOf)).to.deep.equal([[row(1), row(2)], [row(4), row(5)], [row(6), row(7)]]);
    expect(batches.map((b) => b.encoded!.body.length)).to.deep.equal(batches.map((b) => b.encoded!.ends.at(-1)));
    expect(recorder.rejected.map((r) => [r.failure.code, r.failure.message])).to.deep.equal([['ENCODE', 'cannot encode the record: no room for row 3']]);
    expect(() => batch({ encodeInto })).to.throw(ConfigError, 'batch.encodeInto needs encode');
  });

  it('small batches share one buffer, each keeping its own rows however many follow, and a batch that outgrows it moves out whole', async () => {
    const recorder = new Recorder();
    const values = Array.from({ length: 3000 }, (_, i) => ({ i, pad: 'y'.repeat(i % 40) }));
    values.splice(2001, 0, { i: -1, pad: 'z'.repeat(70_000) }); // past any buffer's rest: it must grow, keeping its first row
    const batches = await lastValueFrom(from(values.map((v) => recorder.envelope(v))).pipe(batch({ rows: 2, encode: (value) => JSON.stringify(value) }), toArray()));
    const rowsOf = (b: Batch<unknown>) => b.encoded!.ends.map((end, i) => b.encoded!.body.toString('utf8', i === 0 ? 0 : b.encoded!.ends[i - 1], end));
    expect(batches.map(rowsOf)).to.deep.equal(Array.from({ length: Math.ceil(values.length / 2) }, (_, k) => values.slice(2 * k, 2 * k + 2).map((v) => `${JSON.stringify(v)}\n`)));
    expect(batches.map((b) => b.encoded!.body.length)).to.deep.equal(batches.map((b) => b.encoded!.ends.at(-1)));
    expect(new Set(batches.map((b) => b.encoded!.body.buffer)).size, 'buffers for 1,501 batches').to.be.below(10);
  });

  it("carries the columns of its array rows, closes a batch where they change, and a part keeps them", async () => {
    const recorder = new Recorder();
    const first = ['id', 'name'];
    const second = ['id'];
    // The encoder's columns as each record comes: the list changes after the third (and back, as a new list, after the fifth).
    const lists = [first, first, first, second, second, undefined, undefined, ['id', 'name']];
    let at = 0;
    const batches = await lastValueFrom(
      from(lists.map((_, i) => recorder.envelope(i))).pipe(
        batch({ rows: 10, encode: (value: number) => (lists[value] ? JSON.stringify([value]) : JSON.stringify({ id: value })), columns: () => lists[at++] }),
        toArray(),
      ),
    );
    expect(batches.map((b) => [b.envelopes.map((e) => e.value), b.encoded!.columns])).to.deep.equal([
      [[0, 1, 2], first],
      [[3, 4], second],
      [[5, 6], undefined],
      [[7], ['id', 'name']],
    ]);
    expect(batches[0]!.encoded!.columns, 'the list itself').to.equal(first);
    expect('columns' in batches[2]!.encoded!, 'none for rows of no list').to.equal(false);
    expect(batchPart(batches[0]!, [0, 2]).encoded!.columns).to.equal(first);
    expect(batchPart(batches[0]!, [1, 2]).encoded!.columns).to.equal(first);
    expect('columns' in batchPart(batches[2]!, [1]).encoded!).to.equal(false);
    expect(() => batch({ encode: String, columns: 'id' as never })).to.throw(ConfigError, 'batch.columns must be a function');
  });

  it('writes a row that only just fits the rest of the buffer whole, multi-byte characters and all', async () => {
    const recorder = new Recorder();
    // 'a\n' leaves 65,534 bytes of the first 64 KiB buffer: the row of 65,535 bytes and its newline need more.
    const rows = ['a', '€'.repeat(21_845), 'b'];
    const [only] = await lastValueFrom(from(rows.map((row) => recorder.envelope(row))).pipe(batch({ encode: (value: string) => value }), toArray()));
    expect(only!.encoded!.body.toString('utf8')).to.equal(rows.map((row) => `${row}\n`).join(''));
    expect(only!.encoded!.ends).to.deep.equal([2, 65_538, 65_540]);
  });

  it('batches of a few KiB share 64 KiB buffers, and a long stream of them never needs a larger one', async () => {
    const recorder = new Recorder();
    const rows = Array.from({ length: 2000 }, (_, i) => `${i}`.padEnd(3000, '.')); // 1,000 batches of 6 KB
    const batches = await lastValueFrom(from(rows.map((row) => recorder.envelope(row))).pipe(batch({ rows: 2, encode: (value: string) => value }), toArray()));
    expect(batches.map((b) => b.encoded!.body.toString())).to.deep.equal(Array.from({ length: 1000 }, (_, k) => `${rows[2 * k]}\n${rows[2 * k + 1]}\n`));
    const buffers = new Set(batches.map((b) => b.encoded!.body.buffer));
    // Nine batches of 6,002 bytes and the first row of a tenth fit in 64 KiB: a fresh buffer about every nine batches.
    expect(buffers.size).to.be.within(100, 125);
    expect(Math.max(...[...buffers].map((buffer) => buffer.byteLength))).to.equal(64 * 1024);
    // A batch that outgrows a whole buffer doubles it (not one row's worth at a time, copying all it holds at each).
    const [large] = await lastValueFrom(from(rows.slice(0, 30).map((row) => recorder.envelope(row))).pipe(batch({ encode: (value: string) => value }), toArray()));
    expect(large!.encoded!.body.toString()).to.equal(rows.slice(0, 30).map((row) => `${row}\n`).join(''));
    expect(large!.encoded!.body.buffer.byteLength).to.equal(128 * 1024);
  });

  it('takes part of a batch: its records, their bytes and their encoded rows, consecutive ones without a copy', async () => {
    const recorder = new Recorder();
    const values = ['a', 'bb', 'ccc', 'dddd', 'eeeee'];
    const envelopes = values.map((value) => new Envelope(value, { source: 'test', position: value, receivedAt: 0, attempt: 1 }, undefined, value.length, recorder));
    const [whole] = await lastValueFrom(from(envelopes).pipe(batch({ encode: (value: string) => value }), toArray()));
    const shown = (part: Batch<string>) => [part.envelopes.map((e) => e.value).join(','), part.bytes, part.encoded!.body.toString(), part.encoded!.ends];
    expect(shown(batchPart(whole!, [1, 2]))).to.deep.equal(['bb,ccc', 5, 'bb\nccc\n', [3, 7]]);
    expect(shown(batchPart(whole!, [0, 2]))).to.deep.equal(['a,ccc', 4, 'a\nccc\n', [2, 6]]);
    expect(shown(batchPart(whole!, [0, 3]))).to.deep.equal(['a,dddd', 5, 'a\ndddd\n', [2, 7]]);
    expect(shown(batchPart(whole!, [1, 2, 4]))).to.deep.equal(['bb,ccc,eeeee', 10, 'bb\nccc\neeeee\n', [3, 7, 13]]);
    expect(batchPart(whole!, [2, 3]).encoded!.body.buffer, 'consecutive rows are a view of the batch body').to.equal(whole!.encoded!.body.buffer);
    expect(batchPart({ envelopes: whole!.envelopes, bytes: whole!.bytes }, [0, 4])).to.deep.equal({ envelopes: [whole!.envelopes[0], whole!.envelopes[4]], bytes: 6 });
  });

  it('keeps values when asked to encode only', async () => {
    const recorder = new Recorder();
    const envelope = recorder.envelope({ id: 1 });
    envelope.raw = '{"id":1}';
    const [only] = await lastValueFrom(from([envelope]).pipe(batch({ encode: (value) => JSON.stringify(value) }), toArray()));
    expect(only!.envelopes[0]!.value).to.deep.equal({ id: 1 });
    expect(only!.encoded!.body.toString()).to.equal('{"id":1}\n');
  });

  it('refuses limits that make no sense', () => {
    expect(() => batch({ rows: 1.5 })).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 1.5');
    expect(() => batch({ bytes: -1 })).to.throw(ConfigError, 'batch.bytes must be an integer >= 1, got -1');
    expect(() => batch({ maxWaitMs: Infinity })).to.throw(ConfigError, 'batch.maxWaitMs must be a finite number >= 0, got Infinity');
    expect(() => batch({ maxWaitMs: -1 })).to.throw(ConfigError, 'batch.maxWaitMs must be a finite number >= 0, got -1');
    expect(() => batch({ maxWaitMs: NaN })).to.throw(ConfigError, 'batch.maxWaitMs must be a finite number >= 0, got NaN');
    expect(() => batch({ maxWaitMs: 0 })).not.to.throw();
    expect(() => batch({ encode: 'json' as never })).to.throw(ConfigError, 'batch.encode must be a function, got string');
  });
});
