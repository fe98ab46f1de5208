import { basename, dirname } from 'node:path';
import { pipe } from 'rxjs';
import { fromFiles, normalize, Pipeline, toClickHouse, validate, type ClickHouseClient, type FileProgress, type PipelineOptions } from '../../index';
import { mappings } from './mappings';
import { bookingSchema, type Booking } from './schema';

export interface BookingPipelineOptions extends Partial<Pick<PipelineOptions<Booking>, 'batch' | 'inFlight' | 'sinkConcurrency' | 'name'>> {
  client: ClickHouseClient;
  /** Files or directories; a file's vendor is the name of its directory. */
  paths: string[];
  /** Progress of each file as it is read. */
  onProgress?: (progress: FileProgress) => void;
}

/** Vendor files → normalize → validate → bookings, refused records → dead_letters. */
export function bookingPipeline(options: BookingPipelineOptions): Pipeline<Booking> {
  return new Pipeline<Booking>({
    name: options.name ?? 'bookings',
    source: fromFiles({
      paths: options.paths,
      vendor: (file) => basename(dirname(file)),
      ...(options.onProgress && { onProgress: options.onProgress, progressEveryMs: 250 }),
    }),
    transform: pipe(normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' })),
    sink: toClickHouse({ client: options.client, table: 'bookings' }),
    deadLetters: toClickHouse({ client: options.client, table: 'dead_letters' }),
    ...(options.batch && { batch: options.batch }),
    ...(options.inFlight && { inFlight: options.inFlight }),
    ...(options.sinkConcurrency && { sinkConcurrency: options.sinkConcurrency }),
  });
}
