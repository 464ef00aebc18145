// Test harness for pDFS mounts: starts `dpms mount --foreground` (the real CLI) as a child process
// on a fresh directory, waits until the mount is ready, and stops it with SIGTERM (or kill -9 for
// crash tests); whatever happens, the directory is unmounted (fusermount3 -uz) and removed. The
// child process itself is scripts/commands/local-mount.ts's, which `dpms bench fs` uses too.
// Tests drive the mount only from this process's async fs calls or from child processes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { forceUnmount, isMounted, startDpmsMount } from '../../scripts/commands/local-mount';
import type { TestCluster } from './cluster';

export { forceUnmount, isMounted };

export interface TestMount {
  readonly dir: string;
  readonly pid: number;
  output(): string;
  /** SIGTERM: the mount process unmounts and exits cleanly. */
  stop(): Promise<void>;
  /** SIGKILL: no clean shutdown; the dead mount is then detached. */
  kill(): Promise<void>;
}

export async function startMount(cluster: TestCluster, options: { dir?: string; provider?: string; extraArgs?: string[] } = {}): Promise<TestMount> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-mnt-'));
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o755);
  const removeDir = (): void => {
    if (!options.dir) fs.rmSync(dir, { recursive: true, force: true });
  };
  let mount;
  try {
    mount = await startDpmsMount({ configPath: cluster.configPath, dir, provider: options.provider, extraArgs: options.extraArgs });
  } catch (error) {
    removeDir();
    throw error;
  }
  const started = mount;
  return {
    dir,
    pid: started.pid,
    output: () => started.output(),
    stop: async () => {
      await started.stop();
      removeDir();
    },
    kill: async () => {
      await started.kill();
      removeDir();
    },
  };
}
