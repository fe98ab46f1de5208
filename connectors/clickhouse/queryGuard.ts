import { ClickHouseError } from '../../lib/errors';
import type { ClickHouseClient } from './client';

/**
 * Functions that read beyond the tables a reader was given: a file, a table or a
 * dictionary named by a string (which the table allowlist cannot see), or a model file.
 * Beside these, every function of the engine's `Dictionary` and `AI` categories (a
 * dictionary by name, whatever table it loads; a model service outside), their aliases,
 * and every user-defined function (its body is the engine's to expand, and may read
 * anything). Table functions need no list: every one is refused where it stands, in a FROM.
 */
const OUTSIDE_FUNCTIONS = new Set(['file', 'catboostevaluate', 'joinget', 'joingetornull', 'hascolumnintable']);
const OUTSIDE_CATEGORIES = ['Dictionary', 'AI'];

/** Functions whose second argument may be a table by its bare name: `x IN t`, `x GLOBAL NOT IN db.t`, … */
const IN_FUNCTION = /^(?:global)?(?:not)?(?:null)?in(?:ignoreset)?$/i;

/**
 * Tables every reader may read: `system.one` (what `SELECT 1` reads) and the engine's
 * catalogue that drivers and tools read when they connect (settings, functions, formats,
 * types, time zones; databases, tables and columns, as DBeaver's navigator lists them).
 * None holds a row of a table; what they tell of tables (a view's definition, a column's
 * default, row counts) and of user-defined functions (their bodies) is narrowed to what the
 * reader may read by `AdmittedQuery.settings`.
 */
export const METADATA_TABLES: ReadonlySet<string> = new Set([
  'system.one',
  'system.settings',
  'system.functions',
  'system.formats',
  'system.data_type_families',
  'system.time_zones',
  'system.build_options',
  'system.collations',
  'system.table_engines',
  'system.databases',
  'system.tables',
  'system.columns',
]);

/**
 * The tables a reader may read: these (`db.name`) and every table of these databases, less
 * `except`; and the metadata tables, whatever the policy.
 */
export interface TablePolicy {
  tables: ReadonlySet<string>;
  databases: ReadonlySet<string>;
  except: ReadonlySet<string>;
}

/** Whether `policy` lets a reader read `table` (`db.name`). */
function mayRead(policy: TablePolicy, table: string): boolean {
  if (METADATA_TABLES.has(table)) return true;
  return !policy.except.has(table) && (policy.tables.has(table) || policy.databases.has(databaseOf(table)));
}

/** A query the engine's parser read and the reader's policy admits, ready to run. */
export interface AdmittedQuery {
  /** `select` (SELECT, UNION, INTERSECT), `explain`, `describe`, `exists`, `show`. */
  kind: 'select' | 'explain' | 'describe' | 'exists' | 'show';
  /** The engine's own single-line form of the query, without its FORMAT clause. */
  sql: string;
  /** The query's FORMAT clause, if it had one. */
  format: string | undefined;
  /**
   * SETTINGS the query must run with, before any other: the engine's `additional_table_filters`,
   * so that `system.tables`, `system.columns` and `system.databases` show only the tables the
   * reader may read and their databases, and `system.functions` only the engine's own functions.
   */
  settings: string;
}

/** A query refused by the policy: ClickHouse's READONLY (164), as a server in readonly mode says it. */
export class QueryRefusedError extends ClickHouseError {
  constructor(reason: string) {
    super(`Code: 164. DB::Exception: ${reason}: cannot execute query in readonly mode. (READONLY)`, 164, { retriable: false, rowsAtFault: false });
    this.name = 'QueryRefusedError';
  }
}

interface AstNode {
  type: string;
  /** What follows the type on its line (a name, a literal), without `(children N)`. */
  text: string;
  children: AstNode[];
}

/** How the guard's own reads of a query run. */
export interface AnalysisOptions {
  /**
   * A SETTINGS list (`max_execution_time = 60, …, readonly = 1`) for the analyzer's read of
   * the query, which runs its scalar subqueries: the bounds its own run will have.
   * @default none
   */
  settings?: string;
  /** Cancels the guard's reads (the client went away). */
  signal?: AbortSignal;
}

/**
 * Reads a query with the engine's own parser and admits it only if it reads, and reads
 * only tables `policy` allows: one statement (`formatQuerySingleLine` refuses several), of an
 * admitted kind, no table function, no INTO OUTFILE, no SETTINGS clause (settings come
 * from the caller's allowlist), no function that reaches files, dictionaries, tables or
 * services by name (see `OUTSIDE_FUNCTIONS`). Tables are taken from the analyzer's
 * resolved query tree, so CTEs, views, `IN t` and aliases name the real tables.
 *
 * The analyzer runs a query's scalar subqueries (`(SELECT … FROM t)`, `EXISTS`) and folds
 * its constant calls while it resolves them, and its errors carry the values it met. So
 * before the query reaches it, every table the parser's tree names (in a FROM or JOIN, or
 * after IN) must be allowed, or name no table at all (a CTE, which the analyzer then
 * resolves), and every function it calls must be the engine's own and outside the list:
 * nothing of a table outside the list is read, even to fail. What it runs of allowed tables
 * runs under `analysis.settings`, the bounds of the query's own run. Otherwise the text only
 * reaches the engine as a bound string, then as the argument of `EXPLAIN`.
 */
export async function admitQuery(
  client: ClickHouseClient,
  query: string,
  params: Readonly<Record<string, string>>,
  policy: TablePolicy,
  analysis: AnalysisOptions = {},
): Promise<AdmittedQuery> {
  const { signal } = analysis;
  const canonical = (await collect(client, 'SELECT formatQuerySingleLine({tributary_query_text:String})', { tributary_query_text: query }, 'RawBLOB', signal)).trim();
  const root = parseAstDump(await collect(client, `EXPLAIN AST ${canonical}`, params, 'TSVRaw', signal));
  const withoutAlias = (text: string) => text.replace(/ \(alias .*$/s, '');
  const readable = (name: string) => mayRead(policy, name);
  const checkTable = (name: string) => {
    if (!readable(name)) refuse(`table ${name} is not among the tables this reader may query`);
  };
  /** The names the tree gives tables (`db.name`, or a CTE's name) and the functions it calls, lower case. */
  const named = new Set<string>();
  const called = new Set<string>();
  const walk = (node: AstNode, parent: AstNode | undefined): void => {
    if (node.type === 'Set') refuse('SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters');
    if (node.type === 'Function') {
      const name = withoutAlias(node.text).trim();
      if (parent?.type === 'TableExpression' && parent.children[0] === node) refuse(`table function ${name} is not allowed`);
      const lower = name.toLowerCase();
      if (OUTSIDE_FUNCTIONS.has(lower)) refuse(`function ${name} is not allowed`);
      called.add(lower);
      const operand = node.children[0]?.children[1];
      if (IN_FUNCTION.test(name) && operand?.type === 'Identifier') named.add(withoutAlias(operand.text));
    }
    if (node.type === 'TableIdentifier') named.add(withoutAlias(node.text));
    for (const child of node.children) walk(child, node);
  };
  // A SELECT's own clauses hang below its first child; anything else at its top is FORMAT (an
  // identifier), SETTINGS (Set) or INTO OUTFILE (literals).
  const selectFormat = (select: AstNode): string | undefined => {
    let format: string | undefined;
    for (const extra of select.children.slice(1)) {
      if (extra.type === 'Identifier' && format === undefined) format = extra.text.trim();
      else if (extra.type === 'Set') refuse('SETTINGS in a query are not allowed; pass allowlisted settings as URL parameters');
      else refuse('INTO OUTFILE is not allowed');
    }
    return format;
  };
  let kind: AdmittedQuery['kind'];
  let format: string | undefined;
  let inner = canonical;
  switch (root.type) {
    case 'SelectWithUnionQuery':
      kind = 'select';
      format = selectFormat(root);
      walk(root.children[0]!, root);
      break;
    case 'Explain': {
      kind = 'explain';
      const [select, ...rest] = root.children;
      if (select?.type !== 'SelectWithUnionQuery' || !canonical.startsWith(`${root.text.trim()} `)) refuse('only EXPLAIN of a SELECT is allowed');
      for (const extra of rest) {
        if (extra.type === 'Identifier' && format === undefined) format = extra.text.trim();
        else refuse('EXPLAIN settings and INTO OUTFILE are not allowed');
      }
      if (selectFormat(select!) !== undefined) refuse('FORMAT belongs after the EXPLAIN');
      walk(select!.children[0]!, select);
      inner = canonical.slice(root.text.trim().length + 1);
      break;
    }
    case 'DescribeQuery': {
      kind = 'describe';
      format = formatOf(root.children.slice(1), 'DESCRIBE takes one table');
      walk(root.children[0]!, root);
      // Checked here, so an unknown one is refused too; the analyzer never sees a DESCRIBE.
      for (const name of named) checkTable(qualified(name));
      break;
    }
    case 'ExistsTableQuery':
    case 'ShowCreateTableQuery': {
      kind = root.type === 'ExistsTableQuery' ? 'exists' : 'show';
      // The node reads `<database> <table>`, with the database empty when the query names none,
      // and has an identifier child for each, then one for a FORMAT.
      const parts = root.text.startsWith(' ') ? 1 : 2;
      const names = root.children.slice(0, parts).map((node) => node.text);
      format = formatOf(root.children.slice(parts), 'EXISTS and SHOW CREATE take one table');
      checkTable(parts === 1 ? `default.${names[0]}` : names.join('.'));
      break;
    }
    case 'ShowTables':
      // The parser's tree of a SHOW leaves its WHERE and LIKE out, and a WHERE may hold a
      // subquery. So only the plain forms pass, matched whole against the engine's own
      // single-line text: names, a database, a LIKE pattern, a limit.
      if (!/^SHOW (?:FULL )?(?:TABLES|DATABASES)(?: FROM [A-Za-z_][A-Za-z0-9_]*)?(?: (?:NOT )?I?LIKE '[^'\\]*')?(?: LIMIT \d+)?$/.test(canonical)) {
        refuse('only SHOW TABLES and SHOW DATABASES, with FROM, LIKE and LIMIT, are allowed');
      }
      kind = 'show';
      break;
    default:
      refuse('only SELECT, EXPLAIN of a SELECT, DESCRIBE, EXISTS, SHOW TABLES and SHOW CREATE TABLE are allowed');
  }
  let sql = canonical;
  if (format !== undefined) {
    if (!/^[A-Za-z][A-Za-z0-9]*$/.test(format) || !canonical.endsWith(` FORMAT ${format}`)) refuse(`FORMAT ${format} is not an output format`);
    sql = canonical.slice(0, -` FORMAT ${format}`.length);
    if (kind === 'explain' && inner.endsWith(` FORMAT ${format}`)) inner = inner.slice(0, -` FORMAT ${format}`.length);
  }
  // The analyzer reads a DESCRIBE's subquery too.
  if (kind === 'select' || kind === 'explain' || kind === 'describe') await checkBeforeAnalysis(client, named, called, readable, signal);
  const settings = catalogueFilters(policy);
  if (kind === 'select' || kind === 'explain') {
    // The analyzer resolves CTEs, views and `IN table` to the tables they read; aliases are
    // renamed (__tableN), so no name a reader wrote stands in a table's place.
    // Under the reader's bounds: the analyzer runs the scalar subqueries of allowed tables.
    const bounded = analysis.settings === undefined ? settings : `${settings}, ${analysis.settings}`;
    const tree = await collect(client, `EXPLAIN QUERY TREE ${kind === 'select' ? sql : inner} SETTINGS ${bounded}`, params, 'TSVRaw', signal);
    for (const line of tree.split('\n')) {
      const trimmed = line.trimStart();
      if (trimmed.startsWith('TABLE_FUNCTION ')) refuse('table functions are not allowed');
      const table = /^TABLE id: \d+(?:, alias: __table\d+)?, table_name: (.+?)(?:, [a-z_]+: .*)?$/.exec(trimmed);
      if (table) checkTable(table[1]!);
      else if (trimmed.startsWith('TABLE ') && trimmed !== 'TABLE EXPRESSION') refuse('a table the engine named could not be read');
    }
  }
  return { kind, sql, format, settings };
}

/**
 * Refuses, before the analyzer reads anything, a query whose tree names an existing table
 * outside `readable` (a name with a dot both as `db.name` and as a name in `default`) or calls
 * a function outside the list by the engine's account: of a category in
 * `OUTSIDE_CATEGORIES`, an alias of one, or user-defined.
 */
async function checkBeforeAnalysis(client: ClickHouseClient, named: ReadonlySet<string>, called: ReadonlySet<string>, readable: (table: string) => boolean, signal: AbortSignal | undefined): Promise<void> {
  const tables = [...named].flatMap((name) => (name.includes('.') ? [name, `default.${name}`] : [`default.${name}`]));
  // Names as hex, both ways: a name may hold any character (a line break too), and a
  // parameter's text is unescaped twice.
  const found = await collect(
    client,
    `WITH arrayMap(x -> unhex(x), {tributary_tables:Array(String)}) AS tables, arrayMap(x -> unhex(x), {tributary_functions:Array(String)}) AS functions
     SELECT concat('table ', hex(concat(database, '.', name))) FROM system.tables WHERE has(tables, concat(database, '.', name))
     UNION ALL
     SELECT concat(if(origin = 'System', 'function ', 'user-defined function '), name) FROM system.functions
     WHERE has(functions, lower(name))
       AND (origin != 'System' OR categories IN {tributary_categories:Array(String)}
         OR alias_to IN (SELECT name FROM system.functions WHERE categories IN {tributary_categories:Array(String)} OR origin != 'System'))`,
    { tributary_tables: hexArray(tables), tributary_functions: hexArray([...called]), tributary_categories: `['${OUTSIDE_CATEGORIES.join("','")}']` },
    'TSVRaw',
    signal,
  );
  for (const line of found.split('\n')) {
    const table = line.startsWith('table ') ? Buffer.from(line.slice('table '.length), 'hex').toString('utf8') : undefined;
    if (table !== undefined && !readable(table)) refuse(`table ${table} is not among the tables this reader may query`);
    else if (line.startsWith('function ') || line.startsWith('user-defined function ')) refuse(`${line} is not allowed`);
  }
}

/**
 * The engine's `additional_table_filters` narrowing its catalogue to what `policy` lets a
 * reader read: a filter the engine applies to every read of the table it names, in
 * subqueries, views and SHOW TABLES too, before the query's own WHERE sees a row (which sees
 * the names of tables, never more: it runs on the names to choose which tables to list).
 * Its size is the policy's, not the catalogue's. Names as hex, in a string in a string.
 *
 * The engine also applies a filter to any table whose alias is the filter's table name
 * (`FROM system.columns AS "system.tables"`), so each filter names a column only its own
 * table has: given another table, it is an unknown identifier, never a pass.
 */
function catalogueFilters(policy: TablePolicy): string {
  const among = (names: Iterable<string>) => `(${[...names].map((name) => `'${Buffer.from(name).toString('hex').toUpperCase()}'`).join(', ')})`;
  const tables = [...policy.tables, ...METADATA_TABLES];
  const readable = (table: string) => `(hex(concat(database, '.', ${table})) IN ${among(tables)} OR hex(database) IN ${among(policy.databases)}) AND hex(concat(database, '.', ${table})) NOT IN ${among(policy.except)}`;
  const filters: Record<string, string> = {
    'system.tables': `isNotNull(create_table_query) AND ${readable('name')}`,
    'system.columns': `isNotNull(default_expression) AND ${readable('table')}`,
    'system.databases': `isNotNull(data_path) AND hex(name) IN ${among(new Set([...policy.databases, ...tables.map(databaseOf)]))}`,
    'system.functions': "isNotNull(is_aggregate) AND origin = 'System'",
  };
  return `additional_table_filters = {${Object.entries(filters)
    .map(([table, filter]) => `'${table}': '${filter.replace(/'/g, "\\'")}'`)
    .join(', ')}}`;
}

/** A query parameter of type Array(String): each value's UTF-8 bytes in hex. */
function hexArray(values: readonly string[]): string {
  return `[${values.map((value) => `'${Buffer.from(value).toString('hex')}'`).join(',')}]`;
}

/** A FORMAT clause, which the tree of a DESCRIBE, EXISTS or SHOW CREATE prints as an identifier after the table. */
function formatOf(rest: readonly AstNode[], shape: string): string | undefined {
  if (rest.length > 1 || (rest.length === 1 && rest[0]!.type !== 'Identifier')) refuse(shape);
  return rest[0]?.text;
}

function refuse(reason: string): never {
  throw new QueryRefusedError(reason);
}

/** The database of a `db.name`. */
function databaseOf(table: string): string {
  return table.slice(0, table.indexOf('.'));
}

/** `db.name` for a name written with or without its database. */
function qualified(name: string): string {
  return name.includes('.') ? name : `default.${name}`;
}

async function collect(client: ClickHouseClient, sql: string, params: Readonly<Record<string, string>>, format: string, signal?: AbortSignal): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of client.stream(sql, { format, params, signal })) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The tree `EXPLAIN AST` prints: one node a line, indented one space per level, with
 * `(children N)` on nodes that have any. Names are printed as written, so a name holding a
 * line break can add lines; a dump whose indents and counts do not agree exactly is refused
 * rather than guessed at. Added lines can only add nodes, which are checked like any other.
 */
export function parseAstDump(dump: string): AstNode {
  const unreadable = () => new QueryRefusedError('the engine parsed the query into a tree that could not be read');
  const lines = dump.replace(/\n+$/, '').split('\n');
  let next = 0;
  const read = (depth: number): AstNode => {
    const line = lines[next++];
    if (line === undefined) throw unreadable();
    const indent = line.length - line.trimStart().length;
    if (indent !== depth) throw unreadable();
    const counted = / \(children (\d+)\)$/.exec(line);
    const body = (counted ? line.slice(0, counted.index) : line).slice(indent);
    const space = body.indexOf(' ');
    const node: AstNode = { type: space < 0 ? body : body.slice(0, space), text: space < 0 ? '' : body.slice(space + 1), children: [] };
    for (let i = 0; i < Number(counted?.[1] ?? 0); i++) node.children.push(read(depth + 1));
    return node;
  };
  const root = read(0);
  if (next !== lines.length) throw unreadable();
  return root;
}
