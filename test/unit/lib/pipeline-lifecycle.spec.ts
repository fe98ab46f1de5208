import { expect } from 'chai';
import { NEVER, Observable } from 'rxjs';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError, SinkError, TributaryError } from '../../../lib/errors';
import type { LogFields, Logger } from '../../../lib/logger';
import { Pipeline } from '../../../lib/pipeline';
import type { PipelineLifecycleEvent } from '../../../lib/pipelineOptions';
import type { DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { delay, MemorySink, observed, until } from '../../helpers';

/** A logger that keeps what it is told. */
function recording(): Logger & { lines: { level: string; message: string; fields?: LogFields }[] } {
  const lines: { level: string; message: string; fields?: LogFields }[] = [];
  const at = (level: string) => (message: string, fields?: LogFields) => void lines.push({ level, message, ...(fields && { fields }) });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A memory sink that counts its opens. */
class OpeningSink<T> extends MemorySink<T> {
  opens = 0;
  async open(): Promise<void> {
    this.opens++;
  }
}

/** How a pipeline reports where it is: its state, readiness, lifecycle events and logs, from before start to after it ended. */
describe('Pipeline lifecycle', () => {
  it('says why it is not ready: not running, the source not connected (with its status)', async () => {
    const source: Source<number> = { name: 'feed', open: () => NEVER, status: () => ({ connected: false }) };
    const pipeline = new Pipeline({ source, sink: new MemorySink<number>('store'), deadLetters: new MemorySink<DeadLetter>() });
    expect(pipeline.readiness()).to.deep.equal({
      ready: false,
      state: 'idle',
      sinkBreaker: 'closed',
      deadLetterBreaker: 'closed',
      source: { connected: false },
      reasons: ['pipeline is idle', 'source feed is not connected'],
    });
    const plain = new Pipeline({ source: fromIterable([1]), sink: new MemorySink<number>(), deadLetters: new MemorySink<DeadLetter>() });
    expect(plain.readiness()).to.not.have.property('source');
  });

  it('says the sink breaker is open while it is', async () => {
    const sink = new MemorySink<number>('store');
    let failures = 0;
    sink.gate = async () => {
      if (failures++ < 4) throw new SinkError('connection refused', { retriable: true });
    };
    const pipeline = new Pipeline({ source: fromIterable([1, 2]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { maxWaitMs: 1 }, retry: { initialDelayMs: 5, maxDelayMs: 20 }, breaker: { volumeThreshold: 2, resetTimeoutMs: 50 } });
    await pipeline.start();
    await until(() => pipeline.breakerState === 'open', 5000, 'the breaker to open');
    expect(pipeline.readiness().reasons).to.deep.equal(['sink store: circuit breaker open']);
    await pipeline.finished();
  });

  it('finished() before start() throws; stop() before start() resolves with the stats and leaves it idle', async () => {
    const pipeline = new Pipeline({ source: fromIterable([1]), sink: new MemorySink<number>(), deadLetters: new MemorySink<DeadLetter>() });
    expect(() => pipeline.finished()).to.throw(TributaryError, 'finished() needs start() first').with.property('code', 'NOT_STARTED');
    const stats = await pipeline.stop();
    expect(stats).to.include({ read: 0, written: 0 });
    expect(pipeline.state).to.equal('idle');
    expect(() => pipeline.stop({ timeoutMs: -1 })).to.throw(ConfigError, 'timeoutMs must be a number >= 0, got -1');
  });

  it('stopping waits for the write under way without a timeout, then stops; a timeout that was not needed says nothing', async () => {
    const source = observed(fromIterable([1, 2, 3]));
    const sink = new MemorySink<number>();
    let release!: () => void;
    sink.gate = () => new Promise<void>((resolve) => (release = resolve));
    const logger = recording();
    const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>(), batch: { maxWaitMs: 1 }, logger });
    await pipeline.start();
    expect(pipeline.state).to.equal('running');
    await until(() => sink.writes.length === 1, 2000, 'the write');
    const stopped = pipeline.stop();
    expect(pipeline.state).to.equal('stopping');
    await delay(30);
    release();
    expect(await stopped).to.include({ written: 3, nacked: 0 });
    expect(pipeline.state).to.equal('stopped');
    expect(source.acked).to.have.length(3);
    await pipeline.stop({ timeoutMs: 10 });
    await delay(40);
    expect(logger.lines.filter((l) => l.level === 'warn'), 'a stop that gave up after the pipeline stopped').to.deep.equal([]);
  });

  it('a failed pipeline: its stop timeout says nothing, its lifecycle and end events carry the error, only the first failure counts', async () => {
    const events: PipelineLifecycleEvent[] = [];
    const logger = recording();
    let fail!: (error: Error) => void;
    const source: Source<number> = {
      name: 'feed',
      open: () =>
        new Observable<never>((subscriber) => {
          fail = (error) => subscriber.error(error);
        }),
    };
    const pipeline = new Pipeline({ name: 'p', source, sink: new MemorySink<number>('store'), deadLetters: new MemorySink<DeadLetter>('letters'), sinkConcurrency: 3, batch: { rows: 5 }, inFlight: { records: 7, bytes: 70_000_000 }, logger, onLifecycle: (e) => events.push(e) });
    const crashes: unknown[] = [];
    const ends: unknown[] = [];
    pipeline.on('pipeline.crash', ({ payload }) => crashes.push(payload.error));
    pipeline.on('pipeline.end', ({ payload }) => ends.push(payload));
    await pipeline.start();
    expect(events[0]).to.deep.include({ type: 'start', pipeline: 'p' });
    expect(events[0]!.details).to.include({ source: 'feed', sink: 'store', deadLetters: 'letters', sinkConcurrency: 3, protectedDeadLetters: false });
    expect(events[0]!.details).to.deep.include({ inFlight: { records: 7, bytes: 70_000_000 } });
    fail(new TributaryError('the feed broke', { code: 'FEED_BROKEN' }));
    const error = await pipeline.finished().catch((e: Error) => e);
    expect(error).to.have.property('message', 'the feed broke');
    expect(crashes).to.have.length(1);
    expect(ends).to.have.length(1);
    expect((ends[0] as { error?: { code: string } }).error).to.include({ code: 'FEED_BROKEN', message: 'the feed broke' });
    expect(events[1]).to.deep.include({ type: 'stop', pipeline: 'p', error: 'FEED_BROKEN' });
    expect(events[1]!.details).to.include({ read: 0, written: 0 });
    expect(pipeline.state).to.equal('failed');
    await pipeline.stop({ timeoutMs: 1 }).catch(() => undefined);
    await delay(20);
    expect(logger.lines.filter((l) => l.level === 'warn')).to.deep.equal([]);
  });

  it('a failure without a code stops with its message', async () => {
    const events: PipelineLifecycleEvent[] = [];
    const source: Source<number> = { name: 'feed', open: () => new Observable<never>((subscriber) => subscriber.error(new Error('plain failure'))) };
    const pipeline = new Pipeline({ source, sink: new MemorySink<number>(), deadLetters: new MemorySink<DeadLetter>(), onLifecycle: (e) => events.push(e) });
    await pipeline.run().catch(() => undefined);
    expect(events.map((e) => [e.type, e.error])).to.deep.equal([
      ['start', undefined],
      ['stop', 'plain failure'],
    ]);
  });

  it('a sink that is also the dead-letter sink is opened and closed once; two sinks each once', async () => {
    const both = new OpeningSink<any>('both');
    await new Pipeline({ source: fromIterable([1]), sink: both, deadLetters: both }).run();
    expect([both.opens, both.closed]).to.deep.equal([1, 1]);
    const sink = new OpeningSink<number>('store');
    const letters = new OpeningSink<DeadLetter>('letters');
    await new Pipeline({ source: fromIterable([1]), sink, deadLetters: letters }).run();
    expect([sink.opens, sink.closed, letters.opens, letters.closed]).to.deep.equal([1, 1, 1, 1]);
  });

  it('logs a listener that throws, with the event, and goes on', async () => {
    const logger = recording();
    const sink = new MemorySink<number>();
    const pipeline = new Pipeline({ name: 'p', source: fromIterable([1, 2]), sink, deadLetters: new MemorySink<DeadLetter>(), logger });
    pipeline.on('pipeline.start', () => {
      throw new Error('listener broke');
    });
    await pipeline.run();
    expect(sink.rows).to.deep.equal([1, 2]);
    expect(logger.lines.filter((l) => l.message === 'instrumentation listener threw')).to.deep.equal([
      { level: 'error', message: 'instrumentation listener threw', fields: { pipeline: 'p', event: 'pipeline.start', error: 'listener broke' } },
    ]);
  });

  it('gives up once, however many stop timeouts run out', async () => {
    const sink = new MemorySink<number>();
    sink.gate = () => delay(200);
    const logger = recording();
    const pipeline = new Pipeline({ source: fromIterable([1]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { maxWaitMs: 1 }, logger });
    await pipeline.start();
    await until(() => sink.writes.length === 1, 2000, 'the write');
    const first = pipeline.stop({ timeoutMs: 10 }).catch(() => undefined);
    void pipeline.stop({ timeoutMs: 10 }).catch(() => undefined);
    await first;
    await delay(250);
    expect(logger.lines.filter((l) => l.level === 'warn').map((l) => l.message)).to.deep.equal(['stop gave up waiting for writes: the records in flight are nacked']);
  });

  it('fails with its first failure, reported once', async () => {
    const sink = new MemorySink<number>();
    let writes = 0;
    const crashes: string[] = [];
    // Both writes under way; the second fails once the first has failed the pipeline.
    sink.gate = async () => {
      const n = ++writes;
      await until(() => (n === 1 ? writes === 2 : crashes.length === 1), 5000, `write ${n}'s turn`);
      throw new SinkError(`write ${n} refused`, { retriable: false });
    };
    const pipeline = new Pipeline({ source: fromIterable([1, 2]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 1, maxWaitMs: 1 }, sinkConcurrency: 2, retry: { retries: 0 } });
    pipeline.on('pipeline.crash', ({ payload }) => crashes.push(payload.error.message));
    const error = await pipeline.run().catch((e: Error) => e);
    expect(writes, 'both writes under way').to.equal(2);
    expect(error).to.have.property('message', 'write 1 refused');
    expect(crashes).to.deep.equal(['write 1 refused']);
  });

  it('hands its batch limits to the writes: a full batch starts beside the write under way, and waiting batches join only within the limits', async () => {
    const sink = new MemorySink<number>();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    sink.gate = () => held;
    const pipeline = new Pipeline({ source: fromIterable([1, 2, 3, 4, 5, 6, 7, 8]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2, maxWaitMs: 1000 }, sinkConcurrency: 2 });
    await pipeline.start();
    await until(() => sink.writes.length === 2, 5000, 'two writes at once');
    await delay(20);
    release();
    await pipeline.finished();
    expect(sink.writes.map((w) => w.size)).to.deep.equal([2, 2, 2, 2]);
  });
});
