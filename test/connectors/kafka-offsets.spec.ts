import { expect } from 'chai';
import fc from 'fast-check';
import { PartitionOffsets } from '../../connectors/kafka/partitionOffsets';

describe('PartitionOffsets: the commit point of one partition', () => {
  it('is always just past the longest settled prefix, whatever the settlement order and offset gaps', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 300 }), fc.integer(), (gaps, seed) => {
        const offsets: number[] = [];
        let next = 7;
        for (const gap of gaps) offsets.push((next += gap));
        const tracker = new PartitionOffsets('t', 0);
        for (const offset of offsets) tracker.emitted(offset);
        const order = [...offsets];
        let state = seed >>> 0;
        for (let i = order.length - 1; i > 0; i--) {
          state = (state * 1103515245 + 12345) >>> 0;
          const j = state % (i + 1);
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        const settled = new Set<number>();
        for (const offset of order) {
          tracker.settled(offset);
          settled.add(offset);
          const firstUnsettled = offsets.find((o) => !settled.has(o));
          const expected = firstUnsettled ?? offsets[offsets.length - 1]! + 1;
          // Nothing settled at the front yet: the commit point stays where reading began.
          const point = tracker.toCommit() ?? tracker.committed;
          expect(point).to.equal(settled.has(offsets[0]!) ? expected : offsets[0]);
        }
        expect(tracker.inFlight).to.equal(0);
      }),
      { numRuns: 200 },
    );
  });

  it('never passes a nacked record, and a retired tracker ignores settlements and commits nothing', () => {
    const tracker = new PartitionOffsets('t', 3);
    for (let offset = 0; offset < 10; offset++) tracker.emitted(offset);
    for (const offset of [0, 1, 2, 4, 5, 6, 7, 8, 9]) tracker.settled(offset);
    tracker.nacked(3);
    expect(tracker.toCommit()).to.equal(3);
    expect(tracker.settled(3)).to.equal(false);
    expect(tracker.toCommit()).to.equal(3);
    expect(tracker.retire()).to.equal(3);
    expect(tracker.toCommit()).to.equal(undefined);
    expect(tracker.accepts(10)).to.equal(false);
  });

  it('does not emit an offset twice', () => {
    const tracker = new PartitionOffsets('t', 0);
    tracker.emitted(5);
    expect(tracker.accepts(5)).to.equal(false);
    expect(tracker.accepts(4)).to.equal(false);
    expect(tracker.accepts(6)).to.equal(true);
  });
});
