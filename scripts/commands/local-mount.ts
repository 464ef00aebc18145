// FUSE file systems served by a child of this process, for the commands and tests that mount one for
// a while and then throw it away (`dpms bench fs`, test/support/mount.ts): `dpms mount --foreground`
// on a cluster (startDpmsMount), or any other FUSE server that stays in the foreground, such as
// `bindfs -f` (startFuseServer). Start waits until the directory is mounted; stop() sends SIGTERM by
// PID (the server unmounts and exits), SIGKILL after a grace period, and whatever happened, leaves the
// directory unmounted (fusermount3 -uz). Nothing here touches the mount synchronously: the caller
// decides how to drive it, and a hung server must not hang the process that supervises it.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DpmsError } from '../../pdsm';
import { CLI_PATH } from './local-cluster';

/** A server that neither mounts nor exits this long is killed. */
const START_TIMEOUT_MS = 30_000;
/** A server that ignores SIGTERM this long is killed. */
const STOP_TIMEOUT_MS = 15_000;
const KILL_TIMEOUT_MS = 5_000;
/** How often start() looks at the mount table when the server prints no ready line. */
const MOUNT_POLL_MS = 20;
/** The tail of what the server printed, for error messages and tests. */
const OUTPUT_TAIL_CHARS = 64 * 1024;
/** Lines of that tail an error message carries. */
const ERROR_LINES = 30;

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-ERROR_LINES).join('\n');
}

/** /proc/self/mounts escapes space, tab, newline and backslash in paths as octal. */
function unescapeMountPath(text: string): string {
  return text.replace(/\\(040|011|012|134)/g, (_, code: string) => String.fromCharCode(parseInt(code, 8)));
}

/** Is `dir` a mount point (of any file system), per /proc/self/mounts? */
export function isMounted(dir: string): boolean {
  const target = path.resolve(dir);
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((line) => {
    const mountpoint = line.split(' ')[1];
    return mountpoint !== undefined && unescapeMountPath(mountpoint) === target;
  });
}

/** Detach whatever is mounted on `dir`, even when busy or when its server is dead (fusermount3 -uz). */
export function forceUnmount(dir: string): void {
  if (isMounted(dir)) spawnSync('fusermount3', ['-uz', path.resolve(dir)], { stdio: 'ignore' });
}

export interface FuseServerOptions {
  /** Names the server in error messages. */
  readonly label: string;
  readonly command: string;
  readonly args: readonly string[];
  /** The directory the server mounts. */
  readonly dir: string;
  /** Ready when the server prints this; without it, ready when `dir` shows up in the mount table. */
  readonly readyText?: string;
}

export interface FuseServer {
  readonly dir: string;
  readonly pid: number;
  /** The last part of what the server printed (bounded). */
  output(): string;
  /** How the server process ended ('code 0', 'SIGKILL'), or undefined while it runs. */
  exitStatus(): string | undefined;
  /** SIGTERM by PID (the server unmounts and exits), SIGKILL after a grace period; then `dir` is unmounted for sure. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL (no clean shutdown, as in a crash); then the dead mount is detached. */
  kill(): Promise<void>;
}

function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    // start() waits here every few ms: each wait takes its listener away again.
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    child.once('exit', onExit);
  });
}

/** Start a FUSE server that serves `dir` in the foreground as a child of this process, and wait until it is mounted. */
export async function startFuseServer(options: FuseServerOptions): Promise<FuseServer> {
  const dir = path.resolve(options.dir);
  if (isMounted(dir)) throw new DpmsError('DPMS_BUSY', `${dir} is already a mount point`);
  const child = spawn(options.command, options.args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  // Read everything the server prints, for as long as it runs, so that a full pipe never blocks it.
  const collect = (data: Buffer): void => {
    output = (output + data.toString()).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let spawnError: Error | undefined;
  child.once('error', (error) => { spawnError = error; });

  let stopping: Promise<void> | undefined;
  const end = (signal: NodeJS.Signals): Promise<void> => {
    stopping ??= (async () => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, signal);
        if (!(await exited(child, signal === 'SIGKILL' ? KILL_TIMEOUT_MS : STOP_TIMEOUT_MS)) && signal !== 'SIGKILL') {
          process.kill(child.pid, 'SIGKILL');
          await exited(child, KILL_TIMEOUT_MS);
        }
      }
      forceUnmount(dir);
    })();
    return stopping;
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (spawnError) {
      await end('SIGKILL');
      throw new DpmsError('DPMS_UNSUPPORTED', `${options.label}: cannot run ${options.command}: ${spawnError.message}`, { cause: spawnError });
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      await end('SIGKILL');
      throw new DpmsError('DPMS_IO', `${options.label} exited (${child.exitCode ?? child.signalCode}) before ${dir} was mounted:\n${lastLines(output)}`);
    }
    const ready = options.readyText === undefined ? isMounted(dir) : output.includes(options.readyText);
    if (ready) break;
    if (Date.now() > deadline) {
      await end('SIGKILL');
      throw new DpmsError('DPMS_TIMEOUT', `${options.label} did not mount ${dir} within ${START_TIMEOUT_MS} ms:\n${lastLines(output)}`);
    }
    await exited(child, MOUNT_POLL_MS);
  }
  const exitStatus = (): string | undefined =>
    (child.signalCode !== null ? child.signalCode : child.exitCode !== null ? `code ${child.exitCode}` : undefined);
  return { dir, pid: child.pid!, output: () => output, exitStatus, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
}

export interface DpmsMountOptions {
  readonly configPath: string;
  /** An existing, empty directory. */
  readonly dir: string;
  /** Reach the nodes with this transport instead of the configured one. */
  readonly provider?: string;
  /** More `dpms mount` arguments (FUSE options: '-o', 'X'). */
  readonly extraArgs?: readonly string[];
}

/** `dpms mount DIR --config C --foreground` (the real CLI) as a child process, ready when it says it has mounted. */
export function startDpmsMount(options: DpmsMountOptions): Promise<FuseServer> {
  return startFuseServer({
    label: 'dpms mount',
    command: process.execPath,
    args: [CLI_PATH, 'mount', options.dir, '--config', options.configPath, '--foreground',
      ...(options.provider ? ['--provider', options.provider] : []), ...(options.extraArgs ?? [])],
    dir: options.dir,
    readyText: 'dpms: mounted',
  });
}
