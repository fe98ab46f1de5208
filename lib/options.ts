import { ConfigError } from './errors';

/** `value` (or `fallback` when it is not given), which must be an integer >= 1. */
export function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1) throw new ConfigError(`${name} must be an integer >= 1, got ${value}`);
  return resolved;
}

/** `value` (or `fallback` when it is not given), which must be an integer >= 0. */
export function nonNegativeInteger(value: number | undefined, fallback: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 0) throw new ConfigError(`${name} must be an integer >= 0, got ${value}`);
  return resolved;
}
