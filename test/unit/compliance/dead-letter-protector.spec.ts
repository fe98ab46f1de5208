import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { from, lastValueFrom, toArray } from 'rxjs';
import { ConfigError } from '../../../lib/errors';
import { AccessControl } from '../../../lib/security/access';
import { deadLetterProtector } from '../../../lib/security/deadLetterProtector';
import { Keyring } from '../../../lib/security/keyring';
import { MemorySubjectKeyStore, SubjectKeys } from '../../../lib/security/subjectKeys';
import type { DeadLetter } from '../../../lib/sink';
import { decrypt } from '../../../operators/decrypt';
import { Recorder } from '../../helpers';

const reader = AccessControl.issueKey('reader', ['reader']);
const READ = { access: new AccessControl({ roles: { reader: ['decrypt:*'] }, keys: [reader.record] }), principal: reader.token, purpose: 'tests' };
const keyring = () => new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] });

const letter = (position: string, raw: string, encoding: DeadLetter['raw_encoding'] = 'utf8'): DeadLetter => ({
  pipeline: 'p',
  source: 's',
  position,
  vendor: 'acme',
  stage: 'validate',
  code: 'VALIDATION',
  message: `refused ${raw}`,
  path: '/email',
  raw,
  raw_encoding: encoding,
  raw_bytes: raw.length,
  raw_sha256: 'f'.repeat(64),
  received_at: '2026-01-01T00:00:00.000Z',
  failed_at: '2026-01-01T00:00:01.000Z',
});

/** The letters read back with `decrypt`, and the codes of those that would not decrypt. */
async function readBack(letters: DeadLetter[], ring: Keyring, subjectKeys?: SubjectKeys) {
  const recorder = new Recorder();
  const values: DeadLetter[] = await lastValueFrom(
    from(letters.map((l) => recorder.envelope(l))).pipe(decrypt({ keyring: ring, ...(subjectKeys && { subjectKeys }), fields: ['raw', 'message'], recordId: 'position', ...READ }), toArray()),
  ).then((envelopes) => envelopes.map((e) => e.value));
  return { values, failed: recorder.rejected.map((r) => r.failure.code) };
}

describe('deadLetterProtector, in detail', () => {
  it('keeps triage fields, drops the hash, marks the encoding, and seals raw and message bound to the position', async () => {
    const ring = keyring();
    const protect = deadLetterProtector({ keyring: ring });
    const recorder = new Recorder();
    const sealed = (await protect(letter('f@1', 'eyJhIjoxfQ==', 'base64'), recorder.envelope({}))) as DeadLetter;
    expect(sealed).to.deep.include({ pipeline: 'p', stage: 'validate', code: 'VALIDATION', path: '/email', position: 'f@1', raw_sha256: '', raw_encoding: 'encrypted:base64', raw_bytes: 12 });
    expect(sealed.raw).to.match(/^v1:m1:/);
    expect(sealed.message).to.match(/^v1:m1:/);
    const back = await readBack([sealed], ring);
    expect(back.values.map((l) => [l.raw, l.message])).to.deep.equal([['eyJhIjoxfQ==', 'refused eyJhIjoxfQ==']]);
    // Moved to another position, it does not decrypt.
    expect((await readBack([{ ...sealed, position: 'f@2' }], ring)).failed).to.have.length(1);
  });

  it('seals under the subject encrypt noted on the record first, else subjectOf, else the keyring when neither tells or subjectOf throws', async () => {
    const ring = keyring();
    const subjectKeys = new SubjectKeys({ keyring: ring, store: new MemorySubjectKeyStore() });
    const protect = deadLetterProtector({
      keyring: ring,
      subjectKeys,
      subjectOf: (value: any) => {
        if (value === 'throws') throw new Error('broken record');
        return value?.customer;
      },
    });
    const recorder = new Recorder();
    const noted = await protect(letter('a', 'x'), recorder.envelope({ customer: 'c2' }, { subject: 'c1' }));
    const named = await protect(letter('b', 'y'), recorder.envelope({ customer: 'c2' }));
    const again = protect(letter('c', 'z'), recorder.envelope({ customer: 'c2' }));
    expect(again, 'a cached subject key seals at once').to.not.be.instanceOf(Promise);
    const unknown = protect(letter('d', 'w'), recorder.envelope({}));
    const empty = protect(letter('e', 'v'), recorder.envelope({ customer: '' }));
    const thrown = protect(letter('f', 'u'), recorder.envelope('throws'));
    const prefix = (subject: string) => subjectKeys.cachedForSubject(subject)!.prefix;
    expect([noted, named, again].map((l) => (l as DeadLetter).raw.slice(0, prefix('c1').length))).to.deep.equal([prefix('c1'), prefix('c2'), prefix('c2')]);
    expect([unknown, empty, thrown].map((l) => (l as DeadLetter).raw.slice(0, 6))).to.deep.equal(['v1:m1:', 'v1:m1:', 'v1:m1:']);
    await subjectKeys.shred('c1');
    const back = await readBack([noted, named, unknown].map((l) => l as DeadLetter), ring, subjectKeys);
    expect(back.failed).to.deep.equal(['DECRYPT_ERASED']);
    expect(back.values.map((l) => l.raw)).to.deep.equal(['y', 'w']);
  });

  it('ignores a subject noted on the record when it has no subject keys', async () => {
    const protect = deadLetterProtector({ keyring: keyring() });
    const sealed = (await protect(letter('a', 'x'), new Recorder().envelope({}, { subject: 'c1' }))) as DeadLetter;
    expect(sealed.raw).to.match(/^v1:m1:/);
  });

  it('refuses bad options with the rule', () => {
    const ring = keyring();
    const subjectKeys = new SubjectKeys({ keyring: ring, store: new MemorySubjectKeyStore() });
    expect(() => deadLetterProtector(undefined as never)).to.throw(ConfigError, 'keyring must be a Keyring: letters without a known subject are encrypted with its primary key');
    expect(() => deadLetterProtector({ keyring: {} as Keyring })).to.throw(ConfigError, 'keyring must be a Keyring');
    expect(() => deadLetterProtector({ keyring: ring, subjectKeys: {} as SubjectKeys })).to.throw(ConfigError, 'subjectKeys must be a SubjectKeys');
    expect(() => deadLetterProtector({ keyring: ring, subjectKeys, subjectOf: 'customer' as never })).to.throw(ConfigError, 'subjectOf must be a function of the refused value');
    expect(() => deadLetterProtector({ keyring: ring, subjectOf: () => 'x' })).to.throw(ConfigError, 'subjectOf needs subjectKeys');
    expect(() => deadLetterProtector({ keyring: ring, subjectKeys })).to.not.throw();
  });
});
