import { expect } from 'chai';
import { SinkError } from '../../../lib/errors';
import { BREAKER_EVENTS, eventError, Instrumentation, type PipelineEvent, type PipelineEventType } from '../../../lib/events';
import { consoleLogger, logEvents, quietLogger, type LogLevel } from '../../../lib/logger';

/** A console that keeps each line with the method it was written through. */
function capture(): { lines: string[]; console: Record<LogLevel, (line: string) => void> } {
  const lines: string[] = [];
  const at = (level: LogLevel) => (line: string) => lines.push(`${level}: ${line}`);
  return { lines, console: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

/** The lines without their timestamps. */
const untimed = (lines: string[]) => lines.map((line) => line.replace(/^(\w+): \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /, '$1: '));

describe('instrumentation events', () => {
  it('reach the listeners of their type in one envelope, until unsubscribed', () => {
    const events = new Instrumentation(() => expect.fail('no listener throws'));
    const seen: PipelineEvent[] = [];
    expect(events.listening('pipeline.stop')).to.equal(false);
    const off = events.on('pipeline.stop', (event) => seen.push(event));
    events.on('pipeline.start', () => expect.fail('another type'));
    expect(events.listening('pipeline.stop')).to.equal(true);
    const before = Date.now();
    events.emit('pipeline.stop', { pipeline: 'p' });
    events.emit('pipeline.stop', { pipeline: 'q' });
    expect(seen.map((e) => [e.type, e.payload])).to.deep.equal([
      ['pipeline.stop', { pipeline: 'p' }],
      ['pipeline.stop', { pipeline: 'q' }],
    ]);
    expect(seen[1]!.id).to.equal(seen[0]!.id + 1);
    expect(seen[0]!.timestamp).to.be.within(before, Date.now());
    off();
    expect(events.listening('pipeline.stop')).to.equal(false);
    events.emit('pipeline.stop', { pipeline: 'r' });
    expect(seen).to.have.length(2);
  });

  it('report a throwing listener with its event type, and still reach the others', () => {
    const reported: [unknown, PipelineEventType][] = [];
    const events = new Instrumentation((error, type) => reported.push([error, type]));
    const boom = new Error('listener bug');
    let reached = 0;
    events.on('pipeline.stop', () => {
      throw boom;
    });
    events.on('pipeline.stop', () => reached++);
    events.emit('pipeline.stop', { pipeline: 'p' });
    expect(reported).to.deep.equal([[boom, 'pipeline.stop']]);
    expect(reached).to.equal(1);
  });

  it('name breaker states by their event', () => {
    expect(BREAKER_EVENTS).to.deep.equal({ open: 'breaker.open', halfOpen: 'breaker.half_open', closed: 'breaker.close' });
  });

  it('carry an error as its name, code, verdict and message, and withhold a message that may quote rows', () => {
    expect(eventError(new SinkError('connection reset', { retriable: true }))).to.deep.equal({ name: 'SinkError', code: 'SINK', retriable: true, message: 'connection reset' });
    expect(eventError(new SinkError('Cannot parse input: {"card":"4929"}', { rowsAtFault: true }))).to.deep.equal({
      name: 'SinkError',
      code: 'SINK',
      retriable: false,
      message: 'SINK (rows at fault; message withheld: it may quote record data)',
    });
    expect(eventError(new Error('plain'))).to.deep.equal({ name: 'Error', code: 'UNKNOWN', retriable: false, message: 'plain' });
    expect(eventError({ name: 7, code: 7, retriable: 'yes', message: 7, rowsAtFault: 'yes' })).to.deep.equal({ name: 'Error', code: 'UNKNOWN', retriable: false, message: '[object Object]' });
    expect(eventError('gone')).to.deep.equal({ name: 'Error', code: 'UNKNOWN', retriable: false, message: 'gone' });
    expect(eventError(undefined)).to.deep.equal({ name: 'Error', code: 'UNKNOWN', retriable: false, message: 'undefined' });
  });
});

describe('consoleLogger', () => {
  it('writes a timed line per message through the method of its level, from the lowest level up, with its defined fields', () => {
    const out = capture();
    const logger = consoleLogger({ level: 'warn', console: out.console });
    logger.debug('d');
    logger.info('i');
    logger.warn('w', { rows: 3, sink: 'ch', retriable: false, code: undefined });
    logger.error('e');
    expect(out.lines).to.have.length(2);
    expect(out.lines[0]).to.match(/^warn: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARN w rows=3 sink="ch" retriable=false$/);
    expect(untimed(out.lines)).to.deep.equal(['warn: WARN w rows=3 sink="ch" retriable=false', 'error: ERROR e']);
    const all = capture();
    const debug = consoleLogger({ level: 'debug', console: all.console });
    debug.debug('d');
    debug.info('i');
    expect(untimed(all.lines)).to.deep.equal(['debug: DEBUG d', 'info: INFO i']);
    const byDefault = capture();
    const info = consoleLogger({ console: byDefault.console });
    info.debug('d');
    info.info('i');
    expect(untimed(byDefault.lines)).to.deep.equal(['info: INFO i']);
  });
});

describe('logEvents', () => {
  const error = { name: 'SinkError', code: 'SINK', retriable: true, message: 'connection reset' };
  const stats = { read: 5, written: 3, deadLettered: 1, nacked: 1, inFlightRecords: 0, inFlightBytes: 0 };
  const write = { pipeline: 'p', stage: 'sink' as const, sink: 'ch', rows: 2, bytes: 40, attempt: 1, durationMs: 12.6 };

  it('logs each event at its level with its fields, never a record', () => {
    const out = capture();
    const events = new Instrumentation(() => undefined);
    logEvents(events, consoleLogger({ level: 'debug', console: out.console }));
    events.emit('pipeline.start', { pipeline: 'p', source: 'files', sink: 'ch', deadLetters: 'dl' });
    events.emit('pipeline.stop', { pipeline: 'p' });
    events.emit('sink.write', write);
    events.emit('sink.write', { ...write, attempt: 2, error });
    events.emit('sink.write', { ...write, attempt: 3, error: { ...error, code: 'BREAKER_OPEN' } });
    events.emit('sink.split', { pipeline: 'p', stage: 'dead_letters', sink: 'dl', rows: 4 });
    events.emit('breaker.open', { pipeline: 'p', stage: 'sink', sink: 'ch' });
    events.emit('breaker.half_open', { pipeline: 'p', stage: 'sink', sink: 'ch' });
    events.emit('breaker.close', { pipeline: 'p', stage: 'sink', sink: 'ch' });
    events.emit('pipeline.crash', { pipeline: 'p', error });
    events.emit('pipeline.end', { pipeline: 'p', stats, error });
    events.emit('pipeline.end', { pipeline: 'p', stats });
    expect(untimed(out.lines)).to.deep.equal([
      'info: INFO pipeline started pipeline="p" source="files" sink="ch" deadLetters="dl"',
      'info: INFO pipeline stopping: draining what is in flight pipeline="p"',
      'debug: DEBUG batch written pipeline="p" stage="sink" sink="ch" rows=2 bytes=40 attempt=1 ms=13',
      'warn: WARN batch write failed pipeline="p" stage="sink" sink="ch" rows=2 bytes=40 attempt=2 ms=13 code="SINK" retriable=true error="connection reset"',
      'debug: DEBUG write held back: breaker open pipeline="p" stage="sink" sink="ch" rows=2 bytes=40 attempt=3 ms=13',
      'warn: WARN sink refused rows of a batch: splitting it to isolate them pipeline="p" stage="dead_letters" sink="dl" rows=4',
      'warn: WARN circuit breaker open: writes held back, sources pause pipeline="p" stage="sink" sink="ch"',
      'info: INFO circuit breaker half-open: probing the sink pipeline="p" stage="sink" sink="ch"',
      'info: INFO circuit breaker closed: the sink is back pipeline="p" stage="sink" sink="ch"',
      'error: ERROR pipeline failed pipeline="p" code="SINK" error="connection reset"',
      'error: ERROR pipeline ended on a failure pipeline="p" read=5 written=3 deadLettered=1 nacked=1 code="SINK"',
      'info: INFO pipeline ended pipeline="p" read=5 written=3 deadLettered=1 nacked=1',
    ]);
  });

  it('does not listen at all for the quiet logger', () => {
    const events = new Instrumentation(() => undefined);
    logEvents(events, quietLogger);
    expect((['pipeline.start', 'pipeline.end', 'sink.write', 'breaker.open'] as const).some((type) => events.listening(type))).to.equal(false);
  });
});
