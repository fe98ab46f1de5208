import { positiveInteger } from './options';

/** The in-flight budget of a pipeline. */
export interface InFlightOptions {
  /** Records read but not yet settled. @default 60000 */
  records?: number;
  /** Bytes (as received) read but not yet settled. @default 64 MiB */
  bytes?: number;
}

/**
 * Backpressure by credit: a source takes one credit (a record and its bytes) before it
 * emits and gets it back when the record is settled. With none left it waits, so memory
 * stays bounded whatever the input size or sink speed.
 */
export class Credits {
  readonly maxRecords: number;
  readonly maxBytes: number;
  #records = 0;
  #bytes = 0;
  #waiters: Array<() => void> = [];

  constructor(options: InFlightOptions = {}) {
    this.maxRecords = positiveInteger(options.records, 60_000, 'inFlight.records');
    this.maxBytes = positiveInteger(options.bytes, 64 * 1024 * 1024, 'inFlight.bytes');
  }

  get inFlightRecords(): number {
    return this.#records;
  }

  get inFlightBytes(): number {
    return this.#bytes;
  }

  /**
   * Takes credit for one record of `bytes` if there is room. A record larger than the
   * whole byte budget is let through when nothing else is in flight, so it cannot
   * wait forever.
   */
  tryTake(bytes: number): boolean {
    if (this.#records > 0 && (this.#records >= this.maxRecords || this.#bytes + bytes > this.maxBytes)) return false;
    this.#records++;
    this.#bytes += bytes;
    return true;
  }

  /** Takes credit, waiting for settlements if needed: `undefined` when taken at once. */
  take(bytes: number): Promise<void> | undefined {
    if (this.tryTake(bytes)) return undefined;
    return new Promise<void>((resolve) => {
      const attempt = () => (this.tryTake(bytes) ? resolve() : this.#waiters.push(attempt));
      this.#waiters.push(attempt);
    });
  }

  /**
   * Resolves at the next release, without taking anything: for sources that pause their
   * input when out of credit and resume it once some comes back.
   */
  released(): Promise<void> {
    return new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  release(bytes: number): void {
    this.#records--;
    this.#bytes -= bytes;
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter();
  }
}
