/** The unified booking: what every vendor's record becomes before it is stored. */
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
  },
} as const;

export interface Booking {
  vendor: string;
  booking_id: string;
  updated_at: string;
  status: 'confirmed' | 'pending' | 'cancelled' | 'refunded';
  product: 'flight' | 'hotel' | 'car' | 'rail';
  booked_at: string;
  travel_date: string;
  origin?: string;
  destination?: string;
  passengers: number;
  total_amount: string;
  currency: string;
}
