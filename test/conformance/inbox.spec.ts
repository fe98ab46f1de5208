import { expect } from 'chai';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sourceConformance, type SourceInput } from './source';

/**
 * fromInbox: a CSV file dropped in the inbox; its checkpoint (`.tributary/<file>.checkpoint.json`)
 * says how many of its records are durable. Records past the checkpoint at a crash are read
 * again: the only ones that may be stored twice.
 */
sourceConformance('fromInbox', {
  kind: 'inbox',
  async input(dir, promise): Promise<SourceInput> {
    const inbox = join(dir, 'inbox');
    mkdirSync(inbox);
    const total = promise === 'kill' ? 20_000 : 5000;
    const lines = Array.from({ length: total }, (_, i) => `R-${i + 1},${i + 1}`);
    // Two rows that are not records: dead letters, which settle (and count in the checkpoint) like records.
    if (promise === 'kill') {
      lines.splice(5000, 0, 'broken-row');
      lines.splice(15000, 0, 'another,broken,row');
    }
    writeFileSync(join(inbox, 'feed.csv'), `ref,n\n${lines.join('\n')}\n`);
    const checkpoint = join(inbox, '.tributary', 'feed.csv.checkpoint.json');
    const done = () => existsSync(join(inbox, 'done', 'feed.csv'));
    const settled = () => {
      if (done()) return lines.length;
      try {
        return (JSON.parse(readFileSync(checkpoint, 'utf8')) as { settled: number }).settled;
      } catch {
        return 0;
      }
    };
    const refsOf = (records: number) => lines.slice(0, records).filter((l) => l.startsWith('R-')).map((l) => l.split(',')[0]!);
    let settledAtFirst = 0;
    return {
      options: { dir: inbox, once: true, checkpointMs: promise === 'kill' ? 300 : 50 },
      batch: { rows: 500, maxWaitMs: 1000 },
      writesBefore: 4,
      // Slow enough that the run is still going when the test stops or kills it.
      slowMs: promise === 'stop' ? 100 : 40,
      refs: () => refsOf(lines.length),
      promised: () => refsOf(settled()),
      midway: () => settled() >= (promise === 'kill' ? 3000 : 1000),
      afterFirst({ counts }) {
        settledAtFirst = settled();
        expect(readdirSync(inbox), 'the file left the inbox before all its records were stored').to.include('feed.csv');
        if (promise === 'kill') expect(counts.raw, 'rows written twice before the kill').to.equal(counts.distinct);
      },
      afterLast({ counts, stats, first }) {
        // The restart resumes after the checkpoint, not at the file's start.
        expect(stats!.read).to.equal(lines.length - settledAtFirst);
        expect(readdirSync(join(inbox, 'done'))).to.deep.equal(['feed.csv']);
        expect(existsSync(checkpoint), 'the checkpoint of a finished file').to.equal(false);
        const broken = lines.length - total;
        expect(counts.deadLetterPositions).to.equal(broken);
        // Each dead letter at most once more than the first run wrote it.
        expect(counts.deadLetters).to.be.within(broken, broken + first.counts.deadLetters);
      },
    };
  },
});
