import { randomBytes } from 'node:crypto';
import { Observable } from 'rxjs';
import type { AccessDecision } from './access';
import type { BreakerOptions } from '../breaker';
import type { Envelope } from '../envelope';
import { ConfigError, SinkError, TributaryError } from '../errors';
import { positiveInteger } from '../options';
import type { Keyring } from './keyring';
import { Pipeline, type PipelineBatchOptions, type PipelineLifecycleEvent } from '../pipeline';
import type { RetryOptions } from '../retry';
import type { DeadLetter, Sink } from '../sink';
import type { Source, SourceContext } from '../source';

/**
 * Kinds of security event: `pipeline.start`, `pipeline.stop`, `key.rotate`,
 * `erasure.request`, `erasure.done`, `erasure.failed`, `decrypt`, `access.denied`,
 * `access.allowed`, `webhook.denied`; applications may add their own (`export.request`).
 */
export type AuditEventType = string;

/** What happened, who did it, why, to what, and how it ended. */
export interface AuditEvent {
  type: AuditEventType;
  /** Who: an API key id, a service or user name; `system` for the library itself. */
  actor: string;
  /** Why, as the actor stated it (`support ticket 4711`); `''` when none applies. */
  purpose?: string;
  /** To what: a data subject, a record id, a route, a key id. */
  target?: string;
  /** `ok`, an error code, `FORBIDDEN`, … */
  outcome: string;
  /** Anything else worth keeping, stored as JSON. Never put plaintext personal data here. */
  details?: Readonly<Record<string, unknown>>;
}

/** A row of the audit table (see `docs/compliance.md` for its DDL). */
export interface AuditRow {
  /** Unique: `<log instance>-<sequence>`. */
  id: string;
  /** ISO 8601, UTC, milliseconds. */
  at: string;
  type: string;
  actor: string;
  purpose: string;
  target: string;
  outcome: string;
  /** JSON. */
  details: string;
}

export interface AuditLogOptions {
  /** Where rows go: an append-only table, e.g. `toClickHouse({ client, table: 'audit_log' })`. */
  sink: Sink<AuditRow>;
  /**
   * Where rows the sink refuses as malformed go. By default such a row stops the log
   * (its `flush()` rejects): an audit event is never dropped quietly.
   */
  deadLetters?: Sink<DeadLetter>;
  /** Batches of rows. @default { rows: 1000, maxWaitMs: 200 } */
  batch?: PipelineBatchOptions;
  /** Retries of a failed write. @default { retries: Infinity, maxDelayMs: 5000 }: kept until written */
  retry?: RetryOptions;
  /** Events recorded but not yet written, at most; `record` throws beyond it. @default 100000 */
  maxPending?: number;
  /** The circuit breaker around the sink. @default BreakerOptions' defaults */
  breaker?: BreakerOptions;
}

/**
 * An append-only log of security events, written through the pipeline machinery: rows are
 * batched, retried while the sink is down and acknowledged only once durable, so an event
 * recorded is never lost while the process lives. `flush()` waits for durability; actions
 * that must be provable (erasure) await it before they report success.
 *
 * ## Example
 * ```ts
 * import { AuditLog, AccessControl, auditAccess, toClickHouse, embeddedClickHouse } from 'tributary';
 * const audit = new AuditLog({ sink: toClickHouse({ client: embeddedClickHouse(), table: 'audit_log' }) });
 * const access = new AccessControl({ roles, keys, onDecision: auditAccess(audit) });
 * audit.record({ type: 'export.request', actor: 'alice', target: 'bookings', outcome: 'ok' });
 * await audit.close();
 * ```
 */
export class AuditLog implements AsyncDisposable {
  readonly #instance = randomBytes(6).toString('base64url');
  readonly #maxPending: number;
  readonly #pipeline: Pipeline<AuditRow>;
  readonly #queue: AuditRow[] = [];
  #sequence = 0;
  /** Rows settled so far, in any order; the lowest unsettled sequence is the flush mark. */
  #settled = new Set<number>();
  #durableUpTo = 0;
  #failure: Error | undefined;
  #waiters: { upTo: number; resolve: () => void; reject: (error: Error) => void }[] = [];
  #pump: (() => void) | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: AuditLogOptions) {
    if (!options?.sink || typeof options.sink.write !== 'function') throw new ConfigError('sink is required: where the audit rows are written');
    this.#maxPending = positiveInteger(options.maxPending, 100_000, 'maxPending');
    const batch = { rows: 1000, maxWaitMs: 200, ...options.batch };
    this.#pipeline = new Pipeline<AuditRow>({
      name: 'audit',
      source: this.#source(),
      sink: options.sink,
      deadLetters: options.deadLetters ?? refuseDeadLetters,
      batch,
      deadLetterBatch: { rows: 1, maxWaitMs: 0 },
      inFlight: { records: Math.max(batch.rows ?? 1000, 1000) * 2 },
      sinkConcurrency: 1,
      retry: { retries: Infinity, maxDelayMs: 5000, ...options.retry },
      ...(options.breaker && { breaker: options.breaker }),
    });
    this.#pipeline.start().then(
      () => this.#pipeline.finished().catch((error: unknown) => this.#fail(error)),
      (error: unknown) => this.#fail(error),
    );
  }

  /** Records an event; it is written soon after. Throws once the log is closed or failed. */
  record(event: AuditEvent): void {
    if (this.#closed) throw new TributaryError('audit log is closed', { code: 'STOPPED' });
    if (this.#failure) throw new TributaryError(`audit log failed: ${this.#failure.message}`, { code: 'AUDIT_FAILED', cause: this.#failure });
    if (this.#queue.length >= this.#maxPending) throw new TributaryError(`audit log has ${this.#maxPending} events waiting to be written`, { code: 'AUDIT_BACKLOG', retriable: true });
    this.#queue.push({
      id: `${this.#instance}-${++this.#sequence}`,
      at: new Date().toISOString(),
      type: event.type,
      actor: event.actor,
      purpose: event.purpose ?? '',
      target: event.target ?? '',
      outcome: event.outcome,
      details: JSON.stringify(event.details ?? {}),
    });
    this.#pump?.();
  }

  /** Resolves once every event recorded before the call is durable; rejects if the log failed. */
  flush(): Promise<void> {
    const upTo = this.#sequence;
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#durableUpTo >= upTo) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ upTo, resolve, reject }));
  }

  /** Writes what is recorded, then stops. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.flush();
      } finally {
        this.#closed = true;
        this.#pump?.();
        await this.#pipeline.stop();
      }
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Records a key rotation of `keyring` from now on; returns the unsubscribe function. */
  watchKeyring(keyring: Keyring, name = 'keyring'): () => void {
    return keyring.onRotate((event) =>
      this.record({ type: 'key.rotate', actor: 'system', target: name, outcome: 'ok', details: { primary: event.keyId, previous: event.previous } }),
    );
  }

  /** A `Pipeline` `onLifecycle` option that records its starts and stops with their configuration. */
  lifecycle(): (event: PipelineLifecycleEvent) => void {
    return (event) =>
      this.record({ type: `pipeline.${event.type}`, actor: 'system', target: event.pipeline, outcome: event.error ?? 'ok', details: event.details });
  }

  #source(): Source<AuditRow> {
    return {
      name: 'audit',
      open: (context: SourceContext) =>
        new Observable<Envelope<AuditRow>>((subscriber) => {
          const pump = () => {
            while (this.#queue.length > 0) {
              const row = this.#queue[0]!;
              const bytes = row.details.length + 128;
              if (!context.credits.tryTake(bytes)) return; // resumed by the next settlement
              this.#queue.shift();
              subscriber.next(context.envelope(row, { source: 'audit', position: row.id, receivedAt: Date.now(), attempt: 1 }, undefined, bytes));
            }
            if (this.#closed) subscriber.complete();
          };
          this.#pump = pump;
          pump();
          return () => (this.#pump = undefined);
        }),
      settled: (envelope, error) => {
        if (error) this.#fail(error);
        const sequence = Number(envelope.meta.position.slice(envelope.meta.position.lastIndexOf('-') + 1));
        this.#settled.add(sequence);
        while (this.#settled.delete(this.#durableUpTo + 1)) this.#durableUpTo++;
        this.#waiters = this.#waiters.filter((waiter) => (waiter.upTo <= this.#durableUpTo ? (waiter.resolve(), false) : true));
        queueMicrotask(() => this.#pump?.());
      },
    };
  }

  #fail(error: unknown): void {
    this.#failure ??= error instanceof Error ? error : new TributaryError(String(error));
    for (const waiter of this.#waiters) waiter.reject(this.#failure);
    this.#waiters = [];
  }
}

/** The default dead-letter sink of the audit log: it refuses, so the log fails rather than drop an event. */
const refuseDeadLetters: Sink<DeadLetter> = {
  name: 'audit-refused',
  async write(batch) {
    throw new SinkError(`the audit sink refused ${batch.envelopes.length} row(s) as malformed: ${batch.envelopes[0]?.value.message ?? ''}`, { retriable: false });
  },
};

/**
 * An `onDecision` for {@link AccessControl} that records every denial (`access.denied`)
 * and, with `allowed: true`, every grant too (`access.allowed`).
 */
export function auditAccess(audit: AuditLog, options: { allowed?: boolean } = {}): (decision: AccessDecision) => void {
  return (decision) => {
    if (decision.allowed && !options.allowed) return;
    audit.record({
      type: decision.allowed ? 'access.allowed' : 'access.denied',
      actor: decision.keyId ?? 'anonymous',
      purpose: decision.context ?? '',
      target: decision.permission,
      outcome: decision.outcome,
    });
  };
}
