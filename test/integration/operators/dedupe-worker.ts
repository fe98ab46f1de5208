/**
 * One pipeline of the cross-process dedupe test, run as a child process:
 * fromIterable(ids) → dedupe(Redis) → an NDJSON file. Sends its stats to the parent.
 *
 * argv[2]: JSON { url, prefix, name, ids, out }
 */
import { appendFileSync } from 'node:fs';
import { Pipeline } from '../../../lib/pipeline';
import type { Batch, DeadLetter, Sink } from '../../../lib/sink';
import { fromIterable } from '../../../connectors/iterable';
import { dedupe, type DedupeStats } from '../../../operators/dedupe';
import { redisDedupeStore } from '../../../operators/dedupeStores';

interface Args {
  url: string;
  prefix: string;
  name: string;
  ids: string[];
  out: string;
}

/** Appends each batch as NDJSON lines; durable enough for a test. */
function ndjsonFile<T>(path: string): Sink<T> {
  return {
    name: 'ndjson',
    async write(batch: Batch<T>) {
      appendFileSync(path, batch.envelopes.map((e) => JSON.stringify(e.value) + '\n').join(''));
    },
  };
}

async function main(): Promise<{ stats: DedupeStats; written: number; deadLettered: number }> {
  const args = JSON.parse(process.argv[2]!) as Args;
  const store = redisDedupeStore({ url: args.url, prefix: args.prefix });
  const stats: DedupeStats = { passed: 0, duplicates: 0, rejected: 0 };
  // Yield between records so the two processes really interleave their claims.
  async function* records() {
    for (const id of args.ids) {
      yield { id, by: args.name };
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  const pipeline = new Pipeline<{ id: string }>({
    name: args.name,
    source: fromIterable(records(), { name: args.name }),
    transform: dedupe<{ id: string }>({ key: (r) => r.id, ttlMs: 600_000, store, stats, batch: { rows: 50, maxWaitMs: 2 } }),
    sink: ndjsonFile(args.out),
    deadLetters: ndjsonFile<DeadLetter>(`${args.out}.dead`),
    batch: { rows: 100, maxWaitMs: 10 },
    inFlight: { records: 500 },
  });
  try {
    const result = await pipeline.run();
    return { stats, written: result.written, deadLettered: result.deadLettered };
  } finally {
    await store.close();
  }
}

function reply(message: { ok: boolean; value?: unknown; error?: string }): void {
  if (!process.send) {
    console.log(JSON.stringify(message));
    process.exit(message.ok ? 0 : 1);
  }
  process.send(message, () => process.exit(message.ok ? 0 : 1));
}

main().then(
  (value) => reply({ ok: true, value }),
  (error: unknown) => reply({ ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
);
