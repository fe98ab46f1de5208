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

  it('dead-letters a UTF-16 JSON or NDJSON payload whole, saying so (INVALID_UTF8), with or without a byte order mark', async () => {
    const utf16 = (text: string, order: 'le' | 'be') => (order === 'le' ? Buffer.from(text, 'utf16le') : Buffer.from(text, 'utf16le').swap16());
    for (const order of ['le', 'be'] as const) {
      for (const bom of ['\ufeff', '']) {
        for (const format of ['json', 'ndjson'] as const) {
          const recorder = new Recorder();
          // Without a BOM it is valid UTF-8 (NUL bytes between the ASCII): each line was a PARSE_JSON with NULs in its message.
          const payload = recorder.envelope<string | Uint8Array>(utf16(`${bom}{"n":1}\n{"n":2}\n`, order));
          const out = await lastValueFrom(from([payload]).pipe(parse({ format }), toArray()));
          const where = `${order}${bom ? ' with a BOM' : ''} ${format}`;
          expect(out, where).to.deep.equal([]);
          expect(recorder.rejected.map((r) => [r.envelope, r.failure.code]), where).to.deep.equal([[payload, 'INVALID_UTF8']]);
          expect(recorder.rejected[0]!.failure.message, where).to.equal(`payload is not UTF-8: it is UTF-16 (${bom ? 'a UTF-16 byte order mark' : `a NUL byte at byte ${order === 'le' ? 1 : 0}`}); JSON and NDJSON payloads must be UTF-8`);
        }
      }
    }
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
