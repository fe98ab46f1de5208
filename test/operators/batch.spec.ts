import { expect } from 'chai';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { batch } from '../../operators/batch';
import { ConfigError } from '../../lib/errors';
import { Recorder } from '../helpers';

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

  it('refuses limits that make no sense', () => {
    expect(() => batch({ rows: 1.5 })).to.throw(ConfigError, 'batch.rows must be an integer >= 1, got 1.5');
    expect(() => batch({ bytes: -1 })).to.throw(ConfigError, 'batch.bytes must be an integer >= 1, got -1');
    expect(() => batch({ maxWaitMs: Infinity })).to.throw(ConfigError, 'batch.maxWaitMs must be a finite number >= 0, got Infinity');
  });
});
