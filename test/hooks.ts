import { stopServicesStartedHere } from './services';

/**
 * Mocha root hooks (loaded by .mocharc.json): when the run ends, the Kafka, ClickHouse
 * and Redis processes it started are stopped again. Set TRIBUTARY_KEEP_SERVICES=1 to
 * keep them for the next run; services found running are never stopped.
 */
export const mochaHooks = {
  async afterAll(this: { timeout(ms: number): void }): Promise<void> {
    this.timeout(120_000);
    await stopServicesStartedHere();
  },
};
