import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { from, lastValueFrom, pipe, toArray, type OperatorFunction } from 'rxjs';
import { clickHouseSubjectKeyStore, migrate, subjectErasure, toClickHouse } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { customerOf, sealBookings } from '../../../examples/bookings/compliance';
import { migrationsDir } from '../../../examples/bookings/paths';
import { AccessControl } from '../../../lib/security/access';
import { AuditLog, auditAccess } from '../../../lib/security/audit';
import { deadLetterProtector } from '../../../lib/security/deadLetterProtector';
import type { Envelope } from '../../../lib/envelope';
import { AccessDeniedError, TributaryError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../../../lib/sink';
import { SubjectKeys } from '../../../lib/security/subjectKeys';
import { decrypt } from '../../../operators/decrypt';
import { recordOperator } from '../../../operators/recordOperator';
import { encrypt } from '../../../operators/encrypt';
import { subjectTokenOf, subjectTokensOf, tokenOf, tokenize } from '../../../operators/tokenize';
import { toKafka } from '../../../connectors/kafka';
import { MemorySink, Recorder, testClickHouse } from '../../helpers';
import { createServedTopics } from '../../kafka';
import { ensureKafka } from '../../services';

const TABLES = ['vendor_quality_accepted_mv', 'vendor_quality_dead_lettered_mv', 'bookings_per_vendor_day', 'cancellation_rate_per_vendor', 'vendor_quality_hourly', 'bookings', 'dead_letters', 'subject_keys', 'audit_log', 'tributary_migrations'];
const CUSTOMERS = ['alice@example.com', 'bob@example.org', 'carol@example.net'];
const NAMES: Record<string, string> = { 'alice@example.com': 'Alice Erasable', 'bob@example.org': 'Bob Keeper', 'carol@example.net': 'Carol Keeper' };

/** 30 bookings, 10 per customer; per customer one breaks the schema (refused before encrypt) and one is refused after it. */
function bookings(vendor: string) {
  return Array.from({ length: 30 }, (_, i) => {
    const email = CUSTOMERS[i % 3]!;
    const id = `${vendor}-${i}${i % 10 === 7 ? 'X' : ''}`;
    return {
      vendor,
      booking_id: id,
      updated_at: '2026-03-01T10:00:00Z',
      status: i % 4 === 0 ? 'cancelled' : 'confirmed',
      product: 'flight',
      booked_at: `2026-03-0${1 + (i % 3)}T09:00:00Z`,
      travel_date: '2026-04-01',
      passengers: 1,
      total_amount: `${100 + i}.50`,
      currency: i % 10 === 4 ? 'eur' : 'EUR', // lower case: refused by validate, before encryption
      travellers: [{ name: NAMES[email]!, email }],
    };
  });
}

/** Dead letters to the ClickHouse table and, like a DLQ, to a Kafka topic through toKafka (each letter whole, as JSON). */
function teeSink(table: Sink<DeadLetter>, dlq: Sink<DeadLetter>): Sink<DeadLetter> {
  return {
    name: 'dead-letters-tee',
    async open() {
      await dlq.open?.();
    },
    async write(batch: Batch<DeadLetter>, context) {
      await table.write(batch, context);
      await dlq.write(batch, context);
    },
    async close() {
      await dlq.close?.();
    },
  };
}

async function through<T>(operator: OperatorFunction<Envelope<T>, Envelope<T>>, values: T[]) {
  const recorder = new Recorder();
  const out = await lastValueFrom(from(values.map((v) => recorder.envelope(v))).pipe(operator, toArray()));
  return { values: out.map((e) => e.value), refused: recorder.rejected.map((r) => ({ value: r.envelope.value as T, code: r.failure.code })) };
}

describe('erasure by crypto-shredding (embedded ClickHouse, Kafka)', function () {
  this.timeout(240_000);
  const clickhouse = testClickHouse();
  const topic = `tributary-dlq-${randomBytes(4).toString('hex')}`;
  let kafka: Kafka;
  let brokers: string[];

  before(async () => {
    brokers = await ensureKafka();
    kafka = new Kafka({ clientId: 'compliance-test', brokers, logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await createServedTopics(admin, [{ topic, numPartitions: 1 }]);
    await admin.disconnect();
    for (const table of TABLES) await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
    await migrate(clickhouse, migrationsDir);
  });

  after(async () => {
    if (!kafka) return;
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  });

  it('shreds a subject everywhere (bookings, dead letters, a Kafka DLQ), keeps the others and the figures, unlinks its tokens, and audits it all', async () => {
    const keyring = new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });
    const tokenKeys = new Keyring({ keys: [{ id: 't1', key: randomBytes(32) }] });
    const audit = new AuditLog({ sink: toClickHouse({ client: clickhouse, table: 'audit_log' }), batch: { rows: 100, maxWaitMs: 20 } });
    audit.watchKeyring(keyring, 'master');
    const subjectKeys = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: clickhouse }) });
    const support = AccessControl.issueKey('support-desk', ['support']);
    const intern = AccessControl.issueKey('intern', ['analyst']);
    const access = new AccessControl({
      roles: { support: ['decrypt:travellers_sealed', 'decrypt:raw', 'decrypt:message'], analyst: ['query:read'] },
      keys: [support.record, intern.record],
      onDecision: auditAccess(audit),
    });

    const ingest = (items: unknown[], name: string) =>
      new Pipeline({
        name,
        source: fromIterable(items, { name }),
        transform: pipe(
          sealBookings(tokenKeys, subjectKeys),
          // A refusal after encryption (a downstream business rule): its letter must not reveal the travellers either.
          recordOperator('policy', (b: { booking_id: string }) => {
            if (b.booking_id.endsWith('X')) throw new TributaryError('booking held for review', { code: 'POLICY' });
            return b;
          }),
        ),
        sink: toClickHouse({ client: clickhouse, table: 'bookings' }),
        deadLetters: teeSink(toClickHouse({ client: clickhouse, table: 'dead_letters' }), toKafka({ brokers, topic, key: (e) => e.value.position, value: (e) => JSON.stringify(e.value) })),
        protectDeadLetter: deadLetterProtector({ keyring, subjectKeys, subjectOf: (value) => customerOf(tokenKeys, value) }),
        onLifecycle: audit.lifecycle(),
        batch: { rows: 7, maxWaitMs: 20 },
      }).run();

    const first = await ingest(bookings('acme'), 'acme-feed');
    expect(first).to.include({ read: 30, written: 24, deadLettered: 6, nacked: 0 });
    // Rotation of the master key: keys wrapped before still unwrap, new ones use the new primary.
    keyring.rotate({ id: 'm2', key: randomBytes(32) });
    subjectKeys.clearCache();
    const second = await ingest(bookings('globex'), 'globex-feed');
    expect(second).to.include({ read: 30, written: 24, deadLettered: 6 });

    // No plaintext anywhere at rest.
    const everything = [
      await clickhouse.queryText('SELECT * FROM bookings', 'JSONEachRow'),
      await clickhouse.queryText('SELECT * FROM dead_letters', 'JSONEachRow'),
      await clickhouse.queryText('SELECT * FROM subject_keys', 'JSONEachRow'),
      await clickhouse.queryText('SELECT * FROM audit_log', 'JSONEachRow'),
    ].join('\n');
    for (const secret of [...CUSTOMERS, ...Object.values(NAMES)]) expect(everything).not.to.contain(secret);
    const kafkaLetters = await readTopic(kafka, topic, 12);
    for (const secret of [...CUSTOMERS, ...Object.values(NAMES)]) expect(JSON.stringify(kafkaLetters)).not.to.contain(secret);

    const alice = customerOf(tokenKeys, { travellers: [{ email: 'alice@example.com' }] })!;
    const alicePseudonyms = await subjectKeys.pseudonymsOf(alice);
    expect(alicePseudonyms).to.have.length(1);

    let decryptCount = 0;
    /** Decrypts as the support desk, counting the records read: each must leave one audit event. */
    const read = <T>(keys: SubjectKeys, fields: string[], recordId: string, purpose: string, rows: T[]) => {
      decryptCount += rows.length;
      return through(decrypt<T>({ keyring, subjectKeys: keys, fields, recordId, access, principal: support.token, purpose, audit }), rows);
    };
    const bookingRows = () => clickhouse.query<{ booking_id: string; customer_token: string; travellers_sealed: string }>('SELECT booking_id, customer_token, travellers_sealed FROM bookings FINAL ORDER BY booking_id');
    const readBookings = async () => read(subjectKeys, ['travellers_sealed'], 'booking_id', 'GDPR access request 17', await bookingRows());
    const readLetters = (letters: DeadLetter[]) => read(subjectKeys, ['raw', 'message'], 'position', 'dead-letter triage', structuredClone(letters));
    const tableLetters = () => clickhouse.query<DeadLetter>('SELECT * FROM dead_letters FINAL ORDER BY position');

    // Before erasure everyone decrypts everywhere.
    const before = await readBookings();
    expect(before.refused).to.deep.equal([]);
    expect(before.values).to.have.length(48);
    expect(before.values.filter((b) => b.customer_token === alicePseudonyms[0])).to.have.length(16);
    expect(JSON.stringify(before.values)).to.contain('Alice Erasable');
    expect((await readLetters(await tableLetters())).refused).to.deep.equal([]);
    expect((await readLetters(kafkaLetters)).refused).to.deep.equal([]);
    const figures = () => clickhouse.queryText('SELECT * FROM bookings_per_vendor_day ORDER BY vendor, day, currency', 'JSONEachRow');
    const quality = () => clickhouse.queryText('SELECT vendor, sum(accepted) AS a, sum(dead_lettered) AS d FROM vendor_quality_hourly GROUP BY vendor ORDER BY vendor', 'JSONEachRow');
    const [figuresBefore, qualityBefore] = [await figures(), await quality()];
    const sealedBefore = await bookingRows(); // a copy taken before erasure: a backup, an export
    const lettersBefore = await tableLetters();
    const aliceLetters = (await readLetters(lettersBefore)).values.filter((l) => l.raw.includes('alice@example.com') || l.raw.includes(alicePseudonyms[0]!)).map((l) => l.position);
    expect(aliceLetters).to.have.length(4);

    const erasure = subjectErasure({
      client: clickhouse,
      subjectKeys,
      audit,
      tables: [
        { table: 'bookings', column: 'customer_token', action: 'anonymise', set: { travellers_sealed: '' }, match: 'pseudonym' },
        { table: 'dead_letters', column: 'raw', match: 'key' },
      ],
    });
    const report = await erasure.erase(alice, { actor: 'dpo@example.com', reason: 'GDPR art. 17, ticket 123' });
    expect(report).to.deep.include({
      keysShredded: 1,
      touched: true,
      tables: [
        { table: 'bookings', action: 'anonymise', rows: 16 },
        { table: 'dead_letters', action: 'delete', rows: 4 },
      ],
    });

    // A fresh process: nothing cached, only what is stored.
    const freshKeys = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: clickhouse }) });
    for (const keys of [subjectKeys, freshKeys]) {
      const after = await read(keys, ['travellers_sealed'], 'booking_id', 'GDPR access request 17', await bookingRows());
      expect(after.refused, 'anonymised rows hold no ciphertext any more').to.deep.equal([]);
      expect(after.values).to.have.length(48);
      expect(JSON.stringify(after.values)).not.to.contain('Alice');
      expect(after.values.filter((b) => b.customer_token === '')).to.have.length(16);
      expect(after.values.filter((b) => JSON.stringify(b.travellers_sealed).includes('Bob Keeper'))).to.have.length(16);
      expect(after.values.filter((b) => JSON.stringify(b.travellers_sealed).includes('Carol Keeper'))).to.have.length(16);
      // The ciphertexts copied before erasure (a backup, an export) no longer open.
      const copies = await read(keys, ['travellers_sealed'], 'booking_id', 'restore check', structuredClone(sealedBefore));
      expect(copies.refused.map((r) => r.code)).to.deep.equal(Array(16).fill('DECRYPT_ERASED'));
      expect(copies.values).to.have.length(32);

      // The Kafka topic cannot be rewritten: its letters stay, sealed. The table's are deleted as well.
      expect((await tableLetters()).map((l) => l.position)).to.deep.equal(kafkaLetters.map((l) => l.position).filter((p) => !aliceLetters.includes(p)).sort());
      for (const letters of [lettersBefore, kafkaLetters]) {
        const opened = await read(keys, ['raw', 'message'], 'position', 'dead-letter triage', structuredClone(letters));
        expect(opened.refused.map((r) => r.code), 'every letter of the erased subject stays sealed').to.deep.equal(Array(4).fill('DECRYPT_ERASED'));
        expect(opened.values).to.have.length(8);
        expect(JSON.stringify(opened.values)).not.to.contain('alice@example.com');
        // Letters of the others open; those refused after encryption hold the sealed travellers, which open too.
        const inner = opened.values.map((l) => JSON.parse(l.raw)).filter((r) => typeof r.travellers_sealed === 'string');
        expect(inner).to.have.length(4);
        expect((await read(keys, ['travellers_sealed'], 'booking_id', 'dead-letter triage', inner)).refused).to.deep.equal([]);
      }
    }

    // The figures are the same: the bookings still count, only who made them is gone.
    expect(await figures()).to.equal(figuresBefore);
    expect(await quality()).to.equal(qualityBefore);

    // Tokens stop linking: the old pseudonym cannot be made again; a returning customer gets a new one.
    expect(await subjectKeys.pseudonymsOf(alice)).to.deep.equal([]);
    await ingest([{ ...bookings('acme')[0]!, booking_id: 'acme-returning' }], 'acme-return');
    const [returning] = await clickhouse.query<{ customer_token: string }>("SELECT customer_token FROM bookings FINAL WHERE booking_id = 'acme-returning'");
    expect(returning!.customer_token).to.match(/^p1:/).and.not.equal(alicePseudonyms[0]);
    expect(await clickhouse.query(`SELECT booking_id FROM bookings WHERE customer_token = '${alicePseudonyms[0]}'`)).to.deep.equal([]);

    // A second erasure of the same request touches nothing... after the returning booking is erased too.
    expect((await erasure.erase(alice, { actor: 'dpo@example.com', reason: 'GDPR art. 17, ticket 123' })).touched).to.equal(true);
    const again = await erasure.erase(alice, { actor: 'dpo@example.com', reason: 'GDPR art. 17, ticket 123' });
    expect(again).to.deep.include({
      keysShredded: 0,
      touched: false,
      tables: [
        { table: 'bookings', action: 'anonymise', rows: 0 },
        { table: 'dead_letters', action: 'delete', rows: 0 },
      ],
    });

    // Reading without the permission is refused, and the refusal is audited.
    expect(() => decrypt({ keyring, subjectKeys, fields: ['travellers_sealed'], recordId: 'booking_id', access, principal: intern.token, purpose: 'curiosity', audit })).to.throw(AccessDeniedError, /lacks permission decrypt:travellers_sealed/);

    await audit.flush();
    const events = await clickhouse.query<{ type: string; actor: string; purpose: string; target: string; outcome: string; details: string }>('SELECT type, actor, purpose, target, outcome, details FROM audit_log ORDER BY at, length(id), id');
    const of = (type: string) => events.filter((e) => e.type === type);
    expect(of('pipeline.start').map((e) => e.target)).to.deep.equal(['acme-feed', 'globex-feed', 'acme-return']);
    expect(of('pipeline.stop')).to.have.length(3);
    expect(JSON.parse(of('pipeline.start')[0]!.details)).to.deep.include({ source: 'acme-feed', sink: 'clickhouse:bookings', protectedDeadLetters: true });
    expect(of('key.rotate').map((e) => JSON.parse(e.details))).to.deep.equal([{ primary: 'm2', previous: 'm1' }]);
    expect(of('erasure.request')).to.have.length(3);
    expect(of('erasure.done').map((e) => e.outcome)).to.deep.equal(['ok', 'ok', 'nothing-to-erase']);
    for (const e of [...of('erasure.request'), ...of('erasure.done')]) expect(e).to.deep.include({ actor: 'dpo@example.com', purpose: 'GDPR art. 17, ticket 123' });
    expect(of('erasure.request')[0]!.target).to.equal(`subject:${report.subjectHash}`);
    const decrypts = of('decrypt');
    expect(decrypts.length).to.equal(decryptCount);
    expect(decrypts.every((e) => e.actor === 'support-desk')).to.equal(true);
    expect(decrypts.filter((e) => e.outcome === 'DECRYPT_ERASED').length).to.equal(2 * (16 + 4 + 4));
    expect(decrypts.some((e) => e.purpose === 'GDPR access request 17' && JSON.parse(e.details).fields?.[0] === 'travellers_sealed')).to.equal(true);
    expect(of('access.denied')).to.deep.equal([{ type: 'access.denied', actor: 'intern', purpose: 'curiosity', target: 'decrypt:travellers_sealed', outcome: 'FORBIDDEN', details: '{}' }]);
    expect(JSON.stringify(events), 'the audit log names the subject by a hash only').not.to.contain(alice);
    await audit.close();
  });
});

describe('tokens under erasure (embedded ClickHouse)', function () {
  this.timeout(60_000);
  const clickhouse = testClickHouse();
  const suffix = randomBytes(4).toString('hex');
  const table = `tokened_${suffix}`;
  const keysTable = `token_subject_keys_${suffix}`;
  const subjectTable = `subject_tokened_${suffix}`;
  const subjectKeysTable = `subject_token_keys_${suffix}`;
  after(async () => {
    for (const t of [table, keysTable, subjectTable, subjectKeysTable]) await clickhouse.exec(`DROP TABLE IF EXISTS ${t}`);
  });

  it('leaves scope-keyed tokenize output linking after erase (one key per scope, not per subject); only the pseudonym stops linking', async () => {
    await clickhouse.exec(`CREATE TABLE ${table} (booking_id String, customer String, email String, phone String) ENGINE = MergeTree ORDER BY booking_id`);
    await clickhouse.exec(`CREATE TABLE ${keysTable} (subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64) ENGINE = MergeTree ORDER BY (subject, key_id)`);
    const keyring = new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });
    const tokenKeys = new Keyring({ keys: [{ id: 't1', key: randomBytes(32) }] });
    const subjectKeys = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: clickhouse, table: keysTable }) });
    const people = [
      { email: 'alice@example.com', phone: '+49 30 1234567' },
      { email: 'bob@example.org', phone: '+33 1 7654321' },
    ];
    const input = Array.from({ length: 6 }, (_, i) => ({ booking_id: `b${i}`, customer: '', ...people[i % 2]! }));
    // The customer is the token of the e-mail (the subject id), then replaced by its pseudonym; the phone is tokenized in place.
    const stored = await through(
      pipe(
        tokenize<(typeof input)[number]>({ keyring: tokenKeys, fields: { email: { scope: 'customer-email', normalize: 'email', to: 'customer' }, phone: { scope: 'phone', normalize: 'digits' } } }),
        encrypt({ keyring, subjectKeys, subject: 'customer', pseudonymize: true, fields: ['email'], recordId: 'booking_id' }),
      ),
      input,
    );
    expect(stored.refused).to.deep.equal([]);
    await clickhouse.insert(table, Buffer.from(stored.values.map((r) => JSON.stringify(r)).join('\n') + '\n'), {});
    const alice = tokenOf(tokenKeys, 't1', 'customer-email', 'alice@example.com', 'email');
    const alicePhone = tokenOf(tokenKeys, 't1', 'phone', '+49 30 1234567', 'digits');
    const [pseudonym] = await subjectKeys.pseudonymsOf(alice);
    const rowsOf = (column: string, value: string) => clickhouse.query<{ booking_id: string }>(`SELECT booking_id FROM ${table} WHERE ${column} = '${value}' ORDER BY booking_id`);
    expect(await rowsOf('customer', pseudonym!)).to.deep.equal([{ booking_id: 'b0' }, { booking_id: 'b2' }, { booking_id: 'b4' }]);
    expect(await rowsOf('phone', alicePhone)).to.deep.equal([{ booking_id: 'b0' }, { booking_id: 'b2' }, { booking_id: 'b4' }]);

    const audit = new AuditLog({ sink: new MemorySink('audit') });
    const erasure = subjectErasure({ client: clickhouse, subjectKeys, audit, tables: [{ table, column: 'customer', action: 'anonymise', set: { email: '' }, match: 'pseudonym' }] });
    expect(await erasure.erase(alice, { actor: 'dpo', reason: 'tokens check' })).to.deep.include({ keysShredded: 1, tables: [{ table, action: 'anonymise', rows: 3 }] });
    await audit.close();

    // The pseudonym stops linking: it is gone from the rows and can no longer be derived.
    expect(await subjectKeys.pseudonymsOf(alice)).to.deep.equal([]);
    expect(await rowsOf('customer', pseudonym!)).to.deep.equal([]);
    // The tokens do not: the scope key was not shredded, so the same e-mail and phone give the
    // same tokens as before, and a tokenized column left out of `set` still ties the rows together.
    expect(tokenOf(tokenKeys, 't1', 'customer-email', 'alice@example.com', 'email')).to.equal(alice);
    expect(tokenOf(tokenKeys, 't1', 'phone', '+49 30 1234567', 'digits')).to.equal(alicePhone);
    expect(await rowsOf('phone', alicePhone)).to.deep.equal([{ booking_id: 'b0' }, { booking_id: 'b2' }, { booking_id: 'b4' }]);
  });

  it('unlinks per-subject tokens: after erase nobody can make them again, a returning subject gets new ones, others keep theirs', async () => {
    await clickhouse.exec(`CREATE TABLE ${subjectTable} (booking_id String, customer String, email String, email_token String, phone String) ENGINE = MergeTree ORDER BY booking_id`);
    await clickhouse.exec(`CREATE TABLE ${subjectKeysTable} (subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64) ENGINE = MergeTree ORDER BY (subject, key_id)`);
    const keyring = new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });
    const tokenKeys = new Keyring({ keys: [{ id: 't1', key: randomBytes(32) }] });
    const store = () => clickHouseSubjectKeyStore({ client: clickhouse, table: subjectKeysTable });
    const subjectKeys = new SubjectKeys({ keyring, store: store() });
    const people = [
      { email: 'alice@example.com', phone: '+49 30 1234567' },
      { email: 'bob@example.org', phone: '+33 1 7654321' },
    ];
    type Row = { booking_id: string; customer: string; email: string; email_token?: string; phone: string };
    // The subject id is a scope-keyed token of the e-mail (erasure must be able to name it); the
    // e-mail and phone tokens are per subject; the e-mail itself is sealed under the subject's key.
    const store$ = async (rows: Row[]) => {
      const stored = await through(
        pipe(
          tokenize<Row>({ keyring: tokenKeys, fields: { email: { scope: 'customer-id', normalize: 'email', to: 'customer' } } }),
          tokenize<Row>({ subjectKeys, subject: 'customer', fields: { email: { scope: 'customer-email', normalize: 'email', to: 'email_token' }, phone: { scope: 'phone', normalize: 'digits' } } }),
          encrypt<Row>({ keyring, subjectKeys, subject: 'customer', fields: ['email'], recordId: 'booking_id' }),
        ),
        rows,
      );
      expect(stored.refused).to.deep.equal([]);
      await clickhouse.insert(subjectTable, Buffer.from(stored.values.map((r) => JSON.stringify(r)).join('\n') + '\n'), {});
    };
    await store$(Array.from({ length: 6 }, (_, i) => ({ booking_id: `b${i}`, customer: '', ...people[i % 2]! })));
    const alice = tokenOf(tokenKeys, 't1', 'customer-id', 'alice@example.com', 'email');
    const bob = tokenOf(tokenKeys, 't1', 'customer-id', 'bob@example.org', 'email');
    const rows = () => clickhouse.query<Row>(`SELECT booking_id, customer, email, email_token, phone FROM ${subjectTable} ORDER BY booking_id`);
    const before = await rows(); // a copy taken before erasure: an export, a backup
    const rowsOf = (subject: string) => before.filter((r) => r.customer === subject);
    expect(JSON.stringify(before)).not.to.contain('alice@example.com').and.not.to.contain('1234567');

    // Before erasure: one subject's rows share their tokens, and the tokens can be made again from the values.
    const [aliceEmail, alicePhone] = [rowsOf(alice).map((r) => r.email_token), rowsOf(alice).map((r) => r.phone)];
    expect(aliceEmail).to.have.length(3);
    expect(new Set(aliceEmail).size).to.equal(1);
    expect(new Set(alicePhone).size).to.equal(1);
    expect(aliceEmail[0]).to.match(/^st1:[A-Za-z0-9_-]{22}:[A-Za-z0-9_-]{43}$/);
    const aliceKeyId = aliceEmail[0]!.split(':')[1]!;
    expect(await subjectTokensOf(subjectKeys, alice, 'customer-email', ' Alice@Example.com', 'email')).to.deep.equal([aliceEmail[0]]);
    expect(await subjectTokenOf(subjectKeys, aliceKeyId, 'phone', '+49 30 1234567', 'digits')).to.equal(alicePhone[0]);
    const bobEmail = rowsOf(bob)[0]!.email_token!;
    const bobPhone = rowsOf(bob)[0]!.phone;
    expect(bobEmail).not.to.equal(aliceEmail[0]);

    const audit = new AuditLog({ sink: new MemorySink('audit') });
    // The token columns are deliberately left out of `set`: what stays behind must not link any more.
    const erasure = subjectErasure({ client: clickhouse, subjectKeys, audit, tables: [{ table: subjectTable, column: 'customer', action: 'anonymise', set: { email: '' } }] });
    expect(await erasure.erase(alice, { actor: 'dpo', reason: 'tokens check' })).to.deep.include({ keysShredded: 1, tables: [{ table: subjectTable, action: 'anonymise', rows: 3 }] });
    await audit.close();

    // In the erasing process and in a fresh one: the subject's tokens cannot be made again from its values.
    for (const keys of [subjectKeys, new SubjectKeys({ keyring, store: store() })]) {
      expect(await subjectTokensOf(keys, alice, 'customer-email', 'alice@example.com', 'email')).to.deep.equal([]);
      for (const [scope, value, normalize] of [['customer-email', 'alice@example.com', 'email'], ['phone', '+49 30 1234567', 'digits']] as const) {
        const error = await subjectTokenOf(keys, aliceKeyId, scope, value, normalize).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).to.be.instanceOf(TributaryError).and.have.property('code', 'TOKENIZE_ERASED');
      }
      // The other subject's tokens are unchanged and still made from its values.
      expect(await subjectTokensOf(keys, bob, 'customer-email', 'bob@example.org', 'email')).to.deep.equal([bobEmail]);
      expect(await subjectTokensOf(keys, bob, 'phone', '+33 1 7654321', 'digits')).to.deep.equal([bobPhone]);
    }

    // A returning customer with the same e-mail and phone gets a new key, so new tokens that match no earlier row.
    await store$([{ booking_id: 'b6', ...people[0]!, customer: '' }]);
    const after = await rows();
    const returning = after.find((r) => r.booking_id === 'b6')!;
    expect(returning.customer).to.equal(alice);
    expect(returning.email_token).to.match(/^st1:/).and.not.equal(aliceEmail[0]);
    expect(returning.email_token!.split(':')[1]).not.to.equal(aliceKeyId);
    expect(returning.phone).not.to.equal(alicePhone[0]);
    expect(after.filter((r) => r.email_token === returning.email_token).map((r) => r.booking_id)).to.deep.equal(['b6']);
    expect(after.filter((r) => r.phone === returning.phone).map((r) => r.booking_id)).to.deep.equal(['b6']);
    // The rows left behind still share the old token with each other, but with no value and no person.
    expect(after.filter((r) => r.email_token === aliceEmail[0]).map((r) => [r.booking_id, r.customer, r.email])).to.deep.equal([
      ['b0', '', ''],
      ['b2', '', ''],
      ['b4', '', ''],
    ]);
    expect(after.filter((r) => r.customer === bob).map((r) => [r.email_token, r.phone])).to.deep.equal(Array(3).fill([bobEmail, bobPhone]));
  });
});

async function readTopic(kafka: Kafka, topic: string, expected: number): Promise<DeadLetter[]> {
  const consumer = kafka.consumer({ groupId: `reader-${randomBytes(4).toString('hex')}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const letters: DeadLetter[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${letters.length} of ${expected} letters on ${topic}`)), 60_000);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          letters.push(JSON.parse(message.value!.toString('utf8')) as DeadLetter);
          if (letters.length === expected) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return letters;
}
