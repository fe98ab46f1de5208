import { expect } from 'chai';

/** Each test loads the package in a child process of its own, to see which modules a fresh require pulls in. */
describe('loading tributary', () => {
  it('does not load the Redis client until a Redis store is made', () => {
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    const index = require.resolve('../../../index');
    const script = `require(${JSON.stringify(index)}); const loaded = () => Object.keys(require.cache).some((k) => k.includes('ioredis'));
      const before = loaded(); require(${JSON.stringify(index)}).redisDedupeStore({ url: 'redis://127.0.0.1:1', redis: { lazyConnect: true } }).close();
      console.log(JSON.stringify([before, loaded()]));`;
    expect(JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }))).to.deep.equal([false, true]);
  });

  it('by its package name: the main entry loads no heavy client, and every exports subpath resolves', () => {
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    const { existsSync, mkdtempSync, rmSync } = require('node:fs') as typeof import('node:fs');
    const { join } = require('node:path') as typeof import('node:path');
    const { tmpdir } = require('node:os') as typeof import('node:os');
    const root = join(__dirname, '..', '..', '..', '..');
    const store = mkdtempSync(join(tmpdir(), 'tributary-lazy-'));
    // Run from the package root, so `require('tributary…')` goes through package.json's exports.
    const script = `
      const heavy = ['chdb', 'kafkajs', '@clickhouse/client', 'ioredis'];
      const loaded = () => heavy.filter((name) => Object.keys(require.cache).some((file) => file.includes('/node_modules/' + name + '/')));
      const main = require('tributary');
      const afterMain = loaded();
      const subpaths = {};
      for (const subpath of Object.keys(require('tributary/package.json').exports)) {
        const specifier = 'tributary' + subpath.slice(1);
        subpaths[subpath] = { file: require.resolve(specifier), names: Object.keys(require(specifier)).length };
      }
      const afterSubpaths = loaded();
      // The same check sees a client once it is used.
      main.serverClickHouse({ url: 'http://127.0.0.1:1' });
      main.embeddedClickHouse({ path: ${JSON.stringify(store)} }).exec('SELECT 1').then(() => {
        console.log(JSON.stringify({ afterMain, afterSubpaths, subpaths, afterUse: loaded() }));
        process.exit(0);
      });`;
    try {
      const result = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' })) as {
        afterMain: string[];
        afterSubpaths: string[];
        subpaths: Record<string, { file: string; names: number }>;
        afterUse: string[];
      };
      expect(result.afterMain).to.deep.equal([]);
      expect(result.afterSubpaths).to.deep.equal([]);
      expect(result.afterUse).to.deep.equal(['chdb', '@clickhouse/client']);
      const exportsMap = (require(join(root, 'package.json')) as { exports: Record<string, string | { types: string; default: string }> }).exports;
      expect(Object.keys(result.subpaths)).to.deep.equal(Object.keys(exportsMap));
      for (const [subpath, target] of Object.entries(exportsMap)) {
        const { file, names } = result.subpaths[subpath]!;
        const declared = typeof target === 'string' ? target : target.default;
        expect(file, subpath).to.equal(join(root, declared));
        expect(names, subpath).to.be.greaterThan(0);
        if (typeof target !== 'string') expect(existsSync(join(root, target.types)), `${subpath} types`).to.equal(true);
      }
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  });
  it('names the package when a client library is not installed, and what needs it', () => {
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    const { join } = require('node:path') as typeof import('node:path');
    const root = join(__dirname, '..', '..', '..', '..');
    // The three client libraries made unresolvable, as in an install that left them out.
    const script = `
      const Module = require('node:module');
      const resolve = Module._resolveFilename;
      const absent = ['kafkajs', 'ioredis', '@clickhouse/client'];
      Module._resolveFilename = function (request, ...rest) {
        if (absent.includes(request)) { const error = new Error("Cannot find module '" + request + "'"); error.code = 'MODULE_NOT_FOUND'; throw error; }
        return resolve.call(this, request, ...rest);
      };
      const messages = [];
      const attempt = async (f) => { try { await f(); messages.push('no error'); } catch (error) { messages.push(error.name + ': ' + error.message); } };
      (async () => {
        await attempt(() => require('tributary').serverClickHouse({ url: 'http://127.0.0.1:1' }));
        await attempt(() => require('tributary/kafka').toKafka({ brokers: ['127.0.0.1:1'], topic: 't' }).open());
        await attempt(() => new Promise((ok, ko) => require('tributary/kafka').fromKafka({ brokers: ['127.0.0.1:1'], groupId: 'g', topics: 't' }).open({}).subscribe({ error: ko, complete: ok })));
        await attempt(() => require('tributary').redisDedupeStore({ url: 'redis://127.0.0.1:1' }));
        // A module the package itself fails to find is not mistaken for the package missing.
        const fs = require('node:fs'), os = require('node:os'), path = require('node:path');
        const installed = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-pkg-')), 'index.js');
        fs.writeFileSync(installed, "require('no-such-inner-module');");
        await attempt(() => require(${JSON.stringify(join(root, 'dist', 'lib', 'packages.js'))}).loadPackage(installed, 'a test'));
        fs.rmSync(path.dirname(installed), { recursive: true });
        console.log(JSON.stringify(messages));
      })();`;
    const messages = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' })) as string[];
    expect(messages.slice(0, 4)).to.deep.equal([
      'ConfigError: serverClickHouse: the @clickhouse/client package is not installed (npm install @clickhouse/client)',
      'ConfigError: toKafka: the kafkajs package is not installed (npm install kafkajs)',
      'ConfigError: Kafka (fromKafka, toKafka): the kafkajs package is not installed (npm install kafkajs)',
      'ConfigError: redisDedupeStore: the ioredis package is not installed (npm install ioredis)',
    ]);
    expect(messages[4]).to.match(/^Error: Cannot find module 'no-such-inner-module'/);
  });
});
