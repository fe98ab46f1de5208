import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ingestCommand } from './cli/ingest';
import { demo } from './examples/bookings/demo';
import { migrateCommand, queryCommand, reportCommand, serveCommand, statusCommand } from './cli/commands';
import { CliError, DEFAULT_STORE_PATH, EXIT, requireFree } from './cli/store';

const EXIT_CODES = `
Exit codes:
  0  done
  1  the command failed (a query error, an ingest that could not finish, the endpoint refused)
  2  the command line is wrong (unknown command or option, missing argument, bad value)
  3  the store cannot be used: none at --path or held by another process, and no endpoint
     set; or held, for a command that writes
  4  refused: a query that is not a read, without --write

Environment:
  TRIBUTARY_PATH       the store directory, instead of --path
  TRIBUTARY_QUERY_URL  the query endpoint reads ask when another process holds the store,
                       or when there is none at --path
  TRIBUTARY_QUERY_USER, TRIBUTARY_QUERY_KEY  the endpoint's user (default "default") and key;
                       \`serve\` takes its key from TRIBUTARY_QUERY_KEY too`;

function version(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError('expected a port number from 0 to 65535');
  return n;
}

/**
 * The command line, built on commander: the most used and best kept argument parser for
 * Node, which gives every command its own `--help`, checks arguments and options, and
 * reports mistakes with a hint, while `node:util` parseArgs knows nothing of subcommands.
 */
export function program(run: (code: number) => void): Command {
  const cli = new Command('tributary')
    .description('Ingest vendor booking files into embedded ClickHouse, and look at what landed.')
    .usage('<command> [options]')
    .version(version(), '-v, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .addOption(new Option('-p, --path <dir>', 'the embedded store directory').env('TRIBUTARY_PATH').default(DEFAULT_STORE_PATH))
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(tributary --help lists the commands and options)')
    .exitOverride()
    .addHelpText('after', `${EXIT_CODES}

First steps:
  tributary demo                                  ingest the samples into ${DEFAULT_STORE_PATH}
  tributary status                                what the store holds
  tributary query "SELECT * FROM bookings_per_vendor_day"
  tributary ingest examples/bookings/data/*       import vendor files (a file's vendor is its directory's name)
  tributary report -o report.html                 charts of bookings, revenue and dead letters`);
  const path = () => cli.opts<{ path: string }>().path;

  cli
    .command('demo')
    .description('ingest the seven sample vendors (or the given files and directories) into the store and print a summary')
    .argument('[paths...]', 'vendor files or directories (default: the samples)')
    .action(async (paths: string[]) => {
      requireFree(path(), 'demo');
      await demo({ path: path(), paths });
      run(EXIT.OK);
    });

  cli
    .command('ingest')
    .description('bulk import vendor files into the store: a progress bar, then a summary and the dead letters by reason')
    .argument('<paths...>', "files or directories; a file's vendor is the name of its directory (data/skyway/x.json is skyway's)")
    .option('--vendor <name>', "the vendor of every file, instead of their directories' names (skyway, railbase, …)")
    .option('--no-progress', 'no progress bar')
    .addHelpText('after', '\nThe store is created and migrated if needed. Reading the same files again changes no count.')
    .action(async (paths: string[], options: { progress: boolean; vendor?: string }) => run(await ingestCommand(path(), paths, options)));

  cli
    .command('query')
    .description('run SQL against the store and print the result; only reads unless --write')
    .argument('<sql>', 'the statement, e.g. "SELECT vendor, count() FROM bookings FINAL GROUP BY vendor"')
    .option('-f, --format <format>', 'a ClickHouse output format (TSV, CSV, JSONEachRow, Pretty, …)', 'PrettyCompactMonoBlock')
    .option('--write', 'allow statements that change the store (INSERT, ALTER, DROP, INTO OUTFILE)', false)
    .addHelpText(
      'after',
      `
Reads run in a read-only session (SETTINGS readonly=1): writes, DDL, file() and url() are
refused with exit code 4. When another process holds the store, the query goes to the
endpoint in TRIBUTARY_QUERY_URL (see \`tributary serve\`), which only reads.`,
    )
    .action(async (sql: string, options: { format: string; write: boolean }) => run(await queryCommand(path(), sql, options)));

  cli
    .command('status')
    .description('what the store holds: tables and row counts, bookings by vendor and day, dead letters by reason, last ingest')
    .action(async () => run(await statusCommand(path())));

  cli
    .command('report')
    .description('write a self-contained HTML page with charts of bookings and revenue per vendor per day and dead letters by reason')
    .option('-o, --out <file>', 'the page to write', 'tributary-report.html')
    .action(async (options: { out: string }) => run(await reportCommand(path(), options)));

  cli
    .command('serve')
    .description("serve the store to analysts over ClickHouse's HTTP interface (reads only), until stopped")
    .addOption(new Option('--host <host>', 'the address to listen on').default('127.0.0.1'))
    .addOption(new Option('--port <port>', 'the port; 0 picks a free one').default(8123).argParser(port))
    .option('--user <name>', 'the user name analysts give', 'analyst')
    .addHelpText(
      'after',
      `
The key comes from TRIBUTARY_QUERY_KEY (at least 8 characters). Then, from another shell:
  curl -u analyst:$TRIBUTARY_QUERY_KEY 'http://127.0.0.1:8123/?query=SELECT+count()+FROM+bookings+FINAL'
  TRIBUTARY_QUERY_URL=http://127.0.0.1:8123 TRIBUTARY_QUERY_USER=analyst tributary query "SELECT 1"`,
    )
    .action(async (options: { host: string; port: number; user: string }) => run(await serveCommand(path(), options)));

  cli
    .command('migrate')
    .description("create the store if needed and apply the migrations not yet applied (default: the booking schema's)")
    .option('--migrations <dir>', 'a directory of NNN_name.sql files')
    .action(async (options: { migrations?: string }) => run(await migrateCommand(path(), options)));

  return cli;
}

/** Runs `tributary` with `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.OK;
  const cli = program((c) => (code = c));
  try {
    await cli.parseAsync(argv, { from: 'user' });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version end the parse as "errors" with code 0; commander printed the rest.
      return error.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    process.stderr.write(`tributary: ${messageOf(error)}\n`);
    return error instanceof CliError ? error.exitCode : EXIT.FAILED;
  }
}

/** One line for any failure: the message's first line, never a stack. */
function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.trim().split('\n')[0] ?? 'failed';
}
