/**
 * Stage 1 of 3, ingestion: vendor files → `<prefix>.raw`, one message per record, JSON,
 * with the vendor in a header. Nothing is interpreted here, so this stage stays cheap and
 * can run wherever the files arrive.
 *
 * Files are read as the booking example reads them (`bookingSource`): a file's vendor is its
 * directory's name, and each vendor's CSV layout, XML record and encoding apply.
 *
 *   node dist/examples/kafka-topology/ingest.js --brokers 127.0.0.1:19092 [files or dirs…]
 */
import { join } from 'node:path';
import { Pipeline, type DeadLetter } from '../../index';
import { toKafka } from '../../connectors/kafka';
import { samplesDir } from '../bookings/paths';
import { bookingSource, SAMPLE_VENDORS } from '../bookings/pipeline';
import { ensureTopics, settingsFromArgs, topics, VALUE_FLAGS } from './topology';

async function main(): Promise<void> {
  const settings = settingsFromArgs();
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const args = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !VALUE_FLAGS.includes(all[i - 1] ?? ''));
  const paths = args.length > 0 ? args : SAMPLE_VENDORS.map((vendor) => join(samplesDir, vendor));
  const pipeline = new Pipeline({
    name: 'ingest',
    source: bookingSource({ paths }),
    sink: toKafka<unknown>({
      brokers: settings.brokers,
      topic: names.raw,
      key: (e) => e.meta.position,
      headers: (e) => ({ vendor: e.meta.vendor ?? '' }),
    }),
    deadLetters: toKafka<DeadLetter>({ brokers: settings.brokers, topic: names.dead, deadLetters: true }),
    batch: { rows: 1000, maxWaitMs: 200 },
  });
  const stop = () => void pipeline.stop({ timeoutMs: settings.drainMs }).catch(() => undefined);
  process.once('SIGINT', stop).once('SIGTERM', stop);
  console.log(`ingest: ${JSON.stringify(await pipeline.run())}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
