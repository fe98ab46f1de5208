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
  /** Emitted offsets not yet behind the commit point, in order, with their state. */
  #pending = new Map<number, number>();
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
    return this.#pending.size;
  }

  /** False for an offset at or below one already emitted: a fetch that repeated itself. */
  accepts(offset: number): boolean {
    return !this.#retired && offset > this.#lastEmitted;
  }

  emitted(offset: number): void {
    if (this.#pending.size === 0 && this.#committable === undefined) this.#committable = offset;
    this.#pending.set(offset, IN_FLIGHT);
    this.#lastEmitted = offset;
  }

  /** Marks a record durable; true when the commit point moved. */
  settled(offset: number): boolean {
    if (this.#retired || this.#pending.get(offset) !== IN_FLIGHT) return false;
    this.#pending.set(offset, SETTLED);
    return this.#advance();
  }

  /** Marks a record that could not be made durable: nothing at or after it is committed. */
  nacked(offset: number): void {
    if (this.#pending.get(offset) === IN_FLIGHT) this.#pending.set(offset, NACKED);
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

  #advance(): boolean {
    let moved = false;
    for (const [offset, state] of this.#pending) {
      if (state !== SETTLED) {
        if (moved) this.#committable = offset;
        return moved;
      }
      this.#pending.delete(offset);
      this.#committable = offset + 1;
      moved = true;
    }
    return moved;
  }
}
