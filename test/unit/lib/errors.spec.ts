import { expect } from 'chai';
import {
  AccessDeniedError,
  ClickHouseError,
  ConfigError,
  ConnectorError,
  isRetriable,
  ParseError,
  SinkError,
  TributaryError,
  ValidationError,
  VendorApiError,
} from '../../../lib/errors';

/** What a caller reads off an error: its class name, code and whether to retry. */
const facts = (error: TributaryError) => ({ name: error.name, code: error.code, retriable: error.retriable });

describe('errors', () => {
  it('name their class and carry a code and a retry verdict, with defaults', () => {
    expect(facts(new TributaryError('x'))).to.deep.equal({ name: 'TributaryError', code: 'TRIBUTARY', retriable: false });
    expect(facts(new ConfigError('x'))).to.deep.equal({ name: 'ConfigError', code: 'CONFIG', retriable: false });
    expect(facts(new ParseError('x', 'PARSE_JSON'))).to.deep.equal({ name: 'ParseError', code: 'PARSE_JSON', retriable: false });
    expect(facts(new ValidationError([{ path: '/a', message: 'is required' }]))).to.deep.equal({ name: 'ValidationError', code: 'VALIDATION', retriable: false });
    expect(facts(new ConnectorError('x'))).to.deep.equal({ name: 'ConnectorError', code: 'CONNECTOR', retriable: false });
    expect(facts(new ConnectorError('x', { code: 'FILE_MISSING', retriable: true }))).to.deep.equal({ name: 'ConnectorError', code: 'FILE_MISSING', retriable: true });
    expect(facts(new SinkError('x'))).to.deep.equal({ name: 'SinkError', code: 'SINK', retriable: false });
    expect(facts(new AccessDeniedError('x', 'FORBIDDEN', 'admin', 'k1'))).to.deep.equal({ name: 'AccessDeniedError', code: 'FORBIDDEN', retriable: false });
    expect(String(new ConfigError('batch.rows must be >= 1'))).to.equal('ConfigError: batch.rows must be >= 1');
  });

  it('keep a cause only when given one', () => {
    const cause = new Error('socket hang up');
    expect(new TributaryError('x', { cause }).cause).to.equal(cause);
    expect(new TributaryError('x')).not.to.have.property('cause');
    expect(new SinkError('x')).not.to.have.property('cause');
  });

  it('ClickHouseError codes itself by the server code when there is one', () => {
    expect(facts(new ClickHouseError('x', 27))).to.deep.equal({ name: 'ClickHouseError', code: 'CLICKHOUSE_27', retriable: false });
    expect(facts(new ClickHouseError('x', undefined, { retriable: true }))).to.deep.equal({ name: 'ClickHouseError', code: 'CLICKHOUSE', retriable: true });
    expect(new ClickHouseError('x', 27).clickhouseCode).to.equal(27);
    expect(new ClickHouseError('x', 27, { rowsAtFault: true }).rowsAtFault).to.equal(true);
  });

  it('VendorApiError retries a network failure, 429 and 5xx, never another 4xx', () => {
    const verdict = (status: number) => {
      const error = new VendorApiError('x', status, 'https://vendor.example/a');
      return [error.name, error.code, error.retriable, isRetriable(error)];
    };
    expect(verdict(0)).to.deep.equal(['VendorApiError', 'HTTP_NETWORK', true, true]);
    expect(verdict(429)).to.deep.equal(['VendorApiError', 'HTTP_429', true, true]);
    expect(verdict(500)).to.deep.equal(['VendorApiError', 'HTTP_500', true, true]);
    expect(verdict(404)).to.deep.equal(['VendorApiError', 'HTTP_404', false, false]);
    expect(isRetriable(new Error('plain'))).to.equal(false);
  });
});
