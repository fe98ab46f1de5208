import { expect } from 'chai';
import { fromIterable } from '../../../connectors/iterable';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { delay, MemorySink } from '../../helpers';

describe('fromIterable', () => {
  const booking = (i: number) => ({ id: i, vendor: 'skyway', ref: `B${String(i).padStart(9, '0')}`, total: '12.50', pax: [{ name: 'Ada' }, { name: 'Charles' }], paid: true });

  it('counts an object about its JSON length against the byte budget, without writing the JSON', async () => {
    const items = Array.from({ length: 100 }, (_, i) => booking(i));
    const json = JSON.stringify(items[0]).length;
    const sink = new MemorySink<unknown>();
    const waiting: Array<() => void> = [];
    sink.gate = () => new Promise<void>((resolve) => waiting.push(resolve));
    const pipeline = new Pipeline({ source: fromIterable(items), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 5 }, inFlight: { records: 100, bytes: 10 * json } });
    await pipeline.start();
    await delay(50);
    // Held at the byte budget: about ten records' worth, within a fifth of the JSON length each.
    const held = pipeline.stats.inFlightRecords;
    expect(held).to.be.within(8, 12);
    expect(pipeline.stats.inFlightBytes / held).to.be.within(0.8 * json, 1.2 * json);
    const drain = setInterval(() => waiting.splice(0).forEach((release) => release()), 2);
    await pipeline.finished();
    clearInterval(drain);
    expect(sink.rows).to.deep.equal(items);
  });

  it('reads a synchronous iterable only as far as its credits go', async () => {
    let pulled = 0;
    function* generated() {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield booking(i);
      }
    }
    const sink = new MemorySink<unknown>();
    const waiting: Array<() => void> = [];
    sink.gate = () => new Promise<void>((resolve) => waiting.push(resolve));
    const pipeline = new Pipeline({ source: fromIterable(generated()), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 50, maxWaitMs: 5 }, inFlight: { records: 200 } });
    await pipeline.start();
    await delay(50);
    expect(pipeline.stats.inFlightRecords).to.equal(200);
    // The item that found no credit was pulled and waits for one; nothing further.
    expect(pulled).to.equal(201);
    const drain = setInterval(() => waiting.splice(0).forEach((release) => release()), 2);
    const stats = await pipeline.finished();
    clearInterval(drain);
    expect(stats).to.include({ read: 1000, written: 1000 });
    expect(sink.rows.map((r) => (r as { id: number }).id)).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i));
  });
});
