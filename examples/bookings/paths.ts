import { join, resolve } from 'node:path';

/** The example's files live beside its sources; compiled code runs from dist/examples/bookings. */
const root = resolve(__dirname, __dirname.includes(`${'/'}dist${'/'}`) ? '../../../examples/bookings' : '.');

export const samplesDir = join(root, 'data');
export const migrationsDir = join(root, 'migrations');
