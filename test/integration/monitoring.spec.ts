import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fromIterable } from '../../connectors/iterable';
import { Pipeline } from '../../lib/pipeline';
import { serveMetrics } from '../../lib/serveMetrics';
import type { DeadLetter } from '../../lib/sink';
import type { Source } from '../../lib/source';
import { MemorySink, tempDir } from '../helpers';
import { parseMetrics } from '../metricsText';
import { ensurePromtool } from '../services';

/** examples/monitoring in the source tree (tests run from dist/test). */
const monitoring = join(__dirname, '..', '..', '..', 'examples', 'monitoring');
const rulesFile = join(monitoring, 'alerts.yml');
const rulesTestFile = join(monitoring, 'alerts.test.yml');
const dashboardFile = join(monitoring, 'grafana-dashboard.json');

function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('promtool', args, { cwd: dirname(args[args.length - 1]!), timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** Every `tributary_…` name in a text (PromQL expressions, dashboards). */
function tributaryNames(text: string): Set<string> {
  return new Set(text.match(/\btributary_[a-z0-9_]+/g) ?? []);
}

/** The expressions of the dashboard's panels and variables. */
function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as {
    panels: { targets?: { expr: string }[] }[];
    templating: { list: { query?: unknown }[] };
  };
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const variable of dashboard.templating.list) if (variable.query !== undefined) exprs.push(JSON.stringify(variable.query));
  return exprs;
}

/** The series names a running pipeline exports, with a source that reports lag, a cursor age and a replay store's fill. */
async function exportedNames(): Promise<{ names: Set<string>; families: Set<string> }> {
  const inner = fromIterable(Array.from({ length: 50 }, (_, i) => ({ id: i })));
  const source: Source<{ id: number }> = {
    name: 'reporting',
    open: (context) => inner.open(context),
    status: () => ({ connected: true, lag: { 'bookings/0': 3 }, cursorAgeSeconds: 1, replayFill: 0.5 }),
  };
  const pipeline = new Pipeline({ name: 'names', source, sink: new MemorySink<{ id: number }>(), deadLetters: new MemorySink<DeadLetter>(), batch: { rows: 10, maxWaitMs: 5 } });
  const server = await serveMetrics(pipeline, { port: 0 });
  try {
    await pipeline.run();
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const families = new Set([...text.matchAll(/^# TYPE (tributary_\S+) /gm)].map((m) => m[1]!));
    return { names: new Set(parseMetrics(text).map((s) => s.name)), families };
  } finally {
    await server.close();
  }
}

describe('monitoring: alert rules and dashboard', function () {
  this.timeout(600_000);

  before(async () => {
    await ensurePromtool();
  });

  it('passes promtool check rules', async () => {
    const { code, output } = await promtool('check', 'rules', rulesFile);
    expect(output).to.include('SUCCESS: 7 rules found');
    expect(code).to.equal(0);
  });

  it('passes promtool test rules: each alert fires on the series it watches, and only there', async () => {
    const { code, output } = await promtool('test', 'rules', rulesTestFile);
    expect(output).to.include('SUCCESS');
    expect(code).to.equal(0);
    const tested = new Set([...readFileSync(rulesTestFile, 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    const defined = [...readFileSync(rulesFile, 'utf8').matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    expect(defined).to.have.length(7);
    expect([...tested].sort()).to.deep.equal([...defined].sort());
  });

  it('has promtool refuse a broken rule, so the checks above can fail', async () => {
    const dir = tempDir();
    try {
      const broken = join(dir.path, 'broken.yml');
      writeFileSync(broken, readFileSync(rulesFile, 'utf8').replace('> 0.05', '> > 0.05'));
      const { code, output } = await promtool('check', 'rules', broken);
      expect(code).to.not.equal(0);
      expect(output).to.match(/FAILED|parse error/);
    } finally {
      dir.remove();
    }
  });

  it('names only metrics the library exports, and the dashboard shows every one of them', async () => {
    const { names, families } = await exportedNames();
    const inRules = tributaryNames(readFileSync(rulesFile, 'utf8'));
    const inRuleTests = tributaryNames(readFileSync(rulesTestFile, 'utf8'));
    const inDashboard = tributaryNames(dashboardExpressions().join('\n'));
    expect(inRules.size).to.be.greaterThan(4);
    expect([...inRules].filter((n) => !names.has(n)), 'named by alerts.yml but not exported').to.deep.equal([]);
    expect([...inRuleTests].filter((n) => !names.has(n)), 'named by alerts.test.yml but not exported').to.deep.equal([]);
    expect([...inDashboard].filter((n) => !names.has(n)), 'named by the dashboard but not exported').to.deep.equal([]);
    const shown = new Set([...inDashboard].map((n) => n.replace(/_(bucket|sum|count)$/, '')));
    expect([...families].filter((f) => !shown.has(f)), 'exported but not on the dashboard').to.deep.equal([]);
    expect(families.size).to.equal(15);
  });
});
