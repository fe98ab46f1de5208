export { fromWebhook, WEBHOOK_DENIALS, type FromWebhookOptions, type WebhookSource, type WebhookStats, type WebhookVendorOptions } from './source';
export { MemoryReplayStore, redisReplayStore, replayCapacity, type MemoryReplayStoreOptions, type RedisReplayStoreOptions, type ClaimResult, type ReplayStore } from './replay';
export { signWebhook, SIGNATURE_HEADERS, type WebhookSecret } from './signature';
