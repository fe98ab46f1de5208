import { expect } from 'chai';
import { createHash, randomUUID } from 'node:crypto';
import { fromWebhook, MemoryReplayStore, redisReplayStore, type ReplayStore, type WebhookSource } from '../../../connectors/webhook';
import { AccessControl } from '../../../lib/security/access';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';
import { ensureRedis } from '../../services';
import { post } from '../../webhookClient';

const SECRET = 'shared-store-secret-0123456789';
const poster = AccessControl.issueKey('poster', ['acme']);
const access = new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [poster.record] });

/** One webhook instance: a source, its pipeline and what it stored. */
async function instance(replay: ReplayStore, replayHoldMs?: number): Promise<{ url: string; sink: MemorySink<unknown>; stop: () => Promise<unknown>; source: WebhookSource }> {
  const source = fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] } }, access, replay, ...(replayHoldMs !== undefined && { replayHoldMs }) });
  const sink = new MemorySink<unknown>('rows');
  const pipeline = new Pipeline({ source, sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 10, maxWaitMs: 5 } });
  await pipeline.start();
  return { url: `${await source.url()}/webhooks/acme`, sink, source, stop: () => pipeline.stop() };
}

describe('fromWebhook: replay stores', function () {
  this.timeout(120_000);
  let url: string;

  before(async function () {
    this.timeout(600_000);
    url = await ensureRedis();
  });

  it('with a Redis store, a request accepted by one instance is a replay at the other', async () => {
    const prefix = `test:webhook:${randomUUID()}:`;
    const storeA = redisReplayStore({ url, prefix });
    const storeB = redisReplayStore({ url, prefix });
    const a = await instance(storeA);
    const b = await instance(storeB);
    try {
      const timestamp = Math.floor(Date.now() / 1000);
      const body = JSON.stringify({ ref: 'R1' });
      const first = await post(a.url, body, { key: poster.token, secret: SECRET, id: 'evt-1', timestamp });
      expect(first.status).to.equal(200);
      const replayed = await post(b.url, body, { key: poster.token, secret: SECRET, id: 'evt-1', timestamp });
      expect([replayed.status, JSON.parse(replayed.body).error]).to.deep.equal([409, 'REPLAY']);
      // Concurrent deliveries of one new event to both: exactly one is accepted, the other
      // told to try again (503 IN_PROGRESS, or 409 if the first was stored by then).
      const both = await Promise.all([a, b].map((i) => post(i.url, body, { key: poster.token, secret: SECRET, id: 'evt-2', timestamp })));
      expect(both.map((r) => r.status).sort()[0]).to.equal(200);
      expect(both.map((r) => r.status).sort()[1]).to.be.oneOf([409, 503]);
      expect(a.sink.rows.length + b.sink.rows.length).to.equal(2);
    } finally {
      await a.stop();
      await b.stop();
      await storeA.close();
      await storeB.close();
    }
  });

  it('with a Redis store, the id of a request whose instance died before storing it is free for the retry once its hold passes', async () => {
    const prefix = `test:webhook:${randomUUID()}:`;
    const storeA = redisReplayStore({ url, prefix });
    const storeB = redisReplayStore({ url, prefix });
    const a = await instance(storeA, 500);
    const b = await instance(storeB, 500);
    try {
      // A takes the request and never stores it (its sink hangs), then loses its store: as
      // far as the shared store knows, A died holding the id.
      a.sink.gate = () => new Promise(() => undefined);
      const timestamp = Math.floor(Date.now() / 1000);
      const body = JSON.stringify({ ref: 'LOST?' });
      void post(a.url, body, { key: poster.token, secret: SECRET, id: 'evt-died', timestamp }).catch(() => undefined);
      for (let i = 0; i < 100 && a.source.stats.pending === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(a.source.stats.pending).to.equal(1);
      await storeA.close();
      // The vendor's retry while A may still store it: try again later, not "already received".
      const early = await post(b.url, body, { key: poster.token, secret: SECRET, id: 'evt-died', timestamp });
      expect([early.status, JSON.parse(early.body).error]).to.deep.equal([503, 'IN_PROGRESS']);
      await new Promise((resolve) => setTimeout(resolve, 600));
      const retried = await post(b.url, body, { key: poster.token, secret: SECRET, id: 'evt-died', timestamp });
      expect(retried.status).to.equal(200);
      expect(b.sink.rows).to.deep.equal([{ ref: 'LOST?' }]);
      // Stored now: a replay is refused for the rest of the window.
      const replayed = await post(b.url, body, { key: poster.token, secret: SECRET, id: 'evt-died', timestamp });
      expect([replayed.status, JSON.parse(replayed.body).error]).to.deep.equal([409, 'REPLAY']);
    } finally {
      await b.stop();
      await storeB.close();
      void a.stop();
    }
  });

  it('with a Redis store, refuses every replayed id inside the window, keyed by a fixed-size digest, and frees released ids', async () => {
    const prefix = `test:webhook:${randomUUID()}:`;
    const store = redisReplayStore({ url, prefix });
    const { Redis } = await import('ioredis');
    const client = new Redis(url);
    try {
      const ids = Array.from({ length: 1000 }, (_, i) => `acme/${'evt'.repeat(i % 80)}-${i}`);
      const expiresAt = Date.now() + 60_000;
      expect(await Promise.all(ids.map((id) => store.claim(id, expiresAt)))).to.deep.equal(ids.map(() => true));
      expect(await Promise.all(ids.map((id) => store.claim(id, expiresAt)))).to.deep.equal(ids.map(() => 'pending'));
      await Promise.all(ids.map((id) => store.confirm!(id, expiresAt)));
      expect(await Promise.all(ids.map((id) => store.claim(id, expiresAt)))).to.deep.equal(ids.map(() => false));
      const keys = await client.keys(`${prefix}*`);
      expect(keys).to.have.length(1000);
      expect(new Set(keys.map((k) => k.length - prefix.length))).to.deep.equal(new Set([22]));
      const ttl = await client.pttl(keys[0]!);
      expect(ttl).to.be.within(1, 60_000);
      await store.release(ids[5]!);
      expect(await store.claim(ids[5]!, expiresAt)).to.equal(true);
      expect(await store.claim(ids[6]!, expiresAt)).to.equal(false);
      // A claim confirmed nowhere is held only until the expiry it was given.
      const brief = `brief-${randomUUID()}`;
      expect(await store.claim(brief, Date.now() + 300)).to.equal(true);
      expect(await store.claim(brief, expiresAt)).to.equal('pending');
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(await store.claim(brief, expiresAt), 'its hold passed').to.equal(true);
    } finally {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
      await store.close();
    }
  });

  it('with a Redis store and no prefix, keeps an id under tributary:webhook: and the first 16 bytes of its SHA-256', async () => {
    const store = redisReplayStore({ url });
    const { Redis } = await import('ioredis');
    const client = new Redis(url);
    const id = `acme/evt-${randomUUID()}`;
    const key = `tributary:webhook:${createHash('sha256').update(id).digest().subarray(0, 16).toString('base64url')}`;
    try {
      expect(await store.claim(id, Date.now() + 60_000)).to.equal(true);
      expect(await client.get(key), 'in progress').to.equal('p');
      await store.confirm!(id, Date.now() + 60_000);
      expect(await client.get(key), 'stored').to.equal('1');
      await store.release(id);
      expect(await client.exists(key)).to.equal(0);
    } finally {
      await client.del(key);
      client.disconnect();
      await store.close();
    }
  });

  it('answers 503 when the store cannot be reached or is full, and stores nothing', async () => {
    const unreachable = redisReplayStore({ url: 'redis://127.0.0.1:1', redis: { enableOfflineQueue: false, retryStrategy: () => null } });
    const down = await instance(unreachable);
    const full = await instance(new MemoryReplayStore({ maxEntries: 1 }));
    try {
      const body = JSON.stringify({ ref: 'D1' });
      const refused = await post(down.url, body, { key: poster.token, secret: SECRET, id: 'evt-3' });
      expect([refused.status, JSON.parse(refused.body).error, refused.headers['retry-after']]).to.deep.equal([503, 'REPLAY_STORE_UNAVAILABLE', '1']);
      expect(down.sink.rows).to.have.length(0);

      expect((await post(full.url, body, { key: poster.token, secret: SECRET, id: 'evt-4' })).status).to.equal(200);
      const noRoom = await post(full.url, body, { key: poster.token, secret: SECRET, id: 'evt-5' });
      expect([noRoom.status, JSON.parse(noRoom.body).error]).to.deep.equal([503, 'REPLAY_STORE_FULL']);
      expect(full.sink.rows).to.have.length(1);
      expect(full.source.stats.refused).to.deep.equal({ REPLAY_STORE_FULL: 1 });
    } finally {
      await down.stop();
      await full.stop();
      await unreachable.close();
    }
  });
});
