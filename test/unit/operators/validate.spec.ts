import { expect } from 'chai';
import { from, lastValueFrom, toArray } from 'rxjs';
import { bookingSchema, type Booking } from '../../../examples/bookings/schema';
import { ConfigError } from '../../../lib/errors';
import { validate } from '../../../operators/validate';
import { Recorder } from '../../helpers';

const valid = {
  vendor: 'skyway',
  booking_id: 'SKY-1',
  updated_at: '2026-03-02T07:00:00.000Z',
  status: 'confirmed',
  product: 'flight',
  booked_at: '2026-03-01T09:00:00.000Z',
  travel_date: '2026-04-10',
  passengers: 2,
  total_amount: '1234.50',
  currency: 'EUR',
};

describe('validate', () => {
  it('passes valid records on, with the schema version in meta, and dead-letters the rest with every error', async () => {
    const recorder = new Recorder();
    const input = [recorder.envelope(valid), recorder.envelope({ ...valid, status: 'lost', passengers: 0, currency: 'eur', extra: 1, booking_id: undefined })];
    const out = await lastValueFrom(from(input).pipe(validate({ schema: bookingSchema }), toArray()));
    expect(out.map((e) => e.value)).to.deep.equal([valid]);
    expect(out[0]!.meta.schemaVersion).to.equal('booking/1');
    expect(recorder.rejected).to.have.length(1);
    const failure = recorder.rejected[0]!.failure;
    expect(failure).to.include({ stage: 'validate', code: 'VALIDATION', path: '/booking_id' });
    for (const part of ['/booking_id must have required property', '/extra must NOT have additional properties', '/status must be equal to one of the allowed values', '/passengers must be >= 1', '/currency must match pattern']) {
      expect(failure.message).to.contain(part);
    }
  });

  it('checks formats (date-time, date)', async () => {
    const recorder = new Recorder();
    await lastValueFrom(from([recorder.envelope({ ...valid, travel_date: '2026-02-30', booked_at: 'noon' })]).pipe(validate({ schema: bookingSchema }), toArray()));
    expect(recorder.rejected[0]!.failure.message).to.contain('/booked_at must match format "date-time"');
    expect(recorder.rejected[0]!.failure.message).to.contain('/travel_date must match format "date"');
  });

  it("checks formats only by pattern with formats: 'fast', for values normalize already built", async () => {
    const recorder = new Recorder();
    const input = [recorder.envelope({ ...valid, travel_date: '2026-02-30' }), recorder.envelope({ ...valid, booked_at: 'noon' })];
    const out = await lastValueFrom(from(input).pipe(validate({ schema: bookingSchema, formats: 'fast' }), toArray()));
    expect(out).to.have.length(1);
    expect(recorder.rejected.map((r) => r.failure.path)).to.deep.equal(['/booked_at']);
    expect(() => validate({ schema: bookingSchema, formats: 'quick' as never })).to.throw(ConfigError, `formats must be 'full' or 'fast', got "quick"`);
  });

  it('refuses a schema that does not compile', () => {
    expect(() => validate({ schema: { type: 'nonsense' } })).to.throw(ConfigError, /schema does not compile/);
  });
});

describe('the booking type', () => {
  // Compile-time checks: `Booking` is derived from `bookingSchema`, so these break the build if the two part.
  type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
  const status: Equal<Booking['status'], 'confirmed' | 'pending' | 'cancelled' | 'refunded'> = true;
  const optional: Equal<Booking['origin'], string | undefined> = true;
  const traveller: Equal<NonNullable<Booking['travellers']>[number]['type'], 'adult' | 'child' | 'infant' | undefined> = true;

  it('is the schema: a valid record is a Booking, and a Booking without a required field does not compile', () => {
    const booking: Booking = { ...valid, status: 'confirmed', product: 'flight', travellers: [{ name: 'Ada', type: 'adult' }] };
    // @ts-expect-error booking_id is required by the schema, hence by the type
    const missing: Booking = { ...booking, booking_id: undefined };
    expect([status, optional, traveller, booking.booking_id, missing.vendor]).to.deep.equal([true, true, true, 'SKY-1', 'skyway']);
  });
});
