import { expect } from 'chai';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sourceConformance, type SourceInput } from '../../conformance/source';

/**
 * fromInbox: a CSV file dropped in the inbox; its checkpoint (`.tributary/<file>.checkpoint.json`)
 * says how many of its records are durable, and where the batches past them ended. Records
 * past the checkpoint at a crash are read again, cut into the same batches, so their writes
 * carry the same insert tokens and none is stored twice: the kill test allows no copies, with
 * batches cut by time (a 1 ms wait, small reads) rather than by size.
 */
sourceConformance('fromInbox', {
  kind: 'inbox',
  savedIn: '.checkpoint.json.',
  async input(dir, promise): Promise<SourceInput> {
    const inbox = join(dir, 'inbox');
    mkdirSync(inbox);
    const total = promise === 'kill' ? 20_000 : 5000;
    const lines = Array.from({ length: total }, (_, i) => `R-${i + 1},${i + 1}`);
    // Rows that are not records, one every 1500: dead letters, which settle (and count in the
    // checkpoint) like records, but later than the batches around them; the kill comes while one
    // is stored and not settled, the checkpoint held inside a batch that was written, and the
    // restart reads that batch again whole.
    if (promise === 'kill') for (let at = 1500; at < lines.length; at += 1501) lines.splice(at, 0, at % 2 ? 'broken-row' : 'another,broken,row');
    writeFileSync(join(inbox, 'feed.csv'), `ref,n\n${lines.join('\n')}\n`);
    const checkpoint = join(inbox, '.tributary', 'feed.csv.checkpoint.json');
    const done = () => existsSync(join(inbox, 'done', 'feed.csv'));
    const saved = (): { settled: number; cuts?: number[] } => {
      if (done()) return { settled: lines.length };
      try {
        return JSON.parse(readFileSync(checkpoint, 'utf8')) as { settled: number; cuts?: number[] };
      } catch {
        return { settled: 0 };
      }
    };
    const settled = () => saved().settled;
    const refsOf = (records: number) => lines.slice(0, records).filter((l) => l.startsWith('R-')).map((l) => l.split(',')[0]!);
    let settledAtFirst = 0;
    // Where the restart reads from: the start of the batch holding the first record not settled.
    let fromAtFirst = 0;
    const kill = promise === 'kill';
    return {
      // Small reads and a 1 ms wait: batches of the kill test are cut by time wherever reading pauses.
      options: { dir: inbox, once: true, checkpointMs: kill ? 1000 : 50, ...(kill && { chunkBytes: 1024 }) },
      batch: { rows: 500, maxWaitMs: kill ? 1 : 1000 },
      writesBefore: 4,
      // Slow enough that the run is still going when the test stops or kills it.
      slowMs: promise === 'stop' ? 100 : kill ? undefined : 40,
      // Killed while a write is stored but not yet acked: its rows are past the saved position.
      // A dead letter settles 3 s after it is stored: the checkpoint waits inside a written batch meanwhile.
      ...(kill && { ackDelayMs: 150, deadLetterAckDelayMs: 3000 }),
      refs: () => refsOf(lines.length),
      promised: () => refsOf(settled()),
      // Killed past the mark while a dead letter is stored but not yet acked: the checkpoint
      // cannot pass its record, so the restart reads it again and writes its letter again.
      midway: kill ? (run) => settled() >= 3000 && run!.seen('dead letter stored') > run!.seen('dead letter acked') : () => settled() >= 1000,
      // Nothing twice: the records read again after the kill are cut and tokened as before.
      copies: () => 1,
      afterFirst({ counts, placedKill }) {
        const checkpointed = saved();
        settledAtFirst = checkpointed.settled;
        fromAtFirst = (checkpointed.cuts ?? []).filter((cut) => cut <= settledAtFirst).pop() ?? 0;
        if (kill) console.log(`      checkpoint at the kill: ${settledAtFirst} records settled, the restart reads from record ${fromAtFirst + 1}`);
        expect(readdirSync(inbox), 'the file left the inbox before all its records were stored').to.include('feed.csv');
        if (kill) {
          expect(counts.raw, 'rows written twice before the kill').to.equal(counts.distinct);
          // Killed at a set point, not while a dead letter waits for its ack: the checks below are the timed kill's.
          if (placedKill) return;
          expect(counts.deadLetters, 'dead letters written twice before the kill').to.equal(counts.deadLetterPositions);
          // Dead letters stored past where the restart reads from: written again by it, absorbed by their tokens.
          const before = lines.slice(0, fromAtFirst).filter((l) => !l.startsWith('R-')).length;
          expect(counts.deadLetters - before, 'dead letters stored past where the restart reads from').to.be.at.least(1);
        }
      },
      afterLast({ counts, stats }) {
        // The restart resumes after the checkpoint, not at the file's start: from the start of
        // the batch holding the first record not settled, whose settled records it reads again
        // (written, or dead-lettered, again with their batches, with the same tokens).
        expect(settledAtFirst - fromAtFirst, 'records read again before the checkpoint').to.be.below(500);
        expect(stats!.read).to.equal(lines.length - fromAtFirst);
        expect(readdirSync(join(inbox, 'done'))).to.deep.equal(['feed.csv']);
        expect(existsSync(checkpoint), 'the checkpoint of a finished file').to.equal(false);
        const broken = lines.length - total;
        expect(counts.deadLetterPositions).to.equal(broken);
        // Each dead letter once: those the restart wrote again went in the batches the run
        // before cut, with the same tokens (plain count() on a MergeTree no merge folds).
        expect(counts.deadLetters, 'dead letters stored twice').to.equal(broken);
      },
    };
  },
});
