/**
 * Ten million AES-GCM encryptions under one key, and no IV twice: the long run that
 * iv.spec's instance and process tests stand in for within npm test (it takes a minute or
 * two, so it stays outside it).
 *
 *   node dist/test/integration/operators/iv-10m.js [encryptions] [cipher instances]
 *
 * Encrypts with a new FieldCipher for each share (as every operator makes its own), keeps
 * every 12-byte IV, and exits 1 if any repeats. Defaults: 10,000,000 over 10 instances.
 */
import { randomBytes } from 'node:crypto';
import { Keyring } from '../../../lib/security/keyring';
import { FieldCipher } from '../../../lib/security/fieldCipher';

const IV_BYTES = 12;

function main(): number {
  const total = Number(process.argv[2] ?? 10_000_000);
  const instances = Number(process.argv[3] ?? 10);
  if (!Number.isInteger(total) || total < 1 || !Number.isInteger(instances) || instances < 1) {
    process.stderr.write('usage: iv-10m.js [encryptions >= 1] [cipher instances >= 1]\n');
    return 2;
  }
  const keyring = new Keyring({ keys: [{ id: 'k', key: randomBytes(32) }] });
  const ivs = Buffer.alloc(total * IV_BYTES);
  const started = Date.now();
  let done = 0;
  for (let c = 0; c < instances; c++) {
    const cipher = new FieldCipher(keyring);
    const share = Math.floor(total / instances) + (c < total % instances ? 1 : 0);
    for (let i = 0; i < share; i++, done++) {
      const text = cipher.encrypt('same value', 'record-1', 'field');
      // v1:<key id>:<base64(iv ‖ ciphertext ‖ tag)>: the IV is the first 16 base64 characters.
      const sealed = text.slice(text.indexOf(':', 3) + 1, text.indexOf(':', 3) + 17);
      ivs.write(sealed, done * IV_BYTES, IV_BYTES, 'base64');
    }
  }
  const encryptSeconds = (Date.now() - started) / 1000;

  // Sort by the first 8 bytes; only IVs sharing those can be equal, so compare those whole.
  const heads = new BigUint64Array(total);
  for (let i = 0; i < total; i++) heads[i] = ivs.readBigUInt64BE(i * IV_BYTES);
  const order = heads.slice().sort();
  const sharedHeads = new Set<bigint>();
  for (let i = 1; i < total; i++) if (order[i] === order[i - 1]) sharedHeads.add(order[i]!);
  const seen = new Set<string>();
  let repeats = 0;
  if (sharedHeads.size > 0) {
    for (let i = 0; i < total; i++) {
      if (!sharedHeads.has(heads[i]!)) continue;
      const iv = ivs.toString('hex', i * IV_BYTES, (i + 1) * IV_BYTES);
      if (seen.has(iv)) repeats++;
      else seen.add(iv);
    }
  }
  const result = { encryptions: total, cipherInstances: instances, ivRepeats: repeats, ivsSharingTheirFirst8Bytes: sharedHeads.size, encryptSeconds, totalSeconds: (Date.now() - started) / 1000 };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return repeats === 0 ? 0 : 1;
}

process.exitCode = main();
