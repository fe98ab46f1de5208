import { randomBytes } from 'node:crypto';
import { open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * State files that survive a crash or a power cut: a new version replaces the old one whole
 * (a reader never sees half of either), and once the call returns the new one is on disk.
 */

/**
 * Writes `text` to `path` durably: into a file of its own beside it (a unique name, so two
 * writers never share one), flushed to disk, renamed over `path`, and the directory flushed
 * so the rename is too. A failure leaves the old file as it was and no file beside it.
 */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  const aside = join(dirname(path), asidePrefix(path) + randomBytes(6).toString('hex') + '.tmp');
  try {
    const file = await open(aside, 'wx', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(aside, path);
  } catch (error) {
    await rm(aside, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

/**
 * Removes a file `writeFileDurably` kept, with the files of its writes a crash cut off
 * before their rename. Only when no write of `path` is under way: its file beside it
 * would go too.
 */
export async function removeDurableFile(path: string): Promise<void> {
  await rm(path, { force: true });
  await removeCutOffWrites(path);
}

/**
 * Removes the files of writes of `path` a crash cut off before their rename (one is left
 * beside `path` per such crash). Only when no write of `path` is under way.
 */
export async function removeCutOffWrites(path: string): Promise<void> {
  const prefix = asidePrefix(path);
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) if (name.startsWith(prefix) && ASIDE_TAIL.test(name.slice(prefix.length))) await rm(join(dirname(path), name), { force: true });
}

/** A write of `path` goes first into `<asidePrefix><12 hex digits>.tmp` beside it. */
function asidePrefix(path: string): string {
  return `.${basename(path)}.`;
}

/** What follows `asidePrefix` in the name of a write's file: 6 random bytes in hex. */
const ASIDE_TAIL = /^[0-9a-f]{12}\.tmp$/;

/** Renames `from` to `to` durably: both directories are flushed, so after a crash the file is in one place, the new one. */
export async function renameDurably(from: string, to: string): Promise<void> {
  await rename(from, to);
  await syncDirectory(dirname(to));
  if (dirname(from) !== dirname(to)) await syncDirectory(dirname(from));
}

/** Flushes a directory's entries (a file made, renamed or removed in it) to disk. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
