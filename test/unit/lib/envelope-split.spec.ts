import { expect } from 'chai';
import type { RecordMeta } from '../../../lib/envelope';
import { Recorder } from '../../helpers';

describe('Envelope.split: the parts’ meta', () => {
  // Required: a field added to RecordMeta fails to compile here until it is listed, and then this spec checks that parts keep it.
  const every: Required<RecordMeta> = {
    source: 'kafka',
    position: 'orders/0/42',
    vendor: 'acme',
    key: 'k-7',
    headers: { origin: 'eu' },
    file: 'in.ndjson',
    record: 9,
    line: 12,
    offset: 300,
    receivedAt: 1_700_000_000_123,
    timestamp: 1_699_999_999_000,
    attempt: 2,
    schemaVersion: 'v3',
    subject: 'guest-1',
  };

  it('keeps every field of the payload’s meta, numbers each part and gives it its own position, line and offset', () => {
    const parts = new Recorder().envelope('a\nb', every).split(['a', 'b'], [1, 2], [0, 2]);
    expect(parts.map((part) => ({ ...part.meta }))).to.deep.equal([
      { ...every, position: 'orders/0/42#1', record: 1, line: 1, offset: 0 },
      { ...every, position: 'orders/0/42#2', record: 2, line: 2, offset: 2 },
    ]);
    expect(JSON.parse(JSON.stringify(parts[1]!.meta))).to.deep.equal({ ...every, position: 'orders/0/42#2', record: 2, line: 2, offset: 2 });
  });

  it('keeps the payload’s line and offset when none are given, and leaves out the fields the payload lacks', () => {
    const whole = new Recorder().envelope([{ n: 1 }, { n: 2 }, { n: 3 }], { source: 'webhook', position: 'acme/h-1', vendor: 'acme', receivedAt: 5, attempt: 1 });
    const parts = whole.split(whole.value);
    expect(parts.map((part) => ({ ...part.meta }))).to.deep.equal([1, 2, 3].map((record) => ({ source: 'webhook', position: `acme/h-1#${record}`, vendor: 'acme', record, receivedAt: 5, attempt: 1 })));
    expect(Object.keys(parts[0]!.meta)).to.have.members(['source', 'position', 'vendor', 'record', 'receivedAt', 'attempt']);
    const lined = new Recorder().envelope('x', { position: 'f@10', file: 'f', line: 4, offset: 10 }).split(['x']);
    expect(lined[0]!.meta).to.include({ position: 'f@10#1', file: 'f', record: 1, line: 4, offset: 10 });
    expect(Object.keys(lined[0]!.meta)).to.have.members([...Object.keys(lined[0]!.received.meta), 'record']);
  });

  it('gives each part a meta of its own: changing one changes neither the payload’s nor another part’s', () => {
    const whole = new Recorder().envelope('ab', { position: 'p', key: 'k' });
    const [first, second] = whole.split(['a', 'b']);
    first!.meta.key = 'changed';
    expect([whole.meta.key, second!.meta.key]).to.deep.equal(['k', 'k']);
  });
});
