import type { CompressionTypes, Message, Producer } from 'kafkajs';
import { utf8Head, type Envelope } from '../../lib/envelope';
import { ConfigError, SinkError } from '../../lib/errors';
import type { Batch, DeadLetter, Sink } from '../../lib/sink';
import { resolveConnection, type KafkaConnectionOptions } from './client';
import { loadPackage } from '../../lib/packages';

export interface ToKafkaOptions<T> extends KafkaConnectionOptions {
  /** The topic to write to, or a function choosing it per record (fan-out by vendor, by status). */
  topic: string | ((envelope: Envelope<T>) => string);
  /**
   * The message key, which decides the partition (murmur2, as the Java client): records
   * with the same key stay in order on one partition. @default the record's `meta.key`, if any
   */
  key?: (envelope: Envelope<T>) => string | Buffer | undefined;
  /**
   * The message value. @default the record itself: bytes and strings as they are, anything
   * else as JSON; with `deadLetters`, the refused payload as received
   */
  value?: (envelope: Envelope<T>) => string | Buffer;
  /** Message headers. @default none; with `deadLetters`, the reason (see there) */
  headers?: (envelope: Envelope<T>) => Record<string, string | Buffer>;
  /**
   * Makes this the pipeline's dead-letter sink: each refused record is written as the
   * payload it arrived with (base64-decoded when it was not text), keyed by its position,
   * with the reason in headers `tributary-stage`, `-code`, `-message`, `-path`,
   * `-pipeline`, `-source`, `-position`, `-vendor`, `-raw-bytes`, `-raw-sha256`,
   * `-received-at`, `-failed-at`. A payload shorter than `-raw-bytes` is the head of it.
   * @default false
   */
  deadLetters?: boolean;
  /** Compression of each produced batch. @default 'none' */
  compression?: 'none' | 'gzip';
  /** Names the sink in dead letters and metrics. @default `kafka:<topic>` */
  name?: string;
}

/**
 * Writes each batch to Kafka with an idempotent producer and resolves only once the
 * broker has acknowledged every message (all in-sync replicas), so a record is acked
 * only when Kafka holds it. Retries inside the producer cannot duplicate or reorder
 * messages (idempotence); a batch the pipeline retries after a failure may be written
 * twice, so readers keep absorbing duplicates by natural key, as everywhere.
 *
 * ## Example
 * ```ts
 * import { toKafka } from 'tributary/kafka';
 * const clean = toKafka<Booking>({ brokers, topic: 'bookings.clean', key: (e) => e.value.booking_id });
 * const deadLetters = toKafka<DeadLetter>({ brokers, topic: 'bookings.dead', deadLetters: true });
 * ```
 */
export function toKafka<T>(options: ToKafkaOptions<T>): Sink<T> {
  let closing = false;
  const kafka = resolveConnection(options, () => closing);
  const { topic } = options;
  if (typeof topic === 'string' ? !/^[\w.-]{1,249}$/.test(topic) : typeof topic !== 'function') {
    throw new ConfigError(`topic must be a topic name of letters, digits, '.', '_' or '-', or a function, got ${JSON.stringify(topic)}`);
  }
  for (const name of ['key', 'value', 'headers'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') throw new ConfigError(`${name} must be a function, got ${typeof options[name]}`);
  }
  const compression = options.compression ?? 'none';
  if (compression !== 'none' && compression !== 'gzip') throw new ConfigError(`compression must be 'none' or 'gzip', got ${JSON.stringify(compression)}`);
  const deadLetters = options.deadLetters ?? false;
  const topicOf = typeof topic === 'string' ? () => topic : topic;
  const keyOf = options.key ?? (deadLetters ? (e: Envelope<T>) => (e.value as DeadLetter).position : (e: Envelope<T>) => e.meta.key);
  const valueOf = options.value ?? (deadLetters ? (e: Envelope<T>) => deadLetterPayload(e.value as DeadLetter) : messageValue);
  const headersOf = options.headers ?? (deadLetters ? (e: Envelope<T>) => deadLetterHeaders(e.value as DeadLetter) : undefined);
  let producer: Promise<Producer> | undefined;
  const connect = () => {
    producer ??= (async () => {
      closing = false;
      const { Partitioners } = loadPackage<typeof import('kafkajs')>('kafkajs', 'toKafka');
      const made = kafka().producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
      await made.connect();
      return made;
    })().catch((cause: unknown) => {
      producer = undefined;
      // A missing kafkajs is no reason to try again.
      if (cause instanceof ConfigError) throw cause;
      throw new SinkError(`cannot connect to Kafka: ${String(cause)}`, { cause, retriable: true });
    });
    return producer;
  };
  return {
    name: options.name ?? `kafka:${typeof topic === 'string' ? topic : 'by-record'}`,
    async open() {
      await connect();
    },
    async write(batch: Batch<T>) {
      const connected = await connect();
      const byTopic = new Map<string, Message[]>();
      for (const envelope of batch.envelopes) {
        if (envelope.settled) continue;
        const message: Message = { value: valueOf(envelope) };
        const key = keyOf(envelope);
        if (key !== undefined) message.key = key;
        if (headersOf) message.headers = headersOf(envelope);
        const name = topicOf(envelope);
        let messages = byTopic.get(name);
        if (!messages) byTopic.set(name, (messages = []));
        messages.push(message);
      }
      if (byTopic.size === 0) return;
      const send = (topicMessages: { topic: string; messages: Message[] }[]) =>
        // acks -1: resolved once every in-sync replica has the messages.
        connected.sendBatch({ acks: -1, compression: (compression === 'gzip' ? 1 : 0) as CompressionTypes, topicMessages });
      try {
        await send([...byTopic].map(([name, messages]) => ({ topic: name, messages })));
      } catch (cause) {
        const refusal = permanentRefusal(cause);
        if (!refusal) throw new SinkError(`Kafka did not acknowledge the batch: ${String(cause)}`, { cause, retriable: true });
        // A dead letter must land: one too large for the topic goes again as the head of its payload.
        if (refusal.messagesAtFault && deadLetters) return sendReduced(byTopic, send);
        throw new SinkError(`Kafka refused the batch for good (${refusal.type}): ${String(cause)}`, { cause, code: refusal.type, retriable: false, rowsAtFault: refusal.messagesAtFault });
      }
    },
    async close() {
      closing = true;
      const connected = producer;
      producer = undefined;
      if (connected) await (await connected.catch(() => undefined))?.disconnect();
    },
  };
}

/** Broker answers no retry can change. */
const PERMANENT: Record<string, { messagesAtFault: boolean }> = {
  MESSAGE_TOO_LARGE: { messagesAtFault: true },
  RECORD_LIST_TOO_LARGE: { messagesAtFault: true },
  INVALID_RECORD: { messagesAtFault: true },
  INVALID_TOPIC_EXCEPTION: { messagesAtFault: false },
  TOPIC_AUTHORIZATION_FAILED: { messagesAtFault: false },
  CLUSTER_AUTHORIZATION_FAILED: { messagesAtFault: false },
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: { messagesAtFault: false },
  INVALID_REQUIRED_ACKS: { messagesAtFault: false },
};

/**
 * The broker's permanent refusal inside a produce failure, if it is one. kafkajs wraps
 * protocol errors (in `cause`, or `errors` of an aggregate): its own `retriable: false`
 * is not enough, since it also marks transient errors whose retries it spent.
 */
export function permanentRefusal(error: unknown): { type: string; messagesAtFault: boolean } | undefined {
  const seen = new Set<unknown>();
  const queue = [error];
  while (queue.length > 0) {
    const item = queue.shift() as { type?: unknown; cause?: unknown; originalError?: unknown; errors?: unknown } | null;
    if (item === null || typeof item !== 'object' || seen.has(item)) continue;
    seen.add(item);
    if (typeof item.type === 'string' && PERMANENT[item.type]) return { type: item.type, ...PERMANENT[item.type]! };
    queue.push(item.cause, item.originalError, ...(Array.isArray(item.errors) ? item.errors : []));
  }
  return undefined;
}

/** How much of a dead letter's payload goes when the whole does not fit its topic. */
const REDUCED_BYTES = 1024;

/**
 * Sends dead letters one at a time; one refused for its size goes again as the head of its
 * payload (its headers keep the length and SHA-256 of the whole), so it lands, and the
 * pipeline's commits move on.
 */
async function sendReduced(byTopic: Map<string, Message[]>, send: (topicMessages: { topic: string; messages: Message[] }[]) => Promise<unknown>): Promise<void> {
  for (const [topic, messages] of byTopic) {
    for (const message of messages) {
      try {
        await send([{ topic, messages: [message] }]);
      } catch (cause) {
        const refusal = permanentRefusal(cause);
        if (!refusal) throw new SinkError(`Kafka did not acknowledge the batch: ${String(cause)}`, { cause, retriable: true });
        if (!refusal.messagesAtFault) throw new SinkError(`Kafka refused the batch for good (${refusal.type}): ${String(cause)}`, { cause, code: refusal.type, retriable: false });
        const value = typeof message.value === 'string' ? Buffer.from(message.value) : (message.value ?? Buffer.alloc(0));
        const reduced: Message = { ...message, value: utf8Head(value, REDUCED_BYTES), headers: { ...message.headers, 'tributary-message': String(message.headers?.['tributary-message'] ?? '').slice(0, REDUCED_BYTES) } };
        try {
          await send([{ topic, messages: [reduced] }]);
        } catch (again) {
          throw new SinkError(`Kafka refused even the reduced dead letter (${permanentRefusal(again)?.type ?? 'unknown'}): ${String(again)}`, { cause: again, retriable: permanentRefusal(again) === undefined });
        }
      }
    }
  }
}

/** A message's value as toKafka writes it by default: text and bytes as they are, anything else as JSON. */
export function messageValue(envelope: Envelope<unknown>): string | Buffer {
  const value = envelope.value;
  if (typeof value === 'string' || Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return JSON.stringify(value) ?? 'null';
}

function deadLetterPayload(letter: DeadLetter): string | Buffer {
  return letter.raw_encoding === 'base64' ? Buffer.from(letter.raw, 'base64') : letter.raw;
}

/** The reason a record was refused, as the headers of its dead-letter message. */
export function deadLetterHeaders(letter: DeadLetter): Record<string, string> {
  return {
    'tributary-stage': letter.stage,
    'tributary-code': letter.code,
    'tributary-message': letter.message,
    'tributary-path': letter.path,
    'tributary-pipeline': letter.pipeline,
    'tributary-source': letter.source,
    'tributary-position': letter.position,
    'tributary-vendor': letter.vendor,
    'tributary-raw-bytes': String(letter.raw_bytes),
    'tributary-raw-sha256': letter.raw_sha256,
    'tributary-received-at': letter.received_at,
    'tributary-failed-at': letter.failed_at,
  };
}
