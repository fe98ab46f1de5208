export { fromWebhook, type FromWebhookOptions, type WebhookSource, type WebhookStats, type WebhookVendorOptions } from './source';
export { MemoryReplayStore, type MemoryReplayStoreOptions, type ReplayStore } from './replay';
export { signWebhook, SIGNATURE_HEADERS, type WebhookSecret } from './signature';
