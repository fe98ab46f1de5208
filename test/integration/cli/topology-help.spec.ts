import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(__dirname, '..', '..', '..', '..');
const sources = join(root, 'examples', 'kafka-topology');
const built = join(__dirname, '..', '..', '..', 'examples', 'kafka-topology');
const STAGES = ['ingest', 'normalize', 'store'] as const;
const CONSUMER_FLAGS = ['--until-idle', '--session-timeout-ms', '--heartbeat-interval-ms', '--rebalance-timeout-ms'];

const flagsIn = (text: string) => new Set([...text.matchAll(/(?<![\w-])--[a-z][a-z-]+/g)].map((m) => m[0]));
/** The flags of a help's option list (the text after it may name flags of other stages). */
const optionsIn = (help: string) => flagsIn(help.slice(help.indexOf('Options:'), help.indexOf('\n\n', help.indexOf('Options:'))));

describe('examples/kafka-topology command lines', function () {
  this.timeout(60_000);

  it("each stage's --help lists every option and environment variable its code reads, and the README's topology section lists the same options", async () => {
    const code = ['topology.ts', ...STAGES.map((s) => `${s}.ts`)].map((f) => readFileSync(join(sources, f), 'utf8')).join('\n');
    // The command line is read only by commander (parse), from the options declared.
    expect(code, 'process.argv read outside commander').not.to.match(/process\.argv\s*[.[]/);
    const declared = new Set([...code.matchAll(/new Option\('(--[a-z][a-z-]+)/g)].map((m) => m[1]!));
    const environment = new Set([...code.matchAll(/process\.env\.([A-Z_]+)|\.env\('([A-Z_]+)'\)/g)].map((m) => (m[1] ?? m[2])!));
    expect(declared.size).to.be.greaterThan(10);

    const helps = new Map<string, string>();
    for (const stage of STAGES) {
      const { stdout } = await run(process.execPath, [join(built, `${stage}.js`), '--help']);
      helps.set(stage, stdout);
    }
    const shown = new Set([...helps.values()].flatMap((h) => [...optionsIn(h)]));
    expect([...declared].filter((f) => !shown.has(f)), 'declared but not in any --help').to.deep.equal([]);
    expect([...shown].filter((f) => !declared.has(f) && f !== '--help'), 'in --help but never declared').to.deep.equal([]);
    for (const name of environment) expect([...helps.values()].some((h) => h.includes(name)), `${name} named in --help`).to.equal(true);
    for (const stage of ['normalize', 'store']) for (const flag of CONSUMER_FLAGS) expect(optionsIn(helps.get(stage)!).has(flag), `${stage} --help: ${flag}`).to.equal(true);
    for (const flag of CONSUMER_FLAGS) expect(optionsIn(helps.get('ingest')!).has(flag), `ingest takes no ${flag}`).to.equal(false);
    expect(optionsIn(helps.get('store')!).has('--clickhouse-path')).to.equal(true);

    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('**A topology of processes**'), readme.indexOf('\n## ', readme.indexOf('**A topology of processes**')));
    expect([...declared].filter((f) => !section.includes(`\`${f}\``)), 'options missing from the README').to.deep.equal([]);
    for (const name of environment) expect(section, `${name} in the README`).to.include(name.startsWith('TOPOLOGY_METRICS_') ? 'TOPOLOGY_METRICS_' : name);
  });

  it('refuses a bad value with exit code 2 and the rule', async () => {
    for (const args of [['--partitions', '0'], ['--session-timeout-ms', '5000', '--heartbeat-interval-ms', '5000'], ['--prefix', 'a b']]) {
      const failed = await run(process.execPath, [join(built, 'normalize.js'), ...args]).then(
        () => expect.fail(`${args.join(' ')} was accepted`),
        (error: { code: number; stderr: string }) => error,
      );
      expect(failed.code, args.join(' ')).to.equal(2);
      expect(failed.stderr).to.match(/^error: /m);
    }
  });
});
