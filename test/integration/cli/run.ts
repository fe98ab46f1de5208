import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const BIN = join(__dirname, '../../../../bin/tributary.js');
export const PACKAGE = JSON.parse(readFileSync(join(__dirname, '../../../../package.json'), 'utf8')) as { version: string };

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built command, as a user runs it: a child process, its output and exit code. */
export function tributary(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...options.env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const child = spawn(process.execPath, [BIN, ...args], { env, cwd: options.cwd ?? process.cwd() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

