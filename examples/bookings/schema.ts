import type { FromSchema } from 'json-schema-to-ts';

const traveller = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 256 },
    type: { enum: ['adult', 'child', 'infant'] },
    email: { type: 'string', maxLength: 512 },
  },
} as const;

const segment = {
  type: 'object',
  additionalProperties: false,
  required: ['origin', 'destination', 'departs_at'],
  properties: {
    carrier: { type: 'string', maxLength: 8 },
    number: { type: 'string', maxLength: 16 },
    origin: { type: 'string', minLength: 1, maxLength: 128 },
    destination: { type: 'string', minLength: 1, maxLength: 128 },
    departs_at: { type: 'string', format: 'date-time' },
    arrives_at: { type: 'string', format: 'date-time' },
  },
} as const;

/**
 * The unified booking: what every vendor's record becomes before it is stored. `passengers`
 * is the head count; `travellers` and `segments` carry the details when a vendor sends
 * them (the 001 migration does not store them yet).
 */
export const bookingSchema = {
  $id: 'booking/1',
  type: 'object',
  additionalProperties: false,
  required: ['vendor', 'booking_id', 'updated_at', 'status', 'product', 'booked_at', 'travel_date', 'passengers', 'total_amount', 'currency'],
  properties: {
    vendor: { type: 'string', minLength: 1 },
    booking_id: { type: 'string', minLength: 1, maxLength: 64 },
    updated_at: { type: 'string', format: 'date-time' },
    status: { enum: ['confirmed', 'pending', 'cancelled', 'refunded'] },
    product: { enum: ['flight', 'hotel', 'car', 'rail'] },
    booked_at: { type: 'string', format: 'date-time' },
    travel_date: { type: 'string', format: 'date' },
    origin: { type: 'string', maxLength: 128 },
    destination: { type: 'string', maxLength: 128 },
    passengers: { type: 'integer', minimum: 1, maximum: 999 },
    total_amount: { type: 'string', pattern: '^-?\\d{1,14}(\\.\\d{1,4})?$' },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    travellers: { type: 'array', maxItems: 999, items: traveller },
    segments: { type: 'array', maxItems: 64, items: segment },
  },
} as const;

/** A booking as the schema defines it: derived from `bookingSchema`, so the two cannot drift. */
export type Booking = FromSchema<typeof bookingSchema>;
export type Traveller = FromSchema<typeof traveller>;
export type Segment = FromSchema<typeof segment>;
