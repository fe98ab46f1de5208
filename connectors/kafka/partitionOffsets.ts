/**
 * Where a sink batch ended: the position of its last record, an offset and, for a message
 * split into several records (an NDJSON message), the part (`#2`, or `''` for the whole).
 */
export interface Cut {
  readonly offset: number;
  readonly part: string;
}

/** Negative, zero or positive as `a` comes before, at or after `b` in a partition. */
export function compareCuts(a: Cut, b: Cut): number {
  if (a.offset !== b.offset) return a.offset - b.offset;
  if (a.part === b.part) return 0;
  const x = a.part.split('#');
  const y = b.part.split('#');
  for (let i = 1; i < Math.max(x.length, y.length); i++) {
    if (x[i] === undefined) return -1;
    if (y[i] === undefined) return 1;
    if (x[i] !== y[i]) return Number(x[i]) - Number(y[i]);
  }
  return 0;
}

const METADATA = 'tributary-cuts/1:';
const PART = /^(#[1-9]\d{0,8})*$/;

/**
 * Offset commit metadata holding the cuts at or past `offset`, each as its distance from
 * it: `tributary-cuts/1:0,17#2,40`. Kafka keeps up to 4096 characters by default
 * (`offset.metadata.max.bytes`).
 */
export function cutsMetadata(cuts: readonly Cut[], offset: number): string {
  return METADATA + cuts.filter((cut) => cut.offset >= offset).map((cut) => `${cut.offset - offset}${cut.part}`).join(',');
}

/** The cuts a commit's metadata holds, in order; none when it holds something else (another client's metadata). */
export function cutsOfMetadata(metadata: string | null | undefined, offset: number): Cut[] {
  if (!metadata?.startsWith(METADATA) || !Number.isSafeInteger(offset) || offset < 0) return [];
  const text = metadata.slice(METADATA.length);
  if (text === '') return [];
  const cuts: Cut[] = [];
  for (const item of text.split(',')) {
    const hash = item.indexOf('#');
    const distance = hash < 0 ? item : item.slice(0, hash);
    const part = hash < 0 ? '' : item.slice(hash);
    if (!/^\d{1,15}$/.test(distance) || !PART.test(part)) return [];
    const cut = { offset: offset + Number(distance), part };
    if (cuts.length > 0 && compareCuts(cuts[cuts.length - 1]!, cut) >= 0) return [];
    cuts.push(cut);
  }
  return cuts;
}

const IN_FLIGHT = 0;
const SETTLED = 1;
const NACKED = 2;
/** Slots a tracker starts with; it doubles them as needed. */
const INITIAL_SLOTS = 1024;

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
   * Emitted offsets not yet behind the commit point, in order, with their states and
   * records alongside: a ring of `#size` slots from `#head` (capacity a power of two),
   * found by binary search. Typed arrays for offsets and states: storing into them costs
   * no write barrier and gives the garbage collector nothing to scan, and the ring is
   * never copied while records settle in order, only when it grows.
   */
  #offsets = new Float64Array(INITIAL_SLOTS);
  #states = new Uint8Array(INITIAL_SLOTS);
  /** The record emitted at each offset, alongside (`undefined` when none was given). */
  #records: unknown[] = new Array<unknown>(INITIAL_SLOTS).fill(undefined);
  #mask = INITIAL_SLOTS - 1;
  #head = 0;
  #size = 0;
  #lastEmitted = -1;
  #retired = false;
  /** The offset to commit next: one past the highest contiguous settled offset. */
  #committable: number | undefined;
  /** The offset last committed by this tracker. */
  committed: number | undefined;
  /** Tells this assignment's records from those of the partition's earlier trackers. */
  readonly epoch: number;
  /** Where batches past the commit point end, in order, each with the version it was noted at. */
  #cuts: { cut: Cut; version: number }[] = [];
  /** Cuts an earlier reader made, which this one must make again. */
  #replayCuts: Cut[] = [];
  #cutVersion = 0;
  /** The version of the cuts the last successful commit carried. */
  cutsCommitted = 0;

  constructor(topic: string, partition: number, epoch = 0, replayCuts: readonly Cut[] = []) {
    this.topic = topic;
    this.partition = partition;
    this.id = `${topic}/${partition}`;
    this.epoch = epoch;
    this.#replayCuts = [...replayCuts];
    this.#cuts = replayCuts.map((cut) => ({ cut, version: 0 }));
  }

  /** The first cut an earlier reader made at or after `at`: where the batch holding `at` must end. */
  replayCut(at: Cut): Cut | undefined {
    const cuts = this.#replayCuts;
    let low = 0;
    let high = cuts.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compareCuts(cuts[middle]!, at) < 0) low = middle + 1;
      else high = middle;
    }
    return cuts[low];
  }

  /** Notes where a batch ends; returns the version a commit must carry for the cut to be durable. */
  addCut(cut: Cut): number {
    const cuts = this.#cuts;
    let at = cuts.length;
    while (at > 0 && compareCuts(cuts[at - 1]!.cut, cut) > 0) at--;
    if (at > 0 && compareCuts(cuts[at - 1]!.cut, cut) === 0) return cuts[at - 1]!.version;
    cuts.splice(at, 0, { cut, version: ++this.#cutVersion });
    return this.#cutVersion;
  }

  /** Noted cuts no commit carried yet. */
  get cutsPending(): boolean {
    return this.#cutVersion > this.cutsCommitted;
  }

  /** The version of the cuts noted so far. */
  get cutVersion(): number {
    return this.#cutVersion;
  }

  /** The cuts at or past `offset`, for a commit there, dropping those behind it. */
  cutsFrom(offset: number): Cut[] {
    this.#cuts = this.#cuts.filter(({ cut }) => cut.offset >= offset);
    return this.#cuts.map(({ cut }) => cut);
  }

  /** Where a commit may go now: past every settled record, or where emission began; undefined before any. */
  get commitPoint(): number | undefined {
    return this.#committable;
  }

  get retired(): boolean {
    return this.#retired;
  }

  /** Records emitted and not yet behind the commit point. */
  get inFlight(): number {
    return this.#size;
  }

  /** False for an offset at or below one already emitted: a fetch that repeated itself. */
  accepts(offset: number): boolean {
    return !this.#retired && offset > this.#lastEmitted;
  }

  /** Notes `offset` as emitted, carried by `record` (compared by identity when it settles). */
  emitted(offset: number, record?: unknown): void {
    if (this.#committable === undefined) this.#committable = offset;
    if (this.#size > this.#mask) this.#grow();
    const slot = (this.#head + this.#size++) & this.#mask;
    this.#offsets[slot] = offset;
    this.#states[slot] = IN_FLIGHT;
    this.#records[slot] = record;
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

  /** The slot holding `offset`, or -1. */
  #indexOf(offset: number): number {
    const offsets = this.#offsets;
    const mask = this.#mask;
    const head = this.#head;
    if (this.#size === 0) return -1;
    // Records mostly settle in the order they were emitted: the oldest first.
    if (offsets[head] === offset) return head;
    // Binary search over the ring's positions 0 .. size - 1, oldest first.
    let low = 0;
    let high = this.#size - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const slot = (head + middle) & mask;
      const at = offsets[slot]!;
      if (at === offset) return slot;
      if (at < offset) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }

  #advance(): boolean {
    const offsets = this.#offsets;
    const states = this.#states;
    const records = this.#records;
    const mask = this.#mask;
    let head = this.#head;
    let size = this.#size;
    let last = -1;
    // Records behind the commit point are let go at once.
    while (size > 0 && states[head] === SETTLED) {
      records[head] = undefined;
      last = offsets[head]!;
      head = (head + 1) & mask;
      size--;
    }
    if (size === this.#size) return false;
    this.#head = head;
    this.#size = size;
    this.#committable = size > 0 ? offsets[head]! : last + 1;
    return true;
  }

  /** Twice the slots, the queue copied to start at slot 0. */
  #grow(): void {
    const capacity = (this.#mask + 1) * 2;
    const offsets = new Float64Array(capacity);
    const states = new Uint8Array(capacity);
    const records = new Array<unknown>(capacity).fill(undefined);
    for (let i = 0; i < this.#size; i++) {
      const slot = (this.#head + i) & this.#mask;
      offsets[i] = this.#offsets[slot]!;
      states[i] = this.#states[slot]!;
      records[i] = this.#records[slot];
    }
    this.#offsets = offsets;
    this.#states = states;
    this.#records = records;
    this.#mask = capacity - 1;
    this.#head = 0;
  }
}
