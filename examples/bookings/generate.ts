import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';

/** A small deterministic PRNG (mulberry32), so generated data sets are reproducible. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Vendor = 'skyway' | 'globetrek' | 'staylodge';
export const VENDORS: readonly Vendor[] = ['skyway', 'globetrek', 'staylodge'];

const AIRPORTS = ['CDG', 'JFK', 'LHR', 'FRA', 'MAD', 'FCO', 'AMS', 'DXB', 'SIN', 'NRT'];
const CITIES = ['Paris', 'Lyon', 'Marseille', 'Rome', 'Milan', 'Berlin', 'Madrid', 'Lisbon', 'Vienna', 'Prague'];
const CURRENCIES = ['EUR', 'USD', 'GBP', 'CHF'];
const BASE = Date.UTC(2026, 0, 1);
const DAY = 86_400_000;

const pick = <T>(rng: () => number, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!;
const pad = (n: number, width = 2) => String(n).padStart(width, '0');
const frenchTime = (ms: number) => {
  const d = new Date(ms);
  return `${pad(d.getUTCDate())}/${pad(d.getUTCMonth() + 1)}/${d.getUTCFullYear()} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
};

/** Booking number `index` of `vendor`, in that vendor's own shape. */
export function vendorRecord(vendor: Vendor, index: number, rng: () => number): Record<string, unknown> {
  const booked = BASE + Math.floor(rng() * 60) * DAY + Math.floor(rng() * DAY);
  const updated = booked + Math.floor(rng() * 3 * DAY);
  const travel = new Date(booked + (3 + Math.floor(rng() * 90)) * DAY).toISOString().slice(0, 10);
  const cents = 2_000 + Math.floor(rng() * 300_000);
  const people = 1 + Math.floor(rng() * 4);
  switch (vendor) {
    case 'skyway':
      return {
        ref: `SKY-${pad(index, 8)}`,
        created: new Date(booked).toISOString().replace('Z', '+00:00'),
        updated: new Date(updated).toISOString().replace('Z', '+00:00'),
        state: pick(rng, ['HK', 'HK', 'HK', 'KK', 'HL', 'XX']),
        route: { from: pick(rng, AIRPORTS), to: pick(rng, AIRPORTS) },
        departure: travel,
        pax: Array.from({ length: people }, (_, i) => ({ type: i === 0 ? 'ADT' : pick(rng, ['ADT', 'CHD']) })),
        price: { amount_cents: cents, currency: pick(rng, CURRENCIES).toLowerCase() },
      };
    case 'globetrek':
      return {
        booking_no: `GT${pad(index, 9)}`,
        booked_on: frenchTime(booked),
        last_modified: frenchTime(updated),
        status: pick(rng, ['CONF', 'CONF', 'CONF', 'PEND', 'CANC']),
        type: pick(rng, ['AIR', 'RAIL', 'RAIL', 'HTL', 'CAR']),
        origin: pick(rng, CITIES),
        destination: pick(rng, CITIES),
        travel_date: `${travel.slice(8, 10)}/${travel.slice(5, 7)}/${travel.slice(0, 4)}`,
        travellers: String(people),
        total: `${Math.floor(cents / 100)},${pad(cents % 100)}`,
        ccy: pick(rng, CURRENCIES),
        agent: { id: `AG${pad(Math.floor(rng() * 500), 4)}`, channel: pick(rng, ['web', 'app', 'call-center']) },
      };
    case 'staylodge':
      return {
        reservationId: 5_000_000 + index,
        createdAt: Math.floor(booked / 1000),
        modifiedAt: Math.floor(updated / 1000),
        reservationStatus: pick(rng, ['CONFIRMED', 'CONFIRMED', 'TENTATIVE', 'CANCELLED']),
        hotel: { id: Math.floor(rng() * 9000), city: pick(rng, CITIES) },
        checkIn: travel,
        nights: 1 + Math.floor(rng() * 7),
        guests: people,
        amount: cents / 100,
        currency: pick(rng, CURRENCIES),
      };
  }
}

/** A record that must be refused: each kind of fault a vendor sends in practice. */
export function faultyLine(vendor: Vendor, index: number, rng: () => number): string {
  const record = vendorRecord(vendor, index, rng);
  switch (index % 4) {
    case 0:
      return JSON.stringify(record).slice(0, 40); // cut off mid-record
    case 1:
      delete record[vendor === 'skyway' ? 'ref' : vendor === 'globetrek' ? 'booking_no' : 'reservationId'];
      return JSON.stringify(record); // no booking id
    case 2:
      record[vendor === 'skyway' ? 'state' : vendor === 'globetrek' ? 'status' : 'reservationStatus'] = 'ZZ';
      return JSON.stringify(record); // unknown status code
    default:
      record[vendor === 'skyway' ? 'departure' : vendor === 'globetrek' ? 'travel_date' : 'checkIn'] = '2026-13-45';
      return JSON.stringify(record); // impossible date
  }
}

export interface GenerateOptions {
  vendor: Vendor;
  records: number;
  out: string;
  /** Share of refused records, 0..1. @default 0 */
  faultRate?: number;
  seed?: number;
  /** First booking number. @default 1 */
  start?: number;
}

/** Writes `records` NDJSON lines of one vendor's shape, streaming, memory bounded. */
export async function generate(options: GenerateOptions): Promise<{ bytes: number; faulty: number }> {
  const rng = random(options.seed ?? 42);
  const out = createWriteStream(options.out);
  const faultRate = options.faultRate ?? 0;
  let chunk = '';
  let bytes = 0;
  let faulty = 0;
  const first = options.start ?? 1;
  for (let i = first; i < first + options.records; i++) {
    const bad = faultRate > 0 && rng() < faultRate;
    if (bad) faulty++;
    chunk += (bad ? faultyLine(options.vendor, i, rng) : JSON.stringify(vendorRecord(options.vendor, i, rng))) + '\n';
    if (chunk.length > 1 << 20) {
      bytes += Buffer.byteLength(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  bytes += Buffer.byteLength(chunk);
  out.end(chunk);
  await once(out, 'finish');
  return { bytes, faulty };
}

if (require.main === module) {
  const { values } = parseArgs({
    options: {
      vendor: { type: 'string', default: 'globetrek' },
      records: { type: 'string', default: '100000' },
      out: { type: 'string' },
      'fault-rate': { type: 'string', default: '0' },
      seed: { type: 'string', default: '42' },
    },
  });
  if (!values.out || !VENDORS.includes(values.vendor as Vendor)) {
    console.error(`usage: generate --vendor ${VENDORS.join('|')} --records N --out FILE [--fault-rate 0.01] [--seed 42]`);
    process.exit(2);
  }
  generate({
    vendor: values.vendor as Vendor,
    records: Number(values.records),
    out: values.out,
    faultRate: Number(values['fault-rate']),
    seed: Number(values.seed),
  }).then(({ bytes, faulty }) => console.log(`wrote ${values.records} records (${faulty} faulty), ${(bytes / 1e6).toFixed(1)} MB to ${values.out}`));
}
