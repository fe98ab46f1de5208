import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';

/**
 * The layering rule of docs/architecture.md, read from the sources' imports (type imports
 * included): `lib/` imports only `lib/`; `formats/` (bytes to records) only `lib/`;
 * operators and connectors build on both and never on another connector; a connector does
 * not import an operator, nor an operator a connector; `pushdown/` builds on operators and
 * connectors, and only the package root and the CLI import it. KNOWN holds the imports that break
 * the rule today, each to be removed by moving code, never added to: a new one fails this
 * test, and so does one that is gone but still listed.
 */
const ROOT = join(__dirname, '..', '..', '..', '..');
const LIBRARY = ['lib', 'formats', 'operators', 'connectors', 'pushdown', 'cli', 'cli.ts', 'index.ts'];

const KNOWN: readonly string[] = [];

/** The layer a file belongs to: `lib`, `operators`, `connectors/<name>`, or another top-level name. */
function layerOf(path: string): string {
  const parts = path.split('/');
  return parts[0] === 'connectors' && parts.length >= 2 ? `connectors/${parts[1]}` : parts[0]!.replace(/\.ts$/, '');
}

/** Whether `from` may import `to` under the rule. */
function allowed(from: string, to: string): boolean {
  if (from === to) return true;
  if (to === 'lib') return true;
  if (from === 'lib') return false;
  if (to === 'formats') return true;
  if (from === 'formats') return false;
  // The package root and the CLI sit on top of everything; the booking example is
  // published with them (tributary/bookings).
  if (from === 'index' || from === 'cli') return to !== 'test' && to !== 'bench';
  // Pushdown runs a mapping and a schema (operators) in the store (connectors).
  if (from === 'pushdown') return to === 'operators' || to.startsWith('connectors/');
  if (to === 'operators') return !from.startsWith('connectors/');
  if (to.startsWith('connectors/')) return !from.startsWith('connectors/') && from !== 'operators';
  return false;
}

function sources(path: string): string[] {
  const full = join(ROOT, path);
  if (!statSync(full).isDirectory()) return [path];
  return readdirSync(full).flatMap((name) => (name.endsWith('.d.ts') ? [] : name.endsWith('.ts') || statSync(join(full, name)).isDirectory() ? sources(join(path, name)) : []));
}

/** Relative module specifiers a source names: import/export … from, side-effect imports, import() and require(). */
export function specifiersOf(text: string): string[] {
  const found: string[] = [];
  const patterns = [/\b(?:import|export)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\b(?:import|require)\s*\(\s*['"]([^'"]+)['"]\s*\)/g];
  for (const pattern of patterns) for (const match of text.matchAll(pattern)) found.push(match[1]!);
  return found.filter((spec) => spec.startsWith('.'));
}

function crossings(): string[] {
  const found = new Set<string>();
  for (const file of LIBRARY.flatMap(sources)) {
    for (const spec of specifiersOf(readFileSync(join(ROOT, file), 'utf8'))) {
      const target = normalize(join(dirname(file), spec)).split('\\').join('/');
      if (!allowed(layerOf(file), layerOf(target))) found.add(`${file} -> ${target}`);
    }
  }
  return [...found].sort();
}

describe('architecture: the layering rule of docs/architecture.md', () => {
  it('reads every form of import', () => {
    const text = "import a from './a';\nimport type { B } from '../b';\nexport { c } from './c';\nexport * from \"./d\";\nimport './e';\nconst f = require('./f');\nconst g = await import('./g');\nimport { x } from 'rxjs';\nimport {\n  y,\n  z,\n} from './h';";
    expect(specifiersOf(text).sort()).to.deep.equal(['../b', './a', './c', './d', './e', './f', './g', './h']);
  });

  it('holds for every import of the library, but the known ones being moved out', () => {
    const found = crossings();
    expect(found.filter((c) => !KNOWN.includes(c)), 'imports that break the layering rule').to.deep.equal([]);
    expect(KNOWN.filter((c) => !found.includes(c)), 'listed exceptions that no longer exist: remove them from KNOWN').to.deep.equal([]);
  });

  it('catches an import that breaks it', () => {
    expect(allowed('lib', 'operators')).to.equal(false);
    expect(allowed('connectors/redis', 'connectors/clickhouse')).to.equal(false);
    expect(allowed('operators', 'connectors/files')).to.equal(false);
    expect(allowed('connectors/kafka', 'operators')).to.equal(false);
    expect(allowed('operators', 'lib')).to.equal(true);
    expect(allowed('connectors/webhook', 'formats')).to.equal(true);
    expect(allowed('formats', 'operators')).to.equal(false);
    expect(allowed('lib', 'formats')).to.equal(false);
    expect(allowed('cli', 'connectors/clickhouse')).to.equal(true);
    expect(allowed('operators', 'examples')).to.equal(false);
    expect(allowed('cli', 'test')).to.equal(false);
    expect(allowed('pushdown', 'connectors/clickhouse')).to.equal(true);
    expect(allowed('pushdown', 'operators')).to.equal(true);
    expect(allowed('operators', 'pushdown')).to.equal(false);
    expect(allowed('connectors/files', 'pushdown')).to.equal(false);
    expect(allowed('pushdown', 'examples')).to.equal(false);
  });
});
