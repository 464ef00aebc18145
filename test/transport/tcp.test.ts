// Proves that the 'tcp' provider passes the transport conformance suite, and that
// `dpms bench transport` runs end to end (small iteration count; timings are printed, never asserted).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { conformance } from './conformance';

conformance('tcp');

const CLI = path.join(__dirname, '../../scripts/cli.js');

function dpms(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('dpms bench transport measures tcp and local, reports verbs as available or not, and prints the ratios', () => {
  const text = dpms('bench', 'transport', '--iterations', '200');
  assert.equal(text.status, 0, `stdout: ${text.stdout}\nstderr: ${text.stderr}`);
  for (const provider of ['tcp', 'local']) {
    for (const operation of ['read 8 B', 'write 64 B + persist', 'CAS', 'read 1 MiB', 'read 1 MiB into buffer', 'write 1 MiB']) {
      assert.match(text.stdout, new RegExp(`^${provider}\\s+${operation.replace(/[+]/g, '\\+')}\\s+(1|16)\\s+\\d+`, 'm'), `${provider} ${operation}`);
    }
  }
  assert.match(text.stdout, /^verbs\s+(unavailable: DPMS_[A-Z_]+|read 8 B)/m);
  assert.match(text.stdout, /tcp 8-B READ p50 \/ raw round trip p50: \d+\.\d+x/);
  assert.match(text.stdout, /READ \(into caller buffers, as RDMA READs land in registered memory\) bandwidth \(16 in flight\) \/ raw: \d+\.\d+x/);
  assert.match(text.stdout, /READ \(a fresh Buffer per read\) bandwidth \(16 in flight\) \/ raw: \d+\.\d+x/);

  const json = dpms('bench', 'transport', '--provider', 'tcp', '--iterations', '100', '--json');
  assert.equal(json.status, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { providers: { tcp: { available: boolean; rows: Array<{ name: string; inFlight: number; latencyUsP50: number }> } } };
  assert.equal(parsed.providers.tcp.available, true);
  assert.equal(parsed.providers.tcp.rows.length, 12);
  for (const row of parsed.providers.tcp.rows) assert.ok(row.latencyUsP50 > 0, `${row.name}: no latency`);

  const bad = dpms('bench', 'transport', '--provider', 'pigeon');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /unknown provider 'pigeon'/);
});
