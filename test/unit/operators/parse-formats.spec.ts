import { expect } from 'chai';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { parse } from '../../../operators/parse';
import { Recorder } from '../../helpers';

describe('parse: CSV and XML payloads', () => {
  it('splits a CSV payload into one record per row, dead-lettering ragged rows by line, and acks it once all are settled', async () => {
    const recorder = new Recorder();
    const bytes = Buffer.from('\ufeffref;note\r\nA;"x\r\ny"\r\nB\r\nC;z\r\n');
    const payload = recorder.envelope<string | Uint8Array>(bytes, { position: 'msg-9' });
    const out = await lastValueFrom(from([payload]).pipe(parse({ format: 'csv', csv: { delimiter: ';' } }), toArray()));
    expect(out.map((e) => [e.value, e.meta.position, e.meta.record, e.meta.line, e.meta.offset])).to.deep.equal([
      [{ ref: 'A', note: 'x\r\ny' }, 'msg-9#1', 1, 2, bytes.indexOf('A;')],
      [{ ref: 'C', note: 'z' }, 'msg-9#3', 3, 5, bytes.indexOf('C;')],
    ]);
    expect(recorder.rejected.map((r) => [r.envelope.meta.position, r.failure.code, r.failure.message, r.envelope.raw?.toString()])).to.deep.equal([
      ['msg-9#2', 'PARSE_CSV', 'line 4: 1 fields, expected 2', 'B\r\n'],
    ]);
    expect(recorder.acked).to.deep.equal([]);
    out[0]!.ack();
    out[1]!.ack();
    expect(recorder.acked).to.deep.equal([payload]);
  });

  it('splits an XML payload into its record elements; entities are never expanded', async () => {
    const recorder = new Recorder();
    const xml = `<?xml version="1.0"?><!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]><f><Booking id="1"><Pax>a</Pax><Pax>b</Pax></Booking><Booking>&x;</Booking></f>`;
    const payload = recorder.envelope<string | Uint8Array>(xml, { position: 'hook-1' });
    const out = await lastValueFrom(from([payload]).pipe(parse({ format: 'xml', xml: { record: 'Booking' } }), toArray()));
    expect(out.map((e) => [e.value, e.meta.position, e.meta.offset])).to.deep.equal([[{ '@id': '1', Pax: ['a', 'b'] }, 'hook-1#1', xml.indexOf('<Booking')]]);
    expect(recorder.rejected.map((r) => [r.envelope.meta.position, r.failure.code])).to.deep.equal([['hook-1#2', 'XML_ENTITY']]);
    out[0]!.ack();
    expect(recorder.acked).to.deep.equal([payload]);
  });

  it('reads Latin-1 CSV bytes when told, and a UTF-16 payload by its BOM', async () => {
    const recorder = new Recorder();
    const latin1 = recorder.envelope<string | Uint8Array>(Buffer.from('city\nZ\xfcrich\n', 'latin1'));
    const utf16 = recorder.envelope<string | Uint8Array>(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('city\nÅrhus\n', 'utf16le')]));
    const out = await lastValueFrom(from([latin1]).pipe(parse({ format: 'csv', encoding: 'latin1' }), toArray()));
    const out16 = await lastValueFrom(from([utf16]).pipe(parse({ format: 'csv' }), toArray()));
    expect([...out, ...out16].map((e) => e.value)).to.deep.equal([{ city: 'Zürich' }, { city: 'Århus' }]);
  });

  it('refuses bad options at construction', () => {
    expect(() => parse({ format: 'yaml' as never })).to.throw(ConfigError, `format must be one of 'json', 'ndjson', 'csv', 'xml', got "yaml"`);
    expect(() => parse({ format: 'xml' })).to.throw(ConfigError, 'xml.record is required for XML');
    expect(() => parse({ format: 'csv', csv: { delimiter: '' } })).to.throw(ConfigError, "csv.delimiter must be one character other than a line break, got ''");
  });
});
