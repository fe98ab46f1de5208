import { expect } from 'chai';
import { readdirSync } from 'node:fs';
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
