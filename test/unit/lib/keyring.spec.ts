import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../../lib/errors';
import { Keyring, type KeyRotation } from '../../../lib/security/keyring';
import { tempDir } from '../../helpers';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const documentOf = (keys: Record<string, unknown>, primary?: unknown) => JSON.stringify(primary === undefined ? { keys } : { primary, keys });
const fromEnv = (text: string) => Keyring.fromEnv('K', { K: text });
/** The bytes of a keyring's key, to compare with what was configured. */
const bytesOf = (ring: Keyring, id: string) => ring.key(id)!.export().toString('hex');

describe('Keyring', () => {
  it('refuses a spec without a list of keys, or with a malformed key, saying so without quoting a key', async () => {
    const empty = 'keyring.keys must hold at least one key';
    expect(() => new Keyring(undefined as never)).to.throw(ConfigError, empty);
    // The JSON document's shape (keys by id) handed to the constructor or returned by a provider.
    expect(() => new Keyring({ keys: { k1 } } as never)).to.throw(ConfigError, empty);
    let error: unknown;
    await Keyring.load({ load: () => JSON.parse(documentOf({ k1: k1.toString('base64') })) }).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(ConfigError).with.property('message', empty);
    expect(() => new Keyring({ keys: [undefined as never] })).to.throw(ConfigError, 'keyring key ids must be 1-64 letters, digits, _ or -, got undefined');
    expect(() => new Keyring({ keys: [{ id: 7 as never, key: k1 }] })).to.throw(ConfigError, 'keyring key ids must be 1-64 letters, digits, _ or -, got 7');
    expect(() => new Keyring({ keys: [{ id: 'a', key: k1 }, { id: 'b', key: k2 }], primary: 'c' })).to.throw(ConfigError, 'keyring.primary must be the id of one of its keys (a, b), got "c"');
  });

  it('refuses a provider without load()', async () => {
    for (const provider of [undefined, {}, { load: 'keys' }]) {
      let error: unknown;
      await Keyring.load(provider as never).catch((e: unknown) => (error = e));
      expect(error).to.be.instanceOf(ConfigError).with.property('message', 'provider must have a load() method');
    }
  });

  it('tells rotation listeners the new and previous primary until they unsubscribe', () => {
    const ring = new Keyring({ keys: [{ id: 'k1', key: k1 }] });
    const seen: KeyRotation[] = [];
    const unsubscribe = ring.onRotate((event) => seen.push(event));
    ring.rotate({ id: 'k2', key: k2 });
    unsubscribe();
    ring.rotate({ id: 'k3', key: randomBytes(32) });
    expect(seen).to.deep.equal([{ keyId: 'k2', previous: 'k1' }]);
    expect([ring.primaryId, ring.ids]).to.deep.equal(['k3', ['k1', 'k2', 'k3']]);
  });

  describe('JSON documents (fromEnv, fromFile)', () => {
    it('reads TRIBUTARY_KEYRING by default, and takes an empty variable as not set', () => {
      const ring = Keyring.fromEnv(undefined, { TRIBUTARY_KEYRING: documentOf({ k1: k1.toString('base64') }) });
      expect(bytesOf(ring, 'k1')).to.equal(k1.toString('hex'));
      expect(() => Keyring.fromEnv('K', { K: '' })).to.throw(ConfigError, 'environment variable K is not set: it must hold the keyring as JSON');
    });

    it('uses the primary it names, else the last key', () => {
      const keys = { k1: k1.toString('base64'), k2: k2.toString('base64') };
      expect(fromEnv(documentOf(keys, 'k1')).primaryId).to.equal('k1');
      expect(fromEnv(documentOf(keys)).primaryId).to.equal('k2');
      expect(() => fromEnv(documentOf(keys, 2))).to.throw(ConfigError, 'environment variable K: primary must be a key id');
    });

    it('takes keys in base64 or base64url, padded or not', () => {
      for (const encoded of [k1.toString('base64'), k1.toString('base64url'), k1.toString('base64').replace(/=+$/, '')]) {
        expect(bytesOf(fromEnv(documentOf({ a: encoded })), 'a'), encoded).to.equal(k1.toString('hex'));
      }
    });

    it('refuses a key that is not wholly base64 rather than decoding what it can, and never quotes it', () => {
      const secret = k1.toString('base64');
      for (const key of [5, `#${secret}`, `${secret}#`, `${secret.slice(0, 20)} ${secret.slice(20)}`, `${secret}==`, 'not base64!']) {
        expect(() => fromEnv(documentOf({ a: key })), String(key)).to.throw(ConfigError).that.satisfies((e: Error) => e.message === 'environment variable K: key a must be base64 text');
      }
    });

    it('says where a document is wrong, the same way for a variable and a file', () => {
      const dir = tempDir();
      try {
        const file = (text: string) => {
          writeFileSync(join(dir.path, 'keys.json'), text);
          return () => Keyring.fromFile(join(dir.path, 'keys.json'));
        };
        const secret = k1.toString('base64');
        const cases: [string, string][] = [
          [`{"keys":{"a":"${secret}"`, ' must be JSON like {"primary":"k1","keys":{"k1":"<base64>"}}'],
          ['null', ': keys must be an object of key id → base64 key'],
          ['{"keys":["x"]}', ': keys must be an object of key id → base64 key'],
        ];
        for (const [text, rule] of cases) {
          expect(() => fromEnv(text), text).to.throw(ConfigError).with.property('message', `environment variable K${rule}`);
          expect(file(text), text).to.throw(ConfigError).with.property('message', `keyring file${rule}`);
        }
      } finally {
        dir.remove();
      }
    });
  });
});
