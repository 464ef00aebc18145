// Proves that the state directory of `dpms up` is made and read as documented: a new cluster has its
// secret in a 0600 file and its pools under the directory's pool dir, a port rewrite keeps the rest of
// cluster.yaml, state.json round-trips and a broken one is a typed error, resolveTarget says plainly
// when a directory holds no cluster, and impossible sizes or pools that would not fit are refused.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isDpmsError, loadClusterConfig } from '../../pdsm';
import {
  checkFreeSpace, createCluster, parseUpSettings, poolDirFor, readUpState, resolveTarget, rewriteNodePorts, statePaths, storedSettings,
  writeUpState, type UpState,
} from '../../scripts/commands/state-dir';

describe('dpms up state directory', () => {
  let base: string;

  before(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-state-dir-test-')); });
  after(() => { fs.rmSync(base, { recursive: true, force: true }); });

  it('makes a cluster with a private secret, free ports and pools in the pool dir; rewrites a port keeping the rest', async () => {
    const paths = statePaths(path.join(base, 'one'));
    const poolDir = poolDirFor(paths.dir);
    assert.equal(poolDirFor(paths.dir), poolDir, 'the pool dir depends on the state dir only');
    assert.notEqual(poolDirFor(path.join(base, 'other')), poolDir);
    await createCluster(paths, { nodes: 3, poolBytes: 64 * 1024 * 1024, transport: 'local' }, poolDir);
    assert.equal(fs.statSync(paths.secret).mode & 0o777, 0o600);
    const config = loadClusterConfig(paths.config);
    assert.deepEqual(config.nodes.map((node) => node.id), [1, 2, 3]);
    assert.deepEqual(config.nodes.map((node) => node.pool), [1, 2, 3].map((id) => path.join(poolDir, `node-${id}.pool`)));
    assert.equal(new Set(config.nodes.map((node) => node.port)).size, 3);
    assert.deepEqual(storedSettings(config), { nodes: 3, poolBytes: 64 * 1024 * 1024, transport: 'local' });
    assert.equal(config.secret.toString(), fs.readFileSync(paths.secret, 'utf8').trim());

    rewriteNodePorts(paths.config, new Map([[2, 65000]]));
    const rewritten = loadClusterConfig(paths.config);
    assert.equal(rewritten.nodes[1].port, 65000);
    assert.equal(rewritten.nodes[0].port, config.nodes[0].port);
    assert.deepEqual(rewritten.secret, config.secret);
    assert.match(fs.readFileSync(paths.config, 'utf8'), /^# The local cluster of `dpms up`/);
  });

  it('state.json round-trips; a broken one is DPMS_CONFIG; resolveTarget finds config and state', () => {
    const paths = statePaths(path.join(base, 'one'));
    assert.equal(readUpState(paths), undefined);
    const state: UpState = {
      version: 1, pid: 4242, startedAt: new Date().toISOString(), dir: paths.dir, config: paths.config, poolDir: '/dev/shm/x', transport: 'tcp',
      nodes: [{ id: 1, pid: 11, host: '127.0.0.1', port: 7001, pool: '/dev/shm/x/node-1.pool', metrics: null, log: '/l/node-1.log' }],
      mount: { dir: '/mnt/x', pid: 12, metrics: 'http://127.0.0.1:9/metrics', log: '/l/mount.log' },
      gateway: null,
    };
    writeUpState(paths, state);
    assert.deepEqual(readUpState(paths), state);
    const target = resolveTarget({ dir: paths.dir });
    assert.equal(target.configPath, paths.config);
    assert.equal(target.state?.pid, 4242);
    assert.equal(resolveTarget({ config: paths.config }).state, undefined);

    fs.writeFileSync(paths.state, '{"version":1,"pid":"nope"}');
    assert.throws(() => readUpState(paths), (error) => isDpmsError(error, 'DPMS_CONFIG') && /pid/.test(error.message));
    fs.writeFileSync(paths.state, 'not json');
    assert.throws(() => readUpState(paths), (error) => isDpmsError(error, 'DPMS_CONFIG'));
  });

  it('says plainly when there is no cluster, and refuses bad settings and pools that would not fit', () => {
    assert.throws(() => resolveTarget({ dir: path.join(base, 'missing') }), (error) => isDpmsError(error, 'DPMS_NOT_FOUND') && /does not exist: start one with `dpms up --dir/.test(error.message));
    fs.mkdirSync(path.join(base, 'empty'));
    assert.throws(() => resolveTarget({ dir: path.join(base, 'empty') }), (error) => isDpmsError(error, 'DPMS_NOT_FOUND') && /holds no cluster/.test(error.message));
    assert.throws(() => resolveTarget({ dir: base, config: 'x.yaml' }), (error) => isDpmsError(error, 'DPMS_INVALID_ARGUMENT'));
    assert.throws(() => parseUpSettings({ nodes: 0 }), (error) => isDpmsError(error, 'DPMS_INVALID_ARGUMENT'));
    assert.throws(() => parseUpSettings({ poolSize: '1M' }), (error) => isDpmsError(error, 'DPMS_INVALID_ARGUMENT') && /--pool-size/.test(error.message));
    assert.throws(() => parseUpSettings({ poolSize: '100.5M' }), (error) => isDpmsError(error, 'DPMS_INVALID_ARGUMENT'));
    assert.throws(() => parseUpSettings({ transport: 'verbs' }), (error) => isDpmsError(error, 'DPMS_INVALID_ARGUMENT'));
    assert.deepEqual(parseUpSettings({ nodes: 5, poolSize: '64M', transport: 'tcp' }), { nodes: 5, poolBytes: 64 * 1024 * 1024, transport: 'tcp' });
    assert.throws(() => checkFreeSpace(base, 2 ** 50, '3 pools', 'use --pool-size 64M'),
      (error) => isDpmsError(error, 'DPMS_NO_SPACE') && /3 pools need 1024\.0 TiB but .* free; free some space there, or use --pool-size 64M/.test(error.message));
    checkFreeSpace(base, 1024, '1 pool', '');
  });
});
