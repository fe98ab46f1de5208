import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { specifiersOf } from './layers.spec';

/**
 * The test layout of docs/architecture.md, read from the test sources: every spec is in
 * test/unit/ or test/integration/, and a unit spec (or a helper beside it) starts no child
 * process and reaches no outside service: it imports neither `child_process` nor the
 * helpers that start services or processes, nor anything under test/integration/.
 */
const TEST = join(__dirname, '..', '..', '..', '..', 'test');

/** Helpers (paths under test/, without .ts) that reach a service or start a child process. */
const STARTS_SOMETHING = ['services', 'kafka', 'clickhouseServer', 'conformance/source', 'conformance/source-child'];

function tests(dir = ''): string[] {
  return readdirSync(join(TEST, dir)).flatMap((name) => {
    const path = dir === '' ? name : `${dir}/${name}`;
    if (path === 'fixtures') return [];
    if (statSync(join(TEST, path)).isDirectory()) return tests(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

/** What a unit test file does against the rule, or nothing. */
export function unitBreaches(path: string, text: string): string[] {
  const found: string[] = [];
  if (/['"](?:node:)?child_process['"]/.test(text)) found.push(`${path} uses child_process`);
  if (/\breadInChild\b/.test(text)) found.push(`${path} reads files in a child process (readInChild)`);
  for (const spec of specifiersOf(text)) {
    const target = normalize(join(dirname(path), spec)).split('\\').join('/').replace(/\.(?:js|ts)$/, '');
    if (STARTS_SOMETHING.includes(target)) found.push(`${path} imports test/${target}, which needs a service or a child process`);
    if (target.startsWith('integration/')) found.push(`${path} imports test/${target}`);
  }
  return found;
}

describe('architecture: the test layout of docs/architecture.md', () => {
  it('keeps every spec in test/unit or test/integration', () => {
    const astray = tests().filter((path) => path.endsWith('.spec.ts') && !path.startsWith('unit/') && !path.startsWith('integration/'));
    expect(astray).to.deep.equal([]);
    expect(tests().filter((path) => path.startsWith('unit/') && path.endsWith('.spec.ts')).length).to.be.greaterThan(30);
  });

  it('a unit test starts no child process and reaches no outside service', () => {
    const breaches = tests()
      // This file names what it looks for in its own examples.
      .filter((path) => path.startsWith('unit/') && path !== 'unit/architecture/test-layout.spec.ts')
      .flatMap((path) => unitBreaches(path, readFileSync(join(TEST, path), 'utf8')));
    expect(breaches).to.deep.equal([]);
  });

  it('tells a breach when it sees one', () => {
    expect(unitBreaches('unit/x/a.spec.ts', "import { spawn } from 'node:child_process';")).to.have.length(1);
    expect(unitBreaches('unit/x/a.spec.ts', "const { execFileSync } = require('child_process');")).to.have.length(1);
    expect(unitBreaches('unit/x/a.spec.ts', "import { ensureKafka } from '../../services';")).to.deep.equal(['unit/x/a.spec.ts imports test/services, which needs a service or a child process']);
    expect(unitBreaches('unit/x/a.spec.ts', "import { runSource } from '../../conformance/source';")).to.have.length(1);
    expect(unitBreaches('unit/x/a.spec.ts', "import { BIN } from '../../integration/cli/run';")).to.have.length(1);
    expect(unitBreaches('unit/x/a.spec.ts', "import { Recorder } from '../../helpers';")).to.deep.equal([]);
  });
});
