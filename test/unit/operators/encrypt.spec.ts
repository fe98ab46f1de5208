import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { from, lastValueFrom, toArray, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../../../lib/envelope';
import { AccessControl } from '../../../lib/security/access';
import { ConfigError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { decrypt } from '../../../operators/decrypt';
import { encrypt } from '../../../operators/encrypt';
import { Recorder, tempDir, withoutCiphertexts } from '../../helpers';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const keyring = (primary = 'k1') => new Keyring({ keys: [{ id: 'k1', key: k1 }, { id: 'k2', key: k2 }], primary });
const FIELDS = ['email', 'card.holder', 'passengers.*.name'];
const reading = AccessControl.issueKey('support', ['reader']);
/** Who decrypts in these tests: a key allowed every field. */
const READER = { access: new AccessControl({ roles: { reader: ['decrypt:*'] }, keys: [reading.record] }), principal: reading.token, purpose: 'tests' };

async function through<T>(operator: OperatorFunction<Envelope<T>, Envelope<T>>, values: T[], recorder = new Recorder()) {
  const input = values.map((value) => recorder.envelope(value));
  input.forEach((e, i) => (e.raw = JSON.stringify(values[i])));
  const out = await lastValueFrom(from(input).pipe(operator, toArray()));
  return { out, values: out.map((e) => e.value), recorder };
}

const booking = () => ({
  booking_id: 'B-1',
  email: 'ada@example.com',
  card: { holder: 'Ada Lovelace', brand: 'VISA' },
  passengers: [{ name: 'Ada' }, { name: 'Charles', age: 40 }],
  total: '10.00',
});

describe('encrypt / decrypt', () => {
  it('encrypts each chosen value to v1:<keyId>:<base64>, leaves the rest, and decrypts back', async () => {
    const { values, out } = await through(encrypt({ keyring: keyring(), fields: FIELDS, recordId: 'booking_id' }), [booking()]);
    const e = values[0]!;
    for (const text of [e.email, e.card.holder, e.passengers[0]!.name, e.passengers[1]!.name]) expect(text).to.match(/^v1:k1:[A-Za-z0-9+/]+=*$/);
    expect(e).to.deep.include({ booking_id: 'B-1', total: '10.00' });
    expect(e.card.brand).to.equal('VISA');
    expect(e.passengers[1]!.age).to.equal(40);
    expect(withoutCiphertexts(e)).not.to.contain('Ada').and.not.to.contain('Charles');
    expect(out[0]!.raw, 'the received payload is dropped once encrypted').to.equal(undefined);
    const back = await through(decrypt({ keyring: keyring(), fields: FIELDS, recordId: 'booking_id', ...READER }), values);
    expect(back.values).to.deep.equal([booking()]);
  });

  it('uses a fresh IV for every value: the same plaintext twice gives two ciphertexts', async () => {
    const { values } = await through(encrypt({ keyring: keyring(), fields: ['email'], recordId: 'booking_id' }), [booking(), booking()]);
    expect(values[0]!.email).not.to.equal(values[1]!.email);
    const ivs = new Set<string>();
    const many = await through(encrypt({ keyring: keyring(), fields: ['email'], recordId: 'booking_id' }), Array.from({ length: 20_000 }, booking));
    for (const v of many.values) ivs.add(Buffer.from(v.email.split(':')[2]!, 'base64').subarray(0, 12).toString('hex'));
    expect(ivs.size, 'IVs across more than two refills of the IV buffer').to.equal(20_000);
  });

  it('binds each ciphertext to its record id and field: moved elsewhere, it does not decrypt', async () => {
    const { values } = await through(encrypt({ keyring: keyring(), fields: ['email', 'phone'], recordId: 'booking_id' }), [
      { booking_id: 'A', email: 'a@x', phone: '1' },
      { booking_id: 'B', email: 'b@x', phone: '2' },
    ]);
    const [a, b] = values as { booking_id: string; email: string; phone: string }[];
    const swappedRecord = { booking_id: 'B', email: a!.email, phone: b!.phone };
    const swappedField = { booking_id: 'A', email: a!.phone, phone: a!.email };
    const altered = { ...b!, email: b!.email.slice(0, -6) + (b!.email.at(-6) === 'A' ? 'B' : 'A') + b!.email.slice(-5) };
    const { values: good, recorder } = await through(decrypt({ keyring: keyring(), fields: ['email', 'phone'], recordId: 'booking_id', ...READER }), [swappedRecord, swappedField, altered, b!]);
    expect(good).to.deep.equal([{ booking_id: 'B', email: 'b@x', phone: '2' }]);
    expect(recorder.rejected.map((r) => [r.failure.stage, r.failure.code, r.failure.path])).to.deep.equal([
      ['decrypt', 'DECRYPT_FAILED', '/email'],
      ['decrypt', 'DECRYPT_FAILED', '/email'],
      ['decrypt', 'DECRYPT_FAILED', '/email'],
    ]);
    // A refused record is left as it came: its other fields are still encrypted.
    const refused = recorder.rejected[1]!.envelope.value as Record<string, string>;
    expect(refused.phone).to.match(/^v1:k1:/);
  });

  it('decrypts a record whole or not at all: no plaintext of a partly decryptable record reaches the dead letter', async () => {
    const { values } = await through(encrypt({ keyring: keyring(), fields: ['a', 'b'], recordId: 'id' }), [{ id: 'r', a: 'secret-a', b: 'secret-b' }]);
    const broken = { ...values[0]!, b: 'v1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' };
    const { recorder } = await through(decrypt({ keyring: keyring(), fields: ['a', 'b'], recordId: 'id', ...READER }), [broken]);
    expect(recorder.rejected).to.have.length(1);
    expect(JSON.stringify(recorder.rejected[0]!.envelope.value)).not.to.contain('secret-a');
    expect(recorder.rejected[0]!.envelope.raw).not.to.contain('secret-a');
  });

  it('rotates keys: the new primary encrypts, old ciphertexts still decrypt, unknown key ids are named', async () => {
    const ring = keyring('k1');
    const enc = encrypt<any>({ keyring: ring, fields: ['email'], recordId: 'booking_id' });
    const before = (await through(enc, [booking()])).values[0]!;
    const k3 = randomBytes(32);
    ring.rotate({ id: 'k3', key: k3 });
    const after = (await through(enc, [booking()])).values[0]!;
    expect(before.email).to.match(/^v1:k1:/);
    expect(after.email).to.match(/^v1:k3:/);
    const { values } = await through<any>(decrypt({ keyring: ring, fields: ["email"], recordId: "booking_id", ...READER }), [structuredClone(before), structuredClone(after)]);
    expect(values.map((v) => v.email)).to.deep.equal(['ada@example.com', 'ada@example.com']);
    const { recorder } = await through(decrypt({ keyring: keyring(), fields: ['email'], recordId: 'booking_id', ...READER }), [after]);
    expect(recorder.rejected.map((r) => [r.failure.code, r.failure.message])).to.deep.equal([['DECRYPT_UNKNOWN_KEY', 'email was encrypted with key "k3", which the keyring does not hold']]);
  });

  it('dead-letters a record it cannot encrypt with every chosen field redacted, never the plaintext', async () => {
    const recorder = new Recorder();
    const noId = recorder.envelope<any>({ email: 'ada@example.com', passengers: [{ name: 'Ada' }] });
    noId.raw = '{"mail":"ada@example.com","pax":["Ada"]}'; // vendor names: not what the fields say
    const bigint = recorder.envelope<any>({ booking_id: 'B', email: 'ada@example.com', card: { holder: 10n } });
    bigint.raw = 'vendor payload with ada@example.com';
    await lastValueFrom(from([noId, bigint]).pipe(encrypt({ keyring: keyring(), fields: FIELDS, recordId: 'booking_id' }), toArray()));
    expect(recorder.rejected.map((r) => [r.failure.stage, r.failure.code, r.failure.path])).to.deep.equal([
      ['encrypt', 'ENCRYPT_RECORD_ID', ''],
      ['encrypt', 'ENCRYPT_FAILED', '/card/holder'],
    ]);
    expect(JSON.parse(recorder.rejected[0]!.envelope.raw as string)).to.deep.equal({ email: '[redacted]', passengers: [{ name: '[redacted]' }] });
    for (const { envelope, failure } of recorder.rejected) {
      expect(envelope.raw).not.to.contain('ada@').and.not.to.contain('Ada');
      expect(failure.message).not.to.contain('ada@');
    }
  });

  it('passes absent and null fields, numbers and objects through the round trip with their types', async () => {
    const record = { id: 7, a: null, b: 12.5, c: { nested: [1, 'x'] }, d: true };
    const fields = ['a', 'b', 'c', 'd', 'missing'];
    const { values } = await through(encrypt({ keyring: keyring(), fields, recordId: 'id' }), [structuredClone(record)]);
    expect(values[0]!.a).to.equal(null);
    expect(values[0]).not.to.have.property('missing');
    const back = await through(decrypt({ keyring: keyring(), fields, recordId: 'id', ...READER }), values);
    expect(back.values).to.deep.equal([record]);
  });

  it('property: decrypt ∘ encrypt is the identity, for any JSON values, record ids and keys', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.string({ minLength: 1 }),
        fc.dictionary(fc.string().filter((k) => k !== 'id' && !k.includes('.') && !k.includes('*') && k !== '' && k !== '__proto__'), fc.jsonValue(), { maxKeys: 6 }),
        (key, id, fields) => {
          const ring = new Keyring({ keys: [{ id: 'p', key }] });
          const record = { id, ...(JSON.parse(JSON.stringify(fields)) as Record<string, unknown>) };
          const expected = structuredClone(record);
          const names = Object.keys(fields);
          if (names.length === 0) return;
          const recorder = new Recorder();
          let result: unknown;
          let rejected = 0;
          const options = { keyring: ring, fields: names, recordId: 'id' };
          from([recorder.envelope(record)])
            .pipe(encrypt(options), decrypt({ ...options, ...READER }))
            .subscribe((e) => (result = e.value));
          rejected = recorder.rejected.length;
          expect(rejected).to.equal(0);
          expect(result).to.deep.equal(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses bad options and bad keys at construction, with the rule', () => {
    const ring = keyring();
    expect(() => encrypt({ keyring: {} as Keyring, fields: ['a'], recordId: 'id' })).to.throw(ConfigError, 'keyring must be a Keyring (Keyring.fromEnv, Keyring.fromFile, Keyring.load or new Keyring)');
    expect(() => encrypt({ keyring: ring, fields: [], recordId: 'id' })).to.throw(ConfigError, 'fields must be a non-empty array of field paths');
    expect(() => encrypt({ keyring: ring, fields: ['a..b'], recordId: 'id' })).to.throw(ConfigError, 'fields[0] must be dotted names, with * for every array element, got "a..b"');
    expect(() => encrypt({ keyring: ring, fields: ['a'], recordId: '' })).to.throw(ConfigError, /^recordId must be the path of a field/);
    expect(() => encrypt({ keyring: ring, fields: ['ref', 'a'], recordId: 'ref' })).to.throw(ConfigError, 'recordId ref is among the encrypted fields: decrypt would not find it');
    expect(() => new Keyring({ keys: [] })).to.throw(ConfigError, 'keyring.keys must hold at least one key');
    expect(() => new Keyring({ keys: [{ id: 'a:b', key: k1 }] })).to.throw(ConfigError, 'keyring key ids must be 1-64 letters, digits, _ or -, got "a:b"');
    expect(() => new Keyring({ keys: [{ id: 'a', key: k1.subarray(0, 16) }] })).to.throw(ConfigError, 'keyring key a must be 32 bytes, got 16');
    expect(() => new Keyring({ keys: [{ id: 'a', key: k1 }], primary: 'b' })).to.throw(ConfigError, 'keyring.primary must be the id of one of its keys (a), got "b"');
    expect(() => new Keyring({ keys: [{ id: 'a', key: k1 }, { id: 'a', key: k2 }] })).to.throw(ConfigError, 'keyring key id a is used twice');
  });

  describe('key providers', () => {
    const document = JSON.stringify({ primary: 'k2', keys: { k1: k1.toString('base64'), k2: k2.toString('base64') } });

    it('reads a keyring from the environment and from a file; both decrypt what the other encrypted', async () => {
      const fromEnv = Keyring.fromEnv('TEST_KEYRING', { TEST_KEYRING: document });
      const dir = tempDir();
      try {
        writeFileSync(join(dir.path, 'keys.json'), document);
        const fromFile = Keyring.fromFile(join(dir.path, 'keys.json'));
        expect([fromEnv.primaryId, fromFile.primaryId, fromEnv.ids.join()]).to.deep.equal(['k2', 'k2', 'k1,k2']);
        const options = { fields: ['email'], recordId: 'booking_id' };
        const { values } = await through(encrypt({ keyring: fromEnv, ...options }), [booking()]);
        const back = await through(decrypt({ keyring: fromFile, ...options, ...READER }), values);
        expect(back.values[0]!.email).to.equal('ada@example.com');
      } finally {
        dir.remove();
      }
    });

    it('loads a keyring from a provider a KMS can implement', async () => {
      let calls = 0;
      const kms = { async load() { calls++; return { keys: [{ id: 'data-1', key: k1 }] }; } };
      const ring = await Keyring.load(kms);
      expect([ring.primaryId, calls]).to.deep.equal(['data-1', 1]);
      expect(ring.key('data-1')!.symmetricKeySize).to.equal(32);
    });

    it('says what is wrong with a keyring document without quoting it', () => {
      expect(() => Keyring.fromEnv('NOPE', {})).to.throw(ConfigError, 'environment variable NOPE is not set: it must hold the keyring as JSON');
      const secret = k1.toString('base64');
      expect(() => Keyring.fromEnv('K', { K: `{"keys":{"a":"${secret}"` })).to.throw(ConfigError).that.satisfies((e: Error) => !e.message.includes(secret));
      expect(() => Keyring.fromEnv('K', { K: '{"keys":["x"]}' })).to.throw(ConfigError, 'environment variable K: keys must be an object of key id → base64 key');
      expect(() => Keyring.fromEnv('K', { K: '{"keys":{"a":"c2hvcnQ="}}' })).to.throw(ConfigError, 'keyring key a must be 32 bytes, got 5');
      expect(() => Keyring.fromFile(join(tempDir().path, 'absent.json'))).to.throw(ConfigError, 'keyring file cannot be read: ENOENT');
    });
  });
});
