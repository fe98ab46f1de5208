import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdtempSync, open, openSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Named pipes the embedded engine writes a result into (`INTO OUTFILE '<fifo>'`) while this
 * process reads the other end: the engine's own writer is faster than its streaming API.
 *
 * Every FIFO lives in one private directory per client (mode 0700, made by `mkdtemp`) under
 * a random 128-bit name, mode 0600; the directory goes when the client closes, or when the
 * process exits if it was not closed. Node has no `mkfifo`, so FIFOs are made with the
 * `mkfifo` program (about 15 ms each here): a FIFO is kept for a reader session's life and
 * reused by its next query, never shared by two queries at once.
 */
export class Fifos {
  private dir: string | undefined;
  /** False once making a FIFO failed (no `mkfifo`, Windows): reads take the streaming API. */
  available = process.platform !== 'win32';

  /** A new FIFO, or undefined if FIFOs cannot be made here. */
  async make(): Promise<string | undefined> {
    if (!this.available) return undefined;
    try {
      this.dir ??= privateDir();
      const path = join(this.dir, randomBytes(16).toString('hex'));
      await new Promise<void>((resolve, reject) => execFile('mkfifo', ['-m', '600', '--', path], (error) => (error ? reject(error) : resolve())));
      return path;
    } catch {
      this.available = false;
      return undefined;
    }
  }

  /** Removes every FIFO and the directory. */
  close(): void {
    if (this.dir === undefined) return;
    removeDir(this.dir);
    this.dir = undefined;
  }
}

/** Private directories not yet removed, removed at exit. */
const dirs = new Set<string>();
const removeAll = () => {
  for (const dir of dirs) removeDir(dir);
};

function privateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-fifo-'));
  if (dirs.size === 0) process.once('exit', removeAll);
  dirs.add(dir);
  return dir;
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  dirs.delete(dir);
  if (dirs.size === 0) process.off('exit', removeAll);
}

export function removeFifo(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone with its directory.
  }
}

/**
 * Opens the read end without waiting for a writer (a FIFO's open blocks until the other
 * end opens, unless non-blocking): it must be open before the engine opens the write end,
 * which would otherwise block.
 */
export function openReadEnd(path: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, constants.O_RDONLY | constants.O_NONBLOCK, (error, fd) => (error ? reject(error) : resolve(fd))));
}

/**
 * Makes the reader see end-of-file: a writer opening and closing at once. Until some writer
 * opened, a FIFO's reader sees neither data nor its end, so a query that failed before the
 * engine opened the FIFO would leave the reader waiting. Without a reader (its end already
 * closed) this does nothing.
 */
export function signalEnd(path: string): void {
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
  } catch {
    // ENXIO: nobody reads any more; ENOENT: removed.
  }
}

/**
 * After the reader gave up (its end closed), lets a writer still to come through: the
 * engine opening the FIFO after the read end closed would wait in `open` for a reader that
 * never comes. Each tick opens and closes a read end, so such an open returns and the
 * engine's first write fails (EPIPE), which ends the query. Runs until `settled`.
 */
export function releaseWriters(path: string, settled: Promise<unknown>): void {
  const kick = () => {
    try {
      closeSync(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK));
    } catch {
      // Removed.
    }
  };
  kick();
  const timer = setInterval(kick, 20);
  timer.unref();
  void settled.finally(() => clearInterval(timer));
}

/** A string literal for ClickHouse SQL. */
export function quoteString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
