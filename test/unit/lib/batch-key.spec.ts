import { expect } from 'chai';
import { from, lastValueFrom, toArray } from 'rxjs';
import { fromKafka } from '../../../connectors/kafka';
import { PartitionOffsets } from '../../../connectors/kafka/partitionOffsets';
import { KafkaRecordMeta } from '../../../connectors/kafka/record';
import { batch } from '../../../lib/batch';
import { Envelope } from '../../../lib/envelope';
import { Recorder } from '../../helpers';

describe('batch by key: replay-stable boundaries for Kafka', () => {
  it('closes a batch when the key changes, so a batch holds one partition and one aligned block of offsets', async () => {
    const recorder = new Recorder();
    const source = fromKafka({ brokers: ['127.0.0.1:1'], groupId: 'g', topics: 't', batchAlignment: 4 });
    // Two partitions interleaved as fetches deliver them, each record with the typed meta the
    // source gives it; offset 5 of partition 0 is one message split into two records.
    const trackers = [new PartitionOffsets('t', 0), new PartitionOffsets('t', 1)];
    const message = (partition: number, offset: number) =>
      new Envelope(`t/${partition}/${offset}`, new KafkaRecordMeta('test', `t/${partition}/`, 0, 1, trackers[partition]!, offset), undefined, 1, recorder);
    const envelopes = [
      message(0, 0), message(0, 1), message(1, 0), message(0, 2), message(0, 3), message(0, 4),
      ...message(0, 5).split(['t/0/5#1', 't/0/5#2']),
      message(1, 1), message(1, 2),
    ];
    expect(envelopes.map((e) => e.meta.position)).to.deep.equal(envelopes.map((e) => e.value));
    // The position is made when asked, and written by JSON.stringify with the rest; the typed fields are not.
    expect(JSON.parse(JSON.stringify(envelopes[0]!.meta))).to.deep.equal({ source: 'test', receivedAt: 0, attempt: 1, position: 't/0/0' });
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
