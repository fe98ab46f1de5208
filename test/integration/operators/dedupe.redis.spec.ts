import { expect } from 'chai';
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { dedupe, type DedupeStats } from '../../../operators/dedupe';
import { redisDedupeStore } from '../../../operators/dedupeStores';
import { Recorder, tempDir } from '../../helpers';
import { ensureRedis } from '../../services';

describe('dedupe with Redis (real redis-server)', function () {
  this.timeout(600_000); // the first run installs Debian's redis-server
  let url: string;

  before(async () => {
    url = await ensureRedis();
  });

  it('claims each key once across two clients, with expiry, and lets the owner claim again', async () => {
    const prefix = `test:${randomUUID()}:`;
    const a = redisDedupeStore({ url, prefix });
    const b = redisDedupeStore({ url, prefix });
    try {
      expect(await a.claim(['k1', 'k2', 'k1'], ['a@1', 'a@2', 'a@3'], 60_000)).to.deep.equal([true, true, false]);
      expect(await b.claim(['k1', 'k3', 'k2'], ['b@1', 'b@2', 'a@2'], 60_000)).to.deep.equal([false, true, true]);
      expect(await b.claim(['short'], ['b@9'], 1)).to.deep.equal([true]);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(await a.claim(['short'], ['a@9'], 60_000), 'expired in Redis').to.deep.equal([true]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('keeps its keys under tributary:dedupe: when given no prefix', async () => {
    const client = new Redis(url);
    const store = redisDedupeStore({ client });
    const key = `default-prefix-${randomUUID()}`;
    try {
      expect(await store.claim([key], ['owner-1'], 60_000)).to.deep.equal([true]);
      expect(await client.get(`tributary:dedupe:${key}`)).to.equal('owner-1');
    } finally {
      await client.del(`tributary:dedupe:${key}`);
      await store.close();
      client.disconnect();
    }
  });

  it('dedupes a stream, acking and counting duplicates', async () => {
    const store = redisDedupeStore({ url, prefix: `test:${randomUUID()}:` });
    try {
      const recorder = new Recorder();
      const counts: DedupeStats = { passed: 0, duplicates: 0, rejected: 0 };
      const ids = Array.from({ length: 2500 }, (_, i) => `id-${i % 1000}`);
      const out = await lastValueFrom(from(ids.map((id) => recorder.envelope({ id }))).pipe(dedupe({ key: (r) => r.id, ttlMs: 60_000, store, stats: counts }), toArray()));
      expect(out.map((e) => e.value.id)).to.deep.equal(ids.slice(0, 1000));
      expect(counts).to.deep.equal({ passed: 1000, duplicates: 1500, rejected: 0 });
      expect(recorder.acked).to.have.length(1500);
    } finally {
      await store.close();
    }
  });

  it('fails claims with a retriable error when Redis cannot be reached, naming why', async () => {
    const store = redisDedupeStore({ url: 'redis://127.0.0.1:1', redis: { maxRetriesPerRequest: 0, retryStrategy: () => null } });
    try {
      let error: (Error & { retriable?: boolean; code?: string }) | undefined;
      await Promise.resolve(store.claim(['k'], ['o'], 1000)).catch((e: Error) => (error = e));
      expect(error?.code).to.equal('DEDUPE_STORE');
      expect(error?.retriable).to.equal(true);
      expect(error?.message).to.match(/^dedupe store: Redis failed: .*ECONNREFUSED 127\.0\.0\.1:1/);
    } finally {
      await store.close();
    }
  });

  it('refuses bad options at construction, with the rule', () => {
    expect(() => redisDedupeStore({})).to.throw(ConfigError, 'redisDedupeStore needs exactly one of url or client');
    expect(() => redisDedupeStore({ url: 'localhost:6379' })).to.throw(ConfigError, 'url must start with redis:// or rediss://, got "localhost:6379"');
  });

  it('two pipelines in separate processes sharing one Redis store write each key once', async () => {
    const dir = tempDir();
    const prefix = `test:${randomUUID()}:`;
    try {
      // Overlapping inputs: 0-1499 and 1000-2499 (500 shared), each with some repeats of its own.
      const first = [...Array.from({ length: 1500 }, (_, i) => `b-${i}`), 'b-1', 'b-2'];
      const second = [...Array.from({ length: 1500 }, (_, i) => `b-${i + 1000}`), 'b-2400', 'b-1001'];
      const worker = join(__dirname, 'dedupe-worker.js');
      const runWorker = (name: string, ids: string[]) =>
        new Promise<{ stats: DedupeStats; written: number; deadLettered: number }>((resolve, reject) => {
          const child = fork(worker, [JSON.stringify({ url, prefix, name, ids, out: join(dir.path, `${name}.ndjson`) })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
          let answer: { ok: boolean; value?: any; error?: string } | undefined;
          child.on('message', (m) => (answer = m as typeof answer));
          child.on('error', reject);
          child.on('exit', (code) => (answer?.ok ? resolve(answer.value) : reject(new Error(`${name} exited ${code}: ${answer?.error ?? 'no answer'}`))));
        });
      const [a, b] = await Promise.all([runWorker('worker-a', first), runWorker('worker-b', second)]);
      const lines = (name: string) =>
        readFileSync(join(dir.path, `${name}.ndjson`), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { id: string }).id);
      const union = [...lines('worker-a'), ...lines('worker-b')];
      expect(union.length, 'rows written in both files').to.equal(2500);
      expect(new Set(union).size).to.equal(2500);
      expect(a.written + b.written).to.equal(2500);
      expect(a.stats.duplicates + b.stats.duplicates, 'shared keys and repeats, acked').to.equal(500 + 4);
      expect(a.deadLettered + b.deadLettered).to.equal(0);
      // Each wrote at least the keys only it had; the 500 shared ones went to whichever claimed first.
      expect(a.written).to.be.at.least(1000);
      expect(b.written).to.be.at.least(1000);
    } finally {
      dir.remove();
    }
  });
});
