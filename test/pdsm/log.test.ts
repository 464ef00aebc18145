// Proves that the redo log commits and recovers exactly: oversized transactions are refused without harm, torn or garbage lanes are discarded, logs that target the superblock are refused, stale logs are never replayed, and a committed but unapplied log is replayed at open.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32c } from '../../native';
import {
  COMMIT, COMMIT_CHECKED_FROM, COMMIT_MAGIC, createSimPm, generationSeed, inspectLane, InstrumentedPm, isDpmsError, LANE, makeAddress,
  Pdsm, PoolNode, RECORD, RECORD_HEADER_BYTES, RecordOp, verifyPool, type Layout, type PmOps, type SimMapping,
} from '../../pdsm';
import { uint32Stream as prng } from '../support/random';
import { code } from '../support/errors';

const POOL_BYTES = 1024 * 1024;
const FORMAT = { nodeId: 0, chunkBytes: 16 * 1024, laneCount: 4, laneBytes: 8 * 1024 };

class SimulatedCrash extends Error {}



function randomBytes(next: () => number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = next() & 0xff;
  return bytes;
}

function newPool(format: typeof FORMAT = FORMAT): SimMapping {
  const sim = createSimPm(POOL_BYTES);
  PoolNode.format(sim, format);
  return sim;
}

function openOn(pm: PmOps): Promise<Pdsm> {
  return Pdsm.open({ nodes: [{ pm, nodeId: 0 }], lockTimeoutMs: 1000 });
}

const laneBase = (layout: Layout, lane: number): number => layout.logOffset + lane * layout.laneBytes;

interface CraftedRecord {
  readonly op: number;
  readonly offset: number;
  readonly data: Buffer;
  /** Length field when it should differ from data.length. */
  readonly length?: number;
}

/**
 * Write a commit record and its records into `lane` of `image` by hand, following the format of
 * pdsm/layout.ts and the checksum rule of pdsm/log.ts: CRC-32C seeded with generationSeed(g) over the
 * commit line from COMMIT_CHECKED_FROM to its end, continued over the records.
 */
function craftLog(image: Buffer, layout: Layout, lane: number, options: {
  generation: number; sequence: number; records: readonly CraftedRecord[]; applied?: number; recordCount?: number; extraBytes?: number;
}): void {
  const base = laneBase(layout, lane);
  const commitAt = base + LANE.commit;
  assert.equal(LANE.records, LANE.commit + 64, 'records follow the commit line');
  let at = base + LANE.records;
  for (const record of options.records) {
    image.writeUInt32LE(record.op, at + RECORD.op);
    image.writeUInt32LE(record.length ?? record.data.length, at + RECORD.length);
    image.writeBigUInt64LE(BigInt(record.offset), at + RECORD.offset);
    const padded = (record.data.length + 7) & ~7;
    image.fill(0, at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + padded);
    record.data.copy(image, at + RECORD_HEADER_BYTES);
    at += RECORD_HEADER_BYTES + padded;
  }
  image.fill(0, at, at + (options.extraBytes ?? 0));
  at += options.extraBytes ?? 0;
  const recordsBytes = at - (base + LANE.records);
  image.fill(0, commitAt, commitAt + 64);
  image.writeUInt32LE(COMMIT_MAGIC, commitAt + COMMIT.magic);
  image.writeUInt32LE(options.recordCount ?? options.records.length, commitAt + COMMIT.recordCount);
  image.writeBigUInt64LE(BigInt(options.generation), commitAt + COMMIT.generation);
  image.writeBigUInt64LE(BigInt(options.sequence), commitAt + COMMIT.sequence);
  image.writeUInt32LE(recordsBytes, commitAt + COMMIT.recordsBytes);
  const checksum = crc32c(image, commitAt + COMMIT_CHECKED_FROM, 64 - COMMIT_CHECKED_FROM + recordsBytes, generationSeed(options.generation));
  image.writeUInt32LE(checksum, commitAt + COMMIT.checksum);
  if (options.applied !== undefined) image.writeBigUInt64LE(BigInt(options.applied), base + LANE.appliedGeneration);
}

function u64(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

/** A fresh pool's persistent image and its layout. */
function freshImage(): { image: Buffer; layout: Layout } {
  const sim = newPool();
  try {
    const node = PoolNode.open(createSimPm(sim.persistentImage()));
    const layout = node.layout;
    node.close();
    return { image: sim.persistentImage(), layout };
  } finally {
    sim.close();
  }
}

test('a transaction bigger than one lane is DPMS_TX_TOO_LARGE and the pool stays usable', async () => {
  const sim = newPool({ ...FORMAT, laneBytes: 4096 });
  const dsm = await openOn(sim);
  try {
    const root = dsm.root(0);
    const node = dsm.node(0);
    const heapObject = await dsm.alloc(8000);
    const statsBefore = node.allocator.stats();

    // One record too large.
    await assert.rejects(dsm.transaction((tx) => tx.write(root, Buffer.alloc(4000, 1))), code('DPMS_TX_TOO_LARGE'));
    // Many records that add up to more than the lane.
    await assert.rejects(dsm.transaction(async (tx) => {
      for (let i = 0; i < 100; i++) await tx.write(makeAddress(0, (heapObject % 2 ** 40) + i * 64), Buffer.alloc(64, 2));
    }), code('DPMS_TX_TOO_LARGE'));
    // Allocations and a large write in one transaction: the allocation is given back.
    const tx = dsm.begin();
    const address = await tx.alloc(6000);
    await assert.rejects(tx.write(address, Buffer.alloc(6000, 3)), code('DPMS_TX_TOO_LARGE'));
    assert.equal(tx.status, 'active');
    await tx.abort();
    assert.deepEqual(node.allocator.stats(), statsBefore, 'the aborted allocation was not given back');
    assert.equal(dsm.objectSize(address), undefined);

    assert.ok((await dsm.read(root, 4000)).equals(Buffer.alloc(4000)), 'a refused transaction wrote data');
    await dsm.transaction((t) => t.write(root, Buffer.from('still usable')));
    assert.equal((await dsm.read(root, 12)).toString(), 'still usable');
    // Just under the limit fits: 3968 B of log hold a record with 3952 B of data.
    await dsm.transaction((t) => t.write(heapObject, Buffer.alloc(3952, 4)));
    assert.ok((await dsm.read(heapObject, 3952)).equals(Buffer.alloc(3952, 4)));

    const reopened = await openOn(createSimPm(sim.persistentImage()));
    try {
      assert.equal((await reopened.read(reopened.root(0), 12)).toString(), 'still usable');
      assert.ok((await reopened.read(root, 4000)).subarray(12).equals(Buffer.alloc(4000 - 12)));
      assert.ok((await reopened.read(heapObject, 3952)).equals(Buffer.alloc(3952, 4)));
    } finally {
      await reopened.close();
    }
  } finally {
    await dsm.close();
  }
});

/** A pool with committed data on lane 0; returns its persistent image, layout, and the data written. */
async function poolWithData(): Promise<{ image: Buffer; layout: Layout; object: number; content: Buffer; rootContent: Buffer }> {
  const sim = newPool();
  const dsm = await openOn(sim);
  try {
    const content = Buffer.from('object content that must survive');
    const rootContent = Buffer.from('root content');
    const object = await dsm.transaction(async (tx) => {
      const address = await tx.alloc(200);
      await tx.write(address, content);
      await tx.write(dsm.root(0), rootContent);
      return address;
    });
    // The commit's appliedGeneration store becomes durable at the next barrier: make one.
    await dsm.persist(dsm.root(0), 8);
    return { image: sim.persistentImage(), layout: dsm.node(0).layout, object, content, rootContent };
  } finally {
    await dsm.close();
  }
}

async function assertData(dsm: Pdsm, object: number, content: Buffer, rootContent: Buffer): Promise<void> {
  const address = makeAddress(0, object);
  assert.ok((await dsm.read(address, content.length)).equals(content), 'object content changed');
  assert.ok((await dsm.read(dsm.root(0), rootContent.length)).equals(rootContent), 'root content changed');
  assert.equal(dsm.objectSize(address), 256);
  const report = verifyPool(dsm.node(0).pm.buffer, dsm.node(0).info);
  assert.equal(report.clean, true, report.errors.join('; '));
  assert.equal(report.objects, 1);
}

test('garbage in a lane of a crash image is discarded at open and the data is unchanged', async () => {
  const { image, layout, object, content, rootContent } = await poolWithData();
  assert.equal(inspectLane(image, layout, 0).state, 'void', 'lane 0 holds the applied commit');
  const next = prng(0xd15ca4d);
  const cases: Array<{ what: string; damage: (img: Buffer) => void; torn: boolean }> = [];
  for (let i = 0; i < 6; i++) {
    const lane = i % layout.laneCount;
    cases.push({
      what: `random commit record and records in lane ${lane} (${i})`,
      damage: (img) => randomBytes(next, 64 + 512).copy(img, laneBase(layout, lane) + LANE.commit),
      torn: true,
    });
  }
  cases.push({
    what: 'a commit record of the next generation with garbage records and checksum',
    damage: (img) => {
      const base = laneBase(layout, 0);
      const applied = Number(img.readBigUInt64LE(base + LANE.appliedGeneration));
      randomBytes(next, 1024).copy(img, base + LANE.records);
      img.writeUInt32LE(COMMIT_MAGIC, base + LANE.commit + COMMIT.magic);
      img.writeBigUInt64LE(BigInt(applied + 1), base + LANE.commit + COMMIT.generation);
      img.writeUInt32LE(1024, base + LANE.commit + COMMIT.recordsBytes);
      img.writeUInt32LE(3, base + LANE.commit + COMMIT.recordCount);
      img.writeUInt32LE(next(), base + LANE.commit + COMMIT.checksum);
    },
    torn: true,
  });
  cases.push({
    what: 'an applied commit whose records were overwritten with garbage',
    damage: (img) => randomBytes(next, 2048).copy(img, laneBase(layout, 0) + LANE.records),
    torn: false,
  });
  cases.push({
    what: 'garbage records in an empty lane',
    damage: (img) => randomBytes(next, 2048).copy(img, laneBase(layout, 3) + LANE.records),
    torn: false,
  });

  for (const { what, damage, torn } of cases) {
    const damaged = Buffer.from(image);
    damage(damaged);
    let tornLanes = 0;
    for (let lane = 0; lane < layout.laneCount; lane++) if (inspectLane(damaged, layout, lane).state === 'torn') tornLanes++;
    assert.equal(tornLanes, torn ? 1 : 0, `${what}: lanes before recovery`);
    const sim = createSimPm(damaged);
    const dsm = await openOn(sim);
    try {
      assert.deepEqual(dsm.node(0).recovery, { replayed: 0, discarded: torn ? 1 : 0, inDoubt: [] }, what);
      await assertData(dsm, object, content, rootContent);
      for (let lane = 0; lane < layout.laneCount; lane++) {
        assert.ok(['void', 'empty'].includes(inspectLane(sim.buffer, layout, lane).state), `${what}: lane ${lane} after recovery`);
      }
      // The discarded lane is voided durably: the next open finds nothing to do.
      const again = await openOn(createSimPm(sim.persistentImage()));
      try {
        assert.deepEqual(again.node(0).recovery, { replayed: 0, discarded: 0, inDoubt: [] }, `${what}: second open`);
      } finally {
        await again.close();
      }
      // And commits keep working, through every lane.
      await Promise.all([0, 1, 2, 3, 4, 5].map((i) => dsm.transaction((tx) => tx.write(makeAddress(0, object + 64 + i * 8), u64(i + 1)))));
      const third = await openOn(createSimPm(sim.persistentImage()));
      try {
        assert.equal(third.node(0).recovery.discarded, 0);
        for (let i = 0; i < 6; i++) assert.ok((await third.read(makeAddress(0, object + 64 + i * 8), 8)).equals(u64(i + 1)));
        await assertData(third, object, content, rootContent);
      } finally {
        await third.close();
      }
    } finally {
      await dsm.close();
    }
  }
});

test('random garbage over the whole log region never crashes open', async () => {
  const { image, layout } = await poolWithData();
  const next = prng(0x10c5eed);
  for (let round = 0; round < 20; round++) {
    const damaged = Buffer.from(image);
    const start = layout.logOffset + (next() % (layout.laneCount * layout.laneBytes));
    const length = 1 + (next() % 4096);
    randomBytes(next, Math.min(length, layout.rootOffset - start)).copy(damaged, start);
    // Sometimes make a lane look like a fresh commit so that the records are examined.
    if (round % 2 === 0) {
      const lane = next() % layout.laneCount;
      const base = laneBase(layout, lane);
      damaged.writeBigUInt64LE(0n, base + LANE.appliedGeneration);
      damaged.writeUInt32LE(COMMIT_MAGIC, base + LANE.commit + COMMIT.magic);
    }
    const sim = createSimPm(damaged);
    try {
      const node = PoolNode.open(sim);
      assert.ok(node.recovery.replayed === 0, `round ${round}: garbage was replayed`);
    } catch (error) {
      assert.ok(isDpmsError(error), `round ${round}: not a DpmsError: ${String(error)}`);
    } finally {
      sim.close();
    }
  }
});

test('a hand-written committed log that was never applied is replayed at open', async () => {
  const { image, layout } = freshImage();
  const data = Buffer.from('replayed from the log');
  const heapData = Buffer.alloc(100, 0xab);
  craftLog(image, layout, 2, {
    generation: 1, sequence: 1,
    records: [
      { op: RecordOp.Write, offset: layout.rootOffset + 8, data },
      { op: RecordOp.Write, offset: layout.heapOffset + 4096, data: heapData },
    ],
  });
  assert.equal(inspectLane(image, layout, 2).state, 'committed');
  const sim = createSimPm(image);
  const dsm = await openOn(sim);
  try {
    assert.deepEqual(dsm.node(0).recovery, { replayed: 1, discarded: 0, inDoubt: [] });
    assert.ok((await dsm.read(makeAddress(0, layout.rootOffset + 8), data.length)).equals(data));
    assert.ok((await dsm.read(makeAddress(0, layout.heapOffset + 4096), 100)).equals(heapData));
    assert.equal(inspectLane(sim.buffer, layout, 2).state, 'void');
    const after = sim.persistentImage();
    assert.equal(inspectLane(after, layout, 2).state, 'void', 'the replay was not made durable');
    assert.ok(after.subarray(layout.rootOffset + 8, layout.rootOffset + 8 + data.length).equals(data));
    const again = await openOn(createSimPm(after));
    try {
      assert.deepEqual(again.node(0).recovery, { replayed: 0, discarded: 0, inDoubt: [] });
      assert.ok((await again.read(makeAddress(0, layout.rootOffset + 8), data.length)).equals(data));
      // The lane's next generation is above the replayed one: a new commit on it is not stale.
      await Promise.all([1, 2, 3, 4].map((i) => again.transaction((tx) => tx.write(makeAddress(0, layout.rootOffset + 64 * i), u64(i)))));
      const third = await openOn(createSimPm((again.node(0).pm as SimMapping).persistentImage()));
      try {
        for (const i of [1, 2, 3, 4]) assert.ok((await third.read(makeAddress(0, layout.rootOffset + 64 * i), 8)).equals(u64(i)));
      } finally {
        await third.close();
      }
    } finally {
      await again.close();
    }
  } finally {
    await dsm.close();
  }
});

test('committed logs in several lanes are replayed in commit-sequence order', async () => {
  const { image, layout } = freshImage();
  const target = layout.rootOffset + 128;
  craftLog(image, layout, 3, { generation: 1, sequence: 5, records: [{ op: RecordOp.Write, offset: target, data: Buffer.from('second') }] });
  craftLog(image, layout, 1, { generation: 1, sequence: 4, records: [{ op: RecordOp.Write, offset: target, data: Buffer.from('first!') }] });
  const dsm = await openOn(createSimPm(image));
  try {
    assert.equal(dsm.node(0).recovery.replayed, 2);
    assert.equal((await dsm.read(makeAddress(0, target), 6)).toString(), 'second');
  } finally {
    await dsm.close();
  }
});

test('a stale log (generation <= appliedGeneration) is not replayed', async () => {
  for (const [generation, applied] of [[1, 1], [3, 5], [7, 7]]) {
    const { image, layout } = freshImage();
    craftLog(image, layout, 1, {
      generation, sequence: 1, applied, records: [{ op: RecordOp.Write, offset: layout.rootOffset, data: Buffer.from('stale!') }],
    });
    assert.equal(inspectLane(image, layout, 1).state, 'void');
    const dsm = await openOn(createSimPm(image));
    try {
      assert.deepEqual(dsm.node(0).recovery, { replayed: 0, discarded: 0, inDoubt: [] });
      assert.ok((await dsm.read(dsm.root(0), 6)).equals(Buffer.alloc(6)), `generation ${generation} applied ${applied} was replayed`);
    } finally {
      await dsm.close();
    }
  }
  // The real thing: a commit, then a durable raw write of the same bytes; reopening must not roll it back.
  const sim = newPool();
  const dsm = await openOn(sim);
  try {
    const root = dsm.root(0);
    await dsm.transaction((tx) => tx.write(root, Buffer.from('from the transaction')));
    await dsm.writePersist(root, Buffer.from('raw write, later....'));
    const image = sim.persistentImage();
    assert.equal(inspectLane(image, dsm.node(0).layout, 0).state, 'void');
    const reopened = await openOn(createSimPm(image));
    try {
      assert.equal(reopened.node(0).recovery.replayed, 0);
      assert.equal((await reopened.read(root, 20)).toString(), 'raw write, later....');
    } finally {
      await reopened.close();
    }
  } finally {
    await dsm.close();
  }
});

test('a log with a valid checksum whose records leave the data regions is DPMS_CORRUPTION, and open writes nothing', async () => {
  const { layout } = freshImage();
  const heapEnd = layout.heapOffset + layout.chunkCount * layout.chunkBytes;
  const bad: Array<[string, CraftedRecord[], { recordCount?: number; extraBytes?: number }?]> = [
    ['superblock', [{ op: RecordOp.Write, offset: 0, data: Buffer.from('XXXXXXXX') }]],
    ['superblock checksum', [{ op: RecordOp.Write, offset: 252, data: Buffer.alloc(4) }]],
    ['the log itself', [{ op: RecordOp.Write, offset: layout.logOffset, data: u64(0) }]],
    ['the end of the log', [{ op: RecordOp.Write, offset: layout.rootOffset - 4, data: u64(0) }]],
    ['past the heap', [{ op: RecordOp.Write, offset: heapEnd - 4, data: u64(0) }]],
    ['far past the pool', [{ op: RecordOp.Write, offset: 2 ** 45, data: u64(0) }]],
    ['bits in the superblock', [{ op: RecordOp.SetBits32, offset: 8, data: Buffer.from([1, 0, 0, 0]) }]],
    ['an unknown operation', [{ op: 9, offset: layout.rootOffset, data: u64(0) }]],
    ['a misaligned bit record', [{ op: RecordOp.ClearBits32, offset: layout.rootOffset + 2, data: Buffer.from([1, 0, 0, 0]) }]],
    ['a bit record of 8 bytes', [{ op: RecordOp.SetBits32, offset: layout.rootOffset, data: u64(1) }]],
    ['more records than bytes', [{ op: RecordOp.Write, offset: layout.rootOffset, data: u64(1) }], { recordCount: 2 }],
    ['bytes after the last record', [{ op: RecordOp.Write, offset: layout.rootOffset, data: u64(1) }], { extraBytes: 16 }],
    ['a length that overruns the records', [{ op: RecordOp.Write, offset: layout.rootOffset, data: u64(1), length: 64 }]],
    ['a good record then the superblock', [
      { op: RecordOp.Write, offset: layout.rootOffset, data: Buffer.from('good') },
      { op: RecordOp.Write, offset: 16, data: Buffer.alloc(16) },
    ]],
  ];
  for (const [what, records, extra] of bad) {
    const { image } = freshImage();
    // A valid log in another lane must not be applied either when one lane is corrupt.
    craftLog(image, layout, 0, { generation: 1, sequence: 1, records: [{ op: RecordOp.Write, offset: layout.rootOffset + 64, data: Buffer.from('other lane') }] });
    craftLog(image, layout, 2, { generation: 1, sequence: 2, records, ...extra });
    assert.equal(inspectLane(image, layout, 2).state, 'committed', `${what}: the crafted log does not verify`);
    const sim = createSimPm(image);
    try {
      await assert.rejects(openOn(sim), code('DPMS_CORRUPTION'), what);
      assert.ok(sim.buffer.equals(image), `${what}: a refused open wrote the pool`);
      assert.ok(sim.persistentImage().equals(image), `${what}: a refused open persisted something`);
    } finally {
      sim.close();
    }
  }
});

test('a commit crashed right after its first drain is replayed at open', async () => {
  const sim = newPool();
  let armed = false;
  let drains = 0;
  const pm = new InstrumentedPm(sim, (point) => {
    if (!armed) return;
    if (drains >= 1) {
      armed = false;
      sim.crash(12345);
      throw new SimulatedCrash('power failure after barrier 1');
    }
    if (point === 'drain') drains++;
  });
  const dsm = await openOn(pm);
  try {
    const root = dsm.root(0);
    const layout = dsm.node(0).layout;
    await dsm.transaction((tx) => tx.write(root, Buffer.from('before')));
    const object = await dsm.alloc(100);
    const tx = dsm.begin();
    await tx.write(root, Buffer.from('after!'));
    await tx.write(object, Buffer.from('object data'));
    await tx.free(object);
    armed = true;
    await assert.rejects(tx.commit(), SimulatedCrash);
    assert.equal(drains, 1);
    const image = sim.persistentImage();
    const lanes = [0, 1, 2, 3].map((lane) => inspectLane(image, layout, lane).state);
    assert.equal(lanes.filter((state) => state === 'committed').length, 1, `lanes after the crash: ${lanes.join(', ')}`);
    assert.equal(image.toString('ascii', layout.rootOffset, layout.rootOffset + 6), 'before', 'the home location was written before barrier 1');
    // The node whose commit failed part-way refuses further commits until it is reopened.
    await assert.rejects(dsm.transaction((t) => t.write(root, Buffer.from('nope'))), code('DPMS_IO'));

    const reopened = await openOn(createSimPm(image));
    try {
      assert.deepEqual(reopened.node(0).recovery, { replayed: 1, discarded: 0, inDoubt: [] });
      assert.equal((await reopened.read(root, 6)).toString(), 'after!');
      assert.equal(reopened.objectSize(object), undefined, 'the free in the replayed log was lost');
      const report = verifyPool(reopened.node(0).pm.buffer, reopened.node(0).info);
      assert.equal(report.clean, true, report.errors.join('; '));
      assert.equal(report.objects, 0);
    } finally {
      await reopened.close();
    }
  } finally {
    await dsm.close();
  }
});

test('inspectLane reports empty, void, committed and torn lanes', async () => {
  const { image, layout, object } = await poolWithData();
  craftLog(image, layout, 1, { generation: 1, sequence: 99, records: [{ op: RecordOp.Write, offset: object, data: Buffer.from('x') }] });
  const base2 = laneBase(layout, 2);
  craftLog(image, layout, 2, { generation: 1, sequence: 98, records: [{ op: RecordOp.Write, offset: object, data: Buffer.from('y') }] });
  image[base2 + LANE.records + RECORD_HEADER_BYTES] ^= 0xff;
  const states = [0, 1, 2, 3].map((lane) => inspectLane(image, layout, lane));
  assert.deepEqual(states.map((s) => s.state), ['void', 'committed', 'torn', 'empty']);
  assert.ok(states[0].appliedGeneration >= 1 && states[0].generation === states[0].appliedGeneration);
  assert.deepEqual(
    { generation: states[1].generation, sequence: states[1].sequence, recordCount: states[1].recordCount, recordsBytes: states[1].recordsBytes },
    { generation: 1, sequence: 99, recordCount: 1, recordsBytes: 24 },
  );
  assert.equal(states[3].appliedGeneration, 0);
  const report = verifyPool(image, PoolNode.open(createSimPm(image)).info);
  assert.equal(report.pendingLogs, 1);
  assert.equal(report.tornLogs, 1);
  // An impossible applied generation is corruption, not a crash.
  const broken = Buffer.from(image);
  broken.writeBigUInt64LE(2n ** 60n, laneBase(layout, 3) + LANE.appliedGeneration);
  assert.throws(() => inspectLane(broken, layout, 3), code('DPMS_CORRUPTION'));
  assert.throws(() => PoolNode.open(createSimPm(broken)), code('DPMS_CORRUPTION'));
});

test('bit records keep their masks when the record buffer grows under them', async () => {
  const { RecordBuilder } = await import('../../pdsm/log');
  const builder = new RecordBuilder(256 * 1024);
  // Enough 4-B records to grow the staging buffer past its first 4 KiB several times.
  for (let i = 0; i < 1000; i++) {
    if (i % 2 === 0) builder.setBits32(i * 4, 0x8000_0000 | i);
    else builder.clearBits32(i * 4, i);
  }
  const staging = builder.staging;
  const recordBytes = builder.recordsBytes / 1000; // 16-B header + the mask padded to 8
  assert.equal(recordBytes, 24);
  for (let i = 0; i < 1000; i++) {
    // [commit line (64 B) | records]; the mask follows each record's header.
    assert.equal(staging.readUInt32LE(64 + i * recordBytes + 16), (i % 2 === 0 ? (0x8000_0000 | i) >>> 0 : i), `record ${i}`);
  }
});
