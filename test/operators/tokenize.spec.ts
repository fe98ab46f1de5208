import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../lib/errors';
import { Keyring } from '../../lib/keyring';
import { tokenize, tokenOf, type TokenizeOptions } from '../../operators/tokenize';
import { Recorder } from '../helpers';

const ring = (key = randomBytes(32), id = 't1') => new Keyring({ keys: [{ id, key }] });

function runSync(options: TokenizeOptions, values: unknown[]) {
  const recorder = new Recorder();
  const out: any[] = [];
  from(values.map((v) => recorder.envelope(v))).pipe(tokenize(options)).subscribe((e) => out.push(e.value));
  return { out, recorder };
}

describe('tokenize', () => {
  it('replaces values by <keyId>:<HMAC>, normalized, the same for the same customer, into `to` when asked', async () => {
    const keyring = ring();
    const recorder = new Recorder();
    const input = [
      { email: ' Ada@Example.com', phone: '+44 20 7946 0000', passengers: [{ doc: 'P1' }, { doc: 'P2' }] },
      { email: 'ada@example.com ', phone: '+44-20-7946-0000', passengers: [] },
    ].map((v) => recorder.envelope(v));
    input[0]!.raw = '{"mail":" Ada@Example.com"}';
    const out = await lastValueFrom(
      from(input).pipe(
        tokenize<any>({
          keyring,
          fields: {
            email: { scope: 'customer-email', normalize: 'email', to: 'customer_token' },
            phone: { scope: 'phone', normalize: 'digits' },
            'passengers.*.doc': { scope: 'passport' },
          },
        }),
        toArray(),
      ),
    );
    const [a, b] = out.map((e) => e.value);
    expect(a.customer_token).to.match(/^t1:[A-Za-z0-9_-]{43}$/);
    expect(a.customer_token).to.equal(b.customer_token);
    expect(a.email).to.equal(' Ada@Example.com'); // `to` leaves the source for a later step (encrypt) to deal with
    expect(a.phone).to.equal(b.phone).and.to.equal(tokenOf(keyring, 't1', 'phone', '442079460000'));
    expect(a.customer_token).to.equal(tokenOf(keyring, 't1', 'customer-email', 'ADA@example.com', 'email'));
    expect(a.passengers[0].doc).to.equal(tokenOf(keyring, 't1', 'passport', 'P1'));
    expect(a.passengers[0].doc).not.to.equal(a.passengers[1].doc);
    expect(out[0]!.raw).to.equal(undefined);
  });

  it('gives different tokens for different scopes of the same value', () => {
    const keyring = ring();
    expect(tokenOf(keyring, 't1', 'email', 'x')).not.to.equal(tokenOf(keyring, 't1', 'phone', 'x'));
  });

  it('dead-letters a record whose field is not text or a number, with the tokenized fields redacted', () => {
    const { out, recorder } = runSync({ keyring: ring(), fields: { email: { scope: 'e' }, phone: { scope: 'p' } } }, [{ email: 'ada@example.com', phone: { n: '0207' } }]);
    expect(out).to.deep.equal([]);
    expect(recorder.rejected.map((r) => [r.failure.stage, r.failure.code, r.failure.path, r.failure.message])).to.deep.equal([
      ['tokenize', 'TOKENIZE_TYPE', '/phone', 'phone: expected text or a number to tokenize, got object'],
    ]);
    expect(JSON.parse(recorder.rejected[0]!.envelope.raw as string)).to.deep.equal({ email: '[redacted]', phone: '[redacted]' });
  });

  it('property: tokens are deterministic per key and differ across keys', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.oneof(fc.string(), fc.integer()), (k1, k2, value) => {
        fc.pre(Buffer.compare(Buffer.from(k1), Buffer.from(k2)) !== 0);
        const options = (key: Uint8Array): TokenizeOptions => ({ keyring: new Keyring({ keys: [{ id: 'k', key }] }), fields: { v: { scope: 's' } } });
        const once = runSync(options(k1), [{ v: value }]).out[0].v;
        const again = runSync(options(k1), [{ v: value }]).out[0].v;
        const other = runSync(options(k2), [{ v: value }]).out[0].v;
        expect(once).to.equal(again);
        expect(once).not.to.equal(other);
        expect(once).not.to.contain(String(value).length > 3 ? String(value) : '\u0000');
      }),
      { numRuns: 300 },
    );
  });

  it('property: distinct values give distinct tokens under one key (counting distinct customers works)', () => {
    const keyring = ring();
    fc.assert(
      fc.property(fc.uniqueArray(fc.string(), { minLength: 2, maxLength: 50 }), (values) => {
        const { out } = runSync({ keyring, fields: { v: { scope: 's' } } }, values.map((v) => ({ v })));
        expect(new Set(out.map((o) => o.v)).size).to.equal(values.length);
      }),
    );
  });

  it('refuses bad options at construction, with the rule', () => {
    const keyring = ring();
    expect(() => tokenize({ keyring, keyId: 'nope', fields: { a: { scope: 's' } } })).to.throw(ConfigError, `keyId must be one of the keyring's ids (t1), got "nope"`);
    expect(() => tokenize({ keyring, fields: { a: { scope: '' } } })).to.throw(ConfigError, 'fields["a"].scope must be a non-empty string, got ""');
    expect(() => tokenize({ keyring, fields: { 'a.*': { scope: 's', to: 'b' } } })).to.throw(ConfigError, 'fields["a.*"].to is not allowed on a path with *: the token replaces each value in place');
    expect(() => tokenize({ keyring, fields: { a: { scope: 's', normalize: 'upper' as never } } })).to.throw(ConfigError, `fields["a"].normalize must be 'none', 'trim', 'email', 'digits' or a function, got "upper"`);
    expect(() => tokenize({ keyring, fields: {} })).to.throw(ConfigError, 'fields must be a non-empty array of field paths');
  });
});
