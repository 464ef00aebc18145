// Proves the transaction contract: reads see the transaction's own writes, abort leaves no trace, commits survive reopen, conflicting transactions are isolated by wait-die (with retries in transaction()), lock waits time out, finished transactions refuse use, only the root area and heap are writable, and a transaction over two nodes is refused without touching either.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createSimPm, makeAddress, Pdsm, PoolNode, ROOT_BYTES, type GlobalAddress, type SimMapping,
} from '../../pdsm';
import { code } from '../support/errors';

const POOL_BYTES = 1024 * 1024;
const FORMAT = { chunkBytes: 16 * 1024, laneCount: 4, laneBytes: 16 * 1024 };


function newSim(nodeId = 0): SimMapping {
  const sim = createSimPm(POOL_BYTES);
  PoolNode.format(sim, { ...FORMAT, nodeId });
  return sim;
}

async function openOne(lockTimeoutMs = 2000): Promise<{ sim: SimMapping; dsm: Pdsm }> {
  const sim = newSim();
  return { sim, dsm: await Pdsm.open({ nodes: [{ pm: sim, nodeId: 0 }], lockTimeoutMs }) };
}

/** Reopen what survives a crash that evicts nothing. */
async function reopen(sim: SimMapping): Promise<Pdsm> {
  return Pdsm.open({ nodes: [{ pm: createSimPm(sim.persistentImage()), nodeId: 0 }] });
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const at = (address: GlobalAddress, delta: number): GlobalAddress => (address + delta) as GlobalAddress;

test('a transaction reads its own writes; others see them only after commit', async () => {
  const { dsm } = await openOne();
  try {
    const root = dsm.root(0);
    await dsm.transaction((tx) => tx.write(root, Buffer.from('0123456789abcdef')));
    const tx = dsm.begin();
    await tx.write(at(root, 2), Buffer.from('XY'));
    await tx.write(at(root, 10), Buffer.from('ZZZZ'));
    await tx.write(at(root, 3), Buffer.from('q'));
    assert.equal((await tx.read(root, 16)).toString(), '01Xq456789ZZZZef', 'overlapping writes, latest wins');
    assert.equal((await tx.read(at(root, 3), 2)).toString(), 'q4', 'a read inside a write');
    assert.equal((await tx.read(at(root, 14), 4)).toString('hex'), Buffer.from('ef\0\0').toString('hex'), 'a read past the writes');
    assert.equal((await dsm.read(root, 16)).toString(), '0123456789abcdef', 'uncommitted writes are visible outside');
    const object = await tx.alloc(300);
    await tx.write(object, Buffer.from('fresh object'));
    assert.equal((await tx.read(object, 12)).toString(), 'fresh object');
    await tx.commit();
    assert.equal(tx.status, 'committed');
    assert.equal((await dsm.read(root, 16)).toString(), '01Xq456789ZZZZef');
    assert.equal((await dsm.read(object, 12)).toString(), 'fresh object');
  } finally {
    await dsm.close();
  }
});

test('abort discards writes, allocations and frees', async () => {
  const { sim, dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const kept = await dsm.alloc(100);
    await dsm.transaction((tx) => tx.write(root, Buffer.from('kept')));
    const tx = dsm.begin();
    await tx.write(root, Buffer.from('lost'));
    const object = await tx.alloc(100);
    await tx.write(object, Buffer.from('lost too'));
    await tx.free(kept);
    await tx.abort();
    assert.equal(tx.status, 'aborted');
    await tx.abort(); // idempotent
    assert.equal((await dsm.read(root, 4)).toString(), 'kept');
    assert.equal(dsm.objectSize(kept), 128);
    assert.equal(dsm.objectSize(object), undefined);
    const again = await reopen(sim);
    try {
      assert.equal((await again.read(root, 4)).toString(), 'kept');
      assert.equal(again.objectSize(kept), 128);
      assert.equal(again.objectSize(object), undefined);
    } finally {
      await again.close();
    }
  } finally {
    await dsm.close();
  }
});

test('committed writes are visible after reopen; the root area is writable and survives', async () => {
  const { sim, dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const rootTail = Buffer.alloc(64, 0x77);
    const object = await dsm.transaction(async (tx) => {
      const address = await tx.alloc(5000);
      await tx.write(address, Buffer.alloc(5000, 0x42));
      await tx.write(root, Buffer.from('root pointer'));
      await tx.write(at(root, ROOT_BYTES - 64), rootTail);
      return address;
    });
    const again = await reopen(sim);
    try {
      assert.equal(again.root(0), root);
      assert.equal((await again.read(root, 12)).toString(), 'root pointer');
      assert.ok((await again.read(at(root, ROOT_BYTES - 64), 64)).equals(rootTail));
      assert.ok((await again.read(object, 5000)).equals(Buffer.alloc(5000, 0x42)));
      assert.equal(again.objectSize(object), 16 * 1024, 'more than a quarter chunk is a one-chunk run');
      const seen = await again.transaction((tx) => tx.read(root, 12));
      assert.equal(seen.toString(), 'root pointer');
    } finally {
      await again.close();
    }
  } finally {
    await dsm.close();
  }
});

test('a younger transaction that meets an older writer gets DPMS_TX_CONFLICT', async () => {
  const { dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const older = dsm.begin();
    const younger = dsm.begin();
    await older.write(root, Buffer.from('older'));
    await assert.rejects(younger.write(root, Buffer.from('young')), code('DPMS_TX_CONFLICT'));
    await assert.rejects(younger.read(at(root, 8), 8), code('DPMS_TX_CONFLICT'), 'same 64-B granule');
    await younger.read(at(root, 64), 8); // another granule is free
    await younger.abort();
    await older.commit();
    assert.equal((await dsm.read(root, 5)).toString(), 'older');

    // Readers share; a younger writer dies against an older reader.
    const reader = dsm.begin();
    const reader2 = dsm.begin();
    const writer = dsm.begin();
    await reader.read(root, 8);
    await reader2.read(root, 8);
    await assert.rejects(writer.write(root, Buffer.from('w')), code('DPMS_TX_CONFLICT'));
    await writer.abort();
    await reader.commit();
    await reader2.commit();
  } finally {
    await dsm.close();
  }
});

test('an older transaction waits for a younger one and then proceeds', async () => {
  const { dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const older = dsm.begin();
    const younger = dsm.begin();
    await younger.write(root, Buffer.from('young'));
    let granted = false;
    const waiting = older.write(root, Buffer.from('older')).then(() => {
      granted = true;
    });
    for (let i = 0; i < 5; i++) await tick();
    assert.equal(granted, false, 'the older transaction did not wait for the lock');
    await younger.commit();
    await waiting;
    assert.equal(granted, true);
    assert.equal((await older.read(root, 5)).toString(), 'older');
    await older.commit();
    assert.equal((await dsm.read(root, 5)).toString(), 'older', 'the older transaction committed last');
  } finally {
    await dsm.close();
  }
});

test('transaction() retries conflicts: concurrent increments of one counter end exact', async () => {
  const { sim, dsm } = await openOne();
  try {
    const counter = at(dsm.root(0), 128);
    const workers = 25;
    const perWorker = 4;
    let attempts = 0;
    await Promise.all(Array.from({ length: workers }, async () => {
      for (let i = 0; i < perWorker; i++) {
        await dsm.transaction(async (tx) => {
          attempts++;
          const value = (await tx.read(counter, 8)).readBigUInt64LE(0);
          await tick(); // let the others interleave between read and write
          const next = Buffer.alloc(8);
          next.writeBigUInt64LE(value + 1n);
          await tx.write(counter, next);
        });
      }
    }));
    assert.equal((await dsm.read(counter, 8)).readBigUInt64LE(0), BigInt(workers * perWorker));
    assert.ok(attempts > workers * perWorker, 'no conflict happened, so retries were not exercised');
    const again = await reopen(sim);
    try {
      assert.equal((await again.read(counter, 8)).readBigUInt64LE(0), BigInt(workers * perWorker));
    } finally {
      await again.close();
    }
    // Without retries the conflict surfaces.
    const older = dsm.begin();
    await older.write(counter, Buffer.alloc(8));
    await assert.rejects(dsm.transaction((tx) => tx.write(counter, Buffer.alloc(8, 1)), { maxRetries: 0 }), code('DPMS_TX_CONFLICT'));
    await older.abort();
  } finally {
    await dsm.close();
  }
});

test('a lock wait longer than lockTimeoutMs is DPMS_TIMEOUT', async () => {
  const { dsm } = await openOne(40);
  try {
    const root = dsm.root(0);
    const older = dsm.begin();
    const younger = dsm.begin();
    await younger.write(root, Buffer.from('held'));
    const started = Date.now();
    await assert.rejects(older.write(root, Buffer.from('wait')), code('DPMS_TIMEOUT'));
    assert.ok(Date.now() - started >= 30, 'timed out too early');
    await older.abort();
    await younger.commit();
    // The lock is free again afterwards.
    await dsm.transaction((tx) => tx.write(root, Buffer.from('free')));
    assert.equal((await dsm.read(root, 4)).toString(), 'free');
  } finally {
    await dsm.close();
  }
});

test('a committed or aborted transaction refuses every use with DPMS_TX_STATE', async () => {
  const { dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const object = await dsm.alloc(64);
    const committed = dsm.begin();
    await committed.write(root, Buffer.from('x'));
    await committed.commit();
    const aborted = dsm.begin();
    await aborted.write(root, Buffer.from('y'));
    await aborted.abort();
    for (const [name, tx] of [['committed', committed], ['aborted', aborted]] as const) {
      await assert.rejects(tx.read(root, 1), code('DPMS_TX_STATE'), `${name} read`);
      await assert.rejects(tx.write(root, Buffer.from('z')), code('DPMS_TX_STATE'), `${name} write`);
      await assert.rejects(tx.alloc(64), code('DPMS_TX_STATE'), `${name} alloc`);
      await assert.rejects(tx.free(object), code('DPMS_TX_STATE'), `${name} free`);
      await assert.rejects(tx.commit(), code('DPMS_TX_STATE'), `${name} commit`);
    }
    await assert.rejects(committed.abort(), code('DPMS_TX_STATE'), 'abort after commit');
    assert.equal((await dsm.read(root, 1)).toString(), 'x');
    assert.equal(dsm.objectSize(object), 64);
    // An empty transaction commits.
    const empty = dsm.begin();
    await empty.commit();
    assert.equal(empty.status, 'committed');
  } finally {
    await dsm.close();
  }
});

test('addresses outside the root area and the heap are DPMS_INVALID_ADDRESS', async () => {
  const { sim, dsm } = await openOne();
  try {
    const layout = dsm.node(0).layout;
    const heapEnd = layout.heapOffset + layout.chunkCount * layout.chunkBytes;
    const outside: Array<[string, GlobalAddress, number]> = [
      ['the superblock', makeAddress(0, 0), 8],
      ['the superblock checksum', makeAddress(0, 248), 8],
      ['a log lane', makeAddress(0, layout.logOffset + 64), 8],
      ['across the end of the root area', makeAddress(0, layout.rootOffset + ROOT_BYTES - 4), 8],
      ['the chunk bitmap', makeAddress(0, layout.bitmapOffset), 4],
      ['chunk metadata', makeAddress(0, layout.chunkMetaOffset), 8],
      ['across the end of the heap', makeAddress(0, heapEnd - 4), 8],
      ['past the end of the pool', makeAddress(0, POOL_BYTES), 8],
      ['far past the end', makeAddress(0, 2 ** 40 - 8), 8],
      ['an unknown node', makeAddress(7, layout.heapOffset), 8],
      ['a negative length', makeAddress(0, layout.heapOffset), -1],
    ];
    const before = sim.buffer.toString('hex');
    for (const [what, address, length] of outside) {
      const tx = dsm.begin();
      if (length > 0) await assert.rejects(tx.write(address, Buffer.alloc(length, 0xee)), code('DPMS_INVALID_ADDRESS'), `write ${what}`);
      await assert.rejects(tx.read(address, length), code('DPMS_INVALID_ADDRESS'), `read ${what}`);
      await tx.commit();
    }
    assert.equal(sim.buffer.toString('hex'), before, 'a refused write changed the pool');
    // The edges themselves are fine.
    await dsm.transaction(async (tx) => {
      await tx.write(makeAddress(0, layout.rootOffset + ROOT_BYTES - 8), Buffer.alloc(8, 1));
      await tx.write(makeAddress(0, heapEnd - 8), Buffer.alloc(8, 2));
      await tx.write(makeAddress(0, layout.heapOffset), Buffer.alloc(8, 3));
    });
    assert.ok((await dsm.read(makeAddress(0, heapEnd - 8), 8)).equals(Buffer.alloc(8, 2)));
  } finally {
    await dsm.close();
  }
});

test('a transaction spanning two nodes is DPMS_UNSUPPORTED and changes neither', async () => {
  const sim0 = newSim(0);
  const sim1 = newSim(1);
  const dsm = await Pdsm.open({ nodes: [{ pm: sim0, nodeId: 0 }, { pm: sim1, nodeId: 1 }] });
  try {
    assert.deepEqual(dsm.nodeIds.sort(), [0, 1]);
    const root0 = dsm.root(0);
    const root1 = dsm.root(1);
    await dsm.transaction((tx) => tx.write(root0, Buffer.from('zero')));
    await dsm.transaction((tx) => tx.write(root1, Buffer.from('one!')));
    const on1 = await dsm.alloc(100, 1);
    assert.equal(Math.floor(on1 / 2 ** 40), 1);
    const images = [sim0.persistentImage(), sim1.persistentImage()];
    const stats = [dsm.node(0).allocator.stats(), dsm.node(1).allocator.stats()];

    const tx = dsm.begin();
    await tx.write(root0, Buffer.from('ZERO'));
    await tx.write(root1, Buffer.from('ONE!'));
    const extra = await tx.alloc(100, 1);
    await tx.free(on1);
    await assert.rejects(tx.commit(), code('DPMS_UNSUPPORTED'));
    assert.equal(tx.status, 'aborted');
    await assert.rejects(dsm.transaction(async (t) => {
      await t.write(root0, Buffer.from('ZERO'));
      await t.write(root1, Buffer.from('ONE!'));
    }), code('DPMS_UNSUPPORTED'));

    assert.equal((await dsm.read(root0, 4)).toString(), 'zero');
    assert.equal((await dsm.read(root1, 4)).toString(), 'one!');
    assert.equal(dsm.objectSize(extra), undefined);
    assert.equal(dsm.objectSize(on1), 128);
    assert.deepEqual([dsm.node(0).allocator.stats(), dsm.node(1).allocator.stats()], stats);
    assert.ok(sim0.persistentImage().equals(images[0]), 'node 0 changed on media');
    assert.ok(sim1.persistentImage().equals(images[1]), 'node 1 changed on media');
    // Reading one node and writing another is fine: only one node has records.
    await dsm.transaction(async (t) => {
      const value = await t.read(root0, 4);
      await t.write(root1, value);
    });
    assert.equal((await dsm.read(root1, 4)).toString(), 'zero');
  } finally {
    await dsm.close();
  }
});
