/**
 * The hand-written peers the benchmarks hold tributary against: what a competent developer
 * writes for one vendor without the library. Mappings are written out by hand for the one
 * vendor each benchmark reads, validation is ajv with the same schema, rows go out as
 * JSONEachRow. They do what the pipeline does for these inputs (the benchmarks check the
 * stored rows are the same), and nothing more: no dead-letter table, no retries, no
 * insert tokens, no backpressure beyond awaiting the previous insert.
 */
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { bookingSchema, type Booking } from '../examples/bookings/schema';

/** ajv compiled once, with the fast formats the pipeline's `validate` uses. */
export function bookingValidator(): (row: unknown) => boolean {
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats(ajv, { mode: 'fast' });
  const check = ajv.compile(bookingSchema);
  return (row) => check(row) as boolean;
}

const pad2 = (n: number) => (n < 10 ? '0' : '') + n;

function isoDate(year: number, month: number, day: number): string {
  return `${year}-${pad2(month)}-${pad2(day)}`;
}

/** UTC ms of the last Sunday of `month` (0-based) in `year`, 01:00 UTC: when EU summer time starts or ends. */
function lastSundayOneUtc(year: number, month: number): number {
  const lastDay = new Date(Date.UTC(year, month + 1, 0));
  return Date.UTC(year, month, lastDay.getUTCDate() - lastDay.getUTCDay(), 1);
}

const summerTime = new Map<number, [number, number]>();

/** `DD/MM/YYYY HH:mm` in Paris (EU summer-time rule) as an ISO UTC time. */
export function parisToIso(text: string): string | undefined {
  if (text.length !== 16) return undefined;
  const day = +text.slice(0, 2);
  const month = +text.slice(3, 5);
  const year = +text.slice(6, 10);
  const hour = +text.slice(11, 13);
  const minute = +text.slice(14, 16);
  if (!(day >= 1 && day <= 31 && month >= 1 && month <= 12 && hour <= 23 && minute <= 59)) return undefined;
  let span = summerTime.get(year);
  if (!span) summerTime.set(year, (span = [lastSundayOneUtc(year, 2), lastSundayOneUtc(year, 9)]));
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  // Summer time (UTC+2) when that reading falls inside it, else winter time (UTC+1).
  const summer = wall - 7_200_000;
  const utc = summer >= span[0] && summer < span[1] ? summer : wall - 3_600_000;
  return new Date(utc).toISOString();
}

const GLOBETREK_STATUS: Record<string, string> = { CONF: 'confirmed', PEND: 'pending', CANC: 'cancelled', RFND: 'refunded' };
const GLOBETREK_PRODUCT: Record<string, string> = { AIR: 'flight', RAIL: 'rail', HTL: 'hotel', CAR: 'car' };

interface GlobetrekLine {
  booking_no?: string;
  booked_on?: string;
  last_modified?: string;
  status?: string;
  type?: string;
  origin?: string;
  destination?: string;
  travel_date?: string;
  travellers?: string;
  total?: string;
  ccy?: string;
}

/** One globetrek line as a booking, by hand (examples/bookings/mappings.ts says the same declaratively); undefined when it cannot be one. */
export function mapGlobetrek(r: GlobetrekLine): Booking | undefined {
  const bookedAt = r.booked_on ? parisToIso(r.booked_on) : undefined;
  const updatedAt = r.last_modified ? parisToIso(r.last_modified) : bookedAt;
  const date = r.travel_date;
  if (!r.booking_no || !bookedAt || !updatedAt || !date || date.length !== 10 || !r.total || !r.ccy) return undefined;
  const status = GLOBETREK_STATUS[r.status ?? ''];
  const product = GLOBETREK_PRODUCT[r.type ?? ''];
  const passengers = Number(r.travellers);
  const total = r.total.replaceAll('.', '').replace(',', '.');
  if (!status || !product || !Number.isInteger(passengers)) return undefined;
  if (status === 'refunded' && !total.startsWith('-')) return undefined;
  const booking: Booking = {
    vendor: 'globetrek',
    booking_id: r.booking_no,
    updated_at: updatedAt,
    status: status as Booking['status'],
    product: product as Booking['product'],
    booked_at: bookedAt,
    travel_date: isoDate(+date.slice(6, 10), +date.slice(3, 5), +date.slice(0, 2)),
    passengers,
    total_amount: total,
    currency: r.ccy.toUpperCase(),
  };
  if (r.origin !== undefined) booking.origin = r.origin;
  if (r.destination !== undefined) booking.destination = r.destination;
  return booking;
}

const STAYLODGE_STATUS: Record<string, string> = { CONFIRMED: 'confirmed', TENTATIVE: 'pending', CANCELLED: 'cancelled' };

interface StaylodgeMessage {
  reservationId?: string | number;
  createdAt?: number;
  modifiedAt?: number;
  reservationStatus?: string;
  checkIn?: string;
  hotel?: { city?: string };
  guests?: number | string;
  amount?: number | string;
  currency?: string;
}

/** One staylodge message as a booking, by hand; undefined when it cannot be one. */
export function mapStaylodge(r: StaylodgeMessage): Booking | undefined {
  const status = STAYLODGE_STATUS[r.reservationStatus ?? ''];
  const created = r.createdAt;
  const modified = r.modifiedAt ?? created;
  if (r.reservationId === undefined || r.reservationId === '' || !status || typeof created !== 'number' || typeof modified !== 'number' || !r.checkIn || !r.currency || r.amount === undefined) {
    return undefined;
  }
  const passengers = Number(r.guests);
  if (!Number.isInteger(passengers)) return undefined;
  const booking: Booking = {
    vendor: 'staylodge',
    booking_id: String(r.reservationId),
    updated_at: new Date(modified * 1000).toISOString(),
    status: status as Booking['status'],
    product: 'hotel',
    booked_at: new Date(created * 1000).toISOString(),
    travel_date: r.checkIn,
    passengers,
    total_amount: String(r.amount),
    currency: r.currency.toUpperCase(),
  };
  if (r.hotel?.city !== undefined) booking.destination = r.hotel.city;
  return booking;
}
