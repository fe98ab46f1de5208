import { expect } from 'chai';
import { createReadStream, createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { tempDir } from '../../helpers';
import { readInChild, repeat, writeBig } from '../../files-ingest';

/**
 * Hostile CSV, NDJSON and gzip input read in a child process with a 32 MB heap, whose
 * peak RSS is reported: without the limits, each of these files would hold 150 MB or more.
 */
describe('fromFiles: hostile CSV, NDJSON and gzip input, in bounded memory', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());

  it('a CSV quote left open for 150 MB is one dead letter; the rows after the next line break are read', async () => {
    const path = join(dir.path, 'open-quote.csv');
    await writeBig(path, ['ref,note\nH-1,ok\nH-2,"', () => repeat('x', 150 * 1024 * 1024), '\nH-3,after\n']);
    const result = await readInChild({ paths: path }, 32);
    expect(result.firstRows).to.deep.equal([
      { ref: 'H-1', note: 'ok' },
      { ref: 'H-3', note: 'after' },
    ]);
    expect(result.letters.map((l) => [l.code, l.message])).to.deep.equal([['RECORD_TOO_LARGE', 'record at line 3 is longer than 1048576 bytes']]);
    expect(result.maxRssMb).to.be.below(150);
  });

  it('a 150 MB NDJSON line is one dead letter, and the next line is read', async () => {
    const path = join(dir.path, 'long-line.ndjson');
    await writeBig(path, ['{"id":1}\n{"blob":"', () => repeat('y', 150 * 1024 * 1024), '"}\n{"id":3}\n']);
    const result = await readInChild({ paths: path }, 32);
    expect(result.firstRows).to.deep.equal([{ id: 1 }, { id: 3 }]);
    expect(result.letters.map((l) => l.code)).to.deep.equal(['RECORD_TOO_LARGE']);
    expect(result.maxRssMb).to.be.below(150);
  });

  it('a gzip bomb (500 MB of one line from under 1 MB) is gunzipped as a stream: one dead letter', async () => {
    const plain = join(dir.path, 'bomb.txt');
    await writeBig(plain, ['a,b\n1,2\n"', () => repeat('z', 500 * 1024 * 1024), '"\n3,4\n']);
    const path = join(dir.path, 'bomb.csv.gz');
    await pipeline(createReadStream(plain), createGzip({ level: 9 }), createWriteStream(path));
    const result = await readInChild({ paths: path }, 32);
    expect(result.firstRows).to.deep.equal([
      { a: '1', b: '2' },
      { a: '3', b: '4' },
    ]);
    expect(result.letters.map((l) => l.code)).to.deep.equal(['RECORD_TOO_LARGE']);
    expect(result.maxRssMb).to.be.below(150);
  });
});
