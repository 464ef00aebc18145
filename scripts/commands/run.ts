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

/** Resolves at the first SIGINT or SIGTERM: how long-running commands (node start, kv serve) wait to stop cleanly. */
export function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
