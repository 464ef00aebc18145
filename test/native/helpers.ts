// Shared helpers for the native addon tests: unique pool paths that are removed afterwards, error-code
// matching, and forcing a garbage collection from inside a test.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';

let counter = 0;

/** A fresh path in `dir` (default /dev/shm) for a pool file; run `cleanup` to remove every one made. */
export function poolPath(tag: string, dir = '/dev/shm'): string {
  const file = path.join(dir, `dpms-native-test-${process.pid}-${Date.now()}-${counter++}-${tag}.pool`);
  created.push(file);
  return file;
}

const created: string[] = [];

export function cleanup(): void {
  for (const file of created.splice(0)) fs.rmSync(file, { force: true });
}

/** Assert that fn throws an Error whose `code` is `code`. */
export function assertCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.equal((error as NodeJS.ErrnoException).code, code, `wrong code for: ${error.message}`);
    return true;
  });
}

v8.setFlagsFromString('--expose-gc');
const gcFunction = vm.runInNewContext('gc') as () => void;

/** Full GCs with turns of the event loop between them, so that deferred finalizers get to run. */
export async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gcFunction();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Whether this process currently maps `file` (from /proc/self/maps). */
export function isMapped(file: string): boolean {
  return fs.readFileSync('/proc/self/maps', 'utf8').includes(file);
}
