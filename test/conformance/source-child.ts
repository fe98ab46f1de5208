/**
 * The process of the source conformance suite: runs one source into its own embedded
 * ClickHouse directory, or reports what that directory holds.
 *
 *   node source-child.js run '<RunConfig as JSON>'
 *       prints JSON lines: {"event":"listening","url"} (webhook), {"event":"writing"} as each
 *       write starts and {"event":"wrote"} once it landed (a dead-letter write also prints
 *       {"event":"dead letter stored"} then, and {"event":"dead letter acked"} as it returns
 *       after its ack delay), {"event":"stalled","stored"}
 *       once a write hangs for good, {"event":"stats",...} when the pipeline ends; SIGTERM
 *       stops the pipeline (stop() drains) and exits 0 after printing its stats
 *   node source-child.js count <chdb dir>
 *       prints {"raw","distinct","refs":{ref:count},"deadLetters","deadLetterPositions"}, with plain count()
 */
import { map } from 'rxjs';
import { embeddedClickHouse, toClickHouse } from '../../connectors/clickhouse';
import { fromInbox } from '../../connectors/files';
import { fromKafka, type FromKafkaOptions } from '../../connectors/kafka';
import { fromPoll } from '../../connectors/poll';
import { fromWebhook } from '../../connectors/webhook';
import type { Envelope } from '../../lib/envelope';
import { SinkError } from '../../lib/errors';
import { Pipeline } from '../../lib/pipeline';
import { AccessControl } from '../../lib/security/access';
import type { Batch, Sink, WriteContext } from '../../lib/sink';
import type { Source } from '../../lib/source';
import { parse } from '../../operators/parse';

export interface RunConfig {
  kind: 'inbox' | 'poll' | 'webhook' | 'kafka';
  chdb: string;
  /** The source's options, as JSON (the webhook's: { keyHash, secret }; Kafka's are fromKafka's, its messages JSON with a `ref`). */
  options: Record<string, unknown>;
  /** Each write waits this long first. */
  slowMs?: number;
  /** Each write waits this long once stored, before its records are acked: a kill then finds rows stored past the saved position. */
  ackDelayMs?: number;
  /** Each dead-letter write waits this long once stored: a dead letter then holds the saved position back while later batches are written. */
  deadLetterAckDelayMs?: number;
  /** Writes after this many hang for good (`stalled` is printed): nothing more is stored. */
  stallAfterWrites?: number;
  /** Writes after this many fail for good (a non-retriable error): their records are nacked. */
  failAfterWrites?: number;
  batch?: { rows: number; maxWaitMs: number };
  sinkConcurrency?: number;
  /** The pipeline's in-flight records. @default 2000 */
  inFlight?: number;
}

// Plain MergeTrees, not the ReplacingMergeTrees real tables would be: no merge, in the
// background or by FINAL, folds a row written twice, so count() shows every repeat.
const TABLE = `
CREATE TABLE IF NOT EXISTS source_rows (ref String, position String)
ENGINE = MergeTree ORDER BY ref
SETTINGS non_replicated_deduplication_window = 10000`;

const DEAD_LETTERS = `
CREATE TABLE IF NOT EXISTS dead_letters
(
    pipeline String, source String, position String, vendor String, stage String, code String,
    message String, path String, raw String, raw_encoding String,
    received_at DateTime64(3, 'UTC'), failed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree ORDER BY (pipeline, source, position)
SETTINGS non_replicated_deduplication_window = 10000`;

const say = (line: object) => process.stdout.write(JSON.stringify(line) + '\n');

/** The sink with the faults the test asked for; the dead letters' also says when a write is stored and when it returns, its letters then acked. */
function faulty<T>(sink: Sink<T>, config: RunConfig, deadLetters = false): Sink<T> {
  let writes = 0;
  let stored = 0;
  return {
    name: sink.name,
    open: () => sink.open?.() ?? Promise.resolve(),
    async write(batch: Batch<T>, context: WriteContext) {
      const n = ++writes;
      say({ event: 'writing' });
      if (config.slowMs) await new Promise((resolve) => setTimeout(resolve, config.slowMs));
      if (config.stallAfterWrites !== undefined && n > config.stallAfterWrites) {
        say({ event: 'stalled', stored });
        // Hangs for good, keeping the process alive as an open connection would.
        await new Promise(() => setInterval(() => undefined, 60_000));
      }
      if (config.failAfterWrites !== undefined && n > config.failAfterWrites) throw new SinkError(`write ${n} refused by the test`, { retriable: false });
      await sink.write(batch, context);
      stored += batch.envelopes.length;
      say({ event: 'wrote' });
      if (deadLetters) say({ event: 'dead letter stored' });
      if (config.ackDelayMs) await new Promise((resolve) => setTimeout(resolve, config.ackDelayMs));
      if (deadLetters) say({ event: 'dead letter acked' });
    },
    close: () => sink.close?.() ?? Promise.resolve(),
  };
}

const toRow = map((e: Envelope<any>) => e.map({ ref: String(e.value.ref ?? e.value.id), position: `${e.meta.position}#${e.meta.record ?? ''}` }));

function sourceOf(config: RunConfig): Source<unknown> & { url?: () => Promise<string> } {
  const options = config.options as any;
  if (config.kind === 'inbox') return fromInbox(options);
  if (config.kind === 'poll') return fromPoll(options);
  if (config.kind === 'kafka') return fromKafka(options as FromKafkaOptions);
  return fromWebhook({
    port: 0,
    vendors: { acme: { secrets: [options.secret] } },
    access: new AccessControl({ roles: { acme: ['webhook:post:acme'] }, keys: [{ id: 'acme', secretHash: options.keyHash, roles: ['acme'] }] }),
  });
}

async function run(config: RunConfig): Promise<void> {
  const clickhouse = embeddedClickHouse({ path: config.chdb });
  await clickhouse.exec(TABLE);
  await clickhouse.exec(DEAD_LETTERS);
  const source = sourceOf(config);
  const pipeline = new Pipeline({
    name: `conformance-${config.kind}`,
    source,
    transform: (records$) => (config.kind === 'kafka' ? records$.pipe(parse()) : records$).pipe(toRow),
    sink: faulty(toClickHouse<Record<string, unknown>>({ client: clickhouse, table: 'source_rows' }), config),
    deadLetters: faulty(toClickHouse({ client: clickhouse, table: 'dead_letters' }), { kind: config.kind, chdb: config.chdb, options: {}, ackDelayMs: config.deadLetterAckDelayMs }, true),
    batch: config.batch ?? { rows: 500, maxWaitMs: 200 },
    inFlight: { records: config.inFlight ?? 2000 },
    ...(config.sinkConcurrency && { sinkConcurrency: config.sinkConcurrency }),
    retry: { initialDelayMs: 10, maxDelayMs: 100 },
  });
  process.once('SIGTERM', () => {
    void pipeline.stop().then(async (stats) => {
      await clickhouse.close();
      say({ event: 'stats', ...stats, ...('stats' in source ? { source: (source as { stats: unknown }).stats } : {}) });
      process.exit(0);
    });
  });
  await pipeline.start();
  if (source.url) say({ event: 'listening', url: await source.url() });
  const stats = await pipeline.finished();
  await clickhouse.close();
  say({ event: 'stats', ...stats, ...('stats' in source ? { source: (source as { stats: unknown }).stats } : {}) });
}

async function count(path: string): Promise<void> {
  const clickhouse = embeddedClickHouse({ path });
  await clickhouse.exec(TABLE);
  await clickhouse.exec(DEAD_LETTERS);
  const refs = await clickhouse.query<{ ref: string; n: string }>('SELECT ref, toString(count()) AS n FROM source_rows GROUP BY ref');
  const [letters] = await clickhouse.query<{ n: string; positions: string }>('SELECT toString(count()) AS n, toString(uniqExact(position)) AS positions FROM dead_letters');
  await clickhouse.close();
  const counts = Object.fromEntries(refs.map((r) => [r.ref, Number(r.n)]));
  say({ raw: Object.values(counts).reduce((a, b) => a + b, 0), distinct: refs.length, refs: counts, deadLetters: Number(letters!.n), deadLetterPositions: Number(letters!.positions) });
}

async function main(): Promise<void> {
  const [mode, arg] = process.argv.slice(2);
  if (mode === 'count') return count(arg!);
  if (mode === 'run') return run(JSON.parse(arg!) as RunConfig);
  throw new Error(`unknown mode ${mode}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
