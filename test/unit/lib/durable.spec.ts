import { expect } from 'chai';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { removeCutOffWrites, removeDurableFile, renameDurably, writeFileDurably } from '../../../lib/durable';
import { scratchDir } from '../../helpers';

describe('lib/durable: state files replaced whole', () => {
  const dir = scratchDir();

  it('writes a new file and replaces an old one, leaving nothing beside it', async () => {
    const path = join(dir.path, 'cursor.json');
    await writeFileDurably(path, '{"a":1}');
    expect(readFileSync(path, 'utf8')).to.equal('{"a":1}');
    expect(statSync(path).mode & 0o777).to.equal(0o600);
    await writeFileDurably(path, '{"a":2}');
    expect(readFileSync(path, 'utf8')).to.equal('{"a":2}');
    expect(readdirSync(dir.path)).to.deep.equal(['cursor.json']);
  });

  it('removes a file with what writes cut off by a crash left beside it, and nothing else', async () => {
    const path = join(dir.path, 'a.csv.checkpoint.json');
    await writeFileDurably(path, '{}');
    // What a write killed before its rename leaves; then other files' and look-alikes.
    const kept = ['.a.csv.checkpoint.json.tmp', '.a.csv.checkpoint.json.0123456789ab.tmp.x', '.a.csv.checkpoint.json.x0123456789ab.tmp', '.b.csv.checkpoint.json.0123456789ab.tmp', 'a.csv', '.a.csv.checkpoint.json.0123456789AB.tmp'];
    for (const name of ['.a.csv.checkpoint.json.0123456789ab.tmp', '.a.csv.checkpoint.json.ffffffffffff.tmp', ...kept]) writeFileSync(join(dir.path, name), '{');
    await removeDurableFile(path);
    expect(readdirSync(dir.path).sort()).to.deep.equal(kept.sort());
    await removeDurableFile(join(dir.path, 'missing', 'x.json'));
  });

  it('removes the file of a write that never got to its rename, by the name the write gave it', async () => {
    const path = join(dir.path, 'state.json');
    await writeFileDurably(path, '{"a":1}');
    // The process dies as the write renames its file: the rename never comes back.
    const fsPromises = require('node:fs/promises') as { rename: unknown };
    const rename = fsPromises.rename;
    let reached!: () => void;
    const renaming = new Promise<void>((resolve) => (reached = resolve));
    fsPromises.rename = () => (reached(), new Promise(() => undefined));
    try {
      void writeFileDurably(path, '{"a":2}');
      await renaming;
    } finally {
      fsPromises.rename = rename;
    }
    expect(readdirSync(dir.path)).to.have.length(2);
    await removeCutOffWrites(path);
    expect(readdirSync(dir.path)).to.deep.equal(['state.json']);
    expect(readFileSync(path, 'utf8')).to.equal('{"a":1}');
  });

  it('never lets a reader see half a version, with writers racing on one path', async () => {
    const path = join(dir.path, 'state.json');
    const version = (n: number) => JSON.stringify({ n, pad: String(n).repeat(200_000) });
    await writeFileDurably(path, version(0));
    let reading = true;
    const seen = new Set<number>();
    const reader = (async () => {
      while (reading) {
        const parsed = JSON.parse(await readFile(path, 'utf8')) as { n: number; pad: string };
        expect(parsed.pad).to.equal(String(parsed.n).repeat(200_000));
        seen.add(parsed.n);
      }
    })();
    await Promise.all(Array.from({ length: 20 }, (_, i) => writeFileDurably(path, version(i + 1))));
    reading = false;
    await reader;
    const last = JSON.parse(readFileSync(path, 'utf8')) as { n: number };
    expect(last.n).to.be.within(1, 20);
    expect(seen.size).to.be.greaterThan(0);
    expect(readdirSync(dir.path)).to.deep.equal(['state.json']);
  });

  it('keeps the old file and leaves nothing beside it when the new one cannot take its place', async () => {
    const taken = join(dir.path, 'taken');
    mkdirSync(join(taken, 'inside'), { recursive: true });
    const error = await writeFileDurably(taken, 'x').then(() => undefined, (e: NodeJS.ErrnoException) => e);
    expect(error?.code).to.be.oneOf(['EISDIR', 'ENOTEMPTY', 'EEXIST']);
    expect(statSync(taken).isDirectory()).to.equal(true);
    expect(readdirSync(dir.path)).to.deep.equal(['taken']);
  });

  it('fails with the system error when the directory is missing', async () => {
    const error = await writeFileDurably(join(dir.path, 'no', 'such.json'), 'x').then(() => undefined, (e: NodeJS.ErrnoException) => e);
    expect(error?.code).to.equal('ENOENT');
    expect(readdirSync(dir.path)).to.deep.equal([]);
  });

  it('closes every file and directory it opens, when it succeeds and when it fails', async () => {
    const open = () => readdirSync('/proc/self/fd').length;
    mkdirSync(join(dir.path, 'to'));
    const before = open();
    for (let i = 0; i < 20; i++) {
      await writeFileDurably(join(dir.path, 'c.json'), String(i));
      writeFileSync(join(dir.path, `m${i}`), '');
      await renameDurably(join(dir.path, `m${i}`), join(dir.path, 'to', `m${i}`));
      await writeFileDurably(join(dir.path, 'to'), 'x').catch(() => undefined);
    }
    expect(open()).to.equal(before);
  });

  it('moves a file to another directory', async () => {
    mkdirSync(join(dir.path, 'done'));
    writeFileSync(join(dir.path, 'a.ndjson'), 'line\n');
    await renameDurably(join(dir.path, 'a.ndjson'), join(dir.path, 'done', 'a.ndjson'));
    expect(readdirSync(dir.path).sort()).to.deep.equal(['done']);
    expect(readFileSync(join(dir.path, 'done', 'a.ndjson'), 'utf8')).to.equal('line\n');
  });
});
