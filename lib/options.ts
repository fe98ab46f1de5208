import { ConfigError } from './errors';

/** `value` (or `fallback` when it is not given), which must be an integer >= `min`; the message names the rule. */
export function integerAtLeast(value: number | undefined, fallback: number, name: string, min: number): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < min) throw new ConfigError(`${name} must be an integer >= ${min}, got ${value}`);
  return resolved;
}

/** `value` (or `fallback` when it is not given), which must be an integer >= 1. */
export function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  return integerAtLeast(value, fallback, name, 1);
}

/** `value` (or `fallback` when it is not given), which must be an integer >= 0. */
export function nonNegativeInteger(value: number | undefined, fallback: number, name: string): number {
  return integerAtLeast(value, fallback, name, 0);
}

/** `value` (or `fallback` when it is not given), which must be an integer from `min` to `max`. */
export function integerInRange(value: number | undefined, fallback: number, name: string, min: number, max: number): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < min || resolved > max) throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
  return resolved;
}

/** A TCP port to listen on, `value` or `fallback` (0: any free port). */
export function portOption(value: number | undefined, fallback: number, name = 'port'): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 0 || resolved > 65535) throw new ConfigError(`${name} must be an integer in [0, 65535], got ${value}`);
  return resolved;
}
