import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Keyring } from '../../../lib/security/keyring';
import { FieldCipher } from '../../../lib/security/fieldCipher';

const run = promisify(execFile);
const ivOf = (ciphertext: string) => Buffer.from(ciphertext.split(':')[2]!, 'base64').subarray(0, 12).toString('hex');

/**
 * AES-GCM under one key must never see an IV twice: not within a cipher, and not across
 * the cipher instances of one process (every operator makes its own) nor across processes
 * and restarts (every instance of a pipeline encrypts under the same keyring). Ten million
 * encryptions are checked by iv-10m.ts, run by hand outside npm test.
 */
describe('AES-GCM IVs are unique under one key', function () {
  this.timeout(60_000);
  const key = randomBytes(32);

  it('across 20 cipher instances in one process, each past a refill of its IV buffer', () => {
    const keyring = new Keyring({ keys: [{ id: 'k', key }] });
    const ivs = new Set<string>();
    let total = 0;
    for (let c = 0; c < 20; c++) {
      const cipher = new FieldCipher(keyring);
      for (let i = 0; i < 8200; i++, total++) ivs.add(ivOf(cipher.encrypt('same value', 'record-1', 'field')));
    }
    expect(ivs.size).to.equal(total);
  });

  it('across processes started alike (restarts, replicas)', async () => {
    const child = join(__dirname, 'iv-child.js');
    const outputs = await Promise.all([0, 1, 2, 3].map(() => run(process.execPath, [child, key.toString('hex'), '5000'], { maxBuffer: 16 * 1024 * 1024 })));
    const ivs = outputs.flatMap(({ stdout }) => stdout.trim().split('\n'));
    expect(ivs).to.have.length(20_000);
    expect(new Set(ivs).size).to.equal(20_000);
  });
});
