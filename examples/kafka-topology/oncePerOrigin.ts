/**
 * How storage writes each record once (see `oncePerOrigin`), apart from the stage's command
 * line so it can be tried on its own.
 */
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { toClickHouse, type ClickHouseClient, type Envelope, type Sink } from '../../index';
import { quoteIdentifier } from '../../connectors/clickhouse/client';
import { ORIGIN_POSITION, ORIGIN_TIME, originHeaders } from './topology';

/** This stage's own migrations (origin columns, counts replays cannot inflate), beside its sources. */
export const topologyMigrationsDir = join(resolve(__dirname, __dirname.includes(`${'/'}dist${'/'}`) ? '../../../examples/kafka-topology' : '.'), 'migrations');

/** A record's identity (see `originHeaders`); a message without the headers is its own origin. */
export interface Origin {
  origin_position: string;
  origin_time: string;
}

/** The identity `envelope` carries in its headers, or its own position and time. */
export function originOf(envelope: Envelope<unknown>): Origin {
  const headers = originHeaders(envelope);
  return { origin_position: headers[ORIGIN_POSITION]!, origin_time: headers[ORIGIN_TIME]! };
}

/**
 * `table`'s sink, writing each origin once: before a batch is inserted, the rows whose
 * `origin_position` the table already holds from another insert are dropped, and so is a
 * second row of one origin within the batch. A copy of a record made again by
 * normalization after a crash (same origin, new offset in the clean or dead topic) then
 * adds nothing, so the table and the views it feeds hold one row per origin without FINAL.
 *
 * A batch read again by this stage after a crash is another matter: its insert may have
 * landed in the table and not in every materialized view fed by it (ClickHouse writes the
 * table's part and each view's part one after the other; a kill in between leaves the
 * views short). So each row keeps the insert token it was written with (`insert_token`:
 * its batch's, or that followed by `:<uuid>`), and rows the table holds under this batch's
 * token are written again with that token: the table drops the block as a copy (its
 * deduplication window remembers the token), and each view (`deduplicate_blocks_in_dependent_materialized_views`)
 * takes the part it missed and drops the ones it has. A batch read again whose rows are
 * not in the table is written under a new token: ClickHouse notes a token in its
 * deduplication log before it commits the part, so a kill in between leaves the token
 * without the rows, and the same token again would be dropped. That needs a batch read again to be
 * the same records with the same token: the sources cut batches where the crashed reader
 * did (`batchAlignment`), and `replayed` says a batch is one of those. Only those and a
 * write retried within the process are written again, so a batch of the same records
 * read much later (offsets reset), whose token the table may have forgotten, adds nothing.
 *
 * `keys` are columns of the table's sorting key the lookup narrows by, so it reads the
 * rows of the batch's keys, not the table: for bookings, vendor and booking id (the same
 * in every copy). Dead letters have none a copy shares (`position` is where the copy was
 * read, new when a file is ingested again), so a lookup reads the origin column of
 * dead_letters, a table of refusals kept 30 days. Exact while one writer at a time inserts
 * the copies of an origin: they share a message key, hence a partition, and the pipeline
 * writes its batches one at a time (`sinkConcurrency: 1`).
 */
export function oncePerOrigin<R extends Origin>(
  client: ClickHouseClient,
  table: 'bookings' | 'dead_letters',
  keys: readonly (keyof R & string)[],
  settings: Record<string, number>,
  replayed: (first: Envelope<R>) => boolean = () => false,
): Sink<R> {
  const sink = toClickHouse<R>({ client, table, settings });
  // Sent as hex of newline-joined text: bound by the engine, never spliced into the SQL. A
  // value holding a newline only widens the set asked for; what is dropped is decided here.
  const list = (values: Iterable<string>) => Buffer.from([...new Set(values)].join('\n')).toString('hex');
  const inList = (column: string, param: string) => `${quoteIdentifier(column)} IN splitByChar('\\n', unhex({${param}:String}))`;
  const sql = `SELECT DISTINCT origin_position, insert_token FROM ${quoteIdentifier(table)} WHERE ${[...keys.map((k, i) => inList(k, `k${i}`)), inList('origin_position', 'origins')].join(' AND ')}`;
  // Without insert tokens a row written again would be a second row: only other inserts' rows count then.
  let tokens: Promise<boolean> | undefined;
  return {
    name: sink.name,
    async open() {
      await sink.open!();
      tokens = client.supportsDeduplicationToken();
      await tokens;
    },
    async write(batch, context) {
      const pending = batch.envelopes.filter((e) => !e.settled);
      if (pending.length === 0) return;
      // A dead letter of this stage's own comes without identity: it takes its record's.
      for (const e of pending) if (e.value.origin_position === undefined) e.map({ ...e.value, ...originOf(e) });
      const params: Record<string, string> = { origins: list(pending.map((e) => e.value.origin_position)) };
      keys.forEach((key, i) => (params[`k${i}`] = list(pending.map((e) => String(e.value[key])))));
      const chunks: Buffer[] = [];
      for await (const chunk of client.stream(sql, { format: 'JSONEachRow', params })) chunks.push(Buffer.from(chunk));
      // This very batch may have been inserted before (a retry, a batch read again after a crash).
      const again = (await (tokens ??= client.supportsDeduplicationToken())) && (context.attempt > 1 || replayed(pending[0]!));
      const ours = (token: string) => token === context.token || token.startsWith(`${context.token}:`);
      /** The token the table holds this batch's rows under, when an earlier attempt's insert landed. */
      let landed: string | undefined;
      const stored = new Set<string>();
      for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) {
        if (line === '') continue;
        const row = JSON.parse(line) as { origin_position: string; insert_token: string };
        if (again && ours(row.insert_token)) landed = row.insert_token;
        else stored.add(row.origin_position);
      }
      // Written again under the token it landed with, so the table and the views that have
      // it drop it and the others take it. An earlier attempt that did not land gets a token
      // of its own: ClickHouse notes a token before it commits the part, so a kill in between
      // leaves a token whose rows are not there, and an insert with it would be dropped.
      const token = landed ?? (again ? `${context.token}:${randomUUID()}` : context.token);
      const fresh: Envelope<R>[] = [];
      let bytes = 0;
      for (const envelope of pending) {
        if (stored.has(envelope.value.origin_position)) continue;
        stored.add(envelope.value.origin_position);
        fresh.push(envelope.map({ ...envelope.value, insert_token: token }));
        bytes += envelope.bytes;
      }
      if (fresh.length === 0) return;
      await sink.write({ envelopes: fresh, bytes }, { ...context, token });
    },
  };
}
