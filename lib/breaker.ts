import CircuitBreaker from 'opossum';
import { ConfigError, SinkError, isRetriable } from './errors';
import { positiveInteger } from './options';

export interface BreakerOptions {
  /** Share of failed calls, in percent, that opens the breaker. @default 50 */
  errorThresholdPercentage?: number;
  /** Calls in the rolling window before the breaker may open at all. @default 3 */
  volumeThreshold?: number;
  /** How long the breaker stays open before a probe call is let through. @default 5000 */
  resetTimeoutMs?: number;
  /** The rolling window of the statistics. @default 10000 */
  rollingCountTimeoutMs?: number;
}

export type BreakerState = 'closed' | 'open' | 'halfOpen';

/**
 * A circuit breaker (opossum) around a sink's writes. Only retriable failures (the sink is
 * unwell) count against it; a batch with bad rows does not. While it is open, calls fail
 * at once with a retriable `BREAKER_OPEN` error: the pipeline waits and tries again, its
 * credits run dry and sources pause. Nothing is dropped or acked.
 *
 * opossum's own timeout is off on purpose: it would reject while the write goes on in the
 * background. Timeouts belong to the client, whose retry reuses the insert token.
 */
export class SinkBreaker {
  readonly #breaker: CircuitBreaker<[() => Promise<void>], void>;
  readonly resetTimeoutMs: number;
  #lastFailure: unknown;

  constructor(name: string, options: BreakerOptions = {}) {
    const threshold = options.errorThresholdPercentage ?? 50;
    if (!(threshold > 0 && threshold <= 100)) {
      throw new ConfigError(`breaker.errorThresholdPercentage must be a number in (0, 100], got ${options.errorThresholdPercentage}`);
    }
    this.resetTimeoutMs = positiveInteger(options.resetTimeoutMs, 5000, 'breaker.resetTimeoutMs');
    this.#breaker = new CircuitBreaker((write: () => Promise<void>) => write(), {
      name,
      timeout: false,
      errorThresholdPercentage: threshold,
      volumeThreshold: options.volumeThreshold ?? 3,
      resetTimeout: this.resetTimeoutMs,
      rollingCountTimeout: options.rollingCountTimeoutMs ?? 10_000,
      errorFilter: (error: unknown) => !isRetriable(error),
    });
  }

  get state(): BreakerState {
    return this.#breaker.opened ? 'open' : this.#breaker.halfOpen ? 'halfOpen' : 'closed';
  }

  async call(write: () => Promise<void>): Promise<void> {
    try {
      await this.#breaker.fire(write);
    } catch (error) {
      if ((error as { code?: string }).code === 'EOPENBREAKER') {
        const last = this.#lastFailure instanceof Error ? `: ${this.#lastFailure.message}` : '';
        throw new SinkError(`sink ${this.#breaker.name} is unavailable (circuit breaker open)${last}`, {
          code: 'BREAKER_OPEN',
          retriable: true,
          cause: this.#lastFailure ?? error,
        });
      }
      this.#lastFailure = error;
      throw error;
    }
  }

  /** Listens to state changes (for metrics and health). */
  onStateChange(listener: (state: BreakerState) => void): void {
    this.#breaker.on('open', () => listener('open'));
    this.#breaker.on('halfOpen', () => listener('halfOpen'));
    this.#breaker.on('close', () => listener('closed'));
  }

  shutdown(): void {
    this.#breaker.shutdown();
  }
}
