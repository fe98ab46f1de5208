/** Encrypts `count` values under the key given in hex and prints each ciphertext's IV, one per line (for the IV tests). */
import { Keyring } from '../../../lib/security/keyring';
import { FieldCipher } from '../../../lib/security/fieldCipher';

const [keyHex, count] = process.argv.slice(2);
const cipher = new FieldCipher(new Keyring({ keys: [{ id: 'k', key: Buffer.from(keyHex!, 'hex') }] }));
const ivs: string[] = [];
for (let i = 0; i < Number(count); i++) ivs.push(ivOf(cipher.encrypt('same value', 'record-1', 'field')));
process.stdout.write(`${ivs.join('\n')}\n`);

function ivOf(ciphertext: string): string {
  return Buffer.from(ciphertext.split(':')[2]!, 'base64').subarray(0, 12).toString('hex');
}
