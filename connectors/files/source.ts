import { readdir, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { Observable } from 'rxjs';
import type { Envelope } from '../../lib/envelope';
import { ConfigError, ConnectorError } from '../../lib/errors';
import { resolveRecordLimits } from '../../lib/limits';
import { booleanOption, nonNegativeInteger, positiveInteger } from '../../lib/options';
import type { Source, SourceContext } from '../../lib/source';
import { csvOptionsIn, resolveCsvOptions, type CsvOptions } from '../../formats/csv';
import { encodingOption, type FileEncoding } from '../../formats/encoding';
import { readFile, rejectUnreadable, type FileFormat, type FileProgress, type ReadSettings } from './read';
import { resolveXmlOptions, type XmlOptions } from '../../formats/xml';

export type { FileFormat, FileProgress } from './read';

export interface FromFilesOptions {
  /**
   * Files, or directories whose files (by extension, sorted by name) are read in turn.
   * In a directory, a file no configured format reads (an XML file without `xml`, an
   * extension with no format and no `format` set) becomes one `UNREADABLE_FILE` dead
   * letter naming it and the option to set; hidden files (`.name`) and subdirectories
   * are left alone.
   */
  paths: string | readonly string[];
  /**
   * `ndjson`: one JSON value per line. `json`: one top-level array, streamed element by
   * element. `csv`: rows (see `csv`). `xml`: the elements named by `xml.record`.
   * @default by extension, after any `.gz`: `.ndjson`/`.jsonl` → ndjson, `.json` → json,
   * `.csv` → csv, `.xml` → xml
   */
  format?: FileFormat;
  /** CSV layout. @default header row, ',' and '"' */
  csv?: CsvOptions;
  /** Which XML elements are records; required to read XML. */
  xml?: XmlOptions;
  /**
   * The files' text encoding when they have no byte order mark (a BOM always wins; an XML
   * declaration comes next). @default 'utf-8'
   */
  encoding?: FileEncoding | 'utf8' | 'iso-8859-1' | 'cp1252';
  /** Names the source in `meta.source`. @default 'files' */
  name?: string;
  /** The vendor of a file's records (`meta.vendor`): fixed, or decided per file. */
  vendor?: string | ((file: string) => string | undefined);
  /** Longest record (a line, an element) in bytes; a longer one is dead-lettered. @default 1 MiB */
  maxRecordBytes?: number;
  /** Deepest nesting in an NDJSON line, a JSON array element or an XML record; deeper is dead-lettered. @default 64 */
  maxDepth?: number;
  /**
   * Read size. @default 1 MiB for NDJSON, JSON and CSV (framing ASCII lines costs half
   * what it did at 256 KiB: a read becomes one string, kept outside V8's heap at this size);
   * 256 KiB for XML, whose parser builds its strings a character at a time
   */
  chunkBytes?: number;
  /** Called as a file is read (at most every `progressEveryMs`) and when it ends. */
  onProgress?: (progress: FileProgress) => void;
  /** Least time between two progress events of a file; 0 sends one per read chunk. @default 1000 */
  progressEveryMs?: number;
  /**
   * Cut sink batches where a run over the same files cuts them again: records of two files
   * never share a batch, and a batch ends at the batch's row or byte limit or at its file's
   * end, never at `maxWaitMs` (it waits up to 30 s for its next record). Run again, each
   * batch holds the same records and carries the same insert token, which ClickHouse
   * absorbs, so nothing is stored twice. A batch cut short by `stop()` is nacked unwritten
   * (a run reads every file whole anyway). Without it, a batch cut by `maxWaitMs` (a sink
   * slow enough to hold the reading back) is cut elsewhere by the next run and its rows are
   * stored again. Costs at least one insert per file. @default false
   */
  alignBatches?: boolean;
}

const FORMATS: readonly FileFormat[] = ['ndjson', 'json', 'csv', 'xml'];
const EXTENSIONS: Record<string, FileFormat> = { '.ndjson': 'ndjson', '.jsonl': 'ndjson', '.json': 'json', '.csv': 'csv', '.xml': 'xml' };

/** The format a file name says, looking through a `.gz` suffix. */
export function formatOfName(name: string): FileFormat | undefined {
  const lower = name.toLowerCase();
  return EXTENSIONS[extname(lower.endsWith('.gz') ? lower.slice(0, -3) : lower)];
}

/**
 * Streams records from NDJSON, JSON-array, CSV and XML files, gzipped or not, a chunk
 * at a time.
 *
 * Memory holds one read chunk plus the records in flight, whatever the file size. A
 * record that cannot be read (bad JSON, a ragged CSV row, broken XML, bad bytes, too
 * large, too deep) becomes a dead letter naming file, line and byte offset, and the file
 * goes on. A path that cannot be read fails the source with a {@link ConnectorError}.
 *
 * ## Example
 * ```ts
 * import { fromFiles } from 'tributary';
 * const source = fromFiles({ paths: ['inbox/acme'], vendor: 'acme', xml: { record: 'Booking' } });
 * ```
 */
export function fromFiles(options: FromFilesOptions): Source<unknown> {
  const paths = typeof options.paths === 'string' ? [options.paths] : [...(options.paths ?? [])];
  if (paths.length === 0) throw new ConfigError('paths must name at least one file or directory');
  const settings = resolveReadSettings(options, options.name ?? 'files');
  if (!settings.xml && options.format === undefined) {
    const xmlPath = paths.find((p) => formatOfName(p) === 'xml');
    if (xmlPath !== undefined) throw new ConfigError(`${xmlPath} is XML: set xml.record to the element that holds one record`);
  }
  const aligned = booleanOption(options.alignBatches, false, 'alignBatches');
  const vendorOf = vendorFunction(options.vendor);
  /** The last record emitted of each file read to its end; the stop signal of the run. */
  const fileEnds = new Map<string, number>();
  let stopping: AbortSignal | undefined;

  return {
    name: settings.source,
    ...(aligned && {
      batchKey: (envelope: Envelope<unknown>) => envelope.meta.file ?? '',
      // Not cut by time: a batch ends at the row or byte limit or where its file (its key) ends.
      replayedBatch: () => 'within' as const,
      // A stop cuts the batch being gathered short, where no other run would cut it.
      beforeWrite: (envelopes: readonly Envelope<unknown>[]) => {
        if (!stopping?.aborted) return true;
        const { file, record } = envelopes[envelopes.length - 1]!.meta;
        return file !== undefined && record !== undefined && fileEnds.get(file) === record;
      },
    }),
    open(context: SourceContext) {
      stopping = context.signal;
      fileEnds.clear();
      return new Observable<Envelope<unknown>>((subscriber) => {
        const emitted = new Map<string, number>();
        const emit = aligned
          ? (envelope: Envelope<unknown>) => {
              emitted.set(envelope.meta.file!, envelope.meta.record!);
              subscriber.next(envelope);
            }
          : (envelope: Envelope<unknown>) => subscriber.next(envelope);
        (async () => {
          const files = await listFiles(paths, options.format, settings.xml !== undefined);
          for (const entry of files) {
            if (context.signal.aborted) return;
            if (entry.unreadable !== undefined) await rejectUnreadable(entry.file, vendorOf(entry.file), entry.unreadable, settings, context);
            else await readFile(entry.file, entry.format, vendorOf(entry.file), settings, context, emit);
            const end = emitted.get(entry.file);
            if (!context.signal.aborted && end !== undefined) fileEnds.set(entry.file, end);
          }
        })().then(
          () => subscriber.complete(),
          (error: unknown) => subscriber.error(error),
        );
      });
    },
  };
}

/** Validates the reading options shared by `fromFiles` and `fromInbox`. */
export function resolveReadSettings(options: Omit<FromFilesOptions, 'paths'>, source: string): ReadSettings {
  if (options.format !== undefined && !FORMATS.includes(options.format)) {
    throw new ConfigError(`format must be one of ${FORMATS.map((f) => `'${f}'`).join(', ')}, got ${JSON.stringify(options.format)}`);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new ConfigError(`onProgress must be a function, got ${typeof options.onProgress}`);
  }
  const encoding = encodingOption(options.encoding);
  const csv = resolveCsvOptions(options.csv);
  // A file with a byte order mark is read as UTF: the options must suit the declared encoding.
  csvOptionsIn(csv, encoding);
  return {
    source,
    limits: resolveRecordLimits(options),
    chunkBytes: options.chunkBytes === undefined ? undefined : positiveInteger(options.chunkBytes, 0, 'chunkBytes'),
    encoding,
    csv,
    // XML options are required only to read XML; when given, they are checked now.
    xml: options.xml !== undefined || options.format === 'xml' ? resolveXmlOptions(options.xml) : undefined,
    onProgress: options.onProgress,
    progressEveryMs: nonNegativeInteger(options.progressEveryMs, 1000, 'progressEveryMs'),
  };
}

export function vendorFunction(vendor: FromFilesOptions['vendor']): (file: string) => string | undefined {
  return typeof vendor === 'function' ? vendor : () => vendor;
}

/** A file to read in its format, or one no configured format reads and why. */
type Listed = { file: string; format: FileFormat; unreadable?: undefined } | { file: string; format?: undefined; unreadable: string };

async function listFiles(paths: readonly string[], format: FileFormat | undefined, xml: boolean): Promise<Listed[]> {
  const files: Listed[] = [];
  for (const path of paths) {
    const absolute = resolve(path);
    const info = await stat(absolute).catch((cause: NodeJS.ErrnoException) => {
      throw new ConnectorError(`cannot read ${path}: ${cause.code ?? cause.message}`, { cause });
    });
    if (info.isDirectory()) {
      const entries = (await readdir(absolute, { withFileTypes: true })).filter((e) => !e.name.startsWith('.') && (e.isFile() || e.isSymbolicLink()));
      for (const name of entries.map((e) => e.name).sort()) {
        const file = join(absolute, name);
        const chosen = format ?? formatOfName(name);
        if (chosen === undefined) files.push({ file, unreadable: `cannot tell the format of ${name} from its extension: set format (or keep it out of ${path})` });
        else if (chosen === 'xml' && !xml) files.push({ file, unreadable: `${name} is XML: set xml.record to the element that holds one record` });
        else files.push({ file, format: chosen });
      }
    } else {
      const chosen = format ?? formatOfName(path);
      if (!chosen) throw new ConfigError(`cannot tell the format of ${path} from its extension: set format`);
      if (chosen === 'xml' && !xml) throw new ConfigError(`${path} is XML: set xml.record to the element that holds one record`);
      files.push({ file: absolute, format: chosen });
    }
  }
  return files;
}
