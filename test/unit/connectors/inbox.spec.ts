import { expect } from 'chai';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tap, VirtualTimeScheduler } from 'rxjs';
import { fromInbox, type FromInboxOptions } from '../../../connectors/files';
import { ConfigError, SinkError } from '../../../lib/errors';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, observed, rejection, tempDir, until } from '../../helpers';
import { fixture } from '../../files-ingest';

describe('fromInbox', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());
  const drop = (name: string, content: string | Buffer) => writeFileSync(join(dir.path, name), content);
  const csv = (from: number, to: number) => 'ref,n\n' + Array.from({ length: to - from + 1 }, (_, i) => `R-${from + i},${from + i}\n`).join('');
  const ls = (sub = '') => (existsSync(join(dir.path, sub)) ? readdirSync(join(dir.path, sub)).sort() : []);

  /** A step that moves `clock` through every timer on it once `records` records have passed (after the last joins its batch). */
  const flushOnceRead = (clock: VirtualTimeScheduler, records: number) => {
    let read = 0;
    return tap<Envelope<unknown>>(() => void (++read === records && queueMicrotask(() => clock.flush())));
  };

  function pipelineOf(options: Partial<FromInboxOptions> = {}, sink = new MemorySink<unknown>()) {
    const inbox = fromInbox({ dir: dir.path, once: true, checkpointMs: 1, ...options });
    const source = observed(inbox);
    const deadLetters = new MemorySink<DeadLetter>();
    const pipeline = new Pipeline({ source, sink, deadLetters, batch: { rows: 4, maxWaitMs: 5 }, deadLetterBatch: { maxWaitMs: 1 } });
    return { pipeline, sink, deadLetters, source, inbox };
  }

  it('reads each file once and moves it to done/ or failed/ after all its records are durable', async () => {
    drop('a.csv', csv(1, 10) + 'ragged\n');
    drop('b.ndjson', '{"id":1}\n{"id":2}\n');
    drop('c.json', '{"not":"an array"}');
    drop('.hidden.csv', csv(1, 1));
    drop('upload.csv.part', csv(1, 1));
    drop('notes.txt', 'no format reads this');
    drop('d.xml', '<Bookings><Booking id="1"/></Bookings>');
    const { pipeline, sink, deadLetters, inbox } = pipelineOf();
    const stats = await pipeline.run();
    expect(sink.rows).to.have.length(12);
    // A file no configured format reads is one dead letter naming the option, then failed/: never skipped in silence.
    expect(deadLetters.rows.map((l) => [l.code, l.message]).sort()).to.deep.equal([
      ['NOT_ARRAY', "expected '[' at byte 0: not a JSON array"],
      ['PARSE_CSV', 'line 12: 1 fields, expected 2'],
      ['UNREADABLE_FILE', 'cannot tell the format of notes.txt from its extension: set format'],
      ['UNREADABLE_FILE', 'd.xml is XML: set xml.record to the element that holds one record'],
    ]);
    expect(stats.read).to.equal(16);
    expect(ls('done')).to.deep.equal(['a.csv', 'b.ndjson']);
    expect(ls('failed')).to.deep.equal(['c.json', 'd.xml', 'notes.txt']);
    expect(ls().filter((n) => !['done', 'failed', '.tributary'].includes(n))).to.deep.equal(['.hidden.csv', 'upload.csv.part']);
    expect(ls('.tributary')).to.deep.equal([]);
    expect(inbox.inbox.moved.map((m) => [m.file.slice(dir.path.length + 1), m.failure]).sort()).to.deep.equal([
      ['a.csv', undefined],
      ['b.ndjson', undefined],
      ['c.json', "NOT_ARRAY: expected '[' at byte 0: not a JSON array"],
      ['d.xml', 'UNREADABLE_FILE: d.xml is XML: set xml.record to the element that holds one record'],
      ['notes.txt', 'UNREADABLE_FILE: cannot tell the format of notes.txt from its extension: set format'],
    ]);
  });

  it('keeps a file in the inbox until its last record is acked', async () => {
    drop('a.csv', csv(1, 10));
    const sink = new MemorySink<unknown>();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.meta.record === 10)) await gate;
    };
    const { pipeline } = pipelineOf({}, sink);
    const run = pipeline.run();
    await until(() => sink.writes.length >= 3, 5000, 'the last batch to be written');
    expect(ls()).to.include('a.csv');
    expect(ls('done')).to.deep.equal([]);
    open();
    await run;
    expect(ls('done')).to.deep.equal(['a.csv']);
  });

  it('resumes a half-done file after its saved position, with the same positions as a whole run', async () => {
    drop('a.csv', csv(1, 10));
    const whole = pipelineOf({ doneDir: join(dir.path, 'first') });
    await whole.pipeline.run();
    const allPositions = whole.source.acked.slice();
    renameSync(join(dir.path, 'first', 'a.csv'), join(dir.path, 'a.csv'));
    const info = statSync(join(dir.path, 'a.csv'));
    mkdirSync(join(dir.path, '.tributary'), { recursive: true });
    const checkpoint = (settled: number, size = info.size) =>
      writeFileSync(join(dir.path, '.tributary', 'a.csv.checkpoint.json'), JSON.stringify({ name: 'a.csv', size, mtimeMs: info.mtimeMs, settled }));
    checkpoint(6);
    // A checkpoint write a crash cut off before its rename: gone with the checkpoint.
    writeFileSync(join(dir.path, '.tributary', '.a.csv.checkpoint.json.0123456789ab.tmp'), '{"name":');
    const resumed = pipelineOf();
    await resumed.pipeline.run();
    expect(resumed.sink.rows).to.deep.equal([7, 8, 9, 10].map((n) => ({ ref: `R-${n}`, n: String(n) })));
    expect(resumed.source.acked).to.deep.equal(allPositions.slice(6));
    expect(ls('done')).to.deep.equal(['a.csv']);
    expect(ls('.tributary')).to.deep.equal([]);

    // A checkpoint for another file of the same name is ignored; a clash in done/ gets a new name.
    copyFileSync(join(dir.path, 'done', 'a.csv'), join(dir.path, 'a.csv'));
    utimesSync(join(dir.path, 'a.csv'), info.atime, info.mtime);
    checkpoint(6, info.size + 1);
    const fresh = pipelineOf();
    await fresh.pipeline.run();
    expect(fresh.sink.rows).to.have.length(10);
    expect(ls('done')).to.deep.equal(['a.2.csv', 'a.csv']);
  });

  it('saves where each batch ends in the checkpoint before the batch is written', async () => {
    drop('a.csv', csv(1, 40));
    const sink = new MemorySink<unknown>();
    const path = join(dir.path, '.tributary', 'a.csv.checkpoint.json');
    const seen: { last: number; cuts: number[] }[] = [];
    sink.gate = async (batch) => {
      const saved = JSON.parse(readFileSync(path, 'utf8')) as { cuts: number[] };
      seen.push({ last: batch.envelopes[batch.envelopes.length - 1]!.meta.record!, cuts: saved.cuts });
    };
    // Batches are cut by count: the batch timer runs on a clock that moves once all 40 records are read.
    const clock = new VirtualTimeScheduler();
    const pipeline = new Pipeline({ source: fromInbox({ dir: dir.path, once: true, checkpointMs: 60_000 }), transform: flushOnceRead(clock, 40), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 7, maxWaitMs: 5, scheduler: clock } });
    await pipeline.run();
    expect(seen.map((s) => s.last)).to.deep.equal([7, 14, 21, 28, 35, 40]);
    for (const { last, cuts } of seen) expect(cuts, `the checkpoint when the batch ending at ${last} was written`).to.include(last);
    expect(ls('done')).to.deep.equal(['a.csv']);
  });

  it('after a crash, reads again from the start of the batch holding the first unsettled record and cuts where the run before cut', async () => {
    // Records 2 and 4 are not JSON (dead letters). The run before wrote [1 3 5 6] and [7 8 9 10];
    // 1 to 3 had settled when it died, 4's dead letter had not.
    const lines = Array.from({ length: 10 }, (_, i) => (i === 1 || i === 3 ? '{not json' : JSON.stringify({ ref: `R-${i + 1}`, pad: 'x'.repeat(300) })));
    drop('a.ndjson', lines.join('\n') + '\n');
    const info = statSync(join(dir.path, 'a.ndjson'));
    mkdirSync(join(dir.path, '.tributary'), { recursive: true });
    writeFileSync(join(dir.path, '.tributary', 'a.ndjson.checkpoint.json'), JSON.stringify({ name: 'a.ndjson', size: info.size, mtimeMs: info.mtimeMs, settled: 3, cuts: [6, 10] }));
    const sink = new MemorySink<unknown>();
    const batches: number[][] = [];
    sink.gate = async (batch) => void batches.push(batch.envelopes.map((e) => e.meta.record!));
    const deadLetters = new MemorySink<DeadLetter>();
    // Reads of 8 bytes past the first 256 and maxWaitMs 0: without the saved cuts, batches would be cut wherever reading paused.
    const stats = await new Pipeline({ source: fromInbox({ dir: dir.path, once: true, chunkBytes: 8 }), sink, deadLetters, batch: { rows: 100, maxWaitMs: 0 } }).run();
    expect(batches).to.deep.equal([
      [1, 3, 5, 6],
      [7, 8, 9, 10],
    ]);
    // Record 2's dead letter was written before the crash, record 4's was not: both go again
    // in one batch, the one the run before cut with the records' batch ending at 6, so the
    // repeat of record 2's carries that batch's token and is absorbed.
    const position = (record: number) => `${join(dir.path, 'a.ndjson')}@${lines.slice(0, record - 1).join('\n').length + 1}`;
    expect(deadLetters.rows.map((l) => l.position)).to.deep.equal([position(2), position(4)]);
    expect(deadLetters.writes.map((w) => w.size)).to.deep.equal([2]);
    expect(stats).to.include({ read: 10, written: 8, deadLettered: 2, nacked: 0 });
    expect(ls('done')).to.deep.equal(['a.ndjson']);
  });

  it('saves the settled position while a file is read, and leaves the file in place when a write fails', async () => {
    drop('a.csv', csv(1, 40));
    const sink = new MemorySink<unknown>();
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.meta.record! > 20)) throw new SinkError('disk full');
    };
    const { pipeline } = pipelineOf({}, sink);
    const error = await rejection(pipeline.run());
    expect(error).to.be.instanceOf(SinkError);
    const path = join(dir.path, '.tributary', 'a.csv.checkpoint.json');
    await until(() => existsSync(path), 5000, 'a checkpoint');
    const saved = JSON.parse(readFileSync(path, 'utf8')) as { settled: number };
    expect(saved.settled).to.be.within(1, 20);
    expect(ls()).to.include('a.csv');
    expect(ls('done')).to.deep.equal([]);
  });

  it('watches for files that arrive later, taking each once it holds still', async () => {
    const { pipeline, sink } = pipelineOf({ once: false, pollMs: 10 });
    await pipeline.start();
    writeFileSync(join(dir.path, 'late.csv.part'), csv(1, 3));
    renameSync(join(dir.path, 'late.csv.part'), join(dir.path, 'late.csv'));
    await until(() => ls('done').includes('late.csv'), 10_000, 'the late file to be done');
    drop('later.csv.gz', readFileSync(fixture('truncated.csv.gz')));
    await until(() => ls('failed').includes('later.csv.gz'), 10_000, 'the broken file to fail');
    await pipeline.stop();
    expect(sink.rows.slice(0, 3)).to.deep.equal([1, 2, 3].map((n) => ({ ref: `R-${n}`, n: String(n) })));
  });

  it('refuses bad options at construction', () => {
    expect(() => fromInbox({ dir: '' })).to.throw(ConfigError, 'dir must name the inbox directory, got ""');
    expect(() => fromInbox({ dir: 'x', pollMs: 0 })).to.throw(ConfigError, 'pollMs must be an integer >= 1, got 0');
    expect(() => fromInbox({ dir: 'x', alignBatches: 'yes' as unknown as boolean })).to.throw(ConfigError, 'alignBatches must be true or false, got "yes"');
    expect(() => fromInbox({ dir: 'x', alignBatches: null as unknown as boolean })).to.throw(ConfigError, 'alignBatches must be true or false, got null');
  });

  it('with alignBatches false, a batch may hold records of several files', async () => {
    drop('a.csv', csv(1, 3));
    drop('b.csv', csv(4, 6));
    const sizes = async (alignBatches: boolean) => {
      const sink = new MemorySink<unknown>();
      // The batch timer runs on a clock that moves once all six records are read, however long reading b.csv takes.
      const clock = new VirtualTimeScheduler();
      const pipeline = new Pipeline({ source: fromInbox({ dir: dir.path, once: true, alignBatches, doneDir: join(dir.path, String(alignBatches)) }), transform: flushOnceRead(clock, 6), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 100, maxWaitMs: 50, scheduler: clock } });
      await pipeline.run();
      for (const name of ['a.csv', 'b.csv']) renameSync(join(dir.path, String(alignBatches), name), join(dir.path, name));
      return sink.writes.map((w) => w.size);
    };
    expect(await sizes(true)).to.deep.equal([3, 3]);
    expect(await sizes(false)).to.deep.equal([6]);
  });
});
