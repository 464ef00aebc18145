// Proves `dpms bench fs` runs end to end through the CLI in its quick mode: every workload's table has
// a number for dpms, bindfs and tmpfs and the ratios, the goal lines say met or missed, and everything
// it started is gone afterwards (node daemons, the mount process and bindfs by PID; no mount left; no
// files left in /dev/shm); that --json reports as many metadata operations as files asked for; that
// every bad option is a usage error; and that fio's JSON is parsed, and fio's failures are typed errors.
// No timing is asserted.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { FIO_WORKLOADS, fioArgs, parseFioJson } from '../../scripts/commands/bench-fs';
import { isAlive, runCli } from '../support/cli';

const TARGETS = ['dpms', 'bindfs', 'tmpfs'];
const METADATA_PHASES = ['create', 'stat', 'unlink'];

const scratch = (): string[] => fs.readdirSync('/dev/shm').filter((name) => name.startsWith('dpms-bench-fs-')).sort();
const benchMounts = (): string[] => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((line) => line.includes('dpms-bench-fs-'));

/** The lines of the table titled `<name>: ...`, up to the blank line that ends it. */
function table(stdout: string, name: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.findIndex((line) => line.startsWith(`${name}: `));
  assert.ok(start >= 0, `no table ${name}:\n${stdout}`);
  const end = lines.findIndex((line, index) => index > start && line.trim() === '');
  return lines.slice(start, end < 0 ? undefined : end);
}

test('quick mode measures every workload on dpms, bindfs and tmpfs and cleans up after itself', () => {
  const before = scratch();
  const result = runCli(['bench', 'fs', '--quick'], 50_000);
  const shown = `status ${result.status}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
  assert.equal(result.status, 0, shown);
  const number = '\\d+(\\.\\d+)?';
  // A row: its label, a number (or '-' where the target has no such thing) per target, then the two
  // ratios. CPU times are counted in clock ticks, and a peer's can be 0 ticks: a ratio to it is blank.
  const measured = (rows: string[], label: string, columns: string, ratios: 'ratios' | 'ratios where defined'): void => {
    const row = rows.find((line) => line.startsWith(`${label} `));
    assert.ok(row, `no ${label} row in\n${rows.join('\n')}`);
    const ratio = `\\s+${number}x`;
    const tail = ratios === 'ratios' ? `${ratio}${ratio}` : `(${ratio}){0,2}`;
    assert.match(row, new RegExp(`^${label}${columns}${tail}\\s*$`), row);
  };
  const numbers = `\\s+${number}`.repeat(3);
  for (const { name: workload } of FIO_WORKLOADS) {
    const rows = table(result.stdout, workload);
    assert.deepEqual(rows[1].trim().split(/\s+/), [...TARGETS, 'dpms/bindfs', 'dpms/tmpfs'], rows.join('\n'));
    for (const label of ['MiB/s', 'IOPS', 'clat p50 us', 'clat p99 us']) measured(rows, label, numbers, 'ratios');
    measured(rows, 'fio CPU s', numbers, 'ratios where defined');
    // The FUSE servers' CPU is measured (tmpfs has no server); so is the nodes' (dpms only).
    measured(rows, 'server CPU s', `\\s+${number}\\s+${number}\\s+-`, 'ratios where defined');
    measured(rows, 'server CPU %', `\\s+${number}\\s+${number}\\s+-`, 'ratios where defined');
    assert.match(rows.find((row) => row.startsWith('dpms nodes CPU s'))!, new RegExp(`^dpms nodes CPU s\\s+${number}\\s+-\\s+-\\s*$`));
    assert.doesNotMatch(rows.join('\n'), /failed|skipped/);
  }
  for (const phase of METADATA_PHASES) {
    const rows = table(result.stdout, `metadata ${phase}`);
    for (const label of ['ops/s', 'p50 us', 'p99 us']) measured(rows, label, numbers, 'ratios');
    measured(rows, 'server CPU s', `\\s+${number}\\s+${number}\\s+-`, 'ratios where defined');
    assert.doesNotMatch(rows.join('\n'), /failed|skipped/);
  }
  assert.match(result.stdout, /^ {2}sequential write >= 1x bindfs: \d+\.\d+x: goal (met|missed)$/m);
  assert.match(result.stdout, /^ {2}sequential read >= 1x bindfs: \d+\.\d+x: goal (met|missed)$/m);
  assert.match(result.stdout, /^ {2}metadata >= 0\.5x bindfs \(create, stat and unlink each\): create \d+\.\d+x, stat \d+\.\d+x, unlink \d+\.\d+x: goal (met|missed)$/m);
  // Everything the run started is gone: processes by PID, mounts, pools and directories.
  const pids = [...result.stderr.matchAll(/node pids ([\d, ]+)/g)].flatMap((match) => match[1].split(', ').map(Number));
  pids.push(...[...result.stderr.matchAll(/(?:mount|bindfs) pid (\d+)/g)].map((match) => Number(match[1])));
  assert.equal(pids.length, 5, `expected 3 nodes, a mount and bindfs:\n${result.stderr}`);
  for (const pid of pids) assert.equal(isAlive(pid), false, `process ${pid} outlived the benchmark`);
  assert.deepEqual(benchMounts(), [], 'the benchmark left a mount behind');
  assert.deepEqual(scratch(), before, 'the benchmark left files in /dev/shm');
});

test('--json reports one metadata operation per file and phase, and the fio jobs it ran', () => {
  const result = runCli(['bench', 'fs', '--targets', 'tmpfs', '--size', '4M', '--runtime', '1', '--files', '300', '--concurrency', '3', '--json'], 30_000);
  assert.equal(result.status, 0, result.stderr);
  const report = JSON.parse(result.stdout) as {
    options: { targets: string[]; concurrency: number };
    workloads: Record<string, Record<string, { ios: number; mibPerSecond: number }>>;
    metadata: Record<string, Record<string, { operations: number; opsPerSecond: number }>>;
    goals: Array<{ name: string; met?: boolean }>;
  };
  assert.deepEqual(report.options.targets, ['tmpfs']);
  // 4 MiB in 1-MiB blocks; the random jobs visit each 4-KiB block once (or stop at --runtime).
  assert.equal(report.workloads.seqwrite.tmpfs.ios, 4);
  assert.equal(report.workloads.seqread.tmpfs.ios, 4);
  for (const workload of ['randread', 'randwrite']) {
    const { ios } = report.workloads[workload].tmpfs;
    assert.ok(ios > 0 && ios <= 1024, `${workload}: ${ios} I/Os`);
  }
  for (const phase of METADATA_PHASES) {
    assert.equal(report.metadata[phase].tmpfs.operations, 300, phase);
    assert.ok(report.metadata[phase].tmpfs.opsPerSecond > 0, phase);
    assert.equal(report.metadata[phase].dpms, undefined);
  }
  // Without dpms and bindfs no goal can be judged.
  assert.equal(report.goals.length, 3);
  for (const goal of report.goals) assert.equal(goal.met, undefined, goal.name);
});

test('every bad option is a usage error naming the option', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--size', '1000'], /--size/],
    [['--size', '1.5M'], /--size/],
    [['--size', '100G'], /--size/],
    [['--size', 'lots'], /--size/],
    [['--runtime', '0'], /--runtime/],
    [['--runtime', '2.5'], /--runtime/],
    [['--files', '0'], /--files/],
    [['--files', '2000000'], /--files/],
    [['--concurrency', '0'], /--concurrency/],
    [['--concurrency', '1000'], /--concurrency/],
    [['--targets', 'dpms,ext4'], /--targets/],
    [['--targets', ','], /--targets/],
    [['--dir', '/nonexistent/dpms-bench'], /--dir/],
  ];
  // A directory that is not on a tmpfs (the repository's, normally): neither the limit nor bindfs's source may live there.
  if (fs.statfsSync(__dirname).type !== 0x01021994) cases.push([['--dir', __dirname], /--dir .* not on a tmpfs/]);
  for (const [args, message] of cases) {
    const result = runCli(['bench', 'fs', ...args], 20_000);
    assert.equal(result.status, 2, `${args.join(' ')}: status ${result.status}\n${result.stderr}`);
    assert.match(result.stderr, /DPMS_INVALID_ARGUMENT/, args.join(' '));
    assert.match(result.stderr, message, args.join(' '));
  }
  const transport = runCli(['bench', 'fs', '--transport', 'verbs'], 20_000);
  assert.equal(transport.status, 2, transport.stderr);
  assert.match(transport.stderr, /transport/);
});

test('fio jobs: random ones stop at --runtime, writes end with an fsync', () => {
  const args = (name: string): string[] => fioArgs(FIO_WORKLOADS.find((workload) => workload.name === name)!, '/dev/shm/x', 64 << 20, 7);
  assert.ok(args('seqwrite').includes('--end_fsync=1'));
  assert.ok(!args('seqwrite').some((arg) => arg.startsWith('--runtime')));
  assert.ok(args('randread').includes('--runtime=7'));
  assert.ok(args('randread').includes('--end_fsync=0'));
  for (const name of ['seqwrite', 'randread']) {
    for (const wanted of ['--directory=/dev/shm/x', `--size=${64 << 20}`, '--ioengine=psync', '--direct=0', '--fallocate=none', '--output-format=json']) {
      assert.ok(args(name).includes(wanted), `${name}: ${wanted}`);
    }
  }
});

test("fio's JSON is parsed (notes before it included); failed jobs and garbage are typed errors", () => {
  const job = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
    jobname: 'randread', error: 0, job_runtime: 2000, usr_cpu: 10, sys_cpu: 40,
    read: { io_bytes: 8192 * 4096, bw_bytes: 16 * 1024 * 1024, iops: 4096, total_ios: 8192, clat_ns: { percentile: { '50.000000': 12_000, '99.000000': 80_500 } } },
    write: { io_bytes: 0, bw_bytes: 0, iops: 0, total_ios: 0, clat_ns: { percentile: {} } },
    ...overrides,
  });
  const text = (jobs: unknown[]): string => `note: both iodepth >= 1 and synchronous I/O engine are selected\n${JSON.stringify({ 'fio version': 'fio-3.33', jobs })}`;
  assert.deepEqual(parseFioJson(text([job()]), 'read'), {
    ios: 8192, seconds: 2, mibPerSecond: 16, iops: 4096, latencyUsP50: 12, latencyUsP99: 80.5, fioCpuSeconds: 1,
  });
  assert.throws(() => parseFioJson(text([job({ error: 5 })]), 'read'), { code: 'DPMS_IO', message: /EIO/ });
  assert.throws(() => parseFioJson(text([job()]), 'write'), { code: 'DPMS_PROTOCOL', message: /no writes/ });
  assert.throws(() => parseFioJson(text([job(), job()]), 'read'), { code: 'DPMS_PROTOCOL' });
  const noP99 = job();
  (noP99.read as { clat_ns: { percentile: Record<string, number> } }).clat_ns.percentile = { '50.000000': 1 };
  assert.throws(() => parseFioJson(text([noP99]), 'read'), { code: 'DPMS_PROTOCOL', message: /99th/ });
  assert.throws(() => parseFioJson('fio: failed to open file', 'read'), { code: 'DPMS_PROTOCOL' });
  assert.throws(() => parseFioJson('{"jobs": [{"error": "x"}]}', 'read'), { code: 'DPMS_PROTOCOL' });
});
