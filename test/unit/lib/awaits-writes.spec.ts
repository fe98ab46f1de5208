import { expect } from 'chai';
import { asyncScheduler, Observable, type SchedulerLike } from 'rxjs';
import { Pipeline } from '../../../lib/pipeline';
import type { Envelope } from '../../../lib/envelope';
import type { DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { MemorySink } from '../../helpers';

/**
 * A source whose callers wait for each write (a webhook's senders) hands its records over
 * once the task that emitted them is done: a request's records reach the sink without
 * waiting for a timer tick.
 */
describe('Pipeline: a source whose callers wait for writes', () => {
  it('writes the records of one task before a timer set before them fires', async () => {
    const order: string[] = [];
    const source: Source<{ id: number }> = {
      name: 'callers',
      awaitsWrites: true,
      open: (context) =>
        new Observable<Envelope<{ id: number }>>((subscriber) => {
          // One request: three records emitted in one go, after a timer of 0 ms is set.
          setTimeout(() => {
            setTimeout(() => order.push('timer'), 0);
            for (let id = 0; id < 3; id++) subscriber.next(context.envelope({ id }, { source: 'callers', position: String(id), receivedAt: Date.now(), attempt: 1 }, undefined, 10));
            // Still open: the end of the input, which writes what is gathered at once, comes later.
            setTimeout(() => subscriber.complete(), 20);
          }, 5);
        }),
    };
    const sink = new MemorySink<{ id: number }>('rows');
    sink.gate = async (batch) => void order.push(`write ${batch.envelopes.length}`);
    const stats = await new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 100, maxWaitMs: 10 } }).run();
    expect(stats.written).to.equal(3);
    expect(order).to.deep.equal(['write 3', 'timer']);
  });

  /** Emits each id in a task of its own, then ends. */
  const tasks = (ids: number[]): Source<{ id: number }> => ({
    name: 'callers',
    awaitsWrites: true,
    open: (context) =>
      new Observable<Envelope<{ id: number }>>((subscriber) => {
        void (async () => {
          for (const id of ids) {
            await new Promise((resolve) => setTimeout(resolve, 1));
            subscriber.next(context.envelope({ id }, { source: 'callers', position: String(id), receivedAt: Date.now(), attempt: 1 }, undefined, 10));
          }
          await new Promise((resolve) => setTimeout(resolve, 1));
          subscriber.complete();
        })();
      }),
  });

  it('starts writes no more often than maxWaitMs apart: what comes meanwhile is joined, and goes once the input ends', async () => {
    const sink = new MemorySink<{ id: number }>('rows');
    await new Pipeline({ source: tasks([1, 2, 3]), sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 100, maxWaitMs: 60_000 } }).run();
    expect(sink.writes.map((w) => w.size)).to.deep.equal([1, 2]);
  });

  it('writes one batch at a time unless sinkConcurrency says otherwise, or batchKey makes its batches; other sources two', async () => {
    const most = async (sinkConcurrency?: number, keyed = false, awaitsWrites = true) => {
      let writing = 0;
      let highest = 0;
      const sink = new MemorySink<{ id: number }>('rows');
      sink.gate = async () => {
        highest = Math.max(highest, ++writing);
        await new Promise((resolve) => setTimeout(resolve, 20));
        writing--;
      };
      // Batches of one record: each full, so it would start beside a write under way if it could.
      // With batchKey the source's batches are its own, and awaitsWrites is ignored.
      const source = { ...tasks([1, 2, 3, 4, 5, 6]), awaitsWrites, ...(keyed && { batchKey: (e: Envelope<{ id: number }>) => String(e.value.id) }) };
      const stats = await new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 1, maxWaitMs: 10 }, ...(sinkConcurrency && { sinkConcurrency }) }).run();
      expect(stats.written).to.equal(6);
      return highest;
    };
    expect(await most()).to.equal(1);
    expect(await most(2)).to.equal(2);
    expect(await most(undefined, true)).to.equal(2);
    expect(await most(undefined, false, false), 'a source whose callers do not wait: two at a time by default').to.equal(2);
  });

  it('keeps a scheduler it is given for its batches', async () => {
    let scheduled = 0;
    const scheduler: SchedulerLike = {
      now: () => asyncScheduler.now(),
      schedule(...args: Parameters<SchedulerLike['schedule']>) {
        scheduled++;
        return asyncScheduler.schedule(...args);
      },
    };
    const sink = new MemorySink<{ id: number }>('rows');
    await new Pipeline({ source: tasks([1]), sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 100, maxWaitMs: 10, scheduler } }).run();
    expect(sink.rows).to.deep.equal([{ id: 1 }]);
    expect(scheduled).to.be.above(0);
  });
});
