import { setTimeout as wait } from 'node:timers/promises';

/** Waits `ms`, or until `signal` aborts if that comes first; never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return wait(ms, undefined, signal ? { signal } : undefined).catch(() => undefined);
}
