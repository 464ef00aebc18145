// A cluster of `dpms node start` daemons on loopback, for the commands that need one for a while and
// then throw it away (`dpms cluster demo`, `dpms bench kv`): it writes a cluster config with free
// ports and pools in a fresh directory (under /dev/shm by default, a tmpfs), starts each node as a
// child process of this one, can SIGKILL and restart a node, and stop() ends every node it started,
// by PID, and removes the directory. Nothing here outlives the command that made it.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { DpmsError, formatBytes, loadClusterConfig, type ClusterConfig } from '../../pdsm';

/** The CLI next to this file (dist/scripts/cli.js), which the nodes run as `dpms node start`. */
export const CLI_PATH = path.join(__dirname, '..', 'cli.js');

const MAX_NODES = 16;
/** A node formats its pool on first start; a few hundred MiB on tmpfs takes well under this. */
const START_TIMEOUT_MS = 60_000;
/** A node that ignores SIGTERM this long is killed. */
const STOP_TIMEOUT_MS = 10_000;
/** Keep the start-up output of a node, and the tail of what it printed since, for error messages. */
const MAX_OUTPUT_CHARS = 64 * 1024;
const OUTPUT_TAIL_CHARS = 16 * 1024;

/** A free TCP port on 127.0.0.1 (free when asked: another process may take it before it is used). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The directory for throwaway pools: /dev/shm (a tmpfs) when there is one. */
export function scratchBase(dir?: string): string {
  return dir ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
}

export interface LocalClusterOptions {
  /** Used in the config's cluster name and the directory's name. */
  readonly name: string;
  /** Nodes, ids 1..nodes (default 3). */
  readonly nodes?: number;
  readonly transport?: 'tcp' | 'local';
  /** Each node's pool size. */
  readonly poolBytes: number;
  /** Where to make the cluster's directory (default /dev/shm, else the OS temp dir). */
  readonly dir?: string;
  readonly leaseMs?: number;
}

export interface LocalCluster {
  readonly dir: string;
  readonly configPath: string;
  /** The config file's lines, for commands that show them. */
  readonly configLines: readonly string[];
  readonly config: ClusterConfig;
  /** PIDs of the running nodes, by node id. */
  pids(): Map<number, number>;
  /** The last lines a node printed (bounded), to explain a failure. */
  outputTail(id: number): string;
  /** Start (or restart) one node and wait until it says it is ready. */
  start(id: number): Promise<void>;
  /** Signal one node (SIGTERM: clean stop; SIGKILL: a crash) and wait until it has exited. */
  stopNode(id: number, signal?: NodeJS.Signals): Promise<void>;
  /** Stop every node by PID and remove the directory (pools and config). Idempotent. */
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const count = options.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > MAX_NODES) throw new DpmsError('DPMS_INVALID_ARGUMENT', `a local cluster has 1 to ${MAX_NODES} nodes (asked for ${count})`);
  const dir = fs.mkdtempSync(path.join(scratchBase(options.dir), `dpms-${options.name}-cluster-`));
  const configPath = path.join(dir, 'cluster.yaml');
  const children = new Map<number, ChildProcess>();
  const tails = new Map<number, string>();
  const stopNode = async (id: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const child = children.get(id);
    if (!child) return;
    children.delete(id);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = waitExit(child);
    process.kill(child.pid!, signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), STOP_TIMEOUT_MS); });
    if (await Promise.race([exited, late]) === 'late') {
      process.kill(child.pid!, 'SIGKILL');
      await exited;
    }
    clearTimeout(timer);
  };
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all([...children.keys()].map((id) => stopNode(id)));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const lines = [`cluster: ${options.name}`, `secret: "${options.name}-secret-${path.basename(dir)}"`, `leaseMs: ${options.leaseMs ?? 2000}`, 'nodes:'];
    for (let id = 1; id <= count; id++) {
      lines.push(`  - { id: ${id}, host: 127.0.0.1, port: ${await freePort()}, pool: node-${id}.pool, size: ${formatSize(options.poolBytes)}, transport: ${options.transport ?? 'tcp'} }`);
    }
    fs.writeFileSync(configPath, lines.join('\n') + '\n');
    const config = loadClusterConfig(configPath);
    const start = async (id: number): Promise<void> => {
      if (children.has(id)) throw new DpmsError('DPMS_INVALID_ARGUMENT', `node ${id} is already running`);
      const child = spawn(process.execPath, [CLI_PATH, 'node', 'start', '--config', configPath, '--id', String(id)], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.set(id, child);
      let output = '';
      let timer: NodeJS.Timeout | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          timer = setTimeout(() => reject(new DpmsError('DPMS_TIMEOUT', `node ${id} did not say it was ready within ${START_TIMEOUT_MS} ms:\n${output}`)), START_TIMEOUT_MS);
          const onData = (data: Buffer): void => {
            if (output.length < MAX_OUTPUT_CHARS) output += data.toString();
            if (output.includes('ready on port')) resolve();
          };
          child.stdout!.on('data', onData);
          child.stderr!.on('data', onData);
          child.once('exit', (code, signal) => reject(new DpmsError('DPMS_IO', `node ${id} exited (${code ?? signal}) while starting:\n${output}`)));
          child.once('error', (error) => reject(new DpmsError('DPMS_IO', `node ${id} could not be started: ${error.message}`, { cause: error })));
        });
      } catch (error) {
        await stopNode(id, 'SIGKILL');
        throw error;
      } finally {
        clearTimeout(timer);
      }
      // Keep reading what the node prints, so that a full pipe never blocks it, and keep its tail.
      tails.set(id, output.slice(-OUTPUT_TAIL_CHARS));
      const keepTail = (data: Buffer): void => { tails.set(id, (tails.get(id)! + data.toString()).slice(-OUTPUT_TAIL_CHARS)); };
      child.stdout!.removeAllListeners('data').on('data', keepTail);
      child.stderr!.removeAllListeners('data').on('data', keepTail);
      child.removeAllListeners('exit');
    };
    for (const node of config.nodes) await start(node.id);
    return {
      dir, configPath, configLines: lines, config, start, stopNode, stop,
      pids: () => new Map([...children].map(([id, child]) => [id, child.pid!])),
      outputTail: (id) => tails.get(id) ?? '',
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Sizes as the cluster config spells them (whole MiB, which every pool size here is). */
function formatSize(bytes: number): string {
  const MiB = 1024 * 1024;
  if (!Number.isInteger(bytes / MiB) || bytes <= 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', `pool size ${formatBytes(bytes)} must be a positive whole number of MiB`);
  return `${bytes / MiB}M`;
}
