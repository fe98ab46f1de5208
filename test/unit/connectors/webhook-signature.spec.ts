import { expect } from 'chai';
import { createHmac, createSecretKey, generateKeyPairSync } from 'node:crypto';
import { signWebhook } from '../../../connectors/webhook';
import { secretKey, signatureMatches } from '../../../connectors/webhook/signature';
import { ConfigError } from '../../../lib/errors';

describe('webhook signatures (Standard Webhooks)', () => {
  const bytes = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
  const signatureOf = (headers: Record<string, string>) => headers['webhook-signature']!;

  it("matches the specification's own example", () => {
    const headers = signWebhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}');
    expect(headers).to.deep.equal({
      'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
      'webhook-timestamp': '1614265330',
      'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    });
  });

  it('reads a whsec_ secret as base64, other text as UTF-8, and takes bytes and keys as they are', () => {
    const expected = `v1,${createHmac('sha256', bytes).update('evt_1.1700000000.').update('{"a":1}').digest('base64')}`;
    for (const secret of [`whsec_${bytes.toString('base64')}`, bytes.toString('utf8'), new Uint8Array(bytes), createSecretKey(bytes)]) {
      expect(signatureOf(signWebhook(secret, 'evt_1', 1700000000, '{"a":1}')), String(secret)).to.equal(expected);
    }
    // Text that merely holds "whsec_" later is text.
    const text = `key-whsec_${'x'.repeat(16)}`;
    expect(signatureOf(signWebhook(text, 'evt_1', 1700000000, '{"a":1}'))).to.equal(`v1,${createHmac('sha256', Buffer.from(text)).update('evt_1.1700000000.').update('{"a":1}').digest('base64')}`);
  });

  it('refuses a secret shorter than 16 bytes, or one that is neither text nor bytes, naming where it was given', () => {
    expect(secretKey(bytes.subarray(0, 16), 'vendors.acme.secrets[0]').symmetricKeySize).to.equal(16);
    expect(() => secretKey(bytes.subarray(0, 15), 'vendors.acme.secrets[0]')).to.throw(ConfigError, 'vendors.acme.secrets[0] must hold at least 16 bytes, got 15');
    expect(() => secretKey(`whsec_${bytes.subarray(0, 15).toString('base64')}`, 'where')).to.throw(ConfigError, 'where must hold at least 16 bytes, got 15');
    expect(() => secretKey(42 as unknown as string, 'vendors.acme.secrets[1]')).to.throw(ConfigError, 'vendors.acme.secrets[1] must be a string or bytes, got number');
    expect(() => signWebhook('too-short', 'evt', 1, '')).to.throw(ConfigError, 'secret must hold at least 16 bytes, got 9');
    // Only a secret key is taken as one: a public key, a look-alike or null is refused as a secret.
    const { publicKey } = generateKeyPairSync('ed25519');
    for (const secret of [publicKey, { type: 'secret' }, null]) {
      expect(() => signWebhook(secret as unknown as string, 'evt', 1, ''), String(secret)).to.throw(ConfigError, 'secret must be a string or bytes, got object');
    }
  });

  it('accepts a header whose v1 signatures include one made with one of the keys, during a rotation too', () => {
    const old = secretKey(bytes, 'old');
    const next = secretKey(Buffer.from('fedcba9876543210fedcba9876543210'), 'next');
    const body = Buffer.from('{"a":1}');
    const byOld = signatureOf(signWebhook(old, 'evt', 1700000000, body));
    const byNext = signatureOf(signWebhook(next, 'evt', 1700000000, body));
    const stranger = signatureOf(signWebhook(Buffer.from('not-a-key-of-ours-at-all'), 'evt', 1700000000, body));
    const matches = (keys: typeof old[], header: string) => signatureMatches(keys, 'evt', '1700000000', body, header);
    expect(matches([old, next], byOld)).to.equal(true);
    expect(matches([old, next], byNext)).to.equal(true);
    expect(matches([old], `${stranger} ${byOld}`), 'one of several').to.equal(true);
    expect(matches([old], stranger)).to.equal(false);
    // The same bytes under another scheme, cut short, or with id, timestamp or body changed: refused.
    expect(matches([old], byOld.replace('v1,', 'v2,'))).to.equal(false);
    expect(matches([old], `v1,${Buffer.from(byOld.slice(3), 'base64').subarray(0, 31).toString('base64')}`)).to.equal(false);
    expect(signatureMatches([old], 'evt2', '1700000000', body, byOld)).to.equal(false);
    expect(signatureMatches([old], 'evt', '1700000001', body, byOld)).to.equal(false);
    expect(signatureMatches([old], 'evt', '1700000000', Buffer.from('{"a":2}'), byOld)).to.equal(false);
    expect(matches([old], '')).to.equal(false);
  });
});
