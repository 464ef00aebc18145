// The transport conformance suite: one set of cases that every provider of pdsm/transport must pass
// (the model is abstract-level's exported suite: one factory, many implementations). Each provider's
// test file calls conformance(provider, options); the cases create pools, serve them with serve(),
// connect with connect(), and check integrity, ordering, reads into the caller's buffers (readInto),
// atomics (also across processes), the local and the remote checks, authentication, dropped
// connections (never a hang), two-sided messages, write-with-immediate and remote persistence.
// Options set the node's address (127.0.0.1 on the host, 10.200.0.1 inside the soft-RoCE VM) and a
// lighter scale for slow machines.

import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { isDpmsError, type DpmsErrorCode } from '../../pdsm';
import { connect, type Connection, type ProviderName } from '../../pdsm/transport';
import { code } from '../support/errors';
import { Random, testSeed } from '../support/random';
import type { ChildOrders, ChildReport } from '../support/transport-child';
import { reverseHandler, TestNode, waitFor, within, type NodeOptions } from '../support/transport-node';

export interface ConformanceOptions {
  /** The address the node listens on and clients connect to (default 127.0.0.1). */
  readonly host?: string;
  /** Fewer operations and longer deadlines, for slow machines (the soft-RoCE VM is ~5x slower). */
  readonly light?: boolean;
  /** Serve crash simulators to check that persist really reaches the persistent image (default: every provider but local, whose clients map files). */
  readonly simulatedPersistence?: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const BIG = 16 * MiB;
const SMALL = 64 * KiB;
const MAX_MESSAGE = 64 * KiB;
const WORD_MAX = (1n << 64n) - 1n;
const CHILD = path.join(__dirname, '..', 'support', 'transport-child.js');

function word(value: bigint): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(value);
  return bytes;
}

/** An rkey that is none of the connection's regions' keys. */
function wrongKey(connection: Connection): number {
  let key = (connection.regions[0].rkey ^ 0x5a5a5a5a) >>> 0;
  while (key === 0 || connection.regions.some((region) => region.rkey === key)) key = (key + 1) >>> 0;
  return key;
}

/** Attach a handler at once (so a rejection is never "unhandled" while the test awaits something else) and keep the outcome. */
function outcome(promise: Promise<unknown>): Promise<PromiseSettledResult<unknown>> {
  return promise.then((value) => ({ status: 'fulfilled', value }), (reason: unknown) => ({ status: 'rejected', reason }));
}

function isCode(error: unknown, codes: readonly DpmsErrorCode[]): boolean {
  return isDpmsError(error) && codes.includes(error.code);
}

export function conformance(provider: ProviderName, options: ConformanceOptions = {}): void {
  const host = options.host ?? '127.0.0.1';
  const light = options.light ?? false;
  const scale = light ? 5 : 1;
  const testTimeout = 120_000 * scale;
  const settleMs = 15_000 * scale;
  const simulatedPersistence = options.simulatedPersistence ?? provider !== 'local';
  const countsOneSided = provider === 'tcp'; // only tcp's serving thread sees one-sided operations

  async function withNode(extra: Partial<NodeOptions>, body: (node: TestNode) => Promise<void>): Promise<void> {
    const node = TestNode.start({ provider, host, regionSizes: [BIG, SMALL], ...extra });
    try {
      await body(node);
    } finally {
      node.stop();
    }
  }

  /** Every pending operation must settle, each either done or DPMS_DISCONNECTED, and the connection must be dead after. */
  async function expectDropped(node: TestNode, connection: Connection, pending: Array<Promise<PromiseSettledResult<unknown>>>, closes: string[], expectListener: boolean): Promise<void> {
    const results = await within(Promise.all(pending), settleMs, 'operations pending when the connection dropped');
    for (const result of results) {
      if (result.status === 'rejected') assert.ok(isCode(result.reason, ['DPMS_DISCONNECTED']), `a pending op failed with ${String(result.reason)}`);
    }
    await assert.rejects(within(connection.read(0, 0, 8), settleMs, 'a read after the drop'), code('DPMS_DISCONNECTED'));
    await assert.rejects(within(connection.fetchAndAdd(0, 0, 1n), settleMs, 'an atomic after the drop'), code('DPMS_DISCONNECTED'));
    await assert.rejects(within(connection.call(Buffer.from('after')), settleMs, 'a call after the drop'), code('DPMS_DISCONNECTED'));
    assert.equal(connection.isOpen, false);
    if (expectListener) {
      await waitFor(() => closes.length > 0, settleMs, 'onClose');
      assert.equal(closes.length, 1, 'onClose fired more than once');
      assert.equal(typeof closes[0], 'string');
    } else {
      assert.deepEqual(closes, [], 'onClose fired after close()');
    }
    await waitFor(() => node.closed.size === node.opened.length, settleMs, 'the node to see every connection close');
  }

  describe(`transport conformance: ${provider} (${host}${light ? ', light' : ''})`, { timeout: testTimeout * 20 }, () => {
    test('a client authenticates and sees the node id and its regions with their keys', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const connection = await node.connect();
      assert.equal(connection.provider, provider);
      assert.equal(connection.nodeId, 7);
      assert.equal(connection.isOpen, true);
      assert.deepEqual(connection.regions.map((region) => region.sizeBytes), [BIG, SMALL]);
      assert.deepEqual(node.server.regions.map((region) => region.sizeBytes), [BIG, SMALL]);
      connection.regions.forEach((region, i) => {
        assert.ok(Number.isInteger(region.rkey) && region.rkey > 0 && region.rkey <= 0xffffffff, `region ${i}: rkey ${region.rkey}`);
        // The node lists the key its clients get, or 0 where every connection gets keys of its own.
        const served = node.server.regions[i].rkey;
        if (served !== 0) assert.equal(region.rkey, served, `region ${i}: the client and the node disagree on the rkey`);
      });
      await waitFor(() => node.opened.length === 1, settleMs, 'the open event');
    }));

    test('bytes written arrive intact, 1 B to 4 MiB at random offsets, seen both through the connection and the node\'s mapping', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} integrity`));
      const connection = await node.connect();
      const served = node.mappings[0].buffer;
      for (const size of [1, 7, 8, 63, 4 * KiB, 64 * KiB, MiB, 4 * MiB]) {
        const offset = random.int(BIG - size + 1);
        const data = random.bytes(size);
        await connection.write(0, offset, data);
        assert.ok(served.subarray(offset, offset + size).equals(data), `${size} B written at ${offset}: the node's mapping differs`);
        assert.ok((await connection.read(0, offset, size)).equals(data), `${size} B written at ${offset}: read back differs`);

        const fromNode = random.bytes(size);
        const nodeOffset = random.int(BIG - size + 1);
        served.set(fromNode, nodeOffset);
        assert.ok((await connection.read(0, nodeOffset, size)).equals(fromNode), `${size} B stored by the node at ${nodeOffset}: read differs`);

        const persisted = random.bytes(size);
        const persistOffset = random.int(BIG - size + 1);
        await connection.writePersist(0, persistOffset, persisted);
        assert.ok(served.subarray(persistOffset, persistOffset + size).equals(persisted), `writePersist of ${size} B at ${persistOffset}`);
      }
      // The region index selects the region: a write to the end of region 1 lands there only.
      const before = Buffer.from(served.subarray(SMALL - 100, SMALL));
      const tail = random.bytes(100);
      await connection.write(1, SMALL - 100, tail);
      assert.ok(node.mappings[1].buffer.subarray(SMALL - 100).equals(tail));
      assert.ok(served.subarray(SMALL - 100, SMALL).equals(before), 'a write to region 1 changed region 0');
      assert.ok((await connection.read(1, SMALL - 100, 100)).equals(tail));
      assert.equal((await connection.read(1, SMALL, 0)).length, 0, 'an empty read at the very end');
    }));

    test('hundreds of operations in flight on one connection each complete with their own data', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} in flight`));
      const connection = await node.connect();
      const count = light ? 64 : 256;
      const size = 4 * KiB;
      const blocks = Array.from({ length: count }, () => random.bytes(size));
      await within(Promise.all(blocks.map((block, i) => connection.write(0, i * size, block))), settleMs, `${count} writes`);
      const reads = await within(Promise.all(blocks.map((_, i) => connection.read(0, i * size, size))), settleMs, `${count} reads`);
      reads.forEach((read, i) => assert.ok(read.equals(blocks[i]), `block ${i} differs`));
      assert.ok(node.mappings[0].buffer.subarray(0, count * size).equals(Buffer.concat(blocks)));
      // Mixed kinds at once: every result goes to its own promise.
      const mixed: Array<Promise<unknown>> = [];
      for (let i = 0; i < count; i++) {
        mixed.push(i % 3 === 0 ? connection.read(0, i * size, 16) : i % 3 === 1 ? connection.fetchAndAdd(1, 8 * (i % 64), 1n) : connection.call(Buffer.from([i & 255, 1, 2])));
      }
      const results = await within(Promise.all(mixed), settleMs, 'mixed operations');
      results.forEach((result, i) => {
        if (i % 3 === 0) assert.ok((result as Buffer).equals(blocks[i].subarray(0, 16)));
        if (i % 3 === 2) assert.deepEqual([...(result as Buffer)], [2, 1, i & 255]);
      });
    }));

    test('readInto lands the bytes in target[targetOffset, +length), 1 B to 4 MiB, and nothing else of the target changes; many in flight', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} readInto`));
      const connection = await node.connect();
      const served = node.mappings[0].buffer;
      served.set(random.bytes(MiB), 0);
      for (let i = 1; i < BIG / MiB; i++) served.copyWithin(i * MiB, 0, MiB);
      for (let i = 0; i < 4096; i++) served.writeUInt32LE(random.int(2 ** 32), random.int(BIG - 3)); // no two MiBs alike
      for (const size of [1, 7, 4 * KiB, 64 * KiB, MiB, 4 * MiB]) {
        const offset = random.int(BIG - size + 1);
        const targetOffset = 1 + random.int(8 * KiB);
        const target = random.bytes(targetOffset + size + 1 + random.int(8 * KiB));
        const before = Buffer.from(target);
        assert.equal(await connection.readInto(0, offset, target, targetOffset, size), undefined);
        assert.ok(target.subarray(targetOffset, targetOffset + size).equals(served.subarray(offset, offset + size)), `${size} B at ${offset} into ${targetOffset}`);
        assert.ok(target.subarray(0, targetOffset).equals(before.subarray(0, targetOffset)), `${size} B: target bytes before the range changed`);
        assert.ok(target.subarray(targetOffset + size).equals(before.subarray(targetOffset + size)), `${size} B: target bytes after the range changed`);
      }
      // Defaults: the whole target, or the rest of it after targetOffset; region 1 too.
      const whole = new Uint8Array(3000);
      await connection.readInto(0, 5000, whole);
      assert.ok(Buffer.from(whole).equals(served.subarray(5000, 8000)));
      const rest = new Uint8Array(100).fill(0xee);
      node.mappings[1].buffer.fill(0x42, SMALL - 60);
      await connection.readInto(1, SMALL - 60, rest, 40);
      assert.ok(rest.subarray(0, 40).every((b) => b === 0xee) && rest.subarray(40).every((b) => b === 0x42));
      await connection.readInto(1, SMALL, rest, 100, 0); // empty, at both ends
      // Out-of-range targets: refused here, nothing sent, the connection stays usable.
      const readsBefore = node.server.stats().reads;
      const small = new Uint8Array(64);
      const asAny = <T>(value: unknown): T => value as T;
      const refusals: Array<[string, () => Promise<void>, DpmsErrorCode]> = [
        ['a range past the target\'s end', () => connection.readInto(0, 0, small, 0, 65), 'DPMS_OUT_OF_BOUNDS'],
        ['a range across the target\'s end', () => connection.readInto(0, 0, small, 60, 8), 'DPMS_OUT_OF_BOUNDS'],
        ['a targetOffset past the end', () => connection.readInto(0, 0, small, 65), 'DPMS_OUT_OF_BOUNDS'],
        ['a negative targetOffset', () => connection.readInto(0, 0, small, -1, 8), 'DPMS_OUT_OF_BOUNDS'],
        ['a fractional targetOffset', () => connection.readInto(0, 0, small, 0.5, 8), 'DPMS_OUT_OF_BOUNDS'],
        ['a target that is not bytes', () => connection.readInto(0, 0, asAny<Uint8Array>([0, 0, 0])), 'DPMS_INVALID_ARGUMENT'],
        ['a string targetOffset', () => connection.readInto(0, 0, small, asAny<number>('1'), 8), 'DPMS_INVALID_ARGUMENT'],
        ['a region range past the region', () => connection.readInto(1, SMALL - 8, small, 0, 16), 'DPMS_OUT_OF_BOUNDS'],
      ];
      for (const [what, operation, expected] of refusals) {
        let promise: Promise<void>;
        assert.doesNotThrow(() => {
          promise = operation();
        }, `${what}: threw instead of rejecting`);
        await assert.rejects(promise!, code(expected), what);
        assert.equal(connection.isOpen, true, `${what} broke the connection`);
      }
      assert.ok(small.every((b) => b === 0), 'a refused readInto wrote into its target');
      if (countsOneSided) assert.equal(node.server.stats().reads, readsBefore, 'a refused readInto was sent');
      // Many in flight: 1-MiB reads into a ring of targets, small ones into slices of one shared target.
      const ring = Array.from({ length: 16 }, () => new Uint8Array(MiB + 16));
      const count = light ? 32 : 96;
      const sliceBytes = 3000;
      const shared = new Uint8Array(count * sliceBytes);
      const posted: Array<Promise<void>> = [];
      for (let i = 0; i < count; i++) {
        if (i < ring.length) posted.push(connection.readInto(0, i * MiB, ring[i], 8, MiB));
        posted.push(connection.readInto(0, i * 7919, shared, i * sliceBytes, sliceBytes));
      }
      await within(Promise.all(posted), settleMs, `${posted.length} readIntos`);
      ring.forEach((target, i) => {
        assert.ok(Buffer.from(target.buffer, 8, MiB).equals(served.subarray(i * MiB, (i + 1) * MiB)), `ring slot ${i}`);
        assert.ok(target.subarray(0, 8).every((b) => b === 0) && target.subarray(8 + MiB).every((b) => b === 0), `ring slot ${i}: edges changed`);
      });
      for (let i = 0; i < count; i++) {
        assert.ok(Buffer.from(shared.buffer, i * sliceBytes, sliceBytes).equals(served.subarray(i * 7919, i * 7919 + sliceBytes)), `slice ${i}`);
      }
    }));

    test('operations take effect at the node in the order they were posted', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const connection = await node.connect();
      const at = 12_288;
      const a = Buffer.alloc(300, 0xa1);
      const b = Buffer.alloc(300, 0xb2);
      const c = Buffer.alloc(300, 0xc3);
      const posted = [
        connection.write(0, at, a), connection.read(0, at, 300),
        connection.writeWithImmediate(0, at, b, 77), connection.read(0, at, 300),
        connection.write(0, at, c), connection.read(0, at, 300),
        connection.write(0, 8, word(41n)), connection.fetchAndAdd(0, 8, 1n), connection.compareAndSwap(0, 8, 42n, 50n), connection.read(0, 8, 8),
      ];
      const results = await within(Promise.all(posted), settleMs, 'ordered operations');
      assert.ok((results[1] as Buffer).equals(a));
      assert.ok((results[3] as Buffer).equals(b));
      assert.ok((results[5] as Buffer).equals(c));
      assert.ok(node.mappings[0].buffer.subarray(at, at + 300).equals(c), 'a later write was overtaken');
      assert.equal(results[7], 41n);
      assert.equal(results[8], 42n);
      assert.equal((results[9] as Buffer).readBigUInt64LE(0), 50n);
    }));

    test('compare-and-swap returns the value found and swaps only on a match; fetch-and-add wraps modulo 2^64', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const connection = await node.connect();
      const served = node.mappings[0];
      const at = 800;
      await connection.write(0, at, word(10n));
      assert.equal(await connection.compareAndSwap(0, at, 10n, 20n), 10n);
      assert.equal(served.load64(at), 20n);
      assert.equal(await connection.compareAndSwap(0, at, 10n, 30n), 20n, 'a failed CAS returns the value found');
      assert.equal(served.load64(at), 20n, 'a failed CAS changed the word');
      assert.equal(await connection.fetchAndAdd(0, at, 5n), 20n);
      assert.equal(served.load64(at), 25n);
      served.store64(at, WORD_MAX);
      assert.equal(await connection.fetchAndAdd(0, at, 1n), WORD_MAX);
      assert.equal(served.load64(at), 0n, 'fetch-and-add did not wrap');
      assert.equal(await connection.fetchAndAdd(0, at, -1n), 0n);
      assert.equal(served.load64(at), WORD_MAX, 'adding -1 is adding 2^64-1');
      assert.equal(await connection.compareAndSwap(0, at, WORD_MAX, 1n << 63n), WORD_MAX);
      assert.equal((await connection.read(0, at, 8)).readBigUInt64LE(0), 1n << 63n);
      assert.equal(served.load64(at + 8), 0n, 'an atomic touched the next word');
      // The last word of the small region.
      assert.equal(await connection.fetchAndAdd(1, SMALL - 8, 3n), 0n);
      assert.equal(node.mappings[1].load64(SMALL - 8), 3n);
      // Many at once from one connection: each add sees a distinct previous value.
      const count = light ? 32 : 128;
      const seen = await within(Promise.all(Array.from({ length: count }, () => connection.fetchAndAdd(0, 4096, 1n))), settleMs, 'concurrent adds');
      assert.deepEqual([...seen].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)), Array.from({ length: count }, (_, i) => BigInt(i)));
      assert.equal(served.load64(4096), BigInt(count));
    }));

    test('atomics stay exact under contention from several client processes', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const children = light ? 3 : 4;
      const count = light ? 100 : 300;
      const faaOffset = 8192;
      const casOffset = 8192 + 64;
      const orders: ChildOrders = {
        provider, host, port: node.server.port, secretHex: node.secret.toString('hex'),
        localRegionPaths: provider === 'local' ? node.paths : undefined,
        region: 0, faaOffset, casOffset, count, inFlight: 4,
      };
      const processes = Array.from({ length: children }, () => fork(CHILD, [JSON.stringify(orders)], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
      try {
        const exits = processes.map((child) => new Promise<number | null>((resolve) => child.once('exit', (status) => resolve(status))));
        const reports = processes.map(() => [] as ChildReport[]);
        processes.forEach((child, i) => child.on('message', (report: ChildReport) => reports[i].push(report)));
        await within(waitFor(() => reports.every((list) => list.some((r) => r.type === 'ready')), settleMs * 2, 'children ready'), settleMs * 2, 'children ready');
        for (const child of processes) child.send('go');
        const statuses = await within(Promise.all(exits), settleMs * 4, 'children finishing and exiting on their own');
        assert.deepEqual(statuses, processes.map(() => 0), 'a child failed or was killed');
        const retries = reports.map((list) => list.find((r): r is Extract<ChildReport, { type: 'done' }> => r.type === 'done')?.casRetries ?? -1);
        assert.ok(retries.every((value) => value >= 0), 'a child did not report');
        console.log(`# ${provider}: ${children} processes x ${count} adds and CAS increments; CAS races lost: ${retries.join(', ')}`);
        const total = BigInt(children * count);
        assert.equal(node.mappings[0].load64(faaOffset), total, 'fetch-and-add lost or doubled an increment');
        assert.equal(node.mappings[0].load64(casOffset), total, 'the CAS loop lost or doubled an increment');
        const connection = await node.connect();
        assert.equal((await connection.read(0, faaOffset, 8)).readBigUInt64LE(0), total);
      } finally {
        for (const child of processes) if (child.exitCode === null) child.kill('SIGKILL');
      }
    }));

    test('bad arguments are refused here without sending anything, and the connection stays usable', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const connection = await node.connect();
      const before = node.server.stats();
      const bytes = Buffer.alloc(4);
      const asAny = <T>(value: unknown): T => value as T;
      const cases: Array<[string, () => Promise<unknown>, DpmsErrorCode]> = [
        ['a region that does not exist', () => connection.read(2, 0, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a negative region', () => connection.read(-1, 0, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a read at the end', () => connection.read(0, BIG, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a read across the end', () => connection.read(0, BIG - 1, 2), 'DPMS_OUT_OF_BOUNDS'],
        ['a read longer than the small region', () => connection.read(1, 0, SMALL + 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a negative offset', () => connection.read(0, -1, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a fractional offset', () => connection.read(0, 1.5, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a NaN length', () => connection.read(0, 0, Number.NaN), 'DPMS_OUT_OF_BOUNDS'],
        ['an enormous offset', () => connection.read(0, Number.MAX_SAFE_INTEGER, 8), 'DPMS_OUT_OF_BOUNDS'],
        ['a string offset', () => connection.read(0, asAny<number>('0'), 1), 'DPMS_INVALID_ARGUMENT'],
        ['a write across the end', () => connection.write(1, SMALL - 3, bytes), 'DPMS_OUT_OF_BOUNDS'],
        ['data that is not bytes', () => connection.write(0, 0, asAny<Uint8Array>([1, 2])), 'DPMS_INVALID_ARGUMENT'],
        ['a writePersist past the end', () => connection.writePersist(0, BIG, bytes), 'DPMS_OUT_OF_BOUNDS'],
        ['a writeWithImmediate across the end', () => connection.writeWithImmediate(0, BIG - 1, bytes, 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a negative immediate', () => connection.writeWithImmediate(0, 0, bytes, -1), 'DPMS_INVALID_ARGUMENT'],
        ['an immediate over 32 bits', () => connection.writeWithImmediate(0, 0, bytes, 2 ** 32), 'DPMS_INVALID_ARGUMENT'],
        ['a misaligned CAS', () => connection.compareAndSwap(0, 4, 0n, 1n), 'DPMS_MISALIGNED'],
        ['a misaligned add', () => connection.fetchAndAdd(1, 3, 1n), 'DPMS_MISALIGNED'],
        ['an add across the end', () => connection.fetchAndAdd(0, BIG - 4, 1n), 'DPMS_OUT_OF_BOUNDS'],
        ['an add past the end', () => connection.fetchAndAdd(1, SMALL, 1n), 'DPMS_OUT_OF_BOUNDS'],
        ['a number where a BigInt belongs', () => connection.fetchAndAdd(0, 0, asAny<bigint>(1)), 'DPMS_INVALID_ARGUMENT'],
        ['a value of 2^64', () => connection.compareAndSwap(0, 0, 1n << 64n, 0n), 'DPMS_INVALID_ARGUMENT'],
        ['a persist past the end', () => connection.persist(0, 0, BIG + 1), 'DPMS_OUT_OF_BOUNDS'],
        ['a message over the limit', () => connection.call(Buffer.alloc(MAX_MESSAGE + 1)), 'DPMS_INVALID_ARGUMENT'],
        ['a message that is not bytes', () => connection.call(asAny<Uint8Array>('text')), 'DPMS_INVALID_ARGUMENT'],
      ];
      for (const [what, operation, expected] of cases) {
        let promise: Promise<unknown>;
        assert.doesNotThrow(() => {
          promise = operation();
        }, `${what}: threw instead of rejecting`);
        await assert.rejects(promise!, code(expected), what);
        assert.equal(connection.isOpen, true, `${what} broke the connection`);
      }
      if (countsOneSided) {
        const after = node.server.stats();
        for (const key of ['reads', 'writes', 'atomics', 'persists', 'messages', 'accessErrors', 'badFrames'] as const) {
          assert.equal(after[key], before[key], `${key} changed: something was sent`);
        }
      }
      await connection.write(0, 0, bytes.fill(9));
      assert.ok((await connection.read(0, 0, 4)).equals(bytes), 'the connection does not work after refusals');
    }));

    test('the node refuses a wrong key, an access out of bounds and a misaligned atomic: DPMS_REMOTE_ACCESS, then the connection is broken', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const key = (connection: Connection, region: number): number => connection.regions[region].rkey;
      const cases: Array<[string, (connection: Connection) => Promise<unknown>]> = [
        ['read with a wrong key', (c) => c.unchecked.read(0, 0, 8, wrongKey(c))],
        ['readInto with a wrong key', (c) => c.unchecked.readInto(0, 0, Buffer.alloc(8), 0, 8, wrongKey(c))],
        ['readInto across the end', (c) => c.unchecked.readInto(1, SMALL - 4, Buffer.alloc(8), 0, 8, key(c, 1))],
        ['read of region 0 with region 1\'s key', (c) => c.unchecked.read(0, 0, 8, key(c, 1))],
        ['write with a wrong key', (c) => c.unchecked.write(0, 0, Buffer.alloc(64, 0xee), wrongKey(c))],
        ['writeWithImmediate with a wrong key', (c) => c.unchecked.writeWithImmediate(0, 0, Buffer.alloc(64, 0xee), 5, wrongKey(c))],
        ['CAS with a wrong key', (c) => c.unchecked.compareAndSwap(0, 0, 0n, 0xeen, wrongKey(c))],
        ['add with a wrong key', (c) => c.unchecked.fetchAndAdd(0, 0, 0xeen, wrongKey(c))],
        ['persist with a wrong key', (c) => c.unchecked.persist(0, 0, 64, wrongKey(c))],
        ['read across the end', (c) => c.unchecked.read(1, SMALL - 4, 8, key(c, 1))],
        ['read far past the end', (c) => c.unchecked.read(1, Number.MAX_SAFE_INTEGER - 4, 8, key(c, 1))],
        ['write past the end', (c) => c.unchecked.write(1, SMALL, Buffer.alloc(1, 0xee), key(c, 1))],
        ['write across the end', (c) => c.unchecked.write(1, SMALL - 1, Buffer.alloc(64, 0xee), key(c, 1))],
        ['add past the end', (c) => c.unchecked.fetchAndAdd(1, SMALL, 1n, key(c, 1))],
        ['misaligned CAS', (c) => c.unchecked.compareAndSwap(0, 4, 0n, 0xeen, key(c, 0))],
        ['misaligned add', (c) => c.unchecked.fetchAndAdd(0, 12, 0xeen, key(c, 0))],
        ['persist across the end', (c) => c.unchecked.persist(1, 0, SMALL + 1, key(c, 1))],
        ['a region that does not exist', (c) => c.unchecked.read(5, 0, 8, key(c, 0))],
      ];
      node.mappings[0].buffer.fill(0x11, 0, 64);
      node.mappings[1].buffer.fill(0x22, SMALL - 64);
      const image0 = Buffer.from(node.mappings[0].buffer.subarray(0, 64));
      const image1 = Buffer.from(node.mappings[1].buffer.subarray(SMALL - 64));
      for (const [what, operation] of cases) {
        const errorsBefore = node.server.stats().accessErrors;
        const connection = await node.connect();
        const closes: string[] = [];
        connection.onClose((reason) => closes.push(reason));
        const bystander = connection.read(0, 0, 64);
        await assert.rejects(within(operation(connection), settleMs, what), code('DPMS_REMOTE_ACCESS'), what);
        assert.ok((await bystander).equals(image0), `${what}: an earlier read was lost`);
        await assert.rejects(within(connection.read(0, 0, 8), settleMs, `a read after ${what}`), code('DPMS_DISCONNECTED'), `${what}: later op`);
        assert.equal(connection.isOpen, false, what);
        await waitFor(() => closes.length === 1, settleMs, `onClose after ${what}`);
        assert.ok(node.mappings[0].buffer.subarray(0, 64).equals(image0), `${what}: region 0 changed`);
        assert.ok(node.mappings[1].buffer.subarray(SMALL - 64).equals(image1), `${what}: region 1 changed`);
        if (countsOneSided) await waitFor(() => node.server.stats().accessErrors === errorsBefore + 1, settleMs, `accessErrors after ${what}`);
        await waitFor(() => node.closed.size === node.opened.length, settleMs, `the node to see the connection close after ${what}`);
      }
      const survivor = await node.connect();
      assert.ok((await survivor.read(0, 0, 64)).equals(image0), 'the node stopped serving');
    }));

    test('a wrong secret is DPMS_AUTH, a short one DPMS_INVALID_ARGUMENT, a closed port DPMS_UNREACHABLE', { timeout: testTimeout }, () => withNode({}, async (node) => {
      await assert.rejects(within(node.connect({ secret: crypto.randomBytes(32) }), settleMs, 'a connect with a wrong secret'), code('DPMS_AUTH'));
      await waitFor(() => node.server.stats().authFailures >= 1, settleMs, 'authFailures');
      // The serving side counts the failure before it has closed the socket: wait for both.
      await waitFor(() => node.server.stats().connectionsOpen === 0, settleMs, 'the refused connection to close');
      await assert.rejects(within(node.connect({ secret: Buffer.alloc(8, 1) }), settleMs, 'a short secret'), code('DPMS_INVALID_ARGUMENT'));
      const gone = TestNode.start({ provider, host, regionSizes: [SMALL] });
      const port = gone.server.port;
      gone.stop();
      await assert.rejects(within(connect({ ...node.target(), port, localRegionPaths: provider === 'local' ? [gone.paths[0]] : undefined }), settleMs, 'a connect to a closed port'), code('DPMS_UNREACHABLE'));
      const connection = await node.connect();
      assert.equal(connection.isOpen, true, 'the node stopped accepting after failed handshakes');
    }));

    if (provider !== 'verbs') {
      test('a peer that never answers the handshake is DPMS_TIMEOUT; one that hangs up is DPMS_AUTH; the node drops garbage', { timeout: testTimeout }, () => withNode({}, async (node) => {
        const sockets = new Set<net.Socket>();
        const silent = net.createServer((socket) => sockets.add(socket));
        const rude = net.createServer((socket) => socket.destroy());
        await Promise.all([silent, rude].map((server) => new Promise<void>((resolve) => server.listen(0, host, resolve))));
        try {
          const portOf = (server: net.Server): number => (server.address() as net.AddressInfo).port;
          const started = Date.now();
          await assert.rejects(within(node.connect({ port: portOf(silent), timeoutMs: 300 }), settleMs, 'a connect to a silent peer'), code('DPMS_TIMEOUT'));
          assert.ok(Date.now() - started < 5000 * scale, 'the connect deadline was not kept');
          await assert.rejects(within(node.connect({ port: portOf(rude) }), settleMs, 'a connect to a peer that hangs up'), code('DPMS_AUTH'));
        } finally {
          for (const socket of sockets) socket.destroy();
          silent.close();
          rude.close();
        }
        // Garbage before authentication: the node closes the socket and counts it.
        const garbage = net.connect(node.server.port, host);
        try {
          garbage.on('error', () => undefined);
          garbage.resume(); // read (and drop) what the node sends, so that its hang-up is seen
          garbage.write(crypto.randomBytes(256 * KiB));
          await within(new Promise((resolve) => garbage.once('close', resolve)), settleMs, 'the node closing a connection that sent garbage');
        } finally {
          garbage.destroy();
        }
        await waitFor(() => node.server.stats().authFailures >= 1, settleMs, 'authFailures after garbage');
        const connection = await node.connect();
        assert.equal((await connection.call(Buffer.from('ok'))).toString(), 'ko');
      }));
    }

    test('server.disconnect with operations in flight: each settles or fails DPMS_DISCONNECTED, never hangs', { timeout: testTimeout }, () => withNode({}, async (node) => {
      let held: number | undefined;
      node.onMessage = (connection) => {
        held = connection; // never answered: the call can only end by the drop
      };
      const connection = await node.connect();
      const closes: string[] = [];
      connection.onClose((reason) => closes.push(reason));
      const call = connection.call(Buffer.from('hold'));
      await waitFor(() => held !== undefined, settleMs, 'the held message');
      const pending = [outcome(call)];
      for (let i = 0; i < (light ? 16 : 64); i++) {
        pending.push(outcome(connection.read(0, (i % 16) * 256 * KiB, 256 * KiB)), outcome(connection.write(0, (i % 16) * 256 * KiB, Buffer.alloc(64 * KiB, i))),
          outcome(connection.fetchAndAdd(1, 0, 1n)), outcome(connection.readInto(0, (i % 16) * 256 * KiB, new Uint8Array(256 * KiB))));
      }
      node.server.disconnect(held!);
      await assert.rejects(within(call, settleMs, 'the held call'), code('DPMS_DISCONNECTED'));
      await expectDropped(node, connection, pending, closes, true);
      node.onMessage = reverseHandler;
      const again = await within(node.connect(), settleMs, 'a connect after the drop');
      assert.equal((await within(again.call(Buffer.from('abc')), settleMs, 'a call after the drop')).toString(), 'cba', 'a new connection after the drop does not work');
    }));

    test('server.close with operations in flight: every pending operation fails DPMS_DISCONNECTED or completes; close is idempotent', { timeout: testTimeout }, () => withNode({}, async (node) => {
      let held = false;
      node.onMessage = () => {
        held = true;
      };
      const connections = [await node.connect(), await node.connect()];
      const closes: string[][] = [[], []];
      connections.forEach((connection, i) => connection.onClose((reason) => closes[i].push(reason)));
      const calls = connections.map((connection) => connection.call(Buffer.from('hold')));
      await waitFor(() => held, settleMs, 'a held message');
      const pending = connections.map((connection, i) => [outcome(calls[i]),
        ...Array.from({ length: light ? 8 : 32 }, (_, j) => outcome(connection.read(0, j * 512 * KiB, 512 * KiB))),
        ...Array.from({ length: light ? 8 : 32 }, (_, j) => outcome(connection.compareAndSwap(0, j * 8, 0n, 1n)))]);
      node.server.close();
      node.server.close();
      for (let i = 0; i < connections.length; i++) {
        await assert.rejects(within(calls[i], settleMs, 'a held call'), code('DPMS_DISCONNECTED'));
        await expectDropped(node, connections[i], pending[i], closes[i], true);
      }
      await assert.rejects(within(node.connect(), settleMs, 'a connect to a closed node'), code('DPMS_UNREACHABLE'));
    }));

    test('client close with operations in flight: pending operations fail DPMS_DISCONNECTED, later ones too, no onClose', { timeout: testTimeout }, () => withNode({}, async (node) => {
      node.onMessage = () => undefined;
      const connection = await node.connect();
      const closes: string[] = [];
      connection.onClose((reason) => closes.push(reason));
      const call = connection.call(Buffer.from('hold'));
      const pending = [outcome(call)];
      const target = new Uint8Array(32 * 256 * KiB);
      for (let i = 0; i < 32; i++) {
        pending.push(outcome(connection.read(0, i * 64 * KiB, 64 * KiB)), outcome(connection.fetchAndAdd(0, 0, 1n)),
          outcome(connection.readInto(0, i * 256 * KiB, target, i * 256 * KiB, 256 * KiB)));
      }
      connection.close();
      connection.close();
      await assert.rejects(within(call, settleMs, 'a pending call'), code('DPMS_DISCONNECTED'));
      await expectDropped(node, connection, pending, closes, false);
    }));

    test('calls round-trip messages from 0 B to the maximum, each reply to its own call even out of order', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} messages`));
      const connection = await node.connect();
      const messages = [0, 1, 100, 4 * KiB, MAX_MESSAGE - 1, MAX_MESSAGE].map((size) => random.bytes(size));
      const replies = await within(Promise.all(messages.map((message) => connection.call(message))), settleMs, 'calls');
      replies.forEach((reply, i) => assert.ok(reply.equals(Buffer.from(messages[i]).reverse()), `reply to the ${messages[i].length}-B message`));
      // Replies given in reverse order of arrival, one of them the maximum size.
      const waiting: Array<() => void> = [];
      node.onMessage = (_connection, message, reply) => {
        waiting.push(() => reply(message[0] === 0 ? Buffer.alloc(MAX_MESSAGE, 0xab) : Buffer.from([message[0], message[0]])));
        if (waiting.length === 8) for (const answer of waiting.splice(0).reverse()) answer();
      };
      const outOfOrder = await within(Promise.all(Array.from({ length: 8 }, (_, i) => connection.call(Buffer.from([i])))), settleMs, 'calls answered out of order');
      assert.ok(outOfOrder[0].equals(Buffer.alloc(MAX_MESSAGE, 0xab)));
      outOfOrder.slice(1).forEach((reply, i) => assert.deepEqual([...reply], [i + 1, i + 1]));
      // Answering twice is refused.
      let second: unknown;
      node.onMessage = (_connection, message, reply) => {
        reply(message);
        try {
          reply(message);
        } catch (error) {
          second = error;
        }
      };
      assert.equal((await connection.call(Buffer.from('twice'))).toString(), 'twice');
      assert.ok(isCode(second, ['DPMS_INVALID_ARGUMENT']), `a second reply was not refused: ${String(second)}`);
    }));

    test('a message or a reply over the receiver\'s limit is refused without a hang, and the node keeps serving', { timeout: testTimeout }, () => withNode({ maxMessageBytes: KiB }, async (node) => {
      const refused: DpmsErrorCode[] = ['DPMS_INVALID_ARGUMENT', 'DPMS_PROTOCOL', 'DPMS_DISCONNECTED', 'DPMS_REMOTE_ACCESS'];
      const atLimit = await node.connect();
      assert.equal((await atLimit.call(Buffer.alloc(KiB, 1))).length, KiB);
      await assert.rejects(atLimit.call(Buffer.alloc(KiB + 1)), code('DPMS_INVALID_ARGUMENT'));
      assert.equal(atLimit.isOpen, true);
      // A client that believes the limit is higher: the node must refuse the message it cannot take.
      const optimist = await node.connect({ maxMessageBytes: 64 * KiB });
      const outcome = await within(optimist.call(Buffer.alloc(2 * KiB, 2)).then(() => undefined, (error: unknown) => error), settleMs, 'an over-size message');
      assert.ok(isCode(outcome, refused), `an over-size message was not refused: ${String(outcome)}`);
      if (countsOneSided && !isCode(outcome, ['DPMS_INVALID_ARGUMENT'])) assert.ok(node.server.stats().badFrames >= 1, 'the bad frame was not counted');
      // A reply larger than this client accepts: refused by the node's reply() where the provider knows
      // the client's limit (the handler then answers something smaller), else by the client.
      const small = await node.connect({ maxMessageBytes: 16 });
      let replyRefusal: unknown;
      node.onMessage = (_connection, _message, reply) => {
        try {
          reply(Buffer.alloc(512, 3));
        } catch (error) {
          replyRefusal = error;
          reply(Buffer.from('smaller'));
        }
      };
      const big = await within(small.call(Buffer.from('hi')).then((answer) => answer, (error: unknown) => error), settleMs, 'an over-size reply');
      if (replyRefusal === undefined) {
        assert.ok(isCode(big, refused), `an over-size reply was not refused: ${String(big)}`);
      } else {
        assert.ok(isCode(replyRefusal, ['DPMS_INVALID_ARGUMENT']), `reply() failed with ${String(replyRefusal)}`);
        assert.equal(String(big), 'smaller', 'the second answer did not arrive');
      }
      node.onMessage = (_connection, message, reply) => reply(message);
      assert.equal((await atLimit.call(Buffer.from('still here'))).toString(), 'still here');
    }));

    test('writeWithImmediate raises onImmediate with its value and length, in order, after the data is visible', { timeout: testTimeout }, () => withNode({}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} immediates`));
      const connection = await node.connect();
      const values = [0, 1, 0x7fffffff, 0xffffffff, ...Array.from({ length: 12 }, () => random.int(2 ** 32))];
      const writes = values.map((immediate, i) => ({ immediate, offset: MiB + i * 8 * KiB, data: random.bytes(1 + random.int(8 * KiB)) }));
      const visible: boolean[] = [];
      node.onImmediate = (event) => {
        const write = writes[node.immediates.length];
        visible.push(write !== undefined && event.immediate === write.immediate &&
          node.mappings[0].buffer.subarray(write.offset, write.offset + write.data.length).equals(write.data));
      };
      await within(Promise.all(writes.map((w) => connection.writeWithImmediate(0, w.offset, w.data, w.immediate))), settleMs, 'writes with immediates');
      await waitFor(() => node.immediates.length === writes.length, settleMs, 'every immediate');
      assert.deepEqual(node.immediates.map((event) => event.immediate), values, 'immediates lost, changed or reordered');
      assert.deepEqual(node.immediates.map((event) => event.length), writes.map((w) => w.data.length));
      assert.equal(new Set(node.immediates.map((event) => event.connection)).size, 1);
      assert.deepEqual(visible, writes.map(() => true), 'an immediate arrived before its data was in the region');
    }));

    test('persist and writePersist resolve once the data is durable at the node', { timeout: testTimeout }, () => withNode(simulatedPersistence ? { simulated: true, regionSizes: [MiB, SMALL] } : {}, async (node) => {
      const random = new Random(testSeed(`transport ${provider} persist`));
      const connection = await node.connect();
      const durable = (region: number, offset: number, data: Buffer): boolean => (simulatedPersistence
        ? node.sim(region).persistentImage().subarray(offset, offset + data.length).equals(data)
        : node.mappings[region].buffer.subarray(offset, offset + data.length).equals(data));
      const data = random.bytes(5000);
      await connection.write(0, 1000, data);
      await connection.persist(0, 1000, data.length);
      assert.ok(durable(0, 1000, data), 'persist resolved before the write was durable');
      const more = random.bytes(64);
      await connection.writePersist(1, 128, more);
      assert.ok(durable(1, 128, more), 'writePersist resolved before the data was durable');
      // Many writes not awaited, then one persist over all of them.
      const pieces = Array.from({ length: 16 }, (_, i) => ({ offset: 200 * KiB + i * 4096, data: random.bytes(3000) }));
      for (const piece of pieces) void connection.write(0, piece.offset, piece.data);
      await connection.persist(0, 200 * KiB, 16 * 4096);
      for (const piece of pieces) assert.ok(durable(0, piece.offset, piece.data), `a write at ${piece.offset} was not durable after the covering persist`);
      await connection.persist(0, 0, 0);
      await within(Promise.all(Array.from({ length: 64 }, (_, i) => connection.writePersist(0, 300 * KiB + i * 64, random.bytes(64)))), settleMs, 'many writePersists');
    }));
  });
}
