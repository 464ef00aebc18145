// Proves `dpms doctor` reports this machine truthfully and exits with its documented status: FUSE and
// libpmem ok, pools on emulated PM (a note), the missing RDMA device said plainly (a warning: exit 0,
// --strict 1), --json parseable, --dir handled (not yet created: a note; a file or pools that cannot
// fit: FAIL and 1); that the native facts behind it (rdmaDevices, pmemInfo) are right here; and, inside
// the soft-RoCE VM (scripts/rxe-vm.sh), that it sees rxe0 with an ACTIVE port and its GIDs.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { pmemInfo, rdmaDevices } from '../../native';
import type { CheckResult } from '../../scripts/commands/doctor-checks';
import { runCli } from '../support/cli';

const root = path.resolve(__dirname, '..', '..', '..');
const hasRdma = fs.existsSync('/sys/class/infiniband') && fs.readdirSync('/sys/class/infiniband').length > 0;
const STATUSES = ['ok', 'note', 'warn', 'fail'];

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-doctor-test-'));
const shmFiles: string[] = [];
after(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
  for (const file of shmFiles) fs.rmSync(file, { force: true });
});

function doctorJson(...args: string[]): { status: number | null; checks: CheckResult[] } {
  const result = runCli(['doctor', '--json', ...args], 60_000);
  const checks = JSON.parse(result.stdout) as CheckResult[];
  assert.ok(Array.isArray(checks), 'doctor --json prints an array');
  for (const check of checks) {
    assert.equal(typeof check.check, 'string');
    assert.ok(STATUSES.includes(check.status), `status of ${check.check}: ${check.status}`);
    assert.equal(typeof check.message, 'string');
  }
  return { status: result.status, checks };
}

function find(checks: readonly CheckResult[], name: string): CheckResult {
  const found = checks.find((check) => check.check === name);
  assert.ok(found, `a ${name} check in ${checks.map((check) => check.check).join(', ')}`);
  return found;
}

test('dpms doctor on this machine: FUSE and libpmem ok, pools emulated, no RDMA device said plainly, exit 0', { skip: hasRdma && 'this machine has RDMA devices' }, () => {
  const result = runCli(['doctor'], 60_000);
  assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
  assert.match(result.stdout, /^warn\s+rdma\s+no RDMA device: the verbs transport cannot run here; the tcp and local transports work/m);
  assert.match(result.stdout, /^\s+fix: install an RDMA NIC/m);
  assert.match(result.stdout, /^ok\s+fuse-device\s+\/dev\/fuse exists and opens read-write/m);
  assert.match(result.stdout, /^ok\s+fusermount\s/m);
  assert.match(result.stdout, /^ok\s+libpmem\s+libpmem API \d+\.\d+/m);
  assert.match(result.stdout, /^note\s+pool-dir\s+emulated PM: \/dev\/shm is on tmpfs/m);
  assert.match(result.stdout, /^ok\s+memory\s+pools need 768\.0 MiB \(3 x 256\.0 MiB, the dpms up default\)/m);
  assert.match(result.stdout, /^summary: \d+ ok, \d+ notes?, 1 warning, 0 failures: dpms can run here, with limits .*\(exit 0\)$/m);
  // The probe file is gone.
  assert.deepEqual(fs.readdirSync('/dev/shm').filter((name) => name.startsWith('.dpms-doctor-')), []);
});

test('dpms doctor --strict counts the RDMA warning: exit 1', { skip: hasRdma && 'this machine has RDMA devices' }, () => {
  const result = runCli(['doctor', '--strict'], 60_000);
  assert.equal(result.status, 1, result.stdout);
  assert.match(result.stdout, /--strict counts warnings \(exit 1\)$/m);
});

test('dpms doctor --json: every check with a status, RDMA a warning with its facts', { skip: hasRdma && 'this machine has RDMA devices' }, () => {
  const { status, checks } = doctorJson();
  assert.equal(status, 0);
  for (const name of ['node', 'addon', 'fuse-device', 'fuse-kernel', 'fusermount', 'fuse-conf', 'libpmem']) assert.equal(find(checks, name).status, 'ok', name);
  const rdma = find(checks, 'rdma');
  assert.equal(rdma.status, 'warn');
  assert.ok(rdma.fix !== undefined && /rdma link add rxe0 type rxe/.test(rdma.fix), rdma.fix);
  assert.deepEqual((rdma.details as { devices: unknown[] }).devices, []);
  const poolDir = find(checks, 'pool-dir');
  assert.equal(poolDir.status, 'note');
  assert.equal((poolDir.details as { isPmem: boolean }).isPmem, false);
  assert.equal((poolDir.details as { fsType: string }).fsType, 'tmpfs');
  assert.equal(find(checks, 'memory').status, 'ok');
  assert.ok(['ok', 'note'].includes(find(checks, 'port').status));
});

test('dpms doctor --dir: a directory not made yet is a note (defaults checked); a file is a FAIL', () => {
  const missing = doctorJson('--dir', path.join(scratch, 'not-yet'));
  assert.equal(missing.status, 0);
  const dir = find(missing.checks, 'dir');
  assert.equal(dir.status, 'note');
  assert.match(dir.message, /does not exist yet: `dpms up --dir .*` creates it; checked with dpms up's defaults/);
  assert.match(find(missing.checks, 'memory').message, /the dpms up default/);

  const file = path.join(scratch, 'a-file');
  fs.writeFileSync(file, 'x');
  const notDir = runCli(['doctor', '--dir', file], 60_000);
  assert.equal(notDir.status, 1, notDir.stdout);
  assert.match(notDir.stdout, /^FAIL\s+dir\s+.* is not a directory$/m);
});

test('dpms doctor --dir reads cluster.yaml: its pools and ports; pools that cannot fit are a FAIL', () => {
  const dir = path.join(scratch, 'cluster');
  fs.mkdirSync(dir);
  const pool = path.join('/dev/shm', `dpms-doctor-test-${process.pid}.pool`);
  const write = (size: string): void => fs.writeFileSync(path.join(dir, 'cluster.yaml'),
    `cluster: doctor-test\nsecret: "0123456789abcdef0123"\nnodes:\n  - { id: 1, host: 127.0.0.1, port: 7799, pool: ${pool}, size: ${size} }\n`);
  write('64M');
  const fits = doctorJson('--dir', dir);
  assert.equal(find(fits.checks, 'config').status, 'ok');
  const memory = find(fits.checks, 'memory');
  assert.equal(memory.status, 'ok');
  assert.match(memory.message, /pools need 64\.0 MiB \(1 x 64\.0 MiB, cluster\.yaml\)/);
  assert.ok(fits.checks.some((check) => check.check === 'port' && /127\.0\.0\.1:7799 \(node 1\)/.test(check.message)));

  write('1000T');
  const tooBig = runCli(['doctor', '--dir', dir], 60_000);
  assert.equal(tooBig.status, 1, tooBig.stdout);
  assert.match(tooBig.stdout, /^FAIL\s+memory\s+pools need 1000\.0 TiB .*: they do not fit$/m);

  fs.writeFileSync(path.join(dir, 'cluster.yaml'), 'nodes: 3\n');
  const broken = runCli(['doctor', '--dir', dir], 60_000);
  assert.equal(broken.status, 1, broken.stdout);
  assert.match(broken.stdout, /^FAIL\s+config\s+.*cluster\.yaml does not load/m);
});

test('native rdmaDevices() is an empty list without RDMA; pmemInfo says a /dev/shm file is not PM', { skip: hasRdma && 'this machine has RDMA devices' }, () => {
  assert.deepEqual(rdmaDevices(), []);
  const file = path.join('/dev/shm', `dpms-doctor-test-${process.pid}.probe`);
  shmFiles.push(file);
  fs.writeFileSync(file, Buffer.alloc(1024 * 1024));
  const info = pmemInfo(file);
  assert.equal(info.isPmem, false);
  assert.equal(info.mappedBytes, 1024 * 1024);
  assert.equal(info.libpmemVersion.major, 1);
  assert.equal(info.libpmemVersion.check, null);
  assert.throws(() => pmemInfo(path.join(scratch, 'missing')), (error: NodeJS.ErrnoException) => error.code === 'DPMS_NOT_FOUND');
  assert.throws(() => pmemInfo(42 as unknown as string), (error: NodeJS.ErrnoException) => error.code === 'DPMS_INVALID_ARGUMENT');
});

// The VM boots Debian's kernel under software emulation; it is unavailable where neither qemu nor apt
// (to install it on first use) exists.
const vmScript = path.join(root, 'scripts', 'rxe-vm.sh');
const onPath = (name: string): boolean => spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
const vmSkip = !fs.existsSync(vmScript) ? 'scripts/rxe-vm.sh is missing'
  : !onPath('qemu-system-x86_64') && !onPath('apt-get') ? 'no qemu-system-x86_64 (and no apt-get to install it)' : false;

test('inside the soft-RoCE VM, doctor sees rxe0 with an ACTIVE port and a RoCE v2 GID', { skip: vmSkip, timeout: 5 * 60_000 }, async () => {
  // Only the checks module, not the whole CLI: loading every command's modules over the VM's 9p root
  // file system under CPU emulation takes a minute by itself. Same checks, same JSON.
  const script = "require('./dist/scripts/commands/doctor-checks').runDoctorChecks().then((r) => console.log('DOCTOR-JSON ' + JSON.stringify(r)))";
  const child = spawn(vmScript, ['--timeout', '240', '--', 'node', '-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(status, 0, output.slice(-4000));
  const line = output.split('\n').find((text) => text.startsWith('DOCTOR-JSON '));
  assert.ok(line, output.slice(-4000));
  const checks = JSON.parse(line.slice('DOCTOR-JSON '.length)) as CheckResult[];
  assert.equal(find(checks, 'rdma').status, 'ok');
  const device = checks.find((check) => check.check === 'rdma-device' && /^rxe0 /.test(check.message));
  assert.ok(device, JSON.stringify(checks, null, 1));
  assert.equal(device.status, 'ok', device.message);
  const details = device.details as { ports: { state: string; linkLayer: string; gids: { index: number; gid: string; type?: string }[] }[] };
  assert.equal(details.ports[0].state, 'ACTIVE');
  assert.equal(details.ports[0].linkLayer, 'Ethernet');
  // GID index 1 is the RoCE v2 GID of 10.200.0.1 (an IPv4-mapped address).
  const gid = details.ports[0].gids.find((entry) => entry.index === 1);
  assert.ok(gid, JSON.stringify(details.ports[0].gids));
  assert.equal(gid.gid, '0000:0000:0000:0000:0000:ffff:0ac8:0001');
  assert.equal(gid.type, 'RoCE v2');
  assert.match(device.message, /port 1 ACTIVE \(LINK_UP\), Ethernet \(RoCE\)/);
});
