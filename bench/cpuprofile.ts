/**
 * Self time by function from a V8 `.cpuprofile` (what `node --cpu-prof` writes).
 *
 *   node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  /** `function (file:line)`; V8's own entries keep their names: (garbage collector), (program), (idle). */
  name: string;
  ms: number;
  /** Share of all sampled time, 0..1. */
  share: number;
}

/** Sums sample time per function (name + script + line), largest first. */
export function selfTimes(file: string, root = process.cwd()): { totalMs: number; functions: SelfTime[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const byFunction = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // The delta before sample i+1 is the time sample i stood for.
    const us = profile.timeDeltas[i + 1] ?? 0;
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    const key = label(node, root);
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    total += us;
  }
  const functions = [...byFunction]
    .map(([name, us]) => ({ name, ms: us / 1000, share: total > 0 ? us / total : 0 }))
    .sort((a, b) => b.ms - a.ms);
  return { totalMs: total / 1000, functions };
}

function label(node: ProfileNode, root: string): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const name = functionName || '(anonymous)';
  if (!url) return name;
  let where = url.replace(/^file:\/\//, '');
  if (where.startsWith('/')) where = relative(root, where);
  return `${name} (${where}:${lineNumber + 1})`;
}

/** The same self time summed per script (`(native)` for V8's entries and regexps). */
export function byScript(result: { functions: SelfTime[] }): SelfTime[] {
  const sums = new Map<string, SelfTime>();
  for (const f of result.functions) {
    const match = / \((.+):\d+\)$/.exec(f.name);
    const script = match ? match[1]! : f.name.startsWith('(') ? f.name : '(native: builtins, regexps)';
    const entry = sums.get(script) ?? { name: script, ms: 0, share: 0 };
    entry.ms += f.ms;
    entry.share += f.share;
    sums.set(script, entry);
  }
  return [...sums.values()].sort((a, b) => b.ms - a.ms);
}

export function formatSelfTimes(result: { totalMs: number; functions: SelfTime[] }, top = 15): string {
  const line = (f: SelfTime, i: number) => `${String(i + 1).padStart(3)}. ${f.ms.toFixed(0).padStart(8)} ms ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.name}`;
  return [
    `self time of ${(result.totalMs / 1000).toFixed(1)} s sampled (main thread), top ${top} functions:`,
    ...result.functions.slice(0, top).map(line),
    '',
    'by script:',
    ...byScript(result).slice(0, top).map(line),
  ].join('\n');
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: cpuprofile.js FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  console.log(formatSelfTimes(selfTimes(file), Number(top ?? 15)));
}
