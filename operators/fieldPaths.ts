import { ConfigError } from '../lib/errors';

/**
 * Dotted field paths with `*` for every element of an array (`passengers.*.email`):
 * the shared addressing of `encrypt`, `decrypt`, `tokenize` and `mask`.
 */
export interface FieldPath {
  /** As written in the options. */
  readonly text: string;
  readonly segments: readonly string[];
  /** No `*`: the concrete path of every match is `text`. */
  readonly plain: boolean;
}

/** Called for each value present at a path; `path` is concrete (`passengers.1.email`). */
export interface FieldVisitor {
  visit(container: any, key: string | number, path: string): void;
}

const SEGMENT = /^(?:\*|[^.*]+)$/;

/** Checks and compiles `paths`; `where` names the option in error messages. */
export function compilePaths(paths: unknown, where: string): FieldPath[] {
  if (!Array.isArray(paths) || paths.length === 0) throw new ConfigError(`${where} must be a non-empty array of field paths`);
  const seen = new Set<string>();
  return paths.map((text, index) => {
    if (typeof text !== 'string' || text === '') throw new ConfigError(`${where}[${index}] must be a field path like "email" or "passengers.*.email", got ${JSON.stringify(text)}`);
    const segments = text.split('.');
    if (!segments.every((s) => SEGMENT.test(s))) throw new ConfigError(`${where}[${index}] must be dotted names, with * for every array element, got ${JSON.stringify(text)}`);
    if (seen.has(text)) throw new ConfigError(`${where} lists ${text} twice`);
    seen.add(text);
    return { text, segments, plain: !segments.includes('*') };
  });
}

/** Visits every present (not undefined, not null) value of `root` at `path`. */
export function forEachField(root: unknown, path: FieldPath, visitor: FieldVisitor): void {
  if (path.plain) {
    const segments = path.segments;
    let container: any = root;
    const last = segments.length - 1;
    for (let i = 0; i < last; i++) {
      if (container === null || typeof container !== 'object') return;
      container = container[segments[i]!];
    }
    if (container === null || typeof container !== 'object') return;
    const key = segments[last]!;
    const value = container[key];
    if (value !== undefined && value !== null) visitor.visit(container, key, path.text);
    return;
  }
  walk(root, path.segments, 0, '', visitor);
}

function walk(node: any, segments: readonly string[], index: number, prefix: string, visitor: FieldVisitor): void {
  if (node === null || typeof node !== 'object') return;
  const segment = segments[index]!;
  const last = index === segments.length - 1;
  if (segment === '*') {
    if (!Array.isArray(node)) return;
    for (let i = 0; i < node.length; i++) step(node, i, segments, index, last, prefix, visitor);
    return;
  }
  step(node, segment, segments, index, last, prefix, visitor);
}

function step(node: any, key: string | number, segments: readonly string[], index: number, last: boolean, prefix: string, visitor: FieldVisitor): void {
  const value = node[key];
  if (value === undefined || value === null) return;
  const path = prefix === '' ? String(key) : `${prefix}.${key}`;
  if (last) visitor.visit(node, key, path);
  else walk(value, segments, index + 1, path, visitor);
}
