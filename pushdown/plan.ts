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
       * One `SELECT` doing the work of `columns` and `accepted` with their shared parts
       * computed once per line, each a column of a nested subquery (its level: the parts it
       * uses are columns of the subqueries below). It reads the table or CTE named
       * `__pd_input`, which has the `line` column and any others (passed through), and
       * gives those, `__pd_accepted` (as `accepted`) and `__pd_c0`, `__pd_c1`, … (as
       * `columns`, in order):
       * `WITH __pd_input AS (SELECT line FROM …) SELECT __pd_c0, __pd_c1 FROM (<select>) WHERE __pd_accepted`.
       * It computes them for any line without failing (a refused line's columns may hold
       * anything): bulk imports test `__pd_accepted` beside the columns, not before them.
       */
      readonly select?: string;
    }
  | {
      readonly pushable: false;
      /** Each reason, naming the rule or keyword (`mappings.skyway.fields.product: compute is a JS function`). */
      readonly reasons: readonly string[];
    };
