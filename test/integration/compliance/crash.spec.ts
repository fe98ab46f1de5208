import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { from, lastValueFrom, toArray } from 'rxjs';
import { clickHouseSubjectKeyStore, serverClickHouse, subjectErasure, toClickHouse } from '../../../connectors/clickhouse';
import { AccessControl } from '../../../lib/security/access';
import { AuditLog } from '../../../lib/security/audit';
import { TributaryError } from '../../../lib/errors';
import { Keyring } from '../../../lib/security/keyring';
import { SubjectKeys, type SubjectKeyStore } from '../../../lib/security/subjectKeys';
import { decrypt } from '../../../operators/decrypt';
import { clickhouseServer } from '../../clickhouseServer';
import { Recorder, testClickHouse, until } from '../../helpers';

const unique = (prefix: string) => `${prefix}_${randomUUID().replace(/-/g, '').slice(0, 12)}`;

describe('compliance failure paths', function () {
  this.timeout(180_000);

  it('a process killed mid-batch leaves no value encrypted under a key that was not stored (ClickHouse server)', async () => {
    clickhouseServer.ensure();
    const server = serverClickHouse({ url: clickhouseServer.url });
    const keysTable = unique('subject_keys');
    const rowsTable = unique('sealed');
    try {
      await server.exec(`CREATE TABLE ${keysTable} (subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64) ENGINE = MergeTree ORDER BY (subject, key_id)`);
      await server.exec(`CREATE TABLE ${rowsTable} (id String, subject String, email String) ENGINE = MergeTree ORDER BY id`);
      const master = randomBytes(32);
      const child = spawn(process.execPath, [join(__dirname, 'encrypt-child.js'), clickhouseServer.url, keysTable, rowsTable, master.toString('base64')], { stdio: ['ignore', 'ignore', 'pipe'] });
      let output = '';
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const written = async () => Number((await server.query<{ n: string }>(`SELECT count() AS n FROM ${rowsTable}`))[0]!.n);
      let rows = 0;
      const poll = setInterval(() => void written().then((n) => (rows = n)), 20);
      await until(() => rows >= 3000 || child.exitCode !== null, 120_000, 'rows written by the child');
      clearInterval(poll);
      child.kill('SIGKILL');
      expect(await exited, output).to.equal(null);

      const sealed = await server.query<{ id: string; subject: string; email: string }>(`SELECT id, subject, email FROM ${rowsTable}`);
      expect(sealed.length).to.be.at.least(3000);
      const keyring = new Keyring({ keys: [{ id: 'm1', key: master }] });
      const reader = AccessControl.issueKey('auditor', ['auditor']);
      const recorder = new Recorder();
      const opened = await lastValueFrom(
        from(sealed.map((v) => recorder.envelope(v))).pipe(
          decrypt({ keyring, subjectKeys: new SubjectKeys({ keyring, store: clickHouseSubjectKeyStore({ client: server, table: keysTable }) }), fields: ['email'], recordId: 'id', access: new AccessControl({ roles: { auditor: ['decrypt:email'] }, keys: [reader.record] }), principal: reader.token, purpose: 'crash check' }),
          toArray(),
        ),
      );
      expect(recorder.rejected.map((r) => r.failure.code)).to.deep.equal([]);
      expect(opened.every((e) => e.value.email === `person${e.value.subject.slice(1)}@example.com`)).to.equal(true);
      const [stored] = await server.query<{ n: string; subjects: string }>(`SELECT count() AS n, uniqExact(subject) AS subjects FROM ${keysTable}`);
      expect(Number(stored!.n), 'one key per subject').to.equal(Number(stored!.subjects));
    } finally {
      await server.exec(`DROP TABLE IF EXISTS ${keysTable}`).catch(() => undefined);
      await server.exec(`DROP TABLE IF EXISTS ${rowsTable}`).catch(() => undefined);
      await server.close();
    }
  });

  it('an erasure that fails half-way is audited as failed and finishes when repeated', async () => {
    const clickhouse = testClickHouse();
    const table = unique('people');
    const auditTable = unique('audit');
    try {
      await clickhouse.exec(`CREATE TABLE ${table} (subject String, note String) ENGINE = MergeTree ORDER BY subject`);
      await clickhouse.exec(`CREATE TABLE ${auditTable} (id String, at DateTime64(3, 'UTC'), type String, actor String, purpose String, target String, outcome String, details String) ENGINE = MergeTree ORDER BY (at, id)`);
      await clickhouse.insert(table, Buffer.from('{"subject":"s1","note":"a"}\n{"subject":"s2","note":"b"}\n'), {});
      let broken = true;
      // The key table is unreachable the first time (a dropped connection), fine the second.
      const store: SubjectKeyStore = {
        findBySubjects: async () => [],
        findByIds: async () => [],
        put: async () => undefined,
        delete: async () => {
          if (broken) {
            broken = false;
            throw new TributaryError('key table unreachable', { code: 'CLICKHOUSE_210' });
          }
          return 0; // this subject never had a key: only its rows are left to erase
        },
      };
      const keys = new SubjectKeys({ keyring: new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] }), store, retry: { retries: 0 } });
      const audit = new AuditLog({ sink: toClickHouse({ client: clickhouse, table: auditTable }), batch: { rows: 10, maxWaitMs: 5 } });
      const erasure = subjectErasure({ client: clickhouse, subjectKeys: keys, audit, tables: [{ table, column: 'subject' }] });
      const failed = await erasure.erase('s1', { actor: 'dpo', reason: 'r' }).catch((e: TributaryError) => e);
      expect(failed).to.be.instanceOf(TributaryError).and.have.property('code', 'CLICKHOUSE_210');
      expect(Number((await clickhouse.query<{ n: string }>(`SELECT count() AS n FROM ${table}`))[0]!.n), 'nothing was deleted before the keys').to.equal(2);
      const done = await erasure.erase('s1', { actor: 'dpo', reason: 'r' });
      expect(done).to.deep.include({ touched: true, tables: [{ table, action: 'delete', rows: 1 }] });
      expect(await clickhouse.query(`SELECT subject FROM ${table}`)).to.deep.equal([{ subject: 's2' }]);
      const events = await clickhouse.query<{ type: string; outcome: string }>(`SELECT type, outcome FROM ${auditTable} ORDER BY at, length(id), id`);
      expect(events).to.deep.equal([
        { type: 'erasure.request', outcome: 'requested' },
        { type: 'erasure.failed', outcome: 'CLICKHOUSE_210' },
        { type: 'erasure.request', outcome: 'requested' },
        { type: 'erasure.done', outcome: 'ok' },
      ]);
      await audit.close();
    } finally {
      await clickhouse.exec(`DROP TABLE IF EXISTS ${table}`);
      await clickhouse.exec(`DROP TABLE IF EXISTS ${auditTable}`);
    }
  });

  it('treats hostile subject ids as data: quotes, backslashes and SQL in a subject erase that subject only', async () => {
    const clickhouse = testClickHouse();
    const table = unique('people');
    const keysTable = unique('keys');
    const auditTable = unique('audit');
    try {
      await clickhouse.exec(`CREATE TABLE ${table} (subject String, note String) ENGINE = MergeTree ORDER BY subject`);
      await clickhouse.exec(`CREATE TABLE ${keysTable} (subject String, key_id String, master_key_id String, wrapped String, created_ms UInt64) ENGINE = MergeTree ORDER BY (subject, key_id)`);
      await clickhouse.exec(`CREATE TABLE ${auditTable} (id String, at DateTime64(3, 'UTC'), type String, actor String, purpose String, target String, outcome String, details String) ENGINE = MergeTree ORDER BY (at, id)`);
      const hostile = ["x' OR 1=1 --", 'back\\slash\\', "q'); DROP TABLE people; --", 'plain'];
      await clickhouse.insert(table, Buffer.from(hostile.map((subject) => JSON.stringify({ subject, note: 'n' })).join('\n') + '\n'), {});
      const keys = new SubjectKeys({ keyring: new Keyring({ keys: [{ id: 'm1', key: randomBytes(32) }] }), store: clickHouseSubjectKeyStore({ client: clickhouse, table: keysTable }) });
      await keys.resolveSubjects(hostile);
      const audit = new AuditLog({ sink: toClickHouse({ client: clickhouse, table: auditTable }), batch: { rows: 10, maxWaitMs: 5 } });
      const erasure = subjectErasure({ client: clickhouse, subjectKeys: keys, audit, tables: [{ table, column: 'subject' }] });
      for (const subject of hostile.slice(0, 3)) {
        expect(await erasure.erase(subject, { actor: 'dpo', reason: 'r' })).to.deep.include({ keysShredded: 1, tables: [{ table, action: 'delete', rows: 1 }] });
      }
      expect(await clickhouse.query(`SELECT subject FROM ${table}`)).to.deep.equal([{ subject: 'plain' }]);
      expect((await clickhouse.query<{ subject: string }>(`SELECT subject FROM ${keysTable}`)).map((r) => r.subject)).to.deep.equal(['plain']);
      await audit.close();
    } finally {
      for (const t of [table, keysTable, auditTable]) await clickhouse.exec(`DROP TABLE IF EXISTS ${t}`);
    }
  });
});
