import { expect } from 'chai';
import { readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedClickHouse, type ClickHouseClient } from '../../connectors/clickhouse';
import { delay, testClickHousePath } from '../helpers';

/**
 * The embedded store reads a SELECT's rows through a FIFO the engine writes into: each
 * reader's FIFO is private, the query behind an abandoned or failed read ends, and no FIFO
 * outlives its client.
 */
describe('embedded ClickHouse reads through a private FIFO', function () {
  this.timeout(120_000);
  let client: ClickHouseClient;
  let dir: string;

  const fifoDirs = () => new Set(readdirSync(tmpdir()).filter((name) => name.startsWith('tributary-fifo-')));
  const fifos = () => readdirSync(dir).sort();
  const running = async (marker: string) => Number((await client.query<{ n: string }>(`SELECT count() AS n FROM system.processes WHERE query LIKE '%${marker}%' AND query NOT LIKE '%system.processes%'`))[0]!.n);
  const eventually = async (what: string, check: () => Promise<boolean> | boolean) => {
    for (let i = 0; !(await check()); i++) {
      if (i > 1000) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await client.query("SELECT query, is_cancelled, elapsed FROM system.processes"))}`);
      await delay(20);
    }
  };
  const read = async (sql: string, format = 'TSV') => {
    const parts: Uint8Array[] = [];
    for await (const part of client.stream(sql, { format })) parts.push(part);
    return Buffer.concat(parts).toString();
  };

  before(async () => {
    // A client of its own on the test store, so its FIFO directory is the one that appears.
    const before = fifoDirs();
    client = embeddedClickHouse({ path: testClickHousePath() });
    expect(await read('SELECT 1')).to.equal('1\n');
    const made = [...fifoDirs()].filter((name) => !before.has(name));
    expect(made).to.have.length(1);
    dir = join(tmpdir(), made[0]!);
  });
  after(async () => client?.close());

  it('keeps its FIFO in a directory only this process can enter, and reads rows intact', async () => {
    expect(statSync(dir).mode & 0o777).to.equal(0o700);
    const [fifo] = fifos();
    expect(fifo).to.match(/^[0-9a-f]{32}$/);
    const stat = statSync(join(dir, fifo!));
    expect([stat.isFIFO(), stat.mode & 0o777]).to.deep.equal([true, 0o600]);
    const expected = Array.from({ length: 300_000 }, (_, i) => `${i}\tn${i}\n`).join('');
    expect(await read("SELECT number, concat('n', toString(number)) FROM numbers(300000) SETTINGS max_block_size = 1000")).to.equal(expected);
    // The same FIFO again: a reader keeps it between its queries.
    expect(fifos()).to.deep.equal([fifo]);
  });

  it('gives reads running at once FIFOs of their own', async () => {
    const sql = (tag: string) => `SELECT number, '${tag}' FROM numbers(2000000) SETTINGS max_block_size = 1000`;
    const one = client.stream(sql('one'), { format: 'TSV' })[Symbol.asyncIterator]();
    const two = client.stream(sql('two'), { format: 'TSV' })[Symbol.asyncIterator]();
    const firsts = [await one.next(), await two.next()];
    const during = fifos();
    expect(during).to.have.length(2);
    const rest = async (chunks: AsyncIterator<Uint8Array>, first: IteratorResult<Uint8Array>) => {
      let text = Buffer.from(first.value as Uint8Array).toString();
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) text += Buffer.from(next.value).toString();
      return text.split('\n').filter(Boolean);
    };
    const [a, b] = await Promise.all([rest(one, firsts[0]!), rest(two, firsts[1]!)]);
    expect([a.length, a[0], a.at(-1), b.length, b[0], b.at(-1)]).to.deep.equal([2_000_000, '0\tone', '1999999\tone', 2_000_000, '0\ttwo', '1999999\ttwo']);
    expect(fifos()).to.deep.equal(during);
  });

  it('ends the engine query of an aborted read and removes its FIFO', async () => {
    const kept = fifos();
    const controller = new AbortController();
    // About 10^10 rows: without the kill it would run until max_execution_time.
    const sql = "SELECT number, 'aborted-read-marker' FROM numbers(10000000000) SETTINGS max_threads = 1";
    let bytes = 0;
    for await (const part of client.stream(sql, { format: 'TSV', signal: controller.signal })) {
      bytes += part.length;
      if (bytes > 1_000_000) controller.abort();
    }
    expect(bytes).to.be.above(1_000_000);
    await eventually('the query to end', async () => (await running('aborted-read-marker')) === 0);
    await eventually('the FIFO to go', () => fifos().length < kept.length + 1 && fifos().every((name) => kept.includes(name)));
    // The next read takes another reader and FIFO, and is whole.
    expect(await read('SELECT count() FROM numbers(10)')).to.equal('10\n');
  });

  it('rejects a query that fails before it opens the FIFO, and one that fails after bytes went out', async () => {
    const kept = fifos();
    const early = await read('SELECT no_such_column FROM system.one').catch((e: unknown) => e);
    expect((early as { clickhouseCode?: number }).clickhouseCode).to.equal(47);
    let bytes = 0;
    const late = await (async () => {
      for await (const part of client.stream('SELECT throwIf(number = 3000000) FROM numbers(4000000) SETTINGS max_block_size = 1000, max_threads = 1', { format: 'TSV' })) bytes += part.length;
    })().catch((e: unknown) => e);
    expect([bytes > 0, (late as { clickhouseCode?: number }).clickhouseCode]).to.deep.equal([true, 395]);
    // Failed readers are not reused: their FIFOs go.
    await eventually('the failed readers’ FIFOs to go', () => fifos().every((name) => kept.includes(name)));
  });

  it('refuses a query carrying its own INTO OUTFILE or FORMAT, writing nothing', async () => {
    const out = join(dir, 'smuggled.tsv');
    for (const sql of [`SELECT 1 INTO OUTFILE '${out}'`, `SELECT 1 INTO OUTFILE '${out}' TRUNCATE FORMAT TSV`, 'SELECT 1 FORMAT JSON', 'SELECT 1 SETTINGS readonly = 1 FORMAT JSON']) {
      const error = await read(sql).catch((e: unknown) => e);
      expect((error as { clickhouseCode?: number }).clickhouseCode, sql).to.equal(62);
    }
    expect(fifos()).to.not.include('smuggled.tsv');
    // A trailing comment does not swallow the clause: the rows still come through the FIFO.
    expect(await read('SELECT 7 -- a comment')).to.equal('7\n');
  });

  it('removes its directory when it closes', async () => {
    const other = embeddedClickHouse({ path: testClickHousePath() });
    const before = fifoDirs();
    const parts: Uint8Array[] = [];
    for await (const part of other.stream('SELECT 2', { format: 'TSV' })) parts.push(part);
    const made = [...fifoDirs()].filter((name) => !before.has(name));
    expect(made).to.have.length(1);
    await other.close();
    expect(fifoDirs().has(made[0]!)).to.equal(false);
  });
});
