import { expect } from 'chai';
import { createCipheriv, createDecipheriv, randomBytes, type KeyObject } from 'node:crypto';
import { from, lastValueFrom, toArray, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError, TributaryError } from '../../../lib/errors';
import { AccessControl } from '../../../lib/security/access';
import { FieldCipher, SUBJECT_VERSION } from '../../../lib/security/fieldCipher';
import { Keyring } from '../../../lib/security/keyring';
import { MemorySubjectKeyStore, SubjectKeys, type SubjectKey } from '../../../lib/security/subjectKeys';
import { decrypt } from '../../../operators/decrypt';
import { encrypt } from '../../../operators/encrypt';
import { Recorder, withoutCiphertexts } from '../../helpers';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const keyring = () => new Keyring({ keys: [{ id: 'k1', key: k1 }, { id: 'k2', key: k2 }], primary: 'k1' });
const reading = AccessControl.issueKey('support', ['reader']);
const READER = { access: new AccessControl({ roles: { reader: ['decrypt:*'] }, keys: [reading.record] }), principal: reading.token, purpose: 'tests' };

/** The associated data of the format in FieldCipher's doc comment, written here independently. */
const aad = (version: string, recordId: string, field: string) => Buffer.from(`${version}\0${recordId.length}:${recordId}\0${field}`, 'utf8');

/** Opens a ciphertext by the documented format alone: `<version>:<keyId>:<base64(iv ‖ ciphertext ‖ tag)>`, a type byte first. */
function openByHand(text: string, key: Buffer | KeyObject, recordId: string, field: string) {
  const [version, keyId, encoded] = text.split(':') as [string, string, string];
  const sealed = Buffer.from(encoded, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
  decipher.setAAD(aad(version, recordId, field));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const plain = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
  return { version, keyId, type: String.fromCharCode(plain[0]!), text: plain.toString('utf8', 1) };
}

/** Seals `plain` (type byte included) by the documented format, as another writer of it would. */
function sealByHand(plain: Buffer, key: Buffer, recordId: string, field: string, prefix = 'v1:k1:'): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad(prefix.split(':')[0]!, recordId, field));
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return prefix + Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64');
}

/** What `run` returned, or the class, code and message of what it threw. */
function outcome(run: () => unknown): unknown[] {
  try {
    return ['returned', run()];
  } catch (error) {
    return [(error as Error).constructor.name, (error as TributaryError).code, (error as Error).message];
  }
}

async function subjectKeyOf(subject: string): Promise<{ keys: SubjectKeys; key: SubjectKey }> {
  const keys = new SubjectKeys({ keyring: keyring(), store: new MemorySubjectKeyStore() });
  await keys.resolveSubjects([subject]);
  return { keys, key: keys.cachedForSubject(subject)! };
}

async function through<T>(operator: OperatorFunction<Envelope<T>, Envelope<T>>, values: T[]) {
  const recorder = new Recorder();
  const out = await lastValueFrom(from(values.map((value) => recorder.envelope(value))).pipe(operator, toArray()));
  return { values: out.map((e) => e.value), recorder };
}

describe('FieldCipher', () => {
  it('writes the documented format: version, key id, base64 of IV, ciphertext and tag, the text typed s and other values j', async () => {
    const cipher = new FieldCipher(keyring());
    const text = 'Zoë € 😀 "quoted"';
    const asText = openByHand(cipher.encrypt(text, 'B-1', 'email'), k1, 'B-1', 'email');
    expect(asText).to.deep.equal({ version: 'v1', keyId: 'k1', type: 's', text });
    const asJson = openByHand(cipher.encrypt({ n: [1, 'x'] }, 'B-1', 'card.holder'), k1, 'B-1', 'card.holder');
    expect(asJson).to.deep.equal({ version: 'v1', keyId: 'k1', type: 'j', text: '{"n":[1,"x"]}' });
    // The ciphertext is as long as the UTF-8 text, plus the type byte, IV and tag: a string is not JSON-quoted.
    expect(Buffer.from(cipher.encrypt('abc', 'B-1', 'email').split(':')[2]!, 'base64')).to.have.length(12 + 1 + 3 + 16);

    const { key } = await subjectKeyOf('alice');
    cipher.beginRecord('B-1', SUBJECT_VERSION);
    const sealed = cipher.seal('ada@example.com', 'email', key.key, key.prefix);
    expect(openByHand(sealed, key.key, 'B-1', 'email')).to.deep.equal({ version: 'sv1', keyId: key.keyId, type: 's', text: 'ada@example.com' });
  });

  it('reads what another writer of the format sealed, and refuses a plaintext type it does not know', () => {
    const cipher = new FieldCipher(keyring());
    const typed = (type: string, body: string) => sealByHand(Buffer.concat([Buffer.from(type), Buffer.from(body, 'utf8')]), k1, 'B-1', 'email');
    expect(cipher.decrypt(typed('s', '{"not":"parsed"}'), 'B-1', 'email')).to.equal('{"not":"parsed"}');
    expect(cipher.decrypt(typed('j', '{"parsed":true}'), 'B-1', 'email')).to.deep.equal({ parsed: true });
    // A type a later version might add must not be read as JSON or text.
    expect(outcome(() => cipher.decrypt(typed('b', '"x"'), 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_FORMAT', 'email holds an unknown plaintext type']);
  });

  it('binds each value to its version: one record encrypted under the keyring and a subject key in turn decrypts whole', async () => {
    const { keys, key } = await subjectKeyOf('alice');
    const cipher = new FieldCipher(keyring(), keys);
    const texts: [string, string, string][] = [];
    for (const recordId of ['B-1', 'B-1', 'B-2', 'B-1']) {
      texts.push([cipher.encrypt('by keyring', recordId, 'a'), recordId, 'a']);
      cipher.beginRecord(recordId, SUBJECT_VERSION);
      texts.push([cipher.seal('by subject', 'b', key.key, key.prefix), recordId, 'b']);
      texts.push([cipher.encrypt('by keyring again', recordId, 'c'), recordId, 'c']);
    }
    const reader = new FieldCipher(keyring(), keys);
    expect(texts.map(([text, recordId, field]) => reader.decrypt(text, recordId, field))).to.deep.equal(
      Array.from({ length: 4 }, () => ['by keyring', 'by subject', 'by keyring again']).flat(),
    );
  });

  it('encrypts ids, field names and values of any size and width: its reused buffers grow whenever a value would not fit', () => {
    const ring = keyring();
    const reader = new FieldCipher(ring);
    const roundTrip = (cipher: FieldCipher, value: unknown, recordId: string, field: string) => {
      const text = cipher.encrypt(value, recordId, field);
      expect(reader.decrypt(text, recordId, field), `${String(value).length} units of ${String(value)[0]} in ${field.length} of ${field[0]}, id of ${recordId.length}`).to.deep.equal(value);
    };
    // The buffers start at 4096 bytes. A fresh cipher per case, so each case meets them at that size.
    // Values whose UTF-8 needs land around 4096 bytes, in 1- to 3-byte characters and surrogate pairs.
    for (const unit of ['a', 'é', '€', '😀']) {
      for (const field of ['f', '€', '€€', '€€€€']) {
        const bytesPerUnit = Buffer.byteLength(unit) / unit.length;
        const fixed = Buffer.byteLength(`v1\0${1}:r\0`) + Buffer.byteLength(field) + 1;
        for (let need = 4080; need <= 4110; need++) {
          const units = Math.round((need - fixed) / bytesPerUnit);
          if (units % unit.length !== 0) continue;
          roundTrip(new FieldCipher(ring), unit.repeat(units / unit.length), 'r', field);
        }
      }
    }
    // Record ids whose part of the associated data lands around 3840 (4096 - 256), 4096 and 4352 bytes.
    for (const length of [3825, 3835, 3845, 4085, 4090, 4095, 4100, 4330, 4340, 4350, 10_000]) {
      for (const unit of ['i', 'é']) roundTrip(new FieldCipher(ring), 'value', unit.repeat(length), 'f');
    }
    // Large values, and one cipher reused from large to small to larger.
    const reused = new FieldCipher(ring);
    for (const size of [100_000, 3, 5000, 300_000]) {
      roundTrip(new FieldCipher(ring), '€'.repeat(size), 'r', 'f');
      roundTrip(reused, { list: 'x'.repeat(size) }, 'id-' + 'i'.repeat(size % 7000), '€'.repeat(size % 5000));
    }
  });

  it('refuses what is not one of its ciphertexts, cut short or altered, saying which field and why', () => {
    const cipher = new FieldCipher(keyring());
    const good = cipher.encrypt('ada@example.com', 'B-1', 'email');
    const sealed = Buffer.from(good.split(':')[2]!, 'base64');
    const cut = (bytes: number) => `v1:k1:${sealed.subarray(0, bytes).toString('base64')}`;
    const flipped = Buffer.from(sealed);
    flipped[20] ^= 1;
    const notCiphertext = ['TributaryError', 'DECRYPT_FORMAT', 'email is not a v1 ciphertext'];
    const altered = ['TributaryError', 'DECRYPT_FAILED', 'email does not decrypt for this record: wrong key, record id or field, or altered text'];
    const cases: [unknown, unknown[]][] = [
      [42, notCiphertext],
      [{ v: 1 }, notCiphertext],
      ['ada@example.com', notCiphertext],
      ['v2:k1:' + sealed.toString('base64'), notCiphertext],
      ['v1:k1', notCiphertext],
      ['sv1:abc', notCiphertext],
      [cut(0), notCiphertext],
      [cut(12), notCiphertext],
      [cut(12 + 16), notCiphertext], // IV and tag, no type byte: nothing an encryption can make
      [cut(12 + 1 + 16), altered],
      [cut(sealed.length - 1), altered],
      [`v1:k1:${flipped.toString('base64')}`, altered],
      [good.replace('v1:k1:', 'v1:k2:'), altered],
      [good, ['returned', 'ada@example.com']],
    ];
    expect(cases.map(([text]) => outcome(() => cipher.decrypt(text, 'B-1', 'email')))).to.deep.equal(cases.map(([, expected]) => expected));
    expect(outcome(() => cipher.decrypt(good, 'B-2', 'email'))).to.deep.equal(altered);
    expect(outcome(() => cipher.decrypt(good, 'B-1', 'phone'))[2]).to.equal('phone does not decrypt for this record: wrong key, record id or field, or altered text');
  });

  it('names the key a ciphertext asks for, cut to 64 characters, when it is not held, unknown or erased', async () => {
    const { keys, key } = await subjectKeyOf('alice');
    const cipher = new FieldCipher(keyring(), keys);
    cipher.beginRecord('B-1', SUBJECT_VERSION);
    const bySubject = cipher.seal('ada@example.com', 'email', key.key, key.prefix);
    const body = bySubject.split(':')[2]!;
    const long = 'x'.repeat(10_000);
    expect(outcome(() => cipher.decrypt(`v1:k9:${body}`, 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_UNKNOWN_KEY', 'email was encrypted with key "k9", which the keyring does not hold']);
    expect(outcome(() => cipher.decrypt(`v1:${long}:${body}`, 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_UNKNOWN_KEY', `email was encrypted with key "${'x'.repeat(64)}", which the keyring does not hold`]);
    expect(outcome(() => cipher.decrypt(`sv1:${long}:${body}`, 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_UNKNOWN_KEY', `email was encrypted with subject key "${'x'.repeat(64)}", which is erased or unknown`]);
    // Without subject keys configured, a subject key is unknown, not erased.
    expect(outcome(() => new FieldCipher(keyring()).decrypt(bySubject, 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_UNKNOWN_KEY', `email was encrypted with subject key "${key.keyId}", which is erased or unknown`]);
    expect(cipher.decrypt(bySubject, 'B-1', 'email')).to.equal('ada@example.com');
    await keys.shred('alice');
    await keys.resolveIds([key.keyId]); // as decrypt does for the key ids it meets
    expect(outcome(() => cipher.decrypt(bySubject, 'B-1', 'email'))).to.deep.equal(['TributaryError', 'DECRYPT_ERASED', `email was encrypted with subject key "${key.keyId}", which is erased or unknown`]);
  });

  it('finds the subject key id only in sv1 ciphertexts', () => {
    const cases: [unknown, string | undefined][] = [
      ['sv1:abcDEF_-:AAAA', 'abcDEF_-'],
      ['sv1::AAAA', ''],
      ['sv1:abcdef', undefined],
      ['v1:k1:AAAA', undefined],
      ['xsv1:abc:AAAA', undefined],
      ['sv1', undefined],
      [42, undefined],
      [null, undefined],
    ];
    expect(cases.map(([text]) => FieldCipher.subjectKeyIdOf(text))).to.deep.equal(cases.map(([, id]) => id));
  });

  it('refuses to encrypt a value JSON cannot hold, with its type', async () => {
    expect(outcome(() => new FieldCipher(keyring()).encrypt(() => 1, 'B-1', 'f'))).to.deep.equal(['TributaryError', 'ENCRYPT_TYPE', 'cannot encrypt a function']);
    const { recorder } = await through(encrypt<any>({ keyring: keyring(), fields: ['tag'], recordId: 'id' }), [{ id: 'B-1', tag: Symbol('s') }]);
    expect(recorder.rejected.map((r) => [r.failure.code, r.failure.message, r.failure.path])).to.deep.equal([['ENCRYPT_TYPE', 'tag: cannot encrypt a symbol', '/tag']]);
  });
});

describe('encrypt / decrypt record ids', () => {
  const options = (recordId: any, fields = ['email']) => ({ keyring: keyring(), fields, recordId });

  it('binds to the id a function computes', async () => {
    const recordId = (r: { vendor: string; no: number }) => `${r.vendor}/${r.no}`;
    const { values } = await through(encrypt<any>(options(recordId)), [{ vendor: 'acme', no: 1, email: 'a@x' }]);
    const moved = { ...values[0], no: 2 };
    const { values: back, recorder } = await through(decrypt<any>({ ...options(recordId), ...READER }), [structuredClone(values[0]), moved]);
    expect(back).to.deep.equal([{ vendor: 'acme', no: 1, email: 'a@x' }]);
    expect(recorder.rejected.map((r) => r.failure.code)).to.deep.equal(['DECRYPT_FAILED']);
  });

  it('takes strings, finite numbers and bigints as ids, bound by their text, and refuses records with any other id', async () => {
    const ids = ['A', 7, 12345678901234567890n, 0, '', NaN, Infinity, -Infinity, null, true, { id: 1 }, ['A'], undefined];
    const { values, recorder } = await through(encrypt<any>(options('id')), ids.map((id) => ({ id, email: 'a@x' })));
    expect(values.map((v) => v.id)).to.deep.equal(['A', 7, 12345678901234567890n, 0]);
    expect(recorder.rejected.map((r) => [(r.envelope.value as { id: unknown }).id, r.failure.code])).to.deep.equal(ids.slice(4).map((id) => [id, 'ENCRYPT_RECORD_ID']));
    // Bound to the id's text: a number or bigint id that comes back as a string still decrypts.
    const stored = values.map((v) => ({ id: String(v.id), email: v.email }));
    const back = await through(decrypt<any>({ ...options('id'), ...READER }), stored);
    expect(back.values.map((v) => v.email)).to.deep.equal(['a@x', 'a@x', 'a@x', 'a@x']);
  });

  it('follows an id path through objects only, never into a string or past a null', async () => {
    const records = [{ meta: null }, { meta: 'B-1' }, { meta: { id: 'B-1' } }, { ids: 'B-1' }, { ids: ['B-1'] }];
    const metaId = await through(encrypt<any>(options('meta.id')), records.map((r) => ({ ...r, email: 'a@x' })));
    expect(metaId.values.map((v) => v.meta)).to.deep.equal([{ id: 'B-1' }]);
    expect(metaId.recorder.rejected.map((r) => r.failure.code)).to.deep.equal(['ENCRYPT_RECORD_ID', 'ENCRYPT_RECORD_ID', 'ENCRYPT_RECORD_ID', 'ENCRYPT_RECORD_ID']);
    const first = await through(encrypt<any>(options('ids.0')), records.map((r) => ({ ...r, email: 'a@x' })));
    expect(first.values.map((v) => v.ids)).to.deep.equal([['B-1']]);
  });

  it('refuses a recordId that an encrypted field covers, and only that', async () => {
    expect(() => encrypt(options('items.0', ['items.*']))).to.throw(ConfigError, 'recordId items.0 is among the encrypted fields: decrypt would not find it');
    expect(() => encrypt(options('passengers.0.name', ['passengers.*.name']))).to.throw(ConfigError, 'recordId passengers.0.name is among the encrypted fields');
    // A sibling of an encrypted field, or a path whose array elements are encrypted when it is one, stays readable.
    for (const [recordId, fields, record] of [
      ['card.id', ['card.holder'], { card: { id: 'C-1', holder: 'Ada' } }],
      ['ref', ['ref.*', 'email'], { ref: 'R-1', email: 'a@x' }],
    ] as const) {
      const { values } = await through(encrypt<any>(options(recordId, [...fields])), [structuredClone(record)]);
      expect(withoutCiphertexts(values[0])).not.to.contain('Ada').and.not.to.contain('a@x');
      const back = await through(decrypt<any>({ ...options(recordId, [...fields]), ...READER }), values);
      expect(back.values).to.deep.equal([record]);
    }
  });
});
