import { expect } from 'chai';
import { failureFrom, utf8Head } from '../../../lib/envelope';
import { ParseError, SinkError, ValidationError } from '../../../lib/errors';
import { Recorder } from '../../helpers';

describe('envelope', () => {
  it('is settled once: whichever of ack, nack and reject comes first, later calls are ignored', () => {
    const recorder = new Recorder();
    const acked = recorder.envelope('a');
    const nacked = recorder.envelope('n');
    const rejected = recorder.envelope('r');
    const failure = { stage: 'parse', code: 'PARSE_JSON', message: 'no', path: '' };
    expect(acked.settled).to.equal(false);
    acked.ack();
    nacked.nack(new Error('down'));
    rejected.reject(failure);
    for (const envelope of [acked, nacked, rejected]) {
      envelope.ack();
      envelope.nack(new Error('again'));
      envelope.reject(failure);
    }
    expect([acked.settled, nacked.settled, rejected.settled]).to.deep.equal([true, true, true]);
    expect(recorder.acked).to.deep.equal([acked]);
    expect(recorder.nacked).to.deep.equal([nacked]);
    expect(recorder.rejected.map((r) => r.envelope)).to.deep.equal([rejected]);
  });

  it('splits a payload into parts numbered after the whole, each received as the whole', () => {
    const recorder = new Recorder();
    const whole = recorder.envelope('[1,2,3]', { position: 'body@0' });
    const parts = whole.split([1, 2, 3], [1, 1, 2], [1, 3, 6]);
    expect(parts.map((part) => [part.value, part.meta.position, part.meta.record, part.meta.line, part.meta.offset])).to.deep.equal([
      [1, 'body@0#1', 1, 1, 1],
      [2, 'body@0#2', 2, 1, 3],
      [3, 'body@0#3', 3, 2, 6],
    ]);
    expect(parts.map((part) => part.received)).to.deep.equal([whole, whole, whole]);
  });

  it("a part dead-lettered keeps its payload as JSON for the letter ('' when it has none), or the raw it was given", () => {
    const recorder = new Recorder();
    const parts = recorder.envelope('x').split([{ id: 1 }, undefined, 'kept']);
    parts[2]!.raw = '"kept" as received';
    const failure = { stage: 'validate', code: 'VALIDATION', message: 'no', path: '/id' };
    for (const part of parts) part.reject(failure);
    expect(recorder.rejected.map((r) => r.envelope.raw)).to.deep.equal(['{"id":1}', '', '"kept" as received']);
    expect(recorder.acked).to.have.length(1);
  });

  it('turns what was thrown into a dead letter reason: code and path from tributary errors, UNEXPECTED otherwise', () => {
    expect(failureFrom('validate', new ValidationError([{ path: '/a/0', message: 'is required' }, { path: '/b', message: 'is no date' }]))).to.deep.equal({
      stage: 'validate',
      code: 'VALIDATION',
      message: '/a/0 is required; /b is no date',
      path: '/a/0',
    });
    expect(failureFrom('map', new ValidationError([], 'MAPPING'))).to.deep.equal({ stage: 'map', code: 'MAPPING', message: '', path: '' });
    expect(failureFrom('parse', new ParseError('bad JSON', 'PARSE_JSON', { line: 3 }))).to.deep.equal({ stage: 'parse', code: 'PARSE_JSON', message: 'bad JSON', path: '' });
    expect(failureFrom('sink', new SinkError('refused', { code: 'SINK_TYPE' }))).to.deep.equal({ stage: 'sink', code: 'SINK_TYPE', message: 'refused', path: '' });
    expect(failureFrom('transform', new RangeError('too far'))).to.deep.equal({ stage: 'transform', code: 'UNEXPECTED', message: 'too far', path: '' });
    expect(failureFrom('transform', 'a string')).to.deep.equal({ stage: 'transform', code: 'UNEXPECTED', message: 'a string', path: '' });
  });

  describe('utf8Head', () => {
    it('keeps bytes that fit as they are', () => {
      const bytes = Buffer.from('héllo');
      expect(utf8Head(bytes, 6)).to.equal(bytes);
      expect(utf8Head(bytes, 100)).to.equal(bytes);
      expect(utf8Head(bytes, 5).toString()).to.equal('héll');
    });

    it('cuts before a character that would not fit whole, of any length', () => {
      for (const char of ['é', '€', '😀']) {
        const bytes = Buffer.from(`ab${char}cd`);
        const size = Buffer.byteLength(char);
        for (let max = 2; max < 2 + size; max++) expect(utf8Head(bytes, max).toString(), `${char} cut at ${max}`).to.equal('ab');
        expect(utf8Head(bytes, 2 + size).toString()).to.equal(`ab${char}`);
      }
      expect(utf8Head(Buffer.from('😀😀'), 3).length).to.equal(0);
    });

    it('backs off at most three bytes over bytes that are no UTF-8, and never before the start', () => {
      const continuations = Buffer.alloc(10, 0x80);
      expect(utf8Head(continuations, 6).length).to.equal(3);
      expect(utf8Head(continuations, 2).length).to.equal(0);
      expect(utf8Head(Buffer.from([0x41, 0x80, 0x80, 0x80, 0x80]), 4).length).to.equal(1);
    });
  });
});
