const IN_FLIGHT = 0;
const SETTLED = 1;
const NACKED = 2;

/**
 * The records of one partition emitted under one assignment, in offset order, and how
 * far the partition may be committed: just past the highest offset whose record, and
 * every record emitted before it, is settled. A record in flight or nacked holds the
 * commit back; offsets need not be consecutive (compaction, transaction markers), only
 * increasing.
 *
 * A tracker is retired when its partition is revoked, the consumer restarts, or a record
 * is nacked: settlements of its records are ignored from then on, so a record read
 * under an old assignment can never move a commit. Each offset may be emitted with the
 * record that carries it; a settlement naming another record (the same offset read again
 * under a later tracker of the partition) is then ignored too.
 */
export class PartitionOffsets {
  readonly topic: string;
  readonly partition: number;
  /** `topic/partition`. */
  readonly id: string;
  /**
   * Emitted offsets not yet behind the commit point, in order, from `#head` on, with their
   * states alongside: a queue found by binary search, cheap for batches of thousands.
   */
  #offsets: number[] = [];
  #states: number[] = [];
  /** The record emitted at each offset, alongside (`undefined` when none was given). */
  #records: unknown[] = [];
  #head = 0;
  #lastEmitted = -1;
  #retired = false;
  /** The offset to commit next: one past the highest contiguous settled offset. */
  #committable: number | undefined;
  /** The offset last committed by this tracker. */
  committed: number | undefined;

  constructor(topic: string, partition: number) {
    this.topic = topic;
    this.partition = partition;
    this.id = `${topic}/${partition}`;
  }

  get retired(): boolean {
    return this.#retired;
  }

  /** Records emitted and not yet behind the commit point. */
  get inFlight(): number {
    return this.#offsets.length - this.#head;
  }

  /** False for an offset at or below one already emitted: a fetch that repeated itself. */
  accepts(offset: number): boolean {
    return !this.#retired && offset > this.#lastEmitted;
  }

  /** Notes `offset` as emitted, carried by `record` (compared by identity when it settles). */
  emitted(offset: number, record?: unknown): void {
    if (this.#committable === undefined) this.#committable = offset;
    this.#offsets.push(offset);
    this.#states.push(IN_FLIGHT);
    this.#records.push(record);
    this.#lastEmitted = offset;
  }

  /** Whether this tracker emitted `offset` with `record`, and has not been retired. */
  emittedAs(offset: number, record?: unknown): boolean {
    if (this.#retired) return false;
    const index = this.#indexOf(offset);
    return index >= 0 && this.#records[index] === record;
  }

  /** Marks a record durable; true when the commit point moved. */
  settled(offset: number, record?: unknown): boolean {
    if (this.#retired) return false;
    const index = this.#indexOf(offset);
    if (index < 0 || this.#states[index] !== IN_FLIGHT || this.#records[index] !== record) return false;
    this.#states[index] = SETTLED;
    return index === this.#head && this.#advance();
  }

  /** Marks a record that could not be made durable: nothing at or after it is committed. */
  nacked(offset: number): void {
    const index = this.#indexOf(offset);
    if (index >= 0 && this.#states[index] === IN_FLIGHT) this.#states[index] = NACKED;
  }

  /**
   * The offset to commit, when it is past the last commit. Undefined for a retired
   * tracker: its partition may belong to another member now.
   */
  toCommit(): number | undefined {
    if (this.#retired || this.#committable === undefined) return undefined;
    return this.#committable === this.committed ? undefined : this.#committable;
  }

  /**
   * Stops tracking. Returns where consumption must restart for nothing to be lost: the
   * first record not settled, or past the last emitted one when all are.
   */
  retire(): number | undefined {
    this.#retired = true;
    return this.#committable;
  }

  #indexOf(offset: number): number {
    const offsets = this.#offsets;
    let low = this.#head;
    let high = offsets.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const at = offsets[middle]!;
      if (at === offset) return middle;
      if (at < offset) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }

  #advance(): boolean {
    const offsets = this.#offsets;
    const states = this.#states;
    const records = this.#records;
    let head = this.#head;
    // Records behind the commit point are let go at once, not when the queue is compacted.
    while (head < offsets.length && states[head] === SETTLED) records[head++] = undefined;
    if (head === this.#head) return false;
    this.#committable = head < offsets.length ? offsets[head]! : offsets[head - 1]! + 1;
    if (head === offsets.length) {
      this.#offsets = [];
      this.#states = [];
      this.#records = [];
      this.#head = 0;
    } else if (head > 4096 && head * 2 > offsets.length) {
      this.#offsets = offsets.slice(head);
      this.#states = states.slice(head);
      this.#records = records.slice(head);
      this.#head = 0;
    } else {
      this.#head = head;
    }
    return true;
  }
}
