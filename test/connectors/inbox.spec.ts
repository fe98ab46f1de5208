import { expect } from 'chai';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fromInbox, type FromInboxOptions } from '../../connectors/files';
import { ConfigError, SinkError } from '../../lib/errors';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter } from '../../lib/sink';
import { MemorySink, observed, tempDir, until } from '../helpers';
import { fixture } from './files-ingest';

describe('fromInbox', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());
  const drop = (name: string, content: string | Buffer) => writeFileSync(join(dir.path, name), content);
  const csv = (from: number, to: number) => 'ref,n\n' + Array.from({ length: to - from + 1 }, (_, i) => `R-${from + i},${from + i}\n`).join('');
  const ls = (sub = '') => (existsSync(join(dir.path, sub)) ? readdirSync(join(dir.path, sub)).sort() : []);

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
    drop('notes.txt', 'ignored');
    const { pipeline, sink, deadLetters, inbox } = pipelineOf();
    const stats = await pipeline.run();
    expect(sink.rows).to.have.length(12);
    expect(deadLetters.rows.map((l) => l.code)).to.deep.equal(['PARSE_CSV', 'NOT_ARRAY']);
    expect(stats.read).to.equal(14);
    expect(ls('done')).to.deep.equal(['a.csv', 'b.ndjson']);
    expect(ls('failed')).to.deep.equal(['c.json']);
    expect(ls().filter((n) => !['done', 'failed', '.tributary'].includes(n))).to.deep.equal(['.hidden.csv', 'notes.txt', 'upload.csv.part']);
    expect(ls('.tributary')).to.deep.equal([]);
    // Files finish in the order their last records become durable, which the sinks' timing decides.
    const failures = Object.fromEntries(inbox.inbox.moved.map((m) => [basename(m.file), m.failure]));
    expect(failures).to.deep.equal({ 'a.csv': undefined, 'b.ndjson': undefined, 'c.json': "NOT_ARRAY: expected '[' at byte 0: not a JSON array" });
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

  it('saves the settled position while a file is read, and leaves the file in place when a write fails', async () => {
    drop('a.csv', csv(1, 40));
    const sink = new MemorySink<unknown>();
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.meta.record! > 20)) throw new SinkError('disk full');
    };
    const { pipeline } = pipelineOf({}, sink);
    const error = await pipeline.run().then(() => undefined, (e: unknown) => e);
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
  });
});
