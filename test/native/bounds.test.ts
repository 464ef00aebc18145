// Proves that every offset/length from JS is validated on pools and simulators alike: out-of-range,
// negative or fractional values throw DPMS_OUT_OF_BOUNDS, misaligned atomics DPMS_MISALIGNED, wrong
// types DPMS_INVALID_ARGUMENT, and none of these touch memory (the process survives, data is unchanged).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { benchMemcpyPersist, benchStoreFlushFence, createSim, openPool, type PmMapping } from '../../native/index';
import { assertCode, cleanup, poolPath } from './helpers';

after(cleanup);

function checkBounds(m: PmMapping): void {
  const size = m.sizeBytes;
  const before = Buffer.from(m.buffer);
  const bad = (fn: () => unknown, code = 'DPMS_OUT_OF_BOUNDS') => assertCode(fn, code);

  for (const [offset, length] of [
    [size, 1],
    [size - 1, 2],
    [0, size + 1],
    [-1, 1],
    [0, -1],
    [1.5, 1],
    [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
    [2 ** 60, 1],
    [Number.NaN, 1],
    [Infinity, 1],
  ] as Array<[number, number]>) {
    bad(() => m.flush(offset, length));
    bad(() => m.persist(offset, length));
  }
  m.flush(size, 0); // an empty range at the end is in bounds
  m.persist(0, size);

  const src = Buffer.alloc(16, 0xab);
  bad(() => m.memcpyPersist(size - 8, src));
  bad(() => m.memcpyFlush(size - 15, src));
  bad(() => m.memcpyPersist(0, src, 17));
  bad(() => m.memcpyPersist(0, src, 8, 9));
  bad(() => m.memcpyPersist(0, src, 0, 17));
  bad(() => m.memcpyPersist(-8, src));
  bad(() => m.memcpyPersist(0, src.subarray(4, 8), 0, 5)); // bounds are the view's, not the ArrayBuffer's
  m.memcpyPersist(size - 16, src); // exactly fits
  m.memcpyPersist(0, src, 16); // empty copy at the end of src
  before.fill(0xab, size - 16);

  bad(() => m.load64(size - 4));
  bad(() => m.load64(size));
  bad(() => m.store64(-8, 1n));
  bad(() => m.cas64(size, 0n, 1n));
  bad(() => m.faa64(2 ** 53, 1n));
  bad(() => m.load64(3), 'DPMS_MISALIGNED');
  bad(() => m.store64(12, 1n), 'DPMS_MISALIGNED');
  bad(() => m.cas64(1, 0n, 1n), 'DPMS_MISALIGNED');
  bad(() => m.faa64(7, 1n), 'DPMS_MISALIGNED');

  bad(() => m.flush('0' as unknown as number, 1), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.flush(0, undefined as unknown as number), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.memcpyPersist(0, [1, 2, 3] as unknown as Uint8Array), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.memcpyPersist(0, new Uint16Array(4) as unknown as Uint8Array), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.load64(8n as unknown as number), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.store64(0, 1 as unknown as bigint), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.store64(0, -1n), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.store64(0, 2n ** 64n), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.cas64(0, 2n ** 64n, 0n), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.faa64(0, 2n ** 64n), 'DPMS_INVALID_ARGUMENT');
  bad(() => m.faa64(0, -(2n ** 64n)), 'DPMS_INVALID_ARGUMENT');

  bad(() => benchStoreFlushFence(m, size - 8, 16, 1));
  bad(() => benchMemcpyPersist(m, size - 8, 16, 16));
  bad(() => benchStoreFlushFence(m, 0, 0, 1), 'DPMS_INVALID_ARGUMENT');
  bad(() => benchMemcpyPersist(m, 0, 8, 0), 'DPMS_INVALID_ARGUMENT');
  bad(() => benchStoreFlushFence({} as PmMapping, 0, 8, 1), 'DPMS_INVALID_ARGUMENT');
  bad(() => benchMemcpyPersist(Object.create(Object.getPrototypeOf(m)) as PmMapping, 0, 8, 8), 'DPMS_INVALID_ARGUMENT');

  assert.deepEqual(Buffer.from(m.buffer), before, 'rejected calls must not have written anything');
}

test('pool: bad offsets, lengths, alignment and types throw the right codes', () => {
  const pool = openPool(poolPath('bounds'), { createSizeBytes: 8192 });
  try {
    checkBounds(pool);
  } finally {
    pool.close();
  }
});

test('sim: bad offsets, lengths, alignment and types throw the right codes', () => {
  const sim = createSim(1000); // not a whole number of lines
  try {
    checkBounds(sim);
    assertCode(() => sim.crashImage(1.5), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => sim.crash('1' as unknown as number), 'DPMS_INVALID_ARGUMENT');
  } finally {
    sim.close();
  }
});

test('createSim rejects empty and non-numeric sizes', () => {
  assertCode(() => createSim(0), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => createSim(new Uint8Array(0)), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => createSim(-4), 'DPMS_OUT_OF_BOUNDS');
  assertCode(() => createSim('64' as unknown as number), 'DPMS_INVALID_ARGUMENT');
});

test('mapping classes cannot be constructed from JS', () => {
  const sim = createSim(64);
  const Ctor = sim.constructor as new (...args: unknown[]) => unknown;
  assertCode(() => new Ctor(), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => new Ctor({}), 'DPMS_INVALID_ARGUMENT');
  sim.close();
});

test('errors are Errors with a message and the code set', () => {
  const sim = createSim(64);
  try {
    sim.load64(64);
    assert.fail('should have thrown');
  } catch (error) {
    assert.ok(error instanceof Error);
    assert.equal((error as NodeJS.ErrnoException).code, 'DPMS_OUT_OF_BOUNDS');
    assert.match(error.message, /outside the mapping/);
  } finally {
    sim.close();
  }
});
