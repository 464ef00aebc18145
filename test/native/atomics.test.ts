// Proves the 8-byte atomics on pools and simulators: BigInt in/out over the full unsigned 64-bit range,
// cas64 returns the old value on success and failure, faa64 wraps modulo 2^64 and accepts negative deltas,
// and the bytes land little-endian in the mapping's buffer.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { createSim, openPool, type PmMapping } from '../../native/index';
import { cleanup, poolPath } from './helpers';

after(cleanup);

const MAX = 2n ** 64n - 1n;

function checkAtomics(m: PmMapping): void {
  assert.equal(m.load64(0), 0n);
  m.store64(8, MAX);
  assert.equal(m.load64(8), MAX);
  assert.equal(m.buffer.readBigUInt64LE(8), MAX);
  m.buffer.writeBigUInt64LE(0x0102030405060708n, 16);
  assert.equal(m.load64(16), 0x0102030405060708n);

  // cas64: success returns expected (the old value) and writes; failure returns what was there.
  assert.equal(m.cas64(24, 0n, 42n), 0n);
  assert.equal(m.load64(24), 42n);
  assert.equal(m.cas64(24, 7n, 99n), 42n);
  assert.equal(m.load64(24), 42n);
  assert.equal(m.cas64(24, 42n, MAX), 42n);
  assert.equal(m.load64(24), MAX);

  // faa64: returns the value before, wraps at 2^64, negative deltas subtract modulo 2^64.
  m.store64(32, MAX - 1n);
  assert.equal(m.faa64(32, 3n), MAX - 1n);
  assert.equal(m.load64(32), 1n);
  assert.equal(m.faa64(32, -2n), 1n);
  assert.equal(m.load64(32), MAX);
  assert.equal(m.faa64(32, -MAX), MAX);
  assert.equal(m.load64(32), 0n);
  assert.equal(m.faa64(32, MAX), 0n);
  assert.equal(m.load64(32), MAX);
  assert.equal(m.faa64(32, 0n), MAX);

  const last = m.sizeBytes - 8;
  m.store64(last, 5n);
  assert.equal(m.faa64(last, 10n), 5n);
  assert.equal(m.load64(last), 15n);
}

test('atomics on a pool', () => {
  const pool = openPool(poolPath('atomics'), { createSizeBytes: 4096 });
  try {
    checkAtomics(pool);
  } finally {
    pool.close();
  }
});

test('atomics on a simulator act on the cache image and do not persist', () => {
  const sim = createSim(4096);
  try {
    checkAtomics(sim);
    assert.equal(sim.persistentImage().readBigUInt64LE(8), 0n, 'atomics do not flush');
    sim.persist(8, 8);
    assert.equal(sim.persistentImage().readBigUInt64LE(8), MAX);
  } finally {
    sim.close();
  }
});
