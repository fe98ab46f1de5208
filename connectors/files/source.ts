import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { Observable } from 'rxjs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConfigError, ConnectorError } from '../../lib/errors';
import type { Source, SourceContext } from '../../lib/source';
import { JsonArrayFramer, LineFramer, type Framer, type FramingLimits } from './framing';

export type FileFormat = 'ndjson' | 'json';

export interface FromFilesOptions {
  /** Files, or directories whose files (by extension, sorted by name) are read in turn. */
  paths: string | readonly string[];
  /**
   * `ndjson`: one JSON value per line. `json`: one top-level array, streamed element by
   * element. @default by extension: `.ndjson`/`.jsonl` → ndjson, `.json` → json
   */
  format?: FileFormat;
  /** Names the source in `meta.source`. @default 'files' */
  name?: string;
  /** The vendor of a file's records (`meta.vendor`): fixed, or decided per file. */
  vendor?: string | ((file: string) => string | undefined);
  /** Longest record in bytes; a longer one is dead-lettered. @default 1 MiB */
  maxRecordBytes?: number;
  /** Deepest nesting in a JSON array element; deeper is dead-lettered. @default 64 */
  maxDepth?: number;
  /** Read size. @default 256 KiB */
  chunkBytes?: number;
}

const EXTENSIONS: Record<string, FileFormat> = { '.ndjson': 'ndjson', '.jsonl': 'ndjson', '.json': 'json' };

/**
 * Streams records from NDJSON files and JSON-array files, a chunk at a time.
 *
 * Memory holds one read chunk plus the records in flight, whatever the file size. A
 * record that cannot be read (bad JSON, not UTF-8, too large, a truncated array) becomes
 * a dead letter naming file, line and byte offset, and the file goes on. A path that
 * cannot be read fails the source with a {@link ConnectorError}.
 *
 * ## Example
 * ```ts
 * import { fromFiles } from 'tributary';
 * const source = fromFiles({ paths: ['inbox/acme'], vendor: 'acme' });
 * ```
 */
export function fromFiles(options: FromFilesOptions): Source<unknown> {
  const paths = typeof options.paths === 'string' ? [options.paths] : [...(options.paths ?? [])];
  if (paths.length === 0) throw new ConfigError('paths must name at least one file or directory');
  const limits: FramingLimits = {
    maxRecordBytes: positiveInteger(options.maxRecordBytes, 1024 * 1024, 'maxRecordBytes'),
    maxDepth: positiveInteger(options.maxDepth, 64, 'maxDepth'),
  };
  const chunkBytes = positiveInteger(options.chunkBytes, 256 * 1024, 'chunkBytes');
  if (options.format !== undefined && options.format !== 'ndjson' && options.format !== 'json') {
    throw new ConfigError(`format must be 'ndjson' or 'json', got ${JSON.stringify(options.format)}`);
  }
  const name = options.name ?? 'files';
  const vendorOf = typeof options.vendor === 'function' ? options.vendor : () => options.vendor as string | undefined;

  return {
    name,
    open(context: SourceContext) {
      return new Observable<Envelope<unknown>>((subscriber) => {
        const emit = (envelope: Envelope<unknown>) => subscriber.next(envelope);
        (async () => {
          const files = await listFiles(paths, options.format);
          for (const { file, format } of files) {
            if (context.signal.aborted) return;
            await readFile(file, format, vendorOf(file), name, limits, chunkBytes, context, emit);
          }
        })().then(
          () => subscriber.complete(),
          (error: unknown) => subscriber.error(error),
        );
      });
    },
  };
}

async function listFiles(paths: readonly string[], format: FileFormat | undefined): Promise<{ file: string; format: FileFormat }[]> {
  const files: { file: string; format: FileFormat }[] = [];
  for (const path of paths) {
    const absolute = resolve(path);
    const info = await stat(absolute).catch((cause: NodeJS.ErrnoException) => {
      throw new ConnectorError(`cannot read ${path}: ${cause.code ?? cause.message}`, { cause });
    });
    if (info.isDirectory()) {
      const names = (await readdir(absolute)).filter((n) => format ?? EXTENSIONS[extname(n).toLowerCase()]).sort();
      for (const n of names) files.push({ file: join(absolute, n), format: format ?? EXTENSIONS[extname(n).toLowerCase()]! });
    } else {
      const chosen = format ?? EXTENSIONS[extname(path).toLowerCase()];
      if (!chosen) throw new ConfigError(`cannot tell the format of ${path} from its extension: set format`);
      files.push({ file: absolute, format: chosen });
    }
  }
  return files;
}

async function readFile(
  file: string,
  format: FileFormat,
  vendor: string | undefined,
  source: string,
  limits: FramingLimits,
  chunkBytes: number,
  context: SourceContext,
  emit: (envelope: Envelope<unknown>) => void,
): Promise<void> {
  const framer: Framer = format === 'ndjson' ? new LineFramer(limits) : new JsonArrayFramer(limits);
  const stream = createReadStream(file, { highWaterMark: chunkBytes });
  let record = 0;
  const deliver = async (frames: ReturnType<Framer['push']>) => {
    for (const frame of frames) {
      const bytes = frame.bytes.length;
      const wait = context.credits.take(bytes);
      if (wait) await wait;
      const meta: RecordMeta = {
        source,
        position: `${file}@${frame.offset}`,
        file,
        record: ++record,
        line: frame.line,
        offset: frame.offset,
        receivedAt: Date.now(),
        attempt: 1,
      };
      if (vendor !== undefined) meta.vendor = vendor;
      if (frame.error) {
        context.reject(meta, Buffer.from(frame.bytes), bytes, { stage: 'source', path: '', ...frame.error });
        continue;
      }
      if (!frame.utf8) {
        context.reject(meta, Buffer.from(frame.bytes), bytes, {
          stage: 'source',
          code: 'INVALID_UTF8',
          message: `line ${frame.line} is not valid UTF-8`,
          path: '',
        });
        continue;
      }
      const text = frame.bytes.toString('utf8');
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (error) {
        context.reject(meta, text, bytes, {
          stage: 'parse',
          code: 'PARSE_JSON',
          message: `line ${frame.line}: ${(error as Error).message}`,
          path: '',
        });
        continue;
      }
      emit(context.envelope(value, meta, text, bytes));
    }
  };
  try {
    for await (const chunk of stream) {
      await deliver(framer.push(chunk as Buffer));
      if (context.signal.aborted) return;
    }
    await deliver(framer.end());
  } catch (cause) {
    if (cause instanceof ConnectorError) throw cause;
    const code = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    throw new ConnectorError(`cannot read ${file}: ${code}`, { cause });
  } finally {
    stream.destroy();
  }
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1) throw new ConfigError(`${name} must be an integer >= 1, got ${value}`);
  return resolved;
}
