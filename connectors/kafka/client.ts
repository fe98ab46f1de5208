import type { Kafka, KafkaConfig, LogEntry } from 'kafkajs';
import { ConfigError } from '../../lib/errors';
import { loadPackage } from '../../lib/packages';
import { installRecordDecoder } from './recordDecoder';

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
   * kafkajs' own log output, one JSON line each on stderr. Two kinds of kafkajs errors are
   * shown a level lower, as warnings: a broker's error answer to a request (kafkajs logs
   * each, e.g. "The group is rebalancing" during an ordinary rebalance, although the
   * request's caller receives it and retries or fails with it), and anything logged while
   * the source or sink is being stopped (requests cut short by its own disconnect).
   * @default 'error'
   */
  logLevel?: 'nothing' | 'error' | 'warn' | 'info' | 'debug';
}

const LOG_LEVELS = { nothing: 0, error: 1, warn: 2, info: 4, debug: 5 } as const;

/**
 * Checks the connection options at construction; the client itself is made on first use.
 * `stopping` tells the client's log when its owner is shutting down.
 */
export function resolveConnection(options: KafkaConnectionOptions | undefined, stopping: () => boolean = () => false): () => Kafka {
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
    if (kafka) return kafka;
    // kafkajs loads on first use, so importing tributary does not pay for it; its record
    // decoder is replaced before it loads.
    installRecordDecoder();
    const { Kafka } = loadPackage<typeof import('kafkajs')>('kafkajs', 'Kafka (fromKafka, toKafka)');
    kafka = new Kafka({ ...options!.kafka, brokers: [...brokers], clientId, logLevel: LOG_LEVELS[logLevel], logCreator: (level) => logEntry(level, stopping) });
    return kafka;
  };
}

/** A kafkajs log entry as one JSON line (kafkajs' own format), at the level it deserves (see `logLevel`). */
function logEntry(configured: number, stopping: () => boolean): (entry: LogEntry) => void {
  return ({ namespace, level, log }) => {
    let shown = level;
    if (level === LOG_LEVELS.error && (stopping() || (namespace === 'Connection' && log.message.startsWith('Response ')))) shown = LOG_LEVELS.warn;
    if (shown > configured) return;
    const label = shown === LOG_LEVELS.error ? 'ERROR' : shown === LOG_LEVELS.warn ? 'WARN' : shown === LOG_LEVELS.info ? 'INFO' : 'DEBUG';
    const line = JSON.stringify({ level: label, ...log, message: `${namespace ? `[${namespace}] ` : ''}${log.message}` });
    if (shown <= LOG_LEVELS.warn) console.error(line);
    else console.log(line);
  };
}
