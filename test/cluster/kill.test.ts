// Proves that distributed transactions are all-or-nothing when a client or a node is killed -9 at
// any moment: first at each step of the commit protocol (deterministic crash points), then at random
// moments under a concurrent transfer workload with node restarts. Money is conserved, every
// acknowledged transfer survives, and every pool checks clean afterwards.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkPoolFile, ClusterClient, type GlobalAddress } from '../../pdsm';
import { Random, testSeed } from '../support/random';
import { quiesce, startCluster, type TestCluster } from '../support/cluster';

const CHILD = path.join(__dirname, '..', 'support', 'cluster-child.js');
const INITIAL = 1000n;

async function balances(client: ClusterClient, accounts: readonly GlobalAddress[]): Promise<bigint[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await client.transaction(async (tx) => {
        const values: bigint[] = [];
        for (const account of accounts) values.push((await tx.read(account, 8)).readBigUInt64LE(0));
        return values;
      }, { maxRetries: 1000 });
    } catch (error) {
      if (attempt > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

function runChild(configPath: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [CHILD, configPath, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

describe('distributed transactions under kill -9', () => {
  let cluster: TestCluster;
  let client: ClusterClient;
  let accounts: GlobalAddress[];

  before(async () => {
    cluster = await startCluster({ nodes: 3, transport: 'tcp', leaseMs: 1000 });
    client = await ClusterClient.connect({ config: cluster.config });
    accounts = [];
    for (const nodeId of [1, 2, 3, 1, 2, 3]) accounts.push(await client.alloc(8, nodeId));
    await client.transaction(async (tx) => {
      const bytes = Buffer.alloc(8);
      bytes.writeBigUInt64LE(INITIAL);
      for (const account of accounts) await tx.write(account, bytes);
    });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  for (const [point, expectCommitted] of [['prepared', false], ['decided', true], ['applied', true]] as const) {
    it(`a client killed at '${point}' leaves the transaction ${expectCommitted ? 'committed' : 'aborted'} on every node`, async () => {
      const before = await balances(client, accounts);
      const child = runChild(cluster.configPath, ['once', ...accounts.slice(0, 3).map(String)], { DPMS_CRASH_POINT: point });
      const [, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, sig) => resolve([code, sig])));
      assert.equal(signal, 'SIGKILL', 'the child should have died at the crash point');
      await quiesce(client);
      const now = await balances(client, accounts);
      const expected = [...before];
      if (expectCommitted) {
        expected[0] -= 2n;
        expected[1] += 1n;
        expected[2] += 1n;
      }
      assert.deepEqual(now, expected);
    });
  }

  const nodeCases = [['prepared', 2, false], ['decided', 2, true], ['prepared', 1, false], ['decided', 1, true]] as const;
  for (const [point, victim, expectCommitted] of nodeCases) {
    const role = victim === 1 ? 'the coordinator node' : 'a participant node';
    it(`${role} killed while the client is at '${point}' and restarted: the transaction is ${expectCommitted ? 'committed' : 'aborted'} everywhere`, async () => {
      const before = await balances(client, accounts);
      const child = runChild(cluster.configPath, ['once', ...accounts.slice(0, 3).map(String)], { DPMS_PAUSE_POINT: point });
      let stderr = '';
      await new Promise<void>((resolve, reject) => {
        child.stderr!.on('data', (data: Buffer) => {
          stderr += data.toString();
          if (stderr.includes(`paused at ${point}`)) resolve();
        });
        child.once('exit', () => reject(new Error(`the client exited before pausing: ${stderr}`)));
      });
      // Accounts 0, 1, 2 live on nodes 1, 2, 3; node 1, with the lowest id, coordinates.
      await cluster.kill(victim);
      await cluster.start(victim);
      await quiesce(client); // every prepared log is settled: participants asked the coordinator
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGUSR2');
      const code = await exited;
      // Aborted by the resolver: the client's CAS at the commit point fails. Decided: the commit stands.
      assert.equal(code, expectCommitted ? 0 : 1, stderr);
      if (!expectCommitted) assert.match(stderr, /DPMS_TX_ABORTED/);
      await quiesce(client);
      const expected = [...before];
      if (expectCommitted) {
        expected[0] -= 2n;
        expected[1] += 1n;
        expected[2] += 1n;
      }
      assert.deepEqual(await balances(client, accounts), expected);
    });
  }

  it('random kill -9 of clients and nodes under concurrent transfers: money is conserved, pools check clean', async () => {
    const random = new Random(testSeed('cluster kill'));
    const total = INITIAL * BigInt(accounts.length);
    const children = new Set<ChildProcess>();
    let acknowledged = 0;
    const spawnWorker = (): void => {
      const child = runChild(cluster.configPath, ['transfer', ...accounts.map(String)]);
      child.stdout!.on('data', (data: Buffer) => { acknowledged += (data.toString().match(/ok /g) ?? []).length; });
      children.add(child);
      child.once('exit', () => children.delete(child));
    };
    spawnWorker();
    spawnWorker();
    const rounds = Number(process.env.DPMS_KILL_ROUNDS ?? 8);
    let nodeKills = 0;
    let clientKills = 0;
    for (let round = 0; round < rounds; round++) {
      await new Promise((resolve) => setTimeout(resolve, 400 + random.int(800)));
      if (random.int(2) === 0 && children.size > 0) {
        const victim = [...children][random.int(children.size)];
        victim.kill('SIGKILL');
        clientKills++;
        spawnWorker();
      } else {
        const nodeId = cluster.nodeIds[random.int(cluster.nodeIds.length)];
        await cluster.kill(nodeId);
        nodeKills++;
        await new Promise((resolve) => setTimeout(resolve, random.int(300)));
        await cluster.start(nodeId);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const child of children) child.kill('SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 200));
    await quiesce(client);
    const values = await balances(client, accounts);
    const sum = values.reduce((a, b) => a + b, 0n);
    console.log(`# kill test: ${rounds} rounds, ${nodeKills} node kills, ${clientKills} client kills, ${acknowledged} acknowledged transfers, balances ${values.join(' ')}`);
    assert.equal(sum, total, `money must be conserved (balances ${values.join(', ')})`);
    assert.ok(acknowledged > 0, 'the workload made progress');
    await client.close();
    for (const nodeId of cluster.nodeIds) await cluster.stopNode(nodeId);
    for (const node of cluster.config.nodes) {
      const report = checkPoolFile(node.pool, node.id);
      assert.equal(report.clean, true, `node ${node.id}: ${report.errors.join('\n')}`);
    }
    for (const nodeId of cluster.nodeIds) await cluster.start(nodeId);
    client = await ClusterClient.connect({ config: cluster.config });
  });
});
