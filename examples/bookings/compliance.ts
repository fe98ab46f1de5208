import { pipe, type OperatorFunction } from 'rxjs';
import { encrypt, tokenOf, validate, type Envelope } from '../../index';
import type { Keyring, SubjectKeys } from '../../lib/security';
import { recordOperator } from '../../operators/recordOperator';
import { bookingSchema, type Booking } from './schema';

/** A booking as the compliance migration (004) stores it. */
export type SealedBooking = Omit<Booking, 'travellers'> & { customer_token: string; travellers_sealed?: string };

/** The scope of customer tokens: one customer, one token, whatever the vendor. */
export const CUSTOMER_SCOPE = 'customer-email';

/**
 * The data subject of a booking: the token of its lead traveller's e-mail under the
 * primary key of `tokenKeys`, or undefined when the booking names no e-mail. Works on a
 * record at any stage, so a refused record is sealed under its customer's key too.
 * Token keys are kept apart from the master keys: rotating a master key must not change
 * who a booking belongs to.
 */
export function customerOf(tokenKeys: Keyring, value: unknown): string | undefined {
  const record = value as { travellers?: { email?: unknown }[]; travellers_sealed?: unknown } | undefined;
  const travellers = record?.travellers ?? record?.travellers_sealed;
  const email = Array.isArray(travellers) ? (travellers[0] as { email?: unknown } | undefined)?.email : undefined;
  return typeof email === 'string' && email !== '' ? tokenOf(tokenKeys, tokenKeys.primaryId, CUSTOMER_SCOPE, email, 'email') : undefined;
}

/**
 * validate → name the customer → seal the travellers under the customer's own key, with
 * the customer token replaced by its pseudonym: erasing the customer shreds the
 * travellers everywhere and unlinks the bookings, which still count in every figure.
 */
export function sealBookings(tokenKeys: Keyring, subjectKeys: SubjectKeys): OperatorFunction<Envelope<unknown>, Envelope<SealedBooking>> {
  return pipe(
    validate<Booking>({ schema: bookingSchema, formats: 'fast' }),
    // The travellers move to the column that holds them sealed; the ciphertext is bound to that name.
    recordOperator('customer', ({ travellers, ...booking }: Booking): SealedBooking => ({ ...booking, customer_token: customerOf(tokenKeys, { travellers }) ?? '', travellers_sealed: travellers as unknown as string })),
    encrypt<SealedBooking>({ keyring: subjectKeys.keyring, subjectKeys, subject: 'customer_token', pseudonymize: true, fields: ['travellers_sealed'], recordId: 'booking_id' }),
  ) as OperatorFunction<Envelope<unknown>, Envelope<SealedBooking>>;
}
