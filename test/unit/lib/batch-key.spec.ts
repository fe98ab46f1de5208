import { expect } from 'chai';
import { from, lastValueFrom, toArray } from 'rxjs';
import { fromKafka } from '../../../connectors/kafka';
import { batch } from '../../../lib/batch';
import { Recorder } from '../../helpers';

describe('batch by key: replay-stable boundaries for Kafka', () => {
  it('closes a batch when the key changes, so a batch holds one partition and one aligned block of offsets', async () => {
    const recorder = new Recorder();
    const source = fromKafka({ brokers: ['127.0.0.1:1'], groupId: 'g', topics: 't', batchAlignment: 4 });
    // Two partitions interleaved as fetches deliver them.
    const positions = ['t/0/0', 't/0/1', 't/1/0', 't/0/2', 't/0/3', 't/0/4', 't/0/5#1', 't/0/5#2', 't/1/1', 't/1/2'];
    const envelopes = positions.map((position) => recorder.envelope(position, { position }));
    const batches = await lastValueFrom(from(envelopes).pipe(batch({ rows: 100, maxWaitMs: 1000, key: source.batchKey! }), toArray()));
    expect(batches.map((b) => b.envelopes.map((e) => e.value))).to.deep.equal([
      ['t/0/0', 't/0/1'],
      ['t/1/0'],
      ['t/0/2', 't/0/3'],
      ['t/0/4', 't/0/5#1', 't/0/5#2'],
      ['t/1/1', 't/1/2'],
    ]);
  });

  it('leaves batches mixing partitions by default', () => {
    expect(fromKafka({ brokers: ['127.0.0.1:1'], groupId: 'g', topics: 't' }).batchKey).to.equal(undefined);
  });
});
