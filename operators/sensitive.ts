import type { Envelope, RecordFailure } from '../lib/envelope';
import { forEachField, type FieldPath, type FieldVisitor } from './fieldPaths';

/** What stands in a dead letter for a value that must not be seen. */
export const REDACTED = '[redacted]';

const redactor: FieldVisitor = {
  visit(container, key) {
    container[key] = REDACTED;
  },
};

/**
 * Dead-letters a record that holds sensitive fields without letting their plaintext
 * reach the dead-letter sink: the stored payload becomes the record as it is now, with
 * every value at `paths` replaced by `[redacted]`, instead of the payload as received
 * (which may carry the same data under the vendor's field names).
 */
export function rejectRedacted(envelope: Envelope<unknown>, paths: readonly FieldPath[], failure: RecordFailure): void {
  let copy: unknown;
  try {
    copy = JSON.parse(JSON.stringify(envelope.value) ?? 'null');
  } catch {
    copy = null; // a value that cannot be copied is not stored at all
  }
  for (const path of paths) forEachField(copy, path, redactor);
  envelope.raw = JSON.stringify(copy);
  envelope.reject(failure);
}
