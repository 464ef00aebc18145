// Proves that DpmsLevel passes abstract-level's conformance suite on a real cluster: runs
// test/kvs/abstract-level-suite.js as a child process, prints its TAP output into this run's log,
// and checks tape's summary (no failed assertion, a plausible number of passed ones) and the plain
// `N passed, N failed` line agree.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { it } from 'node:test';

const SUITE = path.join(__dirname, 'abstract-level-suite.js');
/** abstract-level 3.1 makes about 4700 assertions with every feature DpmsLevel declares; far fewer means tests were skipped. */
const MIN_ASSERTIONS = 4000;
const SUITE_TIMEOUT_MS = 240_000;

interface SuiteRun {
  readonly exitCode: number | null;
  readonly output: string;
}

async function runSuite(args: readonly string[]): Promise<SuiteRun> {
  const child = spawn(process.execPath, [SUITE, ...args, '--timeout-ms', String(SUITE_TIMEOUT_MS)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  // Streamed as it comes, so the TAP reaches the log even when the run hangs or is killed.
  const print = (data: Buffer): void => {
    output += data.toString();
    process.stdout.write(data);
  };
  child.stdout.on('data', print);
  child.stderr.on('data', print);
  // The suite has its own watchdog; this one is for a child that cannot even run it. SIGTERM first so
  // that it stops its cluster nodes, SIGKILL if it does not go.
  const timer = setTimeout(() => {
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
  }, SUITE_TIMEOUT_MS + 30_000);
  try {
    const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { exitCode, output };
  } finally {
    clearTimeout(timer);
  }
}

function count(output: string, pattern: RegExp): number | undefined {
  const match = pattern.exec(output);
  return match === null ? undefined : Number(match[1]);
}

// The 3-node tcp run is npm test's last step (package.json), where its `N passed, N failed` line reaches the log plain.
for (const [nodes, transport] of [[1, 'local']] as const) {
  it(`DpmsLevel passes the abstract-level suite on a ${nodes}-node cluster (${transport})`, { timeout: SUITE_TIMEOUT_MS + 60_000 }, async () => {
    const { exitCode, output } = await runSuite(['--nodes', String(nodes), '--transport', transport]);
    const pass = count(output, /^# pass\s+(\d+)$/m);
    const fail = count(output, /^# fail\s+(\d+)$/m) ?? 0;
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(output);
    assert.ok(summary, 'the suite printed its `N passed, N failed` line');
    assert.equal(fail, 0, `${fail} assertions failed (see the TAP output above)`);
    assert.ok(pass !== undefined && pass > MIN_ASSERTIONS, `tape reported ${pass} passed assertions, expected more than ${MIN_ASSERTIONS}`);
    assert.equal(Number(summary[1]), pass, 'the plain summary counts what tape counted');
    assert.equal(Number(summary[2]), 0);
    assert.equal(exitCode, 0);
  });
}
