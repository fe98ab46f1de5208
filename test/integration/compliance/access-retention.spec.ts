import { expect } from 'chai';
import { randomBytes, randomUUID } from 'node:crypto';
import { from, lastValueFrom, toArray } from 'rxjs';
import { clickHouseSubjectKeyStore, purgeExpired, serveQueries, serverClickHouse, setRetention, subjectErasure, toClickHouse, type ClickHouseClient } from '../../../connectors/clickhouse';
import { fromWebhook, type WebhookSource } from '../../../connectors/webhook';
import { AccessControl } from '../../../lib/security/access';
import { AuditLog, auditAccess } from '../../../lib/security/audit';
import { ConfigError, TributaryError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { Pipeline } from '../../../lib/pipeline';
import { SubjectKeys } from '../../../lib/security/subjectKeys';
import { decrypt } from '../../../operators/decrypt';
import { encrypt } from '../../../operators/encrypt';
import { clickhouseServer } from '../../clickhouseServer';
import { MemorySink, Recorder, testClickHouse } from '../../helpers';
import { post } from '../../webhookClient';

const unique = (prefix: string) => `${prefix}_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
const count = async (client: ClickHouseClient, sql: string) => Number((await client.query<{ n: string }>(sql))[0]!.n);

/** The audit table of the compliance migration, in types both ClickHouse versions have. */
const auditTable = (table: string) =>
  `CREATE TABLE ${table} (id String, at DateTime('UTC'), type String, actor String, purpose String, target String, outcome String, details String) ENGINE = MergeTree ORDER BY (at, id)`;

describe('query endpoint under access control', function () {
  this.timeout(60_000);
  const clickhouse = testClickHouse();
  const table = unique('audit');
  const analyst = AccessControl.issueKey('analyst', ['analyst']);
  const intern = AccessControl.issueKey('intern', ['intern']);
  let audit: AuditLog;
  let endpoint: Awaited<ReturnType<typeof serveQueries>>;

  before(async () => {
    await clickhouse.exec(auditTable(table));
    audit = new AuditLog({ sink: toClickHouse({ client: clickhouse, table }), batch: { rows: 10, maxWaitMs: 10 } });
    const access = new AccessControl({ roles: { analyst: ['query:read'], intern: ['metrics:read'] }, keys: [analyst.record, intern.record], onDecision: auditAccess(audit) });
    endpoint = await serveQueries({ client: clickhouse, access, port: 0 });
  });
  after(async () => {
    await endpoint?.close();
    await audit?.close();
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
  });

  const ask = (key: string) => fetch(`${endpoint.url}/?query=${encodeURIComponent('SELECT 40 + 2')}`, { headers: { 'X-ClickHouse-Key': key } });

  it('answers a key with query:read, gives 403 to a key without it and to an unknown key, and audits the refusals', async () => {
    const ok = await ask(analyst.token);
    expect([ok.status, (await ok.text()).trim()]).to.deep.equal([200, '42']);
    const forbidden = await ask(intern.token);
    expect(forbidden.status).to.equal(403);
    expect(forbidden.headers.get('x-clickhouse-exception-code')).to.equal('497');
    expect(await forbidden.text()).to.contain('lacks permission query:read');
    const stranger = await ask(`analyst.${randomBytes(32).toString('base64url')}`);
    expect([stranger.status, stranger.headers.get('x-clickhouse-exception-code')]).to.deep.equal([403, '516']);
    await audit.flush();
    const rows = await clickhouse.query<{ type: string; actor: string; target: string; outcome: string; purpose: string }>(`SELECT type, actor, target, outcome, purpose FROM ${table} ORDER BY length(id), id`);
    expect(rows).to.deep.equal([
      { type: 'access.denied', actor: 'intern', target: 'query:read', outcome: 'FORBIDDEN', purpose: 'GET /' },
      { type: 'access.denied', actor: 'anonymous', target: 'query:read', outcome: 'UNAUTHENTICATED', purpose: 'GET /' },
    ]);
  });

  it('refuses bad options with the rule', async () => {
    await serveQueries({ client: clickhouse, port: 0 }).then(
      () => expect.fail('needs users or access'),
      (e: Error) => expect(e).to.be.instanceOf(ConfigError).and.have.property('message', 'users must name at least one user and key, or access must be given'),
    );
  });
});

describe('webhook denials in the audit log', function () {
  this.timeout(60_000);
  const clickhouse = testClickHouse();
  const table = unique('audit');
  const bookings = unique('hooked');
  const SECRET = 'acme-webhook-secret-0123456789abcdef';
  const poster = AccessControl.issueKey('acme-poster', ['acme']);
  const globe = AccessControl.issueKey('globe-poster', ['globe']);
  const ops = AccessControl.issueKey('ops', ['admin']);
  let audit: AuditLog;
  let source: WebhookSource;
  let pipeline: Pipeline<{ ref: string }>;
  let url: string;

  interface AuditedRow { type: string; actor: string; purpose: string; target: string; outcome: string; details: string }
  const audited = async (): Promise<AuditedRow[]> => {
    await audit.flush();
    return clickhouse.query<AuditedRow>(`SELECT type, actor, purpose, target, outcome, details FROM ${table} ORDER BY length(id), id`);
  };

  before(async () => {
    await clickhouse.exec(auditTable(table));
    await clickhouse.exec(`CREATE TABLE ${bookings} (ref String) ENGINE = MergeTree ORDER BY ref`);
    audit = new AuditLog({ sink: toClickHouse({ client: clickhouse, table }), batch: { rows: 10, maxWaitMs: 10 } });
    // Both paths at once: AccessControl's onDecision (key decisions only) and the source's own audit (every denial).
    const access = new AccessControl({
      roles: { acme: ['webhook:post:acme'], globe: ['webhook:post:globe'], admin: ['admin'] },
      keys: [poster.record, globe.record, ops.record],
      onDecision: auditAccess(audit),
    });
    source = fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] }, globe: { secrets: [SECRET] } }, access, audit, maxBodyBytes: 4096 });
    pipeline = new Pipeline({ source, sink: toClickHouse({ client: clickhouse, table: bookings }), deadLetters: new MemorySink('dead-letters'), batch: { rows: 10, maxWaitMs: 10 } });
    await pipeline.start();
    url = await source.url();
  });
  after(async () => {
    await pipeline?.stop().catch(() => undefined);
    await audit?.close().catch(() => undefined);
    await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
    await clickhouse.exec(`DROP TABLE IF EXISTS ${bookings}`);
  });

  it('records a wrong key (403), a missing key (401), a forbidden admin route, a bad signature, a stale timestamp and a replay, without body or secrets', async () => {
    const route = `${url}/webhooks/acme`;
    const body = JSON.stringify({ ref: 'PRIVATE-BODY-1' });
    const wrongKey = await post(route, body, { key: globe.token, secret: SECRET, id: 'w1' });
    expect(wrongKey.status).to.equal(403);
    const missingKey = await post(route, body, { secret: SECRET, id: 'w2' });
    expect(missingKey.status).to.equal(401);
    const forgedKey = await post(route, body, { key: `acme-poster.${randomBytes(32).toString('base64url')}`, secret: SECRET, id: 'w3' });
    expect(forgedKey.status).to.equal(401);
    const adminAsVendor = await post(`${url}/admin/status`, '', { key: poster.token, method: 'GET' });
    expect(adminAsVendor.status).to.equal(403);
    const badSignature = await post(route, body, { key: poster.token, secret: SECRET, id: 'w4', sendInstead: JSON.stringify({ ref: 'PRIVATE-BODY-2' }) });
    expect(badSignature.status).to.equal(401);
    const stale = await post(route, body, { key: poster.token, secret: SECRET, id: 'w5', timestamp: Math.floor(Date.now() / 1000) - 600 });
    expect(stale.status).to.equal(401);
    const timestamp = Math.floor(Date.now() / 1000);
    expect((await post(route, body, { key: poster.token, secret: SECRET, id: 'w6', timestamp })).status).to.equal(200);
    expect((await post(route, body, { key: poster.token, secret: SECRET, id: 'w6', timestamp })).status).to.equal(409);
    // Allowed requests and admin reads leave no denial.
    expect((await post(`${url}/admin/status`, '', { key: ops.token, method: 'GET' })).status).to.equal(200);

    const rows = await audited();
    const denied = rows.filter((r) => r.type === 'webhook.denied').map((r) => ({ ...r, details: JSON.parse(r.details) as Record<string, unknown> }));
    expect(denied.map((r) => [r.actor, r.target, r.outcome, r.details.status, r.details.vendor ?? null, r.details.permission])).to.deep.equal([
      ['globe-poster', '/webhooks/acme', 'FORBIDDEN', 403, 'acme', 'webhook:post:acme'],
      ['anonymous', '/webhooks/acme', 'UNAUTHENTICATED', 401, 'acme', 'webhook:post:acme'],
      ['anonymous', '/webhooks/acme', 'UNAUTHENTICATED', 401, 'acme', 'webhook:post:acme'],
      ['acme-poster', '/admin/status', 'FORBIDDEN', 403, null, 'admin'],
      ['acme-poster', '/webhooks/acme', 'BAD_SIGNATURE', 401, 'acme', 'webhook:post:acme'],
      ['acme-poster', '/webhooks/acme', 'TIMESTAMP_OUT_OF_TOLERANCE', 401, 'acme', 'webhook:post:acme'],
      ['acme-poster', '/webhooks/acme', 'REPLAY', 409, 'acme', 'webhook:post:acme'],
    ]);
    for (const row of denied) expect(row.details).to.include({ source: 'webhook', remoteAddress: '127.0.0.1' });
    expect(denied[2]!.details.presentedKeyId, 'the id of a key whose secret was wrong').to.equal('acme-poster');
    expect(denied[1]!.details).to.not.have.property('presentedKeyId');
    expect(denied.slice(4).map((r) => r.details.webhookId)).to.deep.equal(['w4', 'w5', 'w6']);
    // The key decisions also reached AccessControl's onDecision; signature, time and replay did not.
    expect(rows.filter((r) => r.type === 'access.denied').map((r) => [r.actor, r.target, r.outcome, r.purpose])).to.deep.equal([
      ['globe-poster', 'webhook:post:acme', 'FORBIDDEN', '/webhooks/acme'],
      ['anonymous', 'webhook:post:acme', 'UNAUTHENTICATED', '/webhooks/acme'],
      ['anonymous', 'webhook:post:acme', 'UNAUTHENTICATED', '/webhooks/acme'],
      ['acme-poster', 'admin', 'FORBIDDEN', '/admin/status'],
    ]);
    expect(rows).to.have.length(11);
    const everything = JSON.stringify(rows);
    for (const secret of ['PRIVATE-BODY', SECRET, poster.token.split('.')[1]!, globe.token.split('.')[1]!, 'v1,']) expect(everything).to.not.contain(secret);
    expect(await clickhouse.query(`SELECT ref FROM ${bookings}`)).to.deep.equal([{ ref: 'PRIVATE-BODY-1' }]);
  });

  it('still refuses when the audit log cannot take the event, and counts the miss', async () => {
    const closed = new AuditLog({ sink: new MemorySink('unused') });
    await closed.close();
    const access = new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [poster.record] });
    const lonely = fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] } }, access, audit: closed });
    const running = new Pipeline({ source: lonely, sink: new MemorySink<unknown>('rows'), deadLetters: new MemorySink('dead-letters') });
    await running.start();
    try {
      const answer = await post(`${await lonely.url()}/webhooks/acme`, '{}', { secret: SECRET, id: 'x1' });
      expect(answer.status).to.equal(401);
      expect(lonely.stats).to.deep.include({ refused: { UNAUTHENTICATED: 1 }, unaudited: 1, accepted: 0 });
    } finally {
      await running.stop();
    }
    expect(() => fromWebhook({ port: 0, vendors: { acme: { secrets: [SECRET] } }, access, audit: {} as AuditLog })).to.throw(ConfigError, 'audit must be an AuditLog');
  });
});

describe('retention', function () {
  this.timeout(120_000);

  it('drops rows past their TTL at the next merge, per table (embedded ClickHouse)', async () => {
    const clickhouse = testClickHouse();
    const raw = unique('raw');
    const letters = unique('letters');
    try {
      await clickhouse.exec(`CREATE TABLE ${raw} (id UInt32, received_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id`);
      await clickhouse.exec(`CREATE TABLE ${letters} (id UInt32, failed_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id`);
      const day = 86_400_000;
      const rows = (column: string) => Buffer.from([1, 10, 20, 40].map((age, id) => JSON.stringify({ id, [column]: new Date(Date.now() - age * day).toISOString() })).join('\n') + '\n');
      await clickhouse.insert(raw, rows('received_at'), { date_time_input_format: 'best_effort' });
      await clickhouse.insert(letters, rows('failed_at'), { date_time_input_format: 'best_effort' });
      // The rows aged in their parts before the TTL came; it is left to the merges.
      await setRetention(clickhouse, [
        { table: raw, column: 'received_at', days: 7, applyNow: false },
        { table: letters, column: 'failed_at', days: 30, applyNow: false },
      ]);
      const ddl = await clickhouse.queryText(`SHOW CREATE TABLE ${raw}`, 'TSVRaw');
      expect(ddl).to.match(/TTL toDateTime\(received_at\) \+ toIntervalDay\(7\)/);
      expect(await count(clickhouse, `SELECT count() AS n FROM ${raw}`), 'expired rows are there until a merge').to.equal(4);
      expect(await count(clickhouse, `SELECT count() AS n FROM ${letters}`)).to.equal(4);
      await clickhouse.exec(`OPTIMIZE TABLE ${raw} FINAL`);
      await clickhouse.exec(`OPTIMIZE TABLE ${letters} FINAL`);
      expect(await clickhouse.query(`SELECT id FROM ${raw} ORDER BY id`)).to.deep.equal([{ id: 0 }]);
      expect(await clickhouse.query(`SELECT id FROM ${letters} ORDER BY id`)).to.deep.equal([{ id: 0 }, { id: 1 }, { id: 2 }]);
    } finally {
      await clickhouse.exec(`DROP TABLE IF EXISTS ${raw}`);
      await clickhouse.exec(`DROP TABLE IF EXISTS ${letters}`);
    }
  });

  it('refuses a retention rule with the rule broken', async () => {
    const error = await setRetention(testClickHouse(), [{ table: 'dead_letters', column: 'failed_at', days: 1.5 }]).catch((e: Error) => e);
    expect(error).to.be.instanceOf(ConfigError).and.have.property('message', 'rules[0].days must be an integer >= 1, got 1.5');
    const applyNow = await setRetention(testClickHouse(), [{ table: 'dead_letters', column: 'failed_at', days: 1, applyNow: 'false' as never }]).catch((e: Error) => e);
    expect(applyNow).to.be.instanceOf(ConfigError).and.have.property('message', 'rules[0].applyNow must be true or false, got "false"');
  });
});

describe('compliance on the ClickHouse 18.16 server', function () {
  this.timeout(180_000);
  let server: ReturnType<typeof serverClickHouse>;
  const keysTable = unique('subject_keys');
  const bookings = unique('bookings');
  const audit = unique('audit');

  before(async () => {
    clickhouseServer.ensure();
    server = serverClickHouse({ url: clickhouseServer.url });
    await server.exec(`CREATE TABLE ${keysTable} (subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64) ENGINE = MergeTree ORDER BY (subject, key_id)`);
    await server.exec(`CREATE TABLE ${bookings} (booking_id String, customer String, email String, received_at DateTime) ENGINE = MergeTree ORDER BY booking_id`);
    await server.exec(auditTable(audit));
  });
  after(async () => {
    for (const table of [keysTable, bookings, audit]) await server?.exec(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
    await server?.close();
  });

  it('erases with ALTER TABLE … DELETE where there is no lightweight delete: keys shredded, rows gone, others kept, repeat is a no-op', async () => {
    const keyring = new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });
    const subjectKeys = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: server, table: keysTable }) });
    const log = new AuditLog({ sink: toClickHouse({ client: server, table: audit }), batch: { rows: 10, maxWaitMs: 10 } });
    const recorder = new Recorder();
    const input = Array.from({ length: 12 }, (_, i) => ({ booking_id: `b${i}`, customer: `c${i % 3}`, email: `c${i % 3}@example.com`, received_at: Math.floor(Date.now() / 1000) }));
    const sealed = (await lastValueFrom(from(input.map((v) => recorder.envelope(v))).pipe(encrypt({ keyring, subjectKeys, subject: 'customer', fields: ['email'], recordId: 'booking_id' }), toArray()))).map((e) => e.value);
    await server.insert(bookings, Buffer.from(sealed.map((r) => JSON.stringify(r)).join('\n') + '\n'), {});
    const erasure = subjectErasure({ client: server, subjectKeys, audit: log, tables: [{ table: bookings, column: 'customer' }] });
    const report = await erasure.erase('c1', { actor: 'dpo', reason: 'request 9' });
    expect(report).to.deep.include({ keysShredded: 1, touched: true, tables: [{ table: bookings, action: 'delete', rows: 4 }] });
    expect(await count(server, `SELECT count() AS n FROM ${bookings}`)).to.equal(8);
    expect(await count(server, `SELECT count() AS n FROM ${keysTable} WHERE subject = 'c1'`)).to.equal(0);
    const fresh = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: server, table: keysTable }) });
    const reader = AccessControl.issueKey('dpo', ['dpo']);
    const access = new AccessControl({ roles: { dpo: ['decrypt:email'] }, keys: [reader.record] });
    const read = new Recorder();
    const opened = await lastValueFrom(from(structuredClone(sealed).map((v) => read.envelope(v))).pipe(decrypt({ keyring, subjectKeys: fresh, fields: ['email'], recordId: 'booking_id', access, principal: reader.token, purpose: 'check', audit: log }), toArray()));
    expect(opened.map((e) => e.value.email).sort()).to.deep.equal([...Array(4).fill('c0@example.com'), ...Array(4).fill('c2@example.com')]);
    expect(read.rejected.map((r) => r.failure.code)).to.deep.equal(Array(4).fill('DECRYPT_ERASED'));
    expect(await erasure.erase('c1', { actor: 'dpo', reason: 'request 9' })).to.deep.include({ keysShredded: 0, touched: false });
    await log.flush();
    expect(await count(server, `SELECT count() AS n FROM ${audit} WHERE type = 'decrypt'`)).to.equal(12);
    expect(await server.query(`SELECT type, outcome FROM ${audit} WHERE type LIKE 'erasure.%' ORDER BY length(id), id`)).to.deep.equal([
      { type: 'erasure.request', outcome: 'requested' },
      { type: 'erasure.done', outcome: 'ok' },
      { type: 'erasure.request', outcome: 'requested' },
      { type: 'erasure.done', outcome: 'nothing-to-erase' },
    ]);
    await log.close();
  });

  it('has no TTL: setRetention says so, purgeExpired removes old rows instead', async () => {
    const error = await setRetention(server, [{ table: bookings, column: 'received_at', days: 7 }]).catch((e: TributaryError) => e);
    expect(error).to.be.instanceOf(TributaryError).and.have.property('code', 'TTL_UNSUPPORTED');
    const old = Math.floor((Date.now() - 30 * 86_400_000) / 1000);
    await server.insert(bookings, Buffer.from(JSON.stringify({ booking_id: 'old', customer: 'c9', email: '', received_at: old }) + '\n'), {});
    const before = await count(server, `SELECT count() AS n FROM ${bookings}`);
    expect(await purgeExpired(server, [{ table: bookings, column: 'received_at', days: 7 }])).to.deep.equal({ [bookings]: 1 });
    expect(await count(server, `SELECT count() AS n FROM ${bookings}`)).to.equal(before - 1);
    expect(await count(server, `SELECT count() AS n FROM ${bookings} WHERE booking_id = 'old'`)).to.equal(0);
  });
});
