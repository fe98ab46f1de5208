import { expect } from 'chai';
import { ConfigError } from '../../../lib/errors';
import { loadPackage } from '../../../lib/packages';
import { scratchDir } from '../../helpers';

describe('loadPackage', () => {
  const dir = scratchDir();

  it('loads an installed package', () => {
    expect(loadPackage<typeof import('node:path')>('node:path', 'test').join('a', 'b')).to.equal('a/b');
  });

  it('names the package and what needs it when it is not installed', () => {
    expect(() => loadPackage('tributary-absent-package', 'toSomething')).to.throw(ConfigError, 'toSomething: the tributary-absent-package package is not installed (npm install tributary-absent-package)');
  });

  it('throws any other failure to load it as it is: a missing module of its own, an error of its own', () => {
    const brokenDependency = dir.file('broken-dependency.js', "require('tributary-absent-dependency');");
    expect(() => loadPackage(brokenDependency, 'test')).to.throw(Error, "Cannot find module 'tributary-absent-dependency'").with.property('code', 'MODULE_NOT_FOUND');
    // Its message looks like the package missing, but it is not a resolution failure.
    const throwing = dir.file('throwing.js', 'throw new Error(`Cannot find module \'${__filename}\'`);');
    expect(() => loadPackage(throwing, 'test'))
      .to.throw(Error, `Cannot find module '${throwing}'`)
      .that.is.not.instanceOf(ConfigError);
  });
});
