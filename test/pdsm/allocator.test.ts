// Proves that the allocator hands out objects of the documented size classes that never overlap (also under concurrency), reuses freed and aborted space, handles huge objects and a full pool, refuses bad frees, and reloads the same state after reopening.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createSimPm, isDpmsError, makeAddress, nodeOf, offsetOf, Pdsm, PoolNode, verifyPool, type GlobalAddress,
  type SimMapping,
} from '../../pdsm';
import { uint32Stream as prng } from '../support/random';
import { code } from '../support/errors';

const POOL_BYTES = 2 * 1024 * 1024;
const CHUNK = 16 * 1024;
const FORMAT = { nodeId: 0, chunkBytes: CHUNK, laneCount: 4, laneBytes: 16 * 1024 };



async function openPool(poolBytes = POOL_BYTES): Promise<{ sim: SimMapping; dsm: Pdsm }> {
  const sim = createSimPm(poolBytes);
  PoolNode.format(sim, FORMAT);
  const dsm = await Pdsm.open({ nodes: [{ pm: sim, nodeId: 0 }], lockTimeoutMs: 2000 });
  return { sim, dsm };
}

interface Placed {
  readonly address: GlobalAddress;
  readonly size: number;
}

/** Assert that no two objects overlap and that all lie inside the heap. */
function assertDisjoint(dsm: Pdsm, objects: readonly Placed[]): void {
  const layout = dsm.node(0).layout;
  const heapEnd = layout.heapOffset + layout.chunkCount * layout.chunkBytes;
  const sorted = [...objects].sort((a, b) => a.address - b.address);
  for (let i = 0; i < sorted.length; i++) {
    const offset = offsetOf(sorted[i].address);
    assert.ok(offset >= layout.heapOffset && offset + sorted[i].size <= heapEnd, `object ${offset} outside the heap`);
    if (i > 0) {
      assert.ok(sorted[i - 1].address + sorted[i - 1].size <= sorted[i].address,
        `objects at ${sorted[i - 1].address} (+${sorted[i - 1].size}) and ${sorted[i].address} overlap`);
    }
  }
}

function stats(dsm: Pdsm): { chunksUsed: number; objects: number; objectBytes: number } {
  const { chunksUsed, objects, objectBytes } = dsm.node(0).allocator.stats();
  return { chunksUsed, objects, objectBytes };
}

test('requests round up to the size classes; larger ones become whole-chunk runs', async () => {
  const { dsm } = await openPool();
  try {
    const expected: Array<[number, number]> = [
      [1, 64], [63, 64], [64, 64], [65, 96], [96, 96], [97, 128], [129, 192], [193, 256], [257, 384], [385, 512],
      [513, 768], [769, 1024], [1025, 1536], [1537, 2048], [2049, 3072], [3073, 4096], [4096, 4096],
      [4097, CHUNK], [CHUNK, CHUNK], [CHUNK + 1, 2 * CHUNK], [3 * CHUNK + 5, 4 * CHUNK],
    ];
    for (const [request, size] of expected) {
      const address = await dsm.alloc(request);
      assert.equal(dsm.objectSize(address), size, `a request of ${request} B`);
      assert.equal(nodeOf(address), 0);
      const offset = offsetOf(address);
      assert.equal(offset % 8, 0, 'objects are 8-byte aligned (atomics need it)');
      if (size >= CHUNK) assert.equal((offset - dsm.node(0).layout.heapOffset) % CHUNK, 0, 'a run starts on a chunk');
    }
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) {
      await assert.rejects(dsm.alloc(bad), code('DPMS_INVALID_ARGUMENT'), `alloc(${bad})`);
    }
    assert.equal(stats(dsm).objects, expected.length);
  } finally {
    await dsm.close();
  }
});

test('many allocations never overlap and keep their contents', async () => {
  const { dsm } = await openPool();
  try {
    const next = prng(0xa110c);
    const objects: Placed[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const placed = await dsm.transaction(async (tx) => {
        const list: Placed[] = [];
        for (let i = 0; i < 30; i++) {
          const request = next() % 8 === 0 ? 4097 + (next() % 20_000) : 1 + (next() % 3000);
          const address = await tx.alloc(request);
          list.push({ address, size: request });
        }
        return list;
      });
      objects.push(...placed);
    }
    const withSizes = objects.map(({ address, size }) => {
      const actual = dsm.objectSize(address);
      assert.ok(actual !== undefined && actual >= size, `object ${address} of ${actual} B for ${size} B`);
      return { address, size: actual };
    });
    assertDisjoint(dsm, withSizes);
    // Fill every object completely with its own byte, then check all: an overlap would show.
    for (let i = 0; i < withSizes.length; i++) {
      await dsm.transaction((tx) => tx.write(withSizes[i].address, Buffer.alloc(Math.min(withSizes[i].size, 1024), i % 251)));
    }
    for (let i = 0; i < withSizes.length; i++) {
      const data = await dsm.read(withSizes[i].address, Math.min(withSizes[i].size, 1024));
      assert.ok(data.equals(Buffer.alloc(data.length, i % 251)), `object ${i} was overwritten`);
    }
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.objects, objects.length);
    assert.equal(report.objectBytes, withSizes.reduce((sum, o) => sum + o.size, 0));
    assert.deepEqual({ objects: stats(dsm).objects, objectBytes: stats(dsm).objectBytes }, { objects: report.objects, objectBytes: report.objectBytes });
  } finally {
    await dsm.close();
  }
});

test('freed space is reused', async () => {
  const { dsm } = await openPool();
  try {
    // 64 objects of 256 B fill one 16-KiB chunk exactly.
    const first: GlobalAddress[] = [];
    for (let i = 0; i < 64; i++) first.push(await dsm.alloc(200));
    const before = stats(dsm);
    await dsm.transaction(async (tx) => {
      for (const address of first) await tx.free(address);
    });
    for (const address of first) assert.equal(dsm.objectSize(address), undefined, 'freed object still has a size');
    assert.equal(stats(dsm).objects, before.objects - 64);
    const second: GlobalAddress[] = [];
    for (let i = 0; i < 64; i++) second.push(await dsm.alloc(200));
    assert.deepEqual([...second].sort((a, b) => a - b), [...first].sort((a, b) => a - b), 'the freed slots were not reused');
    assert.deepEqual(stats(dsm), before);
    // Freeing and allocating in a loop does not grow the pool.
    for (let round = 0; round < 30; round++) {
      const address = await dsm.alloc(3000);
      await dsm.free(address);
      const huge = await dsm.alloc(2 * CHUNK + 1);
      await dsm.free(huge);
    }
    assert.ok(stats(dsm).chunksUsed <= before.chunksUsed + 1, `chunks grew from ${before.chunksUsed} to ${stats(dsm).chunksUsed}`);
  } finally {
    await dsm.close();
  }
});

test('huge objects span whole chunks and are given back whole', async () => {
  const { dsm } = await openPool();
  try {
    const before = stats(dsm);
    const size = 3 * CHUNK + 100;
    const address = await dsm.alloc(size);
    assert.equal(dsm.objectSize(address), 4 * CHUNK);
    assert.equal(stats(dsm).chunksUsed, before.chunksUsed + 4);
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i++) content[i] = (i * 7) & 0xff;
    // Across chunk boundaries, in pieces that fit the log lane.
    for (let at = 0; at < size; at += 8 * 1024) {
      await dsm.transaction((tx) => tx.write((address + at) as GlobalAddress, content.subarray(at, Math.min(size, at + 8 * 1024))));
    }
    assert.ok((await dsm.read(address, size)).equals(content));
    const small = await dsm.alloc(100);
    assertDisjoint(dsm, [{ address, size: 4 * CHUNK }, { address: small, size: 128 }]);
    // Interior addresses of a run (including the start of a tail chunk) are not objects.
    for (const interior of [64, CHUNK, 2 * CHUNK, 4 * CHUNK - 64]) {
      assert.equal(dsm.objectSize((address + interior) as GlobalAddress), undefined);
      await assert.rejects(dsm.free((address + interior) as GlobalAddress), code('DPMS_INVALID_ADDRESS'));
    }
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    await dsm.free(address);
    assert.equal(stats(dsm).chunksUsed, before.chunksUsed + 1, 'the run was not released (only the small chunk should remain)');
    assert.equal(dsm.objectSize(address), undefined);
  } finally {
    await dsm.close();
  }
});

test('a full pool is DPMS_NO_SPACE, and the pool keeps working', async () => {
  const { dsm } = await openPool(1024 * 1024);
  try {
    const chunkCount = dsm.node(0).layout.chunkCount;
    await assert.rejects(dsm.alloc((chunkCount + 1) * CHUNK), code('DPMS_NO_SPACE'), 'bigger than the heap');
    const runs: GlobalAddress[] = [];
    for (;;) {
      try {
        runs.push(await dsm.alloc(CHUNK));
      } catch (error) {
        assert.ok(isDpmsError(error, 'DPMS_NO_SPACE'), `expected DPMS_NO_SPACE, got ${String(error)}`);
        break;
      }
      assert.ok(runs.length <= chunkCount, 'more chunks handed out than exist');
    }
    assert.equal(runs.length, chunkCount);
    assert.equal(stats(dsm).chunksUsed, chunkCount);
    await assert.rejects(dsm.alloc(64), code('DPMS_NO_SPACE'), 'a small object needs a chunk too');
    await assert.rejects(dsm.transaction(async (tx) => {
      await tx.write(dsm.root(0), Buffer.from('not committed'));
      await tx.alloc(100);
    }), code('DPMS_NO_SPACE'));
    assert.ok((await dsm.read(dsm.root(0), 13)).equals(Buffer.alloc(13)), 'the failed transaction left a write');
    // Free two chunks: one serves a small object, the other a one-chunk run again.
    await dsm.free(runs[3]);
    await dsm.free(runs[4]);
    const small = await dsm.alloc(64);
    assert.equal(dsm.objectSize(small), 64);
    const again = await dsm.alloc(CHUNK);
    assert.ok([runs[3], runs[4]].includes(again));
    await assert.rejects(dsm.alloc(CHUNK), code('DPMS_NO_SPACE'));
    await dsm.transaction((tx) => tx.write(small, Buffer.from('works')));
    assert.equal((await dsm.read(small, 5)).toString(), 'works');
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.chunksFree, 0);
  } finally {
    await dsm.close();
  }
});

test('freeing something that is not a live object is DPMS_INVALID_ADDRESS', async () => {
  const { dsm } = await openPool();
  try {
    const layout = dsm.node(0).layout;
    const object = await dsm.alloc(128);
    const keep = await dsm.alloc(128);
    const before = stats(dsm);
    const notObjects: Array<[string, GlobalAddress]> = [
      ['the root area', dsm.root(0)],
      ['the null address', makeAddress(0, 0)],
      ['a free chunk', makeAddress(0, layout.heapOffset + (layout.chunkCount - 1) * CHUNK)],
      ['a free slot', (object + 256) as GlobalAddress],
      ['the middle of an object', (object + 64) as GlobalAddress],
      ['one byte in', (object + 1) as GlobalAddress],
      ['past the pool', makeAddress(0, 2 ** 39)],
      ['another node', makeAddress(3, offsetOf(object))],
    ];
    for (const [what, address] of notObjects) {
      await assert.rejects(dsm.free(address), code('DPMS_INVALID_ADDRESS'), what);
    }
    // Twice in one transaction.
    await assert.rejects(dsm.transaction(async (tx) => {
      await tx.free(object);
      await tx.free(object);
    }), code('DPMS_INVALID_ADDRESS'));
    assert.equal(dsm.objectSize(object), 128, 'the failed transaction freed the object');
    // Twice in two transactions.
    await dsm.free(object);
    await assert.rejects(dsm.free(object), code('DPMS_INVALID_ADDRESS'));
    assert.deepEqual(stats(dsm), { ...before, objects: before.objects - 1, objectBytes: before.objectBytes - 128 });
    assert.equal(dsm.objectSize(keep), 128);
    // Allocated and freed in one transaction: gone, and freeing it again fails.
    const transient = await dsm.transaction(async (tx) => {
      const address = await tx.alloc(100);
      await tx.free(address);
      await assert.rejects(tx.free(address), code('DPMS_INVALID_ADDRESS'));
      return address;
    });
    assert.equal(dsm.objectSize(transient), undefined);
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.objects, 1);
  } finally {
    await dsm.close();
  }
});

test('aborted allocations are given back', async () => {
  const { dsm } = await openPool();
  try {
    // Warm up the classes used below so that each has a chunk.
    // (A Small chunk taken for an aborted allocation is kept for its class, by design.)
    const warm = await dsm.transaction(async (tx) => [await tx.alloc(100), await tx.alloc(1000), await tx.alloc(4000), await tx.alloc(500)]);
    const before = stats(dsm);
    let firstAborted: GlobalAddress[] = [];
    for (let round = 0; round < 10; round++) {
      const tx = dsm.begin();
      const addresses = [await tx.alloc(100), await tx.alloc(1000), await tx.alloc(4000), await tx.alloc(3 * CHUNK)];
      await tx.write(addresses[0], Buffer.from('gone'));
      await tx.free(warm[0]);
      await tx.abort();
      if (round === 0) firstAborted = addresses;
      else assert.deepEqual(addresses.slice(0, 3), firstAborted.slice(0, 3), 'aborted slots were not handed out again');
      assert.deepEqual(stats(dsm), before, `round ${round}`);
      for (const address of addresses) assert.equal(dsm.objectSize(address), undefined);
    }
    assert.equal(dsm.objectSize(warm[0]), 128, 'an aborted free took effect');
    // A body that throws aborts too.
    await assert.rejects(dsm.transaction(async (tx) => {
      await tx.alloc(500);
      await tx.alloc(5 * CHUNK);
      throw new Error('changed my mind');
    }), /changed my mind/);
    assert.deepEqual(stats(dsm), before);
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.objects, 4);
  } finally {
    await dsm.close();
  }
});

test('after reopening, the allocator state is the same', async () => {
  const { sim, dsm } = await openPool();
  let image: Buffer;
  const live = new Map<number, number>();
  let before: ReturnType<typeof stats>;
  try {
    const next = prng(0x5eed);
    const objects: GlobalAddress[] = [];
    for (let i = 0; i < 120; i++) objects.push(await dsm.alloc(next() % 10 === 0 ? 5000 + (next() % 30_000) : 1 + (next() % 2000)));
    for (let i = 0; i < objects.length; i += 3) await dsm.free(objects[i]);
    const report = verifyPool(sim.buffer, dsm.node(0).info, (object) => live.set(object.address, object.sizeBytes));
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.objects, 80);
    before = stats(dsm);
    await dsm.persist(dsm.root(0), 8);
    image = sim.persistentImage();
  } finally {
    await dsm.close();
  }
  const sim2 = createSimPm(image);
  const reopened = await Pdsm.open({ nodes: [{ pm: sim2, nodeId: 0 }] });
  try {
    assert.deepEqual(stats(reopened), before);
    const after = new Map<number, number>();
    const report = verifyPool(sim2.buffer, reopened.node(0).info, (object) => after.set(object.address, object.sizeBytes));
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.deepEqual(after, live);
    for (const [address, size] of live) assert.equal(reopened.objectSize(address as GlobalAddress), size);
    // New allocations do not collide with the reloaded objects.
    const fresh: Placed[] = [];
    for (let i = 0; i < 60; i++) {
      const address = await reopened.alloc(1 + ((i * 97) % 3000));
      fresh.push({ address, size: reopened.objectSize(address)! });
    }
    assertDisjoint(reopened, [...fresh, ...[...live].map(([address, size]) => ({ address: address as GlobalAddress, size }))]);
  } finally {
    await reopened.close();
  }
});

test('concurrent transactions never get the same address', async () => {
  const { dsm } = await openPool();
  try {
    const sizes = [64, 100, 200, 1000, 5000, 20_000];
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => dsm.transaction(async (tx) => {
      const mine: GlobalAddress[] = [];
      for (let k = 0; k < 3; k++) {
        const address = await tx.alloc(sizes[(i + k) % sizes.length]);
        await tx.write(address, Buffer.from(`tx ${i} object ${k}`));
        mine.push(address);
        await new Promise((resolve) => setImmediate(resolve));
      }
      // Some of them abort, which must give the slots back without disturbing the others.
      if (i % 7 === 0) throw new Error(`abort ${i}`);
      return mine;
    }).catch((error: unknown) => {
      if (error instanceof Error && error.message === `abort ${i}`) return [];
      throw error;
    })));
    const all = results.flat();
    assert.equal(all.length, (60 - 9) * 3);
    assert.equal(new Set(all).size, all.length, 'an address was handed out twice');
    assertDisjoint(dsm, all.map((address) => ({ address, size: dsm.objectSize(address)! })));
    for (let i = 0; i < results.length; i++) {
      for (let k = 0; k < results[i].length; k++) {
        const text = `tx ${i} object ${k}`;
        assert.equal((await dsm.read(results[i][k], text.length)).toString(), text);
      }
    }
    const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
    assert.equal(report.clean, true, report.errors.join('; '));
    assert.equal(report.objects, all.length);
  } finally {
    await dsm.close();
  }
});
