// How every CLI command ends: a documented exit status, and typed errors printed as one line with
// their code instead of a stack trace. Anything that is not a DpmsError is a bug and shows its stack.

import { isDpmsError } from '../../pdsm';

export const EXIT = {
  ok: 0,
  /** check: the pool (or cluster) has problems. */
  problems: 1,
  /** bad command line. */
  usage: 2,
  /** an operating error (DPMS_* code printed). */
  failed: 3,
} as const;

export async function run(body: () => number | Promise<number>): Promise<void> {
  try {
    process.exitCode = await body();
  } catch (error) {
    if (isDpmsError(error)) {
      console.error(`dpms: ${error.code}: ${error.message}`);
      process.exitCode = error.code === 'DPMS_INVALID_ARGUMENT' ? EXIT.usage : EXIT.failed;
      return;
    }
    throw error;
  }
}

/** How often a child of `dpms up` looks whether its parent is still there. */
const PARENT_POLL_MS = 500;

/**
 * Resolves at the first SIGINT or SIGTERM: how long-running commands (node start, kv serve, mount)
 * wait to stop cleanly. With env DPMS_STOP_WITH_PARENT=1 (the daemons `dpms up` starts) it also
 * resolves when the parent process is gone, so a supervisor killed with SIGKILL never leaves
 * daemons behind: the orphan is re-parented (its ppid changes) and stops as if it got SIGTERM.
 */
export function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      clearInterval(timer);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    if (process.env.DPMS_STOP_WITH_PARENT === '1') {
      const parent = process.ppid;
      timer = setInterval(() => {
        if (process.ppid !== parent) {
          console.error(`dpms: parent process ${parent} is gone; stopping (DPMS_STOP_WITH_PARENT=1)`);
          stop();
        }
      }, PARENT_POLL_MS);
      // The poll alone must not keep the process alive: it only watches while the daemon serves.
      timer.unref();
    }
  });
}
