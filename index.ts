/**
 * tributary: many-sourced records into ClickHouse, acknowledged only when durable.
 * The root holds the runtime, the operators, pushdown and the ClickHouse store; other
 * connectors and the security wing come from their subpaths (tributary/kafka, …).
 * Heavy clients (chdb) load on first use, not on import.
 */
export { Credits, type InFlightOptions } from './lib/credits';
export { Envelope, type DeadLetterRouter, type RecordFailure, type RecordMeta, type Settlement } from './lib/envelope';
export {
  AccessDeniedError,
  ClickHouseError,
  ConfigError,
  ConnectorError,
  ParseError,
  SinkError,
  TributaryError,
  ValidationError,
  VendorApiError,
  type FieldIssue,
  type RecordPosition,
} from './lib/errors';
export { Pipeline, type PipelineBatchOptions, type PipelineLifecycleEvent, type PipelineOptions, type PipelineState, type PipelineStats, type Readiness } from './lib/pipeline';
export type { EventError, PipelineEvent, PipelineEventListener, PipelineEventPayloads, PipelineEventType, SinkStage } from './lib/events';
export { consoleLogger, quietLogger, type ConsoleLoggerOptions, type LogFields, type Logger, type LogLevel } from './lib/logger';
export { pipelineMetrics, type PipelineMetrics, type PipelineMetricsOptions } from './lib/metrics';
export { METRICS_PERMISSION, serveMetrics, type MetricsServer, type ServeMetricsOptions } from './lib/serveMetrics';
export { retry, type RetryOptions } from './lib/retry';
export { fanOut, type FanOutSink, type FanOutSinkStats, type FanOutTarget } from './lib/fanOut';
export type { Batch, DeadLetter, EncodedRows, RowBytes, Sink, WriteContext } from './lib/sink';
export type { Source, SourceContext, SourceStatus } from './lib/source';

export { batch, type BatchOptions } from './lib/batch';
export { decrypt, type DecryptOptions } from './operators/decrypt';
export { dedupe, type DedupeOptions, type DedupeStats } from './operators/dedupe';
export { MemoryDedupeStore, redisDedupeStore, type DedupeStore, type MemoryDedupeStoreOptions, type RedisDedupeStoreOptions } from './operators/dedupeStores';
export { encrypt, type EncryptOptions } from './operators/encrypt';
export { mask, maskCardNumber, type MaskOptions } from './operators/mask';
export { normalize, type FieldCondition, type FieldRule, type FieldType, type NormalizeOptions, type VendorCheck, type VendorMapping } from './operators/normalize';
export { parse, type ParseOptions } from './operators/parse';
export { recordOperator } from './operators/recordOperator';
export { subjectTokenOf, subjectTokensOf, tokenize, tokenOf, type TokenField, type TokenizeOptions, type TokenNormalization } from './operators/tokenize';
export { validate, type ValidateOptions } from './operators/validate';
export { planPushdown, type PlanPushdownOptions, type PushdownColumn } from './pushdown/compile';
export type { PushdownInput, PushdownPlan } from './pushdown/plan';

export * from './connectors/clickhouse';
export * from './connectors/iterable';

export { bulkImport, bulkImportDecision, type BulkImportOptions, type BulkImportProgress, type BulkImportResult, type PushdownDecision } from './pushdown/import';
