// Proves `dpms bench kv` runs end to end through the CLI in its quick mode: it prints a row for every
// target and workload (measured, or skipped with a reason), measures the in-process targets, stops
// every server and node it started (by PID) and removes its pools; that every bad option is a usage
// error (exit 2, DPMS_INVALID_ARGUMENT); and that redis-benchmark's CSV is parsed. No timing is asserted.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { parseRedisBenchmarkCsv } from '../../scripts/commands/bench-kv';
import { isAlive, runCli } from '../support/cli';

const TARGETS = ['dpms-local', 'dpms-tcp', 'classic-level', 'gateway', 'redis'];
const WORKLOADS = ['load', 'A', 'B', 'C', 'E'];

const scratch = (): string[] => fs.readdirSync('/dev/shm').filter((name) => name.startsWith('dpms-bench-kv-')).sort();

test('quick mode prints a row per target and workload and cleans up after itself', () => {
  const before = scratch();
  const result = runCli(['bench', 'kv', '--records', '2000', '--ops', '2000', '--value-sizes', '100'], 60_000);
  const shown = `status ${result.status}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
  assert.equal(result.status, 0, shown);
  const lines = result.stdout.split('\n');
  for (const workload of WORKLOADS) {
    for (const target of TARGETS) {
      const row = lines.find((line) => new RegExp(`^${workload}\\s+${target}\\s`).test(line));
      assert.ok(row, `no row for ${workload} on ${target}\n${shown}`);
      const measured = /^\S+\s+\S+\s+\d+\s+\d+\.\d\s+\d+\.\d/.test(row);
      assert.ok(measured || /skipped: \S/.test(row), `row neither measured nor skipped with a reason: ${row}`);
      // The in-process targets have no reason to be skipped, and scans work on them.
      if (target === 'dpms-local' || target === 'dpms-tcp' || target === 'classic-level') assert.ok(measured, `${target} not measured: ${row}`);
      if (measured) assert.doesNotMatch(row, /reads found nothing/, `a read missed a loaded key: ${row}`);
    }
  }
  assert.match(result.stdout, /^A\s+dpms-local\s.*x classic-level\s+>= 1x: goal (met|missed)/m);
  for (const server of ['redis', 'gateway']) {
    for (const test of ['SET', 'GET']) {
      for (const pipeline of [1, 16]) assert.match(result.stdout, new RegExp(`^${server}\\s+${test}\\s+${pipeline}\\s+(\\d+|-)`, 'm'), `redis-benchmark row ${server} ${test} -P ${pipeline}`);
    }
  }
  assert.match(result.stdout, /NOT durable/);
  // Everything the run started is gone: node daemons and redis-server by PID, pools and directories.
  const pids = [...result.stderr.matchAll(/node pids ([\d, ]+)/g)].flatMap((match) => match[1].split(', ').map(Number));
  pids.push(...[...result.stderr.matchAll(/(?:redis-server|gateway) pid (\d+)/g)].map((match) => Number(match[1])));
  assert.ok(pids.length >= 3, `no PIDs reported:\n${result.stderr}`);
  for (const pid of pids) assert.equal(isAlive(pid), false, `process ${pid} outlived the benchmark`);
  assert.deepEqual(scratch(), before, 'the benchmark left files in /dev/shm');
});

test('every bad option is a usage error naming the option', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--records', '0'], /--records/],
    [['--records', '2.5'], /--records/],
    [['--ops', '10'], /--ops/],
    [['--seconds', '-1'], /--seconds/],
    [['--value-sizes', '100,abc'], /--value-sizes/],
    [['--value-sizes', '0'], /--value-sizes/],
    [['--workloads', 'a,z'], /--workloads/],
    [['--targets', 'dpms-local,mongodb'], /--targets/],
    [['--targets', ','], /--targets/],
    [['--concurrency', '0'], /--concurrency/],
    [['--concurrency', '100000'], /--concurrency/],
    [['--dir', '/nonexistent/dpms-bench'], /--dir/],
    [['--records', '10000000', '--value-sizes', '1048576'], /tmpfs/],
  ];
  for (const [args, message] of cases) {
    const result = runCli(['bench', 'kv', ...args], 20_000);
    assert.equal(result.status, 2, `${args.join(' ')}: status ${result.status}\n${result.stderr}`);
    assert.match(result.stderr, /DPMS_INVALID_ARGUMENT/, args.join(' '));
    assert.match(result.stderr, message, args.join(' '));
  }
});

test('redis-benchmark CSV is parsed by column name, in microseconds; garbage is a typed error', () => {
  const csv = [
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"',
    '"SET","42553.19","0.489","0.120","0.423","0.639","3.615","3.823"',
    '"GET","47619.05","0.419","0.112","0.407","0.615","0.767","1.991"',
    '',
  ].join('\n');
  assert.deepEqual(parseRedisBenchmarkCsv(csv), [
    { test: 'SET', opsPerSecond: 42553.19, latencyUsP50: 423, latencyUsP99: 3615 },
    { test: 'GET', opsPerSecond: 47619.05, latencyUsP50: 407, latencyUsP99: 767 },
  ]);
  assert.throws(() => parseRedisBenchmarkCsv('ERROR: connection refused'), { code: 'DPMS_PROTOCOL' });
  assert.throws(() => parseRedisBenchmarkCsv('"test","rps"\n"SET","x"'), { code: 'DPMS_PROTOCOL' });
});
