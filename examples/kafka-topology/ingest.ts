/**
 * Stage 1 of 3, ingestion: vendor files → `<prefix>.raw`, one message per record, JSON,
 * with the vendor in a header. Nothing is interpreted here, so this stage stays cheap and
 * can run wherever the files arrive.
 *
 * Files are read as the booking example reads them (`bookingSource`): a file's vendor is its
 * directory's name, and each vendor's CSV layout, XML record and encoding apply.
 *
 *   node dist/examples/kafka-topology/ingest.js --brokers 127.0.0.1:19092 [files or dirs…]   (--help: every option)
 */
import { join } from 'node:path';
import { Pipeline, type DeadLetter, type Envelope } from '../../index';
import { deadLetterHeaders, messageValue, toKafka } from '../../connectors/kafka';
import { samplesDir } from '../bookings/paths';
import { bookingSource, SAMPLE_VENDORS } from '../bookings/pipeline';
import { contentOrigin, ensureTopics, ORIGIN_POSITION, ORIGIN_TIME, parseStage, runUntilStopped, stageCommand, topics } from './topology';

const command = stageCommand('ingest', 'Stage 1 of 3: reads vendor files into <prefix>.raw, one message per record with a "vendor" header; unreadable records go to <prefix>.dead. Exits once the files are read.', { consumer: false })
  .argument('[paths...]', "files or directories; a file's vendor is its directory's name (default: the sample vendors)");

async function main(): Promise<void> {
  const settings = parseStage(command);
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const paths = command.processedArgs[0] as string[];
  const sent = new WeakMap<Envelope<unknown>, string | Buffer>();
  const pipeline = new Pipeline({
    name: 'ingest',
    source: bookingSource({ paths: paths.length > 0 ? paths : SAMPLE_VENDORS.map((vendor) => join(samplesDir, vendor)) }),
    sink: toKafka<unknown>({
      brokers: settings.brokers,
      topic: names.raw,
      key: (e) => e.meta.position,
      // The identity hashes what is sent: the value is made once (headers are asked after it).
      value: (e) => {
        const value = messageValue(e);
        sent.set(e, value);
        return value;
      },
      headers: (e) => ({ vendor: e.meta.vendor ?? '', [ORIGIN_POSITION]: contentOrigin(e.meta.position, sent.get(e) ?? ''), [ORIGIN_TIME]: new Date(e.meta.receivedAt).toISOString() }),
    }),
    deadLetters: toKafka<DeadLetter>({
      brokers: settings.brokers,
      topic: names.dead,
      deadLetters: true,
      headers: (e) => ({ ...deadLetterHeaders(e.value), [ORIGIN_POSITION]: `${e.value.position}#${e.value.raw_sha256.slice(0, 16)}`, [ORIGIN_TIME]: e.value.received_at }),
    }),
    batch: { rows: 1000, maxWaitMs: 200 },
  });
  await runUntilStopped(settings, [{ name: 'ingest', pipeline }], { finite: true });
}

// Exit once stopped: a group join still pending in kafkajs must not hold the process past its drain.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
