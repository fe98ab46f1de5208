import { statSync } from 'node:fs';
import { basename, dirname, resolve, sep } from 'node:path';
import { concat, defer, pipe } from 'rxjs';
import { fromFiles, type FileProgress, type FromFilesOptions } from '../../connectors/files';
import {
  normalize,
  Pipeline,
  toClickHouse,
  validate,
  type ClickHouseClient,
  type DeadLetter,
  type PipelineOptions,
  type Sink,
  type Source,
} from '../../index';
import { mappings } from './mappings';
import { bookingSchema, type Booking } from './schema';

/** The vendors with sample files in `data/<vendor>/`, in the order the demo reads them. */
export const SAMPLE_VENDORS = ['skyway', 'globetrek', 'staylodge', 'tripwire', 'railbase', 'farelink', 'backdesk'] as const;

/** What a file's name cannot say about how to read it: the CSV layout, the XML record, the encoding. */
export type VendorReadOptions = Pick<FromFilesOptions, 'csv' | 'xml' | 'encoding'>;

/**
 * Per vendor, how its files are read; a vendor not listed is read by extension with the
 * defaults (UTF-8, comma CSV with a header row).
 */
export const vendorReadOptions: Readonly<Record<string, VendorReadOptions>> = {
  // A legacy export: semicolons, and Windows-1252 because it predates UTF-8 at the vendor.
  railbase: { csv: { delimiter: ';' }, encoding: 'windows-1252' },
  // Names hold commas and are quoted; a name that is not quoted makes a ragged row.
  backdesk: { csv: { delimiter: ',', quote: '"' } },
  // One PNR per record; a PNR with one passenger or one segment still gives arrays.
  farelink: { xml: { record: 'PNR', arrays: ['Passenger', 'Segment'] } },
};

/** A file's vendor is the name of its directory; a directory given as a path names itself. */
export function vendorOfPath(path: string, isDirectory: boolean): string {
  return basename(isDirectory ? resolve(path) : dirname(resolve(path)));
}

export interface BookingSourceOptions {
  /** Files or directories; a file's vendor is the name of its directory, unless `vendor` is given. */
  paths: readonly string[];
  /** The vendor of every file, instead of their directories' names. @default none */
  vendor?: string;
  /** Progress of each file as it is read. */
  onProgress?: (progress: FileProgress) => void;
  /**
   * Batches (of records and of dead letters) that a run again over the same files cuts
   * at the same records, so it stores nothing twice: `fromFiles`' `alignBatches`. @default false
   */
  alignBatches?: boolean;
}

/**
 * The booking files as one source: the paths are grouped by vendor (in the order each
 * vendor first appears) and each group is read with that vendor's options, one group
 * after the other, so a re-run reads the same records in the same order. With
 * `alignBatches` it cuts its batches as each `fromFiles` does (by file, never by time).
 */
export function bookingSource(options: BookingSourceOptions): Source<unknown> {
  const groups = new Map<string, string[]>();
  for (const path of options.paths) {
    // A path that does not exist is left to fromFiles, which fails the source naming it.
    const isDirectory = statSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false;
    const vendor = options.vendor ?? vendorOfPath(path, isDirectory);
    groups.set(vendor, [...(groups.get(vendor) ?? []), path]);
  }
  const aligned = options.alignBatches === true;
  const sources = [...groups].map(([vendor, paths]) => ({
    paths: paths.map((path) => resolve(path)),
    source: fromFiles({
      paths,
      vendor: options.vendor ?? ((file) => basename(dirname(file))),
      ...vendorReadOptions[vendor],
      ...(options.onProgress && { onProgress: options.onProgress, progressEveryMs: 250 }),
      ...(options.alignBatches !== undefined && { alignBatches: options.alignBatches }),
    }),
  }));
  const combined: Source<unknown> = {
    name: 'files',
    open: (context) => concat(...sources.map(({ source }) => defer(() => source.open(context)))),
  };
  if (!aligned) return combined;
  // The file's own source says whether a batch may be written (a stop cuts it short).
  const ownerOf = (file: string | undefined) =>
    file === undefined ? undefined : sources.find(({ paths }) => paths.some((path) => file === path || file.startsWith(path + sep)))?.source;
  const first = sources[0]?.source;
  return {
    ...combined,
    ...(first?.batchKey && { batchKey: first.batchKey.bind(first) }),
    ...(first?.replayedBatch && { replayedBatch: first.replayedBatch.bind(first) }),
    beforeWrite: (envelopes) => ownerOf(envelopes[envelopes.length - 1]?.meta.file)?.beforeWrite?.(envelopes) ?? true,
  };
}

export interface BookingPipelineOptions extends Partial<Pick<PipelineOptions<Booking>, 'batch' | 'inFlight' | 'sinkConcurrency' | 'name'>> {
  client: ClickHouseClient;
  /** Files or directories; a file's vendor is the name of its directory, unless `vendor` is given. */
  paths: string[];
  /** The vendor of every file, instead of their directories' names. @default none */
  vendor?: string;
  /** Progress of each file as it is read. */
  onProgress?: (progress: FileProgress) => void;
  /** Each refused record as it joins a dead-letter batch (to count them by reason). */
  onDeadLetter?: (letter: DeadLetter) => void;
  /**
   * Cut batches, and dead-letter batches, where a run again over the same files cuts them,
   * so that running it again stores nothing twice (see `bookingSource`). False lets a batch
   * hold several files' records, and a batch cut by `batch.maxWaitMs` is then cut elsewhere
   * by a run again. False by default, as in `fromFiles`: aligned batches cost about a tenth
   * of the throughput of one large file; the demo and `tributary ingest` turn it on.
   * @default false
   */
  alignBatches?: boolean;
}

/** The transform every booking goes through: the vendor's mapping, then the unified schema. */
export function bookingTransform() {
  return pipe(normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' }));
}

/** Vendor files → normalize → validate → bookings, refused records → dead_letters. */
export function bookingPipeline(options: BookingPipelineOptions): Pipeline<Booking> {
  return new Pipeline<Booking>({
    name: options.name ?? 'bookings',
    source: bookingSource({
      paths: options.paths,
      ...(options.vendor !== undefined && { vendor: options.vendor }),
      ...(options.onProgress && { onProgress: options.onProgress }),
      alignBatches: options.alignBatches ?? false,
    }),
    transform: bookingTransform(),
    sink: toClickHouse({ client: options.client, table: 'bookings' }),
    deadLetters: watched(toClickHouse<DeadLetter>({ client: options.client, table: 'dead_letters' }), options.onDeadLetter),
    ...(options.batch && { batch: options.batch }),
    ...(options.inFlight && { inFlight: options.inFlight }),
    ...(options.sinkConcurrency && { sinkConcurrency: options.sinkConcurrency }),
  });
}

/** `sink` with `onLetter` told of each letter as it is encoded for a batch. */
function watched(sink: Sink<DeadLetter>, onLetter: ((letter: DeadLetter) => void) | undefined): Sink<DeadLetter> {
  if (!onLetter || !sink.encode) return sink;
  const encode = sink.encode.bind(sink);
  return {
    name: sink.name,
    ...(sink.open && { open: sink.open.bind(sink) }),
    encode(letter) {
      onLetter(letter);
      return encode(letter);
    },
    write: sink.write.bind(sink),
    ...(sink.close && { close: sink.close.bind(sink) }),
  };
}
