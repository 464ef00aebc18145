// Proves that the cluster config is parsed and validated field by field: a good file yields the
// nodes with resolved paths, and every kind of mistake is a DPMS_CONFIG error naming the field; the
// CLI turns them into exit status 3 (usage mistakes into 2).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { isDpmsError, parseClusterConfig } from '../../pdsm';
import { CLI } from '../support/cluster';

const GOOD = `cluster: c1
secret: "0123456789abcdef"
nodes:
  - { id: 1, host: 127.0.0.1, port: 7701, pool: a.pool, size: 64M, transport: tcp }
  - { id: 2, host: 10.0.0.2, port: 7702, pool: /pm/b.pool, size: 1G, transport: verbs }
`;

it('parses a good config, resolving pool paths against the config directory', () => {
  const config = parseClusterConfig(GOOD, 'test', '/etc/dpms');
  assert.equal(config.name, 'c1');
  assert.equal(config.leaseMs, 3000);
  assert.equal(config.secret.toString(), '0123456789abcdef');
  assert.deepEqual(config.nodes.map((node) => [node.id, node.pool, node.sizeBytes, node.transport, node.lanes]),
    [[1, '/etc/dpms/a.pool', 64 << 20, 'tcp', 32], [2, '/pm/b.pool', 1 << 30, 'verbs', 32]]);
  assert.equal(parseClusterConfig(GOOD.replace('transport: tcp', 'transport: tcp, lanes: 64'), 'test', '/').nodes[0].lanes, 64);
});

it('refuses every kind of mistake with DPMS_CONFIG naming the field', () => {
  const cases: Array<[string, RegExp]> = [
    ['nodes: [', /not valid YAML/],
    ['- 1', /top level/],
    [GOOD.replace('secret: "0123456789abcdef"', 'secret: short'), /secret/],
    [GOOD.replace('secret: "0123456789abcdef"', ''), /secret/],
    [GOOD.replace('cluster: c1', 'cluster: c1\nbogus: 1'), /bogus: unknown field/],
    [GOOD.replace('id: 2', 'id: 1'), /appears twice/],
    [GOOD.replace('id: 2', 'id: 0'), /nodes\[1\]\.id/],
    [GOOD.replace('id: 2', 'id: 5000'), /nodes\[1\]\.id/],
    [GOOD.replace('port: 7702', 'port: 70000'), /nodes\[1\]\.port/],
    [GOOD.replace('port: 7702', 'port: 7701').replace('10.0.0.2', '127.0.0.1'), /used by two nodes/],
    [GOOD.replace('size: 1G', 'size: lots'), /nodes\[1\]\.size/],
    [GOOD.replace('transport: verbs', 'transport: carrier-pigeon'), /nodes\[1\]\.transport/],
    [GOOD.replace('pool: /pm/b.pool', 'pool: a.pool'), /used by two nodes/],
    [GOOD.replace('cluster: c1', 'cluster: c1\nleaseMs: 5'), /leaseMs/],
    [GOOD.replace('transport: tcp', 'transport: tcp, lanes: 0'), /nodes\[0\]\.lanes/],
    [GOOD.replace('transport: tcp', 'transport: tcp, lanes: 5000'), /nodes\[0\]\.lanes/],
    ['cluster: c1\nsecret: "0123456789abcdef"\nnodes: []', /non-empty/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseClusterConfig(text, 'test', '/'), (error: unknown) => isDpmsError(error, 'DPMS_CONFIG') && message.test((error as Error).message), text);
  }
});

it('the CLI: a missing --config is a usage error (2), a bad config file an operating error (3)', () => {
  const usage = spawnSync(process.execPath, [CLI, 'node', 'start', '--id', '1'], { encoding: 'utf8' });
  assert.equal(usage.status, 2, usage.stderr);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-config-'));
  try {
    const file = path.join(dir, 'cluster.yaml');
    fs.writeFileSync(file, GOOD.replace('transport: verbs', 'transport: pigeon'));
    const bad = spawnSync(process.execPath, [CLI, 'node', 'start', '--config', file, '--id', '1'], { encoding: 'utf8' });
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /DPMS_CONFIG/);
    fs.writeFileSync(file, GOOD);
    const missingNode = spawnSync(process.execPath, [CLI, 'node', 'start', '--config', file, '--id', '9'], { encoding: 'utf8' });
    assert.equal(missingNode.status, 3);
    assert.match(missingNode.stderr, /node 9 is not in the cluster config/);
    const noFile = spawnSync(process.execPath, [CLI, 'cluster', 'status', '--config', path.join(dir, 'none.yaml')], { encoding: 'utf8' });
    assert.equal(noFile.status, 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('dpms cluster demo runs a 3-node cluster end to end and cleans up', () => {
  const result = spawnSync(process.execPath, [CLI, 'cluster', 'demo'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(result.status, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /moved 30 from node 1 to node 3.*total 300/);
  assert.match(result.stdout, /node 2 restarted.*2:0x[0-9a-f]+=90.*total 300/);
  assert.match(result.stdout, /removed the demo cluster/);
});
