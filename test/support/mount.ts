// Test harness for pDFS mounts: starts `dpms mount --foreground` (the real CLI) as a child process
// on a fresh directory, waits until the mount is ready, and stops it with SIGTERM (or kill -9 for
// crash tests); whatever happens, the directory is unmounted (fusermount3 -uz) and removed.
// Tests drive the mount only from this process's async fs calls or from child processes.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, type TestCluster } from './cluster';

export interface TestMount {
  readonly dir: string;
  readonly pid: number;
  output(): string;
  /** SIGTERM: the mount process unmounts and exits cleanly. */
  stop(): Promise<void>;
  /** SIGKILL: no clean shutdown; the dead mount is then detached. */
  kill(): Promise<void>;
}

export function isMounted(dir: string): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((line) => line.split(' ')[1] === dir);
}

export function forceUnmount(dir: string): void {
  if (isMounted(dir)) spawnSync('fusermount3', ['-uz', dir]);
}

async function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function startMount(cluster: TestCluster, options: { dir?: string; provider?: string; extraArgs?: string[] } = {}): Promise<TestMount> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-mnt-'));
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o755);
  const args = [CLI, 'mount', dir, '--config', cluster.configPath, '--foreground', ...(options.provider ? ['--provider', options.provider] : []), ...(options.extraArgs ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (data: Buffer) => { output += data.toString(); });
  child.stderr!.on('data', (data: Buffer) => { output += data.toString(); });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount did not become ready:\n${output}`)), 30_000);
    const check = (): void => {
      if (output.includes('dpms: mounted')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`mount process exited (${code ?? signal}) before it was ready:\n${output}`));
    });
  });
  const cleanup = (): void => {
    forceUnmount(dir);
    if (!options.dir) fs.rmSync(dir, { recursive: true, force: true });
  };
  return {
    dir,
    pid: child.pid!,
    output: () => output,
    stop: async () => {
      child.kill('SIGTERM');
      if (!(await exited(child, 15_000))) {
        child.kill('SIGKILL');
        await exited(child, 5_000);
      }
      cleanup();
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited(child, 5_000);
      cleanup();
    },
  };
}
