import type { VendorMapping } from '../../index';

const TRIPWIRE_TRAVELLER_TYPES = { ADT: 'adult', CHD: 'child', INF: 'infant' } as const;

const FARELINK_PASSENGER_TYPES = { ADT: 'adult', CHD: 'child', INF: 'infant' } as const;

/**
 * Seven vendors, seven shapes:
 * - skyway: an airline's JSON export (arrays of nested records), GDS status codes,
 *   prices in cents, ISO times with offsets.
 * - globetrek: an online agency's NDJSON feed, flat, French dates in Paris time, amounts
 *   with a decimal comma, counts as text.
 * - staylodge: a hotel chain's NDJSON API dump, camelCase, epoch seconds, float amounts.
 * - tripwire: a webhook payload (an event envelope around the booking), upper-case enums,
 *   money as decimal text, travellers and flight segments as arrays.
 * - railbase: a legacy semicolon CSV export (records as the CSV parser gives them, every
 *   value text), terse column names, compact dates in Berlin time, decimal commas,
 *   passengers spread over PAX1..PAX4 columns.
 * - farelink: a GDS-style XML feed of PNRs: the record locator, status and times as
 *   attributes, passengers and flight segments as repeated elements, local times with
 *   their offsets, the fare total as text with its currency as an attribute.
 * - backdesk: a back-office CSV export (comma-separated, header row, quoted names that
 *   hold commas), US dates in New York time, English column titles with spaces.
 *
 * How each vendor's files are read (CSV delimiter, XML record element, encoding) is in
 * `pipeline.ts`; what a record means is here.
 */
export const mappings: Record<string, VendorMapping> = {
  skyway: {
    fields: {
      booking_id: { from: 'ref', required: true },
      updated_at: { from: ['updated', 'created'], type: 'datetime', required: true },
      status: { from: 'state', required: true, values: { HK: 'confirmed', KK: 'confirmed', HL: 'pending', XX: 'cancelled', RF: 'refunded' } },
      product: { value: 'flight' },
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
    checks: [{ when: { status: 'refunded' }, require: { total_amount: { startsWith: '-' } }, path: '/total', message: 'a refund must have a negative total' }],
  },
  staylodge: {
    fields: {
      booking_id: { from: 'reservationId', required: true },
      updated_at: { from: ['modifiedAt', 'createdAt'], type: 'datetime', format: 'epoch-s', required: true },
      status: { from: 'reservationStatus', required: true, values: { CONFIRMED: 'confirmed', TENTATIVE: 'pending', CANCELLED: 'cancelled' } },
      product: { value: 'hotel' },
      booked_at: { from: 'createdAt', type: 'datetime', format: 'epoch-s', required: true },
      travel_date: { from: 'checkIn', type: 'date', required: true },
      destination: 'hotel.city',
      passengers: { from: 'guests', type: 'integer', required: true },
      total_amount: { from: 'amount', type: 'decimal', required: true },
      currency: { from: 'currency', case: 'upper', required: true },
    },
  },
  tripwire: {
    fields: {
      booking_id: { from: 'data.booking.id', required: true },
      updated_at: { from: ['data.booking.updated_at', 'occurred_at'], type: 'datetime', required: true },
      status: { from: 'data.booking.status', required: true, values: { CONFIRMED: 'confirmed', ON_HOLD: 'pending', CANCELLED: 'cancelled', REFUNDED: 'refunded' } },
      product: { from: 'data.booking.product_type', required: true, values: { FLIGHT: 'flight', HOTEL: 'hotel', CAR: 'car', TRAIN: 'rail' } },
      booked_at: { from: 'data.booking.created_at', type: 'datetime', required: true },
      // The local day of the first departure, as the traveller's ticket shows it.
      travel_date: { compute: (r) => String(r.data?.booking?.itinerary?.segments?.[0]?.departure?.at ?? '').slice(0, 10), type: 'date', required: true },
      origin: 'data.booking.itinerary.segments.0.departure.airport',
      destination: { compute: (r) => r.data?.booking?.itinerary?.segments?.at?.(-1)?.arrival?.airport },
      passengers: { compute: (r) => (Array.isArray(r.data?.booking?.travellers) ? r.data.booking.travellers.length : undefined), type: 'integer', required: true },
      total_amount: { from: 'data.booking.total.amount', type: 'decimal', required: true },
      currency: { from: 'data.booking.total.currency', case: 'upper', required: true },
      travellers: {
        from: 'data.booking.travellers',
        items: {
          name: { compute: (t) => [t.first_name, t.last_name].filter(Boolean).join(' '), required: true },
          type: { from: 'type', values: TRIPWIRE_TRAVELLER_TYPES },
          email: { from: 'contact.email', case: 'lower' },
        },
      },
      segments: {
        from: 'data.booking.itinerary.segments',
        items: {
          carrier: 'marketing_carrier',
          number: 'flight_number',
          origin: { from: 'departure.airport', required: true },
          destination: { from: 'arrival.airport', required: true },
          departs_at: { from: 'departure.at', type: 'datetime', required: true },
          arrives_at: { from: 'arrival.at', type: 'datetime' },
        },
      },
    },
    check: (_booking, input) =>
      input?.event !== undefined && !String(input.event).startsWith('booking.') ? [{ path: '/event', message: `not a booking event: ${String(input.event).slice(0, 64)}` }] : undefined,
  },
  railbase: {
    fields: {
      booking_id: { from: 'RESNO', required: true },
      updated_at: { from: ['CHGDATE', 'RESDATE'], type: 'datetime', format: 'YYYYMMDD HHmm', timeZone: 'Europe/Berlin', required: true },
      status: { from: 'STAT', required: true, values: { B: 'confirmed', V: 'pending', S: 'cancelled', E: 'refunded' } },
      product: { value: 'rail' },
      booked_at: { from: 'RESDATE', type: 'datetime', format: 'YYYYMMDD HHmm', timeZone: 'Europe/Berlin', required: true },
      travel_date: { from: 'TRAVDATE', type: 'date', format: 'DD.MM.YYYY', required: true },
      origin: 'DEP',
      destination: 'ARR',
      passengers: { compute: (r) => railbasePax(r).length || undefined, type: 'integer', required: true },
      total_amount: { from: 'AMOUNT', type: 'decimal', decimalSeparator: ',', required: true },
      currency: { from: 'CUR', case: 'upper', default: 'EUR' },
      travellers: { compute: (r) => railbasePax(r).map((name) => ({ name })), items: { name: { from: 'name', required: true } } },
    },
    checks: [{ when: { status: 'refunded' }, require: { total_amount: { startsWith: '-' } }, path: '/AMOUNT', message: 'a refund must have a negative amount' }],
  },
  farelink: {
    fields: {
      booking_id: { from: '@locator', required: true },
      updated_at: { from: ['@modified', '@created'], type: 'datetime', required: true },
      // GDS status codes: holding confirmed, confirmed by the airline, waitlisted, cancelled.
      status: { from: '@status', required: true, values: { HK: 'confirmed', KK: 'confirmed', TK: 'confirmed', HL: 'pending', XX: 'cancelled', HX: 'cancelled' } },
      product: { value: 'flight' },
      booked_at: { from: '@created', type: 'datetime', required: true },
      // The local day of the first departure, as the ticket shows it.
      travel_date: { compute: (r) => String(r.Itinerary?.Segment?.[0]?.Departure?.['#text'] ?? '').slice(0, 10), type: 'date', required: true },
      origin: 'Itinerary.Segment.0.Departure.@airport',
      destination: { compute: farelinkDestination },
      passengers: { compute: (r) => (Array.isArray(r.Passengers?.Passenger) ? r.Passengers.Passenger.length : undefined), type: 'integer', required: true },
      total_amount: { from: 'Fare.Total.#text', type: 'decimal', required: true },
      currency: { from: 'Fare.Total.@currency', case: 'upper', required: true },
      travellers: {
        from: 'Passengers.Passenger',
        items: {
          name: { compute: (p) => [p.GivenName, p.Surname].filter(Boolean).join(' '), required: true },
          type: { from: '@type', values: FARELINK_PASSENGER_TYPES },
        },
      },
      segments: {
        from: 'Itinerary.Segment',
        items: {
          carrier: 'Carrier',
          number: 'Flight',
          origin: { from: 'Departure.@airport', required: true },
          destination: { from: 'Arrival.@airport', required: true },
          departs_at: { from: 'Departure.#text', type: 'datetime', required: true },
          arrives_at: { from: 'Arrival.#text', type: 'datetime' },
        },
      },
    },
  },
  backdesk: {
    fields: {
      booking_id: { from: 'Booking Ref', required: true },
      updated_at: { from: ['Modified', 'Booked'], type: 'datetime', format: 'MM/DD/YYYY HH:mm', timeZone: 'America/New_York', required: true },
      // OK confirmed, RQ on request, CX cancelled, RF refunded.
      status: { from: 'Status', required: true, values: { OK: 'confirmed', RQ: 'pending', CX: 'cancelled', RF: 'refunded' } },
      product: { from: 'Product', required: true, values: { AIR: 'flight', HTL: 'hotel', RAIL: 'rail', CAR: 'car' } },
      booked_at: { from: 'Booked', type: 'datetime', format: 'MM/DD/YYYY HH:mm', timeZone: 'America/New_York', required: true },
      travel_date: { from: 'Travel Date', type: 'date', format: 'MM/DD/YYYY', required: true },
      origin: 'From',
      destination: 'To',
      passengers: { from: 'Pax', type: 'integer', required: true },
      total_amount: { from: 'Amount', type: 'decimal', required: true },
      currency: { from: 'Currency', case: 'upper', required: true },
      // "Surname, Given" in the export; the lead passenger is the one traveller it names.
      travellers: { compute: (r) => backdeskLead(r['Lead Passenger']), items: { name: { from: 'name', required: true } } },
    },
    checks: [{ when: { status: 'refunded' }, require: { total_amount: { startsWith: '-' } }, path: '/Amount', message: 'a refund must have a negative amount' }],
  },
};

/**
 * A PNR names no destination: it is where the trip turns, the last arrival that is not
 * back at the first departure (FRA–JFK–FRA goes to JFK; FRA–JFK one way, to JFK).
 */
function farelinkDestination(record: any): unknown {
  const segments: any[] = Array.isArray(record.Itinerary?.Segment) ? record.Itinerary.Segment : [];
  const home = segments[0]?.Departure?.['@airport'];
  for (let i = segments.length - 1; i >= 0; i--) {
    const airport = segments[i]?.Arrival?.['@airport'];
    if (airport !== undefined && airport !== home) return airport;
  }
  return segments.at(-1)?.Arrival?.['@airport'];
}

/** backdesk writes the lead passenger as `Surname, Given`; the booking says `Given Surname`. */
function backdeskLead(value: unknown): { name: string }[] | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  const comma = value.indexOf(',');
  const name = comma < 0 ? value.trim() : `${value.slice(comma + 1).trim()} ${value.slice(0, comma).trim()}`.trim();
  return [{ name }];
}

/** railbase spreads passenger names over PAX1..PAX4; empty columns are no passenger. */
function railbasePax(record: Record<string, unknown>): string[] {
  const names: string[] = [];
  for (const column of ['PAX1', 'PAX2', 'PAX3', 'PAX4']) {
    const name = record[column];
    if (typeof name === 'string' && name.trim() !== '') names.push(name.trim());
  }
  return names;
}
