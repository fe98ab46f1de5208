import { parseError } from '@clickhouse/client';
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serverClickHouse } from '../../../connectors/clickhouse';
import { clickhouseErrorOf } from '../../../connectors/clickhouse/client';
import { ClickHouseError } from '../../../lib/errors';
import { clickhouseServer } from '../../clickhouseServer';
import { rejection } from '../../helpers';

/** What the pipeline decides from an error: try again, split the batch, or give up. */
function verdict(error: unknown): { code: number | undefined; retriable: boolean; rowsAtFault: boolean } {
  expect(error).to.be.instanceOf(ClickHouseError);
  const e = error as ClickHouseError;
  return { code: e.clickhouseCode, retriable: e.retriable, rowsAtFault: e.rowsAtFault };
}

/** A loopback HTTP server that answers every request with `handler`: what stands in front of ClickHouse. */
async function loopback(handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The error an insert through the server driver at `url` ends with. */
async function insertError(url: string, requestTimeoutMs = 5000): Promise<unknown> {
  const client = serverClickHouse({ url, requestTimeoutMs });
  try {
    await client.insert('bookings', Buffer.from('{"id":1}\n'), {});
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await client.close();
  }
}

describe('ClickHouse error classification (clickhouseErrorOf)', function () {
  this.timeout(60_000);

  describe('as the messages read', () => {
    it('retries TOO_MANY_PARTS, TIMEOUT_EXCEEDED and SOCKET_TIMEOUT in the 18.x and the current message forms', () => {
      const messages = [
        'Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts., e.what() = DB::Exception',
        'Code: 252. DB::Exception: Too many parts (3001 with average size of 1.00 KiB) in table. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 24.8.1.1)',
        'Code: 159. DB::Exception: Timeout exceeded: elapsed 30.0 seconds, maximum: 30. (TIMEOUT_EXCEEDED) (version 24.8.1.1)',
        'Code: 209. DB::NetException: Timeout exceeded while reading from socket (127.0.0.1:9000, 300000 ms). (SOCKET_TIMEOUT) (version 24.8.1.1)',
      ];
      for (const message of messages) {
        const expected = { code: Number(/Code: (\d+)/.exec(message)![1]), retriable: true, rowsAtFault: false };
        // As text, and as @clickhouse/client hands it over (code as a string property).
        expect(verdict(clickhouseErrorOf(new Error(message))), message).to.deep.equal(expected);
        expect(verdict(clickhouseErrorOf(parseError(message))), message).to.deep.equal(expected);
      }
    });

    it('retries what a gateway answers when ClickHouse is unreachable, but not a codeless error of another kind', () => {
      for (const page of ['<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>', 'Service Unavailable', 'no healthy upstream', '504 Gateway Time-out']) {
        expect(verdict(clickhouseErrorOf(new Error(page))), page).to.deep.equal({ code: undefined, retriable: true, rowsAtFault: false });
      }
      expect(verdict(clickhouseErrorOf(new Error('Unexpected token < in JSON at position 0')))).to.deep.equal({ code: undefined, retriable: false, rowsAtFault: false });
    });

    it('does not retry a ClickHouse exception that merely mentions a 5xx number', () => {
      const message = 'Code: 62. DB::Exception: Syntax error: failed at position 503. (SYNTAX_ERROR) (version 24.8.1.1)';
      expect(verdict(clickhouseErrorOf(parseError(message)))).to.deep.equal({ code: 62, retriable: false, rowsAtFault: false });
    });
  });

  describe('from the network, through the real HTTP client', () => {
    it('retries a refused connection', async () => {
      const closed = await loopback(() => undefined);
      const url = closed.url;
      await closed.close();
      const error = await insertError(url);
      expect(verdict(error)).to.include({ retriable: true, rowsAtFault: false });
      expect((error as Error).message).to.match(/ECONNREFUSED/);
    });

    it('retries a connection cut mid-request (socket hang up)', async () => {
      const server = await loopback((request) => request.socket.destroy());
      try {
        expect(verdict(await insertError(server.url))).to.include({ retriable: true, rowsAtFault: false });
      } finally {
        await server.close();
      }
    });

    it('retries a request that timed out on the client ("Timeout error"): it may have landed', async () => {
      const server = await loopback((request) => request.resume()); // reads, never answers
      try {
        const error = await insertError(server.url, 300);
        expect((error as Error).message).to.match(/Timeout error/);
        expect(verdict(error)).to.include({ retriable: true, rowsAtFault: false });
      } finally {
        await server.close();
      }
    });

    for (const [status, body] of [
      [502, '<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>'],
      [503, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure'],
      [504, '<html><head><title>504 Gateway Time-out</title></head></html>'],
    ] as const) {
      it(`retries an HTTP ${status} from a proxy in front of the server`, async () => {
        const server = await loopback((request, response) => {
          request.resume();
          request.on('end', () => response.writeHead(status, { 'content-type': 'text/html' }).end(body));
        });
        try {
          expect(verdict(await insertError(server.url))).to.deep.equal({ code: undefined, retriable: true, rowsAtFault: false });
        } finally {
          await server.close();
        }
      });
    }
  });

  describe('from the real ClickHouse server', () => {
    let client: ReturnType<typeof serverClickHouse>;
    let table: string;

    before(async () => {
      clickhouseServer.ensure();
      client = serverClickHouse({ url: clickhouseServer.url, requestTimeoutMs: 10_000 });
    });

    beforeEach(async () => {
      table = `errors_${randomUUID().replace(/-/g, '')}`;
      // Two parts in a partition are too many: an insert meets TOO_MANY_PARTS at once.
      await client.exec(`CREATE TABLE ${table} (id UInt32, at DateTime) ENGINE = MergeTree ORDER BY id SETTINGS parts_to_delay_insert = 1, parts_to_throw_insert = 2`);
    });

    afterEach(async () => {
      await client.exec(`SYSTEM START MERGES ${table}`).catch(() => undefined);
      await client.exec(`DROP TABLE IF EXISTS ${table}`);
    });

    after(async () => {
      await client?.close();
    });

    const row = (value: object) => Buffer.from(JSON.stringify(value) + '\n');

    it('a value the column cannot hold is permanent and blames the rows (split and dead-letter them)', async () => {
      const error = await client.insert(table, row({ id: 'not a number', at: '2026-03-01 10:00:00' }), {}).catch((e: unknown) => e);
      expect(verdict(error)).to.deep.equal({ code: 27, retriable: false, rowsAtFault: true });
    });

    it('an unknown column is permanent and blames the rows', async () => {
      const error = await client.insert(table, row({ id: 1, at: '2026-03-01 10:00:00', coupon: 'SPRING' }), { input_format_skip_unknown_fields: 0 }).catch((e: unknown) => e);
      expect(verdict(error)).to.deep.equal({ code: 117, retriable: false, rowsAtFault: true });
      expect((error as Error).message).to.match(/coupon/);
    });

    it('TOO_MANY_PARTS is retriable and does not blame the rows', async () => {
      await client.exec(`SYSTEM STOP MERGES ${table}`);
      let error: unknown;
      for (let i = 0; i < 5 && error === undefined; i++) {
        error = await rejection(client.insert(table, row({ id: i, at: '2026-03-01 10:00:00' }), {}));
      }
      expect(verdict(error)).to.deep.equal({ code: 252, retriable: true, rowsAtFault: false });
    });

    it('a query over its max_execution_time (TIMEOUT_EXCEEDED) is retriable', async () => {
      const error = await client.query('SELECT count() FROM system.numbers SETTINGS max_execution_time = 1').catch((e: unknown) => e);
      expect(verdict(error)).to.deep.equal({ code: 159, retriable: true, rowsAtFault: false });
    });
  });
});
