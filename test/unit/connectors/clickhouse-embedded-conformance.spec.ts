import { clickhouseSinkConformance } from '../../conformance/clickhouse-sink';
import { testClickHouse } from '../../helpers';

describe('embedded ClickHouse (chDB) conformance', function () {
  this.timeout(120_000);
  clickhouseSinkConformance(testClickHouse);
});
