import { expect } from 'chai';
import { Redis } from 'ioredis';
import { ConfigError } from '../../../lib/errors';
import { connectRedis, redisFailure, redisPrefix } from '../../../lib/redis';
import { delay, until } from '../../helpers';

/** Nothing listens on port 1: connections to it are refused at once, no Redis needed. */
const REFUSED = 'redis://127.0.0.1:1';

describe('connectRedis', () => {
  it('needs exactly one of url or client, and a redis:// or rediss:// url', () => {
    const client = new Redis({ lazyConnect: true });
    expect(() => connectRedis({}, 'store')).to.throw(ConfigError, 'store needs exactly one of url or client');
    expect(() => connectRedis({ url: REFUSED, client }, 'store')).to.throw(ConfigError, 'store needs exactly one of url or client');
    expect(() => connectRedis(undefined as never, 'store')).to.throw(ConfigError, 'store needs exactly one of url or client');
    for (const url of ['http://127.0.0.1:6379', 'xredis://127.0.0.1:6379', '127.0.0.1:6379', new String(REFUSED), 6379]) {
      expect(() => connectRedis({ url: url as string }, 'store'), String(url)).to.throw(ConfigError, `url must start with redis:// or rediss://, got ${JSON.stringify(url)}`);
    }
  });

  it('makes a client from a url with bounded retries, the options given over them, and quits it on close', async () => {
    const made = connectRedis({ url: REFUSED, redis: { lazyConnect: true, connectTimeout: 1234 } }, 'store');
    expect(made.owned).to.equal(true);
    expect(made.client.options).to.include({ maxRetriesPerRequest: 2, connectTimeout: 1234, port: 1 });
    expect(connectRedis({ url: REFUSED, redis: { lazyConnect: true } }, 'store').client.options.connectTimeout).to.equal(5000);
    await made.close();
    expect(made.client.status).to.equal('end');
    await made.close();
  });

  it('leaves a client of its own open on close', async () => {
    const client = new Redis({ lazyConnect: true });
    const given = connectRedis({ client }, 'store');
    expect(given.client).to.equal(client);
    expect(given.owned).to.equal(false);
    await given.close();
    expect(client.status).to.equal('wait');
    client.disconnect();
  });

  it('names the last connection error, and close stops a client that cannot connect from trying again', async () => {
    // Without the offline queue, QUIT fails while the client is reconnecting: close must still stop it.
    const made = connectRedis({ url: REFUSED, redis: { enableOfflineQueue: false, retryStrategy: () => 10 } }, 'store');
    let attempts = 0;
    made.client.on('reconnecting', () => attempts++);
    try {
      await until(() => redisFailure(made.client, 'claim failed') !== 'claim failed', 5000, 'a connection error');
      expect(redisFailure(made.client, 'claim failed')).to.match(/^claim failed \(last connection error: connect ECONNREFUSED 127\.0\.0\.1:1\)$/);
      expect(redisFailure(made.client, 'claim failed: connect ECONNREFUSED 127.0.0.1:1')).to.equal('claim failed: connect ECONNREFUSED 127.0.0.1:1');
      expect(redisFailure(new Redis({ lazyConnect: true }), 'claim failed')).to.equal('claim failed');
      await until(() => attempts >= 2, 5000, 'reconnection attempts');
    } finally {
      await made.close();
    }
    const closedAt = attempts;
    // Ten times the reconnection delay: a client left trying would have tried again by now.
    await delay(100);
    expect(attempts).to.equal(closedAt);
  });
});

describe('redisPrefix', () => {
  it('takes the prefix given, else the fallback, and refuses anything but a string', () => {
    expect(redisPrefix('app:', 'tributary:')).to.equal('app:');
    expect(redisPrefix('', 'tributary:')).to.equal('');
    expect(redisPrefix(undefined, 'tributary:')).to.equal('tributary:');
    expect(() => redisPrefix(7, 'tributary:')).to.throw(ConfigError, 'prefix must be a string, got 7');
  });
});
