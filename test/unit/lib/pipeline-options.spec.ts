import { expect } from 'chai';
import { fromIterable } from '../../../connectors/iterable';
import { ConfigError } from '../../../lib/errors';
import { Pipeline } from '../../../lib/pipeline';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink } from '../../helpers';

describe('pipeline options', () => {
  const base = () => ({ source: fromIterable([1]), sink: new MemorySink<number>(), deadLetters: new MemorySink<DeadLetter>() });

  it('names a pipeline "pipeline" unless given a name', async () => {
    const unnamed = new Pipeline(base());
    const starts: string[] = [];
    unnamed.on('pipeline.start', (event) => starts.push(event.payload.pipeline));
    await unnamed.run();
    expect([unnamed.name, ...starts]).to.deep.equal(['pipeline', 'pipeline']);
    expect(new Pipeline({ ...base(), name: 'bookings' }).name).to.equal('bookings');
  });

  it('needs a source, a sink and a dead-letter sink, named in that order', () => {
    expect(() => new Pipeline({ ...base(), source: undefined as never, sink: undefined as never })).to.throw(ConfigError, 'source is required');
    expect(() => new Pipeline({ ...base(), sink: undefined as never, deadLetters: undefined as never })).to.throw(ConfigError, 'sink is required');
  });
});
