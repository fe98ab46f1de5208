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
 * under an old assignment can never move a commit.
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

  emitted(offset: number): void {
    if (this.#committable === undefined) this.#committable = offset;
    this.#offsets.push(offset);
    this.#states.push(IN_FLIGHT);
    this.#lastEmitted = offset;
  }

  /** Marks a record durable; true when the commit point moved. */
  settled(offset: number): boolean {
    if (this.#retired) return false;
    const index = this.#indexOf(offset);
    if (index < 0 || this.#states[index] !== IN_FLIGHT) return false;
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
    let head = this.#head;
    while (head < offsets.length && states[head] === SETTLED) head++;
    if (head === this.#head) return false;
    this.#committable = head < offsets.length ? offsets[head]! : offsets[head - 1]! + 1;
    if (head === offsets.length) {
      this.#offsets = [];
      this.#states = [];
      this.#head = 0;
    } else if (head > 4096 && head * 2 > offsets.length) {
      this.#offsets = offsets.slice(head);
      this.#states = states.slice(head);
      this.#head = 0;
    } else {
      this.#head = head;
    }
    return true;
  }
}
