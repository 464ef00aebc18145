// Proves that every daemon (3 nodes, a mount, a gateway) serves Prometheus text on /metrics, that the
// counters move when work is done through it, that the endpoint answers bad requests (405, 404, 400)
// and keeps serving, that daemons log JSON lines with a level and a component, and that `dpms metrics`
// summarizes endpoints (named, or found through a cluster config) and reports an unreachable one with
// exit status 1.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClusterClient } from '../../pdsm';
import { freePort } from '../../scripts/commands/local-cluster';
import { parsePrometheusText, sumOf, type MetricFamily } from '../../scripts/commands/prometheus-text';
import { runCli } from '../support/cli';
import { CLI, startCluster, type TestCluster } from '../support/cluster';
import { startMount, type TestMount } from '../support/mount';

type Families = Map<string, MetricFamily>;

async function scrape(url: string): Promise<Families> {
  const response = await fetch(url);
  assert.equal(response.status, 200, url);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

const count = (families: Families, family: string, where: Record<string, string> = {}): number =>
  sumOf(families, family, (labels) => Object.entries(where).every(([key, value]) => labels[key] === value));

/** Send raw bytes to host:port and return everything the server answers until it closes (or 3 s pass). */
function rawExchange(url: string, request: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let answer = '';
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on('connect', () => socket.write(request));
    socket.on('data', (data) => { answer += data.toString('latin1'); });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

/** One RESP command over a fresh socket; resolves with the first reply line. */
function respCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`));
    socket.on('data', (data) => {
      answer += data.toString();
      if (answer.includes('\r\n')) {
        socket.end();
        resolve(answer.split('\r\n')[0]!);
      }
    });
    socket.on('error', reject);
  });
}

describe('metrics endpoints of node, mount and gateway', { timeout: 120_000 }, () => {
  let cluster: TestCluster;
  let mount: TestMount;
  let gateway: ChildProcess | undefined;
  let gatewayOutput = '';
  let gatewayPort = 0;
  let gatewayMetrics = '';
  let mountMetrics = '';

  before(async () => {
    cluster = await startCluster({ metrics: true, sizeMb: 64 });
    mount = await startMount(cluster, { extraArgs: ['--metrics-port', '0'] });
    mountMetrics = /metrics (http:\S+)/.exec(mount.output())?.[1] ?? '';
    const child = spawn(process.execPath, [CLI, 'kv', 'serve', '--config', cluster.configPath, '--port', '0', '--metrics-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    gateway = child;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`kv serve did not start:\n${gatewayOutput}`)), 20_000);
      const onData = (data: Buffer): void => {
        gatewayOutput += data.toString();
        const match = /ready on port (\d+) .*, metrics (\S+)/.exec(gatewayOutput);
        if (match) {
          clearTimeout(timer);
          gatewayPort = Number(match[1]);
          gatewayMetrics = match[2]!;
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`kv serve exited (${code}):\n${gatewayOutput}`)));
    });
    child.removeAllListeners('exit');
  });

  after(async () => {
    if (gateway && gateway.exitCode === null && gateway.signalCode === null) {
      const exited = new Promise((resolve) => gateway!.once('exit', resolve));
      gateway.kill('SIGTERM');
      await exited;
    }
    await mount?.stop();
    await cluster?.stop();
  });

  test('every daemon says its metrics URL and serves the expected metric families', async () => {
    for (const id of cluster.nodeIds) {
      const url = cluster.metricsUrl(id);
      assert.ok(url, `node ${id} printed no metrics URL:\n${cluster.output(id)}`);
      const families = await scrape(url);
      for (const name of ['dpms_node_info', 'dpms_node_operations_total', 'dpms_node_operation_seconds', 'dpms_node_errors_total', 'dpms_node_bytes_total',
        'dpms_node_heap_bytes', 'dpms_node_heap_used_bytes', 'dpms_node_chunks', 'dpms_node_log_lanes', 'dpms_node_in_doubt_logs', 'dpms_node_clients',
        'dpms_node_transport_operations_total', 'dpms_node_transport_auth_failures_total', 'process_cpu_user_seconds_total']) {
        assert.ok(families.has(name), `node ${id} lacks ${name}`);
      }
      assert.equal(families.get('dpms_node_operation_seconds')!.type, 'histogram');
      assert.equal(families.get('dpms_node_info')!.samples[0]!.labels.node, String(id));
      // The mount and the gateway are clients of every node.
      assert.ok(count(families, 'dpms_node_clients', { role: 'mount' }) >= 1);
      assert.ok(count(families, 'dpms_node_clients', { role: 'gateway' }) >= 1);
    }
    assert.match(mountMetrics, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const mountFamilies = await scrape(mountMetrics);
    for (const name of ['dpms_mount_info', 'dpms_mount_operations_total', 'dpms_mount_operation_seconds', 'dpms_mount_bytes_total', 'dpms_mount_errors_total',
      'dpms_mount_pdsm_transactions_total', 'dpms_mount_pdsm_one_sided_operations_total']) {
      assert.ok(mountFamilies.has(name), `the mount lacks ${name}`);
    }
    assert.equal(mountFamilies.get('dpms_mount_info')!.samples[0]!.labels.mountpoint, mount.dir);
    const gatewayFamilies = await scrape(gatewayMetrics);
    for (const name of ['dpms_gateway_info', 'dpms_gateway_operations_total', 'dpms_gateway_operation_seconds', 'dpms_gateway_connections',
      'dpms_gateway_network_bytes_total', 'dpms_gateway_pdsm_transactions_total']) {
      assert.ok(gatewayFamilies.has(name), `the gateway lacks ${name}`);
    }
  });

  test('node status tells the metrics URLs of the node and of its mount and gateway clients', async () => {
    const client = await ClusterClient.connect({ config: cluster.config, lanesPerNode: 0 });
    try {
      const rows = await client.status();
      for (const row of rows) {
        assert.equal(row.status?.metrics, cluster.metricsUrl(row.node.id));
        const mountRow = row.status!.clients.find((other) => other.role === 'mount');
        assert.equal(mountRow?.label, mount.dir);
        assert.equal(mountRow?.metrics, mountMetrics);
        const gatewayRow = row.status!.clients.find((other) => other.role === 'gateway');
        assert.equal(gatewayRow?.metrics, gatewayMetrics);
        assert.match(gatewayRow?.label ?? '', /store default$/);
      }
    } finally {
      await client.close();
    }
  });

  test('mount counters move when a file is written and read through the mount', async () => {
    const before = await scrape(mountMetrics);
    const data = Buffer.alloc(200 * 1024, 7);
    const file = path.join(mount.dir, 'metrics-file');
    await fs.promises.writeFile(file, data);
    assert.deepEqual(await fs.promises.readFile(file), data);
    await fs.promises.stat(path.join(mount.dir, 'no-such-file')).catch(() => undefined);
    const after = await scrape(mountMetrics);
    assert.ok(count(after, 'dpms_mount_operations_total', { op: 'write' }) > count(before, 'dpms_mount_operations_total', { op: 'write' }));
    assert.ok(count(after, 'dpms_mount_operations_total', { op: 'create' }) > count(before, 'dpms_mount_operations_total', { op: 'create' }));
    assert.ok(count(after, 'dpms_mount_bytes_total', { op: 'write', direction: 'in' }) - count(before, 'dpms_mount_bytes_total', { op: 'write', direction: 'in' }) >= data.length);
    // No keep_cache: a new open drops the file's pages, so the read comes to the mount.
    assert.ok(count(after, 'dpms_mount_bytes_total', { op: 'read', direction: 'out' }) - count(before, 'dpms_mount_bytes_total', { op: 'read', direction: 'out' }) >= data.length);
    assert.ok(count(after, 'dpms_mount_errors_total', { op: 'lookup', code: 'ENOENT' }) > count(before, 'dpms_mount_errors_total', { op: 'lookup', code: 'ENOENT' }));
    assert.ok(sumOf(after, 'dpms_mount_operation_seconds', (labels) => labels.op === 'write', 'dpms_mount_operation_seconds_count') >
      sumOf(before, 'dpms_mount_operation_seconds', (labels) => labels.op === 'write', 'dpms_mount_operation_seconds_count'));
    assert.ok(count(after, 'dpms_mount_pdsm_transactions_total', { outcome: 'committed' }) > count(before, 'dpms_mount_pdsm_transactions_total', { outcome: 'committed' }));
    assert.ok(count(after, 'dpms_mount_pdsm_one_sided_bytes_total', { direction: 'write' }) - count(before, 'dpms_mount_pdsm_one_sided_bytes_total', { direction: 'write' }) >= data.length);
  });

  test('gateway counters move with commands, unknown commands and errors', async () => {
    const before = await scrape(gatewayMetrics);
    assert.equal(await respCommand(gatewayPort, 'SET', 'metrics-key', 'metrics-value'), '+OK');
    assert.equal(await respCommand(gatewayPort, 'GET', 'metrics-key'), '$13');
    assert.match(await respCommand(gatewayPort, 'NOSUCHCOMMAND', 'x'), /^-ERR unknown command/);
    assert.match(await respCommand(gatewayPort, 'INCR', 'metrics-key'), /^-ERR/);
    const after = await scrape(gatewayMetrics);
    assert.equal(count(after, 'dpms_gateway_operations_total', { op: 'set' }) - count(before, 'dpms_gateway_operations_total', { op: 'set' }), 1);
    assert.equal(count(after, 'dpms_gateway_operations_total', { op: 'get' }) - count(before, 'dpms_gateway_operations_total', { op: 'get' }), 1);
    assert.equal(count(after, 'dpms_gateway_operations_total', { op: 'unknown' }) - count(before, 'dpms_gateway_operations_total', { op: 'unknown' }), 1);
    assert.ok(count(after, 'dpms_gateway_errors_total', { op: 'incr', code: 'ERR' }) > count(before, 'dpms_gateway_errors_total', { op: 'incr', code: 'ERR' }));
    assert.ok(count(after, 'dpms_gateway_bytes_total', { op: 'set', direction: 'in' }) - count(before, 'dpms_gateway_bytes_total', { op: 'set', direction: 'in' }) >= 'metrics-value'.length);
    assert.ok(count(after, 'dpms_gateway_network_bytes_total', { direction: 'in' }) > count(before, 'dpms_gateway_network_bytes_total', { direction: 'in' }));
    assert.ok(count(after, 'dpms_gateway_connections_received_total') - count(before, 'dpms_gateway_connections_received_total') >= 4);
    assert.ok(count(after, 'dpms_gateway_pdsm_transactions_total', { outcome: 'committed' }) > count(before, 'dpms_gateway_pdsm_transactions_total', { outcome: 'committed' }));
  });

  test('node counters move: hello and allocChunk RPCs of a new client, transport operations', async () => {
    const before = await Promise.all(cluster.nodeIds.map((id) => scrape(cluster.metricsUrl(id)!)));
    const client = await ClusterClient.connect({ config: cluster.config });
    try {
      // A new client owns no chunk: its first allocation on node 2 asks node 2 for one.
      await client.alloc(100, 2);
    } finally {
      await client.close();
    }
    const after = await Promise.all(cluster.nodeIds.map((id) => scrape(cluster.metricsUrl(id)!)));
    for (let index = 0; index < cluster.nodeIds.length; index++) {
      // The scrape itself does not touch the transport; the client said hello to every node.
      assert.ok(count(after[index]!, 'dpms_node_operations_total', { op: 'hello' }) > count(before[index]!, 'dpms_node_operations_total', { op: 'hello' }), `node ${index + 1} hello`);
      assert.ok(count(after[index]!, 'dpms_node_transport_operations_total', { op: 'message' }) > count(before[index]!, 'dpms_node_transport_operations_total', { op: 'message' }));
    }
    const node2Before = before[1]!;
    const node2After = after[1]!;
    assert.ok(count(node2After, 'dpms_node_operations_total', { op: 'allocChunk' }) > count(node2Before, 'dpms_node_operations_total', { op: 'allocChunk' }));
    assert.ok(count(node2After, 'dpms_node_transport_operations_total', { op: 'write' }) > count(node2Before, 'dpms_node_transport_operations_total', { op: 'write' }));
    assert.ok(count(node2After, 'dpms_node_bytes_total', { op: 'allocChunk', direction: 'in' }) > count(node2Before, 'dpms_node_bytes_total', { op: 'allocChunk', direction: 'in' }));
  });

  test('the endpoint answers bad requests with 405, 404 or 400 and keeps serving', async () => {
    const url = cluster.metricsUrl(1)!;
    const post = await fetch(url, { method: 'POST', body: 'x'.repeat(10_000) });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    await post.arrayBuffer();
    const other = await fetch(url.replace(/\/metrics$/, '/other'));
    assert.equal(other.status, 404);
    await other.arrayBuffer();
    assert.match(await rawExchange(url, 'this is not HTTP\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await rawExchange(url, `GET /metrics HTTP/1.1\r\nHost: x\r\n${'X-Long: y\r\n'.repeat(5000)}\r\n`), /^HTTP\/1\.1 4\d\d/);
    const families = await scrape(url);
    assert.ok(families.has('dpms_node_operations_total'));
  });

  test('daemons log JSON lines with a level and a component', () => {
    const nodeLine = cluster.output(1).split('\n').find((line) => line.startsWith('{'));
    assert.ok(nodeLine, cluster.output(1));
    const nodeRecord = JSON.parse(nodeLine) as Record<string, unknown>;
    assert.equal(nodeRecord.level, 'info');
    assert.equal(nodeRecord.component, 'node');
    assert.equal(nodeRecord.node, 1);
    const mountRecord = JSON.parse(mount.output().split('\n').find((line) => line.startsWith('{'))!) as Record<string, unknown>;
    assert.equal(mountRecord.component, 'mount');
    assert.equal(mountRecord.mountpoint, mount.dir);
    const gatewayRecord = JSON.parse(gatewayOutput.split('\n').find((line) => line.startsWith('{'))!) as Record<string, unknown>;
    assert.equal(gatewayRecord.component, 'gateway');
    assert.equal(typeof gatewayRecord.time, 'string');
  });

  test('`dpms metrics --endpoint` prints a summary per endpoint and exits 0', () => {
    const result = runCli(['metrics', '--endpoint', cluster.metricsUrl(1)!, '--endpoint', mountMetrics, '--endpoint', gatewayMetrics], 30_000);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.match(result.stdout, new RegExp(`${cluster.metricsUrl(1)!.replace(/[.]/g, '\\.')}: \\d+ ops, \\d+ errors, p50 `));
    assert.match(result.stdout, /heap [\d.]+% used, lanes \d+\/\d+ used/);
    assert.match(result.stdout, /tx \d+ committed/);
    const json = runCli(['metrics', '--json', '--endpoint', gatewayMetrics], 30_000);
    assert.equal(json.status, 0, json.stderr);
    const [row] = JSON.parse(json.stdout) as Array<{ ok: boolean; summary: { component: string; operations: number } }>;
    assert.equal(row!.ok, true);
    assert.equal(row!.summary.component, 'gateway');
    assert.ok(row!.summary.operations >= 4);
  });

  test('`dpms metrics --config` finds every node, the mount and the gateway', () => {
    const result = runCli(['metrics', '--config', cluster.configPath], 30_000);
    if (process.env.DPMS_TEST_VERBOSE) console.log(result.stdout);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    for (const id of cluster.nodeIds) assert.match(result.stdout, new RegExp(`^node ${id} http`, 'm'));
    assert.match(result.stdout, new RegExp(`^mount ${mount.dir} http`, 'm'));
    assert.match(result.stdout, /^gateway 127\.0\.0\.1:0 store default http/m);
  });

  test('`dpms metrics --dir` reads the endpoints from a `dpms up` state.json', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-metrics-state-'));
    try {
      const state = {
        version: 1, pid: process.pid, startedAt: new Date().toISOString(), dir, config: cluster.configPath, poolDir: cluster.dir, transport: 'tcp',
        nodes: cluster.nodeIds.map((id) => ({ id, pid: 1, host: '127.0.0.1', port: 1, pool: 'p', metrics: cluster.metricsUrl(id), log: 'l' })),
        mount: { dir: mount.dir, pid: mount.pid, metrics: mountMetrics, log: 'l' },
        gateway: null,
      };
      fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(state));
      const result = runCli(['metrics', '--dir', dir], 30_000);
      assert.equal(result.status, 0, result.stdout + result.stderr);
      for (const id of cluster.nodeIds) assert.match(result.stdout, new RegExp(`^node ${id} http`, 'm'));
      assert.match(result.stdout, new RegExp(`^mount ${mount.dir} http`, 'm'));
      assert.doesNotMatch(result.stdout, /^gateway/m);
      fs.rmSync(path.join(dir, 'state.json'));
      const missing = runCli(['metrics', '--dir', dir], 30_000);
      assert.equal(missing.status, 3);
      assert.match(missing.stderr, /DPMS_NOT_FOUND: no running 'dpms up' in /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an unreachable endpoint is reported on its own line and gives exit status 1', async () => {
    const dead = `http://127.0.0.1:${await freePort()}/metrics`;
    const result = runCli(['metrics', '--endpoint', dead, '--endpoint', cluster.metricsUrl(2)!], 30_000);
    assert.equal(result.status, 1, result.stdout + result.stderr);
    assert.match(result.stdout, new RegExp(`${dead.replace(/[.]/g, '\\.')}: FAILED unreachable: ECONNREFUSED`));
    assert.match(result.stdout, /: \d+ ops, /);
    assert.match(result.stdout, /1 of 2 endpoint\(s\) could not be scraped/);
    const usage = runCli(['metrics', '--endpoint', 'not a url'], 30_000);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--endpoint: 'not a url' is not a URL/);
  });
});
