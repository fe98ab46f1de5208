import { inspect } from 'node:util';
import { ConfigError } from './errors';

/*
 * Option checks, one rule for all: an option left out (undefined) takes its default; any
 * other value, null included, must keep the option's rule or is refused with a
 * ConfigError naming the option, the rule and the value given.
 */

/** A value as a message shows it: strings quoted (so "5" is told from 5), anything else as Node prints it. */
function shown(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : inspect(value, { depth: 0, breakLength: Infinity });
}

/** `value` (or `fallback` when it is undefined) if `keeps` it, else a ConfigError: `name must be <rule>, got <value>`. */
function checked<T>(value: T | undefined, fallback: T, name: string, keeps: (resolved: unknown) => boolean, rule: string): T {
  const resolved = value === undefined ? fallback : value;
  if (!keeps(resolved)) throw new ConfigError(`${name} must be ${rule}, got ${shown(value)}`);
  return resolved;
}

/** `value` (or `fallback` when it is undefined), which must be an integer >= `min`; the message names the rule. */
export function integerAtLeast(value: number | undefined, fallback: number, name: string, min: number): number {
  return checked(value, fallback, name, (n) => Number.isInteger(n) && (n as number) >= min, `an integer >= ${min}`);
}

/** `value` (or `fallback` when it is undefined), which must be an integer >= `min` or Infinity (no limit). */
export function integerAtLeastOrInfinity(value: number | undefined, fallback: number, name: string, min: number): number {
  return checked(value, fallback, name, (n) => n === Infinity || (Number.isInteger(n) && (n as number) >= min), `an integer >= ${min} or Infinity`);
}

/** `value` (or `fallback` when it is undefined), which must be an integer >= 1. */
export function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  return integerAtLeast(value, fallback, name, 1);
}

/** `value` (or `fallback` when it is undefined), which must be an integer >= 0. */
export function nonNegativeInteger(value: number | undefined, fallback: number, name: string): number {
  return integerAtLeast(value, fallback, name, 0);
}

/** `value` (or `fallback` when it is undefined), which must be an integer from `min` to `max`. */
export function integerInRange(value: number | undefined, fallback: number, name: string, min: number, max: number): number {
  return checked(value, fallback, name, (n) => Number.isInteger(n) && (n as number) >= min && (n as number) <= max, `an integer from ${min} to ${max}`);
}

/** `value` (or `fallback` when it is undefined), which must be a number >= `min` (a delay, a factor). */
export function numberAtLeast(value: number | undefined, fallback: number, name: string, min: number): number {
  return checked(value, fallback, name, (n) => typeof n === 'number' && n >= min, `a number >= ${min}`);
}

/** `value` (or `fallback` when it is undefined), which must be a finite number > 0 (a rate, a number of seconds). */
export function positiveNumber(value: number | undefined, fallback: number, name: string): number {
  return checked(value, fallback, name, (n) => typeof n === 'number' && n > 0 && Number.isFinite(n), 'a number > 0');
}

/** A TCP port to listen on, `value` or `fallback` (0: any free port). */
export function portOption(value: number | undefined, fallback: number, name = 'port'): number {
  return checked(value, fallback, name, (n) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 65535, 'an integer in [0, 65535]');
}

/** `value` (or `fallback` when it is undefined), which must be true or false: no truthy strings, numbers or null. */
export function booleanOption(value: boolean | undefined, fallback: boolean, name: string): boolean {
  return checked(value, fallback, name, (b) => typeof b === 'boolean', 'true or false');
}
