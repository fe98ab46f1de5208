import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Preloaded into a process (`LD_PRELOAD`), kills it with SIGKILL at its Nth rename of a file
 * whose name holds `KILL_AT_RENAME_OF` (N from `KILL_AT_RENAME`, default 1). Where a kill -9
 * of the whole process can land, made certain.
 */
const SOURCE = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
static int renames;
static void maybe_kill(const char *from) {
  const char *of = getenv("KILL_AT_RENAME_OF");
  if (!from || !of || !strstr(from, of)) return;
  const char *at = getenv("KILL_AT_RENAME");
  if (__atomic_add_fetch(&renames, 1, __ATOMIC_SEQ_CST) >= (at ? atoi(at) : 1)) raise(SIGKILL);
}
int rename(const char *a, const char *b) {
  maybe_kill(a);
  return ((int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename"))(a, b);
}
int renameat(int da, const char *a, int db, const char *b) {
  maybe_kill(a);
  return ((int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat"))(da, a, db, b);
}
int renameat2(int da, const char *a, int db, const char *b, unsigned flags) {
  maybe_kill(a);
  return ((int (*)(int, const char *, int, const char *, unsigned))dlsym(RTLD_NEXT, "renameat2"))(da, a, db, b, flags);
}
`;

let built: string | undefined;

/**
 * The environment that makes a child die at its Nth rename of a file whose name holds
 * `of`: the shim is built once per process with cc.
 */
export function killAtRename(of: string, n = 1): NodeJS.ProcessEnv {
  if (!built) {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-shim-'));
    writeFileSync(join(dir, 'kill-at-rename.c'), SOURCE);
    const shim = join(dir, 'kill-at-rename.so');
    try {
      execFileSync('cc', ['-shared', '-fPIC', '-o', shim, join(dir, 'kill-at-rename.c'), '-ldl'], { stdio: 'pipe' });
    } catch (error) {
      throw new Error(`killing a process at a rename needs a C compiler (cc; apt-get install gcc) to build its shim: ${(error as Error).message}`);
    }
    built = shim;
  }
  return { LD_PRELOAD: built, KILL_AT_RENAME_OF: of, KILL_AT_RENAME: String(n) };
}

/**
 * Dies as the embedded engine renames its Nth written part (`tmp_insert_*`) into place:
 * after that insert's block id went to the table's deduplication log, before its rows are
 * stored.
 */
export function killInsideInsert(n = 1): NodeJS.ProcessEnv {
  return killAtRename('tmp_insert_', n);
}
