// Proves that a pool's superblock is validated on open: format then open returns the pool's info, and every kind of damage (short or truncated file, bad magic, version, checksum, inconsistent fields, wrong node, missing file, random garbage) is a typed DpmsError, never a crash; formatPoolFile refuses to overwrite and rejects bad parameters.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { crc32c } from '../../native';
import {
  checkPoolFile, createSimPm, decodeSuperblock, FORMAT_VERSION, formatPoolFile, inspectPoolFile, isDpmsError, openPoolFile, Pdsm,
  PoolNode, type DpmsErrorCode,
} from '../../pdsm';
import { uint32Stream as prng } from '../support/random';
import { code } from '../support/errors';

const SEED = 0x5eed5b10;
const POOL_BYTES = 1024 * 1024;
const SMALL: { nodeId: number; chunkBytes: number; laneCount: number; laneBytes: number } = {
  nodeId: 0, chunkBytes: 16 * 1024, laneCount: 2, laneBytes: 8 * 1024,
};

const created: string[] = [];
let counter = 0;
function tempPath(tag: string): string {
  const file = path.join('/dev/shm', `dpms-sb-test-${process.pid}-${Date.now()}-${counter++}-${tag}.pool`);
  created.push(file);
  return file;
}
after(() => {
  for (const file of created) fs.rmSync(file, { force: true });
  for (const file of created) assert.equal(fs.existsSync(file), false, `${file} left behind`);
});


/** Open through every entry point that reads a pool file; all must fail with `expected`. */
async function assertOpenFails(file: string, expected: DpmsErrorCode, nodeId?: number): Promise<void> {
  await assert.rejects(Pdsm.open({ nodes: [{ path: file, nodeId }] }), code(expected), 'Pdsm.open');
  assert.throws(() => checkPoolFile(file, nodeId), code(expected), 'checkPoolFile');
  if (nodeId === undefined) assert.throws(() => inspectPoolFile(file), code(expected), 'inspectPoolFile');
}

function formatted(tag: string, nodeId = 0): string {
  const file = tempPath(tag);
  formatPoolFile(file, { ...SMALL, nodeId, sizeBytes: POOL_BYTES });
  return file;
}

/** Change bytes of a pool file in place. */
function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

function readHead(file: string): Buffer {
  return fs.readFileSync(file).subarray(0, 4096);
}

/** Rewrite the superblock checksum after a field change, the way a careless tool would. */
function resealSuperblock(file: string, change: (superblock: Buffer) => void): void {
  const superblock = Buffer.from(readHead(file));
  change(superblock);
  superblock.writeUInt32LE(crc32c(superblock, 0, 252, SEED), 252);
  patch(file, 0, superblock);
}


test('format then open works and returns the pool info', async () => {
  const file = tempPath('ok');
  const { isPmem, flushMode, ...info } = formatPoolFile(file, { ...SMALL, nodeId: 9, sizeBytes: POOL_BYTES });
  assert.equal(typeof isPmem, 'boolean');
  assert.ok(['cpu', 'msync'].includes(flushMode), flushMode);
  assert.equal(info.nodeId, 9);
  assert.equal(info.version, FORMAT_VERSION);
  assert.equal(info.layoutName, 'dpms-pdsm');
  assert.match(info.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(info.layout.poolBytes, POOL_BYTES);
  assert.equal(info.layout.chunkBytes, SMALL.chunkBytes);
  assert.equal(info.layout.laneCount, SMALL.laneCount);
  assert.equal(info.layout.laneBytes, SMALL.laneBytes);
  assert.ok(info.layout.chunkCount > 0);
  assert.ok(Math.abs(info.createdMs - Date.now()) < 60_000);
  assert.equal(fs.statSync(file).size, POOL_BYTES);

  const head = readHead(file);
  assert.equal(head.toString('ascii', 0, 8), 'DPMSPOOL');
  assert.equal(head.readUInt32LE(252), crc32c(head, 0, 252, SEED), 'checksum rule of the superblock');

  const dsm = await Pdsm.open({ nodes: [{ path: file, nodeId: 9 }] });
  try {
    const node = dsm.node(9);
    assert.deepEqual(dsm.nodeIds, [9]);
    assert.deepEqual(node.info, info);
    assert.deepEqual(node.info.layout, info.layout);
    assert.deepEqual(node.recovery, { replayed: 0, discarded: 0, inDoubt: [] });
  } finally {
    await dsm.close();
  }
  const pm = openPoolFile(file);
  try {
    assert.deepEqual(decodeSuperblock(pm.buffer, { availableBytes: pm.sizeBytes, nodeId: 9 }), info);
  } finally {
    pm.close();
  }
  const report = checkPoolFile(file, 9);
  assert.equal(report.clean, true, report.errors.join('; '));
  assert.equal(inspectPoolFile(file).info.uuid, info.uuid);
});

test('a file shorter than a superblock is DPMS_TRUNCATED', async () => {
  for (const size of [0, 1, 252, 4095]) {
    const file = tempPath(`short${size}`);
    fs.writeFileSync(file, Buffer.alloc(size, 0x5a));
    assert.throws(() => openPoolFile(file), code('DPMS_TRUNCATED'), `openPoolFile of ${size} B`);
    await assertOpenFails(file, 'DPMS_TRUNCATED');
  }
  // The first 4095 bytes of a real pool are still too short.
  const file = formatted('short-real');
  fs.truncateSync(file, 4095);
  await assertOpenFails(file, 'DPMS_TRUNCATED');
});

test('a pool file truncated below its recorded size is DPMS_TRUNCATED', async () => {
  for (const size of [4096, POOL_BYTES / 2, POOL_BYTES - 1]) {
    const file = formatted(`trunc${size}`);
    fs.truncateSync(file, size);
    await assertOpenFails(file, 'DPMS_TRUNCATED');
  }
  // A decoder given a mapping smaller than the recorded size says the same.
  const sim = createSimPm(POOL_BYTES);
  try {
    PoolNode.format(sim, SMALL);
    assert.throws(() => decodeSuperblock(sim.buffer, { availableBytes: POOL_BYTES - 4096 }), code('DPMS_TRUNCATED'));
    assert.throws(() => decodeSuperblock(sim.buffer.subarray(0, 4000), { availableBytes: POOL_BYTES }), code('DPMS_TRUNCATED'));
  } finally {
    sim.close();
  }
});

test('bad magic is DPMS_BAD_MAGIC', async () => {
  const file = formatted('magic');
  patch(file, 0, Buffer.from('XPMSPOOL'));
  await assertOpenFails(file, 'DPMS_BAD_MAGIC');
  const zeros = tempPath('zeros');
  fs.writeFileSync(zeros, Buffer.alloc(POOL_BYTES));
  await assertOpenFails(zeros, 'DPMS_BAD_MAGIC');
});

test('another format version is DPMS_UNSUPPORTED_VERSION', async () => {
  for (const version of [0, FORMAT_VERSION + 1, 0xffffffff]) {
    const file = formatted(`version${version}`);
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(version >>> 0);
    patch(file, 8, bytes);
    await assertOpenFails(file, 'DPMS_UNSUPPORTED_VERSION');
    // Even with a checksum that matches the new version.
    resealSuperblock(file, () => undefined);
    await assertOpenFails(file, 'DPMS_UNSUPPORTED_VERSION');
  }
});

test('one flipped byte in the checksummed area is DPMS_CHECKSUM', async () => {
  // Every field other than magic and version, the padding, and the checksum itself.
  for (const offset of [12, 16, 32, 40, 48, 64, 96, 104, 112, 144, 200, 251, 252, 255]) {
    const file = formatted(`flip${offset}`);
    const head = readHead(file);
    patch(file, offset, Buffer.from([head[offset] ^ 0x01]));
    await assertOpenFails(file, 'DPMS_CHECKSUM');
  }
});

test('a field changed with the checksum recomputed is DPMS_CORRUPTION', async () => {
  const changes: Array<[string, (sb: Buffer) => void]> = [
    ['layout name', (sb) => sb.write('dpms-pdfs', 112, 'ascii')],
    ['header size', (sb) => sb.writeUInt32LE(8192, 12)],
    ['chunk count', (sb) => sb.writeUInt32LE(sb.readUInt32LE(52) + 1, 52)],
    ['log offset', (sb) => sb.writeUInt32LE(8192, 64)],
    ['root offset', (sb) => sb.writeUInt32LE(sb.readUInt32LE(144) + 64, 144)],
    ['bitmap offset', (sb) => sb.writeUInt32LE(sb.readUInt32LE(72) + 64, 72)],
    ['bitmap size', (sb) => sb.writeUInt32LE(sb.readUInt32LE(80) * 2, 80)],
    ['chunk metadata size', (sb) => sb.writeUInt32LE(sb.readUInt32LE(84) + 64, 84)],
    ['chunk metadata offset', (sb) => sb.writeUInt32LE(sb.readUInt32LE(88) + 64, 88)],
    ['heap offset', (sb) => sb.writeUInt32LE(sb.readUInt32LE(96) + 4096, 96)],
    ['chunk size not a power of two', (sb) => sb.writeUInt32LE(3 * 4096, 48)],
    ['chunk size changed', (sb) => sb.writeUInt32LE(32 * 1024, 48)],
    ['lane count zero', (sb) => sb.writeUInt32LE(0, 56)],
    ['lane size changed', (sb) => sb.writeUInt32LE(16 * 1024, 60)],
    ['pool size zero', (sb) => sb.writeUInt32LE(0, 40)],
    ['pool size beyond 1 TiB', (sb) => sb.writeUInt32LE(0x200, 44)],
    ['node id beyond 4095', (sb) => sb.writeUInt32LE(4096, 32)],
  ];
  for (const [what, change] of changes) {
    const file = formatted(`field-${what.replace(/\W+/g, '-')}`);
    resealSuperblock(file, change);
    await assert.rejects(Pdsm.open({ nodes: [{ path: file }] }), code('DPMS_CORRUPTION'), what);
    assert.throws(() => checkPoolFile(file), code('DPMS_CORRUPTION'), what);
    assert.throws(() => inspectPoolFile(file), code('DPMS_CORRUPTION'), what);
  }
  // A pool size that grows past the file: consistent fields, but the file is now short.
  const file = formatted('grown');
  resealSuperblock(file, (sb) => sb.writeUInt32LE(POOL_BYTES * 2, 40));
  const pm = openPoolFile(file);
  try {
    const error = ((): unknown => {
      try {
        return decodeSuperblock(pm.buffer, { availableBytes: pm.sizeBytes });
      } catch (caught) {
        return caught;
      }
    })();
    assert.ok(isDpmsError(error), `expected a DpmsError, got ${String(error)}`);
    assert.ok(['DPMS_CORRUPTION', 'DPMS_TRUNCATED'].includes(error.code), error.code);
  } finally {
    pm.close();
  }
});

test('a pool of another node is DPMS_WRONG_NODE', async () => {
  const file = formatted('node', 3);
  await assertOpenFails(file, 'DPMS_WRONG_NODE', 4);
  await assertOpenFails(file, 'DPMS_WRONG_NODE', 0);
  const dsm = await Pdsm.open({ nodes: [{ path: file, nodeId: 3 }] });
  await dsm.close();
});

test('a missing file is DPMS_NOT_FOUND', async () => {
  const file = tempPath('missing');
  assert.throws(() => openPoolFile(file), code('DPMS_NOT_FOUND'));
  await assertOpenFails(file, 'DPMS_NOT_FOUND');
  assert.throws(() => openPoolFile(path.join(file, 'below')), (error: unknown) => isDpmsError(error));
});

test('random garbage files of various sizes are always a DpmsError', async () => {
  const next = prng(0x5b5b1234);
  const sizes = [1, 17, 4095, 4096, 4097, 8192, 65536, 300_000, POOL_BYTES];
  const codes = new Set<string>();
  let cases = 0;
  for (const size of sizes) {
    // Pure garbage; garbage behind a valid magic; behind magic and version; and with a valid checksum too.
    for (let variant = 0; variant < 4; variant++) {
      const bytes = Buffer.alloc(size);
      for (let i = 0; i < size; i++) bytes[i] = next() & 0xff;
      if (size >= 4096 && variant >= 1) bytes.write('DPMSPOOL', 0, 'ascii');
      if (size >= 4096 && variant >= 2) bytes.writeUInt32LE(FORMAT_VERSION, 8);
      if (size >= 4096 && variant >= 3) bytes.writeUInt32LE(crc32c(bytes, 0, 252, SEED), 252);
      const file = tempPath(`garbage${size}-${variant}`);
      fs.writeFileSync(file, bytes);
      for (const attempt of [
        () => Pdsm.open({ nodes: [{ path: file }] }).then((dsm) => dsm.close()),
        async () => checkPoolFile(file),
        async () => inspectPoolFile(file),
      ]) {
        await assert.rejects(attempt(), (error: unknown) => {
          assert.ok(isDpmsError(error), `size ${size} variant ${variant}: not a DpmsError: ${String(error)}`);
          codes.add(error.code);
          return true;
        });
        cases++;
      }
      fs.rmSync(file);
    }
  }
  assert.equal(cases, sizes.length * 4 * 3);
  for (const expected of ['DPMS_TRUNCATED', 'DPMS_BAD_MAGIC', 'DPMS_UNSUPPORTED_VERSION', 'DPMS_CHECKSUM', 'DPMS_CORRUPTION']) {
    assert.ok(codes.has(expected), `garbage never produced ${expected} (${[...codes].join(', ')})`);
  }
});

test('formatPoolFile refuses an existing file without force and overwrites with force', async () => {
  const file = tempPath('exists');
  const first = formatPoolFile(file, { ...SMALL, sizeBytes: POOL_BYTES });
  const before = fs.readFileSync(file);
  assert.throws(() => formatPoolFile(file, { ...SMALL, sizeBytes: POOL_BYTES }), code('DPMS_EXISTS'));
  assert.throws(() => formatPoolFile(file, { ...SMALL, sizeBytes: POOL_BYTES, force: false }), code('DPMS_EXISTS'));
  assert.ok(fs.readFileSync(file).equals(before), 'a refused format changed the file');
  // Any existing file, not only pools.
  const other = tempPath('other');
  fs.writeFileSync(other, 'precious');
  assert.throws(() => formatPoolFile(other, { ...SMALL, sizeBytes: POOL_BYTES }), code('DPMS_EXISTS'));
  assert.equal(fs.readFileSync(other, 'utf8'), 'precious');

  const second = formatPoolFile(file, { ...SMALL, nodeId: 5, sizeBytes: 2 * POOL_BYTES, force: true });
  assert.notEqual(second.uuid, first.uuid);
  assert.equal(fs.statSync(file).size, 2 * POOL_BYTES);
  const dsm = await Pdsm.open({ nodes: [{ path: file, nodeId: 5 }] });
  try {
    assert.equal(dsm.node(5).info.uuid, second.uuid);
  } finally {
    await dsm.close();
  }
});

test('invalid format parameters are DPMS_INVALID_ARGUMENT and leave no file', () => {
  const bad: Array<[string, Partial<typeof SMALL> & { sizeBytes?: number }]> = [
    ['chunk size not a power of two', { chunkBytes: 12 * 1024 }],
    ['chunk size 5000', { chunkBytes: 5000 }],
    ['chunk size too small', { chunkBytes: 2048 }],
    ['chunk size too large', { chunkBytes: 128 * 1024 * 1024 }],
    ['pool too small for the log and one chunk', { sizeBytes: 32 * 1024 }],
    ['pool too small for default lanes', { sizeBytes: POOL_BYTES, laneBytes: 256 * 1024, laneCount: 16 }],
    ['lane size not a multiple of 64', { laneBytes: 8 * 1024 + 8 }],
    ['lane size too small', { laneBytes: 1024 }],
    ['lane size too large', { laneBytes: 128 * 1024 * 1024 }],
    ['lane count zero', { laneCount: 0 }],
    ['lane count too large', { laneCount: 5000 }],
    ['lane count fractional', { laneCount: 1.5 }],
    ['node id too large', { nodeId: 4096 }],
    ['node id negative', { nodeId: -1 }],
  ];
  for (const [what, change] of bad) {
    const file = tempPath('badparams');
    assert.throws(() => formatPoolFile(file, { ...SMALL, sizeBytes: POOL_BYTES, ...change }), code('DPMS_INVALID_ARGUMENT'), what);
    assert.equal(fs.existsSync(file), false, `${what}: a failed format left ${file}`);
    const sim = createSimPm(change.sizeBytes ?? POOL_BYTES);
    try {
      assert.throws(() => PoolNode.format(sim, { ...SMALL, ...change }), code('DPMS_INVALID_ARGUMENT'), `${what} (simulator)`);
      assert.throws(() => PoolNode.open(sim), code('DPMS_BAD_MAGIC'), `${what}: a failed format left a valid superblock`);
    } finally {
      sim.close();
    }
  }
});
