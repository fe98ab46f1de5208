import { expect } from 'chai';
import { fromKafka } from '../../../connectors/kafka';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { parse } from '../../../operators/parse';
import { MemorySink, until } from '../../helpers';
import { caughtUp, createTopic, produce } from '../../kafka';
import { ensureKafka } from '../../services';

/**
 * A hostile producer on a topic a pipeline reads: tombstones, empty and binary values,
 * invalid UTF-8, other encodings, truncated and deeply nested JSON, prototype keys,
 * binary keys and repeated headers, between good messages. Every good message is stored,
 * every bad one is exactly one dead letter with its bytes, the counts add up and the
 * group commits past all of them.
 */
describe('Kafka: a hostile producer', function () {
  this.timeout(120_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('stores every good message and dead-letters each bad one once, with its bytes, and commits past them', async () => {
    const { topic, remove } = await createTopic(brokers, 1, 'hostile');
    const groupId = `${topic}-group`;
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const hostile: { value: Buffer | string | null; code: string }[] = [
      { value: null, code: 'PARSE_JSON' },
      { value: '', code: 'PARSE_JSON' },
      { value: Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), code: 'INVALID_UTF8' },
      { value: Buffer.from('\ufeff{"id":"utf16"}', 'utf16le'), code: 'INVALID_UTF8' },
      { value: '{"id":"cut', code: 'PARSE_JSON' },
      { value: deep, code: 'TOO_DEEP' },
      { value: '{"id":"x"} {"id":"y"}', code: 'PARSE_JSON' },
      { value: Buffer.from([0xc0, 0xaf]), code: 'INVALID_UTF8' },
    ];
    const messages: { key?: Buffer | string; value: Buffer | string | null; headers?: Record<string, Buffer | string | (Buffer | string)[]> }[] = [];
    const good: unknown[] = [];
    hostile.forEach((h, i) => {
      const id = `g${i}`;
      messages.push({ key: Buffer.from([0xff, 0x00, i]), value: JSON.stringify({ id }), headers: { vendor: ['a', 'b'], raw: Buffer.from([0xff, 0xfe]) } });
      good.push({ id });
      messages.push({ value: h.value });
    });
    // Prototype keys are data: the record holds them as its own fields, nothing is polluted.
    messages.push({ value: '\ufeff{"id":"proto","__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}' });
    const sink = new MemorySink<unknown>();
    const deadLetters = new MemorySink<DeadLetter>();
    const pipeline = new Pipeline({
      source: fromKafka({ brokers, groupId, topics: topic, fromBeginning: true, logLevel: 'nothing' }),
      transform: parse({ maxDepth: 64 }) as any,
      sink,
      deadLetters,
      batch: { rows: 5, maxWaitMs: 20 },
      deadLetterBatch: { maxWaitMs: 1 },
    });
    try {
      await produce(brokers, topic, messages);
      await pipeline.start();
      await until(() => pipeline.stats.written + pipeline.stats.deadLettered === messages.length, 60_000, 'every message settled');
      const stats = await pipeline.stop();
      expect(stats).to.include({ read: messages.length, written: good.length + 1, deadLettered: hostile.length, nacked: 0 });
      const proto = sink.rows.pop() as Record<string, unknown>;
      expect(sink.rows).to.deep.equal(good);
      expect(proto.id).to.equal('proto');
      expect(Object.keys(proto)).to.deep.equal(['id', '__proto__', 'constructor']);
      expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
      expect(Object.getPrototypeOf(proto)).to.equal(Object.prototype);

      const letters = [...deadLetters.rows].sort((a, b) => Number(a.position.split('/')[2]) - Number(b.position.split('/')[2]));
      expect(letters.map((l) => l.code)).to.deep.equal(hostile.map((h) => h.code));
      letters.forEach((letter, i) => {
        const offset = 2 * i + 1;
        expect(letter.position, letter.code).to.equal(`${topic}/0/${offset}`);
        // Every byte of the message in its dead letter (as text when it is UTF-8, else base64).
        const bytes = hostile[i]!.value === null ? Buffer.alloc(0) : Buffer.from(hostile[i]!.value as Buffer | string);
        expect(letter.raw_bytes, `${letter.code} at ${offset}: its length`).to.equal(bytes.length);
        const raw = letter.raw_encoding === 'base64' ? Buffer.from(letter.raw, 'base64') : Buffer.from(letter.raw, 'utf8');
        expect(raw.equals(bytes), `${letter.code} at ${offset}: its bytes`).to.equal(true);
      });
      expect(await caughtUp(brokers, groupId, topic), 'committed past every dead-lettered message').to.equal(true);
    } finally {
      await pipeline.stop().catch(() => undefined);
      await remove();
    }
  });
});
