import { expect } from 'chai';
import { ConfigError } from '../../../lib/errors';
import { resolveXmlOptions } from '../../../formats/xml';

describe('XML options', () => {
  it('fill in their defaults', () => {
    expect(resolveXmlOptions({ record: 'Booking' })).to.deep.equal({ record: 'Booking', attributePrefix: '@', textKey: '#text', arrays: new Set(), keepPrefixes: false, trim: true });
    expect(resolveXmlOptions({ record: 'ota:Booking', attributePrefix: '', textKey: 'value', arrays: ['Ref', 'Leg'], keepPrefixes: true, trim: false })).to.deep.equal({
      record: 'ota:Booking',
      attributePrefix: '',
      textKey: 'value',
      arrays: new Set(['Ref', 'Leg']),
      keepPrefixes: true,
      trim: false,
    });
  });

  it('take element names with at most one prefix, and nothing else', () => {
    for (const record of ['B', '_b', 'b.c-d_1', 'ota:Booking']) expect(resolveXmlOptions({ record }).record).to.equal(record);
    for (const record of ['', '1B', 'a:b:c', 'Booking ', ' Booking', 'x<y', ':B', 'B:', 7, ['Booking']]) {
      expect(() => resolveXmlOptions({ record: record as string }), String(record)).to.throw(ConfigError, `xml.record must be an element name like 'Booking' or 'ota:Booking', got ${JSON.stringify(record)}`);
    }
  });

  it('refuse bad options naming them under the prefix given', () => {
    for (const options of [undefined, null, 'Booking']) {
      expect(() => resolveXmlOptions(options as never, 'files.xml'), String(options)).to.throw(ConfigError, "files.xml.record is required for XML: name the element that holds one record, e.g. { record: 'Booking' }");
    }
    expect(() => resolveXmlOptions({ record: 'B', attributePrefix: 1 as never })).to.throw(ConfigError, 'xml.attributePrefix must be a string, got 1');
    expect(() => resolveXmlOptions({ record: 'B', textKey: 1 as never })).to.throw(ConfigError, 'xml.textKey must be a non-empty string, got 1');
    expect(() => resolveXmlOptions({ record: 'B', textKey: '' }, 'p')).to.throw(ConfigError, 'p.textKey must be a non-empty string, got ""');
    expect(() => resolveXmlOptions({ record: 'B', arrays: 'Ref' as never })).to.throw(ConfigError, 'xml.arrays must be a list of element names, got "Ref"');
    expect(() => resolveXmlOptions({ record: 'B', arrays: ['Ref', 2] as never })).to.throw(ConfigError, 'xml.arrays must be a list of element names, got ["Ref",2]');
  });
});
