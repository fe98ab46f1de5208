import { ClickHouseError } from '../../lib/errors';

export { quoteIdentifier, type ClickHouseClient, type StreamQueryOptions } from '../../lib/store';

/** ClickHouse error codes worth another attempt: overload, timeouts, the network. */
export const RETRIABLE_CLICKHOUSE_CODES = new Set([
  3, // UNEXPECTED_END_OF_FILE (a cut connection)
  159, // TIMEOUT_EXCEEDED
  164, // READONLY (a replica in read-only mode)
  202, // TOO_MANY_SIMULTANEOUS_QUERIES
  209, // SOCKET_TIMEOUT
  210, // NETWORK_ERROR
  241, // MEMORY_LIMIT_EXCEEDED
  242, // TABLE_IS_READ_ONLY
  252, // TOO_MANY_PARTS
  319, // UNKNOWN_STATUS_OF_INSERT
  425, // SYSTEM_ERROR
]);

/** ClickHouse error codes that blame the rows of an insert, not the server or the table. */
export const ROW_ERROR_CODES = new Set([
  6, // CANNOT_PARSE_TEXT
  26, // CANNOT_PARSE_QUOTED_STRING
  27, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  32, // ATTEMPT_TO_READ_AFTER_EOF
  38, // CANNOT_PARSE_DATE
  41, // CANNOT_PARSE_DATETIME
  53, // TYPE_MISMATCH
  69, // ARGUMENT_OUT_OF_BOUND
  70, // CANNOT_CONVERT_TYPE
  72, // CANNOT_PARSE_NUMBER
  117, // INCORRECT_DATA (an unknown field in JSONEachRow)
  131, // TOO_LARGE_STRING_SIZE
  349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
  407, // DECIMAL_OVERFLOW
  441, // CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
  457, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
  691, // UNKNOWN_ELEMENT_OF_ENUM
]);

/** Node's codes for a connection that failed or broke: the server may be back soon. */
const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_SOCKET']);

/**
 * What a proxy or load balancer in front of ClickHouse answers when it cannot reach it
 * (502, 503, 504 pages). `@clickhouse/client` drops the HTTP status of a failed response
 * and keeps only its body, so a 5xx that is not a ClickHouse exception is known by its text.
 */
const GATEWAY_FAILURE = /\b50[0-9]\b|Bad Gateway|Service (?:Temporarily )?Unavailable|Gateway Time-?out|no healthy upstream|upstream connect error/i;

/** Turns whatever a ClickHouse driver threw into a {@link ClickHouseError} that says whether to retry. */
export function clickhouseErrorOf(cause: unknown, prefix?: string): ClickHouseError {
  const message = cause instanceof Error ? cause.message : String(cause);
  const given = (cause as { clickhouseCode?: unknown; code?: unknown } | undefined) ?? {};
  const numeric = typeof given.clickhouseCode === 'number' ? given.clickhouseCode : /^\d+$/.test(String(given.code)) ? Number(given.code) : clickhouseCodeOf(message);
  const network = NETWORK_ERRORS.has(String(given.code)) || /socket hang up|Timeout error|ECONNREFUSED|ECONNRESET/i.test(message);
  // Only a codeless answer can be a gateway's page: a ClickHouse exception is judged by its code.
  const gateway = numeric === undefined && GATEWAY_FAILURE.test(message);
  return new ClickHouseError(prefix ? `${prefix}: ${message}` : message, numeric, {
    retriable: network || gateway || (numeric !== undefined && RETRIABLE_CLICKHOUSE_CODES.has(numeric)),
    rowsAtFault: numeric !== undefined && ROW_ERROR_CODES.has(numeric),
    cause,
  });
}

/** The numeric code in a ClickHouse message (`Code: 62. DB::Exception: …`). */
export function clickhouseCodeOf(message: string): number | undefined {
  const match = /Code: (\d+)/.exec(message);
  return match ? Number(match[1]) : undefined;
}
