import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { scratchDir } from '../../helpers';

const CONNECTOR = join(__dirname, '../../../connectors/clickhouse');

/**
 * Opens an embedded store at `store` in a process of its own (the engine is configured once
 * a process) whose working directory is `cwd`; the merge tree settings the engine reports.
 */
async function settingsIn(cwd: string, store: string): Promise<Record<string, string>> {
  const script = `
    const { embeddedClickHouse } = require(${JSON.stringify(CONNECTOR)});
    const clickhouse = embeddedClickHouse({ path: process.argv[1] });
    clickhouse.query("SELECT name, value FROM system.merge_tree_settings WHERE name IN ('concurrent_part_removal_threshold', 'parts_to_throw_insert')")
      .then((rows) => { process.stdout.write(JSON.stringify(Object.fromEntries(rows.map((r) => [r.name, r.value])))); return clickhouse.close(); })
      .catch((error) => { process.stderr.write(String(error && error.message)); process.exitCode = 1; });
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script, store], { cwd });
  return JSON.parse(stdout) as Record<string, string>;
}

describe('embedded ClickHouse configuration', function () {
  this.timeout(120_000);
  const work = scratchDir();

  it('removes merged-away parts from the cleanup thread, not a pool of removal threads', async () => {
    const settings = await settingsIn(work.path, join(work.path, 'store'));
    expect(settings).to.deep.equal({ concurrent_part_removal_threshold: '1000000000', parts_to_throw_insert: '3000' });
  });

  it("is not configured by a config.xml in the process's working directory", async () => {
    const cwd = join(work.path, 'service');
    mkdirSync(cwd);
    // A ClickHouse configuration of someone else's: the engine would take it as its own.
    work.file('service/config.xml', '<clickhouse><merge_tree><parts_to_throw_insert>1</parts_to_throw_insert><concurrent_part_removal_threshold>7</concurrent_part_removal_threshold></merge_tree></clickhouse>\n');
    // A store path with a space, '=' and quotes: given to the engine as one argument.
    const store = join(work.path, `store dir=1 "a" 'b'`);
    expect(await settingsIn(cwd, store)).to.deep.equal({ concurrent_part_removal_threshold: '1000000000', parts_to_throw_insert: '3000' });
    // Not XML at all (a file of another tool's): the engine would not open.
    work.file('service/config.xml', '<project><modelVersion>4.0.0</modelVersion>\n');
    expect(await settingsIn(cwd, store)).to.deep.equal({ concurrent_part_removal_threshold: '1000000000', parts_to_throw_insert: '3000' });
  });
});
