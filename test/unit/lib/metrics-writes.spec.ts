import { expect } from 'chai';
import { Registry } from 'prom-client';
import { fromIterable } from '../../../connectors/iterable';
import { SinkError } from '../../../lib/errors';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, until } from '../../helpers';

/** The value of the sample `line` (metric name and labels), or undefined when there is none. */
async function value(registry: Registry, line: string): Promise<number | undefined> {
  const found = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe('pipeline metrics of sink writes and of a stopping pipeline', () => {
  it('times every write attempt in seconds by outcome, and sizes only the batches written', async () => {
    const sink = new MemorySink<number>('store');
    sink.gate = async (_batch, context) => {
      if (context.attempt === 1) throw new SinkError('server down', { retriable: true });
    };
    const pipeline = new Pipeline<number>({
      name: 'p',
      source: fromIterable([1, 2, 3]),
      sink,
      deadLetters: new MemorySink<DeadLetter>('letters'),
      batch: { rows: 3, maxWaitMs: 1000 },
      retry: { initialDelayMs: 0, maxDelayMs: 0 },
    });
    const durationsMs: number[] = [];
    pipeline.on('sink.write', ({ payload }) => durationsMs.push(payload.durationMs));
    const { registry } = pipelineMetrics(pipeline, { registry: new Registry() });
    await pipeline.run();
    expect(durationsMs).to.have.length(2);
    const series = 'tributary_sink_write_duration_seconds';
    expect(await value(registry, `${series}_count{pipeline="p",stage="sink",outcome="error"}`)).to.equal(1);
    expect(await value(registry, `${series}_count{pipeline="p",stage="sink",outcome="ok"}`)).to.equal(1);
    expect(await value(registry, `${series}_sum{pipeline="p",stage="sink",outcome="error"}`)).to.be.closeTo(durationsMs[0]! / 1000, 1e-9);
    expect(await value(registry, `${series}_sum{pipeline="p",stage="sink",outcome="ok"}`)).to.be.closeTo(durationsMs[1]! / 1000, 1e-9);
    expect(await value(registry, 'tributary_batch_rows_count{pipeline="p",stage="sink"}')).to.equal(1);
    expect(await value(registry, 'tributary_batch_rows_sum{pipeline="p",stage="sink"}')).to.equal(3);
    expect(await value(registry, 'tributary_batch_bytes_count{pipeline="p",stage="sink"}')).to.equal(1);
  });

  it('reports a pipeline up while it drains on stop', async () => {
    const sink = new MemorySink<number>('store');
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    sink.gate = () => gate;
    const pipeline = new Pipeline<number>({ name: 'p', source: fromIterable([1]), sink, deadLetters: new MemorySink<DeadLetter>('letters'), batch: { rows: 1, maxWaitMs: 1 } });
    const { registry } = pipelineMetrics(pipeline, { registry: new Registry() });
    await pipeline.start();
    await until(() => sink.writes.length === 1, 5000, 'the write');
    const stopping = pipeline.stop();
    expect(pipeline.state).to.equal('stopping');
    expect(await value(registry, 'tributary_pipeline_up{pipeline="p"}')).to.equal(1);
    open();
    await stopping;
    expect(await value(registry, 'tributary_pipeline_up{pipeline="p"}')).to.equal(0);
  });
});
