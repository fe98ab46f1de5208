import { expect } from 'chai';
import { request } from 'node:http';
import { NEVER, Observable } from 'rxjs';
import { Gauge, Registry } from 'prom-client';
import { ConfigError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import { AccessControl, type AccessDecision } from '../../../lib/security/access';
import { serveMetrics, type MetricsServer } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import type { SourceContext } from '../../../lib/source';
import { MemorySink } from '../../helpers';

const idle = (name: string) => new Pipeline({ name, source: { name: 'feed', open: () => NEVER }, sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters') });

/** One request, with what came back: status, the headers asked for, body; rejects when no answer comes within 5 s. */
function ask(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode!,
          headers: { allow: response.headers.allow, type: response.headers['content-type'], cache: response.headers['cache-control'], auth: response.headers['www-authenticate'] },
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`no answer from ${method} ${url}`)));
    req.end();
  });
}

describe('serveMetrics', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.close();
  });

  it('answers GET and HEAD only, on /metrics, /health and /ready, uncached, at the url it gives', async () => {
    const pipeline = idle('p');
    const server = await serveMetrics(pipeline, { port: 0 });
    servers.push(server);
    expect(server.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const post = await ask(`${server.url}/metrics`, 'POST');
    expect([post.status, post.headers.allow, post.headers.type, post.body]).to.deep.equal([405, 'GET, HEAD', 'text/plain', 'only GET and HEAD\n']);
    const missing = await ask(`${server.url}/metrics/x`);
    expect([missing.status, missing.headers.type, missing.headers.cache, missing.body]).to.deep.equal([404, 'text/plain', 'no-store', 'not found: /metrics, /health, /ready\n']);
    const head = await ask(`${server.url}/metrics`, 'HEAD');
    expect([head.status, head.body]).to.deep.equal([200, '']);
    const metrics = await ask(`${server.url}/metrics?x=1`);
    expect(metrics.headers.type).to.equal(server.registry.contentType);
    expect(metrics.body).to.include('tributary_pipeline_up{pipeline="p"} 0');
    const health = await ask(`${server.url}/health`);
    expect([health.status, health.headers.type, health.body]).to.deep.equal([200, 'application/json', '{"live":true,"failed":[]}\n']);
    const ready = await ask(`${server.url}/ready`);
    expect(ready.status).to.equal(503);
    expect(JSON.parse(ready.body)).to.deep.include({ ready: false });
    expect(JSON.parse(ready.body).pipelines.p.reasons).to.deep.equal(['pipeline is idle']);
  });

  it('asks for a key with WWW-Authenticate, and names the permission it lacks', async () => {
    const scraper = AccessControl.issueKey('prometheus', ['scraper']);
    const vendor = AccessControl.issueKey('vendor', ['vendor']);
    const access = new AccessControl({ roles: { scraper: ['metrics:read'], vendor: ['webhook:post:*'] }, keys: [scraper.record, vendor.record] });
    const server = await serveMetrics(idle('guarded'), { port: 0, access });
    servers.push(server);
    const none = await ask(`${server.url}/metrics`);
    expect([none.status, none.headers.auth, none.headers.type, none.body]).to.deep.equal([401, 'Bearer', 'text/plain', 'a valid API key is required\n']);
    const forbidden = await ask(`${server.url}/metrics`, 'GET', { authorization: `Bearer ${vendor.token}` });
    expect([forbidden.status, forbidden.headers.auth, forbidden.headers.type, forbidden.body]).to.deep.equal([403, undefined, 'text/plain', 'permission metrics:read is required\n']);
    const refused = await serveMetrics(idle('x'), { port: 0, access: {} as AccessControl }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).to.be.instanceOf(ConfigError).with.property('message', 'access must be an AccessControl');
    const nullAccess = await serveMetrics(idle('y'), { port: 0, access: null as never }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(nullAccess).to.be.instanceOf(ConfigError).with.property('message', 'access must be an AccessControl');
  });

  it('tells access control each decision is for GET /metrics', async () => {
    const scraper = AccessControl.issueKey('prometheus', ['scraper']);
    const decisions: AccessDecision[] = [];
    const access = new AccessControl({ roles: { scraper: ['metrics:read'] }, keys: [scraper.record], onDecision: (d) => decisions.push(d) });
    const server = await serveMetrics(idle('audited'), { port: 0, access });
    servers.push(server);
    expect((await ask(`${server.url}/metrics`, 'GET', { authorization: `Bearer ${scraper.token}` })).status).to.equal(200);
    expect(decisions.map((d) => [d.keyId, d.permission, d.context])).to.deep.equal([['prometheus', 'metrics:read', 'GET /metrics']]);
  });

  it('answers 500 with the reason when the metrics cannot be read', async () => {
    const registry = new Registry();
    new Gauge({
      name: 'app_broken',
      help: 'a gauge whose collect throws',
      registers: [registry],
      collect() {
        throw new Error('collector broke');
      },
    });
    const server = await serveMetrics(idle('p'), { port: 0, registry });
    servers.push(server);
    const answer = await ask(`${server.url}/metrics`);
    expect([answer.status, answer.headers.type, answer.body]).to.deep.equal([500, 'text/plain', 'collector broke\n']);
  });

  it('is ready only when every pipeline is', async () => {
    // A source that reads nothing and completes when the pipeline stops.
    const source = { name: 'feed', open: ({ signal }: SourceContext) => new Observable<never>((subscriber) => signal.addEventListener('abort', () => subscriber.complete())) };
    const running = new Pipeline({ name: 'running', source, sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters') });
    await running.start();
    try {
      const server = await serveMetrics([running, idle('idle')], { port: 0 });
      servers.push(server);
      const ready = await ask(`${server.url}/ready`);
      expect(ready.status).to.equal(503);
      expect(JSON.parse(ready.body).pipelines.running.ready).to.equal(true);
      const alone = await serveMetrics(running, { port: 0, registry: new Registry() });
      servers.push(alone);
      expect((await ask(`${alone.url}/ready`)).status).to.equal(200);
    } finally {
      await running.stop();
    }
  });

  it('stops reporting its pipelines when it cannot listen, and when closed (twice is fine)', async () => {
    const registry = new Registry();
    const first = await serveMetrics(idle('a'), { port: 0, registry });
    const port = Number(new URL(first.url).port);
    const error = await serveMetrics(idle('b'), { port, registry }).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(error?.code).to.equal('EADDRINUSE');
    // 'b' left the registry with the failed server: it may be reported again.
    pipelineMetrics(idle('b'), { registry });
    await first.close();
    await first.close();
    expect(await registry.metrics()).to.not.include('pipeline="a"');
    await ask(first.url).then(
      () => expect.fail('closed'),
      (e: NodeJS.ErrnoException) => expect(e.code).to.equal('ECONNREFUSED'),
    );
  });

  it('listens where told, IPv6 included', async () => {
    const server = await serveMetrics(idle('v6'), { port: 0, host: '::1' });
    servers.push(server);
    expect(server.url).to.match(/^http:\/\/\[::1\]:\d+$/);
    expect((await ask(`${server.url}/health`)).status).to.equal(200);
  });
});
