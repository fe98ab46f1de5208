import { positiveInteger } from './options';
import type { RecordFailure } from './envelope';

/**
 * How big and how deep one record may be, wherever it comes in (files, `parse`, webhooks,
 * pollers, Kafka). A record past a limit is a dead letter with code `RECORD_TOO_LARGE`
 * or `TOO_DEEP`, refused where it enters: deeper values would overflow the stack of
 * every later step that walks them (`JSON.stringify` in a sink's encoder among them).
 */
export interface RecordLimits {
  /** Longest record (a line, a row, an element, a message, a payload), in bytes. @default 1 MiB */
  maxRecordBytes?: number;
  /** Deepest nesting of arrays and objects (or XML elements) in a record. @default 64 */
  maxDepth?: number;
}

export interface ResolvedRecordLimits {
  maxRecordBytes: number;
  maxDepth: number;
}

export const DEFAULT_MAX_RECORD_BYTES = 1024 * 1024;
export const DEFAULT_MAX_DEPTH = 64;

/** Validates record limits; `prefix` names them in messages (`maxDepth …`, `limits.maxDepth …`). */
export function resolveRecordLimits(options: RecordLimits = {}, prefix = ''): ResolvedRecordLimits {
  const positive = (value: number | undefined, fallback: number, name: string): number => positiveInteger(value, fallback, `${prefix}${name}`);
  return {
    maxRecordBytes: positive(options.maxRecordBytes, DEFAULT_MAX_RECORD_BYTES, 'maxRecordBytes'),
    maxDepth: positive(options.maxDepth, DEFAULT_MAX_DEPTH, 'maxDepth'),
  };
}

/** The refusal of a record of `bytes` bytes over the limit; `what` names it (`line 3`, `message`). */
export function tooLarge(what: string, bytes: number, limits: ResolvedRecordLimits, stage = 'source'): RecordFailure | undefined {
  if (bytes <= limits.maxRecordBytes) return undefined;
  return { stage, code: 'RECORD_TOO_LARGE', message: `${what} is longer than ${limits.maxRecordBytes} bytes`, path: '' };
}

/** The refusal of a record nested deeper than the limit; `what` names it. */
export function tooDeep(what: string, limits: ResolvedRecordLimits, stage = 'source'): RecordFailure {
  return { stage, code: 'TOO_DEEP', message: `${what} nests deeper than ${limits.maxDepth} levels`, path: '' };
}

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth`, found without
 * parsing it. Brackets are counted first (natively): text with no more of them than the
 * limit cannot be too deep, which is every ordinary record, so only suspects are scanned.
 */
export function jsonTooDeep(text: string, maxDepth: number): boolean {
  if (!hasMoreOpenings(text, maxDepth)) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * Whether `text` holds more than `limit` opening brackets (`{` and `[`), counted natively:
 * text with no more than the limit cannot nest deeper than it, nor can any part of it.
 */
export function hasMoreOpenings(text: string, limit: number): boolean {
  let count = 0;
  for (const bracket of ['{', '[']) {
    let at = text.indexOf(bracket);
    while (at >= 0) {
      if (++count > limit) return true;
      at = text.indexOf(bracket, at + 1);
    }
  }
  return false;
}

/**
 * The refusal of JSON text over either limit, `undefined` when it is within both; `what`
 * names the record in the message. The one check every JSON entry makes before parsing.
 */
export function checkJsonText(text: string, bytes: number, what: string, limits: ResolvedRecordLimits, stage = 'source'): RecordFailure | undefined {
  return tooLarge(what, bytes, limits, stage) ?? (jsonTooDeep(text, limits.maxDepth) ? tooDeep(what, limits, stage) : undefined);
}

/**
 * Whether a value already parsed (a poller's page item, a JSON body's element) nests
 * deeper than `maxDepth`. Walks it without recursion, so a hostile value cannot blow the
 * stack here either.
 */
export function valueTooDeep(value: unknown, maxDepth: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== 'object') continue;
    if (depth + 1 > maxDepth) return true;
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}

const DEFAULT_LIMITS: ResolvedRecordLimits = { maxRecordBytes: DEFAULT_MAX_RECORD_BYTES, maxDepth: DEFAULT_MAX_DEPTH };

/**
 * {@link checkJsonText} on undecoded UTF-8 bytes: brackets, quotes and backslashes are
 * single bytes that never occur inside a multi-byte character, so Latin-1 text counts them right.
 */
export function checkJsonBytes(bytes: Buffer, what: string, limits: ResolvedRecordLimits = DEFAULT_LIMITS, stage = 'source'): RecordFailure | undefined {
  return checkJsonText(bytes.toString('latin1'), bytes.length, what, limits, stage);
}
