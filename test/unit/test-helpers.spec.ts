import { expect } from 'chai';
import { rejection, until } from '../helpers';

/**
 * The polling helper the integration specs wait with: a helper that returned at once would
 * make every spec waiting for a query to start, or to stop, pass without waiting.
 */
describe('test helpers: until', () => {
  it('waits for a condition it has to await, polling it every everyMs', async () => {
    let polls = 0;
    const started = Date.now();
    await until(async () => ++polls === 4, 2000, 'the fourth poll', 20);
    expect(polls).to.equal(4);
    expect(Date.now() - started, 'three waits of 20 ms').to.be.at.least(55);
  });

  it('waits for a synchronous condition too', async () => {
    let polls = 0;
    await until(() => ++polls === 3, 2000);
    expect(polls).to.equal(3);
  });

  it('fails after timeoutMs, naming what it waited for', async () => {
    const error = (await rejection(until(async () => false, 50, 'the never'))) as Error;
    expect(error.message).to.equal('timed out waiting for the never');
  });
});
