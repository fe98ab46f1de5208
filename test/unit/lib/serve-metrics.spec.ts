import { expect } from 'chai';
import { request } from 'node:http';
import { NEVER } from 'rxjs';
import { Registry } from 'prom-client';
import { ConfigError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import { AccessControl } from '../../../lib/security/access';
import { serveMetrics, type MetricsServer } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';

const idle = (name: string) => new Pipeline({ name, source: { name: 'feed', open: () => NEVER }, sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters') });

/** One request, with what came back: status, the headers asked for, body. */
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
    expect([post.status, post.headers.allow, post.body]).to.deep.equal([405, 'GET, HEAD', 'only GET and HEAD\n']);
    const missing = await ask(`${server.url}/metrics/x`);
    expect([missing.status, missing.headers.type, missing.headers.cache, missing.body]).to.deep.equal([404, 'text/plain', 'no-store', 'not found: /metrics, /health, /ready\n']);
    const head = await ask(`${server.url}/metrics`, 'HEAD');
    expect([head.status, head.body]).to.deep.equal([200, '']);
    const metrics = await ask(`${server.url}/metrics?x=1`);
    expect(metrics.headers.type).to.equal(server.registry.contentType);
    expect(metrics.body).to.include('tributary_pipeline_up{pipeline="p"} 0');
    const health = await ask(`${server.url}/health`);
    expect([health.status, health.headers.type, JSON.parse(health.body)]).to.deep.equal([200, 'application/json', { live: true, failed: [] }]);
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
    expect([none.status, none.headers.auth, none.body]).to.deep.equal([401, 'Bearer', 'a valid API key is required\n']);
    const forbidden = await ask(`${server.url}/metrics`, 'GET', { authorization: `Bearer ${vendor.token}` });
    expect([forbidden.status, forbidden.headers.auth, forbidden.body]).to.deep.equal([403, undefined, 'permission metrics:read is required\n']);
    const refused = await serveMetrics(idle('x'), { port: 0, access: {} as AccessControl }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).to.be.instanceOf(ConfigError).with.property('message', 'access must be an AccessControl');
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
