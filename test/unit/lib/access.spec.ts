import { expect } from 'chai';
import type { IncomingMessage } from 'node:http';
import { AccessControl, bearerToken, presentedKey, type AccessDecision } from '../../../lib/security/access';
import { AccessDeniedError, ConfigError } from '../../../lib/errors';

describe('AccessControl', () => {
  const roles = { vendor: ['webhook:post:acme'], admin: ['admin', 'metrics:read'], analyst: ['decrypt:*'] };
  const acme = AccessControl.issueKey('acme', ['vendor']);
  const ops = AccessControl.issueKey('ops', ['admin']);
  const analyst = AccessControl.issueKey('ana', ['analyst']);

  it('allows what a role grants and refuses the rest, reporting every decision', () => {
    const decisions: AccessDecision[] = [];
    const access = new AccessControl({ roles, keys: [acme.record, ops.record, analyst.record], onDecision: (d) => decisions.push(d) });
    expect(access.check(acme.token, 'webhook:post:acme', '/hooks/acme')).to.equal('acme');
    expect(() => access.check(acme.token, 'webhook:post:globex')).to.throw(AccessDeniedError, 'lacks permission').with.property('code', 'FORBIDDEN');
    expect(() => access.check(acme.token, 'admin')).to.throw(AccessDeniedError).with.property('keyId', 'acme');
    expect(access.decide(ops.token, 'metrics:read').allowed).to.equal(true);
    expect(access.decide(analyst.token, 'decrypt:passenger.email').allowed).to.equal(true);
    expect(access.decide(analyst.token, 'admin').allowed).to.equal(false);
    expect(decisions.map((d) => d.outcome)).to.deep.equal(['ok', 'FORBIDDEN', 'FORBIDDEN', 'ok', 'ok', 'FORBIDDEN']);
    expect(decisions[0]).to.include({ keyId: 'acme', permission: 'webhook:post:acme', context: '/hooks/acme' });
  });

  it('refuses missing, malformed, unknown and wrong-secret keys as unauthenticated', () => {
    const access = new AccessControl({ roles, keys: [acme.record] });
    const wrongSecret = `acme.${'A'.repeat(43)}`;
    for (const token of [undefined, '', 'acme', '.x', 'nobody.secret', wrongSecret, ops.token]) {
      const decision = access.decide(token, 'webhook:post:acme');
      expect(decision, String(token)).to.include({ allowed: false, outcome: 'UNAUTHENTICATED' });
    }
    expect(() => access.check(undefined, 'admin')).to.throw(AccessDeniedError, 'valid API key').with.property('code', 'UNAUTHENTICATED');
  });

  it('keeps only a hash of the secret', () => {
    const secret = acme.token.split('.')[1]!;
    expect(JSON.stringify(acme.record)).not.to.include(secret);
    expect(acme.record.secretHash).to.equal(AccessControl.hashSecret(secret));
  });

  it('matches * as one segment, and a trailing * as the rest', () => {
    const access = new AccessControl({ roles: { mid: ['webhook:*:acme'], tail: ['webhook:*'] }, keys: [
      AccessControl.issueKey('m', ['mid']).record,
    ] });
    const mid = AccessControl.issueKey('m2', ['mid']);
    const tail = AccessControl.issueKey('t', ['tail']);
    const both = new AccessControl({ roles: { mid: ['webhook:*:acme'], tail: ['webhook:*'] }, keys: [mid.record, tail.record] });
    expect(both.decide(mid.token, 'webhook:post:acme').allowed).to.equal(true);
    expect(both.decide(mid.token, 'webhook:post:sub:acme').allowed).to.equal(false);
    expect(both.decide(mid.token, 'webhook:post:globex').allowed).to.equal(false);
    expect(both.decide(tail.token, 'webhook:post:sub:acme').allowed).to.equal(true);
    expect(both.decide(tail.token, 'admin').allowed).to.equal(false);
    expect(access).to.be.instanceOf(AccessControl);
  });

  it('rejects bad configuration with the rule', () => {
    const key = acme.record;
    expect(() => new AccessControl({ roles: {}, keys: [key] })).to.throw(ConfigError, 'unknown role "vendor"');
    expect(() => new AccessControl({ roles, keys: [key, key] })).to.throw(ConfigError, 'appears twice');
    expect(() => new AccessControl({ roles, keys: [{ ...key, secretHash: 'abc' }] })).to.throw(ConfigError, '64 hex digits');
    expect(() => new AccessControl({ roles, keys: [{ ...key, id: 'a.b' }] })).to.throw(ConfigError, 'key id must match');
    expect(() => new AccessControl({ roles: { r: ['web*'] }, keys: [] })).to.throw(ConfigError, 'whole segment');
    expect(() => new AccessControl({ roles: { r: ['a b'] }, keys: [] })).to.throw(ConfigError, 'permission patterns');
  });
});

describe('the API key a request presents', () => {
  const request = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;

  it('reads a Bearer token whatever the case of the scheme, and nothing from other schemes or extra words', () => {
    expect(bearerToken('Bearer k1.s')).to.equal('k1.s');
    expect(bearerToken('bearer k1.s')).to.equal('k1.s');
    expect(bearerToken('BEARER \tk1.s  ')).to.equal('k1.s');
    expect(bearerToken('Bearer')).to.equal(undefined);
    expect(bearerToken('Bearer ')).to.equal(undefined);
    expect(bearerToken('Bearer a b')).to.equal(undefined);
    expect(bearerToken('Basic a2V5OnNlY3JldA==')).to.equal(undefined);
    expect(bearerToken('XBearer k')).to.equal(undefined);
    expect(bearerToken(undefined)).to.equal(undefined);
  });

  it('takes the Bearer token first, else X-API-Key', () => {
    expect(presentedKey(request({ authorization: 'Bearer a', 'x-api-key': 'b' }))).to.equal('a');
    expect(presentedKey(request({ authorization: 'Basic x', 'x-api-key': 'b' }))).to.equal('b');
    expect(presentedKey(request({ 'x-api-key': 'b' }))).to.equal('b');
    expect(presentedKey(request({}))).to.equal(undefined);
  });
});
