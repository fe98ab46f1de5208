/** A test run that needs Redis, for the teardown test: `mocha dist/test/integration/servicesRun.js`. */
import { ensureRedis } from '../services';

describe('a run that needs Redis', function () {
  this.timeout(120_000);
  it('starts it', async () => {
    await ensureRedis();
  });
});
