// Where the pDFS tests that go through the kernel (test/fs/fsx.test.ts, test/fs/tools.test.ts) run:
// by default a real `dpms mount` of a fresh 3-node cluster (test/support/mount.ts); with
// DPMS_FS_TARGET=tmpfs a plain directory on tmpfs instead, so the same tests can be checked against
// the kernel's own file system, whose behaviour is the reference. Also a small child-process runner:
// the tests drive the mount with real tools and async fs calls only, never synchronous ones.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCluster, type TestCluster } from './cluster';
import { startMount, type TestMount } from './mount';

export type FsTargetKind = 'dpms' | 'tmpfs';

export interface FsTarget {
  readonly kind: FsTargetKind;
  /** The root of the file system under test (an empty directory). */
  readonly dir: string;
  /**
   * Another view of the same file system: a second mount process of the same cluster on its own
   * directory. On tmpfs there is only one view, so this is `dir` again.
   */
  secondMount(): Promise<string>;
  /** Unmounts and stops everything, removes the directories. Safe to call twice. */
  stop(): Promise<void>;
}

export function fsTargetKind(): FsTargetKind {
  const value = process.env.DPMS_FS_TARGET ?? 'dpms';
  if (value !== 'dpms' && value !== 'tmpfs') throw new Error(`DPMS_FS_TARGET must be 'dpms' or 'tmpfs', not '${value}'`);
  return value;
}

/** A directory on tmpfs (/dev/shm where it is one), for the reference runs and for staging trees. */
export function tmpfsDir(prefix: string): string {
  const mounts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((line) => line.split(' '));
  const shmIsTmpfs = mounts.some((fields) => fields[1] === '/dev/shm' && fields[2] === 'tmpfs');
  return fs.mkdtempSync(path.join(shmIsTmpfs ? '/dev/shm' : os.tmpdir(), prefix));
}

export async function startFsTarget(options: { sizeMb?: number } = {}): Promise<FsTarget> {
  const kind = fsTargetKind();
  if (kind === 'tmpfs') {
    const dir = tmpfsDir('dpms-fs-target-');
    console.log(`# DPMS_FS_TARGET=tmpfs: running against ${dir}, not a dpms mount`);
    return {
      kind, dir,
      secondMount: async () => dir,
      stop: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  }
  let cluster: TestCluster | undefined;
  const mounts: TestMount[] = [];
  const stop = async (): Promise<void> => {
    // Unmount before the nodes go away, so no mount process is left waiting on a dead cluster.
    for (const mount of mounts.splice(0).reverse()) await mount.stop();
    await cluster?.stop();
    cluster = undefined;
  };
  try {
    cluster = await startCluster({ nodes: 3, transport: 'local', sizeMb: options.sizeMb ?? 64 });
    mounts.push(await startMount(cluster));
  } catch (error) {
    await stop();
    throw error;
  }
  const started = cluster;
  return {
    kind, dir: mounts[0].dir,
    secondMount: async () => {
      const mount = await startMount(started);
      mounts.push(mount);
      return mount.dir;
    },
    stop,
  };
}

export interface ToolResult {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs a program as a child process; killed (and reported) after timeoutMs; output kept up to a bound. */
export function runTool(command: string, args: readonly string[], options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ToolResult> {
  const limitBytes = 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => {
      stdoutBytes += data.length;
      if (stdoutBytes <= limitBytes) stdout.push(data);
    });
    child.stderr.on('data', (data: Buffer) => {
      if (stderr.length < 1024 * 1024) stderr += data.toString();
    });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs ?? 60_000} ms]`;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 60_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (stdoutBytes > limitBytes) stderr += `\n[stdout cut at ${limitBytes} bytes]`;
      resolve({ status, signal, stdout: Buffer.concat(stdout), stderr });
    });
  });
}

export function describeResult(command: string, args: readonly string[], result: ToolResult): string {
  const out = result.stdout.toString();
  return `${command} ${args.join(' ')}: exit ${result.status ?? result.signal}\nstdout: ${out.length > 4000 ? `${out.slice(0, 4000)}...` : out}\nstderr: ${result.stderr}`;
}

/** Runs a tool that must succeed; returns its stdout as text. */
export async function runOk(command: string, args: readonly string[], options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const result = await runTool(command, args, options);
  if (result.status !== 0) throw new Error(describeResult(command, args, result));
  return result.stdout.toString();
}
