/**
 * The receiving process of the webhook crash test: serves webhooks into its own embedded
 * ClickHouse directory, or reports what that directory holds.
 *
 *   node webhook-child.js serve <chdb dir> <api key hash> <secret>   prints {"url"} once listening
 *   node webhook-child.js count <chdb dir>                           prints the stored records per webhook id
 */
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromWebhook } from '../../connectors/webhook';
import { AccessControl } from '../../lib/security/access';
import type { Envelope } from '../../lib/envelope';
import { Pipeline } from '../../lib/pipeline';

const TABLE = `
CREATE TABLE IF NOT EXISTS webhook_rows
(
    webhook_id String,
    record     UInt32,
    ref        String
)
ENGINE = ReplacingMergeTree
ORDER BY (webhook_id, record)
SETTINGS non_replicated_deduplication_window = 10000`;

async function main(): Promise<void> {
  const [mode, path, keyHash, secret] = process.argv.slice(2);
  const clickhouse = embeddedClickHouse({ path: path! });
  if (mode === 'count') {
    const rows = await clickhouse.query<{ webhook_id: string; records: string; refs: string }>(
      'SELECT webhook_id, toString(uniqExact(record)) AS records, toString(count()) AS refs FROM webhook_rows GROUP BY webhook_id',
    );
    await clickhouse.close();
    process.stdout.write(JSON.stringify(Object.fromEntries(rows.map((r) => [r.webhook_id, Number(r.records)]))) + '\n');
    return;
  }
  await clickhouse.exec(TABLE);
  const source = fromWebhook({
    port: 0,
    vendors: { acme: { secrets: [secret!] } },
    access: new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [{ id: 'acme', secretHash: keyHash!, roles: ['acme'] }] }),
  });
  const pipeline = new Pipeline({
    name: 'webhook-crash',
    source,
    transform: map((e: Envelope<any>) => e.map({ webhook_id: e.meta.key, record: e.meta.record, ref: String(e.value.ref) })),
    sink: toClickHouse({ client: clickhouse, table: 'webhook_rows' }),
    deadLetters: toClickHouse({ client: clickhouse, table: 'webhook_rows' }),
    batch: { rows: 200, maxWaitMs: 20 },
  });
  await pipeline.start();
  process.stdout.write(JSON.stringify({ url: await source.url() }) + '\n');
  await pipeline.finished();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
