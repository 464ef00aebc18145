// Proves the native bench loops run on every kind of mapping (CPU-flushed pool, msync pool, simulator),
// return positive nanosecond counts, and leave the stored bytes in place.
import assert from 'node:assert/strict';
import os from 'node:os';
import { after, test } from 'node:test';

import { benchMemcpyPersist, benchStoreFlushFence, createSim, openPool, type PmMapping } from '../../native/index';
import { cleanup, poolPath } from './helpers';

after(cleanup);

function checkBench(m: PmMapping): void {
  const fence = benchStoreFlushFence(m, 128, 64, 200);
  assert.ok(Number.isFinite(fence) && fence > 0, `benchStoreFlushFence gave ${fence}`);
  assert.ok(m.buffer.subarray(128, 192).every((b) => b === 199), 'the last store pattern is in place');
  const copy = benchMemcpyPersist(m, 1024, 256, 256 * 100 + 17);
  assert.ok(Number.isFinite(copy) && copy > 0, `benchMemcpyPersist gave ${copy}`);
  const big = benchMemcpyPersist(m, 0, 4096, 4096);
  assert.ok(big > 0);
}

test('bench loops on a tmpfs pool (cpu flushes)', () => {
  const pool = openPool(poolPath('bench'), { createSizeBytes: 1 << 16 });
  assert.equal(pool.flushMode, 'cpu');
  checkBench(pool);
  pool.close();
});

test('bench loops on a pool in the OS temp dir', () => {
  const pool = openPool(poolPath('bench-tmp', os.tmpdir()), { createSizeBytes: 1 << 16 });
  checkBench(pool);
  pool.close();
});

test('bench loops on a simulator use its flush path', () => {
  const sim = createSim(1 << 16);
  checkBench(sim);
  assert.ok(sim.stats.flushes > 200 && sim.stats.drains > 200);
  assert.deepEqual(sim.persistentImage(), sim.buffer);
  sim.close();
});
