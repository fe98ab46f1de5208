import { Observable } from 'rxjs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConnectorError } from '../../lib/errors';
import type { Source, SourceContext } from '../../lib/source';

export interface FromIterableOptions<T> {
  /** Names the source in `meta.source` and positions. @default 'iterable' */
  name?: string;
  /** Vendor stamped on every record's `meta.vendor`. */
  vendor?: string;
  /**
   * Received size of an item, for the byte budget. @default the length of a string or
   * bytes; for other values an estimate of their JSON length (strings by length, other
   * scalars 8), made without writing the JSON
   */
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
        /** Emits one item once it has its credit; a promise only when the credit must be waited for. */
        const emit = (item: T, bytes: number) => {
          index++;
          const meta: RecordMeta = { source: name, position: `${name}@${index}`, record: index, receivedAt: Date.now(), attempt: 1 };
          if (options.vendor !== undefined) meta.vendor = options.vendor;
          // Text and bytes are their own payload for a dead letter; other values are written as JSON there.
          subscriber.next(context.envelope(item, meta, typeof item === 'string' || item instanceof Uint8Array ? item : undefined, bytes));
        };
        (async () => {
          // A synchronous iterable is read synchronously while credits last: `for await`
          // would cost a promise and a turn of the microtask queue per item.
          const sync = Symbol.iterator in Object(items) ? (items as Iterable<T>) : undefined;
          if (sync) {
            for (const item of sync) {
              if (context.signal.aborted || subscriber.closed) break;
              const bytes = sizeOf(item);
              const wait = context.credits.take(bytes);
              if (wait) await wait;
              if (context.signal.aborted || subscriber.closed) break;
              emit(item, bytes);
            }
            return;
          }
          for await (const item of items as AsyncIterable<T>) {
            if (context.signal.aborted || subscriber.closed) break;
            const bytes = sizeOf(item);
            const wait = context.credits.take(bytes);
            if (wait) await wait;
            emit(item, bytes);
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
  return estimatedJsonLength(item, 0);
}

/**
 * About the length of `value` as JSON, a tenth of the cost of writing it: strings by
 * length, other scalars 8, keys and separators counted; below four levels of nesting a
 * value counts 64.
 */
function estimatedJsonLength(value: unknown, depth: number): number {
  if (typeof value === 'string') return value.length + 2;
  if (value === null || typeof value !== 'object') return 8;
  if (value instanceof Uint8Array) return value.byteLength;
  if (depth === 4) return 64;
  let size = 2;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) size += estimatedJsonLength(value[i], depth + 1) + 1;
    return size;
  }
  for (const key in value) size += key.length + 4 + estimatedJsonLength((value as Record<string, unknown>)[key], depth + 1);
  return size;
}
