import { expect } from 'chai';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fromFiles, type FileProgress } from '../../../connectors/files';
import { ConfigError } from '../../../lib/errors';
import { tempDir } from '../../helpers';
import { ingestFiles } from '../../files-ingest';

describe('fromFiles: progress', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());

  it('reports bytes, records, rates and an ETA while a file is read, and a last event when it ends', async () => {
    const path = join(dir.path, 'big.csv');
    writeFileSync(path, 'ref,n\n' + Array.from({ length: 5000 }, (_, i) => `R-${i},${i}`).join('\n') + '\n');
    const size = statSync(path).size;
    const events: FileProgress[] = [];
    const gz = join(dir.path, 'small.ndjson.gz');
    writeFileSync(gz, gzipSync('{"a":1}\n{"a":2}\n'));
    await ingestFiles({ paths: [path, gz], chunkBytes: 1024, progressEveryMs: 0, onProgress: (p) => events.push(p) });
    const ofBig = events.filter((e) => e.file === path);
    expect(ofBig.length).to.be.greaterThan(10);
    for (let i = 1; i < ofBig.length; i++) {
      expect(ofBig[i]!.bytes).to.be.at.least(ofBig[i - 1]!.bytes);
      expect(ofBig[i]!.records).to.be.at.least(ofBig[i - 1]!.records);
    }
    for (const e of ofBig) {
      expect(e.totalBytes).to.equal(size);
      expect(e.bytesPerSecond).to.be.at.least(0);
      expect(e.recordsPerSecond).to.be.at.least(0);
      if (e.etaMs !== undefined) expect(e.etaMs).to.be.at.least(0);
    }
    const last = ofBig[ofBig.length - 1]!;
    expect(last).to.include({ done: true, bytes: size, records: 5000, etaMs: 0 });
    expect(ofBig.filter((e) => e.done)).to.have.length(1);
    // A gzip file counts the compressed bytes it reads, against its size on disk.
    const small = events.filter((e) => e.file === gz);
    expect(small[small.length - 1]).to.include({ done: true, bytes: statSync(gz).size, totalBytes: statSync(gz).size, records: 2 });
  });

  it('refuses a progress callback that is not a function', () => {
    expect(() => fromFiles({ paths: 'a.csv', onProgress: 'yes' as never })).to.throw(ConfigError, 'onProgress must be a function, got string');
    expect(() => fromFiles({ paths: 'a.csv', progressEveryMs: -1 })).to.throw(ConfigError, 'progressEveryMs must be an integer >= 0, got -1');
  });
});
