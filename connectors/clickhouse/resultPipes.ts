import { execFile } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { Socket, type SocketConstructorOpts } from 'node:net';
import type { DuplexOptions } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../lib/logger';

/**
 * Named pipes the embedded engine writes streamed results into, in a directory of this
 * process's own (mode 0700), each used by one stream at a time and kept for the next.
 *
 * chDB's streaming API hands a result over a block at a time, each fetched by a call that
 * runs the engine for that block only: on two cores it reads about half as fast as the
 * engine writes the same result into a file. Writing it `INTO OUTFILE` a named pipe keeps
 * the engine running while its output is on its way out, held back only by the pipe.
 *
 * Node cannot make a named pipe itself: `mkfifo` does, once per pipe. Where it cannot be
 * run (no `mkfifo`, no writable temporary directory) the streams use chDB's streaming API.
 */
export class ResultPipes {
  readonly #logger: Logger;
  readonly #idle: string[] = [];
  #dir: string | undefined;
  #made = 0;
  #unavailable = false;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** A pipe no stream is using, or `undefined` when none can be made here. */
  async take(): Promise<string | undefined> {
    const idle = this.#idle.pop();
    if (idle !== undefined || this.#unavailable) return idle;
    try {
      if (this.#dir === undefined) {
        this.#dir = mkdtempSync(join(tmpdir(), 'tributary-results-'));
        process.once('exit', this.#remove);
      }
      const path = join(this.#dir, String(this.#made++));
      await new Promise<void>((resolve, reject) => execFile('mkfifo', ['-m', '600', path], (error) => (error ? reject(error) : resolve())));
      return path;
    } catch (cause) {
      this.#unavailable = true;
      this.#logger.warn("embedded ClickHouse: cannot make a named pipe for streamed results; they stream through chDB's streaming API, which is slower", { error: (cause as Error).message });
      return undefined;
    }
  }

  /** Gives back a pipe once the query that wrote it has ended. */
  give(path: string): void {
    this.#idle.push(path);
  }

  /** Removes the pipes (no stream may be using them). */
  close(): void {
    process.off('exit', this.#remove);
    this.#remove();
    this.#dir = undefined;
    this.#idle.length = 0;
  }

  readonly #remove = () => {
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
  };
}

/** How much of a result is read ahead of its reader. */
const PIPE_READ_BYTES = 1024 * 1024;

/**
 * Runs `sql` (through `run`) with its result written `INTO OUTFILE` the named pipe `path`
 * in `format`, and yields the bytes as they come out of the pipe. A query that fails
 * throws its error after the bytes it wrote before failing. A reader that stops before the
 * end closes the pipe and calls `stop`, which must end the query (the engine writes on into
 * a closed pipe without noticing); this returns once the query has ended.
 */
export async function* throughPipe(path: string, sql: string, format: string, run: (sql: string) => Promise<{ bytes(): Uint8Array }>, stop: () => void): AsyncGenerator<Uint8Array, void> {
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(format)) throw new Error(`not a format name: ${JSON.stringify(format)}`);
  // Opened for reading without waiting for a writer, and held open for writing here too, so
  // that the pipe ends when the query has ended rather than whenever the engine closes it
  // (also when it never opens it: a query that fails first).
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let writeFd: number;
  try {
    writeFd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (error) {
    closeSync(readFd);
    throw error;
  }
  // What arrived while the reader was busy comes as one chunk, up to a MiB: a reader whose
  // work goes by the chunk (a round trip each) keeps up as with the engine's blocks.
  // (A Socket passes its options on to its Duplex: the typings leave that out.)
  const options: SocketConstructorOpts & Pick<DuplexOptions, 'readableHighWaterMark'> = { fd: readFd, readable: true, writable: false, readableHighWaterMark: PIPE_READ_BYTES };
  const pipe = new Socket(options);
  let failure: { error: unknown } | undefined;
  // On its own line: a comment ending the caller's SQL does not hide the clause.
  // Started a turn later, so that one that throws at once comes out here as a failure.
  const running = Promise.resolve()
    .then(() => run(`${sql}\nINTO OUTFILE '${path.replace(/[\\']/g, '\\$&')}' TRUNCATE FORMAT ${format}`))
    .then(
      (result) => {
        // Written anywhere but the pipe: the clause went to another query than the read.
        if (result.bytes().length > 0) failure = { error: new Error('the engine did not write the result into its pipe') };
      },
      (error: unknown) => void (failure = { error }),
    )
    .finally(() => closeSync(writeFd));
  let ended = false;
  try {
    for await (const chunk of pipe) yield chunk as Buffer;
    ended = true;
  } finally {
    pipe.destroy();
    if (!ended) stop();
    await running;
  }
  if (failure) throw failure.error;
}
