// The dpms CLI as a child process, for tests that check what a command prints and leaves behind:
// run it to the end (with a time limit), and tell whether a process it reported is still alive.

import { spawnSync } from 'node:child_process';
import { CLI } from './cluster';

export interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `dpms ARGS...` to the end; a command still running after `timeoutMs` is killed and fails the test. */
export function runCli(args: readonly string[], timeoutMs: number): CliResult {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Whether a process of that PID exists (signal 0 checks without signalling). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
