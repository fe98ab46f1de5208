import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipe, type OperatorFunction } from 'rxjs';
import { fromFiles } from '../../../connectors/files';
import { fromIterable } from '../../../connectors/iterable';
import { fromKafka } from '../../../connectors/kafka';
import { fromPoll } from '../../../connectors/poll';
import { pipelineMetrics } from '../../../lib/metrics';
import { Pipeline, type PipelineStats } from '../../../lib/pipeline';
import type { Envelope } from '../../../lib/envelope';
import type { DeadLetter } from '../../../lib/sink';
import type { Source } from '../../../lib/source';
import { parse } from '../../../operators/parse';
import { recordOperator } from '../../../operators/recordOperator';
import { ValidationError } from '../../../lib/errors';
import { MemorySink, scratchDir, until } from '../../helpers';
import { createTopic, produce } from '../../kafka';
import { metricValue, parseMetrics } from '../../metricsText';
import { ensureKafka } from '../../services';

/** Refuses records whose `ok` is false: the dead letters of the transform stage. */
const refuseBad: Step = recordOperator('validate', (value: { ok?: boolean }) => {
  if (value?.ok === false) throw new ValidationError([{ path: '/ok', message: 'must be true' }]);
  return value;
}) as Step;

type Step = OperatorFunction<Envelope<any>, Envelope<unknown>>;

/** Runs `source` into memory and checks that every record read has one outcome, in stats and in tributary_records_total. */
async function account(source: Source<unknown>, transform: Step | undefined, expected: Partial<PipelineStats>, run?: (pipeline: Pipeline<unknown>) => Promise<PipelineStats>): Promise<void> {
  const pipeline = new Pipeline<unknown>({
    name: 'accounting',
    source,
    ...(transform && { transform }),
    sink: new MemorySink(),
    deadLetters: new MemorySink<DeadLetter>(),
    batch: { rows: 10, maxWaitMs: 5 },
    deadLetterBatch: { maxWaitMs: 1 },
  });
  const metrics = pipelineMetrics(pipeline);
  const stats = await (run ? run(pipeline) : pipeline.run());
  expect(stats).to.include(expected);
  expect(stats.read, 'read = written + dead-lettered + nacked').to.equal(stats.written + stats.deadLettered + stats.nacked);
  const samples = parseMetrics(await metrics.registry.metrics());
  const records = (labels: Record<string, string>) =>
    samples.filter((s) => s.name === 'tributary_records_total' && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
  expect(metricValue(samples, 'tributary_records_total', { stage: 'source', outcome: 'in' })).to.equal(stats.read);
  expect(records({ outcome: 'written' }) + records({ outcome: 'dead_lettered' }) + records({ outcome: 'nacked' }), 'in tributary_records_total').to.equal(stats.read);
  metrics.close();
}

describe('every record read has one outcome, counted in records for every source (stats and tributary_records_total)', function () {
  this.timeout(120_000);
  const dir = scratchDir();

  it('fromFiles', async () => {
    const path = dir.file('a.ndjson', '{"ok":true}\nnot json\n{"ok":false}\n{"ok":true}\n');
    await account(fromFiles({ paths: path }), refuseBad, { read: 4, written: 2, deadLettered: 2, nacked: 0 });
  });

  it('fromIterable, payloads split by parse', async () => {
    const payloads = ['{"ok":true}\n{"ok":false}\n{"ok":true}', '{"ok":true}', '\n'];
    await account(fromIterable(payloads), pipe(parse({ format: 'ndjson' }) as Step, refuseBad), { read: 4, written: 3, deadLettered: 1, nacked: 0 });
  });

  it('fromPoll: items, not pages', async () => {
    const pages: Record<string, unknown[]> = { '1': [{ id: 'a', ok: true }, { id: 'b', ok: false }, { id: 'c', ok: true }], '2': [{ id: 'd', ok: true }], '3': [] };
    const server: Server = createServer((request, response) => {
      const page = new URL(request.url!, 'http://x').searchParams.get('page') ?? '1';
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ data: pages[page] ?? [] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/items`;
      const source = fromPoll({ vendor: 'acme', url, pagination: { type: 'page', size: 3 }, once: true, cursorFile: `${dir.path}/cursor.json`, requestsPerSecond: 100 });
      await account(source, refuseBad, { read: 4, written: 3, deadLettered: 1, nacked: 0 });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('fromKafka: messages split by parse', async function () {
    this.timeout(600_000);
    const brokers = await ensureKafka();
    const { topic, remove } = await createTopic(brokers, 2, 'accounting');
    try {
      await produce(brokers, topic, [{ key: 'a', value: '{"ok":true}\n{"ok":false}' }, { key: 'b', value: '{"ok":true}' }, { key: 'c', value: 'not json' }]);
      const source = fromKafka({ brokers, groupId: `${topic}-group`, topics: topic, fromBeginning: true, logLevel: 'nothing', maxWaitMs: 50 });
      await account(source, pipe(parse({ format: 'ndjson' }) as Step, refuseBad), { read: 4, written: 2, deadLettered: 2, nacked: 0 }, async (pipeline) => {
        await pipeline.start();
        await until(() => pipeline.stats.written + pipeline.stats.deadLettered === 4, 60_000, 'every record settled');
        return pipeline.stop();
      });
    } finally {
      await remove();
    }
  });
});

