import Ajv, { type AnySchema, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { OperatorFunction } from 'rxjs';
import type { Envelope } from '../lib/envelope';
import { ConfigError, ValidationError } from '../lib/errors';
import { recordOperator } from './recordOperator';

export interface ValidateOptions {
  /** A JSON Schema (draft-07 or 2019-09 subset that ajv supports), compiled once. */
  schema: AnySchema;
  /** Written to `meta.schemaVersion` of each valid record. @default the schema's `$id`, if any */
  version?: string;
  /** An ajv instance of your own (custom formats, keywords). @default one with all formats */
  ajv?: Ajv;
  /**
   * `full` checks formats exactly (`2026-02-30` is no date); `fast` only by pattern, for
   * values an earlier step already built correctly (dates from `normalize`). Ignored when
   * `ajv` is given. @default 'full'
   */
  formats?: 'full' | 'fast';
}

/**
 * Validates each record against a JSON Schema.
 *
 * A record that fails is dead-lettered with code `VALIDATION`, every ajv error in the
 * message and the first error's path as the dead letter's path.
 *
 * ## Example
 * ```ts
 * import { validate } from 'tributary';
 * records$.pipe(validate({ schema: bookingSchema }));
 * ```
 *
 * @returns An operator passing valid records on unchanged.
 */
export function validate<T = Record<string, unknown>>(options: ValidateOptions): OperatorFunction<Envelope<unknown>, Envelope<T>> {
  if (!options?.schema) throw new ConfigError('schema is required');
  const formats = options.formats ?? 'full';
  if (formats !== 'full' && formats !== 'fast') throw new ConfigError(`formats must be 'full' or 'fast', got ${JSON.stringify(options.formats)}`);
  const ajv = options.ajv ?? defaultAjv(formats);
  let check: ValidateFunction;
  try {
    check = ajv.compile(options.schema);
  } catch (cause) {
    throw new ConfigError(`schema does not compile: ${(cause as Error).message}`);
  }
  const version = options.version ?? (typeof options.schema === 'object' ? (options.schema as { $id?: string }).$id : undefined);
  return recordOperator('validate', (value: unknown, envelope) => {
    if (!check(value, TOP_LEVEL)) throw new ValidationError((check.errors ?? []).map(issueOf));
    if (version !== undefined) envelope.meta.schemaVersion = version;
    return value as T;
  });
}

/**
 * What a value validated on its own is to ajv: at the top, its own root. Without it the
 * compiled function makes this object afresh, as a default parameter, for every record
 * (55 of the 135 bytes validating a valid booking allocated); the fields left out take the
 * same defaults (`rootData` the value itself).
 */
const TOP_LEVEL = Object.freeze({ instancePath: '' }) as NonNullable<Parameters<ValidateFunction>[1]>;

function defaultAjv(formats: 'full' | 'fast'): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats(ajv, { mode: formats });
  return ajv;
}

function issueOf(error: ErrorObject): { path: string; message: string } {
  const missing = error.keyword === 'required' ? `/${(error.params as { missingProperty: string }).missingProperty}` : '';
  const extra = error.keyword === 'additionalProperties' ? `/${(error.params as { additionalProperty: string }).additionalProperty}` : '';
  return { path: error.instancePath + missing + extra, message: error.message ?? error.keyword };
}
