import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { embeddedClickHouse } from '../connectors/clickhouse/embedded';
import type { ClickHouseClient } from '../connectors/clickhouse/client';

/** Exit codes of the `tributary` command, as the README lists them. */
export const EXIT = {
  OK: 0,
  /** The command ran and failed: a query error, an ingest that could not finish, the endpoint refused. */
  FAILED: 1,
  /** The command line is wrong: an unknown command or option, a missing argument, a bad value. */
  USAGE: 2,
  /** The store cannot be used: missing, or held by another process with no endpoint to ask. */
  STORE: 3,
  /** A write asked of a read-only command (a query that is not a read, without `--write`). */
  REFUSED: 4,
} as const;

/** A failure the command reports as one line (the fix included) and an exit code; never a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.FAILED,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The store directory the commands use unless `--path` or `TRIBUTARY_PATH` names another: the demo's. */
export const DEFAULT_STORE_PATH = '.tributary/demo';

/** What the read commands need of a store, whether opened here or asked through its endpoint. */
export interface StoreReader {
  /** Where the answers come from, for messages: the directory or the endpoint's URL. */
  readonly where: string;
  query<R = Record<string, unknown>>(sql: string): Promise<R[]>;
  queryText(sql: string, format: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * The process that holds an embedded store, if one does: chDB writes its pid to
 * `<store>/status` while it holds the directory and removes the file when it lets go (a
 * crashed holder leaves a dead pid). Asking first spares the user chDB's own lock error.
 */
export function storeHolder(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(path, 'status'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(/^PID: (\d+)/m.exec(text)?.[1]);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (error) {
    // EPERM: alive, under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

/** Fails with the fix when `path` holds no store: a read never creates one. */
export function requireStore(path: string): void {
  if (!existsSync(join(path, 'metadata'))) {
    throw new CliError(
      `no store at ${path}: run \`tributary demo\` or \`tributary ingest <files…>\` to make one, or pass --path DIR (or set TRIBUTARY_PATH)`,
      EXIT.STORE,
    );
  }
}

/** Fails with the fix when another process holds the store: commands that write need it to themselves. */
export function requireFree(path: string, what: string): void {
  const holder = storeHolder(resolve(path));
  if (holder !== undefined) {
    throw new CliError(`the store at ${resolve(path)} is held by process ${holder}; ${what} needs the store itself: stop that process, or pass another --path`, EXIT.STORE);
  }
}

export interface OpenOptions {
  /** Allow statements that change the store; otherwise the session is read-only. */
  write?: boolean;
  /** Called with one line when the store is held and its endpoint answers instead. */
  notice?: (line: string) => void;
}

/**
 * Opens the store at `path` for reading: directly when no process holds it (the session
 * set `readonly=1`, so only reads run), through the query endpoint named by
 * `TRIBUTARY_QUERY_URL` when a running pipeline or `tributary serve` holds it, or when
 * there is no store at `path` but an endpoint is named.
 */
export async function openStore(path: string, options: OpenOptions = {}): Promise<StoreReader> {
  const directory = resolve(path);
  const url = process.env.TRIBUTARY_QUERY_URL;
  if (url && !options.write && !existsSync(join(directory, 'metadata'))) {
    // The store lives elsewhere (another machine, a container): its endpoint answers.
    options.notice?.(`no store at ${directory}; asking the endpoint ${url}`);
    return endpointReader(url, process.env.TRIBUTARY_QUERY_USER ?? 'default', process.env.TRIBUTARY_QUERY_KEY ?? '');
  }
  requireStore(directory);
  let holder = storeHolder(directory);
  if (holder === undefined) {
    const client = embeddedClickHouse({ path: directory });
    try {
      if (!options.write) await client.exec('SET readonly = 1');
      return embeddedReader(client, directory);
    } catch (error) {
      await client.close();
      // A holder that took the store between the look and the open.
      if (!String((error as Error).message).startsWith('cannot open the embedded ClickHouse')) throw error;
      holder = storeHolder(directory) ?? 0;
    }
  }
  const held = `the store at ${directory} is held by ${holder ? `process ${holder}` : 'another process'}`;
  if (options.write) throw new CliError(`${held}; --write needs the store itself: stop that process and try again`, EXIT.STORE);
  if (!url) {
    throw new CliError(`${held}; set TRIBUTARY_QUERY_URL (and TRIBUTARY_QUERY_USER, TRIBUTARY_QUERY_KEY) to its query endpoint, e.g. the one \`tributary serve\` prints`, EXIT.STORE);
  }
  options.notice?.(`${held}; asking its endpoint ${url}`);
  return endpointReader(url, process.env.TRIBUTARY_QUERY_USER ?? 'default', process.env.TRIBUTARY_QUERY_KEY ?? '');
}

function embeddedReader(client: ClickHouseClient, directory: string): StoreReader {
  return {
    where: directory,
    query: async <R>(sql: string) => guard(() => client.query<R>(sql)),
    queryText: (sql, format) => guard(() => client.queryText(sql, format)),
    close: () => client.close(),
  };
}

function endpointReader(url: string, user: string, key: string): StoreReader {
  const queryText = async (sql: string, format: string): Promise<string> => {
    let response: Response;
    try {
      response = await fetch(`${url.replace(/\/$/, '')}/?default_format=${encodeURIComponent(format)}`, {
        method: 'POST',
        body: sql,
        headers: { 'X-ClickHouse-User': user, 'X-ClickHouse-Key': key },
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
      throw new CliError(`cannot reach the query endpoint ${url} (${cause}): is the process that holds the store serving it? Check TRIBUTARY_QUERY_URL`);
    }
    const text = await response.text();
    if (response.ok) return text;
    const code = Number(response.headers.get('x-clickhouse-exception-code'));
    if (response.status === 401 || code === 516 || code === 497) {
      throw new CliError(`the query endpoint ${url} refused the key: ${oneLine(text)}; check TRIBUTARY_QUERY_USER and TRIBUTARY_QUERY_KEY`);
    }
    if (code === 164) {
      throw new CliError(`${oneLine(text)}: the endpoint only reads; a write needs the store itself (stop the process holding it, then use --write)`, EXIT.REFUSED);
    }
    throw new CliError(oneLine(text));
  };
  return {
    where: url,
    queryText,
    async query<R>(sql: string) {
      const text = await queryText(sql, 'JSONEachRow');
      return text === '' ? [] : text.trimEnd().split('\n').map((line) => JSON.parse(line) as R);
    },
    async close() {},
  };
}

/** Runs a store call, turning ClickHouse's error into one line; a refused write says how to allow it. */
async function guard<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const message = oneLine((error as Error).message);
    if (/^Code: 164\b/.test(message)) throw new CliError(`${message}: not a read; rerun with --write to change the store`, EXIT.REFUSED);
    throw new CliError(message);
  }
}

/**
 * ClickHouse's message as one line: chDB nests the same exception up to three times
 * (`Code: 73. DB::Exception: Code: 73. DB::Exception: …`); the innermost says it all.
 */
export function oneLine(message: string): string {
  const lines = message.trim().split('\n');
  let text = lines[0]!.trim();
  const nested = text.lastIndexOf('DB::Exception: ');
  const code = /Code: (\d+)/.exec(text)?.[1];
  if (nested >= 0) text = `${code ? `Code: ${code}. ` : ''}${text.slice(nested + 'DB::Exception: '.length)}`;
  // Each nesting appends its version and name again.
  text = text.replace(/(?: \(version [^)]*\)\.?| \([A-Z_]+\)\.?)+$/, (tail) => {
    const name = /\(([A-Z_]+)\)/.exec(tail)?.[1];
    return name ? ` (${name})` : '';
  });
  return text;
}
