import { ConfigError, isRetriable } from './errors';
import { integerAtLeastOrInfinity, numberAtLeast } from './options';
import { sleep } from './sleep';

/** How often and how patiently to try again. */
export interface RetryOptions {
  /** Attempts after the first one; `Infinity` to keep trying until aborted. @default 5 */
  retries?: number;
  /** Delay before the first retry, in ms. @default 100 */
  initialDelayMs?: number;
  /** Upper bound of any delay, in ms. @default 10000 */
  maxDelayMs?: number;
  /** Growth of the delay per attempt. @default 2 */
  factor?: number;
  /** Decides whether an error is worth another attempt. @default error.retriable */
  retriable?: (error: unknown) => boolean;
  /** Aborting stops waiting and rethrows the last error. */
  signal?: AbortSignal;
  /** Called before each wait, e.g. for logging or metrics. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
}

export type ResolvedRetryOptions = Required<Omit<RetryOptions, 'signal' | 'onRetry'>> &
  Pick<RetryOptions, 'signal' | 'onRetry'>;

export function resolveRetryOptions(options: RetryOptions = {}, where = 'retry'): ResolvedRetryOptions {
  const resolved = {
    retries: integerAtLeastOrInfinity(options.retries, 5, `${where}.retries`, 0),
    initialDelayMs: numberAtLeast(options.initialDelayMs, 100, `${where}.initialDelayMs`, 0),
    maxDelayMs: options.maxDelayMs ?? 10_000,
    factor: numberAtLeast(options.factor, 2, `${where}.factor`, 1),
    retriable: options.retriable ?? isRetriable,
    signal: options.signal,
    onRetry: options.onRetry,
  };
  if (!(resolved.maxDelayMs >= resolved.initialDelayMs)) {
    throw new ConfigError(`${where}.maxDelayMs must be >= initialDelayMs (${resolved.initialDelayMs}), got ${resolved.maxDelayMs}`);
  }
  return resolved;
}

/**
 * Delay before retry number `attempt` (1-based): "full jitter", a uniform pick in
 * [0, min(max, initial·factor^(attempt-1))], which spreads competing clients apart.
 */
export function backoffDelay(attempt: number, options: ResolvedRetryOptions, random = Math.random): number {
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * options.factor ** (attempt - 1));
  return Math.round(random() * ceiling);
}

/**
 * Runs `operation` until it succeeds, the error is not retriable, `bail` is called,
 * or the retries are spent; then rethrows the last error. An error with `retryAfterMs`
 * (a server's Retry-After) delays the next attempt at least that long.
 *
 * ## Example
 * ```ts
 * import { retry } from 'tributary';
 * await retry(() => client.insert(rows), { retries: 3 });
 * ```
 */
export async function retry<T>(
  operation: (attempt: number, bail: (error: unknown) => never) => Promise<T>,
  options: RetryOptions | ResolvedRetryOptions = {},
): Promise<T> {
  const resolved = resolveRetryOptions(options);
  let bailed: { error: unknown } | undefined;
  const bail = (error: unknown): never => {
    bailed = { error };
    throw error;
  };
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt, bail);
    } catch (error) {
      if (bailed) throw bailed.error;
      if (attempt > resolved.retries || !resolved.retriable(error) || resolved.signal?.aborted) throw error;
      const delay = Math.max(backoffDelay(attempt, resolved), retryAfterOf(error));
      resolved.onRetry?.(error, attempt, delay);
      await sleep(delay, resolved.signal);
      if (resolved.signal?.aborted) throw error;
    }
  }
}

/**
 * The wait a server asked for (its Retry-After), carried by the error as `retryAfterMs`:
 * a retry never comes sooner than that, whatever the backoff says.
 */
function retryAfterOf(error: unknown): number {
  const wait = (error as { retryAfterMs?: unknown } | null)?.retryAfterMs;
  return typeof wait === 'number' && wait > 0 ? wait : 0;
}
