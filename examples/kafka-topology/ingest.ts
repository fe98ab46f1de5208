/**
 * Stage 1 of 3, ingestion: vendor files → `<prefix>.raw`, one message per record, JSON,
 * with the vendor in a header. Nothing is interpreted here, so this stage stays cheap and
 * can run wherever the files arrive.
 *
 *   node dist/examples/kafka-topology/ingest.js --brokers 127.0.0.1:9092 [files or dirs…]
 */
import { basename, dirname, join } from 'node:path';
import { fromFiles, Pipeline, type DeadLetter } from '../../index';
import { toKafka } from '../../connectors/kafka';
import { VENDORS } from '../bookings/generate';
import { samplesDir } from '../bookings/paths';
import { ensureTopics, settingsFromArgs, topics, VALUE_FLAGS } from './topology';

async function main(): Promise<void> {
  const settings = settingsFromArgs();
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const args = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !VALUE_FLAGS.includes(all[i - 1] ?? ''));
  const paths = args.length > 0 ? args : VENDORS.map((vendor) => join(samplesDir, vendor));
  const pipeline = new Pipeline({
    name: 'ingest',
    source: fromFiles({ paths, vendor: (file) => basename(dirname(file)) }),
    sink: toKafka<unknown>({
      brokers: settings.brokers,
      topic: names.raw,
      key: (e) => e.meta.position,
      headers: (e) => ({ vendor: e.meta.vendor ?? '' }),
    }),
    deadLetters: toKafka<DeadLetter>({ brokers: settings.brokers, topic: names.dead, deadLetters: true }),
    batch: { rows: 1000, maxWaitMs: 200 },
  });
  const stop = () => void pipeline.stop({ timeoutMs: settings.drainMs });
  process.once('SIGINT', stop).once('SIGTERM', stop);
  console.log(`ingest: ${JSON.stringify(await pipeline.run())}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
