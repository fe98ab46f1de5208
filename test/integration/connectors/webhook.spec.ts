import { expect } from 'chai';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { map } from 'rxjs';
import { toClickHouse } from '../../../connectors/clickhouse';
import { fromWebhook, MemoryReplayStore, signWebhook, type FromWebhookOptions, type WebhookSource } from '../../../connectors/webhook';
import { AccessControl } from '../../../lib/security/access';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError, SinkError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, tempDir, testClickHouse, until } from '../../helpers';
import { metricValue, parseMetrics } from '../../metricsText';
import { post } from '../../webhookClient';

const SECRET = 'whsec_' + Buffer.from('acme-secret-0123456789abcdef').toString('base64');
const NEXT_SECRET = 'acme-rotated-secret-0123456789';
const GLOBE_SECRET = 'globe-secret-0123456789abcdef';

const poster = AccessControl.issueKey('acme-poster', ['acme']);
const otherVendor = AccessControl.issueKey('globe-poster', ['globe']);
const ops = AccessControl.issueKey('ops', ['admin']);
const access = new AccessControl({
  roles: { acme: ['webhook:post:acme'], globe: ['webhook:post:globe'], admin: ['admin'] },
  keys: [poster.record, otherVendor.record, ops.record],
});

interface Row {
  webhook_id: string;
  record: number;
  ref: string;
}

const toRow = map((e: Envelope<any>) => e.map<Row>({ webhook_id: e.meta.key!, record: e.meta.record ?? 0, ref: String(e.value.ref) }));

describe('fromWebhook', function () {
  this.timeout(120_000);
  const clickhouse = testClickHouse();
  let table: string;
  let pipeline: Pipeline<Row> | undefined;
  let source: WebhookSource;
  let url: string;
  let deadLetters: MemorySink<DeadLetter>;

  const options = (extra: Partial<FromWebhookOptions> = {}): FromWebhookOptions => ({
    port: 0,
    vendors: {
      acme: { secrets: [SECRET, NEXT_SECRET], xml: { record: 'Booking' } },
      globe: { secrets: [GLOBE_SECRET] },
    },
    access,
    maxBodyBytes: 64 * 1024,
    ...extra,
  });

  async function start(extra: Partial<FromWebhookOptions> = {}, batch = { rows: 100, maxWaitMs: 20 }): Promise<void> {
    table = `webhook_rows_${process.pid}_${Date.now()}`;
    await clickhouse.exec(`CREATE TABLE ${table} (webhook_id String, record UInt32, ref String) ENGINE = MergeTree ORDER BY (webhook_id, record)`);
    source = fromWebhook(options(extra));
    deadLetters = new MemorySink<DeadLetter>('dead-letters');
    pipeline = new Pipeline<Row>({
      source,
      transform: toRow,
      sink: toClickHouse({ client: clickhouse, table }),
      deadLetters,
      batch,
    });
    await pipeline.start();
    url = await source.url();
  }

  afterEach(async () => {
    await pipeline?.stop().catch(() => undefined);
    pipeline = undefined;
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  const rows = async () => clickhouse.query<{ webhook_id: string; record: number; ref: string }>(`SELECT webhook_id, record, ref FROM ${table} ORDER BY webhook_id, record`);
  const count = async () => Number((await clickhouse.query<{ n: string }>(`SELECT count() AS n FROM ${table}`))[0]!.n);

  it('accepts a validly signed JSON array, NDJSON, CSV and XML, answering only once the records are in ClickHouse', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const json = await post(route, JSON.stringify([{ ref: 'A1' }, { ref: 'A2' }]), { key: poster.token, secret: SECRET, id: 'j1' });
    expect(json.status, json.body).to.equal(200);
    expect(JSON.parse(json.body)).to.deep.equal({ id: 'j1', records: 2 });
    // The 200 came after the write: the rows are there without waiting.
    expect(await count()).to.equal(2);

    const ndjson = await post(route, '{"ref":"N1"}\n{"ref":"N2"}\n{"ref":"N3"}\n', { key: poster.token, secret: NEXT_SECRET, id: 'n1', contentType: 'application/x-ndjson' });
    expect(ndjson.status, ndjson.body).to.equal(200);
    const csv = await post(route, 'ref,amount\nC1,1\nC2,2\n', { key: poster.token, secret: SECRET, id: 'c1', contentType: 'text/csv; charset=utf-8' });
    expect(csv.status, csv.body).to.equal(200);
    const xml = await post(route, '<Bookings><Booking><ref>X1</ref></Booking></Bookings>', { key: poster.token, secret: SECRET, id: 'x1', contentType: 'application/xml' });
    expect(xml.status, xml.body).to.equal(200);
    expect(JSON.parse(xml.body)).to.deep.equal({ id: 'x1', records: 1 });
    expect((await rows()).map((r) => `${r.webhook_id}#${r.record}=${r.ref}`)).to.deep.equal([
      'c1#1=C1', 'c1#2=C2', 'j1#1=A1', 'j1#2=A2', 'n1#1=N1', 'n1#2=N2', 'n1#3=N3', 'x1#1=X1',
    ]);
    expect(source.stats).to.include({ accepted: 4, records: 8, pending: 0 });

    // A ragged CSV row is dead-lettered; the request is answered once that is durable too.
    const ragged = await post(route, 'ref,amount\nC3,3\nC4,4,extra\n', { key: poster.token, secret: SECRET, id: 'c2', contentType: 'text/csv' });
    expect(ragged.status, ragged.body).to.equal(200);
    expect(JSON.parse(ragged.body)).to.deep.equal({ id: 'c2', records: 1 });
    expect(deadLetters.rows.map((l) => [l.position, l.stage, l.vendor])).to.deep.equal([['acme/c2#2', 'parse', 'acme']]);
    expect(await count()).to.equal(9);
  });

  it('writes a lone request\'s records at once, without waiting out batch.maxWaitMs: its sender is waiting', async () => {
    // Ten minutes: the answer comes only if the batch goes to the idle sink at once.
    await start({}, { rows: 100, maxWaitMs: 600_000 });
    const notCut = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not answered: the batch waited for maxWaitMs')), 30_000).unref());
    const answer = await Promise.race([post(`${url}/webhooks/acme`, JSON.stringify([{ ref: 'alone' }]), { key: poster.token, secret: SECRET, id: 'alone' }), notCut]);
    expect(answer.status, answer.body).to.equal(200);
    expect((await clickhouse.query<Row>(`SELECT webhook_id FROM ${table}`)).map((r) => r.webhook_id)).to.deep.equal(['alone']);
    // A second request within maxWaitMs of that write waits for it; a stop does not.
    const second = post(`${url}/webhooks/acme`, JSON.stringify([{ ref: 'second' }]), { key: poster.token, secret: SECRET, id: 'second' });
    await until(() => source.stats.pending === 1, 10_000, 'the second request to be taken');
    await Promise.race([pipeline!.stop(), notCut]);
    expect((await second).status).to.equal(200);
    expect((await clickhouse.query<Row>(`SELECT webhook_id FROM ${table} ORDER BY webhook_id`)).map((r) => r.webhook_id)).to.deep.equal(['alone', 'second']);
  });

  it('reads JSON and NDJSON bodies that start with a byte order mark, the first record included', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const json = await post(route, Buffer.concat([bom, Buffer.from('[{"ref":"B1"},{"ref":"B2"}]')]), { key: poster.token, secret: SECRET, id: 'bom-json' });
    expect([json.status, json.body]).to.deep.equal([200, '{"id":"bom-json","records":2}']);
    const ndjson = await post(route, Buffer.concat([bom, Buffer.from('{"ref":"B3"}\n{"ref":"B4"}\n')]), { key: poster.token, secret: SECRET, id: 'bom-ndjson', contentType: 'application/x-ndjson' });
    expect([ndjson.status, ndjson.body]).to.deep.equal([200, '{"id":"bom-ndjson","records":2}']);
    expect((await rows()).map((r) => r.ref)).to.deep.equal(['B1', 'B2', 'B3', 'B4']);
    expect(deadLetters.rows).to.deep.equal([]);
  });

  it('reads CSV and XML in the charset their Content-Type names; JSON only in UTF-8; an unknown charset is 415 and writes nothing', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const send = (body: Buffer, id: string, contentType: string) => post(route, body, { key: poster.token, secret: SECRET, id, contentType });
    const cp1252 = await send(Buffer.from([...Buffer.from('ref,amount\nZ'), 0xfc, 0x80, 0x2c, 0x31, 0x0a]), 'w1', 'text/csv; charset=windows-1252');
    expect(cp1252.status, cp1252.body).to.equal(200);
    const latin1 = await send(Buffer.from('<Bookings><Booking><ref>L\xe9</ref></Booking></Bookings>', 'latin1'), 'w2', 'application/xml;charset="ISO-8859-1"');
    expect(latin1.status, latin1.body).to.equal(200);
    const utf16 = await send(Buffer.from('ref\nU\u00f6\n', 'utf16le'), 'w3', 'text/csv; Charset=UTF-16LE');
    expect(utf16.status, utf16.body).to.equal(200);
    expect((await rows()).map((r) => `${r.webhook_id}=${r.ref}`)).to.deep.equal(['w1=Zü€', 'w2=Lé', 'w3=Uö']);
    const refused = [
      await send(Buffer.from('[{"ref":"J"}]', 'utf16le'), 'w4', 'application/json; charset=utf-16le'),
      await send(Buffer.from('{"ref":"N"}\n'), 'w5', 'application/x-ndjson; charset=latin1'),
      await send(Buffer.from('ref\nK\n'), 'w6', 'text/csv; charset=koi8-r'),
    ];
    expect(refused.map((r) => [r.status, JSON.parse(r.body).error])).to.deep.equal([
      [415, 'UNSUPPORTED_CHARSET'],
      [415, 'UNSUPPORTED_CHARSET'],
      [415, 'UNSUPPORTED_CHARSET'],
    ]);
    expect(JSON.parse(refused[2]!.body).message).to.equal('charset "koi8-r" is not accepted for text/csv: send UTF-8, UTF-16, Latin-1 or Windows-1252');
    expect(await count()).to.equal(3);
    expect(deadLetters.rows).to.deep.equal([]);
  });

  it('refuses tampered, expired, unsigned, replayed and undeclared-type requests, and writes nothing for them', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const body = JSON.stringify({ ref: 'T1', amount: 10 });
    const tampered = await post(route, body, { key: poster.token, secret: SECRET, id: 't1', sendInstead: JSON.stringify({ ref: 'T1', amount: 1000 }) });
    expect([tampered.status, JSON.parse(tampered.body).error]).to.deep.equal([401, 'BAD_SIGNATURE']);
    const wrongSecret = await post(route, body, { key: poster.token, secret: GLOBE_SECRET, id: 't2' });
    expect([wrongSecret.status, JSON.parse(wrongSecret.body).error]).to.deep.equal([401, 'BAD_SIGNATURE']);
    const expired = await post(route, body, { key: poster.token, secret: SECRET, id: 't3', timestamp: Math.floor(Date.now() / 1000) - 301 });
    expect([expired.status, JSON.parse(expired.body).error]).to.deep.equal([401, 'TIMESTAMP_OUT_OF_TOLERANCE']);
    const future = await post(route, body, { key: poster.token, secret: SECRET, id: 't4', timestamp: Math.floor(Date.now() / 1000) + 400 });
    expect(future.status).to.equal(401);
    const unsigned = await post(route, body, { key: poster.token });
    expect([unsigned.status, JSON.parse(unsigned.body).error]).to.deep.equal([400, 'MISSING_SIGNATURE']);
    const plain = await post(route, 'ref=1', { key: poster.token, secret: SECRET, id: 't5', contentType: 'text/plain' });
    expect(plain.status).to.equal(415);
    const xmlForGlobe = await post(`${url}/webhooks/globe`, '<a/>', { key: otherVendor.token, secret: GLOBE_SECRET, id: 't6', contentType: 'text/xml' });
    expect(xmlForGlobe.status, 'globe has no XML record element').to.equal(415);
    const notJson = await post(route, '{"ref": ', { key: poster.token, secret: SECRET, id: 't7' });
    expect([notJson.status, JSON.parse(notJson.body).error]).to.deep.equal([400, 'PARSE_JSON']);

    // A valid request is taken once; the same request again is a replay.
    const timestamp = Math.floor(Date.now() / 1000);
    const first = await post(route, body, { key: poster.token, secret: SECRET, id: 'r1', timestamp });
    expect(first.status).to.equal(200);
    const replayed = await post(route, body, { key: poster.token, secret: SECRET, id: 'r1', timestamp });
    expect([replayed.status, JSON.parse(replayed.body).error]).to.deep.equal([409, 'REPLAY']);
    // A new timestamp does not help: the id is what counts, and it is signed.
    const resigned = await post(route, body, { key: poster.token, secret: SECRET, id: 'r1', timestamp: timestamp - 1 });
    expect(resigned.status).to.equal(409);
    expect(await rows()).to.deep.equal([{ webhook_id: 'r1', record: 1, ref: 'T1' }]);
    expect(source.stats.refused).to.deep.equal({
      BAD_SIGNATURE: 2, TIMESTAMP_OUT_OF_TOLERANCE: 2, MISSING_SIGNATURE: 1, UNSUPPORTED_MEDIA_TYPE: 2, PARSE_JSON: 1, REPLAY: 2,
    });
    expect(pipeline!.stats.inFlightBytes).to.equal(0);
  });

  it('takes a signed request raced on eight connections once: the others are told it is in progress or a replay, and nothing is stored twice', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const body = JSON.stringify([{ ref: 'C1' }, { ref: 'C2' }]);
    const timestamp = Math.floor(Date.now() / 1000);
    // The default agent opens a connection per request in flight: all eight arrive before the first is stored.
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(route, body, { key: poster.token, secret: SECRET, id: 'c1', timestamp })));
    const outcomes = answers.map((answer) => (answer.status === 200 ? 200 : `${answer.status} ${JSON.parse(answer.body).error}`));
    expect(outcomes.filter((outcome) => outcome === 200), JSON.stringify(outcomes)).to.have.length(1);
    for (const outcome of outcomes) expect(['200', '503 IN_PROGRESS', '409 REPLAY']).to.include(String(outcome));
    // Once stored, the same request is a replay for good.
    const after = await post(route, body, { key: poster.token, secret: SECRET, id: 'c1', timestamp });
    expect([after.status, JSON.parse(after.body).error]).to.deep.equal([409, 'REPLAY']);
    expect(await rows()).to.deep.equal([
      { webhook_id: 'c1', record: 1, ref: 'C1' },
      { webhook_id: 'c1', record: 2, ref: 'C2' },
    ]);
  });

  it('accepts a signature list when one v1 entry matches an active secret; other entries count for nothing', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const body = JSON.stringify({ ref: 'L1' });
    const timestamp = Math.floor(Date.now() / 1000);
    const good = signWebhook(NEXT_SECRET, 'l1', timestamp, body)['webhook-signature']!;
    const wrong = signWebhook(GLOBE_SECRET, 'l1', timestamp, body)['webhook-signature']!;
    const headers = (signature: string, id: string) => ({ 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature });
    const listed = await post(route, body, { key: poster.token, headers: headers(`${wrong} v2,${good.slice(3)} ${good}`, 'l1') });
    expect(listed.status, listed.body).to.equal(200);
    // The right MAC under another scheme name, or cut short, is no signature.
    const relabelled = await post(route, body, { key: poster.token, headers: headers(`${wrong} v2,${good.slice(3)}`, 'l1') });
    expect(relabelled.status).to.equal(401);
    const truncated = await post(route, body, { key: poster.token, headers: headers(good.slice(0, -4), 'l1') });
    expect(truncated.status).to.equal(401);
    // The MAC binds the id: the same signature under another id fails.
    const otherId = await post(route, body, { key: poster.token, headers: headers(good, 'l2') });
    expect(otherId.status).to.equal(401);
    expect(await count()).to.equal(1);
  });

  it('answers 413 to an oversized body without reading it, declared or streamed, and holds no credit for it', async () => {
    await start();
    const route = `${url}/webhooks/acme`;
    const big = Buffer.alloc(65 * 1024, 'x');
    const declared = await post(route, big, { key: poster.token, secret: SECRET, id: 'big1' });
    expect(declared.status).to.equal(413);
    const readBefore = source.stats.bodyBytesRead;
    // 32 MiB sent chunked (no length to refuse up front): reading stops at the limit.
    let produced = 0;
    const endless = new Readable({
      read() {
        if (produced >= 32 * 1024 * 1024) return this.push(null);
        produced += 16 * 1024;
        this.push(Buffer.alloc(16 * 1024, 'y'));
      },
    });
    const streamed = await post(route, '', { key: poster.token, secret: SECRET, id: 'big2', sendInstead: endless, headers: { 'transfer-encoding': 'chunked' } });
    expect(streamed.status).to.equal(413);
    const read = source.stats.bodyBytesRead - readBefore;
    expect(read, 'bytes read of the streamed body').to.be.within(64 * 1024, 64 * 1024 + 256 * 1024);
    expect(source.stats.refused).to.deep.equal({ TOO_LARGE: 2 });
    // Bodies are signed and read as sent: a compressed one is refused, not misread.
    const gzipped = await post(route, gzipSync('{"ref":"Z1"}'), { key: poster.token, secret: SECRET, id: 'gz1', headers: { 'content-encoding': 'gzip' } });
    expect([gzipped.status, JSON.parse(gzipped.body).error]).to.deep.equal([415, 'UNSUPPORTED_ENCODING']);
    expect(pipeline!.stats.inFlightBytes).to.equal(0);
    // The limit is on bytes: a body of exactly the limit gets in.
    const exact = JSON.stringify([{ ref: 'E'.repeat(64 * 1024 - 12) }]);
    expect(Buffer.byteLength(exact)).to.equal(64 * 1024);
    expect((await post(route, exact, { key: poster.token, secret: SECRET, id: 'exact' })).status).to.equal(200);
    expect(await count()).to.equal(1);
  });

  it('lets a key post only to the vendors its roles name, and keeps the admin endpoint to admins', async () => {
    await start();
    const body = JSON.stringify({ ref: 'K1' });
    const noKey = await post(`${url}/webhooks/acme`, body, { secret: SECRET, id: 'k1' });
    expect([noKey.status, noKey.headers['www-authenticate']]).to.deep.equal([401, 'Bearer']);
    const badKey = await post(`${url}/webhooks/acme`, body, { key: `${poster.record.id}.not-the-secret`, secret: SECRET, id: 'k2' });
    expect(badKey.status).to.equal(401);
    const otherVendorsKey = await post(`${url}/webhooks/acme`, body, { key: otherVendor.token, secret: SECRET, id: 'k3' });
    expect([otherVendorsKey.status, JSON.parse(otherVendorsKey.body).error]).to.deep.equal([403, 'FORBIDDEN']);
    const adminKeyIsNoPoster = await post(`${url}/webhooks/acme`, body, { key: ops.token, secret: SECRET, id: 'k4' });
    expect(adminKeyIsNoPoster.status).to.equal(403);
    expect((await post(`${url}/webhooks/nobody`, body, { key: ops.token })).status).to.equal(404);
    expect(await count()).to.equal(0);

    const asVendor = await post(`${url}/admin/status`, '', { key: poster.token, method: 'GET' });
    expect(asVendor.status).to.equal(403);
    const asAdmin = await post(`${url}/admin/status`, '', { key: ops.token, method: 'GET' });
    expect(asAdmin.status).to.equal(200);
    // The auth scheme's name is case-insensitive (RFC 7235), and X-API-Key carries a key too.
    expect((await post(`${url}/admin/status`, '', { headers: { authorization: `bearer ${ops.token}` }, method: 'GET' })).status).to.equal(200);
    expect((await post(`${url}/admin/status`, '', { headers: { 'x-api-key': ops.token }, method: 'GET' })).status).to.equal(200);
    expect(JSON.parse(asAdmin.body)).to.include({ connected: true, breaker: 'closed', accepted: 0 });
    expect(JSON.parse(asAdmin.body).refused).to.deep.equal({ UNAUTHENTICATED: 2, FORBIDDEN: 3, NOT_FOUND: 1 });
    expect(source.status()).to.deep.equal({ connected: true, replayFill: 0 });
    await pipeline!.stop();
    expect(source.status()).to.deep.equal({ connected: false, replayFill: 0 });
  });

  it('serves HTTPS with the given certificate', async () => {
    const dir = tempDir();
    try {
      const key = join(dir.path, 'key.pem');
      const cert = join(dir.path, 'cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
      await start({ tls: { key: readFileSync(key), cert: readFileSync(cert) } });
      expect(url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
      const answer = await post(`${url}/webhooks/acme`, JSON.stringify({ ref: 'S1' }), { key: poster.token, secret: SECRET, id: 's1', ca: readFileSync(cert) });
      expect(answer.status, answer.body).to.equal(200);
      expect(await rows()).to.deep.equal([{ webhook_id: 's1', record: 1, ref: 'S1' }]);
      // Without trusting the certificate a client refuses the server.
      const untrusted = await post(`${url}/webhooks/acme`, '{}', { key: poster.token, secret: SECRET, id: 's2' }).then(() => 'answered', (e: Error) => e.message);
      expect(untrusted).to.match(/self[- ]signed/i);
    } finally {
      dir.remove();
    }
  });

  it('answers 429 with Retry-After when credits run out, and 503 while the sink breaker is open or the records could not be stored', async () => {
    table = `webhook_unused_${process.pid}`;
    const sink = new MemorySink<Row>('gated');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let failing = false;
    sink.gate = async () => {
      if (failing) throw new SinkError('sink down', { retriable: true });
      await held;
    };
    const replay = new MemoryReplayStore();
    source = fromWebhook(options({ replay, retryAfterSeconds: 7 }));
    pipeline = new Pipeline<Row>({
      source,
      transform: toRow,
      sink,
      deadLetters: new MemorySink<DeadLetter>('dead-letters'),
      batch: { rows: 1, maxWaitMs: 1 },
      inFlight: { records: 2 },
      retry: { initialDelayMs: 1, maxDelayMs: 10 },
      breaker: { volumeThreshold: 1, resetTimeoutMs: 60_000 },
    });
    await pipeline.start();
    url = await source.url();
    const route = `${url}/webhooks/acme`;
    const send = (id: string) => post(route, JSON.stringify({ ref: id }), { key: poster.token, secret: SECRET, id });
    const first = send('h1');
    const second = send('h2');
    await until(() => pipeline!.stats.inFlightRecords === 2, 5000, 'two requests in flight');
    const third = await send('h3');
    expect([third.status, third.headers['retry-after']]).to.deep.equal([429, '7']);
    release();
    expect((await first).status).to.equal(200);
    expect((await second).status).to.equal(200);
    expect(sink.rows.map((r) => r.ref)).to.have.members(['h1', 'h2']);

    // The sink fails: writes are retried, the breaker opens, and the next request is
    // refused before its body is read.
    failing = true;
    const stuck = send('h4');
    await until(() => pipeline!.breakerState === 'open', 10_000, 'the breaker to open');
    const refused = await send('h5');
    expect([refused.status, JSON.parse(refused.body).error, refused.headers['retry-after']]).to.deep.equal([503, 'SINK_UNAVAILABLE', '7']);
    // Stopping gives up on h4: it is answered 503, and its id is freed for the vendor's retry.
    await pipeline.stop({ timeoutMs: 50 }).catch(() => undefined);
    const lost = await stuck;
    expect([lost.status, JSON.parse(lost.body).error]).to.deep.equal([503, 'NOT_STORED']);
    expect(sink.rows.map((r) => r.ref)).to.have.members(['h1', 'h2']);
    expect(replay.claim('acme/h4', Date.now() + 1000), 'the id of the request that was not stored is free').to.equal(true);
    expect(replay.claim('acme/h1', Date.now() + 1000), 'the stored one is still taken').to.equal(false);
    pipeline = undefined;
  });

  it('counts records, not requests: read = written + dead-lettered + nacked, in stats and in tributary_records_total', async () => {
    table = `webhook_unused_${process.pid}`;
    const sink = new MemorySink<Row>('rows');
    let failing = false;
    sink.gate = async () => {
      if (failing) throw new SinkError('sink down', { retriable: true });
    };
    source = fromWebhook(options());
    pipeline = new Pipeline<Row>({
      source,
      transform: toRow,
      sink,
      deadLetters: new MemorySink<DeadLetter>('dead-letters'),
      batch: { rows: 100, maxWaitMs: 1 },
      retry: { initialDelayMs: 1, maxDelayMs: 10 },
    });
    const { registry } = pipelineMetrics(pipeline);
    await pipeline.start();
    url = await source.url();
    const route = `${url}/webhooks/acme`;
    const json = await post(route, JSON.stringify([{ ref: 'A1' }, { ref: 'A2' }, { ref: 'A3' }]), { key: poster.token, secret: SECRET, id: 'cnt1' });
    expect(json.status, json.body).to.equal(200);
    const ndjson = await post(route, '{"ref":"N1"}\n{"ref":\n{"ref":"N3"}\n', { key: poster.token, secret: SECRET, id: 'cnt2', contentType: 'application/x-ndjson' });
    expect(ndjson.status, ndjson.body).to.equal(200);
    const empty = await post(route, '[]', { key: poster.token, secret: SECRET, id: 'cnt3' });
    expect(empty.status, empty.body).to.equal(200);
    // Four records that cannot be stored: every one of them is nacked, not just the request.
    failing = true;
    const lost = post(route, JSON.stringify([{ ref: 'L1' }, { ref: 'L2' }, { ref: 'L3' }, { ref: 'L4' }]), { key: poster.token, secret: SECRET, id: 'cnt4' });
    await until(() => source.stats.pending === 1, 5000, 'the failing request taken');
    const stats = await pipeline.stop({ timeoutMs: 50 }).catch(() => pipeline!.stats);
    expect((await lost).status).to.equal(503);
    expect({ read: stats.read, written: stats.written, deadLettered: stats.deadLettered, nacked: stats.nacked }).to.deep.equal({ read: 10, written: 5, deadLettered: 1, nacked: 4 });
    const samples = parseMetrics(await registry.metrics());
    const records = (stage: string, outcome: string) => metricValue(samples, 'tributary_records_total', { stage, outcome }) ?? 0;
    expect(records('source', 'in')).to.equal(10);
    expect(records('sink', 'written') + records('parse', 'dead_lettered') + records('sink', 'nacked')).to.equal(10);
    // Three ids held (the one not stored was freed) in a store sized for the defaults.
    expect(metricValue(samples, 'tributary_webhook_replay_fill_ratio', { source: 'webhook' })).to.equal(3 / 602_000);
    pipeline = undefined;
  });

  it('on stop, answers the requests it took once their records are written, and takes no new ones', async () => {
    table = `webhook_unused_${process.pid}`;
    const sink = new MemorySink<Row>('gated');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    sink.gate = () => held;
    source = fromWebhook(options());
    pipeline = new Pipeline<Row>({ source, transform: toRow, sink, deadLetters: new MemorySink<DeadLetter>('dead-letters'), batch: { rows: 1, maxWaitMs: 1 } });
    await pipeline.start();
    url = await source.url();
    const taken = post(`${url}/webhooks/acme`, JSON.stringify({ ref: 'S1' }), { key: poster.token, secret: SECRET, id: 'stop1' });
    await until(() => source.stats.pending === 1, 5000, 'the request taken');
    const stopping = pipeline.stop();
    const refused = await post(`${url}/webhooks/acme`, JSON.stringify({ ref: 'S2' }), { key: poster.token, secret: SECRET, id: 'stop2' }).then((a) => a.status, (e: NodeJS.ErrnoException) => e.code);
    expect(refused).to.be.oneOf([503, 'ECONNREFUSED', 'ECONNRESET']);
    release();
    expect((await taken).status).to.equal(200);
    expect((await stopping).written).to.equal(1);
    expect(sink.rows.map((r) => r.ref)).to.deep.equal(['S1']);
    pipeline = undefined;
  });

  it('checks its options at construction', () => {
    expect(() => fromWebhook({ ...options(), vendors: {} })).to.throw(ConfigError, 'vendors must name at least one vendor');
    expect(() => fromWebhook({ ...options(), vendors: { acme: { secrets: ['short'] } } })).to.throw(ConfigError, 'vendors.acme.secrets[0] must hold at least 16 bytes, got 5');
    expect(() => fromWebhook({ ...options(), maxBodyBytes: 0 })).to.throw(ConfigError, 'maxBodyBytes must be an integer >= 1, got 0');
    expect(() => fromWebhook({ ...options(), toleranceSeconds: -1 })).to.throw(ConfigError, 'toleranceSeconds must be a number > 0, got -1');
    expect(() => fromWebhook({ ...options(), access: undefined as unknown as AccessControl })).to.throw(ConfigError, 'access is required');
    expect(() => fromWebhook({ ...options(), vendors: { 'a/b': { secrets: [SECRET] } } })).to.throw(ConfigError, 'vendor names use letters');
    expect(() => fromWebhook({ ...options(), peakRequestsPerSecond: 0 })).to.throw(ConfigError, 'peakRequestsPerSecond must be a number > 0, got 0');
    expect(() => fromWebhook({ ...options(), replay: new MemoryReplayStore(), peakRequestsPerSecond: 5000 })).to.throw(ConfigError, 'peakRequestsPerSecond sizes the default replay store');
  });
});
