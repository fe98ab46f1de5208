import { parseArgs } from 'node:util';
import { embeddedClickHouse } from './connectors/clickhouse';

const USAGE = `usage: tributary query "SQL" [--path DIR] [--format FORMAT]
  Opens the embedded store at --path (default .tributary/chdb) and prints the result.
  When a running pipeline holds the store, asks its query endpoint instead:
  TRIBUTARY_QUERY_URL (e.g. http://127.0.0.1:8123), TRIBUTARY_QUERY_USER, TRIBUTARY_QUERY_KEY.`;

/** `tributary query "SQL"`: the store directly when free, the pipeline's endpoint when held. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { path: { type: 'string', default: '.tributary/chdb' }, format: { type: 'string', default: 'PrettyCompactMonoBlock' } },
  });
  const [command, sql] = positionals;
  if (command !== 'query' || !sql || positionals.length !== 2) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const store = embeddedClickHouse({ path: values.path });
  try {
    process.stdout.write(await store.queryText(sql, values.format!));
    return 0;
  } catch (error) {
    // chDB cannot say more than that opening failed; a held lock is the usual reason.
    if (!(error as Error).message.startsWith('cannot open the embedded ClickHouse')) throw error;
  } finally {
    await store.close();
  }
  const url = process.env.TRIBUTARY_QUERY_URL;
  if (!url) {
    process.stderr.write(`cannot open the store at ${values.path} (is a running pipeline holding it?); set TRIBUTARY_QUERY_URL to that pipeline's query endpoint\n`);
    return 1;
  }
  const response = await fetch(`${url.replace(/\/$/, '')}/?default_format=${encodeURIComponent(values.format!)}`, {
    method: 'POST',
    body: sql,
    headers: { 'X-ClickHouse-User': process.env.TRIBUTARY_QUERY_USER ?? 'default', 'X-ClickHouse-Key': process.env.TRIBUTARY_QUERY_KEY ?? '' },
  });
  const text = await response.text();
  (response.ok ? process.stdout : process.stderr).write(text);
  return response.ok ? 0 : 1;
}
