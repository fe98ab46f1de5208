import { expect } from 'chai';
import { Agent, request, type ClientRequest } from 'node:http';
import { connect } from 'node:net';
import { map } from 'rxjs';
import { toClickHouse } from '../../../connectors/clickhouse';
import { fromWebhook, signWebhook, type FromWebhookOptions, type WebhookSource } from '../../../connectors/webhook';
import { AccessControl, type IssuedKey } from '../../../lib/security/access';
import { AuditLog, type AuditRow } from '../../../lib/security/audit';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, testClickHouse, until } from '../../helpers';
import { post } from '../../webhookClient';

const SECRET = 'acme-signing-secret-0123456789';
const MAX_BODY = 64 * 1024;

/** The vendor's own key, and keys of holders who have an API key but not the signing secret. */
const legit = AccessControl.issueKey('acme-legit', ['acme']);
const bogus: IssuedKey[] = Array.from({ length: 20 }, (_, i) => AccessControl.issueKey(`bogus-${i}`, ['acme']));
const access = new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [legit.record, ...bogus.map((k) => k.record)] });

interface Row {
  webhook_id: string;
  ref: string;
}

/**
 * A sender that has an API key but not the secret: valid-looking headers, a made-up
 * signature, and a chunked body of which it sends one byte, then nothing.
 */
function slowBogusSender(url: string, key: string, id: string): { req: ClientRequest; answer: Promise<number> } {
  const headers = {
    'content-type': 'application/json',
    authorization: `Bearer ${key}`,
    'transfer-encoding': 'chunked',
    ...signWebhook('not-the-vendor-secret-0123456789', id, Math.floor(Date.now() / 1000), '{}'),
  };
  const req = request(`${url}/webhooks/acme`, { method: 'POST', headers, agent: false });
  const answer = new Promise<number>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', () => resolve(0));
  });
  req.write('[');
  return { req, answer };
}

describe('fromWebhook under hostile senders', function () {
  this.timeout(180_000);
  const clickhouse = testClickHouse();
  let table: string;
  let pipeline: Pipeline<Row> | undefined;
  let source: WebhookSource;
  let url: string;
  const open: ClientRequest[] = [];

  async function start(extra: Partial<FromWebhookOptions> = {}, inFlight?: { records?: number; bytes?: number }): Promise<void> {
    table = `webhook_hostile_${process.pid}_${Date.now()}`;
    await clickhouse.exec(`CREATE TABLE ${table} (webhook_id String, ref String) ENGINE = MergeTree ORDER BY webhook_id`);
    source = fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] } }, access, maxBodyBytes: MAX_BODY, ...extra });
    pipeline = new Pipeline<Row>({
      source,
      transform: map((e: Envelope<any>) => e.map<Row>({ webhook_id: e.meta.key!, ref: String(e.value.ref) })),
      sink: toClickHouse({ client: clickhouse, table }),
      deadLetters: new MemorySink<DeadLetter>('dead-letters'),
      batch: { rows: 100, maxWaitMs: 10 },
      ...(inFlight ? { inFlight } : {}),
    });
    await pipeline.start();
    url = await source.url();
  }

  afterEach(async () => {
    for (const req of open.splice(0)) req.destroy();
    await pipeline?.stop().catch(() => undefined);
    pipeline = undefined;
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  const stored = async () => (await clickhouse.query<Row>(`SELECT webhook_id, ref FROM ${table} ORDER BY webhook_id`)).map((r) => `${r.webhook_id}=${r.ref}`);
  const legitPost = (id: string) => post(`${url}/webhooks/acme`, JSON.stringify({ ref: id }), { key: legit.token, secret: SECRET, id });

  for (const senders of [64, 1000]) {
    it(`${senders} slow senders with keys but not the secret hold no credit: a signed request still gets 2xx and lands`, async () => {
      // A budget that the old order (credit taken for maxBodyBytes before the signature was
      // checked) let 64 chunked bodies exhaust.
      await start({}, { bytes: 64 * MAX_BODY, records: 100 });
      const slow = Array.from({ length: senders }, (_, i) => slowBogusSender(url, bogus[i % bogus.length]!.token, `bogus-${i}`));
      open.push(...slow.map((s) => s.req));
      await until(() => source.stats.bodyBytesRead >= senders, 60_000, `the ${senders} bogus bodies being read`);
      expect(pipeline!.stats.inFlightBytes, 'credit held by unverified bodies').to.equal(0);
      const answer = await legitPost('legit-1');
      expect(answer.status, answer.body).to.equal(200);
      expect(await stored()).to.deep.equal(['legit-1=legit-1']);
      // The bogus bodies, once complete, are refused on their signature.
      slow[0]!.req.end(']');
      expect(await slow[0]!.answer).to.equal(401);
      expect(source.stats.refused.BAD_SIGNATURE).to.equal(1);
    });
  }

  it('limits the requests one key has in progress, leaving other keys their share', async () => {
    await start({ maxRequestsPerKey: 3 });
    const [mallory] = bogus;
    const slow = Array.from({ length: 3 }, (_, i) => slowBogusSender(url, mallory!.token, `m-${i}`));
    open.push(...slow.map((s) => s.req));
    await until(() => source.stats.bodyBytesRead >= 3, 10_000, 'three bodies being read');
    const fourth = slowBogusSender(url, mallory!.token, 'm-3');
    open.push(fourth.req);
    expect(await fourth.answer).to.equal(429);
    expect(source.stats.refused.KEY_BUSY).to.equal(1);
    expect((await legitPost('other-key')).status).to.equal(200);
    // A slot comes back when a request of that key is answered.
    slow[0]!.req.end(']');
    expect(await slow[0]!.answer).to.equal(401);
    const again = slowBogusSender(url, mallory!.token, 'm-4');
    open.push(again.req);
    again.req.end(']');
    expect(await again.answer).to.equal(401);
    expect(source.stats.refused.KEY_BUSY).to.equal(1);
  });

  it('closes connections whose headers or body come too slowly (408)', async () => {
    await start({ headersTimeoutMs: 300, bodyTimeoutMs: 300, requestTimeoutMs: 5000 });
    // Slowloris: a request line and one header, then nothing.
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    socket.write('POST /webhooks/acme HTTP/1.1\r\nHost: x\r\n');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await new Promise<void>((resolve) => socket.on('close', () => resolve()));
    expect(received).to.match(/^HTTP\/1\.1 408/);

    const slowBody = slowBogusSender(url, legit.token, 'slow-body');
    open.push(slowBody.req);
    expect(await slowBody.answer).to.equal(408);
    expect(source.stats.refused.BODY_TIMEOUT).to.equal(1);
    expect(pipeline!.stats.inFlightBytes).to.equal(0);
    expect((await legitPost('after-timeouts')).status).to.equal(200);
  });

  it('holds no credit while a body is read, and frees the key\'s slot when the sender goes away', async () => {
    await start({ maxRequestsPerKey: 1 });
    const gone = slowBogusSender(url, legit.token, 'gone');
    await until(() => source.stats.bodyBytesRead === 1, 5000, 'the first byte read');
    expect(pipeline!.stats.inFlightBytes).to.equal(0);
    gone.req.destroy();
    await until(() => source.stats.refused.CLIENT_GONE === 1, 5000, 'the sender to be noticed gone');
    expect((await legitPost('after-gone')).status).to.equal(200);
    expect(await stored()).to.deep.equal(['after-gone=after-gone']);
  });

  it('rate-limits requests without a valid key per client address, and audits every refusal', async () => {
    const auditSink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink: auditSink, batch: { rows: 1, maxWaitMs: 1 } });
    try {
      await start({ wrongKeyLimit: { attempts: 3, perSeconds: 60 }, audit });
      const body = JSON.stringify({ ref: 'W' });
      const guesses = [`${legit.record.id}.guess-1`, `${legit.record.id}.guess-2`, undefined];
      for (const key of guesses) expect((await post(`${url}/webhooks/acme`, body, { ...(key ? { key } : {}), secret: SECRET, id: 'w1' })).status).to.equal(401);
      // The bucket is empty: even the right key waits, so guessing gains nothing.
      const blocked = await legitPost('w2');
      expect([blocked.status, JSON.parse(blocked.body).error, blocked.headers['retry-after']]).to.deep.equal([429, 'TOO_MANY_WRONG_KEYS', '20']);
      expect(await stored()).to.deep.equal([]);
      await until(() => auditSink.rows.length === 4, 5000, 'four audit rows');
      expect(auditSink.rows.map((r) => [r.type, r.actor, r.outcome])).to.deep.equal([
        ['webhook.denied', 'anonymous', 'UNAUTHENTICATED'],
        ['webhook.denied', 'anonymous', 'UNAUTHENTICATED'],
        ['webhook.denied', 'anonymous', 'UNAUTHENTICATED'],
        ['webhook.denied', 'anonymous', 'TOO_MANY_WRONG_KEYS'],
      ]);
      expect(JSON.parse(auditSink.rows[3]!.details)).to.include({ status: 429, remoteAddress: '127.0.0.1' });
    } finally {
      await pipeline?.stop().catch(() => undefined);
      pipeline = undefined;
      await audit.close();
    }
  });

  it('refuses a request smuggled behind Content-Length and Transfer-Encoding together: 400, the connection closed, neither request stored', async () => {
    await start();
    const now = Math.floor(Date.now() / 1000);
    const head = (id: string, body: string, extra: string) =>
      [`POST /webhooks/acme HTTP/1.1`, 'Host: localhost', 'Content-Type: application/json', `Authorization: Bearer ${legit.token}`,
        ...Object.entries(signWebhook(SECRET, id, now, body)).map(([name, value]) => `${name}: ${value}`), extra, '', ''].join('\r\n');
    // The inner request is signed too: read as a second request, it would be stored.
    const innerBody = JSON.stringify({ ref: 'inner' });
    const inner = head('smuggled-inner', innerBody, `Content-Length: ${innerBody.length}`) + innerBody;
    const outerBody = JSON.stringify({ ref: 'outer' });
    const chunked = `${outerBody.length.toString(16)}\r\n${outerBody}\r\n0\r\n\r\n`;
    const outer = head('smuggled-outer', outerBody, `Content-Length: ${chunked.length}\r\nTransfer-Encoding: chunked`) + chunked + inner;
    const { port, hostname } = new URL(url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname);
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      socket.setTimeout(10_000, () => socket.destroy());
      socket.end(outer);
    });
    expect(answer.match(/^HTTP\/1\.1 \d+/gm), answer).to.deep.equal(['HTTP/1.1 400']);
    // The legitimate path still works, and neither smuggled request reached the table.
    expect((await legitPost('after-smuggling')).status).to.equal(200);
    expect(await stored()).to.deep.equal(['after-smuggling=after-smuggling']);
  });

  it('decides each request of a keep-alive connection on its own key: another key, none, a forged one or another route are not let through on the first key', async () => {
    const acmeKey = AccessControl.issueKey('acme-key', ['acme']);
    const globeKey = AccessControl.issueKey('globe-key', ['globe']);
    const twoVendors = new AccessControl({ roles: { acme: ['webhook:post:acme'], globe: ['webhook:post:globe'] }, keys: [acmeKey.record, globeKey.record] });
    await start({ vendors: { acme: { secrets: [SECRET] }, globe: { secrets: [SECRET] } }, access: twoVendors });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const send = (route: string, id: string, key: string | undefined) =>
      new Promise<number>((resolve, reject) => {
        const body = JSON.stringify({ ref: id });
        const headers: Record<string, string> = { 'content-type': 'application/json', ...signWebhook(SECRET, id, Math.floor(Date.now() / 1000), body) };
        if (key !== undefined) headers.authorization = `Bearer ${key}`;
        const req = request(`${url}/webhooks/${route}`, { method: 'POST', agent, headers }, (res) => {
          sockets.add(res.socket);
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        req.on('error', reject);
        req.end(body);
      });
    const last = acmeKey.token.at(-1) === 'A' ? 'B' : 'A';
    try {
      expect(await send('acme', 'k1', acmeKey.token)).to.equal(200);
      expect(await send('acme', 'k2', globeKey.token), 'another key on the same connection').to.equal(403);
      expect(await send('acme', 'k3', undefined), 'no key').to.equal(401);
      expect(await send('acme', 'k4', acmeKey.token.slice(0, -1) + last), 'the first key with its last character changed').to.equal(401);
      expect(await send('acme', 'k5', `${acmeKey.token}x`), 'the first key and more').to.equal(401);
      expect(await send('globe', 'k6', acmeKey.token), 'the first key on a route it may not post to').to.equal(403);
      expect(await send('acme', 'k7', acmeKey.token)).to.equal(200);
      expect(await send('globe', 'k8', globeKey.token)).to.equal(200);
      expect(await send('acme', 'k9', globeKey.token), 'the second key, once allowed on the connection, on the other route').to.equal(403);
    } finally {
      agent.destroy();
    }
    expect(sockets.size, 'every request over one connection').to.equal(1);
    expect(source.stats.refused).to.deep.equal({ FORBIDDEN: 3, UNAUTHENTICATED: 3 });
    expect(await stored()).to.deep.equal(['k1=k1', 'k7=k7', 'k8=k8']);
  });

  it('decides each pipelined request on its own key: requests written back to back before any answer get no decision made for another', async () => {
    await start();
    const now = Math.floor(Date.now() / 1000);
    const last = legit.token.at(-1) === 'A' ? 'B' : 'A';
    const one = (id: string, key: string) => {
      const body = JSON.stringify({ ref: id });
      return [`POST /webhooks/acme HTTP/1.1`, 'Host: localhost', 'Content-Type: application/json', `Authorization: Bearer ${key}`, `Content-Length: ${body.length}`,
        ...Object.entries(signWebhook(SECRET, id, now, body)).map(([name, value]) => `${name}: ${value}`), '', body].join('\r\n');
    };
    // All four in one write: the second and fourth carry the first key with its last character changed.
    const forged = legit.token.slice(0, -1) + last;
    const written = one('p1', legit.token) + one('p2', forged) + one('p3', legit.token) + one('p4', forged);
    const { port, hostname } = new URL(url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname);
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if ((text.match(/^HTTP\/1\.1 \d+/gm) ?? []).length === 4) socket.end();
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      socket.setTimeout(10_000, () => socket.destroy());
      socket.write(written);
    });
    expect(answer.match(/^HTTP\/1\.1 \d+/gm), answer).to.deep.equal(['HTTP/1.1 200', 'HTTP/1.1 401', 'HTTP/1.1 200', 'HTTP/1.1 401']);
    expect(await stored()).to.deep.equal(['p1=p1', 'p3=p3']);
  });

  it('takes no API key from the URL unless apiKeyQueryParameter names the parameter', async () => {
    await start();
    const body = JSON.stringify({ ref: 'Q' });
    const inUrl = await post(`${url}/webhooks/acme?api_key=${encodeURIComponent(legit.token)}`, body, { secret: SECRET, id: 'q1' });
    expect(inUrl.status).to.equal(401);
    await pipeline!.stop();
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
    await start({ apiKeyQueryParameter: 'api_key' });
    const allowed = await post(`${url}/webhooks/acme?api_key=${encodeURIComponent(legit.token)}`, body, { secret: SECRET, id: 'q2' });
    expect(allowed.status, allowed.body).to.equal(200);
    expect(await stored()).to.deep.equal(['q2=Q']);
  });

  it('checks its hostile-sender options at construction', () => {
    const base = { vendors: { acme: { secrets: [SECRET] } }, access };
    expect(() => fromWebhook({ ...base, maxRequestsPerKey: 0 })).to.throw(ConfigError, 'maxRequestsPerKey must be an integer >= 1, got 0');
    expect(() => fromWebhook({ ...base, headersTimeoutMs: 40_000 })).to.throw(ConfigError, 'headersTimeoutMs must be <= requestTimeoutMs (30000), got 40000');
    expect(() => fromWebhook({ ...base, wrongKeyLimit: { attempts: 0 } })).to.throw(ConfigError, 'wrongKeyLimit.attempts must be an integer >= 1, got 0');
    expect(() => fromWebhook({ ...base, apiKeyQueryParameter: 'a&b' })).to.throw(ConfigError, 'apiKeyQueryParameter must be a parameter name');
  });
});
