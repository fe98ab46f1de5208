import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError } from './errors';
import { loadPackage } from './packages';

/** How a Redis-backed part of tributary reaches its Redis. */
export interface RedisConnectionOptions {
  /** `redis://host:port/db` or `rediss://` (TLS); or pass `client`. */
  url?: string;
  /** Options for the client made from `url`, passed to ioredis as they are: `username` and `password` of an ACL user, `tls`, timeouts. */
  redis?: RedisOptions;
  /** A client of your own (ioredis); `close()` leaves it open. */
  client?: Redis;
}

/** A Redis client and how to let go of it: quit a client made here, leave one given open. */
export interface RedisConnection {
  readonly client: Redis;
  /** Whether the client was made here from `url` (and is closed by `close`). */
  readonly owned: boolean;
  close(): Promise<void>;
}

/** The last connection error of each client made here: the reconnecting client reports it only as an event. */
const lastConnectionErrors = new WeakMap<Redis, Error>();

/**
 * Makes or takes the ioredis client of `what` (named in errors), loading ioredis only now:
 * tributary without Redis never loads it. A client made here gives up a command after two
 * reconnection attempts and a connection after 5 s; its connection errors surface through
 * the commands that fail, named by {@link redisFailure}.
 */
export function connectRedis(options: RedisConnectionOptions, what: string): RedisConnection {
  if (!options || (options.url === undefined) === (options.client === undefined)) throw new ConfigError(`${what} needs exactly one of url or client`);
  if (options.url !== undefined && (typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url))) {
    throw new ConfigError(`url must start with redis:// or rediss://, got ${JSON.stringify(options.url)}`);
  }
  let client = options.client;
  const owned = client === undefined;
  if (!client) {
    const { Redis: RedisClient } = loadPackage<typeof import('ioredis')>('ioredis', what);
    const made = new RedisClient(options.url!, { maxRetriesPerRequest: 2, connectTimeout: 5000, ...options.redis });
    made.on('error', (error: Error) => lastConnectionErrors.set(made, error));
    client = made;
  }
  const connected = client;
  return {
    client: connected,
    owned,
    async close() {
      if (owned && connected.status !== 'end') await connected.quit().catch(() => connected.disconnect());
    },
  };
}

/** `message`, with the client's last connection error when it says more (a refused login, a refused connection). */
export function redisFailure(client: Redis, message: string): string {
  const last = lastConnectionErrors.get(client);
  return last && !message.includes(last.message) ? `${message} (last connection error: ${last.message})` : message;
}

/** A prefix of keys, checked. */
export function redisPrefix(prefix: unknown, fallback: string): string {
  const resolved = prefix ?? fallback;
  if (typeof resolved !== 'string') throw new ConfigError(`prefix must be a string, got ${JSON.stringify(prefix)}`);
  return resolved;
}
