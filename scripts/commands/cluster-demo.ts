// `dpms cluster demo`: the cluster half of `npm start`. It writes a 3-node cluster config under
// /dev/shm, starts each node with `dpms node start` as its own process, and shows a client moving
// money between accounts on different nodes with distributed transactions, an abort, a node killed
// with SIGKILL and restarted (the client gets a typed error, then carries on), and the cluster's
// status; then it stops the nodes and removes everything.

import { ClusterClient, formatAddress, formatBytes, type GlobalAddress } from '../../pdsm';
import { startLocalCluster, type LocalCluster } from './local-cluster';
import { EXIT } from './run';

export async function clusterDemo(transport: 'tcp' | 'local'): Promise<number> {
  let cluster: LocalCluster | undefined;
  let client: ClusterClient | undefined;
  try {
    cluster = await startLocalCluster({ name: 'demo', transport, poolBytes: 64 * 1024 * 1024 });
    console.log(`cluster config ${cluster.configPath}:\n${cluster.configLines.map((line) => `  ${line}`).join('\n')}`);
    const config = cluster.config;
    console.log(`started 3 node daemons (pids ${[...cluster.pids().values()].join(', ')})`);
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
    await cluster.stopNode(2, 'SIGKILL');
    try {
      await transfer(1, 0, 10n);
      console.log('transfer while node 2 is down: unexpectedly succeeded');
    } catch (error) {
      console.log(`transfer while node 2 is down (killed -9): ${(error as Error & { code?: string }).code}`);
    }
    await cluster.start(2);
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
    if (cluster) {
      await cluster.stop();
      console.log('stopped the nodes and removed the demo cluster');
    }
  }
}
