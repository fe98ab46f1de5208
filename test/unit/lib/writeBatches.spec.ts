import { expect } from 'chai';
import { connect, createServer, type AddressInfo } from 'node:net';
import { Subject, VirtualTimeScheduler } from 'rxjs';
import type { Batch } from '../../../lib/sink';
import { writeBatches, type JoinLimits } from '../../../lib/writeBatches';
import type { Envelope } from '../../../lib/envelope';
import { delay, until } from '../../helpers';

/** A batch of `values` as the batch step makes it: one encoded row each, `bytes` per record. */
function batchOf(values: string[], bytes = 10): Batch<string> {
  const rows = values.map((v) => `"${v}"\n`);
  let end = 0;
  return {
    envelopes: values.map((value) => ({ value }) as unknown as Envelope<string>),
    bytes: values.length * bytes,
    encoded: { body: Buffer.from(rows.join('')), ends: rows.map((row) => (end += row.length)) },
  };
}

/**
 * `count` loopback sockets whose messages reach `onData` in the poll phase of a loop turn.
 * `sendWhileBusy` writes one message on each, then keeps the loop busy for `busyMs`: timers
 * due meanwhile run, when the loop turns, before the sockets are read.
 */
async function loopbackSockets(count: number, onData: (data: string) => void): Promise<{ sendWhileBusy(messages: string[], busyMs: number): Promise<void>; close(): void }> {
  const server = createServer((socket) => socket.on('data', (data: Buffer) => onData(data.toString())));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const clients = Array.from({ length: count }, () => connect(port, '127.0.0.1'));
  await Promise.all(clients.map((client) => new Promise((resolve) => client.once('connect', resolve))));
  await delay(5); // the server has its sides
  return {
    sendWhileBusy: (messages, busyMs) =>
      new Promise<void>((resolve) =>
        setImmediate(() => {
          messages.forEach((message, i) => clients[i]!.write(message));
          for (const end = Date.now() + busyMs; Date.now() < end; );
          resolve();
        }),
      ),
    close() {
      for (const client of clients) client.destroy();
      server.close();
    },
  };
}

describe('writeBatches: batches waiting for a write are joined', () => {
  function harness(concurrency: number, limits?: JoinLimits) {
    const written: Batch<string>[] = [];
    const open: (() => void)[] = [];
    const input = new Subject<Batch<string>>();
    let completed = false;
    input.pipe(writeBatches<string>((b) => new Promise<void>((resolve) => {
      written.push(b);
      open.push(resolve);
    }), concurrency, limits)).subscribe({ complete: () => (completed = true) });
    const settle = async () => {
      open.shift()!();
      await new Promise((resolve) => setImmediate(resolve));
    };
    return { input, written, settle, completed: () => completed };
  }

  const values = (written: Batch<string>[]) => written.map((b) => b.envelopes.map((e) => e.value).join(''));
  /** Runs `scheduler`'s clock `ms` on. */
  const advance = (scheduler: VirtualTimeScheduler, ms: number) => {
    scheduler.schedule(() => undefined, ms);
    scheduler.flush();
  };

  it('joins what waits, records and encoded rows in order, up to the limits; a partial batch waits for the write under way', async () => {
    const h = harness(2, { rows: 5, bytes: 1000 });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b'])); // a slot is free, but a partial batch does not take it
    h.input.next(batchOf(['c', 'd']));
    h.input.next(batchOf(['e', 'f']));
    h.input.next(batchOf(['g', 'h'])); // would make 6 rows: waits on its own
    h.input.next(batchOf(['i']));
    // 'bcdef', once joined up to the limit, is full: it takes the free slot.
    expect(values(h.written)).to.deep.equal(['a', 'bcdef']);
    const joined = h.written[1]!;
    expect(joined.encoded!.body.toString()).to.equal('"b"\n"c"\n"d"\n"e"\n"f"\n');
    expect(joined.encoded!.ends).to.deep.equal([4, 8, 12, 16, 20]);
    expect(joined.bytes).to.equal(50);
    await h.settle();
    // 'ghi' is partial: it waits while 'bcdef' is written.
    expect(values(h.written)).to.deep.equal(['a', 'bcdef']);
    h.input.complete();
    expect(values(h.written), 'the input ended, but a write is under way: ghi still waits').to.deep.equal(['a', 'bcdef']);
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'bcdef', 'ghi']);
    expect(h.completed(), 'complete only once every write is done').to.equal(false);
    await h.settle();
    expect(h.completed()).to.equal(true);
  });

  it('starts full batches beside the write under way, up to `concurrency`', async () => {
    const h = harness(2, { rows: 2, bytes: 1000 });
    h.input.next(batchOf(['a', 'b']));
    h.input.next(batchOf(['c', 'd']));
    h.input.next(batchOf(['e', 'f'])); // full, but both slots are busy
    h.input.next(batchOf(['g']));
    expect(values(h.written)).to.deep.equal(['ab', 'cd']);
    await h.settle();
    // 'ef' takes the freed slot; 'g', partial, waits until no write is under way.
    expect(values(h.written)).to.deep.equal(['ab', 'cd', 'ef']);
    await h.settle();
    expect(values(h.written)).to.deep.equal(['ab', 'cd', 'ef']);
    await h.settle();
    expect(values(h.written)).to.deep.equal(['ab', 'cd', 'ef', 'g']);
  });

  it('a partial batch takes a free slot after limits.maxWaitMs if the write under way has not ended', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 5, bytes: 1000, maxWaitMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b']));
    h.input.next(batchOf(['c'])); // joins 'b' while it waits
    expect(values(h.written)).to.deep.equal(['a']);
    scheduler.flush();
    expect(scheduler.now()).to.equal(10);
    expect(values(h.written)).to.deep.equal(['a', 'bc']);
    // A write that ends in time leaves no wait behind: the next partial batch starts as the only write.
    await h.settle();
    await h.settle();
    h.input.next(batchOf(['d']));
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'd']);
  });

  it('a partial batch that waited for both writes counts maxWaitMs from when it came, not again from when a slot came free', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 3, bytes: 1000, maxWaitMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['x', 'y', 'z'])); // full: beside 'a'
    h.input.next(batchOf(['b'])); // both slots busy: waits
    advance(scheduler, 15);
    expect(values(h.written)).to.deep.equal(['a', 'xyz']);
    await h.settle();
    // 'b' has waited 15 ms: it takes the slot 'a' left, beside 'xyz', without waiting 10 ms more.
    expect(values(h.written)).to.deep.equal(['a', 'xyz', 'b']);
    expect(scheduler.now()).to.equal(15);
  });

  it('with writeIntervalMs, a partial batch takes the idle sink at once only that long after the last write started; full batches and the end of the input do not wait', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 3, bytes: 1000, maxWaitMs: 10, writeIntervalMs: 10, scheduler });
    h.input.next(batchOf(['a'])); // a lone batch: at once
    expect(values(h.written)).to.deep.equal(['a']);
    await h.settle();
    scheduler.schedule(() => h.input.next(batchOf(['b'])), 4);
    scheduler.schedule(() => h.input.next(batchOf(['c'])), 6);
    scheduler.flush();
    expect(scheduler.now(), 'b and c waited, joined, until 10 after a started').to.equal(10);
    expect(values(h.written)).to.deep.equal(['a', 'bc']);
    await h.settle();
    scheduler.schedule(() => h.input.next(batchOf(['d', 'e', 'f'])), 2); // full: at once, 2 after bc started
    scheduler.flush();
    expect(scheduler.now()).to.equal(12);
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'def']);
    await h.settle();
    scheduler.schedule(() => h.input.next(batchOf(['g'])), 1);
    scheduler.flush();
    expect(scheduler.now(), 'g waited until 10 after def started').to.equal(22);
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'def', 'g']);
    await h.settle();
    scheduler.schedule(() => h.input.next(batchOf(['x'])), 30); // long after: at once
    scheduler.flush();
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'def', 'g', 'x']);
    await h.settle();
    h.input.next(batchOf(['h']));
    expect(values(h.written), 'within the interval: waits').to.deep.equal(['a', 'bc', 'def', 'g', 'x']);
    h.input.complete();
    expect(values(h.written), 'the input ended: nothing more to join').to.deep.equal(['a', 'bc', 'def', 'g', 'x', 'h']);
    await h.settle();
    expect(h.completed()).to.equal(true);
  });

  it('with writeIntervalMs, the sink rests half the interval after each write before a partial batch starts the next, and starts none sooner than the interval after the last started, writes slow or not', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(1, { rows: 3, bytes: 1000, maxWaitMs: 10, writeIntervalMs: 10, scheduler });
    /** Sends `value` `after` ms from now, runs the clock until it is written, and says when that was. */
    const writtenAt = (value: string, after: number) => {
      scheduler.schedule(() => h.input.next(batchOf([value])), after);
      scheduler.flush();
      expect(values(h.written).at(-1), `${value} written`).to.equal(value);
      return scheduler.now();
    };
    h.input.next(batchOf(['a'])); // at 0
    advance(scheduler, 4);
    await h.settle(); // a took 4 ms, ended at 4
    expect(writtenAt('b', 1), 'b waited until 10 after a started (later than 5 after it ended)').to.equal(10);
    advance(scheduler, 30);
    await h.settle(); // b took 30 ms, ended at 40: durations 4, 30
    expect(writtenAt('c', 1), 'c 5 after b ended').to.equal(45);
    advance(scheduler, 12);
    await h.settle(); // c took 12, ended at 57: 4, 30, 12 (median of five 4)
    expect(writtenAt('d', 1)).to.equal(62);
    advance(scheduler, 12);
    await h.settle(); // d took 12, ended at 74: 4, 30, 12, 12 (median 12): writes are slow
    scheduler.schedule(() => h.input.next(batchOf(['e'])), 1);
    scheduler.schedule(() => h.input.next(batchOf(['f'])), 3);
    scheduler.flush();
    expect(scheduler.now(), 'writes slow: e and f waited, joined, for half a rest after d ended, no more').to.equal(79);
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c', 'd', 'ef']);
    advance(scheduler, 2);
    await h.settle(); // ef took 2, ended at 81
    expect(writtenAt('g', 1), 'g 10 after ef started (later than 5 after it ended)').to.equal(89);
    h.input.complete();
    await h.settle();
    expect(h.completed()).to.equal(true);
  });

  it('with writeIntervalMs, a batch that came during a write rests after it only until the interval since it came, unless writes are slow (the median of the last five past the interval): then half the interval after it ends', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(1, { rows: 3, bytes: 1000, maxWaitMs: 10, writeIntervalMs: 10, scheduler });
    h.input.next(batchOf(['a'])); // at 0
    advance(scheduler, 1);
    h.input.next(batchOf(['b'])); // at 1, while a is written
    advance(scheduler, 7);
    await h.settle(); // a took 8, ended at 8
    scheduler.flush();
    expect(scheduler.now(), 'b went 10 after it came, not 5 after a ended').to.equal(11);
    expect(values(h.written)).to.deep.equal(['a', 'b']);
    advance(scheduler, 2);
    h.input.next(batchOf(['c'])); // at 13, while b is written
    advance(scheduler, 28);
    await h.settle(); // b took 30, ended at 41: durations 8, 30
    expect(values(h.written), 'c, waiting since 13, went when b ended at 41').to.deep.equal(['a', 'b', 'c']);
    advance(scheduler, 1);
    h.input.next(batchOf(['d'])); // at 42
    advance(scheduler, 19);
    await h.settle(); // c took 20, ended at 61: 8, 30, 20 (median of five 8)
    expect(values(h.written), 'd, waiting since 42, went when c ended').to.deep.equal(['a', 'b', 'c', 'd']);
    advance(scheduler, 1);
    h.input.next(batchOf(['e'])); // at 62
    advance(scheduler, 19);
    await h.settle(); // d took 20, ended at 81: 8, 30, 20, 20 (median 20): writes are slow
    expect(values(h.written), 'e rests').to.deep.equal(['a', 'b', 'c', 'd']);
    scheduler.flush();
    expect(scheduler.now(), 'writes slow: e, waiting since 62, rested half the interval after d ended all the same').to.equal(86);
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c', 'd', 'e']);
    h.input.complete();
    await h.settle();
    expect(h.completed()).to.equal(true);
  });

  /**
   * From `from` on the clock, a is written, then b, c and d each come 1 after the write under
   * way started; every write takes `writeMs`. Returns when d went (the clock then).
   */
  async function batchDuringEachWrite(from: number, writeMs: number): Promise<number> {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(1, { rows: 3, bytes: 1000, maxWaitMs: 10, writeIntervalMs: 10, scheduler });
    advance(scheduler, from);
    h.input.next(batchOf(['a']));
    for (const value of ['b', 'c', 'd']) {
      advance(scheduler, 1);
      h.input.next(batchOf([value]));
      advance(scheduler, writeMs - 1);
      await h.settle();
      scheduler.flush();
    }
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c', 'd']);
    const went = scheduler.now();
    h.input.complete();
    await h.settle();
    expect(h.completed()).to.equal(true);
    return went;
  }

  it('with writeIntervalMs, writes of the interval exactly are not slow: a batch that came during one goes the interval after it came', async () => {
    expect(await batchDuringEachWrite(0, 10), 'd came at 23, during c (22 to 32, durations 10, 10, 10): it went at 33, not 5 after c ended').to.equal(33);
  });

  it('with writeIntervalMs, a write is slow by its own duration, whatever the clock reads when it starts', async () => {
    expect(await batchDuringEachWrite(100, 8), 'd came at 123, during c (122 to 130, durations 8, 8, 8): it went at 133, not 5 after c ended as after slow writes').to.equal(133);
  });

  it('with writeIntervalMs, a full batch does not rest while writes are slow, nor does the last once the input ended', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(1, { rows: 3, bytes: 1000, maxWaitMs: 10, writeIntervalMs: 10, scheduler });
    for (const value of ['a', 'b', 'c']) {
      h.input.next(batchOf([value]));
      advance(scheduler, 20);
      await h.settle(); // each took 20 ms
    }
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c']);
    h.input.next(batchOf(['d']));
    expect(values(h.written), 'three slow writes: d rests').to.deep.equal(['a', 'b', 'c']);
    h.input.next(batchOf(['e', 'f']));
    expect(values(h.written), 'd, joined up to the limit, is full: it does not rest').to.deep.equal(['a', 'b', 'c', 'def']);
    advance(scheduler, 20);
    await h.settle();
    h.input.next(batchOf(['g']));
    expect(values(h.written), 'g rests').to.deep.equal(['a', 'b', 'c', 'def']);
    h.input.complete();
    expect(values(h.written), 'nor does the last one once the input ended').to.deep.equal(['a', 'b', 'c', 'def', 'g']);
    await h.settle();
    expect(h.completed()).to.equal(true);
  });

  it('without limits, every batch may take a free slot (as mergeMap)', async () => {
    const h = harness(2);
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b']));
    h.input.next(batchOf(['c']));
    expect(values(h.written)).to.deep.equal(['a', 'b']);
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c']);
  });

  it('keeps the byte limit, and never joins without limits (boundaries a source must keep)', async () => {
    const bytes = harness(1, { rows: 100, bytes: 25 });
    for (const v of ['a', 'b', 'c', 'd']) bytes.input.next(batchOf([v]));
    await bytes.settle();
    await bytes.settle();
    expect(bytes.written.map((b) => b.envelopes.map((e) => e.value).join(''))).to.deep.equal(['a', 'bc', 'd']);
    const kept = harness(1);
    for (const v of ['a', 'b', 'c']) kept.input.next(batchOf([v]));
    await kept.settle();
    await kept.settle();
    expect(kept.written.map((b) => b.envelopes.map((e) => e.value).join(''))).to.deep.equal(['a', 'b', 'c']);
  });
  it('joins up to exactly the limits: rows or bytes equal to a limit still join, and such a batch is full', async () => {
    // rows: 'b' + 'c' make exactly 2 rows, the limit: joined, and full, so it takes the free slot.
    const rows = harness(2, { rows: 2, bytes: 1000 });
    rows.input.next(batchOf(['a']));
    rows.input.next(batchOf(['b']));
    rows.input.next(batchOf(['c']));
    expect(values(rows.written)).to.deep.equal(['a', 'bc']);
    // bytes: 10 + 10 make exactly 20 bytes, the limit: joined, and full.
    const bytes = harness(2, { rows: 100, bytes: 20 });
    bytes.input.next(batchOf(['a']));
    bytes.input.next(batchOf(['b']));
    bytes.input.next(batchOf(['c']));
    expect(values(bytes.written)).to.deep.equal(['a', 'bc']);
    // One byte short of the limit is partial: it waits for the write under way.
    const short = harness(2, { rows: 100, bytes: 21 });
    short.input.next(batchOf(['a']));
    short.input.next(batchOf(['b']));
    short.input.next(batchOf(['c']));
    expect(values(short.written)).to.deep.equal(['a']);
  });

  it('a batch without encoded rows is never joined with one that has them', async () => {
    const h = harness(1, { rows: 100, bytes: 1000 });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b']));
    h.input.next({ ...batchOf(['c']), encoded: undefined });
    await h.settle();
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c']);
  });

  it('a failed write, and a failed source, fail the stream with their error', async () => {
    const failure = new Error('write refused');
    let seen: unknown;
    const input = new Subject<Batch<string>>();
    input.pipe(writeBatches<string>(() => Promise.reject(failure), 1, { rows: 10, bytes: 1000 })).subscribe({ error: (error: unknown) => (seen = error) });
    input.next(batchOf(['a']));
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).to.equal(failure);
    const upstream = new Error('source failed');
    let seenUpstream: unknown;
    const source = new Subject<Batch<string>>();
    source.pipe(writeBatches<string>(async () => undefined, 1, { rows: 10, bytes: 1000 })).subscribe({ error: (error: unknown) => (seenUpstream = error) });
    source.error(upstream);
    expect(seenUpstream).to.equal(upstream);
  });

  it('a batch that waited alone is written as it came; batches without encoded rows are joined without them', async () => {
    const h = harness(1, { rows: 100, bytes: 1000 });
    const plain = (v: string) => ({ ...batchOf([v]), encoded: undefined });
    h.input.next(plain('a'));
    const alone = plain('b');
    h.input.next(alone);
    await h.settle();
    expect(h.written[1]).to.equal(alone);
    h.input.next(plain('c'));
    h.input.next(plain('d'));
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'b', 'cd']);
    expect(h.written[2]).to.deep.equal({ envelopes: [{ value: 'c' }, { value: 'd' }], bytes: 20 });
  });

  it('joins arrays of one column list, keeping it, and never arrays of another list', async () => {
    const h = harness(1, { rows: 100, bytes: 1000 });
    const first = ['id'];
    const second = ['id', 'name'];
    const of = (v: string, columns: readonly string[]) => ({ ...batchOf([v]), encoded: { ...batchOf([v]).encoded!, columns } });
    h.input.next(of('a', first));
    h.input.next(of('b', first));
    h.input.next(of('c', first));
    h.input.next(of('d', second));
    h.input.next(of('e', second));
    h.input.next(batchOf(['f']));
    for (let i = 0; i < 4; i++) await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'de', 'f']);
    expect(h.written.map((b) => b.encoded!.columns)).to.deep.equal([first, first, second, undefined]);
    expect(h.written[1]!.encoded!.columns).to.equal(first);
    expect('columns' in h.written[3]!.encoded!).to.equal(false);
  });

  it('a batch with encoded rows is never joined with one waiting without them either', async () => {
    const h = harness(1, { rows: 100, bytes: 1000 });
    h.input.next(batchOf(['a']));
    h.input.next({ ...batchOf(['b']), encoded: undefined });
    h.input.next(batchOf(['c']));
    await h.settle();
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c']);
  });

  it('a full batch does not overtake a partial one waiting before it', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 2, bytes: 1000, maxWaitMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b'])); // partial, beside 'a': waits
    h.input.next(batchOf(['c', 'd'])); // full, but 'b' came first
    expect(values(h.written)).to.deep.equal(['a']);
    scheduler.flush();
    expect(values(h.written)).to.deep.equal(['a', 'b']);
  });

  it('a partial batch beside a write waits maxWaitMs from when it came, whatever the clock reads', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 5, bytes: 1000, maxWaitMs: 10, scheduler });
    scheduler.schedule(() => {
      h.input.next(batchOf(['a']));
      h.input.next(batchOf(['b']));
      h.input.next(batchOf(['c']));
    }, 100);
    scheduler.schedule(() => expect(values(h.written), 'at 105').to.deep.equal(['a']), 105);
    scheduler.flush();
    expect(values(h.written)).to.deep.equal(['a', 'bc']);
    expect(scheduler.now()).to.equal(110);
  });

  it('when its wait runs out, a partial batch takes one free slot, and the batch behind it waits on', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 3, bytes: 1000, maxWaitMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b', 'c'])); // partial, beside 'a': waits
    h.input.next(batchOf(['d', 'e'])); // would make 4 rows: waits on its own
    scheduler.flush();
    expect(values(h.written)).to.deep.equal(['a', 'bc']);
    await h.settle();
    expect(values(h.written)).to.deep.equal(['a', 'bc', 'de']);
  });

  it('the wait of a batch already written leaves nothing behind to start the next one early', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 5, bytes: 1000, maxWaitMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    h.input.next(batchOf(['b'])); // waits, until 10 at most
    await h.settle(); // 'a' ends at 0: 'b' goes
    expect(values(h.written)).to.deep.equal(['a', 'b']);
    scheduler.schedule(() => h.input.next(batchOf(['c'])), 5); // beside 'b': waits until 15
    scheduler.schedule(() => expect(values(h.written), 'at 12').to.deep.equal(['a', 'b']), 12);
    scheduler.flush();
    expect(scheduler.now()).to.equal(15);
    expect(values(h.written)).to.deep.equal(['a', 'b', 'c']);
  });

  it('with both waits, a partial batch goes at the sooner: its maxWaitMs before the write interval', async () => {
    const scheduler = new VirtualTimeScheduler();
    const h = harness(2, { rows: 5, bytes: 1000, maxWaitMs: 3, writeIntervalMs: 10, scheduler });
    h.input.next(batchOf(['a']));
    scheduler.frame = 1;
    h.input.next(batchOf(['b'])); // beside 'a': until 4 at most
    scheduler.frame = 2;
    await h.settle(); // 'a' ends: the interval alone would hold 'b' until 10
    expect(values(h.written)).to.deep.equal(['a']);
    scheduler.flush();
    expect(values(h.written)).to.deep.equal(['a', 'b']);
    expect(scheduler.now()).to.equal(4);
  });

  it('on the real clock, a partial batch whose wait ran out takes in what the event loop has already received before its write starts', async () => {
    const h = harness(1, { rows: 100, bytes: 100_000, writeIntervalMs: 20 });
    const sockets = await loopbackSockets(2, (data) => h.input.next(batchOf([data])));
    try {
      h.input.next(batchOf(['a'])); // the idle sink: at once
      await h.settle();
      h.input.next(batchOf(['b'])); // 20 ms after 'a' started
      // Records on their way while the loop is busy past that moment (the callers a webhook
      // answered last, already back): when the loop turns, the wait's timer runs first.
      await sockets.sendWhileBusy(['c', 'd'], 40);
      await until(() => h.written.length >= 2, 1000, 'a second write');
      // Both, not only the first read (which must not start the write either).
      expect(values(h.written).map((v) => [...v].sort().join(''))).to.deep.equal(['a', 'bcd']);
    } finally {
      sockets.close();
    }
  });

  it('on the real clock, unsubscribed after the wait ran out and before its write started, writes nothing more', async () => {
    const written: Batch<string>[] = [];
    const input = new Subject<Batch<string>>();
    const subscription = input.pipe(writeBatches<string>(async (b) => void written.push(b), 1, { rows: 100, bytes: 100_000, writeIntervalMs: 20 })).subscribe();
    // Read between the wait's timer and its write.
    const sockets = await loopbackSockets(1, () => subscription.unsubscribe());
    try {
      input.next(batchOf(['a'])); // the idle sink: at once
      await new Promise((resolve) => setImmediate(resolve));
      input.next(batchOf(['b'])); // 20 ms after 'a' started
      await sockets.sendWhileBusy(['x'], 40);
      await delay(20);
      expect(subscription.closed).to.equal(true);
      expect(values(written)).to.deep.equal(['a']);
    } finally {
      sockets.close();
    }
  });

  it('unsubscribed, lets go of its input and of the wait it set', () => {
    const scheduler = new VirtualTimeScheduler();
    const written: Batch<string>[] = [];
    const input = new Subject<Batch<string>>();
    const subscription = input.pipe(writeBatches<string>((b) => (written.push(b), new Promise<void>(() => undefined)), 2, { rows: 5, bytes: 1000, maxWaitMs: 10, scheduler })).subscribe();
    input.next(batchOf(['a']));
    input.next(batchOf(['b'])); // waits until 10
    subscription.unsubscribe();
    expect(input.observed).to.equal(false);
    scheduler.flush();
    expect(values(written)).to.deep.equal(['a']);
  });

  it('completes at once when the source ends with nothing written or waiting', () => {
    let completed = false;
    const input = new Subject<Batch<string>>();
    input.pipe(writeBatches<string>(async () => undefined, 2, { rows: 10, bytes: 1000 })).subscribe({ complete: () => (completed = true) });
    input.complete();
    expect(completed).to.equal(true);
  });
});
