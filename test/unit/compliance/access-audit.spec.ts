import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { AccessDeniedError, ConfigError, SinkError, TributaryError } from '../../../lib/errors';
import { AccessControl, type AccessDecision } from '../../../lib/security/access';
import { AuditLog, auditAccess, type AuditRow } from '../../../lib/security/audit';
import { Keyring } from '../../../lib/security/keyring';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, until } from '../../helpers';

/** The error `act` throws, or undefined when it throws none. */
function thrownBy<E extends Error = TributaryError>(act: () => unknown): E | undefined {
  try {
    act();
  } catch (error) {
    return error as E;
  }
  return undefined;
}

describe('access control, in detail', () => {
  const vendor = AccessControl.issueKey('acme', ['vendor']);

  it('issues keys of an id and 256 random bits, and stores the SHA-256 of the secret', () => {
    const [id, secret] = vendor.token.split('.');
    expect(id).to.equal('acme');
    expect(Buffer.from(secret!, 'base64url')).to.have.length(32);
    expect(vendor.record).to.deep.equal({ id: 'acme', secretHash: AccessControl.hashSecret(secret!), roles: ['vendor'] });
    expect(AccessControl.hashSecret('abc')).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(AccessControl.issueKey('acme', ['vendor']).token).to.not.equal(vendor.token);
  });

  it('refuses a secret hash with anything before or after its 64 hex digits', () => {
    const hash = AccessControl.hashSecret('s');
    for (const secretHash of [`${hash}0`, `0${hash}`, `${hash.slice(1)}`]) {
      expect(() => new AccessControl({ roles: {}, keys: [{ id: 'k', secretHash, roles: [] }] }), secretHash).to.throw(ConfigError, 'API key k: secretHash must be 64 hex digits (SHA-256)');
    }
  });

  it('reads a token as key id, dot, secret: a token without the dot is no key, even one that reads as an id and its secret', () => {
    const access = new AccessControl({ roles: { r: ['metrics:read'] }, keys: [{ id: 'ab', secretHash: AccessControl.hashSecret('abc'), roles: ['r'] }] });
    expect(access.decide('ab.abc', 'metrics:read').outcome).to.equal('ok');
    for (const token of ['abc', '.abc', 'ab.', 'ab.abcd']) expect(access.decide(token, 'metrics:read').outcome, token).to.equal('UNAUTHENTICATED');
  });

  it('decides with the time, the key and the context when one is given', () => {
    const access = new AccessControl({ roles: { vendor: ['webhook:post:acme'] }, keys: [vendor.record] });
    const before = Date.now();
    const decision = access.decide(vendor.token, 'webhook:post:acme');
    expect(decision).to.deep.include({ allowed: true, permission: 'webhook:post:acme', keyId: 'acme', outcome: 'ok' });
    expect(decision.at).to.be.within(before, Date.now());
    expect(decision).not.to.have.property('context');
    expect(access.decide(undefined, 'admin', '')).to.deep.include({ allowed: false, keyId: undefined, outcome: 'UNAUTHENTICATED', context: '' });
  });

  it('says whether its decisions are reported', () => {
    expect(new AccessControl({ roles: {}, keys: [] }).reportsDecisions).to.equal(false);
    expect(new AccessControl({ roles: {}, keys: [], onDecision: () => undefined }).reportsDecisions).to.equal(true);
  });

  it('throws a refusal naming the key, the permission and the outcome', () => {
    const access = new AccessControl({ roles: { vendor: ['webhook:post:acme'] }, keys: [vendor.record] });
    const forbidden = thrownBy<AccessDeniedError>(() => access.check(vendor.token, 'admin'));
    expect(forbidden).to.be.instanceOf(AccessDeniedError);
    expect({ message: forbidden!.message, code: forbidden!.code, permission: forbidden!.permission, keyId: forbidden!.keyId }).to.deep.equal({
      message: 'key acme lacks permission admin',
      code: 'FORBIDDEN',
      permission: 'admin',
      keyId: 'acme',
    });
    expect(() => access.check(`${vendor.token}x`, 'admin')).to.throw(AccessDeniedError, 'a valid API key is required').with.property('keyId', undefined);
  });

  it('matches permissions whole and literally: dots and dashes are not wildcards, nothing before or after', () => {
    const reader = AccessControl.issueKey('reader', ['reader']);
    const access = new AccessControl({ roles: { reader: ['decrypt:passenger.email', 'webhook:post:a-b'] }, keys: [reader.record] });
    const allowed = (permission: string) => access.decide(reader.token, permission).allowed;
    expect(allowed('decrypt:passenger.email')).to.equal(true);
    expect(allowed('webhook:post:a-b')).to.equal(true);
    for (const permission of ['decrypt:passengerXemail', 'xdecrypt:passenger.email', 'decrypt:passenger.emails', 'decrypt:passenger.email:x', 'webhook:post:aXb', 'webhook:post:ab']) {
      expect(allowed(permission), permission).to.equal(false);
    }
  });

  it('grants through any of a key\'s roles, and refuses a pattern that is empty or not a string', () => {
    const both = AccessControl.issueKey('both', ['reader', 'writer']);
    const access = new AccessControl({ roles: { reader: ['metrics:read'], writer: ['webhook:post:*'] }, keys: [both.record] });
    expect(access.decide(both.token, 'metrics:read').allowed).to.equal(true);
    expect(access.decide(both.token, 'webhook:post:acme').allowed).to.equal(true);
    expect(() => new AccessControl({ roles: { r: [''] }, keys: [] })).to.throw(ConfigError, 'role r: permission patterns use letters, digits, _ . - : and *, got ""');
    expect(() => new AccessControl({ roles: { r: [7 as never] }, keys: [] })).to.throw(ConfigError, 'role r: permission patterns use letters, digits, _ . - : and *, got 7');
    expect(() => new AccessControl({ roles: { r: ['a:b*'] }, keys: [] })).to.throw(ConfigError, 'role r: * must be a whole segment, got "a:b*"');
    expect(() => new AccessControl({ keys: [] } as never)).to.not.throw();
    expect(() => new AccessControl({ roles: {} } as never)).to.not.throw();
  });
});

describe('audit log, in detail', () => {
  const quick = { batch: { rows: 1, maxWaitMs: 1 } };

  it('stores each event as a row: a unique id per log, the time, empty purpose and target and {} details by default', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink, ...quick });
    const before = new Date().toISOString();
    audit.record({ type: 'export.request', actor: 'alice', outcome: 'ok' });
    audit.record({ type: 'export.request', actor: 'bob', purpose: 'ticket 4711', target: 'bookings', outcome: 'ok', details: { rows: 3 } });
    await audit.flush();
    const [first, second] = sink.rows;
    expect(first).to.deep.include({ type: 'export.request', actor: 'alice', purpose: '', target: '', outcome: 'ok', details: '{}' });
    expect(second).to.deep.include({ actor: 'bob', purpose: 'ticket 4711', target: 'bookings', details: '{"rows":3}' });
    expect(first!.at >= before && first!.at <= new Date().toISOString()).to.equal(true);
    expect(first!.at).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(first!.id).to.match(/^[A-Za-z0-9_-]{8}-1$/);
    expect(second!.id).to.equal(first!.id.replace(/-1$/, '-2'));
    const other = new AuditLog({ sink: new MemorySink<AuditRow>(), ...quick });
    other.record({ type: 'x', actor: 'a', outcome: 'ok' });
    await other.close();
    await audit.close();
    expect(sink.closed).to.equal(1);
  });

  it('refuses events beyond maxPending waiting behind a stuck sink with a retriable error, and writes every event it took', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    sink.gate = () => gate;
    const audit = new AuditLog({ sink, maxPending: 2, batch: { rows: 1, maxWaitMs: 1 } });
    audit.record({ type: 't', actor: 'a', target: '1', outcome: 'ok' });
    await until(() => sink.writes.length === 1, 5000, 'the first write');
    // The pipeline takes events up to its in-flight budget; past it, two may wait.
    let taken = 1;
    let backlog: TributaryError | undefined;
    try {
      for (; taken < 100_000; taken++) audit.record({ type: 't', actor: 'a', target: String(taken + 1), outcome: 'ok' });
    } catch (error) {
      backlog = error as TributaryError;
    }
    expect(backlog).to.be.instanceOf(TributaryError);
    expect([backlog!.message, backlog!.code, backlog!.retriable]).to.deep.equal(['audit log has 2 events waiting to be written', 'AUDIT_BACKLOG', true]);
    open();
    await audit.close();
    expect(sink.rows.map((r) => r.target)).to.deep.equal(Array.from({ length: taken }, (_, i) => String(i + 1)));
    expect(() => new AuditLog({ sink, maxPending: 0 })).to.throw(ConfigError, 'maxPending must be an integer >= 1, got 0');
    expect(() => new AuditLog({ sink: {} as never })).to.throw(ConfigError, 'sink is required: where the audit rows are written');
    expect(() => new AuditLog(undefined as never)).to.throw(ConfigError, 'sink is required');
  });

  it('writes rows the sink refuses as malformed to its dead letters when given them, and keeps going', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.value.target === 'bad')) throw new SinkError('Cannot parse input', { rowsAtFault: true });
    };
    const deadLetters = new MemorySink<DeadLetter>('audit-dead');
    const audit = new AuditLog({ sink, deadLetters, ...quick });
    audit.record({ type: 't', actor: 'a', target: 'bad', outcome: 'ok' });
    audit.record({ type: 't', actor: 'a', target: 'good', outcome: 'ok' });
    await audit.flush();
    expect(sink.rows.map((r) => r.target)).to.deep.equal(['good']);
    expect(deadLetters.rows).to.have.length(1);
    await audit.close();
  });

  it('fails every waiting flush, and each later record and flush, once a row cannot be stored', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.gate = async () => {
      throw new SinkError('Cannot parse input', { rowsAtFault: true });
    };
    const audit = new AuditLog({ sink, ...quick });
    audit.record({ type: 't', actor: 'a', target: 'x', outcome: 'ok' });
    const waiting = [audit.flush(), audit.flush()].map((p) => p.then(() => 'resolved', (e: Error) => e.message));
    expect(await Promise.all(waiting)).to.deep.equal(['the audit sink refused 1 row(s) as malformed: Cannot parse input', 'the audit sink refused 1 row(s) as malformed: Cannot parse input']);
    expect(await audit.flush().then(() => 'resolved', (e: Error) => e.message)).to.equal('the audit sink refused 1 row(s) as malformed: Cannot parse input');
    const failed = thrownBy(() => audit.record({ type: 't', actor: 'a', outcome: 'ok' }));
    expect([failed?.message, failed?.code]).to.deep.equal(['audit log failed: the audit sink refused 1 row(s) as malformed: Cannot parse input', 'AUDIT_FAILED']);
    expect(failed?.cause).to.be.instanceOf(SinkError);
  });

  it('flushes at once when nothing is waiting, and is closed for good after close', async () => {
    const audit = new AuditLog({ sink: new MemorySink<AuditRow>(), ...quick });
    await audit.flush();
    await audit[Symbol.asyncDispose]();
    const closed = thrownBy(() => audit.record({ type: 't', actor: 'a', outcome: 'ok' }));
    expect([closed?.message, closed?.code]).to.deep.equal(['audit log is closed', 'STOPPED']);
  });

  it('records key rotations until unsubscribed, and pipeline starts and stops', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink, ...quick });
    const keyring = new Keyring({ keys: [{ id: 'k1', key: randomBytes(32) }] });
    const stop = audit.watchKeyring(keyring, 'bookings-ring');
    keyring.rotate({ id: 'k2', key: randomBytes(32) });
    stop();
    keyring.rotate({ id: 'k3', key: randomBytes(32) });
    audit.watchKeyring(new Keyring({ keys: [{ id: 'a', key: randomBytes(32) }] }));
    const lifecycle = audit.lifecycle();
    lifecycle({ type: 'start', pipeline: 'p', details: { source: 's' } });
    lifecycle({ type: 'stop', pipeline: 'p', error: 'SINK', details: { read: 1 } });
    await audit.close();
    expect(sink.rows.map(({ type, actor, target, outcome, details }) => ({ type, actor, target, outcome, details }))).to.deep.equal([
      { type: 'key.rotate', actor: 'system', target: 'bookings-ring', outcome: 'ok', details: '{"primary":"k2","previous":"k1"}' },
      { type: 'pipeline.start', actor: 'system', target: 'p', outcome: 'ok', details: '{"source":"s"}' },
      { type: 'pipeline.stop', actor: 'system', target: 'p', outcome: 'SINK', details: '{"read":1}' },
    ]);
    const named = new AuditLog({ sink: new MemorySink<AuditRow>(), ...quick });
    const ring = new Keyring({ keys: [{ id: 'a', key: randomBytes(32) }] });
    named.watchKeyring(ring);
    ring.rotate({ id: 'b', key: randomBytes(32) });
    await named.flush();
    await named.close();
  });

  it('auditAccess records denials, and grants only when asked, with the anonymous actor for no key', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink, ...quick });
    const decision = (d: Partial<AccessDecision>): AccessDecision => ({ allowed: false, permission: 'admin', keyId: undefined, outcome: 'UNAUTHENTICATED', at: 0, ...d });
    const denials = auditAccess(audit);
    denials(decision({}));
    denials(decision({ allowed: true, keyId: 'ops', outcome: 'ok' }));
    const everything = auditAccess(audit, { allowed: true });
    everything(decision({ allowed: true, keyId: 'ops', outcome: 'ok', context: 'GET /metrics', permission: 'metrics:read' }));
    everything(decision({ keyId: 'acme', outcome: 'FORBIDDEN' }));
    await audit.close();
    expect(sink.rows.map(({ type, actor, purpose, target, outcome }) => ({ type, actor, purpose, target, outcome }))).to.deep.equal([
      { type: 'access.denied', actor: 'anonymous', purpose: '', target: 'admin', outcome: 'UNAUTHENTICATED' },
      { type: 'access.allowed', actor: 'ops', purpose: 'GET /metrics', target: 'metrics:read', outcome: 'ok' },
      { type: 'access.denied', actor: 'acme', purpose: '', target: 'admin', outcome: 'FORBIDDEN' },
    ]);
  });
});
