import { Observable, type OperatorFunction } from 'rxjs';
import type { CsvOptions } from '../formats/csv';
import { encodingOption, type FileEncoding } from '../formats/encoding';
import { documentSplitter, emitNdjson, parseJson, textOf, type PayloadSplitter } from '../formats/payload';
import type { XmlOptions } from '../formats/xml';
import type { Envelope } from '../lib/envelope';
import { ConfigError, ParseError } from '../lib/errors';
import { checkJsonText, resolveRecordLimits } from '../lib/limits';
import { recordOperator } from './recordOperator';

export interface ParseOptions {
  /**
   * `json`: the payload is one JSON value. `ndjson`: one JSON value per line. `csv`: a
   * CSV document (see `csv`). `xml`: an XML document whose `xml.record` elements are the
   * records. With `ndjson`, `csv` and `xml` the payload becomes one record per line, row
   * or element, and is acked when all of them are.
   * @default 'json'
   */
  format?: 'json' | 'ndjson' | 'csv' | 'xml';
  /** CSV layout. @default header row, ',' and '"' */
  csv?: CsvOptions;
  /** Which XML elements are records; required for `xml`. */
  xml?: XmlOptions;
  /** Encoding of CSV and XML byte payloads without a BOM (or, for XML, a declaration). @default 'utf-8' */
  encoding?: FileEncoding | 'utf8' | 'iso-8859-1' | 'cp1252';
  /** Longest record (a JSON payload, an NDJSON line, a CSV row, an XML record) in bytes; a longer one is dead-lettered. @default 1 MiB */
  maxRecordBytes?: number;
  /** Deepest nesting of arrays and objects (XML elements) in a record; deeper is dead-lettered. @default 64 */
  maxDepth?: number;
}

const FORMATS = ['json', 'ndjson', 'csv', 'xml'];

/**
 * Parses payloads (strings or bytes) arriving from Kafka, webhooks or pollers.
 *
 * A payload that is not valid UTF-8 or not valid JSON is dead-lettered with the parser's
 * message; with `ndjson`, `csv` and `xml`, only the bad lines, rows or elements are, each
 * naming its line.
 *
 * ## Example
 * ```ts
 * import { parse } from 'tributary';
 * messages$.pipe(parse({ format: 'csv', csv: { delimiter: ';' } }));
 * ```
 *
 * @returns An operator from raw payloads to parsed values.
 */
export function parse(options: ParseOptions = {}): OperatorFunction<Envelope<string | Uint8Array>, Envelope<unknown>> {
  const format = options.format ?? 'json';
  if (!FORMATS.includes(format)) throw new ConfigError(`format must be one of 'json', 'ndjson', 'csv', 'xml', got ${JSON.stringify(format)}`);
  const limits = resolveRecordLimits(options);
  if (format === 'json') {
    return recordOperator('parse', (payload) => {
      const text = textOf(payload);
      const refused = checkJsonText(text, typeof payload === 'string' ? Buffer.byteLength(text) : payload.byteLength, 'payload', limits, 'parse');
      if (refused) throw new ParseError(refused.message, refused.code);
      return parseJson(text, '');
    });
  }
  const split: PayloadSplitter =
    format === 'ndjson'
      ? (envelope, next) => emitNdjson(envelope, limits, next)
      : documentSplitter(format, { ...(options.csv ? { csv: options.csv } : {}), ...(options.xml ? { xml: options.xml } : {}), encoding: encodingOption(options.encoding) }, limits);
  return (source) =>
    new Observable<Envelope<unknown>>((subscriber) =>
      source.subscribe({
        next: (envelope) => split(envelope, (part) => subscriber.next(part)),
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
}
