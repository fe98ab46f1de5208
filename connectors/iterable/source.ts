import { Observable } from 'rxjs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConnectorError } from '../../lib/errors';
import type { Source, SourceContext } from '../../lib/source';

export interface FromIterableOptions<T> {
  /** Names the source in `meta.source` and positions. @default 'iterable' */
  name?: string;
  /** Vendor stamped on every record's `meta.vendor`. */
  vendor?: string;
  /** Received size of an item, for the byte budget. @default its JSON length, or length of a string/bytes */
  sizeOf?: (item: T) => number;
}

/**
 * Emits the items of an (async) iterable as envelopes, one credit each. For tests,
 * demos and in-process producers.
 *
 * ## Example
 * ```ts
 * import { fromIterable } from 'tributary';
 * const source = fromIterable([{ id: 1 }, { id: 2 }], { vendor: 'acme' });
 * ```
 */
export function fromIterable<T>(items: Iterable<T> | AsyncIterable<T>, options: FromIterableOptions<T> = {}): Source<T> {
  const name = options.name ?? 'iterable';
  const sizeOf = options.sizeOf ?? defaultSize;
  return {
    name,
    open(context: SourceContext) {
      return new Observable<Envelope<T>>((subscriber) => {
        let index = 0;
        (async () => {
          for await (const item of items as AsyncIterable<T>) {
            if (context.signal.aborted || subscriber.closed) break;
            const bytes = sizeOf(item);
            const wait = context.credits.take(bytes);
            if (wait) await wait;
            index++;
            const meta: RecordMeta = { source: name, position: `${name}@${index}`, record: index, receivedAt: Date.now(), attempt: 1 };
            if (options.vendor !== undefined) meta.vendor = options.vendor;
            subscriber.next(context.envelope(item, meta, typeof item === 'string' ? item : undefined, bytes));
          }
        })().then(
          () => subscriber.complete(),
          (cause: unknown) => subscriber.error(new ConnectorError(`source ${name} failed: ${String(cause)}`, { cause })),
        );
      });
    },
  };
}

function defaultSize(item: unknown): number {
  if (typeof item === 'string') return item.length;
  if (item instanceof Uint8Array) return item.byteLength;
  return JSON.stringify(item)?.length ?? 0;
}
