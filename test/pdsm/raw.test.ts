// Proves the raw API: reads, stores, persist and writePersist on the root area and heap, the 8-byte atomics (with typed errors for misaligned and out-of-range addresses), that persisted raw writes survive simulated crashes, and that unpersisted ones may be lost or torn at 8 bytes but never break recovery.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createSimPm, makeAddress, offsetOf, Pdsm, PoolNode, ROOT_BYTES, verifyPool, type GlobalAddress,
  type SimMapping,
} from '../../pdsm';
import { uint32Stream as prng } from '../support/random';
import { code } from '../support/errors';

const POOL_BYTES = 1024 * 1024;
const FORMAT = { nodeId: 0, chunkBytes: 16 * 1024, laneCount: 2, laneBytes: 8 * 1024 };



async function openOne(): Promise<{ sim: SimMapping; dsm: Pdsm }> {
  const sim = createSimPm(POOL_BYTES);
  PoolNode.format(sim, FORMAT);
  return { sim, dsm: await Pdsm.open({ nodes: [{ pm: sim, nodeId: 0 }] }) };
}

const at = (address: GlobalAddress, delta: number): GlobalAddress => (address + delta) as GlobalAddress;

test('read, write, persist and writePersist on the root area and the heap', async () => {
  const { sim, dsm } = await openOne();
  try {
    const root = dsm.root(0);
    const heap = makeAddress(0, dsm.node(0).layout.heapOffset + 4096);
    await dsm.write(root, Buffer.from('raw root'));
    assert.equal((await dsm.read(root, 8)).toString(), 'raw root', 'a store is visible at once');
    assert.ok(sim.persistentImage().subarray(offsetOf(root), offsetOf(root) + 8).equals(Buffer.alloc(8)), 'a store alone is durable');
    await dsm.persist(root, 8);
    assert.equal(sim.persistentImage().toString('ascii', offsetOf(root), offsetOf(root) + 8), 'raw root');
    await dsm.writePersist(heap, Buffer.from('raw heap data'));
    assert.equal(sim.persistentImage().toString('ascii', offsetOf(heap), offsetOf(heap) + 13), 'raw heap data');
    assert.equal((await dsm.read(heap, 13)).toString(), 'raw heap data');
    // read returns a copy, not a view of the pool.
    const copy = await dsm.read(heap, 4);
    copy.fill(0);
    assert.equal((await dsm.read(heap, 4)).toString(), 'raw ');
    // Raw reads see committed transactions and vice versa.
    await dsm.transaction((tx) => tx.write(at(root, 64), Buffer.from('from tx')));
    assert.equal((await dsm.read(at(root, 64), 7)).toString(), 'from tx');
    assert.equal((await dsm.transaction((tx) => tx.read(heap, 3))).toString(), 'raw');
    await dsm.writePersist(at(root, ROOT_BYTES - 8), Buffer.alloc(8, 9));
    assert.ok((await dsm.read(at(root, ROOT_BYTES - 8), 8)).equals(Buffer.alloc(8, 9)));
    assert.equal((await dsm.read(root, 0)).length, 0);
  } finally {
    await dsm.close();
  }
});

test('load64, store64, cas64 and faa64', async () => {
  const { sim, dsm } = await openOne();
  try {
    const word = at(dsm.root(0), 256);
    const heapWord = makeAddress(0, dsm.node(0).layout.heapOffset + 8);
    assert.equal(await dsm.load64(word), 0n);
    await dsm.store64(word, 0x1122334455667788n);
    assert.equal(await dsm.load64(word), 0x1122334455667788n);
    assert.equal((await dsm.read(word, 8)).readBigUInt64LE(0), 0x1122334455667788n, 'little-endian in the pool');
    // cas success: returns the expected value and swaps.
    assert.equal(await dsm.cas64(word, 0x1122334455667788n, 42n), 0x1122334455667788n);
    assert.equal(await dsm.load64(word), 42n);
    // cas failure: returns what it found and leaves it.
    assert.equal(await dsm.cas64(word, 41n, 99n), 42n);
    assert.equal(await dsm.load64(word), 42n);
    // faa returns the value before the add.
    assert.equal(await dsm.faa64(word, 8n), 42n);
    assert.equal(await dsm.load64(word), 50n);
    await dsm.store64(heapWord, 2n ** 64n - 1n);
    assert.equal(await dsm.faa64(heapWord, 2n), 2n ** 64n - 1n);
    assert.equal(await dsm.load64(heapWord), 1n, 'faa wraps modulo 2^64');
    // Many concurrent faa calls add up.
    await Promise.all(Array.from({ length: 100 }, () => dsm.faa64(word, 1n)));
    assert.equal(await dsm.load64(word), 150n);
    // Atomics do not persist by themselves; persist does.
    assert.equal(sim.persistentImage().readBigUInt64LE(offsetOf(word)), 0n);
    await dsm.persist(word, 8);
    assert.equal(sim.persistentImage().readBigUInt64LE(offsetOf(word)), 150n);
  } finally {
    await dsm.close();
  }
});

test('misaligned atomics are DPMS_MISALIGNED; out-of-range raw access is DPMS_INVALID_ADDRESS', async () => {
  const { sim, dsm } = await openOne();
  try {
    const layout = dsm.node(0).layout;
    const root = dsm.root(0);
    for (const delta of [1, 4, 7, 12]) {
      const address = at(root, delta);
      await assert.rejects(dsm.load64(address), code('DPMS_MISALIGNED'), `load64 +${delta}`);
      await assert.rejects(dsm.store64(address, 1n), code('DPMS_MISALIGNED'), `store64 +${delta}`);
      await assert.rejects(dsm.cas64(address, 0n, 1n), code('DPMS_MISALIGNED'), `cas64 +${delta}`);
      await assert.rejects(dsm.faa64(address, 1n), code('DPMS_MISALIGNED'), `faa64 +${delta}`);
    }
    const heapEnd = layout.heapOffset + layout.chunkCount * layout.chunkBytes;
    const outside: Array<[string, GlobalAddress]> = [
      ['the superblock', makeAddress(0, 0)],
      ['a log lane', makeAddress(0, layout.logOffset)],
      ['the chunk bitmap', makeAddress(0, layout.bitmapOffset)],
      ['chunk metadata', makeAddress(0, layout.chunkMetaOffset + 64)],
      ['the end of the heap', makeAddress(0, heapEnd)],
      ['past the pool', makeAddress(0, POOL_BYTES + 4096)],
      ['an unknown node', makeAddress(5, layout.heapOffset)],
    ];
    const before = Buffer.from(sim.buffer);
    for (const [what, address] of outside) {
      await assert.rejects(dsm.read(address, 8), code('DPMS_INVALID_ADDRESS'), `read ${what}`);
      await assert.rejects(dsm.write(address, Buffer.alloc(8, 1)), code('DPMS_INVALID_ADDRESS'), `write ${what}`);
      await assert.rejects(dsm.persist(address, 8), code('DPMS_INVALID_ADDRESS'), `persist ${what}`);
      await assert.rejects(dsm.writePersist(address, Buffer.alloc(8, 1)), code('DPMS_INVALID_ADDRESS'), `writePersist ${what}`);
      await assert.rejects(dsm.load64(address), code('DPMS_INVALID_ADDRESS'), `load64 ${what}`);
      await assert.rejects(dsm.store64(address, 1n), code('DPMS_INVALID_ADDRESS'), `store64 ${what}`);
      await assert.rejects(dsm.cas64(address, 0n, 1n), code('DPMS_INVALID_ADDRESS'), `cas64 ${what}`);
      await assert.rejects(dsm.faa64(address, 1n), code('DPMS_INVALID_ADDRESS'), `faa64 ${what}`);
    }
    await assert.rejects(dsm.read(at(root, ROOT_BYTES - 4), 8), code('DPMS_INVALID_ADDRESS'), 'across the end of the root area');
    await assert.rejects(dsm.write(makeAddress(0, heapEnd - 4), Buffer.alloc(8)), code('DPMS_INVALID_ADDRESS'), 'across the end of the heap');
    await assert.rejects(dsm.read(root, -1), code('DPMS_INVALID_ADDRESS'), 'a negative length');
    await assert.rejects(dsm.read(root, 1.5), code('DPMS_INVALID_ADDRESS'), 'a fractional length');
    assert.ok(sim.buffer.equals(before), 'a refused raw access changed the pool');
  } finally {
    await dsm.close();
  }
});

test('raw writes made durable survive crashes; unpersisted ones may be lost but never break recovery', async () => {
  let lostWords = 0;
  let keptWords = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const { sim, dsm } = await openOne();
    try {
      const next = prng(seed * 7919);
      const root = dsm.root(0);
      const layout = dsm.node(0).layout;
      // Some committed state the crash must not disturb.
      const object = await dsm.transaction(async (tx) => {
        const address = await tx.alloc(1000);
        await tx.write(address, Buffer.alloc(1000, 0x33));
        return address;
      });
      const durable = new Map<number, Buffer>();
      const volatile = new Map<number, { old: Buffer; new: Buffer }>();
      for (let i = 0; i < 40; i++) {
        const base = i % 2 === 0 ? offsetOf(root) + (next() % (ROOT_BYTES / 64)) * 64 : layout.heapOffset + 16 * 1024 + (next() % 512) * 64;
        const data = Buffer.alloc(64);
        for (let k = 0; k < 64; k++) data[k] = next() & 0xff;
        const address = makeAddress(0, base);
        if (durable.has(base) || volatile.has(base)) continue;
        const kind = next() % 3;
        if (kind === 0) {
          await dsm.writePersist(address, data);
          durable.set(base, data);
        } else if (kind === 1) {
          await dsm.write(address, data);
          await dsm.persist(address, 64);
          durable.set(base, data);
        } else {
          volatile.set(base, { old: Buffer.from(sim.persistentImage().subarray(base, base + 64)), new: data });
          await dsm.write(address, data);
          if (next() % 2 === 0) sim.flush(base, 64); // flushed but never drained
        }
      }
      sim.crash(seed);
      const image = sim.persistentImage();
      const copy = createSimPm(image);
      const reopened = await Pdsm.open({ nodes: [{ pm: copy, nodeId: 0 }] });
      try {
        for (const [base, data] of durable) {
          assert.ok((await reopened.read(makeAddress(0, base), 64)).equals(data), `seed ${seed}: durable write at ${base} lost`);
        }
        for (const [base, { old, new: fresh }] of volatile) {
          const found = await reopened.read(makeAddress(0, base), 64);
          for (let word = 0; word < 64; word += 8) {
            const value = found.subarray(word, word + 8);
            const isOld = value.equals(old.subarray(word, word + 8));
            const isNew = value.equals(fresh.subarray(word, word + 8));
            assert.ok(isOld || isNew, `seed ${seed}: word ${base + word} is neither the old nor the new value`);
            if (isNew && !isOld) keptWords++;
            if (isOld && !isNew) lostWords++;
          }
        }
        assert.ok((await reopened.read(object, 1000)).equals(Buffer.alloc(1000, 0x33)), `seed ${seed}: committed data lost`);
        assert.equal(reopened.objectSize(object), 1024);
        const report = verifyPool(copy.buffer, reopened.node(0).info);
        assert.equal(report.clean, true, report.errors.join('; '));
        assert.equal(report.objects, 1);
      } finally {
        await reopened.close();
      }
    } finally {
      await dsm.close();
    }
  }
  // Over all seeds the crash both kept and dropped unpersisted words: both paths were exercised.
  assert.ok(lostWords > 0, 'no unpersisted word was ever lost');
  assert.ok(keptWords > 0, 'no unpersisted word ever survived');
});
