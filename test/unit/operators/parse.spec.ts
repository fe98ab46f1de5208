import { expect } from 'chai';
import { from, lastValueFrom, toArray } from 'rxjs';
import { parse } from '../../../operators/parse';
import { Recorder } from '../../helpers';

describe('parse', () => {
  it('parses JSON payloads from strings and bytes, dead-lettering bad JSON and bad UTF-8', async () => {
    const recorder = new Recorder();
    const input = [
      recorder.envelope<string | Uint8Array>('{"a":1}'),
      recorder.envelope<string | Uint8Array>(Buffer.from('[1,2]')),
      recorder.envelope<string | Uint8Array>('{"a":'),
      recorder.envelope<string | Uint8Array>(Buffer.from([0x22, 0xff, 0x22])),
    ];
    const out = await lastValueFrom(from(input).pipe(parse(), toArray()));
    expect(out.map((e) => e.value)).to.deep.equal([{ a: 1 }, [1, 2]]);
    expect(recorder.rejected.map((r) => r.failure.code)).to.deep.equal(['PARSE_JSON', 'INVALID_UTF8']);
  });

  it('splits NDJSON payloads into records and acks the payload once all are settled', async () => {
    const recorder = new Recorder();
    const payload = recorder.envelope<string | Uint8Array>('{"a":1}\r\n\n{"a":2\n{"a":3}', { position: 'msg-7' });
    const out = await lastValueFrom(from([payload]).pipe(parse({ format: 'ndjson' }), toArray()));
    expect(out.map((e) => [e.value, e.meta.position, e.meta.line])).to.deep.equal([
      [{ a: 1 }, 'msg-7#1', 1],
      [{ a: 3 }, 'msg-7#3', 4],
    ]);
    expect(recorder.rejected.map((r) => [r.envelope.meta.position, r.failure.code, r.envelope.raw])).to.deep.equal([['msg-7#2', 'PARSE_JSON', '{"a":2']]);
    expect(recorder.acked).to.deep.equal([]);
    out[0]!.ack();
    expect(recorder.acked).to.deep.equal([]);
    out[1]!.ack();
    expect(recorder.acked).to.deep.equal([payload]);
  });

  it('nacks the payload when one of its records is nacked', async () => {
    const recorder = new Recorder();
    const payload = recorder.envelope<string | Uint8Array>('1\n2');
    const [first, second] = await lastValueFrom(from([payload]).pipe(parse({ format: 'ndjson' }), toArray()));
    first!.ack();
    second!.nack(new Error('sink down'));
    expect(recorder.nacked).to.deep.equal([payload]);
    expect(recorder.acked).to.deep.equal([]);
  });
});
