// Proves that a 3-node cluster started from the CLI serves clients end to end: status, chunk
// allocation on every node, distributed transactions that are atomic across nodes and visible to
// other clients, typed errors, lock release when a client dies, and recovery after kill -9 of a node.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkPoolFile, ClusterClient, connect, isDpmsError, makeAddress, nodeOf, type GlobalAddress } from '../../pdsm';
import { CLI, startCluster, type TestCluster } from '../support/cluster';

for (const transport of ['tcp', 'local'] as const) describe(`cluster of 3 nodes on loopback (${transport})`, () => {
  let cluster: TestCluster;
  let client: ClusterClient;

  before(async () => {
    cluster = await startCluster({ nodes: 3, transport });
    client = await ClusterClient.connect({ config: cluster.config });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  it('dpms cluster status shows every node reachable with its capacity', () => {
    const result = spawnSync(process.execPath, [CLI, 'cluster', 'status', '--config', cluster.configPath, '--json'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const rows = (JSON.parse(result.stdout) as { nodes: Array<{ id: number; reachable: boolean; status: { heapBytes: number; chunkCount: number } }> }).nodes;
    assert.deepEqual(rows.map((row) => row.id), [1, 2, 3]);
    for (const row of rows) {
      assert.equal(row.reachable, true);
      assert.ok(row.status.heapBytes > 0 && row.status.chunkCount > 0);
    }
  });

  it('every node lists its clients with who they said they are; a second node process on a pool is refused', async () => {
    const labelled = await ClusterClient.connect({ config: cluster.config, info: { role: 'mount', label: '/mnt/x', metrics: 'http://127.0.0.1:9/metrics' } });
    try {
      for (const row of await client.status()) {
        const mine = row.status!.clients.find((entry) => entry.instance === labelled.info.instance);
        assert.ok(mine, `node ${row.node.id} lists the client`);
        assert.equal(mine.role, 'mount');
        assert.equal(mine.label, '/mnt/x');
        assert.equal(mine.pid, process.pid);
        assert.equal(mine.clientId, labelled.clientId);
        assert.ok(row.status!.clients.some((entry) => entry.instance === client.info.instance && entry.role === 'app'));
      }
    } finally {
      await labelled.close();
    }
    const second = spawnSync(process.execPath, [CLI, 'node', 'start', '--config', cluster.configPath, '--id', '1', '--port', '0'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(second.status, 3, second.stdout + second.stderr);
    assert.match(second.stderr, /DPMS_BUSY: pool .* is served by another process/);
  });

  it('allocates on every node (round-robin placement) and reads back what a transaction wrote', async () => {
    const addresses: GlobalAddress[] = [];
    for (let i = 0; i < 6; i++) addresses.push(await client.alloc(100));
    assert.deepEqual(new Set(addresses.map((address) => nodeOf(address))), new Set([1, 2, 3]));
    assert.equal(new Set(addresses).size, 6);
    await client.transaction(async (tx) => {
      for (const [i, address] of addresses.entries()) await tx.write(address, Buffer.alloc(100, i + 1));
    });
    for (const [i, address] of addresses.entries()) assert.deepEqual(await client.read(address, 100), Buffer.alloc(100, i + 1));
    assert.equal(await client.objectSize(addresses[0]), 128);
  });

  it('commits a distributed transaction atomically and another client sees all of it', async () => {
    const [a, b, c] = await Promise.all([client.alloc(64, 1), client.alloc(64, 2), client.alloc(64, 3)]);
    await client.transaction(async (tx) => {
      await tx.write(a, Buffer.from('alpha'));
      await tx.write(b, Buffer.from('bravo'));
      await tx.write(c, Buffer.from('charlie'));
    });
    const other = await ClusterClient.connect({ config: cluster.config });
    try {
      assert.equal((await other.read(a, 5)).toString(), 'alpha');
      assert.equal((await other.read(b, 5)).toString(), 'bravo');
      assert.equal((await other.read(c, 7)).toString(), 'charlie');
      // An aborted transaction leaves nothing behind.
      const tx = other.begin();
      await tx.write(a, Buffer.from('ZZZZZ'));
      await tx.write(c, Buffer.from('ZZZZZZZ'));
      await tx.abort();
      assert.equal((await client.read(a, 5)).toString(), 'alpha');
    } finally {
      await other.close();
    }
  });

  it('conflicting transactions: the second gets DPMS_TX_CONFLICT until the first ends; counters stay exact', async () => {
    const counter = await client.alloc(8, 2);
    const first = client.begin();
    await first.write(counter, Buffer.alloc(8));
    const second = client.begin();
    await assert.rejects(second.read(counter, 8), (error: unknown) => isDpmsError(error, 'DPMS_TX_CONFLICT'));
    await second.abort();
    await first.commit();
    const other = await ClusterClient.connect({ config: cluster.config });
    try {
      const bump = (c: ClusterClient) => c.transaction(async (tx) => {
        const value = (await tx.read(counter, 8)).readBigUInt64LE(0);
        const next = Buffer.alloc(8);
        next.writeBigUInt64LE(value + 1n);
        await tx.write(counter, next);
      });
      await Promise.all(Array.from({ length: 40 }, (_, i) => bump(i % 2 === 0 ? client : other)));
      assert.equal((await client.read(counter, 8)).readBigUInt64LE(0), 40n);
    } finally {
      await other.close();
    }
  });

  it('huge objects span chunks, and their runs go back to the node when freed; too big is DPMS_NO_SPACE', async () => {
    const chunksUsed = async (): Promise<number> => (await client.status()).find((row) => row.node.id === 3)!.status!.chunksUsed;
    const before = await chunksUsed();
    const big = await client.alloc(1 << 20, 3);
    assert.ok((await client.objectSize(big))! >= 1 << 20);
    assert.equal(await chunksUsed(), before + 4);
    const data = Buffer.alloc(1 << 20, 0x5a);
    // A transaction's log is bounded by the lane size (256 KiB by default): big data goes raw.
    await assert.rejects(client.transaction(async (tx) => tx.write(big, data)), (error: unknown) => isDpmsError(error, 'DPMS_TX_TOO_LARGE'));
    await client.writePersist(big, data);
    assert.ok((await client.read(big, 1 << 20)).equals(data));
    await client.free(big);
    for (let attempt = 0; attempt < 50 && (await chunksUsed()) !== before; attempt++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await chunksUsed(), before);
    await assert.rejects(client.alloc(1 << 30, 3), (error: unknown) => isDpmsError(error, 'DPMS_NO_SPACE'));
  });

  it('rejects bad addresses and frees with typed errors', async () => {
    await assert.rejects(client.read(makeAddress(1, 0), 8), (error: unknown) => isDpmsError(error, 'DPMS_INVALID_ADDRESS'));
    await assert.rejects(client.read(makeAddress(9, 4096), 8), (error: unknown) => isDpmsError(error, 'DPMS_INVALID_ADDRESS'));
    const address = await client.alloc(64, 3);
    await client.free(address);
    await assert.rejects(client.free(address), (error: unknown) => isDpmsError(error, 'DPMS_INVALID_ADDRESS'));
  });

  it('hostile RPC messages get typed errors, a wrong secret is refused, and the node keeps serving', async () => {
    const node = cluster.config.nodes[0];
    await assert.rejects(connect({ provider: 'tcp', host: node.host, port: node.port, secret: Buffer.from('not the cluster secret!') }),
      (error: unknown) => isDpmsError(error, 'DPMS_AUTH'));
    const raw = await connect({ provider: 'tcp', host: node.host, port: node.port, secret: cluster.config.secret });
    try {
      const ask = async (message: string | object): Promise<{ ok: boolean; code?: string }> =>
        JSON.parse((await raw.call(Buffer.from(typeof message === 'string' ? message : JSON.stringify(message)))).toString()) as { ok: boolean; code?: string };
      for (const message of ['not json', '[]', '{"op":"nope"}', { op: 'allocChunk', classIndex: 0 }, { op: 'hello', clientId: -1, lanes: 1 },
        { op: 'hello', clientId: 5, lanes: 1e9 }, { op: 'decision', lane: 1e6, generation: 1 }, { op: 'resolve', coordinator: 1, lane: 0, generation: 'x', committed: true }]) {
        const reply = await ask(message);
        assert.equal(reply.ok, false, JSON.stringify(message));
        assert.match(reply.code ?? '', /^DPMS_/);
      }
      assert.equal((await ask({ op: 'hello', clientId: 77, lanes: 0 })).ok, true);
      for (const message of [{ op: 'releaseChunk', chunk: 4_000_000 }, { op: 'allocChunk', classIndex: 999 }, { op: 'allocChunk', runChunks: 1e9 }]) {
        const reply = await ask(message);
        assert.equal(reply.ok, false, JSON.stringify(message));
      }
    } finally {
      raw.close();
    }
    const address = await client.alloc(64, 1);
    await client.transaction(async (tx) => tx.write(address, Buffer.from('still serving')));
    assert.equal((await client.read(address, 13)).toString(), 'still serving');
  });

  it('a client killed while holding locks does not block others', async () => {
    const address = await client.alloc(64, 1);
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'support', 'cluster-child.js'), cluster.configPath, 'hold', String(address)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout!.on('data', (data: Buffer) => { if (data.toString().includes('holding')) resolve(); }));
    const blocked = client.begin();
    await assert.rejects(blocked.write(address, Buffer.from('x')), (error: unknown) => isDpmsError(error, 'DPMS_TX_CONFLICT'));
    await blocked.abort();
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    // The node sees the connection drop and clears the dead client's locks.
    await client.transaction(async (tx) => tx.write(address, Buffer.from('after')), { maxRetries: 500 });
    assert.equal((await client.read(address, 5)).toString(), 'after');
  });

  it('survives kill -9 of a node: restart recovers it, committed data is intact, the pool checks clean', async () => {
    const address = await client.alloc(64, 2);
    await client.transaction(async (tx) => tx.write(address, Buffer.from('durable')));
    await cluster.kill(2);
    await assert.rejects(client.read(address, 7));
    await cluster.start(2);
    let value: Buffer | undefined;
    for (let attempt = 0; attempt < 50 && !value; attempt++) {
      try {
        value = await client.read(address, 7);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(value?.toString(), 'durable');
    await client.close();
    await cluster.stopNode(2);
    const report = checkPoolFile(cluster.config.nodes[1].pool, 2);
    assert.equal(report.clean, true, report.errors.join('\n'));
    await cluster.start(2);
    client = await ClusterClient.connect({ config: cluster.config });
  });
});
