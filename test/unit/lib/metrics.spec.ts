import { expect } from 'chai';
import { register as globalRegistry, Registry } from 'prom-client';
import { map, pipe } from 'rxjs';
import { fromIterable } from '../../../connectors/iterable';
import { AccessControl } from '../../../lib/security/access';
import type { Envelope } from '../../../lib/envelope';
import { ConfigError, SinkError } from '../../../lib/errors';
import type { PipelineEvent } from '../../../lib/events';
import { consoleLogger } from '../../../lib/logger';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import { serveMetrics, type MetricsServer } from '../../../lib/serveMetrics';
import type { DeadLetter } from '../../../lib/sink';
import type { Source, SourceStatus } from '../../../lib/source';
import { dedupe } from '../../../operators/dedupe';
import { MemoryDedupeStore } from '../../../operators/dedupeStores';
import { delay, MemorySink, until } from '../../helpers';
import { metricValue, parseMetrics } from '../../metricsText';

interface Booking {
  id: number;
  card: string;
}

/** A source fed by the test: push records, end it; reports the status the test sets. */
function feedSource(status?: SourceStatus) {
  const queue: Booking[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  async function* items() {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  const inner = fromIterable(items(), { name: 'feed' });
  const end = () => {
    ended = true;
    wake?.();
  };
  const source: Source<Booking> & { status?: () => SourceStatus } = {
    name: inner.name,
    open(context) {
      // Stopping the pipeline ends the feed, as a real source stops reading.
      context.signal.addEventListener('abort', end);
      return inner.open(context);
    },
  };
  if (status) source.status = () => status;
  return {
    source,
    push(...bookings: Booking[]) {
      queue.push(...bookings);
      wake?.();
    },
    end,
  };
}

const bookings = (from: number, count: number, card = '4111111111111111'): Booking[] => Array.from({ length: count }, (_, i) => ({ id: from + i, card }));

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; type: string | null }> {
  const response = await fetch(url, { headers });
  return { status: response.status, text: await response.text(), type: response.headers.get('content-type') };
}

describe('metrics, events and probes', () => {
  const servers: MetricsServer[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.close();
  });

  it('serves counters that move as records flow through a running pipeline', async () => {
    const feed = feedSource();
    const stats = { passed: 0, duplicates: 0, rejected: 0 };
    const sink = new MemorySink<Booking>('bookings');
    let release: (() => void) | undefined;
    let gated = false;
    sink.gate = () => (gated ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve());
    const pipeline = new Pipeline<Booking>({
      name: 'bookings',
      source: feed.source,
      // Odd ids above 1000 are refused by "validate"; ids repeat to be deduplicated.
      transform: pipe(
        dedupe<Booking>({ key: (b) => String(b.id), ttlMs: 60_000, store: new MemoryDedupeStore(), stats }),
        map((envelope: Envelope<Booking>) => {
          if (envelope.value.id > 1000 && envelope.value.id % 2 === 1) envelope.reject({ stage: 'validate', code: 'ODD', message: 'odd id', path: '/id' });
          return envelope;
        }),
      ),
      sink,
      deadLetters: new MemorySink<DeadLetter>('dead_letters'),
      batch: { rows: 10, maxWaitMs: 5 },
      deadLetterBatch: { rows: 10, maxWaitMs: 5 },
    });
    const server = await serveMetrics(pipeline, { port: 0, dedupe: stats });
    servers.push(server);
    await pipeline.start();
    const scrape = async () => parseMetrics((await get(`${server.url}/metrics`)).text);

    const before = await scrape();
    expect(metricValue(before, 'tributary_records_total', { pipeline: 'bookings', stage: 'source', outcome: 'in' })).to.equal(0);
    expect(metricValue(before, 'tributary_pipeline_up', { pipeline: 'bookings' })).to.equal(1);

    feed.push(...bookings(1, 100));
    await until(() => pipeline.stats.written === 100, 5000, '100 written');
    const first = await scrape();
    expect(metricValue(first, 'tributary_records_total', { pipeline: 'bookings', stage: 'source', outcome: 'in' })).to.equal(100);
    expect(metricValue(first, 'tributary_records_total', { pipeline: 'bookings', stage: 'sink', outcome: 'written' })).to.equal(100);
    expect(metricValue(first, 'tributary_batch_rows_sum', { pipeline: 'bookings', stage: 'sink' })).to.equal(100);
    expect(metricValue(first, 'tributary_sink_write_duration_seconds_count', { pipeline: 'bookings', stage: 'sink', outcome: 'ok' })).to.equal(
      metricValue(first, 'tributary_batch_rows_count', { pipeline: 'bookings', stage: 'sink' }),
    );

    // 50 fresh records of which 25 are refused, and 30 duplicates of the first hundred.
    feed.push(...bookings(1001, 50), ...bookings(1, 30));
    await until(() => pipeline.stats.written === 125 && pipeline.stats.deadLettered === 25 && stats.duplicates === 30, 5000, 'the second lot');
    const second = await scrape();
    expect(metricValue(second, 'tributary_records_total', { pipeline: 'bookings', stage: 'source', outcome: 'in' })).to.equal(180);
    expect(metricValue(second, 'tributary_records_total', { pipeline: 'bookings', stage: 'sink', outcome: 'written' })).to.equal(125);
    expect(metricValue(second, 'tributary_records_total', { pipeline: 'bookings', stage: 'validate', outcome: 'dead_lettered' })).to.equal(25);
    expect(metricValue(second, 'tributary_records_total', { pipeline: 'bookings', stage: 'dedupe', outcome: 'deduplicated' })).to.equal(30);
    expect(metricValue(second, 'tributary_batch_rows_sum', { pipeline: 'bookings', stage: 'dead_letters' })).to.equal(25);
    expect(metricValue(second, 'tributary_batch_bytes_sum', { pipeline: 'bookings', stage: 'sink' })).to.be.greaterThan(
      metricValue(first, 'tributary_batch_bytes_sum', { pipeline: 'bookings', stage: 'sink' })!,
    );

    // A held write: its records are in flight, and the gauges say so.
    gated = true;
    feed.push(...bookings(2001, 4).map((b) => ({ ...b, id: b.id * 2 })));
    // Wait for the gate itself: earlier writes are already in sink.writes, and the four
    // records are in flight before the batch reaches the sink.
    await until(() => release !== undefined && pipeline.stats.inFlightRecords === 4, 5000, 'a held write');
    const held = await scrape();
    expect(metricValue(held, 'tributary_in_flight_records', { pipeline: 'bookings' })).to.equal(4);
    expect(metricValue(held, 'tributary_in_flight_bytes', { pipeline: 'bookings' })).to.equal(pipeline.stats.inFlightBytes).and.greaterThan(0);
    expect(metricValue(held, 'tributary_in_flight_records_limit', { pipeline: 'bookings' })).to.equal(60_000);
    gated = false;
    release!();
    feed.end();
    await pipeline.finished();
    const after = await scrape();
    expect(metricValue(after, 'tributary_in_flight_records', { pipeline: 'bookings' })).to.equal(0);
    expect(metricValue(after, 'tributary_records_total', { pipeline: 'bookings', stage: 'sink', outcome: 'written' })).to.equal(129);
    expect(metricValue(after, 'tributary_pipeline_up', { pipeline: 'bookings' })).to.equal(0);
    expect((await get(`${server.url}/ready`)).status).to.equal(503);
  });

  it('reports consumer lag, cursor age and connection from the source status, and /ready follows the connection', async () => {
    const status: { connected: boolean; lag: Record<string, number>; cursorAgeSeconds: number } = {
      connected: true,
      lag: { 'bookings.v1/0': 12, 'bookings.v1/1': 0, 'events/with/slashes/3': 7 },
      cursorAgeSeconds: 42,
    };
    const feed = feedSource(status);
    const pipeline = new Pipeline<Booking>({ name: 'lagging', source: feed.source, sink: new MemorySink<Booking>(), deadLetters: new MemorySink<DeadLetter>() });
    const server = await serveMetrics(pipeline, { port: 0 });
    servers.push(server);
    await pipeline.start();
    let metrics = parseMetrics((await get(`${server.url}/metrics`)).text);
    expect(metricValue(metrics, 'tributary_consumer_lag', { pipeline: 'lagging', source: 'feed', topic: 'bookings.v1', partition: '0' })).to.equal(12);
    expect(metricValue(metrics, 'tributary_consumer_lag', { pipeline: 'lagging', source: 'feed', topic: 'events/with/slashes', partition: '3' })).to.equal(7);
    expect(metricValue(metrics, 'tributary_poller_cursor_age_seconds', { pipeline: 'lagging', source: 'feed' })).to.equal(42);
    expect(metricValue(metrics, 'tributary_source_connected', { pipeline: 'lagging', source: 'feed' })).to.equal(1);
    let ready = await get(`${server.url}/ready`);
    expect(ready.status).to.equal(200);
    expect(JSON.parse(ready.text)).to.deep.include({ ready: true });

    status.connected = false;
    status.lag['bookings.v1/0'] = 40;
    metrics = parseMetrics((await get(`${server.url}/metrics`)).text);
    expect(metricValue(metrics, 'tributary_source_connected', { pipeline: 'lagging', source: 'feed' })).to.equal(0);
    expect(metricValue(metrics, 'tributary_consumer_lag', { pipeline: 'lagging', source: 'feed', topic: 'bookings.v1', partition: '0' })).to.equal(40);
    expect(metricValue(metrics, 'tributary_ready', { pipeline: 'lagging' })).to.equal(0);
    ready = await get(`${server.url}/ready`);
    expect(ready.status).to.equal(503);
    expect(JSON.parse(ready.text).pipelines.lagging.reasons).to.deep.equal(['source feed is not connected']);
    // Liveness is not readiness: the pipeline is alive.
    expect((await get(`${server.url}/health`)).status).to.equal(200);

    status.connected = true;
    expect((await get(`${server.url}/ready`)).status).to.equal(200);
    feed.end();
    await pipeline.finished();
  });

  it('asks for metrics:read on /metrics when given access control, and leaves the probes open', async () => {
    const reader = AccessControl.issueKey('prometheus', ['scraper']);
    const other = AccessControl.issueKey('vendor', ['vendor']);
    const decisions: string[] = [];
    const access = new AccessControl({
      roles: { scraper: ['metrics:read'], vendor: ['webhook:post:*'] },
      keys: [reader.record, other.record],
      onDecision: (d) => decisions.push(`${d.keyId ?? '-'} ${d.outcome}`),
    });
    const feed = feedSource();
    const pipeline = new Pipeline<Booking>({ name: 'guarded', source: feed.source, sink: new MemorySink<Booking>(), deadLetters: new MemorySink<DeadLetter>() });
    const server = await serveMetrics(pipeline, { port: 0, access });
    servers.push(server);
    await pipeline.start();

    const none = await get(`${server.url}/metrics`);
    expect(none.status).to.equal(401);
    expect(none.text).to.not.include('tributary_');
    expect((await get(`${server.url}/metrics`, { authorization: `Bearer ${reader.token}x` })).status).to.equal(401);
    const forbidden = await get(`${server.url}/metrics`, { authorization: `Bearer ${other.token}` });
    expect(forbidden.status).to.equal(403);
    expect(forbidden.text).to.not.include('tributary_');
    const bearer = await get(`${server.url}/metrics`, { authorization: `Bearer ${reader.token}` });
    expect(bearer.status).to.equal(200);
    expect(bearer.type).to.match(/^text\/plain/);
    expect(bearer.text).to.include('tributary_records_total{pipeline="guarded",stage="source",outcome="in"} 0');
    expect((await get(`${server.url}/metrics`, { 'x-api-key': reader.token })).status).to.equal(200);
    expect((await get(`${server.url}/health`)).status).to.equal(200);
    expect((await get(`${server.url}/ready`)).status).to.equal(200);
    expect((await get(`${server.url}/nothing`)).status).to.equal(404);
    expect(decisions).to.deep.equal(['- UNAUTHENTICATED', '- UNAUTHENTICATED', 'vendor FORBIDDEN', 'prometheus ok', 'prometheus ok']);
    feed.end();
    await pipeline.finished();
  });

  it('emits namespaced events in one envelope, the breaker opening and closing among them, and /health turns 503 on a crash', async () => {
    const feed = feedSource();
    const sink = new MemorySink<Booking>('flaky');
    let failing = true;
    sink.gate = async () => {
      if (failing) throw new SinkError('connection refused', { retriable: true });
    };
    const pipeline = new Pipeline<Booking>({
      name: 'events',
      source: feed.source,
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 5, maxWaitMs: 5 },
      retry: { initialDelayMs: 5, maxDelayMs: 20 },
      // Long enough that the breaker is still open when /ready and /metrics are read after
      // it opened, however slow the machine (at 100 ms it was half-open by then under load).
      breaker: { volumeThreshold: 2, resetTimeoutMs: 1000 },
    });
    const events: PipelineEvent[] = [];
    for (const type of ['pipeline.start', 'pipeline.stop', 'pipeline.end', 'sink.write', 'breaker.open', 'breaker.half_open', 'breaker.close'] as const) {
      pipeline.on(type, (event) => events.push(event));
    }
    const removed = pipeline.on('sink.write', () => {
      throw new Error('a broken listener');
    });
    const server = await serveMetrics(pipeline, { port: 0 });
    servers.push(server);
    await pipeline.start();
    feed.push(...bookings(1, 5));
    await until(() => pipeline.breakerState === 'open', 5000, 'the breaker to open');
    expect((await get(`${server.url}/ready`)).status).to.equal(503);
    const open = parseMetrics((await get(`${server.url}/metrics`)).text);
    expect(metricValue(open, 'tributary_breaker_state', { pipeline: 'events', stage: 'sink', sink: 'flaky' })).to.equal(2);
    expect(metricValue(open, 'tributary_sink_write_duration_seconds_count', { pipeline: 'events', stage: 'sink', outcome: 'error' })).to.be.greaterThan(0);
    failing = false;
    await until(() => pipeline.stats.written === 5, 10_000, 'the write after the breaker closes');
    expect(pipeline.breakerState).to.equal('closed');
    expect((await get(`${server.url}/ready`)).status).to.equal(200);
    removed();
    await pipeline.stop();

    const types = events.map((e) => e.type);
    expect(types[0]).to.equal('pipeline.start');
    expect(types).to.include.members(['breaker.open', 'breaker.half_open', 'breaker.close', 'pipeline.stop']);
    expect(types.indexOf('breaker.open')).to.be.lessThan(types.lastIndexOf('breaker.close'));
    expect(types[types.length - 1]).to.equal('pipeline.end');
    for (const event of events) {
      expect(event).to.have.all.keys('id', 'type', 'timestamp', 'payload');
      expect(event.payload).to.include({ pipeline: 'events' });
    }
    const ids = events.map((e) => e.id);
    expect(ids).to.deep.equal([...ids].sort((a, b) => a - b));
    const writes = events.filter((e): e is PipelineEvent<'sink.write'> => e.type === 'sink.write');
    expect(writes.some((w) => w.payload.error?.code === 'SINK' && w.payload.error.retriable)).to.equal(true);
    expect(writes[writes.length - 1]!.payload).to.include({ stage: 'sink', sink: 'flaky', rows: 5 }).and.not.have.property('error');
    expect(events.find((e) => e.type === 'pipeline.end')!.payload).to.deep.include({ stats: pipeline.stats });

    // A pipeline that fails is not live.
    const doomedFeed = feedSource();
    const doomed = new Pipeline<Booking>({
      name: 'doomed',
      source: doomedFeed.source,
      sink: Object.assign(new MemorySink<Booking>(), { write: async () => Promise.reject(new SinkError('gone for good')) }),
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 1, maxWaitMs: 1 },
    });
    const crashes: PipelineEvent<'pipeline.crash'>[] = [];
    doomed.on('pipeline.crash', (e) => crashes.push(e));
    const probe = await serveMetrics(doomed, { port: 0 });
    servers.push(probe);
    expect((await get(`${probe.url}/health`)).status).to.equal(200);
    await doomed.start();
    doomedFeed.push(...bookings(1, 1));
    const error = await doomed.finished().catch((e: unknown) => e);
    expect(error).to.be.instanceOf(SinkError);
    expect(crashes.map((c) => c.payload.error.code)).to.deep.equal(['SINK']);
    const health = await get(`${probe.url}/health`);
    expect(health.status).to.equal(503);
    expect(JSON.parse(health.text)).to.deep.equal({ live: false, failed: ['doomed'] });
  });

  it('logs through a pluggable logger, by level, without record payloads', async () => {
    const lines: string[] = [];
    const capture = { debug: (l: string) => lines.push(l), info: (l: string) => lines.push(l), warn: (l: string) => lines.push(l), error: (l: string) => lines.push(l) };
    const secret = '4929123456781234';
    const feed = feedSource();
    const sink = new MemorySink<Booking>('picky');
    let calls = 0;
    sink.gate = async (batch) => {
      calls++;
      // First a sink-down error, then a complaint quoting the row, as ClickHouse does.
      if (calls === 1) throw new SinkError('connection reset', { retriable: true });
      if (batch.envelopes.some((e) => e.value.card === secret)) {
        throw new SinkError(`Cannot parse input: expected , before: ${JSON.stringify(batch.envelopes[0]!.value)}`, { rowsAtFault: true });
      }
    };
    const pipeline = new Pipeline<Booking>({
      name: 'logged',
      source: feed.source,
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 3, maxWaitMs: 5 },
      retry: { initialDelayMs: 1, maxDelayMs: 2 },
      logger: consoleLogger({ level: 'info', console: capture }),
    });
    await pipeline.start();
    feed.push(...bookings(1, 3, secret));
    feed.end();
    await pipeline.finished();
    expect(pipeline.stats.deadLettered).to.equal(3);
    const text = lines.join('\n');
    expect(text).to.match(/INFO pipeline started pipeline="logged" source="feed" sink="picky"/);
    expect(text).to.match(/WARN batch write failed .*code="SINK" retriable=true error="connection reset"/);
    expect(text).to.match(/WARN sink refused rows of a batch: splitting it/);
    expect(text).to.match(/INFO pipeline ended .*deadLettered=3/);
    expect(text).to.not.include(secret);
    expect(text).to.not.include('DEBUG');

    const quiet: string[] = [];
    const silent = new Pipeline<Booking>({ source: fromIterable(bookings(1, 2, secret)), sink: new MemorySink<Booking>(), deadLetters: new MemorySink<DeadLetter>(), logger: consoleLogger({ level: 'error', console: { ...capture, info: (l: string) => quiet.push(l), error: (l: string) => quiet.push(l) } }) });
    await silent.run();
    expect(quiet).to.deep.equal([]);
    expect(() => consoleLogger({ level: 'loud' as 'info' })).to.throw(ConfigError, 'level must be one of debug, info, warn, error, got "loud"');
    expect(() => new Pipeline({ source: fromIterable([]), sink: new MemorySink(), deadLetters: new MemorySink<DeadLetter>(), logger: { info() {} } as never })).to.throw(
      ConfigError,
      'logger must have debug, info, warn and error methods, debug is missing',
    );
  });

  it('uses a fresh registry per call unless given one or told to use the global one, and refuses clashing pipeline names', async () => {
    const make = (name: string) => new Pipeline<Booking>({ name, source: fromIterable([]), sink: new MemorySink<Booking>(), deadLetters: new MemorySink<DeadLetter>() });
    const a = pipelineMetrics(make('a'));
    const b = pipelineMetrics(make('a'));
    expect(a.registry).to.not.equal(b.registry);
    expect(a.registry).to.not.equal(globalRegistry);

    const shared = new Registry();
    const one = pipelineMetrics(make('one'), { registry: shared });
    pipelineMetrics([make('two')], { registry: shared });
    const text = await shared.metrics();
    expect(text).to.include('tributary_records_total{pipeline="one",stage="source",outcome="in"} 0');
    expect(text).to.include('tributary_records_total{pipeline="two",stage="source",outcome="in"} 0');
    expect(() => pipelineMetrics(make('two'), { registry: shared })).to.throw(ConfigError, 'a pipeline named "two" is already reported in this registry');
    one.close();
    expect(await shared.metrics()).to.not.include('pipeline="one"');

    const global = pipelineMetrics(make('global-one'), { registry: 'global' });
    try {
      expect(global.registry).to.equal(globalRegistry);
      expect(await globalRegistry.metrics()).to.include('tributary_records_total{pipeline="global-one"');
    } finally {
      global.close();
    }
    expect(() => pipelineMetrics(make('x'), { latencyBuckets: [1, 0.5] })).to.throw(ConfigError, 'latencyBuckets must be positive numbers in ascending order, got [1, 0.5]');
    expect(() => pipelineMetrics([])).to.throw(ConfigError, 'pipelineMetrics needs at least one pipeline');
    expect(() => pipelineMetrics(make('y'), { dedupe: { first: {} as never } })).to.throw(ConfigError, 'dedupe.first must be the stats object given to dedupe()');
    await expectRejects(serveMetrics(make('z'), { port: 70000 }), 'port must be an integer in [0, 65535], got 70000');
  });

  it('counts records the sink refused for good as sink/nacked', async () => {
    const sink = new MemorySink<number>();
    sink.gate = async () => {
      throw new SinkError('unknown column', { retriable: false });
    };
    const pipeline = new Pipeline<number>({ name: 'refused', source: fromIterable([1, 2]), sink, deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 2 } });
    const metrics = pipelineMetrics(pipeline);
    await pipeline.run().catch(() => undefined);
    expect(pipeline.stats.nacked).to.equal(2);
    const samples = parseMetrics(await metrics.registry.metrics());
    expect(metricValue(samples, 'tributary_records_total', { pipeline: 'refused', stage: 'sink', outcome: 'nacked' })).to.equal(2);
    metrics.close();
  });

  it('keeps per-record work off the event path: one sink.write event per batch attempt', async () => {
    const sink = new MemorySink<number>();
    const pipeline = new Pipeline<number>({
      source: fromIterable(Array.from({ length: 5000 }, (_, i) => i)),
      sink,
      deadLetters: new MemorySink<DeadLetter>(),
      batch: { rows: 1000, maxWaitMs: 1000 },
    });
    let writes = 0;
    pipeline.on('sink.write', () => writes++);
    pipelineMetrics(pipeline);
    await pipeline.run();
    expect(writes).to.equal(sink.writes.length).and.equal(5);
    await delay(1);
  });
});

async function expectRejects(promise: Promise<unknown>, message: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).to.be.instanceOf(ConfigError);
  expect((error as Error).message).to.equal(message);
}
