// `dpms cluster demo`: the cluster half of `npm start`. It writes a 3-node cluster config under
// /dev/shm, starts each node with `dpms node start` as its own process, and shows a client moving
// money between accounts on different nodes with distributed transactions, an abort, a node killed
// with SIGKILL and restarted (the client gets a typed error, then carries on), and the cluster's
// status; then it stops the nodes and removes everything.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ClusterClient, formatAddress, formatBytes, loadClusterConfig, type GlobalAddress } from '../../pdsm';
import { EXIT } from './run';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function startNode(configPath: string, id: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [process.argv[1], 'node', 'start', '--config', configPath, '--id', String(id)], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let output = '';
    const onData = (data: Buffer): void => {
      output += data.toString();
      if (output.includes('ready on port')) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`node ${id} exited with ${code}:\n${output}`)));
  });
}

const stopNode = (child: ChildProcess, signal: NodeJS.Signals): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill(signal);
  });

export async function clusterDemo(transport: 'tcp' | 'local'): Promise<number> {
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'dpms-demo-cluster-'));
  const configPath = path.join(dir, 'cluster.yaml');
  const lines = ['cluster: demo', `secret: "demo-secret-${path.basename(dir)}"`, 'leaseMs: 2000', 'nodes:'];
  for (let id = 1; id <= 3; id++) lines.push(`  - { id: ${id}, host: 127.0.0.1, port: ${await freePort()}, pool: node-${id}.pool, size: 64M, transport: ${transport} }`);
  fs.writeFileSync(configPath, lines.join('\n') + '\n');
  console.log(`cluster config ${configPath}:\n${lines.map((line) => `  ${line}`).join('\n')}`);
  const config = loadClusterConfig(configPath);
  const nodes = new Map<number, ChildProcess>();
  let client: ClusterClient | undefined;
  try {
    for (const node of config.nodes) nodes.set(node.id, await startNode(configPath, node.id));
    console.log(`started 3 node daemons (pids ${[...nodes.values()].map((child) => child.pid).join(', ')})`);
    client = await ClusterClient.connect({ config });
    const accounts: GlobalAddress[] = [];
    for (const nodeId of [1, 2, 3]) accounts.push(await client.alloc(8, nodeId));
    const balance = (value: bigint): Buffer => {
      const bytes = Buffer.alloc(8);
      bytes.writeBigUInt64LE(value);
      return bytes;
    };
    await client.transaction(async (tx) => { for (const account of accounts) await tx.write(account, balance(100n)); });
    const show = async (label: string): Promise<void> => {
      const values = await client!.transaction(async (tx) => Promise.all(accounts.map(async (account) => (await tx.read(account, 8)).readBigUInt64LE(0))));
      console.log(`${label.padEnd(44)} ${accounts.map((account, i) => `${formatAddress(account)}=${values[i]}`).join('  ')}  total ${values.reduce((a, b) => a + b, 0n)}`);
    };
    await show('three accounts, one on each node:');
    const transfer = (from: number, to: number, amount: bigint) => client!.transaction(async (tx) => {
      const a = (await tx.read(accounts[from], 8)).readBigUInt64LE(0);
      const b = (await tx.read(accounts[to], 8)).readBigUInt64LE(0);
      await tx.write(accounts[from], balance(a - amount));
      await tx.write(accounts[to], balance(b + amount));
    });
    await transfer(0, 2, 30n);
    await show('moved 30 from node 1 to node 3 (2PC):');
    const aborted = client.begin();
    await aborted.write(accounts[1], balance(0n));
    await aborted.abort();
    await show('zeroed node 2\'s account, then aborted:');
    await stopNode(nodes.get(2)!, 'SIGKILL');
    try {
      await transfer(1, 0, 10n);
      console.log('transfer while node 2 is down: unexpectedly succeeded');
    } catch (error) {
      console.log(`transfer while node 2 is down (killed -9): ${(error as Error & { code?: string }).code}`);
    }
    nodes.set(2, await startNode(configPath, 2));
    for (let attempt = 0; ; attempt++) {
      try {
        await transfer(1, 0, 10n);
        break;
      } catch (error) {
        if (attempt > 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await show('node 2 restarted (recovered); moved 10 to node 1:');
    console.log('cluster status:');
    for (const { node, status, error } of await client.status()) {
      console.log(status
        ? `  node ${node.id} ${node.host}:${node.port} (${node.transport}): ${status.chunksUsed}/${status.chunkCount} chunks, ${status.objects} objects, heap ${formatBytes(status.heapBytes)}, ${status.sessions} client(s), ${status.inDoubt} in doubt`
        : `  node ${node.id}: unreachable: ${error}`);
    }
    return EXIT.ok;
  } finally {
    await client?.close();
    await Promise.all([...nodes.values()].map((child) => stopNode(child, 'SIGTERM')));
    fs.rmSync(dir, { recursive: true, force: true });
    console.log('stopped the nodes and removed the demo cluster');
  }
}
