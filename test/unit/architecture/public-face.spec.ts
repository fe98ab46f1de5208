import { expect } from 'chai';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..', '..');
const names = (file: string): string[] => Object.keys(require(join(ROOT, file)) as object).sort();

/**
 * The package root stays small: the runtime, the operators, pushdown and the store. A
 * connector or the security wing re-exported from the root would load with every import
 * of it and grow the surface users must learn; they come from their subpaths only.
 */
describe('the public face', () => {
  const root = names('index.js');

  for (const subpath of ['files', 'kafka', 'webhook', 'poll', 'redis']) {
    it(`tributary/${subpath} is a subpath only: none of its names is in the root`, () => {
      const own = names(`connectors/${subpath}/index.js`);
      expect(own).to.not.be.empty;
      expect(own.filter((name) => root.includes(name))).to.deep.equal([]);
    });
  }

  it('tributary/security is a subpath only', () => {
    const own = names('lib/security/index.js');
    expect(own).to.include.members(['AccessControl', 'Keyring', 'SubjectKeys', 'AuditLog']);
    expect(own.filter((name) => root.includes(name))).to.deep.equal([]);
  });

  it('the root holds the pipeline, the operators with recordOperator, pushdown and the store', () => {
    expect(root).to.include.members([
      'Pipeline', 'fanOut', 'batch', 'retry', 'serveMetrics',
      'parse', 'normalize', 'validate', 'encrypt', 'decrypt', 'tokenize', 'mask', 'dedupe', 'recordOperator',
      'planPushdown', 'bulkImport',
      'embeddedClickHouse', 'serverClickHouse', 'toClickHouse', 'migrate', 'serveQueries',
      'fromIterable',
    ]);
  });

  it('every subpath the root leaves out is declared in package.json exports', () => {
    const exportsMap = (require(join(ROOT, '..', 'package.json')) as { exports: Record<string, unknown> }).exports;
    for (const subpath of ['./files', './kafka', './webhook', './poll', './redis', './security', './clickhouse', './iterable']) {
      expect(exportsMap, subpath).to.have.property(subpath);
    }
  });
});
