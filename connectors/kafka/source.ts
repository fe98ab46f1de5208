import type { Admin, Consumer, EachBatchPayload, Offsets } from 'kafkajs';
import { Observable, type Subscriber } from 'rxjs';
import type { Envelope, RecordMeta } from '../../lib/envelope';
import { ConfigError, ConnectorError } from '../../lib/errors';
import { resolveRecordLimits, tooLarge, type ResolvedRecordLimits } from '../../lib/limits';
import { retry } from '../../lib/retry';
import type { Source, SourceContext, SourceStatus } from '../../lib/source';
import { nonNegativeInteger, positiveInteger } from '../../lib/options';
import { resolveConnection, type KafkaConnectionOptions } from './client';
import { sleep } from '../../lib/sleep';
import { compareCuts, cutsMetadata, cutsOfMetadata, PartitionOffsets, type Cut } from './partitionOffsets';
import { cutOf, KafkaRecordMeta, MessageText, partPosition, safeOffset, shortText } from './record';

export interface FromKafkaOptions extends KafkaConnectionOptions {
  /** The consumer group: instances with the same id share the topics' partitions. */
  groupId: string;
  /** Topics to read. */
  topics: string | readonly string[];
  /** Where a group without a committed offset starts: the oldest message, or new ones only. @default false */
  fromBeginning?: boolean;
  /** Names the source in `meta.source`. @default 'kafka' */
  name?: string;
  /** The vendor of a record (`meta.vendor`): fixed, or read from its meta (key, headers, position). @default none */
  vendor?: string | ((meta: RecordMeta) => string | undefined);
  /**
   * A member silent this long is dropped from the group and its partitions handed to the
   * others: after a process is killed (no chance to leave the group), its partitions wait
   * this long. kafkajs' own default is 30 s; a service that is restarted when it crashes
   * wants it short. The broker accepts 6 s to 30 min (`group.min/max.session.timeout.ms`).
   * Heartbeats go on while sink writes are slow, so a slow sink does not get a member dropped.
   *
   * kafkajs 2.x has no static membership (`group.instance.id`, KIP-345: a restarted member
   * taking its old place without a rebalance) nor cooperative rebalancing: every rebalance
   * stops the whole group briefly, and a killed member is only noticed after this timeout.
   * @default 10000
   */
  sessionTimeoutMs?: number;
  /** How often the member tells the coordinator it is alive; below `sessionTimeoutMs` (a third or less). @default 1000 */
  heartbeatIntervalMs?: number;
  /**
   * How long the coordinator waits for members to rejoin during a rebalance; a member
   * killed while rejoining holds the group this long. kafkajs' default is 60 s. A member of
   * this source rejoins as soon as it is told (records in flight do not hold it). @default 10000
   */
  rebalanceTimeoutMs?: number;
  /** Most bytes fetched per partition per request. @default 1 MiB */
  maxBytesPerPartition?: number;
  /** Longest message value, in bytes; a longer one is dead-lettered (`RECORD_TOO_LARGE`) as it is read. @default 1 MiB */
  maxRecordBytes?: number;
  /** Longest a fetch waits for new messages. @default 100 */
  maxWaitMs?: number;
  /**
   * Batch boundaries for replay. A number k: a sink batch holds records of one partition
   * whose offsets fall in one block of k (`[n·k, (n+1)·k)`), and before it is written
   * where it ends is committed with the partition's offset (in the commit's metadata), so
   * whoever reads the partition again after a crash or a rebalance cuts its batches at
   * the same records, whether they were cut by count or by time (`maxWaitMs`): the
   * replayed insert carries the same token and is dropped. Set it to the pipeline's
   * `batch.rows`. The cost: a commit before each write, and, with several partitions
   * trickling, small batches and many inserts. `false`: batches mix partitions, as full
   * as `batch` allows; a replayed batch gets a new token and the table's natural key
   * (ReplacingMergeTree) absorbs it. @default false
   */
  batchAlignment?: number | false;
  /**
   * How often the end offsets of owned partitions are asked of the broker while the source
   * waits for credit, and of those nothing was fetched from yet. Nothing is fetched while
   * it waits, so without this their lag would stay where it was when credits ran out,
   * just when it matters: while the pipeline cannot keep up. @default 5000
   */
  lagRefreshMs?: number;
  /** Least time between two offset commits; settlements in between go in one commit. @default 0 */
  commitIntervalMs?: number;
  /**
   * Topics that do not exist yet are waited for (retried with backoff, the source not
   * connected meanwhile, so `/ready` says so) and never fail the source. `true` creates
   * them instead, with the broker's default partitions and replication; an object says
   * how many. @default false
   */
  createTopics?: boolean | { partitions?: number; replicationFactor?: number };
  /** Called with the kafkajs consumer once made, e.g. to listen to its instrumentation events. */
  instrument?: (consumer: Consumer) => void;
}

const EMPTY = Buffer.alloc(0);
/** Longest commit metadata written: below Kafka's default `offset.metadata.max.bytes` (4096), one cut to spare. */
const MAX_METADATA = 4000;

/**
 * Reads topics as a member of a consumer group and commits an offset only once every
 * record before it is durable.
 *
 * Per partition, the committed offset is one past the highest offset whose record and
 * every record emitted before it were acked or dead-lettered: never past a record in
 * flight or nacked. A credit is taken before each record is emitted; with none left, the
 * source waits in the middle of the fetched batch (heartbeating, fetching nothing more)
 * until a quarter of the in-flight budget is free, and goes on with the batch. On a rebalance
 * or a consumer restart, emission stops, every partition's tracking is dropped, and records
 * still in flight from before can no longer move a commit: a partition is only ever
 * committed by the member that owns it now. A nacked record (the pipeline nacks only
 * when a sink stayed down) stops that partition's commits before it, and consumption of
 * the partition restarts from the first record not settled, so it is read again.
 * Delivery is at least once; duplicates after a crash or rebalance are absorbed by the
 * insert token of a replayed batch (see `batchAlignment`) or, failing that, by the
 * table's natural key.
 *
 * Each record's value is the message's bytes (an empty buffer for a null value) for
 * `parse`; `meta.key` and `meta.headers` carry the key and headers as text, and
 * `meta.position` is `topic/partition/offset`, `meta.timestamp` the message's timestamp.
 * Offsets are tracked as numbers: one past 2^53 - 1 fails the source (see `safeOffset`).
 *
 * ## Example
 * ```ts
 * import { fromKafka } from 'tributary/kafka';
 * const source = fromKafka({ brokers: ['127.0.0.1:9092'], groupId: 'bookings', topics: 'bookings.raw' });
 * ```
 */
export function fromKafka(options: FromKafkaOptions): Source<Uint8Array> {
  return new KafkaSource(options);
}

interface Settings {
  name: string;
  groupId: string;
  topics: string[];
  fromBeginning: boolean;
  vendor: (meta: RecordMeta) => string | undefined;
  sessionTimeout: number;
  heartbeatInterval: number;
  rebalanceTimeout: number;
  maxBytesPerPartition: number;
  limits: ResolvedRecordLimits;
  maxWaitMs: number;
  batchAlignment: number | false;
  lagRefreshMs: number;
  commitIntervalMs: number;
  /** How to create missing topics; `undefined` to wait for them. */
  createTopics: { partitions: number; replicationFactor: number } | undefined;
}

function resolveSettings(options: FromKafkaOptions): Settings {
  if (typeof options.groupId !== 'string' || options.groupId === '') {
    throw new ConfigError(`groupId must be a non-empty string, got ${JSON.stringify(options.groupId)}`);
  }
  const topics = typeof options.topics === 'string' ? [options.topics] : [...(options.topics ?? [])];
  if (topics.length === 0 || !topics.every((t) => typeof t === 'string' && /^[\w.-]{1,249}$/.test(t))) {
    throw new ConfigError(`topics must name at least one topic of letters, digits, '.', '_' or '-', got ${JSON.stringify(options.topics)}`);
  }
  const sessionTimeout = positiveInteger(options.sessionTimeoutMs, 10_000, 'sessionTimeoutMs');
  const heartbeatInterval = positiveInteger(options.heartbeatIntervalMs, 1000, 'heartbeatIntervalMs');
  if (heartbeatInterval >= sessionTimeout) {
    throw new ConfigError(`heartbeatIntervalMs must be lower than sessionTimeoutMs (${sessionTimeout}), got ${heartbeatInterval}`);
  }
  const commitIntervalMs = nonNegativeInteger(options.commitIntervalMs, 0, 'commitIntervalMs');
  const vendor = options.vendor;
  if (vendor !== undefined && typeof vendor !== 'string' && typeof vendor !== 'function') {
    throw new ConfigError(`vendor must be a string or a function, got ${typeof vendor}`);
  }
  const create = options.createTopics ?? false;
  if (typeof create !== 'boolean' && (typeof create !== 'object' || create === null)) {
    throw new ConfigError(`createTopics must be true, false or { partitions, replicationFactor }, got ${JSON.stringify(create)}`);
  }
  const createTopics =
    create === false
      ? undefined
      : create === true
        ? { partitions: -1, replicationFactor: -1 }
        : { partitions: positiveInteger(create.partitions, 1, 'createTopics.partitions'), replicationFactor: positiveInteger(create.replicationFactor, 1, 'createTopics.replicationFactor') };
  if (options.instrument !== undefined && typeof options.instrument !== 'function') {
    throw new ConfigError(`instrument must be a function, got ${typeof options.instrument}`);
  }
  return {
    name: options.name ?? 'kafka',
    groupId: options.groupId,
    topics,
    fromBeginning: options.fromBeginning ?? false,
    vendor: typeof vendor === 'function' ? vendor : () => vendor,
    sessionTimeout,
    heartbeatInterval,
    rebalanceTimeout: positiveInteger(options.rebalanceTimeoutMs, 10_000, 'rebalanceTimeoutMs'),
    maxBytesPerPartition: positiveInteger(options.maxBytesPerPartition, 1024 * 1024, 'maxBytesPerPartition'),
    limits: resolveRecordLimits({ maxRecordBytes: options.maxRecordBytes }),
    maxWaitMs: positiveInteger(options.maxWaitMs, 100, 'maxWaitMs'),
    batchAlignment: options.batchAlignment === false || options.batchAlignment === undefined ? false : positiveInteger(options.batchAlignment, 10_000, 'batchAlignment'),
    lagRefreshMs: positiveInteger(options.lagRefreshMs, 5000, 'lagRefreshMs'),
    commitIntervalMs,
    createTopics,
  };
}

class KafkaSource implements Source<Uint8Array> {
  readonly name: string;
  readonly #settings: Settings;
  readonly #kafka: ReturnType<typeof resolveConnection>;
  readonly #instrument: FromKafkaOptions['instrument'];
  #consumer: Consumer | undefined;
  #context: SourceContext | undefined;
  /** Live trackers of the partitions owned now, by `topic/partition`. */
  readonly #trackers = new Map<string, PartitionOffsets>();
  /** Partitions assigned to this member in the current generation. */
  readonly #assignment = new Set<string>();
  /** Commits of trackers retired after a nack: what was settled before the failed record. */
  readonly #finalCommits = new Map<string, { tracker: PartitionOffsets; offset: number }>();
  /** Highest offset ever emitted per partition, to count redeliveries in `meta.attempt`. */
  readonly #emittedUpTo = new Map<string, number>();
  readonly #highWatermarks = new Map<string, number>();
  /** Where each owned partition stands: last commit, or where reading began. */
  readonly #positions = new Map<string, number>();
  /** Out of credit in the middle of a batch: nothing is fetched meanwhile. */
  #waitingForCredit = false;
  readonly #text = new MessageText();
  #outstanding = 0;
  #drained: (() => void) | undefined;
  #stopping = false;
  #connected = false;
  /** In the group with an assignment: false while joining or rejoining. */
  #joined = false;
  /** Set once the consumer runs (pause() needs its group). */
  #running = false;
  /**
   * kafkajs' commit without its retrier, captured from the latest batch. Its retrier
   * would resend a failed commit after a rejoin under the new generation, i.e. to a
   * partition this member may no longer own; here a failed commit is recomputed instead.
   */
  #commit: ((offsets: Offsets) => Promise<void>) | undefined;
  #commitTimer: NodeJS.Timeout | undefined;
  #committing: Promise<void> | undefined;
  #commitAgain = false;
  #lagTimer: NodeJS.Timeout | undefined;
  #admin: Promise<Admin> | undefined;
  /** Trackers made so far: each one's epoch keeps its records' batches apart from earlier ones'. */
  #epochs = 0;
  /** Per topic, the cuts the group's committed metadata holds for each partition, read once per assignment. */
  #committedCuts = new Map<string, Promise<Map<number, Cut[]>>>();
  /** Cuts of a tracker retired after a nack, for the one that reads the partition again. */
  readonly #carriedCuts = new Map<string, Cut[]>();

  /**
   * `topic/partition/epoch/⌊offset / batchAlignment⌋/replay cut`: one partition's aligned
   * block of offsets, read under one assignment, up to where an earlier reader's batch ended.
   */
  readonly batchKey: ((envelope: Envelope<Uint8Array>) => string) | undefined;

  constructor(options: FromKafkaOptions) {
    this.#settings = resolveSettings(options);
    this.#kafka = resolveConnection(options, () => this.#stopping);
    this.#instrument = options.instrument;
    this.name = this.#settings.name;
    const alignment = this.#settings.batchAlignment;
    this.batchKey =
      alignment === false
        ? undefined
        : (envelope) => {
            const meta = envelope.received.meta;
            const emitter = KafkaRecordMeta.trackerOf(meta);
            // Not a record of this source's (a user's operator made it): a batch of its own.
            if (!emitter) return envelope.meta.position;
            const offset = KafkaRecordMeta.offsetOf(meta);
            const tracker = this.#trackerOf(envelope.received);
            const end = tracker?.replayCut(cutOf(offset, partPosition(envelope)));
            return `${emitter.id}/${tracker?.epoch ?? ''}/${Math.floor(offset / alignment)}/${end ? `${end.offset}${end.part}` : ''}`;
          };
  }

  /** The tracker that emitted `envelope` (as this source emitted it), while it is live. */
  #trackerOf(envelope: Envelope<unknown>): PartitionOffsets | undefined {
    const tracker = KafkaRecordMeta.trackerOf(envelope.meta);
    return tracker?.emittedAs(KafkaRecordMeta.offsetOf(envelope.meta), envelope) ? tracker : undefined;
  }

  /** Where the batch would end if `envelope` (a record, or a part of one) were its last. */
  static #cutAt(envelope: Envelope<unknown>): Cut {
    return cutOf(KafkaRecordMeta.offsetOf(envelope.received.meta), partPosition(envelope));
  }

  /** `within` or `last` for a record of a batch an earlier reader cut (and committed where). */
  replayedBatch(envelope: Envelope<Uint8Array>): 'within' | 'last' | undefined {
    const tracker = this.#trackerOf(envelope.received);
    if (!tracker) return undefined;
    const at = KafkaSource.#cutAt(envelope);
    const end = tracker.replayCut(at);
    if (!end) return undefined;
    return compareCuts(end, at) === 0 ? 'last' : 'within';
  }

  /**
   * With `batchAlignment`: commits where the batch ends (in the metadata of the
   * partition's commit) before it is written, so a replay cuts there too. False when the
   * partition was handed on before that commit (the next owner would not know the cut),
   * or when a replayed batch was cut short by a stop: those records are left to be read again.
   */
  async beforeWrite(envelopes: readonly Envelope<Uint8Array>[]): Promise<boolean> {
    if (this.#settings.batchAlignment === false || envelopes.length === 0) return true;
    // No live tracker holds the batch's first record: its partition was handed on (fenced).
    const tracker = this.#trackerOf(envelopes[0]!.received);
    if (!tracker) return false;
    const last = KafkaSource.#cutAt(envelopes[envelopes.length - 1]!);
    const replayed = tracker.replayCut(KafkaSource.#cutAt(envelopes[0]!));
    if (replayed && this.#stopping && compareCuts(replayed, last) !== 0) return false;
    // Cuts pile up past a commit point held back (a dead letter not yet durable): past what
    // a commit's metadata may hold, writes wait for the commit to move rather than lose one.
    while (!tracker.retired && !this.#stopping && cutsMetadata(tracker.cutsFrom(tracker.commitPoint ?? 0), tracker.commitPoint ?? 0).length > MAX_METADATA) {
      await sleep(200);
    }
    if (tracker.retired) return false;
    const version = tracker.addCut(last);
    for (let failures = 0; tracker.cutsCommitted < version; ) {
      if (tracker.retired) return false;
      if (this.#committing) {
        await this.#committing;
        continue;
      }
      await this.#flushCommits();
      if (tracker.cutsCommitted >= version || tracker.retired) continue;
      // The commit failed: try again (the coordinator may be moving), unless stopping.
      if (this.#stopping) return false;
      await sleep(Math.min(1000, 50 * 2 ** Math.min(failures++, 5)));
    }
    return true;
  }

  open(context: SourceContext): Observable<Envelope<Uint8Array>> {
    return new Observable<Envelope<Uint8Array>>((subscriber) => {
      if (this.#consumer) {
        subscriber.error(new ConnectorError(`source ${this.name} is already open: open one pipeline per fromKafka()`));
        return;
      }
      const settings = this.#settings;
      const consumer = this.#kafka().consumer({
        groupId: settings.groupId,
        sessionTimeout: settings.sessionTimeout,
        heartbeatInterval: settings.heartbeatInterval,
        rebalanceTimeout: settings.rebalanceTimeout,
        maxBytesPerPartition: settings.maxBytesPerPartition,
        maxWaitTimeInMs: settings.maxWaitMs,
        // A request cut off by our own disconnect crashes the consumer with a retriable
        // error, and kafkajs would start it again, rejoining the group and keeping the
        // process alive after stop(): never restart once stopping.
        retry: { retries: 5, restartOnFailure: async () => !this.#stopping },
      });
      this.#consumer = consumer;
      this.#context = context;
      this.#instrument?.(consumer);
      this.#listen(consumer, subscriber);
      this.#lagTimer = setInterval(() => void this.#refreshLag(), settings.lagRefreshMs).unref();
      const stop = () => void this.#drainAndLeave(subscriber);
      context.signal.addEventListener('abort', stop, { once: true });
      (async () => {
        await this.#awaitTopics(context.signal);
        // Stopped while waiting: the abort already drains and completes.
        if (context.signal.aborted) return;
        await consumer.connect();
        await consumer.subscribe({ topics: settings.topics, fromBeginning: settings.fromBeginning });
        this.#running = true;
        await consumer.run({
          autoCommit: false,
          eachBatchAutoResolve: false,
          eachBatch: (payload) => this.#eachBatch(payload, subscriber),
        });
        if (context.signal.aborted) stop();
      })().catch((cause: unknown) => this.#fail(subscriber, cause));
      return () => {
        context.signal.removeEventListener('abort', stop);
        this.#stopping = true;
        clearTimeout(this.#commitTimer);
        this.#stopLagRefresh();
        void consumer.disconnect().catch(() => undefined);
      };
    });
  }

  settled(envelope: Envelope<Uint8Array>, error?: Error): void {
    this.#outstanding--;
    // The tracker that emitted this very record moves a commit only while it is live: one
    // retired since (rebalance, restart, nack) ignores it, and a later tracker that read
    // the same offset again holds another envelope for it.
    const meta = envelope.meta;
    const tracker = KafkaRecordMeta.trackerOf(meta);
    if (tracker) {
      const offset = KafkaRecordMeta.offsetOf(meta);
      if (error) {
        if (tracker.emittedAs(offset, envelope)) this.#rewind(tracker, offset);
      } else if (tracker.settled(offset, envelope)) this.#scheduleCommit(this.#settings.commitIntervalMs);
    }
    if (this.#outstanding === 0) this.#drained?.();
  }

  status(): SourceStatus {
    const lag: Record<string, number> = {};
    for (const id of this.#assignment) {
      const high = this.#highWatermarks.get(id);
      const position = this.#positions.get(id);
      if (high !== undefined && position !== undefined) lag[id] = Math.max(0, high - position);
    }
    return { connected: this.#connected, lag };
  }

  #listen(consumer: Consumer, subscriber: Subscriber<Envelope<Uint8Array>>): void {
    const { GROUP_JOIN, REBALANCING, CRASH, DISCONNECT } = consumer.events;
    consumer.on(GROUP_JOIN, ({ payload }) => {
      this.#retireAll();
      for (const [topic, partitions] of Object.entries(payload.memberAssignment)) {
        for (const partition of partitions) this.#assignment.add(`${topic}/${partition}`);
      }
      this.#connected = true;
      this.#joined = true;
      // Every owned partition gets a lag now, not only once a fetch returns records.
      void this.#refreshLag();
    });
    // The coordinator is moving partitions: from now on nothing read before may be
    // committed, and kafkajs will restart each partition it keeps from its last commit.
    consumer.on(REBALANCING, () => {
      this.#joined = false;
      this.#retireAll();
    });
    consumer.on(CRASH, ({ payload }) => {
      if (this.#stopping) return; // our own disconnect cut a request short
      this.#retireAll();
      this.#commit = undefined;
      this.#connected = false;
      this.#joined = false;
      if (!payload.restart) this.#fail(subscriber, payload.error);
    });
    consumer.on(DISCONNECT, () => (this.#connected = false));
  }

  async #eachBatch(payload: EachBatchPayload, subscriber: Subscriber<Envelope<Uint8Array>>): Promise<void> {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    this.#commit = payload.commitOffsetsIfNecessary;
    const { topic, partition } = batch;
    const id = `${topic}/${partition}`;
    const settings = this.#settings;
    this.#raiseEnd(id, Number(batch.highWatermark));
    // A batch fetched before a rebalance may arrive after it: never emit for a partition not owned.
    if (this.#stopping || !this.#assignment.has(id)) return;
    if (!this.#positions.has(id)) this.#positions.set(id, Number(batch.firstOffset()));
    let tracker = this.#trackers.get(id);
    if (!tracker) {
      let cuts = this.#carriedCuts.get(id);
      if (!cuts && settings.batchAlignment !== false) {
        // Where the previous reader's batches past the commit ended: cut there again.
        for (let attempt = 0; !cuts; attempt++) {
          try {
            cuts = (await this.#committedCutsOf(topic)).get(partition) ?? [];
          } catch {
            if (this.#stopping || !isRunning() || isStale()) return;
            await heartbeat().catch(() => undefined);
            await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 4)));
          }
        }
        if (this.#stopping || !this.#assignment.has(id) || !isRunning() || isStale()) return;
      }
      this.#carriedCuts.delete(id);
      tracker = this.#trackers.get(id) ?? new PartitionOffsets(topic, partition, ++this.#epochs, cuts);
      this.#trackers.set(id, tracker);
    }
    const context = this.#context!;
    const credits = context.credits;
    const { name, limits } = settings;
    const messages = batch.messages;
    // Offsets only grow within a batch: the last one is the largest to check.
    if (messages.length > 0) {
      try {
        safeOffset(messages[messages.length - 1]!.offset, `partition ${id}`);
      } catch (error) {
        this.#fail(subscriber, error);
        return;
      }
    }
    const receivedAt = Date.now();
    const emittedUpTo = this.#emittedUpTo.get(id) ?? -1;
    const prefix = `${id}/`;
    const text = this.#text;
    // Batch-level bookkeeping: kafkajs is told the last emitted offset, and the highest
    // emitted one is noted, once before each await and once at the end, not per message
    // (each resolveOffset and isStale call costs kafkajs Long arithmetic and a JSON key).
    // Nothing the loop calls seeks or stops kafkajs synchronously: a nack retires the
    // tracker first and arrives later, and stopping sets #stopping, both checked per message.
    let unresolved: string | undefined;
    let highest = emittedUpTo;
    let timestampText: string | undefined;
    let timestamp = -1;
    const settle = () => {
      if (unresolved !== undefined) resolveOffset(unresolved);
      unresolved = undefined;
      if (highest > emittedUpTo) this.#emittedUpTo.set(id, highest);
    };
    if (!isRunning() || isStale()) return;
    // Also when the loop throws: what was emitted stays resolved, as it was per message.
    try {
      let sinceHeartbeat = 0;
      for (let i = 0; i < messages.length; i++) {
        if (this.#stopping || tracker.retired) break;
        const message = messages[i]!;
        const offset = Number(message.offset);
        if (!tracker.accepts(offset)) continue;
        const value = message.value ?? EMPTY;
        if (!credits.tryTake(value.length)) {
          settle();
          if (!(await this.#awaitCredit(value.length, tracker, payload))) break;
        }
        unresolved = message.offset;
        if (offset > highest) highest = offset;
        const meta = new KafkaRecordMeta(name, prefix, receivedAt, offset <= emittedUpTo ? 2 : 1, tracker, offset);
        // Messages produced together share a timestamp: its text is read once, not per message.
        if (message.timestamp !== timestampText) timestamp = Number((timestampText = message.timestamp));
        if (timestamp >= 0) meta.timestamp = timestamp;
        if (message.key) meta.key = shortText(message.key);
        const headers = text.headers(message.headers);
        if (headers) meta.headers = headers;
        const vendor = settings.vendor(meta);
        if (vendor !== undefined) meta.vendor = vendor;
        this.#outstanding++;
        const envelope = context.envelope<Uint8Array>(value, meta, value, value.length);
        tracker.emitted(offset, envelope);
        if (value.length > limits.maxRecordBytes) envelope.reject(tooLarge(`message ${meta.position}`, value.length, limits)!);
        else subscriber.next(envelope);
        // Parsing and mapping a large batch takes a while: keep the membership alive.
        if (++sinceHeartbeat === 500) {
          sinceHeartbeat = 0;
          settle();
          await heartbeat();
          if (!isRunning() || isStale()) break;
        }
      }
    } finally {
      settle();
    }
  }

  /**
   * Out of credit in the middle of a batch: waits until a quarter of the in-flight budget
   * is free, heartbeating meanwhile, and takes the record's credit. The rest of the batch
   * stays in hand, so nothing is fetched twice, and kafkajs fetches nothing more meanwhile
   * (its fetcher waits for the batch): memory stays bounded by one fetch. Waking at a
   * quarter, not at the first credit back, keeps settlements that trickle in from costing
   * a wake-up each. False when the batch must be left: stopping, the partition handed on,
   * or kafkajs moved on (a seek, a rebalance).
   */
  async #awaitCredit(bytes: number, tracker: PartitionOffsets, payload: EachBatchPayload): Promise<boolean> {
    const credits = this.#context!.credits;
    const { heartbeatInterval } = this.#settings;
    const records = credits.maxRecords - Math.max(1, Math.floor(credits.maxRecords / 4));
    const budget = credits.maxBytes - Math.floor(credits.maxBytes / 4);
    this.#waitingForCredit = true;
    const done = new AbortController();
    let tick: Promise<void> | undefined;
    try {
      for (;;) {
        tick ??= sleep(heartbeatInterval, done.signal).then(() => void (tick = undefined));
        await Promise.race([credits.released(), tick]);
        // Sent only when the interval has passed since the last one; throws on a rebalance.
        await payload.heartbeat();
        if (this.#stopping || tracker.retired || !payload.isRunning() || payload.isStale()) return false;
        if (credits.inFlightRecords <= records && credits.inFlightBytes <= budget && credits.tryTake(bytes)) return true;
      }
    } finally {
      this.#waitingForCredit = false;
      done.abort();
    }
  }

  /**
   * Asks the broker what fetches do not tell: while the source waits for credit, the end
   * offsets of every owned partition (nothing is fetched, so their lag would stay where it
   * was when credits ran out, just when it matters), and, for an owned partition nothing
   * was fetched from yet (empty, or not reached since the last rebalance), its end and the
   * group's committed offset, so every owned partition reports a lag. A broker that cannot answer leaves the last known
   * figures in place; the next round tries again.
   */
  async #refreshLag(): Promise<void> {
    if (this.#stopping) return;
    const waiting = this.#waitingForCredit;
    const topics = new Set([...this.#assignment].filter((id) => waiting || !this.#positions.has(id)).map((id) => id.slice(0, id.lastIndexOf('/'))));
    if (topics.size === 0) return;
    try {
      const admin = await this.#adminClient();
      for (const topic of topics) {
        const [ends, [committed]] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId: this.#settings.groupId, topics: [topic] })]);
        const at = new Map(committed!.partitions.map((p) => [p.partition, Number(p.offset)]));
        for (const { partition, high, low } of ends) {
          const id = `${topic}/${partition}`;
          if (!this.#assignment.has(id)) continue;
          this.#raiseEnd(id, Number(high));
          if (!this.#positions.has(id)) {
            const commit = at.get(partition) ?? -1;
            this.#positions.set(id, commit >= 0 ? commit : this.#settings.fromBeginning ? Number(low) : Number(high));
          }
        }
      }
    } catch {
      // Lag is a reading, not a duty: keep the last one.
    }
  }

  /** The cuts in the group's committed metadata for each partition of `topic`; asked once per assignment. */
  #committedCutsOf(topic: string): Promise<Map<number, Cut[]>> {
    let cuts = this.#committedCuts.get(topic);
    if (!cuts) {
      cuts = (async () => {
        const admin = await this.#adminClient();
        const [committed] = await admin.fetchOffsets({ groupId: this.#settings.groupId, topics: [topic] });
        return new Map(committed!.partitions.map((p) => [p.partition, cutsOfMetadata(p.metadata, Number(p.offset))]));
      })();
      this.#committedCuts.set(topic, cuts);
      cuts.catch(() => {
        if (this.#committedCuts.get(topic) === cuts) this.#committedCuts.delete(topic);
      });
    }
    return cuts;
  }

  #adminClient(): Promise<Admin> {
    this.#admin ??= (async () => {
      const admin = this.#kafka().admin();
      await admin.connect();
      return admin;
    })().catch((cause: unknown) => {
      this.#admin = undefined;
      throw cause;
    });
    return this.#admin;
  }

  /**
   * Resolves once every topic is served: each partition's leader answers for it (a topic
   * just created is listed before its leader hosts it, and a fetch or produce in between
   * fails with "This server does not host this topic-partition"). Missing topics are
   * created when configured, else waited for with backoff until the pipeline stops.
   */
  async #awaitTopics(signal: AbortSignal): Promise<void> {
    const { topics, createTopics } = this.#settings;
    await retry(
      async () => {
        const admin = await this.#adminClient();
        if (createTopics) {
          const existing = new Set(await admin.listTopics());
          const missing = topics.filter((topic) => !existing.has(topic));
          if (missing.length > 0) {
            await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: createTopics.partitions, replicationFactor: createTopics.replicationFactor })), waitForLeaders: true });
          }
        }
        for (const topic of topics) await admin.fetchTopicOffsets(topic);
      },
      { retries: Infinity, initialDelayMs: 100, maxDelayMs: 5000, retriable: () => true, signal },
    ).catch((error: unknown) => {
      if (!signal.aborted) throw error;
    });
  }

  /** Notes a partition's end offset, from a fetch or from the broker: ends only grow, whichever answer came last. */
  #raiseEnd(id: string, end: number): void {
    this.#highWatermarks.set(id, Math.max(end, this.#highWatermarks.get(id) ?? 0));
  }

  #stopLagRefresh(): void {
    clearInterval(this.#lagTimer);
    this.#lagTimer = undefined;
    const admin = this.#admin;
    this.#admin = undefined;
    void admin?.then((a) => a.disconnect()).catch(() => undefined);
  }

  /**
   * A record could not be made durable: commit only what was settled before it, and read
   * the partition again from the first record not settled.
   */
  #rewind(tracker: PartitionOffsets, offset: number): void {
    tracker.nacked(offset);
    if (tracker.retired) return;
    const restartAt = tracker.retire();
    this.#trackers.delete(tracker.id);
    if (restartAt === undefined || this.#stopping) return;
    // Batches past the failed record may have been written: the rereading cuts them alike.
    this.#carriedCuts.set(tracker.id, tracker.cutsFrom(restartAt));
    if (restartAt !== tracker.committed) {
      this.#finalCommits.set(tracker.id, { tracker, offset: restartAt });
      this.#scheduleCommit(0);
    }
    this.#consumer!.seek({ topic: tracker.topic, partition: tracker.partition, offset: String(restartAt) });
  }

  #retireAll(): void {
    for (const tracker of this.#trackers.values()) tracker.retire();
    this.#trackers.clear();
    this.#finalCommits.clear();
    this.#assignment.clear();
    this.#positions.clear();
    this.#committedCuts.clear();
    this.#carriedCuts.clear();
  }

  #scheduleCommit(delayMs: number): void {
    if (this.#commitTimer || this.#committing) {
      this.#commitAgain = true;
      return;
    }
    this.#commitTimer = setTimeout(() => {
      this.#commitTimer = undefined;
      void this.#flushCommits();
    }, delayMs);
  }

  /**
   * Commits every owned partition whose commit point moved. Runs from a timer, never in
   * the middle of a kafkajs rejoin, and goes from the ownership check to kafkajs reading
   * its generation without yielding: the commit carries the generation that assignment
   * belongs to, so the coordinator refuses it if the group has moved on since.
   */
  async #flushCommits(): Promise<void> {
    const commit = this.#commit;
    if (!commit || this.#committing) return;
    const due: { tracker: PartitionOffsets; offset: number; cutVersion?: number }[] = [];
    for (const tracker of this.#trackers.values()) {
      // A cut not yet committed is committed at once, with the offset where it stands.
      const offset = tracker.toCommit() ?? (tracker.cutsPending ? tracker.commitPoint : undefined);
      if (offset !== undefined && this.#assignment.has(tracker.id)) due.push({ tracker, offset, cutVersion: tracker.cutVersion });
    }
    for (const final of this.#finalCommits.values()) if (this.#assignment.has(final.tracker.id)) due.push(final);
    this.#finalCommits.clear();
    if (due.length === 0) return;
    const aligned = this.#settings.batchAlignment !== false;
    const byTopic = new Map<string, { partition: number; offset: string; metadata?: string }[]>();
    for (const { tracker, offset } of due) {
      let partitions = byTopic.get(tracker.topic);
      if (!partitions) byTopic.set(tracker.topic, (partitions = []));
      // Every commit carries the cuts past it: the last one is what a replay reads.
      partitions.push({ partition: tracker.partition, offset: String(offset), ...(aligned && { metadata: cutsMetadata(tracker.cutsFrom(offset), offset) }) });
    }
    let failed = false;
    this.#committing = commit({ topics: [...byTopic].map(([topic, partitions]) => ({ topic, partitions })) }).then(
      () => {
        for (const { tracker, offset, cutVersion } of due) {
          tracker.committed = offset;
          if (cutVersion !== undefined) tracker.cutsCommitted = Math.max(tracker.cutsCommitted, cutVersion);
          if (this.#assignment.has(tracker.id)) this.#positions.set(tracker.id, offset);
        }
      },
      // Not retried as it was: the next attempt recomputes from what is owned then.
      () => {
        failed = true;
      },
    );
    await this.#committing;
    this.#committing = undefined;
    if (failed) {
      for (const final of due) if (final.tracker.retired && !this.#finalCommits.has(final.tracker.id)) this.#finalCommits.set(final.tracker.id, final);
      this.#scheduleCommit(Math.max(500, this.#settings.commitIntervalMs));
    } else if (this.#commitAgain) {
      this.#commitAgain = false;
      this.#scheduleCommit(this.#settings.commitIntervalMs);
    }
  }

  /** Stops emitting, waits for what is in flight to settle, commits, and leaves the group. */
  async #drainAndLeave(subscriber: Subscriber<Envelope<Uint8Array>>): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const consumer = this.#consumer!;
    try {
      // Nothing more is emitted; stop fetching too rather than fetch the same batch again.
      if (this.#running) consumer.pause(this.#settings.topics.map((topic) => ({ topic })));
      if (this.#outstanding > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
      clearTimeout(this.#commitTimer);
      this.#commitTimer = undefined;
      this.#stopLagRefresh();
      await this.#committing;
      await this.#flushCommits();
      // A member still joining cannot leave before the coordinator answers its join, which
      // it holds until every member rejoined or the rebalance timeout passed; it owns
      // nothing to commit, so it does not wait: the disconnect finishes in the background
      // and the coordinator drops the member after its session timeout.
      const leaving = consumer.disconnect();
      if (this.#joined) await leaving;
      else leaving.catch(() => undefined);
      this.#connected = false;
      subscriber.complete();
    } catch (cause) {
      this.#fail(subscriber, cause);
    }
  }

  #fail(subscriber: Subscriber<Envelope<Uint8Array>>, cause: unknown): void {
    if (subscriber.closed) return;
    this.#stopping = true;
    this.#stopLagRefresh();
    void this.#consumer?.disconnect().catch(() => undefined);
    subscriber.error(cause instanceof ConnectorError ? cause : new ConnectorError(`source ${this.name} failed: ${String(cause)}`, { cause, retriable: true }));
  }
}
