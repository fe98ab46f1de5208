import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { toClickHouse, type ClickHouseClient } from '../../connectors/clickhouse';
import { clickhouseErrorOf } from '../../connectors/clickhouse/client';
import { fromIterable } from '../../connectors/iterable';
import { Pipeline } from '../../lib/pipeline';
import type { DeadLetter } from '../../lib/sink';
import { clientLike, MemorySink, observed } from '../helpers';

/**
 * What every ClickHouse driver must do, run against each: write and ack, absorb a
 * repeated batch, isolate poison rows.
 */
export function clickhouseSinkConformance(client: () => ClickHouseClient): void {
  let table: string;

  beforeEach(async () => {
    table = `conformance_${randomUUID().replace(/-/g, '')}`;
    const window = (await client().supportsDeduplicationToken()) ? ' SETTINGS non_replicated_deduplication_window = 1000' : '';
    await client().exec(`CREATE TABLE ${table} (id UInt32, name String, amount Decimal(18, 4), at DateTime) ENGINE = ReplacingMergeTree ORDER BY id${window}`);
  });

  afterEach(async () => {
    await client().exec(`DROP TABLE IF EXISTS ${table}`);
  });

  const count = async (sql: string) => Number((await client().query<{ n: string }>(sql))[0]!.n);
  const rows = (n: number, from = 1) =>
    Array.from({ length: n }, (_, i) => ({ id: from + i, name: `booking ${from + i}`, amount: `${from + i}.25`, at: '2026-03-01T10:00:00Z' }));

  it('writes every record, exactly as given, and acks each once it is stored', async () => {
    const source = observed(fromIterable(rows(2500)));
    const stats = await new Pipeline({ source, sink: toClickHouse({ client: client(), table }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 1000 } }).run();
    expect(stats).to.include({ read: 2500, written: 2500, deadLettered: 0 });
    expect(source.acked).to.have.length(2500);
    expect(await count(`SELECT count() AS n FROM ${table}`)).to.equal(2500);
    const [row] = await client().query<Record<string, string>>(`SELECT id, name, toString(amount) AS amount, toString(at) AS at FROM ${table} WHERE id = 7`);
    expect(row!.name).to.equal('booking 7');
    expect([Number(row!.id), Number(row!.amount)]).to.deep.equal([7, 7.25]);
  });

  it('stores decimal strings digit for digit, and leaves look-alike text inside other strings alone', async () => {
    const input = [
      { id: 1, name: 'plain', amount: '12345678901234.5678', at: '2026-03-01T10:00:00Z' },
      { id: 2, name: 'negative', amount: '-0.0001', at: '2026-03-01T10:00:00Z' },
      { id: 3, name: '"amount":"99" inside a name', amount: '7.1234', at: '2026-03-01T10:00:00Z' },
    ];
    await new Pipeline({ source: fromIterable(input), sink: toClickHouse({ client: client(), table }), deadLetters: new MemorySink<DeadLetter>() }).run();
    const stored = await client().query<{ id: string; name: string; amount: string }>(`SELECT id, name, toString(amount) AS amount FROM ${table} ORDER BY id`);
    expect(stored.map((r) => [Number(r.id), r.name, r.amount])).to.deep.equal([
      [1, 'plain', '12345678901234.5678'],
      [2, 'negative', '-0.0001'],
      [3, '"amount":"99" inside a name', '7.1234'],
    ]);
  });

  it('isolates poison rows: a 10k batch with 3 bad rows gives 3 dead letters and 9,997 rows', async () => {
    const input: Record<string, unknown>[] = rows(10_000);
    for (const i of [10, 5000, 9999]) input[i] = { ...input[i], id: 'not a number' };
    const deadLetters = new MemorySink<DeadLetter>();
    const stats = await new Pipeline({ source: fromIterable(input), sink: toClickHouse({ client: client(), table }), deadLetters, batch: { rows: 10_000 } }).run();
    expect(stats).to.include({ read: 10_000, written: 9_997, deadLettered: 3, nacked: 0 });
    expect(await count(`SELECT count() AS n FROM ${table}`)).to.equal(9_997);
    expect(deadLetters.rows.map((l) => l.position).sort()).to.deep.equal(['iterable@10000', 'iterable@11', 'iterable@5001']);
    for (const letter of deadLetters.rows) {
      expect(letter.stage).to.equal('sink');
      expect(letter.code).to.match(/^CLICKHOUSE_\d+$/);
      expect(letter.message).to.match(/Cannot parse|Cannot read|parse/i);
    }
  });

  it('passes settings through to every insert: input_format_skip_unknown_fields decides whether a row with an extra key lands', async () => {
    // Both values are given explicitly: the setting's default changed between releases.
    const input = [...rows(2), { ...rows(1, 3)[0], coupon: 'SPRING' }];
    const run = async (skip: 0 | 1) => {
      const deadLetters = new MemorySink<DeadLetter>();
      const sink = toClickHouse({ client: client(), table, settings: { input_format_skip_unknown_fields: skip } });
      const stats = await new Pipeline({ source: fromIterable(input), sink, deadLetters, batch: { rows: 10 } }).run();
      return { stats, deadLetters: deadLetters.rows };
    };

    const strict = await run(0);
    expect(strict.stats).to.include({ read: 3, written: 2, deadLettered: 1, nacked: 0 });
    expect(strict.deadLetters).to.have.length(1);
    expect(strict.deadLetters[0]).to.include({ stage: 'sink', position: 'iterable@3' });
    expect(strict.deadLetters[0]!.message).to.match(/coupon/);
    expect(await count(`SELECT count() AS n FROM ${table} WHERE id = 3`)).to.equal(0);

    const lenient = await run(1);
    expect(lenient.stats).to.include({ read: 3, written: 3, deadLettered: 0, nacked: 0 });
    expect(await count(`SELECT count() AS n FROM ${table} FINAL WHERE id = 3`)).to.equal(1);
  });

  it('absorbs a batch written twice: with the same insert token where the server has them, by natural key everywhere', async () => {
    const tokens = await client().supportsDeduplicationToken();
    // With merges stopped, ReplacingMergeTree cannot fold the repeat away: only the token can.
    if (tokens) await client().exec(`SYSTEM STOP MERGES ${table}`);
    const write = () => new Pipeline({ source: fromIterable(rows(300)), sink: toClickHouse({ client: client(), table }), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 100 } }).run();
    await write();
    await write();
    expect(await count(`SELECT count() AS n FROM ${table} FINAL`)).to.equal(300);
    if (tokens) {
      expect(await count(`SELECT count() AS n FROM ${table}`), 'rows stored, without FINAL, merges stopped').to.equal(300);
      expect(await count(`SELECT count() AS n FROM system.parts WHERE table = '${table}' AND active`), 'one part per batch, none merged').to.equal(3);
    }
  });

  it('retries an insert that landed but timed out with the same token, and the table holds it once', async () => {
    const real = client();
    // With merges stopped, ReplacingMergeTree cannot fold the retried batch away: only the token can.
    if (await real.supportsDeduplicationToken()) await real.exec(`SYSTEM STOP MERGES ${table}`);
    const inserts: { token: unknown; rows: number }[] = [];
    // The real store, whose first insert lands and then reports the HTTP client's timeout.
    const landsThenTimesOut = clientLike(real, {
      async insert(target, body, settings, columns) {
        const first = inserts.length === 0;
        inserts.push({ token: settings['insert_deduplication_token'], rows: body.toString('utf8').trimEnd().split('\n').length });
        await real.insert(target, body, settings, columns);
        if (first) throw clickhouseErrorOf(new Error('Timeout error.'));
      },
    });
    const source = observed(fromIterable(rows(300)));
    const stats = await new Pipeline({
      source,
      sink: toClickHouse({ client: landsThenTimesOut, table }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 100 },
      retry: { initialDelayMs: 10, maxDelayMs: 50 },
    }).run();
    expect(stats).to.include({ read: 300, written: 300, deadLettered: 0, nacked: 0 });
    expect(source.acked).to.have.length(300);
    expect(inserts).to.have.length(4); // three batches, the first one twice
    expect(await count(`SELECT count() AS n FROM ${table} FINAL`)).to.equal(300);
    if (await real.supportsDeduplicationToken()) {
      expect(inserts[0]!.token).to.be.a('string').and.not.equal('');
      expect(inserts.filter((i) => i.token === inserts[0]!.token)).to.have.length(2);
      expect(new Set(inserts.map((i) => i.token)).size).to.equal(3);
      // Without FINAL, merges stopped: the retried insert was absorbed by its token.
      expect(await count(`SELECT count() AS n FROM ${table}`)).to.equal(300);
    } else {
      // No tokens (before 22.2): the retry stored the batch again until ReplacingMergeTree merges it.
      expect(inserts.map((i) => i.token)).to.deep.equal([undefined, undefined, undefined, undefined]);
      expect(await count(`SELECT count() AS n FROM ${table}`)).to.equal(300 + inserts[0]!.rows);
    }
  });
}
