export { toRedisCache, type RedisCacheLayoutOptions, type RedisCacheSink, type RedisCacheStats, type RedisConnectionOptions, type ToRedisCacheOptions } from './cache';
export { recentBookings, type RecentBookings, type RecentBookingsOptions, type TimeRange } from './recentBookings';
