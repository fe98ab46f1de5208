/**
 * The encrypting process of the crash test: streams records of ever new data subjects
 * through encrypt with subject keys into tables of the ClickHouse server, until killed.
 *
 *   node encrypt-child.js <server url> <keys table> <rows table> <master key, base64>
 */
import { clickHouseSubjectKeyStore, serverClickHouse, toClickHouse } from '../../../connectors/clickhouse';
import { fromIterable } from '../../../connectors/iterable';
import { Keyring } from '../../../lib/security/keyring';
import { Pipeline } from '../../../lib/pipeline';
import { SubjectKeys } from '../../../lib/security/subjectKeys';
import { encrypt } from '../../../operators/encrypt';
import { MemorySink } from '../../helpers';

const [url, keysTable, rowsTable, master] = process.argv.slice(2) as [string, string, string, string];
const client = serverClickHouse({ url });
const keyring = new Keyring({ keys: [{ id: 'm1', key: Buffer.from(master, 'base64') }] });
const subjectKeys = new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client, table: keysTable }) });

function* records() {
  for (let i = 0; ; i++) yield { id: `r${i}`, subject: `s${Math.floor(i / 3)}`, email: `person${Math.floor(i / 3)}@example.com` };
}

new Pipeline({
  name: 'crash',
  source: fromIterable(records()),
  transform: encrypt({ keyring, subjectKeys, subject: 'subject', fields: ['email'], recordId: 'id' }),
  sink: toClickHouse({ client, table: rowsTable }),
  deadLetters: new MemorySink(),
  batch: { rows: 200, maxWaitMs: 10 },
  inFlight: { records: 1000 },
})
  .run()
  .catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
