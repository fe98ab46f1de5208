import type { VendorMapping } from '../../index';

/**
 * Three vendors, three shapes:
 * - skyway: an airline's JSON export (arrays of nested records), GDS status codes,
 *   prices in cents, ISO times with offsets.
 * - globetrek: an online agency's NDJSON feed, flat, French dates in Paris time, amounts
 *   with a decimal comma, counts as text.
 * - staylodge: a hotel chain's NDJSON API dump, camelCase, epoch seconds, float amounts.
 */
export const mappings: Record<string, VendorMapping> = {
  skyway: {
    fields: {
      vendor: { compute: () => 'skyway' },
      booking_id: { from: 'ref', required: true },
      updated_at: { from: ['updated', 'created'], type: 'datetime', required: true },
      status: { from: 'state', required: true, values: { HK: 'confirmed', KK: 'confirmed', HL: 'pending', XX: 'cancelled', RF: 'refunded' } },
      product: { compute: () => 'flight' },
      booked_at: { from: 'created', type: 'datetime', required: true },
      travel_date: { from: 'departure', type: 'date', required: true },
      origin: 'route.from',
      destination: 'route.to',
      passengers: { compute: (r) => (Array.isArray(r.pax) ? r.pax.length : undefined), type: 'integer', required: true },
      total_amount: { from: 'price.amount_cents', type: 'decimal', minorUnits: 2, required: true },
      currency: { from: 'price.currency', case: 'upper', required: true },
    },
  },
  globetrek: {
    fields: {
      vendor: { compute: () => 'globetrek' },
      booking_id: { from: 'booking_no', required: true },
      updated_at: { from: ['last_modified', 'booked_on'], type: 'datetime', format: 'DD/MM/YYYY HH:mm', timeZone: 'Europe/Paris', required: true },
      status: { from: 'status', required: true, values: { CONF: 'confirmed', PEND: 'pending', CANC: 'cancelled', RFND: 'refunded' } },
      product: { from: 'type', required: true, values: { AIR: 'flight', RAIL: 'rail', HTL: 'hotel', CAR: 'car' } },
      booked_at: { from: 'booked_on', type: 'datetime', format: 'DD/MM/YYYY HH:mm', timeZone: 'Europe/Paris', required: true },
      travel_date: { from: 'travel_date', type: 'date', format: 'DD/MM/YYYY', required: true },
      origin: 'origin',
      destination: 'destination',
      passengers: { from: 'travellers', type: 'integer', required: true },
      total_amount: { from: 'total', type: 'decimal', decimalSeparator: ',', required: true },
      currency: { from: 'ccy', case: 'upper', required: true },
    },
    check: (booking) =>
      booking.status === 'refunded' && !String(booking.total_amount).startsWith('-')
        ? [{ path: '/total', message: 'a refund must have a negative total' }]
        : undefined,
  },
  staylodge: {
    fields: {
      vendor: { compute: () => 'staylodge' },
      booking_id: { from: 'reservationId', required: true },
      updated_at: { from: ['modifiedAt', 'createdAt'], type: 'datetime', format: 'epoch-s', required: true },
      status: { from: 'reservationStatus', required: true, values: { CONFIRMED: 'confirmed', TENTATIVE: 'pending', CANCELLED: 'cancelled' } },
      product: { compute: () => 'hotel' },
      booked_at: { from: 'createdAt', type: 'datetime', format: 'epoch-s', required: true },
      travel_date: { from: 'checkIn', type: 'date', required: true },
      destination: 'hotel.city',
      passengers: { from: 'guests', type: 'integer', required: true },
      total_amount: { from: 'amount', type: 'decimal', required: true },
      currency: { from: 'currency', case: 'upper', required: true },
    },
  },
};
