import { expect } from 'chai';
import { quoteIdentifier } from '../../../lib/store';
import { testClickHouse } from '../../helpers';

/** The store's identifier quoting, used for every table and column name spliced into SQL. */
describe('quoteIdentifier', function () {
  this.timeout(120_000);

  it('quotes each part of a dotted name, escaping backslashes and backticks', () => {
    expect(quoteIdentifier('events')).to.equal('`events`');
    expect(quoteIdentifier('db.events')).to.equal('`db`.`events`');
    expect(quoteIdentifier('we`ird\\name')).to.equal('`we\\`ird\\\\name`');
    expect(quoteIdentifier('a`.b\\')).to.equal('`a\\``.`b\\\\`');
  });

  it('names exactly the table it was given to ClickHouse, whatever its characters', async () => {
    const client = testClickHouse();
    const name = 'quoted `table\\ with, spaces';
    await client.exec(`DROP TABLE IF EXISTS ${quoteIdentifier(name)}`);
    await client.exec(`CREATE TABLE ${quoteIdentifier(`default.${name}`)} (${quoteIdentifier('a `column')} UInt8) ENGINE = MergeTree ORDER BY tuple()`);
    try {
      await client.exec(`INSERT INTO ${quoteIdentifier(name)} SELECT 7`);
      const tables = await client.query<{ name: string }>(`SELECT name FROM system.tables WHERE database = 'default' AND name LIKE 'quoted%'`);
      expect(tables.map((t) => t.name)).to.deep.equal([name]);
      const rows = await client.query<Record<string, number>>(`SELECT ${quoteIdentifier('a `column')} FROM ${quoteIdentifier(name)}`);
      expect(rows).to.deep.equal([{ 'a `column': 7 }]);
    } finally {
      await client.exec(`DROP TABLE IF EXISTS ${quoteIdentifier(name)}`);
    }
  });
});
