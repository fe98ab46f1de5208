import { Counter, Gauge, Histogram, register as globalRegistry, Registry } from 'prom-client';
import type { BreakerState } from './breaker';
import { ConfigError } from './errors';
import type { Pipeline } from './pipeline';

/** What the `dedupe` operator did with the records it saw (pass one to it as `stats` to have it counted). */
export interface DedupeStats {
  /** Records passed on: first sightings and redeliveries of the same record. */
  passed: number;
  /** Duplicates acked and dropped. */
  duplicates: number;
  /** Records dead-lettered because their key could not be computed. */
  rejected: number;
}

export interface PipelineMetricsOptions {
  /**
   * Where the metrics are registered: a prom-client `Registry` of yours, or `'global'` for
   * prom-client's default `register` (next to whatever else the process reports there).
   * Several `pipelineMetrics` calls may share a registry: each adds its pipelines to the
   * same `tributary_*` metrics, told apart by the `pipeline` label.
   * @default a new Registry for this call, in `.registry`
   */
  registry?: Registry | 'global';
  /**
   * The counters of `dedupe` operators (the object passed as their `stats` option),
   * reported as `tributary_records_total{stage="dedupe",outcome="deduplicated"}`; a record
   * of several names their stages (`{ 'dedupe:bookings': statsA, … }`). @default none
   */
  dedupe?: DedupeStats | Readonly<Record<string, DedupeStats>>;
  /**
   * Upper bounds of the sink write latency histogram, seconds, ascending. Only the first
   * call on a registry sets them. @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
   */
  latencyBuckets?: readonly number[];
}

/** The metrics of some pipelines in a registry. */
export interface PipelineMetrics {
  readonly registry: Registry;
  /** Stops reporting these pipelines: their series leave the registry at the next scrape. */
  close(): void;
}

const DEFAULT_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ROW_BUCKETS = [1, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000];
const BYTE_BUCKETS = [1024, 16_384, 131_072, 1_048_576, 4_194_304, 16_777_216, 67_108_864];
const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, halfOpen: 1, open: 2 };

interface Tracked {
  pipeline: Pipeline<any>;
  dedupe: ReadonlyArray<[stage: string, stats: DedupeStats]>;
  unsubscribe: () => void;
}

/**
 * The `tributary_*` metrics of one registry. Counts and gauges are read from the
 * pipelines when Prometheus scrapes (their own counters, credits, breakers, the source's
 * `status()`), so records cost nothing extra on their way; histograms are fed one
 * observation per batch write from the `sink.write` event.
 */
class RegistryMetrics {
  readonly tracked = new Set<Tracked>();
  readonly latency: Histogram<'pipeline' | 'stage' | 'outcome'>;
  readonly batchRows: Histogram<'pipeline' | 'stage'>;
  readonly batchBytes: Histogram<'pipeline' | 'stage'>;

  constructor(registry: Registry, latencyBuckets: readonly number[]) {
    const metrics = this;
    const registers = [registry];
    new Counter({
      name: 'tributary_records_total',
      help: 'Records by stage and outcome: source/in read, sink/written acked after the sink write, <refusing stage>/dead_lettered acked after the dead-letter write, sink/nacked failed back to the source, dedupe/deduplicated dropped as duplicates',
      labelNames: ['pipeline', 'stage', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const { pipeline, dedupe } of metrics.tracked) {
          const stats = pipeline.stats;
          const name = pipeline.name;
          this.inc({ pipeline: name, stage: 'source', outcome: 'in' }, stats.read);
          this.inc({ pipeline: name, stage: 'sink', outcome: 'written' }, stats.written);
          this.inc({ pipeline: name, stage: 'sink', outcome: 'nacked' }, stats.nacked);
          for (const [stage, count] of pipeline.deadLetteredByStage()) this.inc({ pipeline: name, stage, outcome: 'dead_lettered' }, count);
          for (const [stage, counts] of dedupe) this.inc({ pipeline: name, stage, outcome: 'deduplicated' }, counts.duplicates);
        }
      },
    });
    const gauge = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void, tracked: Tracked) => void) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const t of metrics.tracked) read((labels, value) => this.set(labels, value), t);
        },
      });
    gauge('tributary_in_flight_records', 'Records read and not yet settled (credits taken)', ['pipeline'], (set, { pipeline }) => set({ pipeline: pipeline.name }, pipeline.credits.inFlightRecords));
    gauge('tributary_in_flight_bytes', 'Bytes (as received) read and not yet settled', ['pipeline'], (set, { pipeline }) => set({ pipeline: pipeline.name }, pipeline.credits.inFlightBytes));
    gauge('tributary_in_flight_records_limit', 'The in-flight record budget', ['pipeline'], (set, { pipeline }) => set({ pipeline: pipeline.name }, pipeline.credits.maxRecords));
    gauge('tributary_in_flight_bytes_limit', 'The in-flight byte budget', ['pipeline'], (set, { pipeline }) => set({ pipeline: pipeline.name }, pipeline.credits.maxBytes));
    gauge('tributary_breaker_state', 'Circuit breaker around a sink: 0 closed, 1 half-open (probing), 2 open (writes held back)', ['pipeline', 'stage', 'sink'], (set, { pipeline }) => {
      set({ pipeline: pipeline.name, stage: 'sink', sink: pipeline.sinkName }, BREAKER_VALUE[pipeline.breakerState]);
      set({ pipeline: pipeline.name, stage: 'dead_letters', sink: pipeline.deadLetterSinkName }, BREAKER_VALUE[pipeline.deadLetterBreakerState]);
    });
    gauge('tributary_pipeline_up', '1 while the pipeline runs (or drains on stop), 0 before, after, and once it failed', ['pipeline'], (set, { pipeline }) =>
      set({ pipeline: pipeline.name }, pipeline.state === 'running' || pipeline.state === 'stopping' ? 1 : 0),
    );
    gauge('tributary_ready', '1 when the pipeline runs, its sink breaker is closed and its source connected (what /ready answers)', ['pipeline'], (set, { pipeline }) =>
      set({ pipeline: pipeline.name }, pipeline.readiness().ready ? 1 : 0),
    );
    gauge('tributary_source_connected', "1 when the source reaches what it reads; only for sources that report it", ['pipeline', 'source'], (set, { pipeline }) => {
      const status = pipeline.sourceStatus();
      if (status) set({ pipeline: pipeline.name, source: pipeline.sourceName }, status.connected ? 1 : 0);
    });
    gauge('tributary_consumer_lag', 'Messages behind the newest per topic partition (Kafka sources)', ['pipeline', 'source', 'topic', 'partition'], (set, { pipeline }) => {
      const lag = pipeline.sourceStatus()?.lag;
      if (!lag) return;
      for (const [key, value] of Object.entries(lag)) {
        const slash = key.lastIndexOf('/');
        set({ pipeline: pipeline.name, source: pipeline.sourceName, topic: slash < 0 ? key : key.slice(0, slash), partition: slash < 0 ? '' : key.slice(slash + 1) }, value);
      }
    });
    gauge('tributary_poller_cursor_age_seconds', "Seconds since a poller's saved cursor last moved (polling sources)", ['pipeline', 'source'], (set, { pipeline }) => {
      const age = pipeline.sourceStatus()?.cursorAgeSeconds;
      if (age !== undefined) set({ pipeline: pipeline.name, source: pipeline.sourceName }, age);
    });
    gauge('tributary_webhook_replay_fill_ratio', "Share of a webhook source's replay store in use, 0 to 1: at 1 new requests get 503 REPLAY_STORE_FULL", ['pipeline', 'source'], (set, { pipeline }) => {
      const fill = pipeline.sourceStatus()?.replayFill;
      if (fill !== undefined) set({ pipeline: pipeline.name, source: pipeline.sourceName }, fill);
    });
    this.latency = new Histogram({
      name: 'tributary_sink_write_duration_seconds',
      help: 'Time of each attempt to write a batch to a sink (stage sink or dead_letters), by outcome ok or error',
      labelNames: ['pipeline', 'stage', 'outcome'],
      buckets: [...latencyBuckets],
      registers,
    });
    this.batchRows = new Histogram({ name: 'tributary_batch_rows', help: 'Rows per batch written', labelNames: ['pipeline', 'stage'], buckets: ROW_BUCKETS, registers });
    this.batchBytes = new Histogram({ name: 'tributary_batch_bytes', help: 'Bytes (as received) per batch written', labelNames: ['pipeline', 'stage'], buckets: BYTE_BUCKETS, registers });
  }
}

const byRegistry = new WeakMap<Registry, RegistryMetrics>();

/**
 * Reports pipelines as Prometheus metrics (prom-client), all named `tributary_*` with the
 * labels `pipeline`, `stage` and `outcome` where they apply. Serve them with
 * `serveMetrics`, or read `registry.metrics()` yourself.
 *
 * ## Example
 * ```ts
 * import { Pipeline, pipelineMetrics } from 'tributary';
 * const pipeline = new Pipeline({ ... });
 * const { registry } = pipelineMetrics(pipeline);
 * console.log(await registry.metrics());
 * ```
 *
 * @param pipelines The pipelines to report; their names must differ.
 * @param options Registry, dedupe counters, latency buckets.
 * @returns The registry, and `close()` to stop reporting these pipelines.
 */
export function pipelineMetrics(pipelines: Pipeline<any> | readonly Pipeline<any>[], options: PipelineMetricsOptions = {}): PipelineMetrics {
  const list = Array.isArray(pipelines) ? (pipelines as readonly Pipeline<any>[]) : [pipelines as Pipeline<any>];
  if (list.length === 0) throw new ConfigError('pipelineMetrics needs at least one pipeline');
  const registry = options.registry === 'global' ? globalRegistry : (options.registry ?? new Registry());
  if (!(registry instanceof Registry)) throw new ConfigError(`registry must be a prom-client Registry or 'global', got ${String(options.registry)}`);
  const buckets = options.latencyBuckets ?? DEFAULT_LATENCY_BUCKETS;
  if (buckets.length === 0 || buckets.some((b, i) => !(b > 0) || (i > 0 && b <= buckets[i - 1]!))) {
    throw new ConfigError(`latencyBuckets must be positive numbers in ascending order, got [${buckets.join(', ')}]`);
  }
  const dedupe = dedupeStages(options.dedupe);
  let metrics = byRegistry.get(registry);
  if (!metrics) {
    if (registry.getSingleMetric('tributary_records_total')) throw new ConfigError('this registry already holds tributary_* metrics from another copy of the library');
    metrics = new RegistryMetrics(registry, buckets);
    byRegistry.set(registry, metrics);
  }
  const names = new Set([...metrics.tracked].map((t) => t.pipeline.name));
  for (const pipeline of list) {
    if (names.has(pipeline.name)) throw new ConfigError(`a pipeline named ${JSON.stringify(pipeline.name)} is already reported in this registry: give pipelines distinct names`);
    names.add(pipeline.name);
  }
  const added: Tracked[] = list.map((pipeline) => {
    const m = metrics!;
    const unsubscribe = pipeline.on('sink.write', ({ payload: p }) => {
      m.latency.observe({ pipeline: p.pipeline, stage: p.stage, outcome: p.error ? 'error' : 'ok' }, p.durationMs / 1000);
      if (p.error) return;
      m.batchRows.observe({ pipeline: p.pipeline, stage: p.stage }, p.rows);
      m.batchBytes.observe({ pipeline: p.pipeline, stage: p.stage }, p.bytes);
    });
    return { pipeline, dedupe, unsubscribe };
  });
  for (const t of added) metrics.tracked.add(t);
  return {
    registry,
    close() {
      for (const t of added) {
        t.unsubscribe();
        metrics!.tracked.delete(t);
      }
    },
  };
}

function dedupeStages(option: PipelineMetricsOptions['dedupe']): Array<[string, DedupeStats]> {
  if (option === undefined) return [];
  if (isDedupeStats(option)) return [['dedupe', option]];
  const entries = Object.entries(option);
  for (const [stage, stats] of entries) {
    if (!isDedupeStats(stats)) throw new ConfigError(`dedupe.${stage} must be the stats object given to dedupe(), with numeric duplicates`);
  }
  return entries;
}

function isDedupeStats(value: unknown): value is DedupeStats {
  return typeof (value as DedupeStats | undefined)?.duplicates === 'number';
}
