import { expect } from 'chai';
import { decimalKey, unquoted } from '../../../connectors/clickhouse/sink';

/** What a ClickHouse server before 20.1 is sent: decimal columns' string values as bare numbers, nothing else touched. */
describe('ClickHouse sink: decimals for old servers', () => {
  const row = (value: Record<string, unknown>) => JSON.stringify(value);
  const keys = (...columns: string[]) => columns.map(decimalKey);

  it('writes a decimal column’s text bare, digit for digit, wherever the column comes', () => {
    expect(unquoted(row({ amount: '12345678901234.5678', id: 1 }), keys('amount'))).to.equal('{"amount":12345678901234.5678,"id":1}');
    expect(unquoted(row({ id: 1, amount: '-0.0001' }), keys('amount'))).to.equal('{"id":1,"amount":-0.0001}');
    expect(unquoted(row({ id: 1, amount: '12.50', fee: '3' }), keys('fee', 'amount'))).to.equal('{"id":1,"amount":12.50,"fee":3}');
  });

  it('leaves a longer key that ends in the column’s name alone, and a column whose name ends another’s', () => {
    const text = row({ net_amount: '5.5', amount: '7.25', xamount: '1' });
    expect(unquoted(text, keys('amount'))).to.equal('{"net_amount":"5.5","amount":7.25,"xamount":"1"}');
    expect(unquoted(text, keys('amount', 'net_amount'))).to.equal('{"net_amount":5.5,"amount":7.25,"xamount":"1"}');
  });

  it('leaves look-alike text inside strings and keys alone', () => {
    const inName = row({ name: '"amount":"99"', amount: '7.1234' });
    expect(unquoted(inName, keys('amount'))).to.equal('{"name":"\\"amount\\":\\"99\\"","amount":7.1234}');
    const inKey = row({ 'x"amount': '5', 'a,"amount': '6', ',xamount': '7', amount: '1.5' });
    expect(unquoted(inKey, keys('amount'))).to.equal(`{"x\\"amount":"5","a,\\"amount":"6",",xamount":"7","amount":1.5}`);
    expect(unquoted(row({ note: 'amount":"1' }), keys('amount'))).to.equal(row({ note: 'amount":"1' }));
  });

  it('leaves a value that is not plain decimal text quoted, for the server to refuse as that row’s fault', () => {
    for (const value of ['', '1.', '.5', '1e3', '+1', '1.2.3', '12 ', '٣', '1\\"', 'NaN']) {
      const text = row({ amount: value });
      expect(unquoted(text, keys('amount')), value).to.equal(text);
    }
  });

  it('finds a column whose name JSON escapes, as JSON.stringify writes its key', () => {
    const column = 'tötal "gross"\\';
    expect(unquoted(row({ [column]: '3.14' }), keys(column))).to.equal(`{${JSON.stringify(column)}:3.14}`);
  });

  it('returns the row itself when there is nothing to unquote', () => {
    const text = row({ id: 1, amount: 2 });
    expect(unquoted(text, keys('amount'))).to.equal(text);
    expect(unquoted(text, keys('total'))).to.equal(text);
  });
});
