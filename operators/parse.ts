import { isUtf8 } from 'node:buffer';
import { Observable, type OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, ParseError } from '../lib/errors';
import { recordOperator } from './recordOperator';

export interface ParseOptions {
  /**
   * `json`: the payload is one JSON value. `ndjson`: one JSON value per line; the
   * payload becomes one record per line, and is acked when all of them are.
   * @default 'json'
   */
  format?: 'json' | 'ndjson';
}

/**
 * Parses payloads (strings or UTF-8 bytes) arriving from Kafka, webhooks or pollers.
 *
 * A payload that is not valid UTF-8 or not valid JSON is dead-lettered with the parser's
 * message; with `ndjson`, only the bad lines are.
 *
 * ## Example
 * ```ts
 * import { parse } from 'tributary';
 * messages$.pipe(parse({ format: 'ndjson' }));
 * ```
 *
 * @returns An operator from raw payloads to parsed values.
 */
export function parse(options: ParseOptions = {}): OperatorFunction<Envelope<string | Uint8Array>, Envelope<unknown>> {
  const format = options.format ?? 'json';
  if (format === 'json') return recordOperator('parse', (payload) => parseJson(textOf(payload), ''));
  if (format !== 'ndjson') throw new ConfigError(`format must be 'json' or 'ndjson', got ${JSON.stringify(format)}`);
  return (source) =>
    new Observable<Envelope<unknown>>((subscriber) =>
      source.subscribe({
        next(envelope) {
          let lines: string[];
          try {
            lines = textOf(envelope.value).split('\n');
          } catch (error) {
            envelope.reject({ stage: 'parse', code: (error as ParseError).code, message: (error as Error).message, path: '' });
            return;
          }
          const numbered: { text: string; line: number }[] = [];
          lines.forEach((text, index) => {
            const trimmed = text.endsWith('\r') ? text.slice(0, -1) : text;
            if (trimmed.trim() !== '') numbered.push({ text: trimmed, line: index + 1 });
          });
          const parts = envelope.split(numbered, (i) => ({ line: numbered[i]!.line, record: i + 1 }));
          for (const part of parts) {
            const { text, line } = part.value;
            part.raw = text;
            let value: unknown;
            try {
              value = parseJson(text, `line ${line}: `);
            } catch (error) {
              part.reject({ stage: 'parse', code: 'PARSE_JSON', message: (error as Error).message, path: '' });
              continue;
            }
            subscriber.next(part.map(value));
          }
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
}

function textOf(payload: string | Uint8Array): string {
  if (typeof payload === 'string') return payload;
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (!isUtf8(bytes)) throw new ParseError('payload is not valid UTF-8', 'INVALID_UTF8');
  return bytes.toString('utf8');
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new ParseError(`${where}${(cause as Error).message}`, 'PARSE_JSON', {}, cause);
  }
}
