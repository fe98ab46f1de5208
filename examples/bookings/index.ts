/**
 * `tributary/bookings`: the booking example as a package subpath, so the README's pipeline
 * runs as written: the unified schema, the seven vendors' mappings and read options, the
 * migrations and sample files, the pipeline that puts them together, and the compliance
 * helpers (`customerOf`, `sealBookings`) the README's compliance example uses.
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
export { customerOf, CUSTOMER_SCOPE, sealBookings, type SealedBooking } from './compliance';
