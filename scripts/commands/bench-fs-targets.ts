// The file systems `dpms bench fs` (bench-fs.ts) measures, each one directory that the same fio jobs
// and metadata workers run in:
//   - dpms: a 3-node cluster of `dpms node start` daemons with pools on tmpfs (local-cluster.ts) and
//     `dpms mount --foreground` on a directory (local-mount.ts), all children of this process;
//   - bindfs: bindfs over a tmpfs directory, a FUSE file system in C (libfuse2), the FUSE peer;
//   - tmpfs: a directory on tmpfs, the kernel's own file system and so the limit.
// Each target can say how much CPU its server processes have used so far (/proc/PID/stat), so that
// the benchmark can show where a workload's time goes; stop() ends what the target started, by PID.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startLocalCluster, type LocalCluster } from './local-cluster';
import { startDpmsMount, startFuseServer, type FuseServer } from './local-mount';

export const FS_TARGETS = ['dpms', 'bindfs', 'tmpfs'] as const;
export type FsTargetName = typeof FS_TARGETS[number];

/** CPU seconds (user + system) used so far; undefined where the target has no such process. */
export interface CpuSample {
  /** The FUSE server: the dpms mount process, or bindfs. */
  readonly server?: number;
  /** dpms's node daemons together. */
  readonly nodes?: number;
}

export interface FsTarget {
  readonly name: FsTargetName;
  /** Where the workloads run: an empty directory of the file system under test. */
  readonly dir: string;
  /** A FUSE mount: the kernel caches its names and attributes for 1 s (libfuse's default, and dpms's). */
  readonly fuse: boolean;
  cpu(): CpuSample;
  /** The PIDs this target started, for the log ("<what> pid N"). */
  describePids(): string;
  /** The last lines its processes printed, to explain a failure. */
  outputTail(): string;
  /** Unmount and stop everything it started, by PID. Idempotent. */
  stop(): Promise<void>;
}

let clockTicksPerSecond: number | undefined;

/** USER_HZ, the unit of /proc/PID/stat's times (100 on every Linux we know, but ask). */
function clockTicks(): number {
  if (clockTicksPerSecond === undefined) {
    const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const value = Number(result.stdout?.trim());
    clockTicksPerSecond = Number.isInteger(value) && value > 0 ? value : 100;
  }
  return clockTicksPerSecond;
}

/** User + system CPU seconds of a process (all its threads, living and ended), or undefined when it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
  // Then field 3 (state) is at index 0, so utime (field 14) is at 11 and stime (15) at 12.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks / clockTicks() : undefined;
}

function sumCpu(pids: Iterable<number>): number | undefined {
  let total = 0;
  for (const pid of pids) {
    const seconds = processCpuSeconds(pid);
    if (seconds === undefined) return undefined;
    total += seconds;
  }
  return total;
}

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

function exitNote(server: FuseServer): string {
  const status = server.exitStatus();
  return status === undefined ? '' : `, exited: ${status}`;
}

export interface DpmsTargetOptions {
  /** The benchmark's scratch directory (on tmpfs): the mount point goes in it. */
  readonly scratch: string;
  /** Where the cluster's directory (config and pools) goes. */
  readonly base: string;
  readonly poolBytes: number;
  readonly transport: 'local' | 'tcp';
  readonly log: (text: string) => void;
}

export async function startDpmsTarget(options: DpmsTargetOptions): Promise<FsTarget> {
  let cluster: LocalCluster | undefined;
  let mount: FuseServer | undefined;
  const stop = async (): Promise<void> => {
    // The mount first, so that no mount process is left waiting on nodes that are gone.
    await mount?.stop();
    await cluster?.stop();
  };
  const outputTail = (): string => [
    ...(mount ? [`--- dpms mount (pid ${mount.pid}${exitNote(mount)}), last output:\n${tail(mount.output(), 20)}`] : []),
    ...(cluster ? cluster.config.nodes.map((node) => `--- node ${node.id}, last output:\n${tail(cluster!.outputTail(node.id), 20)}`) : []),
  ].join('\n');
  try {
    options.log(`starting a 3-node dpms cluster (transport ${options.transport}, pools of ${options.poolBytes / (1024 * 1024)} MiB under ${options.base}) ...`);
    cluster = await startLocalCluster({ name: 'bench-fs', poolBytes: options.poolBytes, dir: options.base, transport: options.transport });
    options.log(`  node pids ${[...cluster.pids().values()].join(', ')}`);
    const dir = path.join(options.scratch, 'dpms');
    fs.mkdirSync(dir);
    options.log('mounting it (dpms mount --foreground) ...');
    mount = await startDpmsMount({ configPath: cluster.configPath, dir });
    options.log(`  mount pid ${mount.pid} on ${dir}`);
  } catch (error) {
    await stop();
    throw error;
  }
  const started = { cluster, mount };
  return {
    name: 'dpms', dir: started.mount.dir, fuse: true,
    cpu: () => ({ server: processCpuSeconds(started.mount.pid), nodes: sumCpu(started.cluster.pids().values()) }),
    describePids: () => `mount pid ${started.mount.pid}, node pids ${[...started.cluster.pids().values()].join(', ')}`,
    outputTail, stop,
  };
}

/**
 * bindfs in the foreground (-f, so that it stays our child and is stopped by PID), single-threaded as
 * by default, with big_writes: without it libfuse2 hands the file system 4-KiB writes, and the peer
 * for 1-MiB writes should take them as large as FUSE allows (128 KiB for libfuse2).
 */
export const BINDFS_OPTIONS = ['-f', '--no-allow-other', '-o', 'big_writes'] as const;

export async function startBindfsTarget(scratch: string, executable: string, log: (text: string) => void): Promise<FsTarget> {
  const source = path.join(scratch, 'bindfs-source');
  const dir = path.join(scratch, 'bindfs');
  fs.mkdirSync(source);
  fs.mkdirSync(dir);
  log(`mounting bindfs ${BINDFS_OPTIONS.join(' ')} over ${source} ...`);
  const server = await startFuseServer({ label: 'bindfs', command: executable, args: [...BINDFS_OPTIONS, source, dir], dir });
  log(`  bindfs pid ${server.pid} on ${dir}`);
  return {
    name: 'bindfs', dir, fuse: true,
    cpu: () => ({ server: processCpuSeconds(server.pid) }),
    describePids: () => `bindfs pid ${server.pid}`,
    outputTail: () => `--- bindfs (pid ${server.pid}${exitNote(server)}), last output:\n${tail(server.output(), 20)}`,
    stop: () => server.stop(),
  };
}

export function startTmpfsTarget(scratch: string): FsTarget {
  const dir = path.join(scratch, 'tmpfs');
  fs.mkdirSync(dir);
  return {
    name: 'tmpfs', dir, fuse: false,
    cpu: () => ({}),
    describePids: () => 'no processes',
    outputTail: () => '',
    stop: async () => {},
  };
}
