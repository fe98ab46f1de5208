import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';

/**
 * Shared machinery of `encrypt`, `decrypt` and `tokenize` with subject keys: records whose keys are
 * cached go through at once; a record whose keys are not is held, with every record
 * behind it (order is kept), while one lookup fetches the keys of all held records.
 *
 * `missing` names the keys a record needs that are not cached; `fetch` must leave each of
 * them cached or known to be absent, else the record would wait for ever. A failing
 * `fetch` (the store stayed down) errors the stream: broken infrastructure, not bad data.
 */
export function keyGate<A, B>(
  missing: (envelope: Envelope<A>) => readonly string[],
  fetch: (keys: string[]) => Promise<void>,
  process: (envelope: Envelope<A>, emit: (envelope: Envelope<B>) => void) => void,
): OperatorFunction<Envelope<A>, Envelope<B>> {
  return (source) =>
    new Observable<Envelope<B>>((subscriber) => {
      const held: Envelope<A>[] = [];
      let fetching = false;
      let completed = false;
      const emit = (envelope: Envelope<B>) => subscriber.next(envelope);
      const startFetch = (keys: string[]) => {
        fetching = true;
        fetch(keys).then(drain, (error: unknown) => subscriber.error(error));
      };
      const drain = () => {
        fetching = false;
        while (held.length > 0) {
          if (missing(held[0]!).length > 0) {
            const keys = new Set<string>();
            for (const envelope of held) for (const key of missing(envelope)) keys.add(key);
            startFetch([...keys]);
            return;
          }
          process(held.shift()!, emit);
        }
        if (completed) subscriber.complete();
      };
      const subscription = source.subscribe({
        next(envelope) {
          if (fetching || held.length > 0) {
            held.push(envelope);
            return;
          }
          const keys = missing(envelope);
          if (keys.length === 0) return process(envelope, emit);
          held.push(envelope);
          startFetch([...keys]);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => {
          completed = true;
          if (!fetching && held.length === 0) subscriber.complete();
        },
      });
      return subscription;
    });
}
