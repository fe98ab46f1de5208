/**
 * Pushdown: a vendor mapping (`normalize`) and a JSON Schema (`validate`) run by the
 * ClickHouse engine as SQL instead of record by record in JS.
 *
 * The engine only ever stores a record the JS path would store, with the same values: its
 * SQL states, per record, whether it is *sure* of that (`accepted`). Every other record
 * goes through the JS path, which stores it or dead-letters it exactly as it would have
 * without pushdown. So dead letters are the JS path's own, by construction, and the SQL may
 * be conservative (refuse what it cannot decide) but never lenient.
 */

/** What a plan reads: one raw record per row, in a `String` column named `line`. */
export type PushdownInput = 'ndjson';

/** The SQL a bulk import runs, or why it cannot. */
export type PushdownPlan =
  | {
      readonly pushable: true;
      readonly input: PushdownInput;
      /** Output column → SQL expression over `line` giving the value the JS path stores. */
      readonly columns: ReadonlyArray<{ readonly name: string; readonly sql: string }>;
      /** SQL boolean over `line`: 1 only when the JS path would store this record with exactly `columns`' values. */
      readonly accepted: string;
      /**
       * The parts of `accepted` (it is their AND), each named after the rule it stands for
       * (`line`, `fields.total_amount`, `checks[0]`, `schema.properties.currency`,
       * `columns.passengers`): to explain why a record was left to the JS path.
       */
      readonly conditions?: ReadonlyArray<{ readonly name: string; readonly sql: string }>;
      /**
       * `tuple(accepted, <columns in order>)` as one expression over `line`, its shared parts
       * computed once for all: `SELECT r.2, r.3, … FROM (SELECT <row> AS r FROM …) WHERE r.1`
       * does the work of `columns` and `accepted` without repeating it per column.
       */
      readonly row?: string;
    }
  | {
      readonly pushable: false;
      /** Each reason, naming the rule or keyword (`mappings.skyway.fields.product: compute is a JS function`). */
      readonly reasons: readonly string[];
    };
