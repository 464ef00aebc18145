// Proves that `dpms up` runs the whole system and keeps what it acknowledged: up --detach serves a
// mount and a Redis-protocol gateway, a second up on the same directory is refused without touching
// anything, status reports 3 nodes, the mount and the gateway, down stops every process and unmounts,
// the data is there at the next up (even when a node's port was taken meanwhile), a foreground up
// stops cleanly on SIGINT, and after kill -9 of the supervisor its children stop by themselves and
// down cleans up the rest.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Redis from 'ioredis';
import { loadClusterConfig } from '../../pdsm';
import { freePort } from '../../scripts/commands/local-cluster';
import { forceUnmount, isMounted } from '../../scripts/commands/local-mount';
import { poolDirFor, processAlive, statePaths, type UpState } from '../../scripts/commands/state-dir';
import type { StatusReport } from '../../scripts/commands/status';
import { DAEMON_METRICS } from '../../scripts/commands/up';
import { CLI } from '../support/cluster';
import { runCli } from '../support/cli';

const CLI_TIMEOUT_MS = 120_000;

describe('dpms up, status and down', () => {
  let base: string;
  let dir: string;
  let mnt: string;
  let port: number;
  const everyPid = new Set<number>();

  const upArgs = (): string[] => ['up', '--dir', dir, '--mount', mnt, '--port', String(port), '--pool-size', '64M'];
  const readState = (): UpState => {
    const state = JSON.parse(fs.readFileSync(statePaths(dir).state, 'utf8')) as UpState;
    for (const pid of [state.pid, ...state.nodes.map((node) => node.pid), state.mount!.pid, state.gateway!.pid]) everyPid.add(pid);
    return state;
  };
  const pidsOf = (state: UpState): number[] => [state.pid, ...state.nodes.map((node) => node.pid), state.mount!.pid, state.gateway!.pid];
  const waitFor = async (what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const withRedis = async <T>(body: (redis: Redis) => Promise<T>): Promise<T> => {
    const redis = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      return await body(redis);
    } finally {
      redis.disconnect();
    }
  };
  const upDetached = (): UpState => {
    const result = runCli([...upArgs(), '--detach'], CLI_TIMEOUT_MS);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.ok(result.stdout.includes(mnt), result.stdout);
    assert.ok(result.stdout.includes(`127.0.0.1:${port}`), result.stdout);
    assert.ok(isMounted(mnt));
    return readState();
  };
  const down = (): void => {
    const result = runCli(['down', '--dir', dir], CLI_TIMEOUT_MS);
    assert.equal(result.status, 0, result.stdout + result.stderr);
  };

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-up-test-'));
    dir = path.join(base, 'state');
    mnt = path.join(base, 'mnt');
    port = await freePort();
  });

  after(() => {
    runCli(['down', '--dir', dir], CLI_TIMEOUT_MS);
    for (const pid of everyPid) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    forceUnmount(mnt);
    fs.rmSync(poolDirFor(dir), { recursive: true, force: true });
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('status and down say plainly when nothing is there', () => {
    const status = runCli(['status', '--dir', dir], CLI_TIMEOUT_MS);
    assert.equal(status.status, 3, status.stdout + status.stderr);
    assert.match(status.stderr, /DPMS_NOT_FOUND: .* does not exist: start one with `dpms up --dir/);
    const result = runCli(['down', '--dir', dir], CLI_TIMEOUT_MS);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /nothing is running/);
  });

  it('up refuses a gateway port in use, naming the port and the flag, and starts nothing', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    try {
      const result = runCli(upArgs(), CLI_TIMEOUT_MS);
      assert.equal(result.status, 3, result.stdout + result.stderr);
      assert.match(result.stderr, new RegExp(`port ${port} on 127.0.0.1 is in use.*--port`));
      assert.equal(isMounted(mnt), false);
      assert.equal(fs.existsSync(statePaths(dir).state), false);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('up --detach serves the mount and the gateway; a second up is refused and changes nothing', async () => {
    const state = upDetached();
    assert.equal(state.nodes.length, 3);
    await fs.promises.mkdir(path.join(mnt, 'docs'));
    await fs.promises.writeFile(path.join(mnt, 'docs', 'hello.txt'), 'hello from dpms up\n');
    await fs.promises.writeFile(path.join(mnt, 'big.bin'), Buffer.alloc(300_000, 7));
    await withRedis(async (redis) => {
      assert.equal(await redis.set('greeting', 'hello'), 'OK');
      for (let i = 0; i < 50; i++) await redis.set(`key:${i}`, `value ${i}`);
    });

    for (const extra of [[], ['--detach']]) {
      const second = runCli([...upArgs(), ...extra], CLI_TIMEOUT_MS);
      assert.equal(second.status, 3, second.stdout + second.stderr);
      assert.match(second.stderr + second.stdout, new RegExp(`dpms is already running from ${dir} \\(pid ${state.pid}\\); stop it with dpms down --dir ${dir}`));
    }
    assert.deepEqual(readState().nodes.map((node) => node.pid), state.nodes.map((node) => node.pid));
    assert.ok(pidsOf(state).every(processAlive));
    assert.equal(await fs.promises.readFile(path.join(mnt, 'docs', 'hello.txt'), 'utf8'), 'hello from dpms up\n');
    assert.equal(await withRedis((redis) => redis.get('greeting')), 'hello');
  });

  it('status --dir --json shows 3 nodes up, the mount, the gateway and the supervisor', async () => {
    const result = runCli(['status', '--dir', dir, '--json'], CLI_TIMEOUT_MS);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    const report = JSON.parse(result.stdout) as StatusReport;
    const state = readState();
    assert.equal(report.nodesUp, 3);
    assert.deepEqual(report.nodes.map((node) => [node.id, node.reachable]), [[1, true], [2, true], [3, true]]);
    for (const node of report.nodes) {
      assert.ok(node.status!.chunkCount > 0 && node.lanes!.total >= node.lanes!.used && node.lanes!.used > 0);
    }
    assert.deepEqual(report.mounts.map((entry) => [entry.label, entry.pid]), [[mnt, state.mount!.pid]]);
    assert.equal(report.gateways.length, 1);
    assert.equal(report.gateways[0].pid, state.gateway!.pid);
    assert.deepEqual(report.mounts[0].nodes, [1, 2, 3]);
    assert.equal(report.supervisor!.pid, state.pid);
    if (DAEMON_METRICS) {
      // Every daemon got a metrics endpoint; state.json and the clients' info name it.
      const urls = [...state.nodes.map((node) => node.metrics), state.mount!.metrics, state.gateway!.metrics];
      for (const url of urls) assert.match(url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      assert.equal(report.mounts[0].metrics, state.mount!.metrics);
      assert.equal(report.gateways[0].metrics, state.gateway!.metrics);
      const scrape = await fetch(state.nodes[0].metrics!);
      assert.equal(scrape.status, 200);
      assert.match(await scrape.text(), /^dpms_/m);
    }
    assert.ok(report.supervisor!.alive && report.supervisor!.children.every((child) => child.alive));
    const text = runCli(['status', '--dir', dir], CLI_TIMEOUT_MS);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /3\/3 nodes up/);
    assert.match(text.stdout, /file systems mounted: 1/);
    assert.match(text.stdout, /gateways: 1/);
  });

  it('down stops every process and unmounts; up again (a node port taken meanwhile) finds the data', async () => {
    const state = readState();
    down();
    assert.equal(isMounted(mnt), false);
    await waitFor('every process of the first up to exit', () => pidsOf(state).every((pid) => !processAlive(pid)));
    assert.equal(fs.existsSync(statePaths(dir).state), false);
    assert.equal(runCli(['status', '--dir', dir], CLI_TIMEOUT_MS).status, 3);

    // Another process takes node 1's port: up moves node 1 to a free one and says so in cluster.yaml.
    const takenPort = loadClusterConfig(statePaths(dir).config).nodes[0].port;
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(takenPort, '127.0.0.1', resolve));
    try {
      const again = upDetached();
      assert.notEqual(loadClusterConfig(statePaths(dir).config).nodes[0].port, takenPort);
      assert.equal(again.nodes[0].port, loadClusterConfig(statePaths(dir).config).nodes[0].port);
      assert.equal(await fs.promises.readFile(path.join(mnt, 'docs', 'hello.txt'), 'utf8'), 'hello from dpms up\n');
      assert.deepEqual(await fs.promises.readFile(path.join(mnt, 'big.bin')), Buffer.alloc(300_000, 7));
      await withRedis(async (redis) => {
        assert.equal(await redis.get('greeting'), 'hello');
        assert.equal(await redis.get('key:49'), 'value 49');
      });
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
    down();
    assert.equal(isMounted(mnt), false);
  });

  it('a foreground up stops in order on SIGINT: unmounted, every child gone, exit status 0', async () => {
    const child = spawn(process.execPath, [CLI, ...upArgs()], { stdio: ['ignore', 'pipe', 'pipe'] });
    everyPid.add(child.pid!);
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor('the foreground up to be ready', () => output.includes('dpms is up') || child.exitCode !== null, 60_000);
    assert.ok(output.includes('Ctrl-C here'), output);
    const state = readState();
    assert.equal(state.pid, child.pid);
    assert.equal(await fs.promises.readFile(path.join(mnt, 'docs', 'hello.txt'), 'utf8'), 'hello from dpms up\n');
    await fs.promises.writeFile(path.join(mnt, 'written-before-sigint.txt'), 'kept');
    child.kill('SIGINT');
    assert.equal(await exited, 0, output);
    assert.equal(isMounted(mnt), false);
    assert.ok(pidsOf(state).every((pid) => !processAlive(pid)), 'every child has exited');
    assert.equal(fs.existsSync(statePaths(dir).state), false);
  });

  it('after kill -9 of a detached supervisor its children stop by themselves and down cleans the rest', async () => {
    const state = upDetached();
    assert.equal(await fs.promises.readFile(path.join(mnt, 'written-before-sigint.txt'), 'utf8'), 'kept');
    process.kill(state.pid, 'SIGKILL');
    await waitFor('the children to notice their parent is gone', () => pidsOf(state).every((pid) => !processAlive(pid)));
    const status = runCli(['status', '--dir', dir, '--json'], CLI_TIMEOUT_MS);
    assert.equal(status.status, 3, status.stdout + status.stderr);
    assert.equal((JSON.parse(status.stdout) as StatusReport).supervisor!.alive, false);
    const result = runCli(['down', '--dir', dir], CLI_TIMEOUT_MS);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /was not running/);
    assert.equal(isMounted(mnt), false);
    assert.equal(fs.existsSync(statePaths(dir).state), false);
  });

  it('an up right after kill -9 of the supervisor waits for the old children and comes up with the data', async () => {
    const first = upDetached();
    process.kill(first.pid, 'SIGKILL');
    const second = upDetached();
    assert.ok(pidsOf(first).every((pid) => !processAlive(pid)), 'the old children are gone');
    assert.equal(await fs.promises.readFile(path.join(mnt, 'docs', 'hello.txt'), 'utf8'), 'hello from dpms up\n');
    assert.equal(await withRedis((redis) => redis.get('greeting')), 'hello');
    down();
    assert.ok(pidsOf(second).every((pid) => !processAlive(pid)));
    assert.equal(isMounted(mnt), false);
  });
});
