/**
 * Where a process allocates on its JS heap, by function: V8's sampling heap profiler with
 * the objects collected since kept in the counts, so a short-lived object (what the
 * garbage collector spends its time on) counts as much as one still alive. Unlike time,
 * bytes allocated per request or per record barely move with the machine's load.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { relative } from 'node:path';

interface SamplingNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SamplingNode[];
}

function post<R>(session: Session, method: string, params: object = {}): Promise<R> {
  return new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result as R))));
}

/**
 * Starts sampling this thread's allocations, about one sample per `intervalBytes`. The
 * function returned stops and writes the profile (a `.heapprofile`, as DevTools reads it) to `file`.
 */
export async function sampleAllocations(intervalBytes = 512): Promise<(file: string) => Promise<void>> {
  const session = new Session();
  session.connect();
  await post(session, 'HeapProfiler.enable');
  await post(session, 'HeapProfiler.startSampling', {
    samplingInterval: intervalBytes,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return async (file) => {
    const { profile } = await post<{ profile: { head: SamplingNode } }>(session, 'HeapProfiler.stopSampling');
    session.disconnect();
    writeFileSync(file, JSON.stringify(profile));
  };
}

/** The `top` functions by bytes allocated in them (self), per `per` (requests, records), as lines of text, with the total first. */
export function formatAllocations(file: string, per: number, unit: string, top = 15, root = process.cwd()): string {
  const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: SamplingNode };
  const byFunction = new Map<string, number>();
  let total = 0;
  const walk = (node: SamplingNode) => {
    const { functionName, url, lineNumber } = node.callFrame;
    if (node.selfSize > 0) {
      const where = url ? ` (${url.startsWith('file://') || url.startsWith('/') ? relative(root, url.replace(/^file:\/\//, '')) : url}:${lineNumber + 1})` : '';
      const name = `${functionName || '(anonymous)'}${where}`;
      byFunction.set(name, (byFunction.get(name) ?? 0) + node.selfSize);
      total += node.selfSize;
    }
    for (const child of node.children) walk(child);
  };
  walk(head);
  const rows = [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top);
  const width = String(Math.round((rows[0]?.[1] ?? 0) / per)).length;
  return [
    `allocated: ${(total / per / 1024).toFixed(2)} KiB per ${unit}; top ${rows.length} functions (self):`,
    ...rows.map(([name, bytes], i) => `  ${String(i + 1).padStart(2)}. ${String(Math.round(bytes / per)).padStart(width)} B  ${((100 * bytes) / total).toFixed(1).padStart(4)}%  ${name}`),
  ].join('\n');
}
