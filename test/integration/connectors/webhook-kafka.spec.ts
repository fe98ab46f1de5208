import { expect } from 'chai';
import { map } from 'rxjs';
import { toKafka } from '../../../connectors/kafka';
import { fromWebhook } from '../../../connectors/webhook';
import { AccessControl } from '../../../lib/security/access';
import type { Envelope } from '../../../lib/envelope';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { delay, MemorySink, until } from '../../helpers';
import { createTopic, endOffsets, readAll } from '../../kafka';
import { ensureKafka, startKafka, stopKafka } from '../../services';
import { post, type Answer } from '../../webhookClient';

const SECRET = 'acme-buffer-secret-0123456789abcdef';
const poster = AccessControl.issueKey('acme-poster', ['acme']);
const access = new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [poster.record] });

interface Booking {
  webhook: string;
  ref: string;
}

describe('fromWebhook with a Kafka topic as its durable buffer', function () {
  this.timeout(120_000);
  let brokers: string[];

  before(async function () {
    this.timeout(600_000);
    brokers = await ensureKafka();
  });

  it('answers 2xx once the records are in the topic, 503 while the broker is down, and loses nothing a sender retries', async () => {
    const { topic, remove } = await createTopic(brokers, 2, 'webhook-buffer');
    const source = fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] } }, access, retryAfterSeconds: 1 });
    const pipeline = new Pipeline<Booking>({
      source,
      transform: map((e: Envelope<any>) => e.map<Booking>({ webhook: e.meta.key!, ref: String(e.value.ref) })),
      sink: toKafka<Booking>({ brokers, topic, key: (e) => e.value.webhook, logLevel: 'nothing', kafka: { retry: { retries: 1, initialRetryTime: 100 }, requestTimeout: 3000, connectionTimeout: 1000 } }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 50, maxWaitMs: 20 },
      breaker: { volumeThreshold: 1, resetTimeoutMs: 2000 },
      retry: { maxDelayMs: 500 },
    });
    let stopped = false;
    try {
      await pipeline.start();
      const route = `${(await source.url())}/webhooks/acme`;
      const send = (id: string, refs: string[]) => post(route, JSON.stringify(refs.map((ref) => ({ ref }))), { key: poster.token, secret: SECRET, id });

      // Broker up: each 2xx means its records can be read back from the topic.
      const inTopic = async () => [...(await endOffsets(brokers, topic)).values()].reduce((a, b) => a + b, 0);
      for (const [i, id] of ['w1', 'w2', 'w3'].entries()) {
        const answer = await send(id, [`${id}-a`, `${id}-b`]);
        expect(answer.status, answer.body).to.equal(200);
        // Read at once, without waiting: the answer came after the broker's acknowledgement.
        expect(await inTopic()).to.equal(2 * (i + 1));
      }
      const before = await readAll(brokers, topic, 6);
      expect(before.map((m) => JSON.parse(m.value.toString()).ref).sort()).to.deep.equal(['w1-a', 'w1-b', 'w2-a', 'w2-b', 'w3-a', 'w3-b']);
      expect(before.every((m) => m.key === JSON.parse(m.value.toString()).webhook)).to.equal(true);

      // Broker down: a request under way is not answered 2xx; once the breaker opens, new ones get 503.
      await stopKafka();
      stopped = true;
      let held: Answer | undefined;
      const heldRequest = send('w4', ['w4-a']).then((answer) => (held = answer));
      await until(() => pipeline.breakerState === 'open', 60_000, 'the sink breaker to open');
      const refused = await send('w5', ['w5-a', 'w5-b']);
      expect([refused.status, JSON.parse(refused.body).error, refused.headers['retry-after']]).to.deep.equal([503, 'SINK_UNAVAILABLE', '1']);
      expect(held, 'an answer while the broker is down').to.equal(undefined);

      // Broker back: the held request is answered 2xx, and the refused one, sent again, is taken.
      await startKafka();
      stopped = false;
      await heldRequest;
      expect(held!.status, held!.body).to.equal(200);
      let retried: Answer;
      for (let i = 0; ; i++) {
        retried = await send('w5', ['w5-a', 'w5-b']);
        if (retried.status === 200 || i > 30) break;
        expect(retried.status, retried.body).to.equal(503);
        await delay(Number(retried.headers['retry-after']) * 1000);
      }
      expect(retried.status, retried.body).to.equal(200);

      const all = await readAll(brokers, topic, 9);
      // At least once: a write attempt cut off by the outage may have landed as well.
      expect([...new Set(all.map((m) => JSON.parse(m.value.toString()).ref))].sort()).to.deep.equal(['w1-a', 'w1-b', 'w2-a', 'w2-b', 'w3-a', 'w3-b', 'w4-a', 'w5-a', 'w5-b']);
      expect(source.stats).to.include({ accepted: 5, records: 9, pending: 0 });
    } finally {
      if (stopped) await startKafka();
      await pipeline.stop().catch(() => undefined);
      await remove();
    }
  });
});
