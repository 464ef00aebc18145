// Proves that verifyKvStores passes the stores of a busy history (splits, deletes, large values,
// garbage awaiting reclamation) and names a damaged external value and a wrong key count.

import assert from 'node:assert/strict';
import test from 'node:test';
import { KvStore, verifyKvStores } from '../../kvs';
import { decodeMeta, encodeMeta, META_BYTES, ROOT_AREA } from '../../kvs/format';
import { ClusterClient, makeAddress, nodeOf, offsetOf } from '../../pdsm';
import { startCluster } from '../support/cluster';

test('verifyKvStores: clean stores pass; a flipped value byte and a wrong count are named', { timeout: 60_000 }, async () => {
  const cluster = await startCluster({ nodes: 2, transport: 'local', sizeMb: 64 });
  const client = await ClusterClient.connect({ config: cluster.config });
  try {
    const a = await KvStore.open(client, 'a');
    const b = await KvStore.open(client, 'b');
    for (let i = 0; i < 400; i++) await a.put(Buffer.from(`k${String(i).padStart(5, '0')}`), Buffer.alloc(i % 4 === 0 ? 500 : 30, i));
    for (let i = 0; i < 400; i += 3) await a.del(Buffer.from(`k${String(i).padStart(5, '0')}`));
    await b.put(Buffer.from('big'), Buffer.alloc(10_000, 9));
    const clean = await verifyKvStores(client);
    assert.deepEqual(clean.problems, []);
    assert.equal(clean.stores, 2);
    assert.equal(clean.keys, 400 - 134 + 1);
    assert.ok(clean.nodes > 3);
    assert.ok(clean.garbage > 0, 'some retired objects await reclamation');
    assert.equal(clean.addresses.size, clean.objects);

    // Damage b's external value (the value object follows its 24-B header).
    const value = [...(await verifyKvStores(client)).addresses];
    const sizes = await Promise.all(value.map(async (address) => ({ address, size: await client.objectSize(address) })));
    const big = sizes.find((entry) => (entry.size ?? 0) >= 10_024)!;
    assert.ok(big, 'the 10 KB value object is among the addresses');
    await client.writePersist(makeAddress(nodeOf(big.address), offsetOf(big.address) + 100), Buffer.from([0x55]));
    const damaged = await verifyKvStores(client);
    assert.ok(damaged.problems.some((problem) => problem.includes(`store 'b': the value of "big"`) && problem.includes('does not check out')), damaged.problems.join('\n'));

    // A catalog meta record that counts one store too many (rewritten with a valid checksum).
    const area = await client.root(Math.min(...client.nodeIds));
    const metaAddress = makeAddress(nodeOf(area), offsetOf(area) + ROOT_AREA.catalogMeta);
    const meta = decodeMeta(await client.read(metaAddress, META_BYTES))!;
    await client.transaction(async (tx) => { await tx.write(metaAddress, encodeMeta({ ...meta, count: meta.count + 1 })); });
    const miscounted = await verifyKvStores(client);
    assert.ok(miscounted.problems.includes('the store catalog: the meta record counts 3 keys, the tree holds 2'), miscounted.problems.join('\n'));
    await a.close();
    await b.close();
  } finally {
    await client.close();
    await cluster.stop();
  }
});
