/**
 * Every error tributary throws or records. Retry decisions read `retriable`;
 * dead letters read `code`.
 */

export interface TributaryErrorOptions {
  /** Machine-readable reason, e.g. `PARSE_JSON`, `SINK_WRITE`. */
  code?: string;
  /** Whether trying the same operation again may succeed. */
  retriable?: boolean;
  cause?: unknown;
}

/** Base of every tributary error. */
export class TributaryError extends Error {
  readonly code: string;
  readonly retriable: boolean;

  constructor(message: string, options: TributaryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TributaryError';
    this.code = options.code ?? 'TRIBUTARY';
    this.retriable = options.retriable ?? false;
  }
}

/** Invalid configuration, thrown at construction with the rule that was broken. */
export class ConfigError extends TributaryError {
  constructor(message: string) {
    super(message, { code: 'CONFIG' });
    this.name = 'ConfigError';
  }
}

/** Where a record came from, for errors and dead letters. */
export interface RecordPosition {
  file?: string;
  /** 1-based record number within its file or payload. */
  record?: number;
  /** 1-based line of the record's first byte. */
  line?: number;
  /** Byte offset of the record's first byte. */
  offset?: number;
}

/** Input that cannot be read as the declared format. */
export class ParseError extends TributaryError {
  readonly position: RecordPosition;

  constructor(message: string, code: string, position: RecordPosition = {}, cause?: unknown) {
    super(message, { code, cause });
    this.name = 'ParseError';
    this.position = position;
  }
}

/** One reason a record failed validation or mapping. */
export interface FieldIssue {
  /** JSON Pointer of the offending value (`/passengers/0/name`), `''` for the record itself. */
  path: string;
  message: string;
}

/** A record that does not satisfy a schema or a mapping rule. */
export class ValidationError extends TributaryError {
  readonly issues: readonly FieldIssue[];

  constructor(issues: readonly FieldIssue[], code = 'VALIDATION') {
    super(issues.map((i) => `${i.path || '/'} ${i.message}`).join('; '), { code });
    this.name = 'ValidationError';
    this.issues = issues;
  }
}

/** A source that cannot read (missing file, broken connection). */
export class ConnectorError extends TributaryError {
  constructor(message: string, options: TributaryErrorOptions = {}) {
    super(message, { code: 'CONNECTOR', ...options });
    this.name = 'ConnectorError';
  }
}

export interface SinkErrorOptions extends TributaryErrorOptions {
  /**
   * The data is at fault, not the sink: some rows of the batch can never be written
   * (a value of the wrong type). The pipeline then splits the batch to find them and
   * dead-letters them alone.
   */
  rowsAtFault?: boolean;
}

/** A sink write that did not become durable. */
export class SinkError extends TributaryError {
  readonly rowsAtFault: boolean;

  constructor(message: string, options: SinkErrorOptions = {}) {
    super(message, { code: 'SINK', ...options });
    this.name = 'SinkError';
    this.rowsAtFault = options.rowsAtFault ?? false;
  }
}

/** A ClickHouse error, carrying the server's numeric code when known. */
export class ClickHouseError extends SinkError {
  /** ClickHouse's numeric error code (27 = CANNOT_PARSE_INPUT_ASSERTION_FAILED, …). */
  readonly clickhouseCode: number | undefined;

  constructor(message: string, clickhouseCode: number | undefined, options: SinkErrorOptions = {}) {
    super(message, { code: clickhouseCode === undefined ? 'CLICKHOUSE' : `CLICKHOUSE_${clickhouseCode}`, ...options });
    this.name = 'ClickHouseError';
    this.clickhouseCode = clickhouseCode;
  }
}

/** True when `error` says trying again may help. Unknown errors are not retried. */
export function isRetriable(error: unknown): boolean {
  return error instanceof TributaryError ? error.retriable : false;
}

/** A caller without a valid key (`UNAUTHENTICATED`) or without the permission (`FORBIDDEN`). */
export class AccessDeniedError extends TributaryError {
  /** The permission that was asked for, e.g. `webhook:post:acme`. */
  readonly permission: string;
  /** The key's id when one was presented and recognised. */
  readonly keyId: string | undefined;

  constructor(message: string, code: 'UNAUTHENTICATED' | 'FORBIDDEN', permission: string, keyId?: string) {
    super(message, { code });
    this.name = 'AccessDeniedError';
    this.permission = permission;
    this.keyId = keyId;
  }
}

/**
 * A vendor API answered with an HTTP error. 429, 5xx and network failures are retriable
 * (honouring the server's Retry-After); other 4xx are permanent.
 */
export class VendorApiError extends ConnectorError {
  /** The HTTP status, 0 when no answer came (network failure, timeout). */
  readonly status: number;
  /** The wait the server asked for (Retry-After), in ms. */
  readonly retryAfterMs: number | undefined;
  readonly url: string;

  /** `code` and `retriable` for a refusal of our own (a page too large, a link elsewhere): by default they follow the status. */
  constructor(message: string, status: number, url: string, options: { retryAfterMs?: number; cause?: unknown; code?: string; retriable?: boolean } = {}) {
    super(message, {
      code: options.code ?? (status === 0 ? 'HTTP_NETWORK' : `HTTP_${status}`),
      retriable: options.retriable ?? (status === 0 || status === 429 || status >= 500),
      cause: options.cause,
    });
    this.name = 'VendorApiError';
    this.status = status;
    this.url = url;
    this.retryAfterMs = options.retryAfterMs;
  }
}
