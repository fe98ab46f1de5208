/**
 * `tributary/bookings`: the booking example as a package subpath, so the README's pipeline
 * runs as written: the unified schema, the seven vendors' mappings and read options, the
 * migrations and sample files, and the pipeline that puts them together.
 */
export { bookingSchema, type Booking } from './schema';
export { mappings } from './mappings';
export { migrationsDir, samplesDir } from './paths';
export {
  bookingPipeline,
  bookingSource,
  bookingTransform,
  SAMPLE_VENDORS,
  vendorOfPath,
  vendorReadOptions,
  type BookingPipelineOptions,
  type BookingSourceOptions,
  type VendorReadOptions,
} from './pipeline';
