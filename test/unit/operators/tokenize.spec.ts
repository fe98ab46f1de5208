import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { MemorySubjectKeyStore, SubjectKeys, type SubjectKeyRecord } from '../../../lib/security/subjectKeys';
import { subjectTokenOf, subjectTokensOf, tokenize, tokenOf, type TokenizeOptions } from '../../../operators/tokenize';
import { Recorder } from '../../helpers';

const ring = (key = randomBytes(32), id = 't1') => new Keyring({ keys: [{ id, key }] });

function runSync(options: TokenizeOptions, values: unknown[]) {
  const recorder = new Recorder();
  const out: any[] = [];
  from(values.map((v) => recorder.envelope(v))).pipe(tokenize(options)).subscribe((e) => out.push(e.value));
  return { out, recorder };
}

/** Runs to completion, for operators that wait for keys. */
async function run(options: TokenizeOptions, values: unknown[], recorder = new Recorder()) {
  const out = await lastValueFrom(from(values.map((v) => recorder.envelope(v))).pipe(tokenize(options), toArray()));
  return { out: out.map((e) => e.value as any), envelopes: out, recorder };
}

/** The library's in-memory store, counting lookups and answering a little later, as a database would. */
class CountingStore extends MemorySubjectKeyStore {
  lookups = 0;
  override async findBySubjects(subjects: readonly string[]): Promise<SubjectKeyRecord[]> {
    this.lookups++;
    await new Promise((resolve) => setTimeout(resolve, 2));
    return super.findBySubjects(subjects);
  }
}

const subjectKeys = (store = new MemorySubjectKeyStore()) => new SubjectKeys({ keyring: ring(randomBytes(32), 'm1'), store });
const SUBJECT_TOKEN = /^st1:([A-Za-z0-9_-]{22}):[A-Za-z0-9_-]{43}$/;
/** A token without its prefix: the HMAC itself. */
const mac = (token: string) => token.slice(token.lastIndexOf(':') + 1);

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

  it('keeps a scope-keyed operator on the key it was built with: after a rotation new operators use the new primary, keyId pins the old one', () => {
    const keyring = ring(randomBytes(32), 't1');
    const fields = { email: { scope: 'customer-email', normalize: 'email' as const } };
    const before = tokenize<any>({ keyring, fields });
    keyring.rotate({ id: 't2', key: randomBytes(32) });
    const through = (operator: ReturnType<typeof tokenize<any>>) => {
      const out: any[] = [];
      from([new Recorder().envelope({ email: 'Ada@example.com' })]).pipe(operator).subscribe((e) => out.push(e.value.email));
      return out[0] as string;
    };
    const old = through(before);
    const fresh = through(tokenize<any>({ keyring, fields }));
    const pinned = through(tokenize<any>({ keyring, keyId: 't1', fields }));
    expect(old).to.match(/^t1:/).and.equal(tokenOf(keyring, 't1', 'customer-email', 'ada@example.com', 'email'));
    expect(fresh).to.match(/^t2:/).and.equal(tokenOf(keyring, 't2', 'customer-email', 'ada@example.com', 'email'));
    expect(pinned).to.equal(old);
    expect(fresh.slice(3)).not.to.equal(old.slice(3));
  });

  describe('with subject keys', () => {
    it('writes st1:<subjectKeyId>:<HMAC>, the same within a subject and scope, another for another subject or scope', async () => {
      const keys = subjectKeys();
      const recorder = new Recorder();
      const input = [
        { id: 1, customer: 'c-ada', email: ' Ada@Example.com', alt: 'ada@example.com', phone: '+44 20 7946 0000' },
        { id: 2, customer: 'c-bob', email: 'ada@example.com', alt: 'x', phone: '+44 20 7946 0000' },
        { id: 3, customer: 'c-ada', email: 'ada@example.com ', alt: 'y', phone: '+44-20-7946-0000' },
      ].map((v) => recorder.envelope(v));
      input[0]!.raw = '{"mail":" Ada@Example.com"}';
      const options: TokenizeOptions = {
        subjectKeys: keys,
        subject: 'customer',
        fields: { email: { scope: 'customer-email', normalize: 'email', to: 'email_token' }, alt: { scope: 'phone', normalize: 'email' }, phone: { scope: 'phone', normalize: 'digits' } },
      };
      const envelopes = await lastValueFrom(from(input).pipe(tokenize<any>(options), toArray()));
      const [ada, bob, ada2] = envelopes.map((e) => e.value);
      expect(envelopes.map((e) => e.value.id)).to.deep.equal([1, 2, 3]);
      const [adaKey] = await keys.keysOf('c-ada');
      const [bobKey] = await keys.keysOf('c-bob');
      expect(ada.email_token).to.match(SUBJECT_TOKEN);
      expect(SUBJECT_TOKEN.exec(ada.email_token)![1]).to.equal(adaKey!.keyId);
      expect(SUBJECT_TOKEN.exec(bob.email_token)![1]).to.equal(bobKey!.keyId);
      expect(ada.email).to.equal(' Ada@Example.com');
      expect(ada.customer).to.equal('c-ada');
      // One subject: deterministic per value and scope, so per-customer counts and joins work.
      expect(ada.email_token).to.equal(ada2.email_token);
      expect(ada.phone).to.equal(ada2.phone);
      // Another subject, the same value: another token, not only another prefix. Another scope, the same value: another token.
      expect(mac(bob.email_token)).not.to.equal(mac(ada.email_token));
      expect(mac(bob.phone)).not.to.equal(mac(ada.phone));
      expect(mac(ada.alt)).not.to.equal(mac(ada.email_token));
      expect(ada.alt).to.equal(await subjectTokenOf(keys, adaKey!.keyId, 'phone', 'ada@example.com'));
      // What looking the subject up recomputes, through a fresh process reading the same store.
      const fresh = new SubjectKeys({ keyring: keys.keyring, store: keys.store });
      expect(await subjectTokensOf(fresh, 'c-ada', 'customer-email', 'ADA@example.com', 'email')).to.deep.equal([ada.email_token]);
      expect(await subjectTokenOf(fresh, adaKey!.keyId, 'phone', '442079460000')).to.equal(ada.phone);
      expect(await subjectTokensOf(fresh, 'c-nobody', 'phone', '442079460000')).to.deep.equal([]);
      expect(await fresh.keysOf('c-nobody'), 'looking up creates no key').to.deep.equal([]);
      expect(envelopes.map((e) => e.meta.subject)).to.deep.equal(['c-ada', 'c-bob', 'c-ada']);
      expect(envelopes[0]!.raw).to.equal(undefined);
    });

    it('looks the keys of many records up at once', async () => {
      const store = new CountingStore();
      const values = Array.from({ length: 200 }, (_, i) => ({ customer: `c${i % 7}`, email: `user${i % 3}@example.com` }));
      const { out } = await run({ subjectKeys: subjectKeys(store), subject: 'customer', fields: { email: { scope: 'e' } } }, values);
      expect(out.map((o) => o.customer)).to.deep.equal(values.map((v) => v.customer));
      expect(store.lookups, 'one lookup for the first record, one for all held behind it').to.be.at.most(2);
      expect(new Set(out.map((o) => o.email)).size, '7 subjects × 3 e-mails').to.equal(21);
    });

    it('dead-letters a record without a subject, or with a value it cannot tokenize, its tokenized fields redacted', async () => {
      const recorder = new Recorder();
      const values = [
        { customer: 'c1', email: 'ada@example.com', phone: '0207' },
        { email: 'ada@example.com', phone: '0207' },
        { customer: '', email: 'ada@example.com', phone: '0207' },
        { customer: { id: 'c1' }, email: 'ada@example.com', phone: '0207' },
        { customer: 'c1', email: 'ada@example.com', phone: ['0207'] },
      ];
      const envelopes = values.map((v) => recorder.envelope(v));
      for (const e of envelopes) e.raw = JSON.stringify(e.value);
      const out = await lastValueFrom(from(envelopes).pipe(tokenize<any>({ subjectKeys: subjectKeys(), subject: 'customer', fields: { email: { scope: 'e', to: 'token' }, phone: { scope: 'p' } } }), toArray()));
      expect(out.map((e) => e.value.token)).to.have.length(1);
      expect(recorder.rejected.map((r) => [r.failure.stage, r.failure.code, r.failure.path])).to.deep.equal([
        ['tokenize', 'TOKENIZE_SUBJECT', '/customer'],
        ['tokenize', 'TOKENIZE_SUBJECT', '/customer'],
        ['tokenize', 'TOKENIZE_SUBJECT', '/customer'],
        ['tokenize', 'TOKENIZE_TYPE', '/phone'],
      ]);
      expect(recorder.rejected[0]!.failure.message).to.equal('the record has no data subject at customer');
      for (const r of recorder.rejected) {
        expect(r.envelope.raw).not.to.contain('ada@example.com').and.not.to.contain('0207');
        expect(JSON.parse(r.envelope.raw as string)).to.deep.include({ email: '[redacted]', phone: '[redacted]' });
      }
    });

    it('property: deterministic per subject and scope, different across subjects and scopes, never a scope-keyed token', async () => {
      const keys = subjectKeys();
      const keyring = ring(randomBytes(32), 'st1'); // even a token keyring key named st1 makes <id>:<HMAC>, one colon
      await fc.assert(
        fc.asyncProperty(fc.tuple(fc.string({ minLength: 1 }), fc.string({ minLength: 1 })), fc.tuple(fc.string({ minLength: 1 }), fc.string({ minLength: 1 })), fc.oneof(fc.string(), fc.integer()), async ([s1, s2], [scope1, scope2], value) => {
          fc.pre(s1 !== s2 && scope1 !== scope2);
          const options = (scope: string): TokenizeOptions => ({ subjectKeys: keys, subject: 'who', fields: { v: { scope } } });
          const { out } = await run(options(scope1), [{ who: s1, v: value }, { who: s2, v: value }, { who: s1, v: value }]);
          const [again] = (await run(options(scope1), [{ who: s1, v: value }])).out;
          const [otherScope] = (await run(options(scope2), [{ who: s1, v: value }])).out;
          expect(out[0].v).to.match(SUBJECT_TOKEN);
          expect(out[0].v).to.equal(out[2].v).and.equal(again.v);
          expect(mac(out[0].v)).not.to.equal(mac(out[1].v));
          expect(mac(out[0].v)).not.to.equal(mac(otherScope.v));
          const scoped = tokenOf(keyring, 'st1', scope1, String(value));
          expect(scoped.split(':')).to.have.length(2);
          expect(out[0].v.split(':')).to.have.length(3);
          expect(out[0].v).not.to.contain(String(value).length > 3 ? String(value) : '\u0000');
        }),
        { numRuns: 100 },
      );
    });

    it('refuses bad options at construction, with the rule', () => {
      const keys = subjectKeys();
      const fields = { email: { scope: 'e' } };
      expect(() => tokenize({ subjectKeys: keys, fields })).to.throw(ConfigError, 'subject must be the path of the field naming');
      expect(() => tokenize({ keyring: ring(), subject: 'customer', fields })).to.throw(ConfigError, 'subject needs subjectKeys');
      expect(() => tokenize({ subjectKeys: keys, subject: 'customer', keyring: ring(), fields })).to.throw(ConfigError, 'keyring and keyId make one key per scope');
      expect(() => tokenize({ subjectKeys: {} as SubjectKeys, subject: 'customer', fields })).to.throw(ConfigError, 'subjectKeys must be a SubjectKeys');
      expect(() => tokenize({ subjectKeys: keys, subject: 'email', fields })).to.throw(ConfigError, 'subject email is among the tokenized fields: erasure could not find the subject');
      expect(() => tokenize({ subjectKeys: keys, subject: 'customer', fields: { email: { scope: 'e', to: 'customer' } } })).to.throw(ConfigError, 'subject customer is among the tokenized fields');
      expect(() => tokenize({ subjectKeys: keys, subject: 'p.customer', fields: { 'p': { scope: 'e' } } })).to.throw(ConfigError, 'subject p.customer is among the tokenized fields');
      expect(() => tokenize({ subjectKeys: keys, subject: 'customer', pseudonymize: true, fields } as TokenizeOptions)).to.throw(ConfigError, 'pseudonymize is an option of encrypt');
      // The source of a `to` field stays in place: it may name the subject.
      expect(() => tokenize({ subjectKeys: keys, subject: 'email', fields: { email: { scope: 'e', to: 'email_token' } } })).not.to.throw();
    });
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
