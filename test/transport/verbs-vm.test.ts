// The 'verbs' provider in npm test: on this host (no RDMA device) it must fail with typed errors instead
// of crashing, and inside the soft-RoCE VM (scripts/rxe-vm.sh) its own suite
// (test/native/verbs.vmtest.ts) and the shared transport conformance suite
// (test/transport/verbs.conformance.ts) must pass against a real verbs device. The guest's TAP output is
// streamed with a "[vm] " prefix, so that its lines are never read as this file's own test results.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { connect, serve } from '../../native';

const root = path.resolve(__dirname, '..', '..', '..');
const secret = Buffer.alloc(32, 3);
const hasRdma = fs.existsSync('/dev/infiniband');

function hasCode(code: string): (error: unknown) => true {
  return (error: unknown) => {
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.equal((error as NodeJS.ErrnoException).code, code, error.message);
    return true;
  };
}

test('without an RDMA device, verbsServe throws and verbsConnect rejects DPMS_UNSUPPORTED', { skip: hasRdma && 'this machine has RDMA devices' }, async () => {
  assert.throws(
    () => serve('verbs', { host: '127.0.0.1', port: 0, secret, nodeId: 1, regions: [], onEvent: () => undefined }),
    (error: unknown) => hasCode('DPMS_UNSUPPORTED')(error) && /no RDMA device/.test((error as Error).message),
  );
  await assert.rejects(connect('verbs', { host: '127.0.0.1', port: 7471, secret }), hasCode('DPMS_UNSUPPORTED'));
});

test('verbs arguments are checked before the device: DPMS_INVALID_ARGUMENT', () => {
  const base = { host: '127.0.0.1', port: 0, secret, nodeId: 1, regions: [], onEvent: () => undefined };
  assert.throws(() => serve('verbs', { ...base, secret: Buffer.alloc(4) }), hasCode('DPMS_INVALID_ARGUMENT'));
  assert.throws(() => serve('verbs', { ...base, port: -1 }), hasCode('DPMS_INVALID_ARGUMENT'));
  assert.throws(() => serve('verbs', { ...base, regions: [{}] as never }), hasCode('DPMS_INVALID_ARGUMENT'));
  assert.throws(() => serve('verbs', { ...base, maxMessageBytes: 32 * 1024 * 1024 }), hasCode('DPMS_INVALID_ARGUMENT'));
  assert.throws(() => connect('verbs', { host: '127.0.0.1', port: 0, secret }), hasCode('DPMS_INVALID_ARGUMENT'));
  assert.throws(() => connect('verbs', { host: '127.0.0.1', port: 1, secret, timeoutMs: 0 }), hasCode('DPMS_INVALID_ARGUMENT'));
});

test('the verbs suite passes inside the soft-RoCE VM', { timeout: 12 * 60 * 1000 }, async () => {
  const script = path.join(root, 'scripts', 'rxe-vm.sh');
  // The provider's own suite, then the conformance suite every provider passes (test/transport/conformance.ts).
  const suites = [path.join('dist', 'test', 'native', 'verbs.vmtest.js'), path.join('dist', 'test', 'transport', 'verbs.conformance.js')];
  for (const suite of suites) assert.ok(fs.existsSync(path.join(root, suite)), `${suite} is built`);
  // --test-force-exit: about one guest run in five keeps a verbs server's rdma_cm poll handle
  // referenced after every test passed (a known leak, see the closing note of issue 3); without it
  // the guest would idle until the VM's timeout.
  const child = spawn(script, ['--timeout', '600', '--', 'node', '--test', '--test-force-exit', '--test-concurrency=1', '--test-reporter=tap', ...suites], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let partial = '';
  const relay = (chunk: Buffer): void => {
    output += chunk.toString();
    partial += chunk.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) process.stdout.write(`[vm] ${line}\n`);
  };
  child.stdout.on('data', relay);
  child.stderr.on('data', relay);
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (partial !== '') process.stdout.write(`[vm] ${partial}\n`);
  assert.equal(status, 0, 'scripts/rxe-vm.sh and the guest suite exit 0');
  const passed = /^# pass (\d+)$/m.exec(output);
  const failed = /^# fail (\d+)$/m.exec(output);
  assert.ok(passed !== null && Number(passed[1]) > 0, 'the guest reported passing tests');
  assert.ok(failed !== null && Number(failed[1]) === 0, 'the guest reported no failures');
});
