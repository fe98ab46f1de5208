import { ConfigError } from './errors';
import type { Instrumentation, PipelineEvent, PipelineEventType } from './events';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Structured fields of a log line: names, counts, codes; never record payloads. */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

/**
 * Where a pipeline reports what it does. Any object with these four methods works:
 * pino and winston loggers do (`logger.child({ pipeline })` included).
 */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** Says nothing: the default, so an embedded library stays silent unless asked. */
export const quietLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

export interface ConsoleLoggerOptions {
  /** The lowest level written. @default 'info' */
  level?: LogLevel;
  /** Where lines go. @default console */
  console?: Pick<Console, 'debug' | 'info' | 'warn' | 'error'>;
}

/**
 * A logger writing one line per message to the console: ISO time, level, message, then
 * the fields as `key=value`.
 *
 * ## Example
 * ```ts
 * import { Pipeline, consoleLogger } from 'tributary';
 * new Pipeline({ ...options, logger: consoleLogger({ level: 'warn' }) });
 * ```
 */
export function consoleLogger(options: ConsoleLoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  if (!LEVELS.includes(level)) throw new ConfigError(`level must be one of ${LEVELS.join(', ')}, got ${JSON.stringify(options.level)}`);
  const out = options.console ?? console;
  const lowest = LEVELS.indexOf(level);
  const line = (at: LogLevel) => {
    if (LEVELS.indexOf(at) < lowest) return () => {};
    return (message: string, fields?: LogFields) => {
      let text = `${new Date().toISOString()} ${at.toUpperCase()} ${message}`;
      if (fields) for (const [key, value] of Object.entries(fields)) if (value !== undefined) text += ` ${key}=${JSON.stringify(value)}`;
      out[at](text);
    };
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

/**
 * Logs a pipeline's instrumentation events: lifecycle at info, failed writes and the
 * breaker opening at warn, a crash at error, every write at debug. Events carry no record
 * content, so neither do the lines. Does nothing for the quiet logger.
 */
export function logEvents(events: Instrumentation, logger: Logger): void {
  if (logger === quietLogger) return;
  const on = <K extends PipelineEventType>(type: K, write: (event: PipelineEvent<K>) => void) => events.on(type, write);
  on('pipeline.start', ({ payload: p }) => logger.info('pipeline started', { pipeline: p.pipeline, source: p.source, sink: p.sink, deadLetters: p.deadLetters }));
  on('pipeline.stop', ({ payload: p }) => logger.info('pipeline stopping: draining what is in flight', { pipeline: p.pipeline }));
  on('pipeline.end', ({ payload: p }) =>
    (p.error ? logger.error : logger.info)(p.error ? 'pipeline ended on a failure' : 'pipeline ended', {
      pipeline: p.pipeline,
      read: p.stats.read,
      written: p.stats.written,
      deadLettered: p.stats.deadLettered,
      nacked: p.stats.nacked,
      code: p.error?.code,
    }),
  );
  on('pipeline.crash', ({ payload: p }) => logger.error('pipeline failed', { pipeline: p.pipeline, code: p.error.code, error: p.error.message }));
  on('sink.write', ({ payload: p }) => {
    const fields = { pipeline: p.pipeline, stage: p.stage, sink: p.sink, rows: p.rows, bytes: p.bytes, attempt: p.attempt, ms: Math.round(p.durationMs) };
    if (!p.error) logger.debug('batch written', fields);
    // Breaker-open refusals repeat while a sink is down; the breaker.open line already said so.
    else if (p.error.code === 'BREAKER_OPEN') logger.debug('write held back: breaker open', fields);
    else logger.warn('batch write failed', { ...fields, code: p.error.code, retriable: p.error.retriable, error: p.error.message });
  });
  on('sink.split', ({ payload: p }) => logger.warn('sink refused rows of a batch: splitting it to isolate them', { pipeline: p.pipeline, stage: p.stage, sink: p.sink, rows: p.rows }));
  on('breaker.open', ({ payload: p }) => logger.warn('circuit breaker open: writes held back, sources pause', { pipeline: p.pipeline, stage: p.stage, sink: p.sink }));
  on('breaker.half_open', ({ payload: p }) => logger.info('circuit breaker half-open: probing the sink', { pipeline: p.pipeline, stage: p.stage, sink: p.sink }));
  on('breaker.close', ({ payload: p }) => logger.info('circuit breaker closed: the sink is back', { pipeline: p.pipeline, stage: p.stage, sink: p.sink }));
}
