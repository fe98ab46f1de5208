import { Observable, type OperatorFunction } from 'rxjs';
import { failureFrom, type Envelope } from '../lib/envelope';

/**
 * Shared machinery of the one-record-in, one-record-out operators (`normalize`,
 * `validate`, `parse` of JSON): runs `transform` on each value; a throw dead-letters that
 * record with a reason from the error and the stream goes on.
 */
export function recordOperator<A, B>(
  stage: string,
  transform: (value: A, envelope: Envelope<A>) => B,
): OperatorFunction<Envelope<A>, Envelope<B>> {
  return (source) =>
    new Observable<Envelope<B>>((subscriber) =>
      source.subscribe({
        next(envelope) {
          let value: B;
          try {
            value = transform(envelope.value, envelope);
          } catch (error) {
            envelope.reject(failureFrom(stage, error));
            return;
          }
          subscriber.next(envelope.map(value));
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      }),
    );
}
