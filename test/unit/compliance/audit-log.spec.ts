import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { SinkError, TributaryError } from '../../../lib/errors';
import { AuditLog, type AuditLogOptions, type AuditRow } from '../../../lib/security/audit';
import { Keyring } from '../../../lib/security/keyring';
import type { DeadLetter } from '../../../lib/sink';
import { MemorySink, until } from '../../helpers';

/** What `promise` settles to: 'resolved', or the message it rejects with. */
const outcome = (promise: Promise<unknown>) => promise.then(() => 'resolved', (error: Error) => error.message);

/**
 * How many events a log takes, behind a sink whose first write never returns, before
 * `record` refuses one as beyond `maxPending`: its in-flight budget plus `maxPending`.
 */
async function takenBehindStuckSink(options: Omit<AuditLogOptions, 'sink'>, details: Record<string, unknown> = {}): Promise<number> {
  const sink = new MemorySink<AuditRow>('audit');
  sink.gate = () => new Promise<void>(() => undefined);
  const audit = new AuditLog({ sink, ...options });
  audit.record({ type: 't', actor: 'a', outcome: 'ok', details });
  await until(() => sink.writes.length === 1, 5000, 'the first write');
  let taken = 1;
  try {
    for (; taken < 100_000; taken++) audit.record({ type: 't', actor: 'a', outcome: 'ok', details });
  } catch (error) {
    expect((error as TributaryError).code).to.equal('AUDIT_BACKLOG');
  }
  return taken;
}

describe('audit log, its pipeline', () => {
  const quick = { batch: { rows: 1, maxWaitMs: 1 } };

  it('holds at most max(batch.rows, 1000) × 2 events in flight and maxPending more waiting, whatever their size below 64 MiB', async () => {
    expect(await takenBehindStuckSink({ ...quick, maxPending: 2 })).to.equal(2000 + 2);
    expect(await takenBehindStuckSink({ batch: { rows: 1500, maxWaitMs: 1 }, maxPending: 3 })).to.equal(3000 + 3);
    // Each row counts its details plus 128 bytes against the 64 MiB in flight: 670 rows of 100 000 bytes.
    const details = { pad: 'x'.repeat(100_000 - 10) };
    expect(JSON.stringify(details)).to.have.length(100_000);
    expect(await takenBehindStuckSink({ ...quick, maxPending: 1 }, details)).to.equal(Math.floor((64 * 1024 * 1024) / (100_000 + 128)) + 1);
  });

  it('writes each row the sink refuses to the dead letters at once, one letter per write, naming the audit pipeline, source and row', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.gate = async (batch) => {
      if (batch.envelopes.some((e) => e.value.target === 'bad')) throw new SinkError('Cannot parse input', { rowsAtFault: true });
    };
    const deadLetters = new MemorySink<DeadLetter>('audit-dead');
    const audit = new AuditLog({ sink, deadLetters, batch: { rows: 3, maxWaitMs: 1000 } });
    audit.record({ type: 't', actor: 'a', target: 'bad', outcome: 'ok' });
    audit.record({ type: 't', actor: 'a', target: 'bad', outcome: 'ok' });
    audit.record({ type: 't', actor: 'a', target: 'good', outcome: 'ok' });
    await audit.flush();
    expect(sink.rows.map((r) => r.target)).to.deep.equal(['good']);
    expect(deadLetters.writes.map((w) => w.size)).to.deep.equal([1, 1]);
    const [first, second] = deadLetters.rows;
    expect({ pipeline: first!.pipeline, source: first!.source, code: first!.code, message: first!.message }).to.deep.equal({ pipeline: 'audit', source: 'audit', code: 'SINK', message: 'Cannot parse input' });
    expect([first!.position, second!.position].map((p) => p.replace(/^[A-Za-z0-9_-]{8}-/, ''))).to.deep.equal(['1', '2']);
    await audit.close();
  });

  it('retries a failed write as its retry options say, and by default until written', async () => {
    const failing = (times: number) => {
      const sink = new MemorySink<AuditRow>('audit');
      sink.gate = async (_batch, context) => {
        if (context.attempt <= times) throw new SinkError('server down', { retriable: true });
      };
      return sink;
    };
    const once = new AuditLog({ sink: failing(2), ...quick, retry: { retries: 1, initialDelayMs: 0, maxDelayMs: 0 } });
    once.record({ type: 't', actor: 'a', outcome: 'ok' });
    expect(await outcome(once.flush())).to.equal('server down');
    const sink = failing(6);
    const patient = new AuditLog({ sink, ...quick, retry: { initialDelayMs: 0, maxDelayMs: 0 }, breaker: { volumeThreshold: 100 } });
    patient.record({ type: 't', actor: 'a', outcome: 'ok' });
    await patient.flush();
    expect([sink.rows.length, sink.writes.length]).to.deep.equal([1, 7]);
    await patient.close();
  });

  it('puts its breaker options on the breaker around the sink', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.gate = async (_batch, context) => {
      if (context.attempt === 1) throw new SinkError('server down', { retriable: true });
    };
    // One failure in one call opens this breaker for a minute: the single retry meets it open.
    const audit = new AuditLog({ sink, ...quick, retry: { retries: 1, initialDelayMs: 0, maxDelayMs: 0 }, breaker: { volumeThreshold: 1, errorThresholdPercentage: 1, resetTimeoutMs: 60_000 } });
    audit.record({ type: 't', actor: 'a', outcome: 'ok' });
    expect(await outcome(audit.flush())).to.equal('sink audit is unavailable (circuit breaker open): server down');
    expect(sink.writes).to.have.length(1);
  });

  it('fails when its sink cannot be opened: record throws, a waiting flush rejects', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    Object.assign(sink, { open: async () => Promise.reject(new SinkError('no such table audit_log')) });
    const audit = new AuditLog({ sink, ...quick });
    audit.record({ type: 't', actor: 'a', outcome: 'ok' });
    const flushed = outcome(audit.flush());
    let refusal: Error | undefined;
    const record = () => {
      try {
        audit.record({ type: 't', actor: 'a', outcome: 'ok' });
      } catch (error) {
        refusal = error as Error;
      }
      return refusal !== undefined;
    };
    await until(record, 5000, 'record to throw');
    expect(refusal!.message).to.equal('audit log failed: no such table audit_log');
    expect(await flushed).to.equal('no such table audit_log');
  });

  it('fails when its sink cannot be closed: close rejects, and so does every flush after it', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    sink.close = async () => Promise.reject(new SinkError('connection reset while closing'));
    const audit = new AuditLog({ sink, ...quick });
    audit.record({ type: 't', actor: 'a', outcome: 'ok' });
    expect(await outcome(audit.close())).to.equal('connection reset while closing');
    expect(sink.rows).to.have.length(1);
    expect(await outcome(audit.flush())).to.equal('connection reset while closing');
  });

  it('still takes events while close writes the earlier ones, and writes them before it stops', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink, ...quick });
    audit.record({ type: 't', actor: 'a', target: '1', outcome: 'ok' });
    const closing = audit.close();
    // E.g. a pipeline stopped beside the log reports its stop while the log is closing.
    audit.lifecycle()({ type: 'stop', pipeline: 'bookings', details: {} });
    await closing;
    expect(sink.rows.map((r) => r.target)).to.deep.equal(['1', 'bookings']);
    expect(() => audit.record({ type: 't', actor: 'a', outcome: 'ok' })).to.throw(TributaryError, 'audit log is closed');
  });

  it('names a watched keyring `keyring` unless told otherwise', async () => {
    const sink = new MemorySink<AuditRow>('audit');
    const audit = new AuditLog({ sink, ...quick });
    const ring = new Keyring({ keys: [{ id: 'a', key: randomBytes(32) }] });
    audit.watchKeyring(ring);
    ring.rotate({ id: 'b', key: randomBytes(32) });
    await audit.close();
    expect(sink.rows.map((r) => [r.type, r.target, r.details])).to.deep.equal([['key.rotate', 'keyring', '{"primary":"b","previous":"a"}']]);
  });
});
