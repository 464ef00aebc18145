// Proves that openPool creates, maps and reopens pool files with their data intact, reports the right
// flush mode, maps open failures to DPMS_EXISTS / DPMS_NOT_FOUND, and that close() (or GC of an
// unclosed mapping) detaches the JS view and unmaps the file, after which every method throws DPMS_CLOSED.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { after, test } from 'node:test';

import { benchMemcpyPersist, createSim, openPool, type PmMapping } from '../../native/index';
import { assertCode, cleanup, collectGarbage, isMapped, poolPath } from './helpers';

after(cleanup);

const TMPFS_MAGIC = 0x01021994;

test('create, write, persist, close and reopen keeps the data', () => {
  const file = poolPath('reopen');
  const created = openPool(file, { createSizeBytes: 1 << 20 });
  assert.equal(created.sizeBytes, 1 << 20);
  assert.equal(created.buffer.length, 1 << 20);
  assert.equal(typeof created.isPmem, 'boolean');
  assert.equal(created.flushMode, 'cpu', '/dev/shm is tmpfs, so CPU flushes are the persistence path');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);

  created.buffer.write('hello, persistent world', 100, 'utf8');
  created.persist(100, 23);
  created.memcpyPersist(4096, Buffer.from('xxabcdefyy'), 2, 6);
  created.memcpyFlush(8192, Buffer.from('flushed'));
  created.drain();
  created.flush(0, created.sizeBytes);
  created.drain();
  created.store64(16, 0xdeadbeefcafef00dn);
  created.persist(16, 8);
  created.close();

  const reopened = openPool(file);
  try {
    assert.equal(reopened.sizeBytes, 1 << 20);
    assert.equal(reopened.buffer.toString('utf8', 100, 123), 'hello, persistent world');
    assert.equal(reopened.buffer.toString('utf8', 4096, 4102), 'abcdef');
    assert.equal(reopened.buffer.toString('utf8', 8192, 8199), 'flushed');
    assert.equal(reopened.load64(16), 0xdeadbeefcafef00dn);
  } finally {
    reopened.close();
  }
});

test('a pool on a block file system uses msync and still persists', () => {
  const dir = os.tmpdir();
  const file = poolPath('msync', dir);
  const expected = fs.statfsSync(dir).type === TMPFS_MAGIC ? 'cpu' : 'msync';
  const pool = openPool(file, { createSizeBytes: 64 * 1024 });
  assert.equal(pool.flushMode, expected);
  pool.buffer.write('msync', 5000);
  pool.flush(5000, 5);
  pool.drain();
  pool.memcpyPersist(6000, Buffer.from('copy'));
  pool.memcpyFlush(7000, Buffer.from('nodrain'));
  pool.close();
  const reopened = openPool(file);
  assert.equal(reopened.buffer.toString('utf8', 5000, 5005), 'msync');
  assert.equal(reopened.buffer.toString('utf8', 6000, 6004), 'copy');
  assert.equal(reopened.buffer.toString('utf8', 7000, 7007), 'nodrain');
  assert.ok(benchMemcpyPersist(reopened, 0, 4096, 16 * 4096) > 0);
  reopened.close();
});

test('create on an existing path throws DPMS_EXISTS and leaves the file alone', () => {
  const file = poolPath('exists');
  fs.writeFileSync(file, 'precious');
  assertCode(() => openPool(file, { createSizeBytes: 4096 }), 'DPMS_EXISTS');
  assert.equal(fs.readFileSync(file, 'utf8'), 'precious');
});

test('opening a missing pool throws DPMS_NOT_FOUND', () => {
  assertCode(() => openPool(poolPath('missing')), 'DPMS_NOT_FOUND');
  assertCode(() => openPool('/dev/shm/no-such-dir-dpms/x.pool'), 'DPMS_NOT_FOUND');
});

test('other open failures throw DPMS_IO; bad arguments throw DPMS_INVALID_ARGUMENT', () => {
  assertCode(() => openPool('/dev/shm'), 'DPMS_IO'); // a directory cannot be mapped
  assertCode(() => openPool(42 as unknown as string), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => openPool(poolPath('zero'), { createSizeBytes: 0 }), 'DPMS_INVALID_ARGUMENT');
  assertCode(() => openPool(poolPath('neg'), { createSizeBytes: -1 }), 'DPMS_OUT_OF_BOUNDS');
});

test('close detaches the buffer, unmaps at once, is idempotent, and later calls throw DPMS_CLOSED', () => {
  const file = poolPath('close');
  const pool = openPool(file, { createSizeBytes: 4096 });
  const view = pool.buffer.subarray(64, 128);
  assert.ok(isMapped(file));
  pool.close();
  assert.ok(!isMapped(file), 'close() must unmap immediately');
  assert.equal(pool.buffer.length, 0);
  assert.equal(pool.buffer.buffer.byteLength, 0);
  assert.equal(view.length, 0, 'views made before close are detached too');
  pool.close();

  const calls: Array<(m: PmMapping) => unknown> = [
    (m) => m.flush(0, 8),
    (m) => m.drain(),
    (m) => m.persist(0, 8),
    (m) => m.memcpyPersist(0, Buffer.alloc(8)),
    (m) => m.memcpyFlush(0, Buffer.alloc(8)),
    (m) => m.load64(0),
    (m) => m.store64(0, 1n),
    (m) => m.cas64(0, 0n, 1n),
    (m) => m.faa64(0, 1n),
    (m) => benchMemcpyPersist(m, 0, 8, 8),
  ];
  for (const call of calls) assertCode(() => call(pool), 'DPMS_CLOSED');
});

test('GC of an unclosed mapping unmaps it, but not while its buffer is still reachable', async () => {
  const file = poolPath('gc');
  let buffer: Buffer | undefined = (() => {
    const pool = openPool(file, { createSizeBytes: 8192 });
    pool.buffer.write('still here', 10);
    return pool.buffer;
  })();
  await collectGarbage();
  assert.ok(isMapped(file), 'the buffer keeps the mapping alive');
  assert.equal(buffer.toString('utf8', 10, 20), 'still here');
  buffer = undefined;
  await collectGarbage();
  assert.ok(!isMapped(file), 'once nothing references it, the mapping is unmapped');

  const again = poolPath('gc2');
  (() => {
    openPool(again, { createSizeBytes: 8192 });
  })();
  await collectGarbage();
  assert.ok(!isMapped(again));

  // Closed mappings and their detached buffers are collected without a second unmap or free.
  for (let i = 0; i < 20; i++) {
    openPool(poolPath(`gc-closed-${i}`), { createSizeBytes: 4096 }).close();
    createSim(1 << 16).close();
    createSim(1 << 16); // never closed: freed by GC
  }
  await collectGarbage();
});
