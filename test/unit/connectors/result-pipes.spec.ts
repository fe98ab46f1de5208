import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ResultPipes, throughPipe } from '../../../connectors/clickhouse/resultPipes';
import { quietLogger } from '../../../lib/logger';
import { readToEnd as read } from '../../helpers';

/** The descriptors this process holds. */
const openDescriptors = () => readdirSync('/proc/self/fd').length;

describe('result pipes', () => {
  let pipes: ResultPipes;
  let path: string;

  beforeEach(async () => {
    pipes = new ResultPipes(quietLogger);
    path = (await pipes.take())!;
    expect(path, 'a named pipe made here').to.be.a('string');
  });
  afterEach(() => pipes.close());

  it('hands a pipe given back to the next stream, and removes every pipe and its directory on close, exit hook included', async () => {
    pipes.give(path);
    expect(await pipes.take(), 'the pipe given back').to.equal(path);
    const other = (await pipes.take())!;
    expect(other).not.to.equal(path);
    expect(dirname(other)).to.equal(dirname(path));
    const hooks = process.listenerCount('exit');
    pipes.close();
    expect([existsSync(path), existsSync(other), existsSync(dirname(path))]).to.deep.equal([false, false, false]);
    expect(process.listenerCount('exit'), 'the exit hook, gone').to.equal(hooks - 1);
    // Used again after close: a new directory, and its own exit hook.
    const again = (await pipes.take())!;
    expect([existsSync(again), process.listenerCount('exit')]).to.deep.equal([true, hooks]);
  });

  it('fails a read whose query throws at once, and leaves no descriptor open', async () => {
    const before = openDescriptors();
    const error = await read(
      throughPipe(path, 'SELECT 1', 'TSV', () => {
        throw new Error('refused at once');
      }, () => undefined),
    );
    expect((error as Error).message).to.equal('refused at once');
    expect(openDescriptors()).to.equal(before);
  });

  it('fails a read whose answer came anywhere but the pipe', async () => {
    const error = await read(throughPipe(path, 'SELECT 1', 'TSV', async () => ({ bytes: () => Buffer.from('1\n') }), () => undefined));
    expect((error as Error).message).to.equal('the engine did not write the result into its pipe');
  });

  it('refuses a format that is not a name before it opens anything', async () => {
    const before = openDescriptors();
    let ran = false;
    const error = await read(throughPipe(path, 'SELECT 1', "TSV' INTO OUTFILE '/tmp/x", async () => ((ran = true), { bytes: () => Buffer.alloc(0) }), () => undefined));
    expect([(error as Error).message, ran, openDescriptors()]).to.deep.equal([`not a format name: "TSV' INTO OUTFILE '/tmp/x"`, false, before]);
  });
});
