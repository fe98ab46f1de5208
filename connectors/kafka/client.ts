import type { Kafka, KafkaConfig } from 'kafkajs';
import { ConfigError } from '../../lib/errors';

/** How to reach the brokers; shared by `fromKafka` and `toKafka`. */
export interface KafkaConnectionOptions {
  /** Bootstrap brokers, `host:port`. */
  brokers: readonly string[];
  /** Names this client in the broker's logs and quotas. @default 'tributary' */
  clientId?: string;
  /**
   * Further kafkajs client settings (TLS, SASL, timeouts, retry), passed through as they are.
   * @default none
   */
  kafka?: Omit<KafkaConfig, 'brokers' | 'clientId' | 'logLevel'>;
  /**
   * kafkajs' own log output. Connection errors it retries are logged at `error`, so tests
   * and services that report through metrics may prefer `'nothing'`.
   * @default 'error'
   */
  logLevel?: 'nothing' | 'error' | 'warn' | 'info' | 'debug';
}

const LOG_LEVELS = { nothing: 0, error: 1, warn: 2, info: 4, debug: 5 } as const;

/** Checks the connection options at construction; the client itself is made on first use. */
export function resolveConnection(options: KafkaConnectionOptions | undefined): () => Kafka {
  const brokers = options?.brokers;
  if (!Array.isArray(brokers) || brokers.length === 0 || !brokers.every((b) => typeof b === 'string' && /^[^\s:]+:\d+$/.test(b))) {
    throw new ConfigError(`brokers must be a non-empty array of 'host:port', got ${JSON.stringify(brokers)}`);
  }
  const logLevel = options!.logLevel ?? 'error';
  if (!(logLevel in LOG_LEVELS)) {
    throw new ConfigError(`logLevel must be one of ${Object.keys(LOG_LEVELS).map((l) => `'${l}'`).join(', ')}, got ${JSON.stringify(logLevel)}`);
  }
  const clientId = options!.clientId ?? 'tributary';
  if (typeof clientId !== 'string' || clientId === '') throw new ConfigError(`clientId must be a non-empty string, got ${JSON.stringify(clientId)}`);
  let kafka: Kafka | undefined;
  return () => {
    // kafkajs loads on first use, so importing tributary does not pay for it.
    const { Kafka } = require('kafkajs') as typeof import('kafkajs');
    kafka ??= new Kafka({ ...options!.kafka, brokers: [...brokers], clientId, logLevel: LOG_LEVELS[logLevel] });
    return kafka;
  };
}

export function positiveIntegerOption(value: number | undefined, fallback: number, name: string): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1) throw new ConfigError(`${name} must be an integer >= 1, got ${value}`);
  return resolved;
}
