import { expect } from 'chai';
import { NEVER } from 'rxjs';
import { Registry } from 'prom-client';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import type { Source, SourceStatus } from '../../../lib/source';
import { MemorySink } from '../../helpers';

/** A pipeline, never started, whose source reports `status`. */
function reporting(name: string, status?: SourceStatus): Pipeline<unknown> {
  const source: Source<unknown> = { name: 'feed', open: () => NEVER, ...(status && { status: () => status }) };
  return new Pipeline({ name, source, sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters'), inFlight: { records: 50_000, bytes: 1_000_000 } });
}

/** The sample lines of `metric` (not its _bucket, _sum, _count series). */
async function samples(registry: Registry, metric: string): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((line) => line.startsWith(`${metric}{`) || line.startsWith(`${metric} `));
}

describe('pipeline metrics as Prometheus reads them', () => {
  it('describes every tributary_* metric with its help and type', async () => {
    const { registry } = pipelineMetrics(reporting('p'));
    const described = (await registry.metrics()).split('\n').filter((line) => line.startsWith('# '));
    expect(described).to.deep.equal([
      '# HELP tributary_records_total Records by stage and outcome: source/in read, sink/written acked after the sink write, <refusing stage>/dead_lettered acked after the dead-letter write, sink/nacked failed back to the source, dedupe/deduplicated dropped as duplicates',
      '# TYPE tributary_records_total counter',
      '# HELP tributary_in_flight_records Records read and not yet settled (credits taken)',
      '# TYPE tributary_in_flight_records gauge',
      '# HELP tributary_in_flight_bytes Bytes (as received) read and not yet settled',
      '# TYPE tributary_in_flight_bytes gauge',
      '# HELP tributary_in_flight_records_limit The in-flight record budget',
      '# TYPE tributary_in_flight_records_limit gauge',
      '# HELP tributary_in_flight_bytes_limit The in-flight byte budget',
      '# TYPE tributary_in_flight_bytes_limit gauge',
      '# HELP tributary_breaker_state Circuit breaker around a sink: 0 closed, 1 half-open (probing), 2 open (writes held back)',
      '# TYPE tributary_breaker_state gauge',
      '# HELP tributary_pipeline_up 1 while the pipeline runs (or drains on stop), 0 before, after, and once it failed',
      '# TYPE tributary_pipeline_up gauge',
      '# HELP tributary_ready 1 when the pipeline runs, its sink breaker is closed and its source connected (what /ready answers)',
      '# TYPE tributary_ready gauge',
      '# HELP tributary_source_connected 1 when the source reaches what it reads; only for sources that report it',
      '# TYPE tributary_source_connected gauge',
      '# HELP tributary_consumer_lag Messages behind the newest per topic partition (Kafka sources)',
      '# TYPE tributary_consumer_lag gauge',
      "# HELP tributary_poller_cursor_age_seconds Seconds since a poller's saved cursor last moved (polling sources)",
      '# TYPE tributary_poller_cursor_age_seconds gauge',
      "# HELP tributary_webhook_replay_fill_ratio Share of a webhook source's replay store in use, 0 to 1: at 1 new requests get 503 REPLAY_STORE_FULL",
      '# TYPE tributary_webhook_replay_fill_ratio gauge',
      '# HELP tributary_sink_write_duration_seconds Time of each attempt to write a batch to a sink (stage sink or dead_letters), by outcome ok or error',
      '# TYPE tributary_sink_write_duration_seconds histogram',
      '# HELP tributary_batch_rows Rows per batch written',
      '# TYPE tributary_batch_rows histogram',
      '# HELP tributary_batch_bytes Bytes (as received) per batch written',
      '# TYPE tributary_batch_bytes histogram',
    ]);
  });

  it('reads budgets, breakers and what the source reports when scraped, and nothing a source does not report', async () => {
    const registry = new Registry();
    pipelineMetrics(reporting('kafka', { connected: false, lag: { 'bookings/0': 5, 'bookings.v2/11': 0, bare: 2, '/7': 1 } }), { registry });
    pipelineMetrics(reporting('poll', { connected: true, cursorAgeSeconds: 7.5, replayFill: 0.25 }), { registry });
    pipelineMetrics(reporting('quiet'), { registry });
    expect(await samples(registry, 'tributary_in_flight_records_limit')).to.deep.equal([
      'tributary_in_flight_records_limit{pipeline="kafka"} 50000',
      'tributary_in_flight_records_limit{pipeline="poll"} 50000',
      'tributary_in_flight_records_limit{pipeline="quiet"} 50000',
    ]);
    expect(await samples(registry, 'tributary_in_flight_bytes_limit')).to.include('tributary_in_flight_bytes_limit{pipeline="quiet"} 1000000');
    expect(await samples(registry, 'tributary_in_flight_bytes')).to.include('tributary_in_flight_bytes{pipeline="quiet"} 0');
    expect(await samples(registry, 'tributary_breaker_state')).to.deep.equal([
      'tributary_breaker_state{pipeline="kafka",stage="sink",sink="store"} 0',
      'tributary_breaker_state{pipeline="kafka",stage="dead_letters",sink="letters"} 0',
      'tributary_breaker_state{pipeline="poll",stage="sink",sink="store"} 0',
      'tributary_breaker_state{pipeline="poll",stage="dead_letters",sink="letters"} 0',
      'tributary_breaker_state{pipeline="quiet",stage="sink",sink="store"} 0',
      'tributary_breaker_state{pipeline="quiet",stage="dead_letters",sink="letters"} 0',
    ]);
    expect(await samples(registry, 'tributary_pipeline_up')).to.deep.equal(['tributary_pipeline_up{pipeline="kafka"} 0', 'tributary_pipeline_up{pipeline="poll"} 0', 'tributary_pipeline_up{pipeline="quiet"} 0']);
    expect(await samples(registry, 'tributary_source_connected')).to.deep.equal(['tributary_source_connected{pipeline="kafka",source="feed"} 0', 'tributary_source_connected{pipeline="poll",source="feed"} 1']);
    expect(await samples(registry, 'tributary_consumer_lag')).to.deep.equal([
      'tributary_consumer_lag{pipeline="kafka",source="feed",topic="bookings",partition="0"} 5',
      'tributary_consumer_lag{pipeline="kafka",source="feed",topic="bookings.v2",partition="11"} 0',
      'tributary_consumer_lag{pipeline="kafka",source="feed",topic="bare",partition=""} 2',
      'tributary_consumer_lag{pipeline="kafka",source="feed",topic="",partition="7"} 1',
    ]);
    expect(await samples(registry, 'tributary_poller_cursor_age_seconds')).to.deep.equal(['tributary_poller_cursor_age_seconds{pipeline="poll",source="feed"} 7.5']);
    expect(await samples(registry, 'tributary_webhook_replay_fill_ratio')).to.deep.equal(['tributary_webhook_replay_fill_ratio{pipeline="poll",source="feed"} 0.25']);
  });

  it('counts duplicates of one dedupe stage as "dedupe", of several by their names', async () => {
    const one = { passed: 3, duplicates: 2, rejected: 0 };
    const other = { passed: 1, duplicates: 4, rejected: 1 };
    const single = pipelineMetrics(reporting('a'), { dedupe: one });
    expect(await samples(single.registry, 'tributary_records_total')).to.include('tributary_records_total{pipeline="a",stage="dedupe",outcome="deduplicated"} 2');
    const named = pipelineMetrics(reporting('b'), { dedupe: { 'dedupe:bookings': one, 'dedupe:payments': other } });
    const lines = await samples(named.registry, 'tributary_records_total');
    expect(lines).to.include('tributary_records_total{pipeline="b",stage="dedupe:bookings",outcome="deduplicated"} 2');
    expect(lines).to.include('tributary_records_total{pipeline="b",stage="dedupe:payments",outcome="deduplicated"} 4');
    one.duplicates = 5;
    expect(await samples(single.registry, 'tributary_records_total')).to.include('tributary_records_total{pipeline="a",stage="dedupe",outcome="deduplicated"} 5');
  });

  it('takes latency buckets given, and refuses a registry that is not one, buckets out of order and a copy of the metrics from elsewhere', async () => {
    const bounds = async (latencyBuckets?: number[]) => {
      const pipeline = new Pipeline({ source: fromIterable([1]), sink: new MemorySink('store'), deadLetters: new MemorySink<DeadLetter>('letters') });
      const { registry } = pipelineMetrics(pipeline, latencyBuckets && { latencyBuckets });
      await pipeline.run();
      return (await samples(registry, 'tributary_sink_write_duration_seconds_bucket')).map((line) => /le="([^"]+)"/.exec(line)![1]);
    };
    expect(await bounds([0.5, 2])).to.deep.equal(['0.5', '2', '+Inf']);
    expect(await bounds()).to.deep.equal(['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '+Inf']);
    expect(() => pipelineMetrics(reporting('r'), { registry: {} as Registry })).to.throw(ConfigError, "registry must be a prom-client Registry or 'global', got [object Object]");
    for (const buckets of [[], [0, 1], [-1, 1], [1, 1], [2, 1], [NaN]]) {
      expect(() => pipelineMetrics(reporting('r'), { latencyBuckets: buckets }), JSON.stringify(buckets)).to.throw(ConfigError, 'latencyBuckets must be positive numbers in ascending order');
    }
    const foreign = new Registry();
    foreign.registerMetric(new (await import('prom-client')).Counter({ name: 'tributary_records_total', help: 'from another copy', registers: [] }));
    expect(() => pipelineMetrics(reporting('r'), { registry: foreign })).to.throw(ConfigError, 'this registry already holds tributary_* metrics from another copy of the library');
    expect(() => pipelineMetrics(reporting('r'), { dedupe: { x: { duplicates: '1' } as never } })).to.throw(ConfigError, 'dedupe.x must be the stats object');
  });
});
