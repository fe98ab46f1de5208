import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError, SinkError, ValidationError } from '../../../lib/errors';
import type { LogFields, Logger } from '../../../lib/logger';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { recordOperator } from '../../../operators/recordOperator';
import { MemorySink, until } from '../../helpers';

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

describe('dead letters fit their sink', () => {
  async function letterOf(payload: string, deadLetterRawBytes?: number): Promise<DeadLetter> {
    const deadLetters = new MemorySink<DeadLetter>();
    const refuse = recordOperator('validate', () => {
      throw new ValidationError([{ path: '', message: 'refused' }]);
    });
    await new Pipeline({
      source: fromIterable([payload]),
      transform: (records$) => records$.pipe(parse() as never, refuse as never),
      sink: new MemorySink(),
      deadLetters,
      deadLetterBatch: { maxWaitMs: 1 },
      ...(deadLetterRawBytes !== undefined && { deadLetterRawBytes }),
    }).run();
    return deadLetters.rows[0]!;
  }

  it('keeps the head of a payload over deadLetterRawBytes, cut before a character, with the length and SHA-256 of the whole', async () => {
    const payload = JSON.stringify({ note: 'é'.repeat(500) });
    // Byte 100 is the second byte of an é: the head stops before it, at 99.
    const letter = await letterOf(payload, 100);
    const bytes = Buffer.byteLength(payload);
    expect(letter).to.include({ raw_bytes: bytes, raw_sha256: sha256(payload), raw_encoding: 'utf8' });
    expect(Buffer.byteLength(letter.raw)).to.equal(99);
    expect(payload.startsWith(letter.raw)).to.equal(true);
  });

  it('keeps a payload within the limit whole, and every payload whole with Infinity', async () => {
    const payload = JSON.stringify({ note: 'x'.repeat(300_000) });
    expect((await letterOf('{"a":1}')).raw).to.equal('{"a":1}');
    expect((await letterOf(payload)).raw).to.have.length(256 * 1024);
    const whole = await letterOf(payload, Infinity);
    expect(whole).to.include({ raw: payload, raw_bytes: payload.length, raw_sha256: sha256(payload) });
  });

  it('refuses a limit that is not a positive integer or Infinity', () => {
    const options = { source: fromIterable([]), sink: new MemorySink(), deadLetters: new MemorySink<DeadLetter>() };
    expect(() => new Pipeline({ ...options, deadLetterRawBytes: 0 })).to.throw(ConfigError, 'deadLetterRawBytes must be an integer >= 1 or Infinity, got 0');
    expect(() => new Pipeline({ ...options, deadLetterRawBytes: -Infinity })).to.throw(ConfigError, 'deadLetterRawBytes must be an integer >= 1 or Infinity, got -Infinity');
    expect(() => new Pipeline({ ...options, deadLetterRawBytes: '1024' as never })).to.throw(ConfigError, 'deadLetterRawBytes must be an integer >= 1 or Infinity, got "1024"');
  });

  it('stop({ timeoutMs }) says what it gave up: the records in flight, nacked', async () => {
    const warnings: { message: string; fields: Record<string, unknown> }[] = [];
    const logger: Logger = { debug() {}, info() {}, error() {}, warn: (message: string, fields?: LogFields) => void warnings.push({ message, fields: fields ?? {} }) };
    const sink = new MemorySink<number>();
    sink.gate = async () => {
      throw new SinkError('connection refused', { retriable: true });
    };
    const pipeline = new Pipeline({ source: fromIterable([1, 2, 3]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { maxWaitMs: 1 }, retry: { initialDelayMs: 1, maxDelayMs: 5 }, logger });
    await pipeline.start();
    await until(() => sink.writes.length > 1, 5000, 'a failing write');
    const stopped = await pipeline.stop({ timeoutMs: 50 }).catch((error: Error) => error);
    expect(stopped).to.be.instanceOf(Error);
    const gaveUp = warnings.filter((w) => w.message.startsWith('stop gave up'));
    expect(gaveUp.map((w) => [w.message, w.fields.inFlightRecords])).to.deep.equal([['stop gave up waiting for writes: the records in flight are nacked', 3]]);
    expect(pipeline.stats).to.include({ nacked: 3, written: 0 });
  });
});
