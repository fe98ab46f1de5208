import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { removeCutOffWrites, writeFileDurably } from '../../lib/durable';
import { ConfigError, ConnectorError } from '../../lib/errors';

/** Where a poller stands, saved only once every record before it is acked. */
export interface PollCursor {
  /** The `since` value of the sync under way, or of the next one between syncs. */
  watermark?: string | number;
  /** Where the sync under way resumes (page, offset, cursor token or next URL); absent between syncs. */
  resume?: string | number;
  /** The highest watermark field among the acked records of the sync under way. */
  highest?: string | number;
  /** Epoch ms of the save. */
  savedAt: number;
}

/** Keeps one poller's cursor. Replace the file default with a shared store when pollers move between hosts. */
export interface CursorStore {
  load(): Promise<PollCursor | undefined>;
  save(cursor: PollCursor): Promise<void>;
}

/**
 * A cursor in a JSON file, written aside, flushed to disk and renamed over the old one, so
 * a crash leaves either the old cursor or the new one, never half of either. The file's
 * directory is created if needed.
 *
 * ## Example
 * ```ts
 * import { fileCursorStore } from 'tributary/poll';
 * const cursorStore = fileCursorStore('./state/acme-bookings.cursor.json');
 * ```
 */
export function fileCursorStore(path: string): CursorStore {
  if (typeof path !== 'string' || path === '') throw new ConfigError(`cursor file must be a path, got ${JSON.stringify(path)}`);
  let dirMade = false;
  return {
    async load() {
      // Loaded before the poller's first save: what saves a crash cut off left beside the file can go.
      await removeCutOffWrites(path);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (cause) {
        if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new ConnectorError(`cannot read cursor ${path}: ${(cause as Error).message}`, { cause });
      }
      try {
        return JSON.parse(text) as PollCursor;
      } catch (cause) {
        throw new ConnectorError(`cursor ${path} is not valid JSON: ${(cause as Error).message}`, { cause });
      }
    },
    async save(cursor) {
      // The first save creates the cursor's directory (`./state/` of a fresh checkout).
      if (!dirMade) {
        await mkdir(dirname(path), { recursive: true });
        dirMade = true;
      }
      await writeFileDurably(path, JSON.stringify(cursor));
    },
  };
}
