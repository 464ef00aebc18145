// Test harness for multi-process clusters on loopback: writes a cluster config with free ports and
// pools under /dev/shm, starts each node with the real CLI (`dpms node start`) as a child process,
// and can kill -9 and restart nodes. Everything is removed by stop().

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadClusterConfig, type ClusterClient, type ClusterConfig } from '../../pdsm';
import { freePort } from '../../scripts/commands/local-cluster';

export const CLI = path.join(__dirname, '..', '..', 'scripts', 'cli.js');

export interface TestCluster {
  readonly dir: string;
  readonly configPath: string;
  readonly config: ClusterConfig;
  readonly nodeIds: number[];
  start(id: number): Promise<void>;
  /** SIGKILL a node (no clean shutdown) and wait for it to be gone. */
  kill(id: number): Promise<void>;
  /** SIGTERM a node and wait for its clean exit. */
  stopNode(id: number): Promise<void>;
  isRunning(id: number): boolean;
  output(id: number): string;
  /** With `metrics: true`: the node's /metrics URL, from its ready line. */
  metricsUrl(id: number): string | undefined;
  stop(): Promise<void>;
}

export async function startCluster(options: { nodes?: number; transport?: 'tcp' | 'local'; leaseMs?: number; sizeMb?: number; metrics?: boolean } = {}): Promise<TestCluster> {
  const count = options.nodes ?? 3;
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'dpms-cluster-'));
  const lines = ['cluster: test', `secret: "test-secret-${path.basename(dir)}"`, `leaseMs: ${options.leaseMs ?? 1500}`, 'nodes:'];
  const nodeIds: number[] = [];
  for (let id = 1; id <= count; id++) {
    nodeIds.push(id);
    lines.push(`  - { id: ${id}, host: 127.0.0.1, port: ${await freePort()}, pool: node-${id}.pool, size: ${options.sizeMb ?? 32}M, transport: ${options.transport ?? 'tcp'} }`);
  }
  const configPath = path.join(dir, 'cluster.yaml');
  fs.writeFileSync(configPath, lines.join('\n') + '\n');
  const config = loadClusterConfig(configPath);
  const children = new Map<number, ChildProcess>();
  const outputs = new Map<number, string>();
  const metricsUrls = new Map<number, string>();

  const start = async (id: number): Promise<void> => {
    const child = spawn(process.execPath, [CLI, 'node', 'start', '--config', configPath, '--id', String(id), ...(options.metrics ? ['--metrics-port', '0'] : [])],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    children.set(id, child);
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`node ${id} did not start:\n${output}`)), 20_000);
      const onData = (data: Buffer): void => {
        output += data.toString();
        outputs.set(id, (outputs.get(id) ?? '') + data.toString());
        if (output.includes('ready on port')) {
          const url = /ready on port \d+ .*, metrics (\S+)/.exec(output)?.[1];
          if (url) metricsUrls.set(id, url);
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`node ${id} exited (${code ?? signal}) while starting:\n${output}`));
      });
    });
    child.removeAllListeners('exit');
  };

  const waitExit = (child: ChildProcess): Promise<void> =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));

  const cluster: TestCluster = {
    dir, configPath, config, nodeIds, start,
    async kill(id) {
      const child = children.get(id);
      if (!child) return;
      child.kill('SIGKILL');
      await waitExit(child);
      children.delete(id);
    },
    async stopNode(id) {
      const child = children.get(id);
      if (!child) return;
      child.kill('SIGTERM');
      await waitExit(child);
      children.delete(id);
    },
    isRunning: (id) => children.has(id),
    output: (id) => outputs.get(id) ?? '',
    metricsUrl: (id) => metricsUrls.get(id),
    async stop() {
      await Promise.all([...children.keys()].map((id) => cluster.stopNode(id)));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const id of nodeIds) await start(id);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Wait until no node holds an in-doubt log or an unconfirmed decision. */
export async function quiesce(client: ClusterClient): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const rows = await client.status();
    if (rows.every((row) => row.status && row.status.inDoubt === 0 && row.status.unconfirmed === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the cluster did not settle its in-doubt transactions');
}
