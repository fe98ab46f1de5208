import { expect } from 'chai';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import Module from 'node:module';
import { dirname } from 'node:path';
import { installRecordDecoder, recordDecoder } from '../../../connectors/kafka/recordDecoder';

/**
 * tributary's Kafka record decoder against kafkajs 2.2.4's own, loaded afresh from its file
 * (the installed one may be ours): the same records, the same place in the bytes after each,
 * the same errors, for any record bytes.
 */

type Decode = (decoder: unknown, batchContext?: unknown) => unknown;

const recordPath = require.resolve('kafkajs/src/protocol/recordBatch/record/v0/decoder.js');
const KafkaDecoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => { offset: number };

function kafkajsOwn(): Decode {
  const copy = new Module(recordPath);
  copy.filename = recordPath;
  copy.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(dirname(recordPath));
  (copy as unknown as { _compile(code: string, file: string): void })._compile(readFileSync(recordPath, 'utf8'), recordPath);
  return copy.exports as Decode;
}

const theirs = kafkajsOwn();
const ours = recordDecoder(require('kafkajs/src/utils/long')) as Decode;

/** Zigzag varint of any 64-bit value, as Kafka writes it. */
function varlong(value: bigint): number[] {
  let zigzag = BigInt.asUintN(64, (value << 1n) ^ (value >> 63n));
  const out: number[] = [];
  do {
    let byte = Number(zigzag & 0x7fn);
    zigzag >>= 7n;
    if (zigzag > 0n) byte |= 0x80;
    out.push(byte);
  } while (zigzag > 0n);
  return out;
}

const bytesOf = (value: Buffer | null): number[] => (value === null ? varlong(-1n) : [...varlong(BigInt(value.length)), ...value]);

interface Header {
  key: string | null;
  value: Buffer | null;
}

function record(attributes: number, timestampDelta: bigint, offsetDelta: number, key: Buffer | null, value: Buffer | null, headers: Header[], count = headers.length): Buffer {
  const out = [attributes & 0xff, ...varlong(timestampDelta), ...varlong(BigInt(offsetDelta)), ...bytesOf(key), ...bytesOf(value), ...varlong(BigInt(count))];
  for (const header of headers) out.push(...bytesOf(header.key === null ? null : Buffer.from(header.key)), ...bytesOf(header.value));
  return Buffer.from(out);
}

/** What a decode gives, in a form deep equality compares fully: buffers as hex, headers with their prototype and key order, inherited values named. */
function seen(decode: Decode, bytes: Buffer, context: unknown): unknown {
  const decoder = new KafkaDecoder(bytes);
  let result: Record<string, unknown>;
  try {
    result = decode(decoder, context) as Record<string, unknown>;
  } catch (error) {
    return { threw: (error as Error).constructor.name, message: (error as Error).message };
  }
  const shown = (value: unknown): unknown =>
    Buffer.isBuffer(value) ? `hex:${value.toString('hex')}` : Array.isArray(value) ? value.map(shown) : value === Object.prototype ? 'Object.prototype' : typeof value === 'function' ? `function ${value.name}` : value;
  const headers = result.headers as Record<string, unknown>;
  return {
    keys: Object.keys(result),
    fields: Object.fromEntries(Object.entries(result).map(([k, v]) => [k, k === 'headers' ? null : k === 'batchContext' ? v === context || context === undefined : shown(v)])),
    headers: Object.getOwnPropertyNames(headers).map((k) => {
      const { enumerable, writable, configurable } = Object.getOwnPropertyDescriptor(headers, k)!;
      return [k, shown(headers[k]), enumerable, writable, configurable];
    }),
    headersProto: Object.getPrototypeOf(headers) === Object.prototype,
    offsetAfter: decoder.offset,
  };
}

const bigOffset = fc.oneof(
  fc.bigInt({ min: 0n, max: 10n ** 15n }),
  fc.bigInt({ min: 10n ** 14n, max: 2n ** 63n - 1n }),
  fc.constantFrom(0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 10n ** 15n - 1n, 10n ** 15n, 2n ** 63n - 1n),
);
const timestamp = fc.oneof(fc.bigInt({ min: -1n, max: 4_102_444_800_000n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.constantFrom(-1n, 0n, 999_999_999_999_999n, -99_999_999_999_999n));
const delta = fc.oneof(fc.bigInt({ min: -100_000n, max: 100_000n }), fc.bigInt({ min: -(2n ** 48n), max: 2n ** 48n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const buffer = fc.option(fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)), { nil: null });
const headerKey = fc.option(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'toString', 'constructor', 'vendor', '0', '1', 'null', '')), { nil: null });
const header = fc.record({ key: headerKey, value: buffer });

describe('Kafka record decoder: the records kafkajs 2.2.4 decodes, faster', () => {
  it('gives what kafkajs gives for any record: offsets and times past 2^53, any headers, append time or not', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -128, max: 127 }),
        bigOffset,
        timestamp,
        delta,
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        buffer,
        buffer,
        fc.array(header, { maxLength: 6 }),
        fc.constantFrom(0, 1, -1, undefined),
        fc.option(timestamp, { nil: undefined }),
        fc.boolean(),
        (attributes, firstOffset, firstTimestamp, timestampDelta, offsetDelta, key, value, headers, timestampType, maxTimestamp, isControlBatch) => {
          const context = { firstOffset: String(firstOffset), firstTimestamp: String(firstTimestamp), magicByte: 2, isControlBatch, timestampType, ...(maxTimestamp !== undefined && { maxTimestamp: String(maxTimestamp) }) };
          const bytes = record(attributes, timestampDelta, offsetDelta, key, value, headers);
          expect(seen(ours, bytes, context)).to.deep.equal(seen(theirs, bytes, context));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('gives what kafkajs gives for a batch context without offsets or times, and for none at all', () => {
    const bytes = record(0, 5n, 3, Buffer.from('k'), Buffer.from('v'), [{ key: 'a', value: Buffer.from('1') }]);
    for (const context of [{}, undefined, { firstOffset: '7' }, { firstTimestamp: '1700000000000' }]) {
      expect(seen(ours, bytes, context)).to.deep.equal(seen(theirs, bytes, context));
    }
  });

  it('gives what kafkajs gives (or throws as it does) for truncated and malformed bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 48 }), fc.constantFrom('0', '123', '99999999999999999'), (bytes, base) => {
        const context = { firstOffset: base, firstTimestamp: base, magicByte: 2 };
        const ourView = seen(ours, Buffer.from(bytes), context) as { message?: string };
        // A header count past the bytes left: refused, where kafkajs would read zeros up to 2^31 times.
        if (ourView.message?.includes('record headers cannot fit')) return;
        expect(ourView).to.deep.equal(seen(theirs, Buffer.from(bytes), context));
      }),
      { numRuns: 3000 },
    );
    const context = { firstOffset: '10', firstTimestamp: '1700000000000', magicByte: 2 };
    const whole = record(0, 12345n, 7, Buffer.from('key'), Buffer.from('value'), [{ key: 'h', value: Buffer.from('x') }, { key: 'h', value: null }]);
    let refused = 0;
    for (let cut = 0; cut <= whole.length; cut++) {
      const ourView = seen(ours, whole.subarray(0, cut), context) as { message?: string };
      // Headers counted past the end: refused, where kafkajs reads zeros as headers.
      if (ourView.message?.includes('record headers cannot fit')) {
        refused++;
        continue;
      }
      expect(ourView, `cut at ${cut}`).to.deep.equal(seen(theirs, whole.subarray(0, cut), context));
    }
    expect(refused).to.be.below(whole.length / 2);
  });

  it('reads header counts as kafkajs does: -1 as none, below -1 refused', () => {
    const context = { firstOffset: '1', firstTimestamp: '2', magicByte: 2 };
    for (const count of [-1, 0, -2, -7]) {
      const bytes = record(0, 0n, 0, null, Buffer.from('{}'), [], count);
      expect(seen(ours, bytes, context), `count ${count}`).to.deep.equal(seen(theirs, bytes, context));
    }
    expect((seen(ours, record(0, 0n, 0, null, null, [], -2), context) as { threw?: string }).threw).to.equal('RangeError');
  });

  it('refuses a header count the record cannot hold (kafkajs would read past its end up to 2^31 times)', () => {
    const context = { firstOffset: '1', firstTimestamp: '2', magicByte: 2 };
    const huge = record(0, 0n, 0, null, Buffer.from('{}'), [], 2 ** 31 - 1);
    expect(seen(ours, huge, context)).to.deep.equal({ threw: 'RangeError', message: '2147483647 record headers cannot fit in the 0 bytes left' });
    // The most that fit (two bytes each: empty key, null value... here empty values) still read.
    const fitting = Buffer.concat([record(0, 0n, 0, null, null, [], 2), Buffer.from([0, 0, 0, 0])]);
    expect(seen(ours, fitting, context)).to.deep.equal(seen(theirs, fitting, context));
  });

  it('refuses a count one header past what fits, and reads the count that just fits', () => {
    const context = { firstOffset: '1', firstTimestamp: '2', magicByte: 2 };
    // Three headers counted, five bytes left: refused, with the bytes left named.
    const over = Buffer.concat([record(0, 0n, 0, null, null, [], 3), Buffer.from([0, 0, 0, 0, 0])]);
    expect(seen(ours, over, context)).to.deep.equal({ threw: 'RangeError', message: '3 record headers cannot fit in the 5 bytes left' });
    const fits = Buffer.concat([record(0, 0n, 0, null, null, [], 3), Buffer.from([0, 0, 0, 0, 0, 0])]);
    expect(seen(ours, fits, context)).to.deep.equal(seen(theirs, fits, context));
  });

  it('sums offsets and times within exact reach as numbers, never with Long (the speed it is for)', () => {
    const refusing = { fromValue: () => expect.fail('Long used') };
    const decode = recordDecoder(refusing) as Decode;
    // 15 characters, the most summed as numbers; a delta of 7 varint bytes, the most read as one.
    const bytes = record(0, 2n ** 47n, 2 ** 31 - 1, null, Buffer.from('v'), []);
    for (const [firstOffset, firstTimestamp] of [['999999999999999', '-99999999999999'], ['0', '1700000000000'], ['5', '5']]) {
      const context = { firstOffset, firstTimestamp, magicByte: 2 };
      expect(seen(decode, bytes, context)).to.deep.equal(seen(theirs, bytes, context));
    }
    // Past them, Long sums (and gives what kafkajs gives).
    let used = 0;
    const counting = { fromValue: (value: unknown) => (used++, (require('kafkajs/src/utils/long') as { fromValue(v: unknown): unknown }).fromValue(value)) };
    const context = { firstOffset: '1000000000000000', firstTimestamp: '1000000000000000', magicByte: 2 };
    expect(seen(recordDecoder(counting as never) as Decode, bytes, context)).to.deep.equal(seen(theirs, bytes, context));
    expect(used).to.equal(2);
  });

  it('reads a kept header key in place (no string read), keeps the last eight short keys, not longer ones', () => {
    const context = { firstOffset: '1', firstTimestamp: '2', magicByte: 2 };
    const withKey = (key: string) => record(0, 0n, 0, null, null, [{ key, value: Buffer.from('x') }]);
    /** How many header keys the decode read as strings (not reused). */
    const stringsRead = (bytes: Buffer): number => {
      const decoder = new KafkaDecoder(bytes) as unknown as { readVarIntString(): string | null };
      const read = decoder.readVarIntString.bind(decoder);
      let count = 0;
      decoder.readVarIntString = () => (count++, read());
      ours(decoder, context);
      return count;
    };
    const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
    for (const key of keys) stringsRead(withKey(key));
    for (const key of keys) expect(stringsRead(withKey(key)), key).to.equal(0);
    // A ninth key pushes out the one least recently read as a string.
    expect(stringsRead(withKey('key-8'))).to.equal(1);
    expect(stringsRead(withKey('key-0'))).to.equal(1);
    expect(stringsRead(withKey('key-8'))).to.equal(0);
    // 32 bytes are kept, 33 are not.
    const long = 'k'.repeat(32);
    stringsRead(withKey(long));
    expect(stringsRead(withKey(long))).to.equal(0);
    stringsRead(withKey(`${long}k`));
    expect(stringsRead(withKey(`${long}k`))).to.equal(1);
  });

  it('repeats a header key as kafkajs does: one value, then an array of them in order; __proto__ an own key', () => {
    const bytes = record(0, 0n, 0, null, null, [
      { key: 'h', value: Buffer.from('1') },
      { key: 'h', value: Buffer.from('2') },
      { key: 'h', value: null },
      { key: '__proto__', value: Buffer.from('p') },
    ]);
    const decoded = ours(new KafkaDecoder(bytes), { firstOffset: '0', firstTimestamp: '0' }) as { headers: Record<string, unknown> };
    expect(decoded.headers.h).to.deep.equal([Buffer.from('1'), Buffer.from('2'), null]);
    expect(Object.getPrototypeOf(decoded.headers)).to.equal(Object.prototype);
    expect(Object.keys(decoded.headers)).to.deep.equal(['h', '__proto__']);
  });

  it('reads header keys as kafkajs does when the same bytes come again, or nearly: reused only for the same ASCII bytes', () => {
    const context = { firstOffset: '1', firstTimestamp: '2', magicByte: 2 };
    const raw = (bytes: number[], value = [0x31]) => [...varlong(BigInt(bytes.length)), ...bytes, ...varlong(BigInt(value.length)), ...value];
    const ascii = (text: string) => [...Buffer.from(text, 'latin1')];
    // 'vé' from three bytes, then the two bytes 'v' and Latin-1 'é', which are not 'vé' in UTF-8.
    const keys = [ascii('vendor'), ascii('vendor'), ascii('vendoR'), ascii('vendor'), [0x76, 0x65, 0x6e, 0x64, 0xc3, 0xa9], [0xff, 0xfe], [0xff, 0xfe], [0xfd, 0xfe], ascii('ab'), [0xe1, 0x62], ascii('vendor'), [0x76, 0xc3, 0xa9], [0x76, 0xe9]];
    // No key, no value, then the headers.
    const recordOf = (count: number, headers: number[]) => Buffer.from([0, ...varlong(0n), ...varlong(0n), ...varlong(-1n), ...varlong(-1n), ...varlong(BigInt(count)), ...headers]);
    for (const key of keys) {
      // One header; then the same key twice around another in one record.
      for (const bytes of [recordOf(1, raw(key)), recordOf(3, [...raw(key), ...raw(ascii('x')), ...raw(key, [0x32])])]) {
        expect(seen(ours, bytes, context), Buffer.from(key).toString('hex')).to.deep.equal(seen(theirs, bytes, context));
      }
    }
    // A key running past the end of the record, after 'vendor' was kept: read as kafkajs reads it, cut short.
    const cut = recordOf(1, [...varlong(6n), ...ascii('ven')]);
    expect(seen(ours, cut, context)).to.deep.equal(seen(theirs, cut, context));
    expect((seen(ours, cut, context) as { headers: [string, unknown, boolean][] }).headers[0]![0]).to.equal('ven');
  });

  it('keeps each batch its own base: records of batches in turn get their own offsets and times', () => {
    const bytes = record(0, 10n, 2, null, Buffer.from('x'), []);
    for (const [firstOffset, firstTimestamp] of [['100', '1000'], ['200', '2000'], ['100', '1000'], ['123456789012345', '-1']]) {
      const decoded = ours(new KafkaDecoder(bytes), { firstOffset, firstTimestamp }) as { offset: string; timestamp: string };
      expect(decoded.offset).to.equal(String(BigInt(firstOffset!) + 2n));
      expect(decoded.timestamp).to.equal(String(BigInt(firstTimestamp!) + 10n));
    }
  });

  describe('installRecordDecoder', () => {
    const recordFile = require.resolve('kafkajs/src/protocol/recordBatch/record/v0/decoder.js');
    const batchFile = require.resolve('kafkajs/src/protocol/recordBatch/v0/decoder.js');
    const packageFile = require.resolve('kafkajs/package.json');
    const moduleOf = (file: string, exports: unknown) => Object.assign(new Module(file), { filename: file, loaded: true, exports });
    /** Runs `body` with these module cache entries (undefined: none), then puts the cache back as it was. */
    function withCache<R>(entries: Record<string, NodeJS.Module | undefined>, body: () => R): R {
      const saved = new Map(Object.keys(entries).map((file) => [file, require.cache[file]]));
      try {
        for (const [file, entry] of Object.entries(entries)) {
          if (entry) require.cache[file] = entry;
          else delete require.cache[file];
        }
        return body();
      } finally {
        for (const [file, entry] of saved) {
          if (entry) require.cache[file] = entry;
          else delete require.cache[file];
        }
      }
    }

    it('puts the decoder in place of kafkajs 2.2.4 own before kafkajs loads, once', () => {
      withCache({ [recordFile]: undefined, [batchFile]: undefined }, () => {
        expect(installRecordDecoder()).to.equal('installed');
        const installed = require(recordFile) as Decode & { tributary?: boolean };
        expect(installed.tributary).to.equal(true);
        const bytes = record(0, 3n, 4, null, Buffer.from('v'), [{ key: 'vendor', value: Buffer.from('acme') }]);
        const context = { firstOffset: '10', firstTimestamp: '1700000000000', magicByte: 2 };
        expect(seen(installed, bytes, context)).to.deep.equal(seen(theirs, bytes, context));
        expect(installRecordDecoder()).to.equal('already');
        expect(require(recordFile)).to.equal(installed);
      });
    });

    it('leaves kafkajs as it is once its batch decoder loaded, for another version, or laid out otherwise', () => {
      const own = moduleOf(recordFile, theirs);
      withCache({ [recordFile]: own, [batchFile]: moduleOf(batchFile, () => undefined) }, () => {
        expect(installRecordDecoder()).to.equal('loaded before');
        expect(require(recordFile)).to.equal(theirs);
      });
      withCache({ [recordFile]: own, [batchFile]: undefined, [packageFile]: moduleOf(packageFile, { version: '2.2.5' }) }, () => {
        expect(installRecordDecoder()).to.equal('other version');
        expect(require(recordFile)).to.equal(theirs);
      });
      withCache({ [recordFile]: own, [batchFile]: undefined, [packageFile]: moduleOf(packageFile, null) }, () => {
        expect(installRecordDecoder()).to.equal('unavailable');
        expect(require(recordFile)).to.equal(theirs);
      });
    });
  });
});
