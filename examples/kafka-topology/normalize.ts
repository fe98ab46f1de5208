/**
 * Stage 2 of 3, normalization and validation: `<prefix>.raw` → each vendor's mapping →
 * the booking schema → `<prefix>.clean` keyed by booking id; refused records go to
 * `<prefix>.dead` with the reason in headers. Run as many as there are partitions: they
 * share the work as one consumer group.
 *
 *   node dist/examples/kafka-topology/normalize.js --brokers 127.0.0.1:19092 [--until-idle]   (--help: every option)
 */
import { pipe } from 'rxjs';
import { normalize, parse, Pipeline, validate, type DeadLetter } from '../../index';
import { deadLetterHeaders, fromKafka, toKafka } from '../../connectors/kafka';
import { mappings } from '../bookings/mappings';
import { bookingSchema, type Booking } from '../bookings/schema';
import { ensureTopics, groups, originHeaders, parseStage, runUntilStopped, stageCommand, topics } from './topology';

const command = stageCommand('normalize', 'Stage 2 of 3: reads <prefix>.raw as group <prefix>.normalize, maps each vendor\'s records to the unified booking and validates it; writes bookings to <prefix>.clean and refused records to <prefix>.dead.', { consumer: true });

async function main(): Promise<void> {
  const settings = parseStage(command);
  const names = topics(settings.prefix);
  await ensureTopics(settings);
  const groupId = groups(settings.prefix).normalize;
  const pipeline = new Pipeline<Booking>({
    name: 'normalize',
    source: fromKafka({ brokers: settings.brokers, groupId, topics: names.raw, fromBeginning: true, ...settings.consumer, vendor: (meta) => meta.headers?.vendor, batchAlignment: 2000 }),
    transform: pipe(parse(), normalize({ mappings }), validate<Booking>({ schema: bookingSchema, formats: 'fast' })),
    sink: toKafka<Booking>({ brokers: settings.brokers, topic: names.clean, key: (e) => `${e.value.vendor}:${e.value.booking_id}`, headers: originHeaders }),
    deadLetters: toKafka<DeadLetter>({ brokers: settings.brokers, topic: names.dead, deadLetters: true, headers: (e) => ({ ...deadLetterHeaders(e.value), ...originHeaders(e) }) }),
    batch: { rows: 2000, maxWaitMs: 200 },
  });
  await runUntilStopped(settings, [{ name: 'normalize', pipeline, groupId, topic: names.raw }]);
}

// Exit once stopped: a group join still pending in kafkajs must not hold the process past its drain.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
