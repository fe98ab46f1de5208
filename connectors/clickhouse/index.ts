export { type ClickHouseClient } from './client';
export { embeddedClickHouse, type EmbeddedClickHouseOptions } from './embedded';
export { loadMigrations, migrate, type Migration } from './migrate';
export { toClickHouse, type ToClickHouseOptions } from './sink';
export { serverClickHouse, type ServerClickHouseOptions } from './server';
export { serveQueries, type QueryServerOptions } from './queryServer';
