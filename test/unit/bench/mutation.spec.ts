import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileResults, hasCode, mutationMarkdown, rangesOf, scopeFiles, type MutationSummary } from '../../../bench/mutation';

/** The compiled JavaScript of a project file, as tsc wrote it next to this spec's own. */
const compiled = (file: string) => readFileSync(join(__dirname, '../../..', file.replace(/\.ts$/, '.js')), 'utf8');

describe('bench mutation record', () => {
  it('tells a module of types and re-exports from one with code, by what tsc compiled it to', () => {
    for (const file of ['lib/sink.ts', 'lib/source.ts', 'lib/security/index.ts']) expect(hasCode(compiled(file)), file).to.equal(false);
    for (const file of ['lib/retry.ts', 'lib/limits.ts', 'formats/csv.ts']) expect(hasCode(compiled(file)), file).to.equal(true);
  });

  it('counts as no code the helpers and star re-exports tsc writes for `export *`, and as code any statement beside them', () => {
    const starExports = [
      '"use strict";',
      'var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {',
      '    if (k2 === undefined) k2 = k;',
      '    Object.defineProperty(o, k2, { enumerable: true, get: function() { return m[k]; } });',
      '}) : (function(o, m, k, k2) {',
      '    o[k2] = m[k];',
      '}));',
      'var __exportStar = (this && this.__exportStar) || function(m, exports) {',
      '    for (var p in m) if (p !== "default" && !Object.prototype.hasOwnProperty.call(exports, p)) __createBinding(exports, m, p);',
      '};',
      'Object.defineProperty(exports, "__esModule", { value: true });',
      '// Everything the parts export.',
      '__exportStar(require("./a"), exports);',
      '//# sourceMappingURL=index.js.map',
    ].join('\n');
    expect(hasCode(starExports)).to.equal(false);
    expect(hasCode(`${starExports}\nexports.LIMIT = 10;`)).to.equal(true);
    expect(hasCode('"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nexports.f = void 0;\nfunction f() { return 1; }\nexports.f = f;')).to.equal(true);
    // A getter that computes instead of handing on a required module's export.
    expect(hasCode('"use strict";\nvar a_1 = require("./a");\nObject.defineProperty(exports, "A", { enumerable: true, get: function () { return a_1.A + 1; } });')).to.equal(true);
  });

  it('lists the files of the scope with no code apart from those not run yet', () => {
    const scope = scopeFiles();
    const ran = scope.filter((f) => !['lib/sink.ts', 'lib/source.ts', 'lib/security/index.ts', 'lib/retry.ts'].includes(f));
    const summary: MutationSummary = {
      machine: { cpus: 'Test CPU', cores: 2, memGb: 4, node: 'v20.0.0', platform: 'linux-x64' },
      files: ran.map((file) => ({ file, date: '2026-12-04T09:00:00.000Z', commit: 'abc1234', score: 100, counts: { Killed: 1 }, survivors: [] })),
    };
    const lines = mutationMarkdown(summary);
    expect(lines).to.include('No code to mutate (types and re-exports only): lib/security/index.ts, lib/sink.ts, lib/source.ts.');
    expect(lines).to.include('Not run yet: lib/retry.ts.');
    const all = mutationMarkdown({ ...summary, files: [...summary.files, { ...summary.files[0]!, file: 'lib/retry.ts' }] });
    expect(all).to.include('Every file in scope with code has been run.');
    expect(all.join('\n')).to.not.include('Not run yet');
  });

  it('records the line ranges a run named for a file, and shows such a file beside the scope, not in it', () => {
    const ranges = rangesOf(['--concurrency', '2', '--mutate', 'connectors/redis/cache.ts:1274-1370,lib/retry.ts,connectors/redis/cache.ts:1403-1451']);
    expect([...ranges]).to.deep.equal([['connectors/redis/cache.ts', '1274-1370, 1403-1451']]);
    expect([...rangesOf(['--mutate=lib/x.ts:7'])]).to.deep.equal([['lib/x.ts', '7']]);
    const report = { files: { 'connectors/redis/cache.ts': { mutants: [{ mutatorName: 'BooleanLiteral', replacement: 'true', status: 'Survived', location: { start: { line: 1300 } } }, { mutatorName: 'BooleanLiteral', replacement: 'false', status: 'Killed', location: { start: { line: 1301 } } }] }, 'lib/retry.ts': { mutants: [] } } };
    const [cache, retry] = fileResults(report, '2026-12-07T17:00:00.000Z', 'abc1234', ranges);
    expect(cache).to.deep.include({ score: 50, lines: '1274-1370, 1403-1451' });
    expect(retry).to.not.have.property('lines');
    const scope = scopeFiles();
    const summary: MutationSummary = {
      machine: { cpus: 'Test CPU', cores: 2, memGb: 4, node: 'v20.0.0', platform: 'linux-x64' },
      files: [...scope.map((file) => ({ file, date: '2026-12-04T09:00:00.000Z', commit: 'abc1234', score: 100, counts: { Killed: 1 }, survivors: [] })), cache!],
    };
    const text = mutationMarkdown(summary).join('\n');
    expect(text).to.contain(`over ${scope.length} of the ${scope.length} files in scope and connectors/redis/cache.ts (lines 1274-1370, 1403-1451) beyond it;`);
    expect(text).to.contain('| connectors/redis/cache.ts (lines 1274-1370, 1403-1451) | 50% | 2 | 1 | ');
  });
});
