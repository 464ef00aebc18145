// Proves the tcp transport provider end to end on loopback: data integrity of READ/WRITE (1 B to
// 4 MiB at random offsets, checked against the served mapping itself), READ into a caller's target
// (its range, its lifetime while in flight, a target detached mid-flight), CAS/FAA semantics, pipelining
// in order, WRITE-with-immediate events, remote persist reaching the simulator's persistent image,
// call/reply limits, the handshake (wrong secret, timeouts), remote access errors breaking the
// connection, server-side disconnect and close, and that neither side keeps the process alive.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import vm from 'node:vm';
import { after, test } from 'node:test';

import {
  connect,
  createSim,
  openPool,
  rawTcpBench,
  serve,
  type PmMapping,
  type ServerEvent,
  type TransportConnection,
  type TransportServer,
} from '../../native/index';
import { ByteReader, encodeRequest, Op, rawConnect, rawHandshake, RESPONSE_MAGIC } from '../support/frame-fuzzer';
import { Random, testSeed } from '../support/random';
import { assertCode, cleanup, poolPath } from './helpers';

after(cleanup);

const HOST = '127.0.0.1';
const SECRET = Buffer.from('tcp-provider-test-secret-0123456789');

interface Served {
  readonly mapping: PmMapping;
  readonly server: TransportServer;
  readonly events: ServerEvent[];
  readonly rkey: number;
  connect(options?: { secret?: Uint8Array; maxMessageBytes?: number }): Promise<TransportConnection>;
  close(): void;
}

function startServer(options: { sizeBytes?: number; mapping?: PmMapping; maxMessageBytes?: number; handshakeTimeoutMs?: number; onEvent?: (event: ServerEvent, server: TransportServer) => void } = {}): Served {
  const mapping = options.mapping ?? openPool(poolPath('tcp'), { createSizeBytes: options.sizeBytes ?? 16 << 20 });
  const events: ServerEvent[] = [];
  const holder: { server?: TransportServer } = {};
  const server = serve('tcp', {
    host: HOST,
    port: 0,
    secret: SECRET,
    nodeId: 7,
    regions: [mapping],
    maxMessageBytes: options.maxMessageBytes,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    onEvent: (event) => {
      events.push(event);
      if (options.onEvent !== undefined) options.onEvent(event, holder.server!);
      else if (event.type === 'message') holder.server!.reply(event.connection, event.requestId, event.payload);
    },
  });
  holder.server = server;
  return {
    mapping,
    server,
    events,
    rkey: server.regions[0].rkey,
    connect: (o = {}) => connect('tcp', { host: HOST, port: server.port, secret: o.secret ?? SECRET, maxMessageBytes: o.maxMessageBytes }),
    close: () => {
      server.close();
      mapping.close();
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<Error> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`expected ${code}, the operation succeeded`),
    (error: unknown) => {
      caught = error;
    },
  );
  assert.ok(caught instanceof Error, `expected an Error, got ${String(caught)}`);
  assert.equal((caught as NodeJS.ErrnoException).code, code, caught.message);
  return caught;
}

async function until(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('handshake: both sides agree on node id and regions; rkeys are random and nonzero', async () => {
  const s = startServer();
  const other = startServer();
  try {
    const c = await s.connect();
    assert.equal(c.nodeId, 7);
    assert.deepEqual(c.regions, s.server.regions);
    assert.equal(c.regions[0].sizeBytes, 16 << 20);
    assert.notEqual(s.rkey, 0);
    assert.notEqual(s.rkey, other.rkey);
    await until(() => s.events.some((e) => e.type === 'open'), 'the open event');
    const open = s.events.find((e) => e.type === 'open');
    assert.ok(open !== undefined && open.type === 'open' && open.peer.startsWith('127.0.0.1:'));
    c.close();
  } finally {
    s.close();
    other.close();
  }
});

test('read/write integrity: random data, sizes 1 B .. 4 MiB, random offsets, checked against the mapping', async () => {
  const random = new Random(testSeed('tcp integrity'));
  const s = startServer();
  try {
    const c = await s.connect();
    const size = s.mapping.sizeBytes;
    for (let i = 0; i < 60; i++) {
      const length = Math.max(1, Math.floor(2 ** (random.next() * 22))); // log-uniform up to 4 MiB
      const offset = random.int(size - length + 1);
      const data = random.bytes(Math.min(length, 4096));
      const payload = length <= 4096 ? data : Buffer.alloc(length, data); // big ones: a repeated random pattern
      payload[length - 1] = random.int(256);
      await c.write(0, offset, payload, s.rkey);
      assert.ok(s.mapping.buffer.subarray(offset, offset + length).equals(payload), `write ${length} B at ${offset} landed`);
      const readOffset = random.int(size - length + 1);
      const back = await c.read(0, readOffset, length, s.rkey);
      assert.equal(back.length, length);
      assert.ok(back.equals(s.mapping.buffer.subarray(readOffset, readOffset + length)), `read ${length} B at ${readOffset}`);
    }
    assert.equal((await c.read(0, 0, 0, s.rkey)).length, 0);
    const stats = s.server.stats();
    assert.equal(stats.writes, 60);
    assert.equal(stats.reads, 61);
    c.close();
  } finally {
    s.close();
  }
});

test('readInto: the payload lands in target[targetOffset, +length), 1 B .. 4 MiB, nothing else of the target changes', async () => {
  const random = new Random(testSeed('tcp readInto integrity'));
  const s = startServer();
  try {
    s.mapping.buffer.set(random.bytes(1 << 20), 0);
    for (let i = 1; i < 16; i++) s.mapping.buffer.copyWithin(i << 20, 0, 1 << 20);
    for (let i = 0; i < 4096; i++) s.mapping.buffer.writeUInt32LE(random.int(2 ** 32), random.int((16 << 20) - 3)); // no two MiBs alike
    const c = await s.connect();
    const size = s.mapping.sizeBytes;
    const lengths = [1, 7, 4096, 65535, 65536, 1 << 20, 4 << 20];
    for (let i = 0; i < 30; i++) lengths.push(Math.max(1, Math.floor(2 ** (random.next() * 22))));
    for (const length of lengths) {
      const offset = random.int(size - length + 1);
      const targetOffset = 1 + random.int(4096);
      const target = new Uint8Array(targetOffset + length + 1 + random.int(4096));
      target.set(random.bytes(target.length));
      const before = Buffer.from(target);
      const result = await c.readInto!(0, offset, target, targetOffset, length, s.rkey);
      assert.equal(result, undefined);
      assert.ok(Buffer.from(target.buffer, targetOffset, length).equals(s.mapping.buffer.subarray(offset, offset + length)),
        `${length} B at ${offset} into target offset ${targetOffset}`);
      assert.ok(Buffer.from(target.buffer, 0, targetOffset).equals(before.subarray(0, targetOffset)), `${length} B: bytes before the range changed`);
      assert.ok(Buffer.from(target.buffer, targetOffset + length).equals(before.subarray(targetOffset + length)), `${length} B: bytes after the range changed`);
    }
    // A view into the middle of a larger ArrayBuffer (byteOffset != 0), and a Node Buffer.
    const backing = new ArrayBuffer(3 << 20);
    const view = new Uint8Array(backing, 1 << 20, 1 << 20);
    await c.readInto!(0, 5 << 20, view, 0, 1 << 20, s.rkey);
    assert.ok(Buffer.from(backing, 1 << 20, 1 << 20).equals(s.mapping.buffer.subarray(5 << 20, 6 << 20)));
    assert.ok(Buffer.from(backing, 0, 1 << 20).equals(Buffer.alloc(1 << 20)) && Buffer.from(backing, 2 << 20).equals(Buffer.alloc(1 << 20)));
    const small = Buffer.alloc(16);
    await c.readInto!(0, 100, small, 8, 8, s.rkey);
    assert.ok(small.subarray(8).equals(s.mapping.buffer.subarray(100, 108)) && small.subarray(0, 8).equals(Buffer.alloc(8)));
    await c.readInto!(0, size, small, 16, 0, s.rkey); // empty, at both ends
    await c.readInto!(0, 0, new Uint8Array(0), 0, 0, s.rkey); // empty, into an empty target
    assert.equal(s.server.stats().reads, lengths.length + 4);
    c.close();
  } finally {
    s.close();
  }
});

test('readInto: a target range outside the target throws DPMS_OUT_OF_BOUNDS synchronously, bad types DPMS_INVALID_ARGUMENT; the connection stays usable', async () => {
  const s = startServer();
  try {
    const c = await s.connect();
    const target = new Uint8Array(100);
    assertCode(() => c.readInto!(0, 0, target, 0, 101, s.rkey), 'DPMS_OUT_OF_BOUNDS');
    assertCode(() => c.readInto!(0, 0, target, 50, 51, s.rkey), 'DPMS_OUT_OF_BOUNDS');
    assertCode(() => c.readInto!(0, 0, target, 101, 0, s.rkey), 'DPMS_OUT_OF_BOUNDS');
    assertCode(() => c.readInto!(0, 0, target, 2 ** 52, 8, s.rkey), 'DPMS_OUT_OF_BOUNDS');
    assertCode(() => c.readInto!(0, 0, target, -1, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.readInto!(0, 0, target, 0.5, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.readInto!(0, 0, target, 0, (16 << 20) + 1, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.readInto!(0, 0, new Uint16Array(50) as unknown as Uint8Array, 0, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.readInto!(0, 0, [1, 2, 3] as unknown as Uint8Array, 0, 1, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.readInto!(0, 0, new ArrayBuffer(8) as unknown as Uint8Array, 0, 1, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assert.equal(s.server.stats().reads, 0, 'a refused readInto was sent');
    assert.ok(target.every((byte) => byte === 0), 'a refused readInto wrote into the target');
    s.mapping.buffer.fill(0x3c, 0, 100);
    await c.readInto!(0, 0, target, 0, 100, s.rkey);
    assert.ok(target.every((byte) => byte === 0x3c));
    c.close();
  } finally {
    s.close();
  }
});

// A synchronous full GC (helpers.ts already set --expose-gc).
const gcNow = vm.runInNewContext('gc') as () => void;

test('readInto: targets nobody else references survive GC while in flight; many in flight, each lands in its own target', async () => {
  const random = new Random(testSeed('tcp readInto in flight'));
  const s = startServer();
  try {
    s.mapping.buffer.set(random.bytes(1 << 20), 0);
    for (let i = 1; i < 16; i++) s.mapping.buffer.copyWithin(i << 20, 0, 1 << 20);
    for (let i = 0; i < 16; i++) s.mapping.buffer.writeUInt32LE(0x1000 + i, i << 20); // each MiB differs
    const c = await s.connect();
    for (let round = 0; round < 3; round++) {
      // Only weak references on this side: the connection's reference must keep each target alive.
      const weak: Array<WeakRef<Uint8Array>> = [];
      const done: Array<Promise<void>> = [];
      for (let i = 0; i < 48; i++) {
        const target = new Uint8Array((1 << 20) + 64);
        weak.push(new WeakRef(target));
        done.push(c.readInto!(0, (i % 16) << 20, target, 32, 1 << 20, s.rkey));
      }
      gcNow(); // nothing has been received yet: no promise can have settled
      assert.ok(weak.every((ref) => ref.deref() !== undefined), 'a target in flight was collected');
      // Turns of the loop with GCs in between, while the payloads arrive.
      const settled = Promise.all(done);
      let finished = false;
      void settled.then(() => (finished = true), () => (finished = true));
      while (!finished) {
        gcNow();
        for (let j = 0; j < 4; j++) Buffer.alloc(1 << 20); // garbage of the same size class
        await new Promise((resolve) => setImmediate(resolve));
      }
      await settled;
      // Those still reachable show their own data, and their edges are untouched.
      for (let i = 0; i < weak.length; i++) {
        const target = weak[i].deref();
        if (target === undefined) continue;
        assert.ok(Buffer.from(target.buffer, 32, 1 << 20).equals(s.mapping.buffer.subarray((i % 16) << 20, ((i % 16) + 1) << 20)), `target ${i}`);
        assert.ok(target.subarray(0, 32).every((b) => b === 0) && target.subarray(32 + (1 << 20)).every((b) => b === 0), `target ${i}: edges changed`);
      }
    }
    // Mixed with plain reads and small readIntos into one shared target, all in flight at once.
    const shared = new Uint8Array(600 * 512);
    const mixed: Array<Promise<unknown>> = [];
    for (let i = 0; i < 600; i++) {
      mixed.push(i % 2 === 0 ? c.readInto!(0, i * 4096, shared, i * 512, 512, s.rkey) : c.read(0, i * 4096, 512, s.rkey));
    }
    const results = await Promise.all(mixed);
    for (let i = 0; i < 600; i++) {
      const expected = s.mapping.buffer.subarray(i * 4096, i * 4096 + 512);
      if (i % 2 === 0) assert.ok(Buffer.from(shared.buffer, i * 512, 512).equals(expected), `readInto ${i}`);
      else assert.ok((results[i] as Buffer).equals(expected), `read ${i}`);
    }
    c.close();
  } finally {
    s.close();
  }
});

test('readInto: a target detached while the READ is in flight rejects DPMS_OUT_OF_BOUNDS, the data is dropped, the connection stays usable', async () => {
  const s = startServer();
  try {
    s.mapping.buffer.fill(0x77, 0, 8 << 20);
    const c = await s.connect();
    const reasons: string[] = [];
    c.onClose((reason) => reasons.push(reason));
    for (const length of [100, 1 << 20, 8 << 20]) {
      // Detached before the response arrives.
      const target = new Uint8Array(new ArrayBuffer(length));
      const before = c.read(0, 0, 8, s.rkey);
      const lost = c.readInto!(0, 0, target, 0, length, s.rkey);
      const after = c.read(0, 0, 8, s.rkey);
      const moved = structuredClone(target.buffer, { transfer: [target.buffer] });
      assert.equal(target.length, 0);
      await rejectsWith(lost, 'DPMS_OUT_OF_BOUNDS');
      assert.equal((await before).length, 8);
      assert.ok((await after).equals(Buffer.alloc(8, 0x77)), 'the next response was read from the wrong place');
      assert.ok(new Uint8Array(moved).every((b) => b === 0), 'the READ wrote into the memory after it moved');
    }
    // Detached part-way through a large READ (or after it completed; either way no crash, no hang).
    for (let i = 0; i < 5; i++) {
      const target = new Uint8Array(new ArrayBuffer(16 << 20));
      const big = c.readInto!(0, 0, target, 0, 16 << 20, s.rkey).then(() => 'done', (e: NodeJS.ErrnoException) => e.code ?? String(e));
      for (let j = 0; j <= i; j++) await new Promise((resolve) => setImmediate(resolve));
      structuredClone(target.buffer, { transfer: [target.buffer] });
      assert.ok(['done', 'DPMS_OUT_OF_BOUNDS'].includes(await big));
      assert.ok((await c.read(0, 0, 8, s.rkey)).equals(Buffer.alloc(8, 0x77)));
    }
    assert.deepEqual(reasons, []);
    c.close();
  } finally {
    s.close();
  }
});

test('readInto: a remote access error rejects DPMS_REMOTE_ACCESS and breaks the connection; pending readIntos reject DPMS_DISCONNECTED', async () => {
  const s = startServer();
  try {
    const c = await s.connect();
    const reasons: string[] = [];
    c.onClose((reason) => reasons.push(reason));
    const target = new Uint8Array(4 << 20);
    const before = c.readInto!(0, 0, target, 0, 1 << 20, s.rkey);
    const bad = c.readInto!(0, (16 << 20) - 4, target, 0, 8, s.rkey);
    const later = Array.from({ length: 8 }, (_, i) => c.readInto!(0, 0, target, i * 8, 8, s.rkey));
    await before;
    await rejectsWith(bad, 'DPMS_REMOTE_ACCESS');
    for (const op of later) await rejectsWith(op, 'DPMS_DISCONNECTED');
    await rejectsWith(c.readInto!(0, 0, target, 0, 8, s.rkey), 'DPMS_DISCONNECTED');
    assert.equal(reasons.length, 1);
    // Pending readIntos, some mid-payload, when the client closes.
    const d = await s.connect();
    const pending = Array.from({ length: 16 }, (_, i) => d.readInto!(0, 0, new Uint8Array(1 << 20), 0, 1 << 20, s.rkey).then(() => `ok ${i}`, (e: NodeJS.ErrnoException) => e.code ?? String(e)));
    await new Promise((resolve) => setImmediate(resolve));
    d.close();
    for (const outcome of await Promise.all(pending)) assert.ok(outcome.startsWith('ok') || outcome === 'DPMS_DISCONNECTED', outcome);
  } finally {
    s.close();
  }
});

test('compareAndSwap returns the value found; fetchAndAdd wraps modulo 2^64', async () => {
  const s = startServer();
  try {
    const c = await s.connect();
    const MAX = 2n ** 64n - 1n;
    assert.equal(await c.compareAndSwap(0, 64, 0n, 42n, s.rkey), 0n);
    assert.equal(s.mapping.load64(64), 42n);
    assert.equal(await c.compareAndSwap(0, 64, 7n, 99n, s.rkey), 42n, 'a failed CAS returns what was there');
    assert.equal(s.mapping.load64(64), 42n);
    assert.equal(await c.compareAndSwap(0, 64, 42n, MAX, s.rkey), 42n);
    assert.equal(s.mapping.load64(64), MAX);
    s.mapping.store64(72, MAX - 1n);
    assert.equal(await c.fetchAndAdd(0, 72, 3n, s.rkey), MAX - 1n);
    assert.equal(s.mapping.load64(72), 1n);
    assert.equal(await c.fetchAndAdd(0, 72, -2n, s.rkey), 1n);
    assert.equal(s.mapping.load64(72), MAX);
    // Little-endian in memory, as the local atomics.
    assert.equal(s.mapping.buffer.readBigUInt64LE(72), MAX);
    assert.equal(s.server.stats().atomics, 5);
    c.close();
  } finally {
    s.close();
  }
});

test('pipelining: hundreds in flight are all answered correctly and in order', async () => {
  const random = new Random(testSeed('tcp pipelining'));
  const s = startServer();
  try {
    const c = await s.connect();
    const n = 600;
    const slots = Array.from({ length: n }, () => random.bytes(1 + random.int(300)));
    const writes = slots.map((data, i) => c.write(0, 4096 + i * 512, data, s.rkey));
    const reads = slots.map((_, i) => c.read(0, 4096 + i * 512, slots[i].length, s.rkey));
    const adds = Array.from({ length: n }, () => c.fetchAndAdd(0, 0, 1n, s.rkey));
    await Promise.all(writes);
    const got = await Promise.all(reads);
    got.forEach((data, i) => assert.ok(data.equals(slots[i]), `slot ${i}`));
    // One connection executes in order: the i-th add saw exactly i earlier adds.
    assert.deepEqual(await Promise.all(adds), Array.from({ length: n }, (_, i) => BigInt(i)));
    assert.equal(s.mapping.load64(0), BigInt(n));
    c.close();
  } finally {
    s.close();
  }
});

test('back-pressure: 80 MiB of reads in flight (over the 32 MiB output cap) all arrive intact', async () => {
  const random = new Random(testSeed('tcp output back-pressure'));
  const s = startServer();
  try {
    s.mapping.buffer.set(random.bytes(1 << 20), 0);
    for (let i = 1; i < 16; i++) s.mapping.buffer.copyWithin(i << 20, 0, 1 << 20);
    s.mapping.buffer.writeUInt32LE(0xfeedf00d, 5 << 20); // make the chunks differ
    const c = await s.connect();
    const reads = Array.from({ length: 80 }, (_, i) => c.read(0, (i % 16) << 20, 1 << 20, s.rkey));
    const got = await Promise.all(reads);
    got.forEach((data, i) => assert.ok(data.equals(s.mapping.buffer.subarray((i % 16) << 20, ((i % 16) + 1) << 20)), `read ${i}`));
    c.close();
  } finally {
    s.close();
  }
});

test('back-pressure: at most 4096 messages await a reply per connection; the rest wait, then all complete', async () => {
  const pending: { connection: number; requestId: number; payload: Buffer }[] = [];
  const s = startServer({
    onEvent: (event) => {
      if (event.type === 'message') pending.push(event);
    },
  });
  try {
    const c = await s.connect();
    const calls = Array.from({ length: 4200 }, (_, i) => c.call(Buffer.from(`q${i}`)));
    await until(() => pending.length === 4096, '4096 delivered messages');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(pending.length, 4096, 'no more than the limit are delivered without replies');
    assert.equal(s.server.stats().messages, 4096);
    let answered = 0;
    while (answered < 4200) {
      await until(() => pending.length > answered, 'more messages');
      for (; answered < pending.length; answered++) {
        const m = pending[answered];
        s.server.reply(m.connection, m.requestId, Buffer.concat([Buffer.from('a:'), m.payload]));
      }
    }
    const replies = await Promise.all(calls);
    replies.forEach((reply, i) => assert.equal(reply.toString(), `a:q${i}`));
    c.close();
  } finally {
    s.close();
  }
});

test('writeWithImmediate: the event carries the immediate and length, after the data landed', async () => {
  const seen: { immediate: number; length: number; data: Buffer }[] = [];
  const holder: { s?: Served } = {};
  const s = startServer({
    onEvent: (event) => {
      if (event.type === 'immediate') {
        seen.push({ immediate: event.immediate, length: event.length, data: Buffer.from(holder.s!.mapping.buffer.subarray(1000, 1000 + event.length)) });
      }
    },
  });
  holder.s = s;
  try {
    const c = await s.connect();
    const data = Buffer.from('immediate payload');
    await c.writeWithImmediate(0, 1000, data, 0xdeadbeef, s.rkey);
    await until(() => seen.length === 1, 'the immediate event');
    assert.equal(seen[0].immediate, 0xdeadbeef);
    assert.equal(seen[0].length, data.length);
    assert.ok(seen[0].data.equals(data));
    c.close();
  } finally {
    s.close();
  }
});

test('persist: a resolved persist means earlier writes reached the persistent image (simulator region)', async () => {
  const sim = createSim(1 << 20);
  const s = startServer({ mapping: sim });
  try {
    const c = await s.connect();
    const data = Buffer.alloc(300, 0xab);
    await c.write(0, 4096, data, s.rkey);
    assert.ok(!sim.persistentImage().subarray(4096, 4396).equals(data), 'not durable before persist');
    const drains = sim.stats.drains;
    // Issued back to back with the write: ordering on the connection is what makes this durable.
    const second = Buffer.alloc(100, 0xcd);
    const write = c.write(0, 8192, second, s.rkey);
    const persist = c.persist(0, 8192, 100, s.rkey);
    await Promise.all([write, persist]);
    assert.ok(sim.persistentImage().subarray(8192, 8292).equals(second), 'the write before persist is durable');
    await c.persist(0, 4096, 300, s.rkey);
    assert.ok(sim.persistentImage().subarray(4096, 4396).equals(data));
    assert.ok(sim.stats.drains > drains);
    assert.equal(s.server.stats().persists, 2);
    c.close();
  } finally {
    s.close();
  }
});

test('call/reply: echo, empty and max-size messages; over-size refused on both sides', async () => {
  const s = startServer({ maxMessageBytes: 64 << 10 });
  try {
    const c = await s.connect();
    assert.equal((await c.call(Buffer.from('ping'))).toString(), 'ping');
    assert.equal((await c.call(new Uint8Array(0))).length, 0);
    const max = new Random(5).bytes(64 << 10);
    assert.ok((await c.call(max)).equals(max));
    const many = await Promise.all(Array.from({ length: 100 }, (_, i) => c.call(Buffer.from(`m${i}`))));
    many.forEach((reply, i) => assert.equal(reply.toString(), `m${i}`));
    // Client side: refused before sending (the smaller of both limits applies).
    assertCode(() => c.call(Buffer.alloc((64 << 10) + 1)), 'DPMS_INVALID_ARGUMENT');
    const big = await s.connect({ maxMessageBytes: 1 << 20 });
    assertCode(() => big.call(Buffer.alloc((64 << 10) + 1)), 'DPMS_INVALID_ARGUMENT');
    // The server refuses a reply over its limit.
    assertCode(() => s.server.reply(1, 1, Buffer.alloc((64 << 10) + 1)), 'DPMS_INVALID_ARGUMENT');
    // Server side: a frame claiming more is a bad frame that closes the connection.
    const before = s.server.stats().badFrames;
    const socket = await rawConnect(HOST, s.server.port);
    const reader = new ByteReader(socket);
    const welcome = await rawHandshake(socket, reader, SECRET, Buffer.alloc(32, 1));
    assert.equal(welcome?.maxMessageBytes, 64 << 10);
    socket.write(encodeRequest({ opcode: Op.message, requestId: 1, length: (64 << 10) + 1 }));
    assert.ok(await reader.closed(3000), 'the server closed the connection');
    socket.destroy();
    assert.equal(s.server.stats().badFrames, before + 1);
    assert.equal((await c.call(Buffer.from('still fine'))).toString(), 'still fine');
    c.close();
    big.close();
  } finally {
    s.close();
  }
});

test('wrong secret: connect rejects with DPMS_AUTH and the server counts an auth failure', async () => {
  const s = startServer();
  try {
    await rejectsWith(s.connect({ secret: Buffer.from('another-secret-of-enough-length') }), 'DPMS_AUTH');
    await until(() => s.server.stats().authFailures === 1, 'the auth failure count');
    assert.equal(s.events.filter((e) => e.type === 'open').length, 0, 'no open event for a failed handshake');
  } finally {
    s.close();
  }
});

test('a client that never authenticates is dropped after handshakeTimeoutMs', async () => {
  const s = startServer({ handshakeTimeoutMs: 100 });
  try {
    const socket = await rawConnect(HOST, s.server.port);
    const reader = new ByteReader(socket);
    assert.ok(await reader.closed(3000), 'the server closed the silent connection');
    socket.destroy();
    // The server thread updates its counters just after it closes the socket: give it a moment.
    for (let i = 0; i < 200 && s.server.stats().connectionsOpen !== 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(s.server.stats().authFailures, 1);
    assert.equal(s.server.stats().connectionsOpen, 0);
  } finally {
    s.close();
  }
});

test('connect: DPMS_UNREACHABLE for a closed port, DPMS_TIMEOUT for a silent server', async () => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, HOST, resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  await rejectsWith(connect('tcp', { host: HOST, port, secret: SECRET }), 'DPMS_UNREACHABLE');
  await rejectsWith(connect('tcp', { host: 'no-such-host.invalid', port, secret: SECRET }), 'DPMS_UNREACHABLE');

  const silent = net.createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, HOST, resolve));
  try {
    const started = Date.now();
    await rejectsWith(connect('tcp', { host: HOST, port: (silent.address() as net.AddressInfo).port, secret: SECRET, timeoutMs: 200 }), 'DPMS_TIMEOUT');
    assert.ok(Date.now() - started >= 150);
  } finally {
    silent.close();
  }
});

for (const [name, op, reason] of [
  ['wrong rkey', (c: TransportConnection, rkey: number) => c.read(0, 0, 8, (rkey ^ 0x5a5a) >>> 0), 'wrong rkey'],
  ['out of bounds', (c: TransportConnection, rkey: number) => c.write(0, (16 << 20) - 4, Buffer.alloc(8), rkey), 'bounds'],
  ['no such region', (c: TransportConnection, rkey: number) => c.read(3, 0, 8, rkey), 'region'],
  ['misaligned atomic', (c: TransportConnection, rkey: number) => c.fetchAndAdd(0, 12, 1n, rkey), 'misaligned'],
] as const) {
  test(`remote access error (${name}): DPMS_REMOTE_ACCESS, then the connection is broken`, async () => {
    const s = startServer();
    try {
      const c = await s.connect();
      const reasons: string[] = [];
      c.onClose((r) => reasons.push(r));
      const before = c.read(0, 0, 8, s.rkey); // earlier ops still complete
      const bad = op(c, s.rkey);
      const later = c.read(0, 0, 8, s.rkey); // posted in the same turn, after the bad one
      assert.equal((await before).length, 8);
      const error = await rejectsWith(bad, 'DPMS_REMOTE_ACCESS');
      assert.match(error.message, new RegExp(reason));
      await rejectsWith(later, 'DPMS_DISCONNECTED');
      await rejectsWith(c.read(0, 0, 8, s.rkey), 'DPMS_DISCONNECTED');
      assert.equal(reasons.length, 1);
      assert.match(reasons[0], new RegExp(reason));
      await until(() => s.server.stats().connectionsOpen === 0, 'the server to close the connection');
      assert.equal(s.server.stats().accessErrors, 1);
      await until(() => s.events.some((e) => e.type === 'close'), 'the close event');
      // The mapping was not touched by the refused write.
      assert.ok(s.mapping.buffer.subarray((16 << 20) - 4).equals(Buffer.alloc(4)));
    } finally {
      s.close();
    }
  });
}

// A fake server speaking the handshake (right or wrong proof), then answering the first request
// with `answer` (raw bytes).
async function fakeServer(options: { wrongProof?: boolean; answer: Buffer }): Promise<{ port: number; close(): void }> {
  const response = (opcode: number, requestId: number, payload: Buffer): Buffer => {
    const header = Buffer.alloc(16);
    header.writeUInt16LE(RESPONSE_MAGIC, 0);
    header[2] = 1;
    header[3] = opcode;
    header.writeUInt32LE(requestId, 4);
    header.writeUInt32LE(payload.length, 8);
    return Buffer.concat([header, payload]);
  };
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    const reader = new ByteReader(socket);
    void (async () => {
      const serverNonce = crypto.randomBytes(32);
      socket.write(response(Op.hello, 0, serverNonce));
      const auth = await reader.take(96);
      if (auth === undefined) return;
      const clientNonce = auth.subarray(32, 64);
      const secret = options.wrongProof ? Buffer.from('not-the-secret-not-the-secret') : SECRET;
      const proof = crypto.createHmac('sha256', secret).update('dpms-server').update(clientNonce).update(serverNonce).digest();
      const welcome = Buffer.alloc(64);
      proof.copy(welcome, 0);
      welcome.writeUInt32LE(9, 32);
      welcome.writeUInt32LE(1, 36);
      welcome.writeUInt32LE(4096, 40);
      welcome.writeBigUInt64LE(4096n, 48);
      welcome.writeUInt32LE(1234, 56);
      socket.write(response(Op.welcome, 0, welcome));
      if ((await reader.take(32)) !== undefined) socket.write(options.answer);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

test('client: a server with the wrong proof is refused with DPMS_AUTH', async () => {
  const fake = await fakeServer({ wrongProof: true, answer: Buffer.alloc(0) });
  try {
    const error = await rejectsWith(connect('tcp', { host: HOST, port: fake.port, secret: SECRET }), 'DPMS_AUTH');
    assert.match(error.message, /proof/);
  } finally {
    fake.close();
  }
});

for (const [name, answer, why] of [
  ['bad magic', Buffer.alloc(16, 0x41), /bad response header/],
  ['wrong request id', Buffer.from('4452010277777777080000000000000000000000000000000000', 'hex'), /oldest pending/],
  ['wrong length for the operation', Buffer.from('445201020100000010000000000000000000000000000000000000000000000000000000', 'hex'), /length does not match/],
  ['unknown status', Buffer.from('44520102010000000000000009000000', 'hex'), /unknown status/],
  ['a response nobody asked for', Buffer.concat([Buffer.from('44520102010000000800000000000000', 'hex'), Buffer.alloc(8), Buffer.from('44520102020000000800000000000000', 'hex')]), /oldest pending/],
] as const) {
  test(`client: a malformed response (${name}) rejects with DPMS_PROTOCOL and closes`, async () => {
    const fake = await fakeServer({ answer });
    try {
      const c = await connect('tcp', { host: HOST, port: fake.port, secret: SECRET });
      assert.equal(c.nodeId, 9);
      assert.deepEqual(c.regions, [{ sizeBytes: 4096, rkey: 1234 }]);
      const reasons: string[] = [];
      c.onClose((r) => reasons.push(r));
      const first = c.read(0, 0, 8, 1234);
      if (name === 'a response nobody asked for') {
        assert.equal((await first).length, 8); // the first answer is fine; the second is unsolicited
        await until(() => reasons.length === 1, 'the close');
      } else {
        assert.match((await rejectsWith(first, 'DPMS_PROTOCOL')).message, why);
      }
      assert.equal(reasons.length, 1);
      assert.match(reasons[0], why);
      await rejectsWith(c.read(0, 0, 8, 1234), 'DPMS_DISCONNECTED');
    } finally {
      fake.close();
    }
  });
}

test('an access error followed by a flood of writes (the server resets) still reports DPMS_REMOTE_ACCESS', async () => {
  const s = startServer();
  try {
    for (let round = 0; round < 5; round++) {
      const c = await s.connect();
      const bad = c.read(0, 0, 8, (s.rkey + 1) >>> 0);
      const flood = Array.from({ length: 24 }, (_, i) => c.write(0, i << 20, Buffer.alloc(1 << 20, i), s.rkey));
      await rejectsWith(bad, 'DPMS_REMOTE_ACCESS');
      for (const write of flood) await rejectsWith(write, 'DPMS_DISCONNECTED');
    }
    assert.equal(s.server.stats().accessErrors, 5);
    assert.equal(s.server.stats().writes, 0, 'nothing after the refused frame was executed');
  } finally {
    s.close();
  }
});

test('server disconnect() mid-flight: pending operations reject with DPMS_DISCONNECTED, onClose fires once', async () => {
  const s = startServer({
    onEvent: (event, server) => {
      if (event.type === 'message') server.disconnect(event.connection); // never replies
    },
  });
  try {
    const c = await s.connect();
    const reasons: string[] = [];
    c.onClose((r) => reasons.push(r));
    c.onClose((r) => reasons.push(`second listener: ${r}`));
    const call = c.call(Buffer.from('hang up on me'));
    const reads = Array.from({ length: 20 }, () => c.read(0, 0, 1 << 20, s.rkey));
    await rejectsWith(call, 'DPMS_DISCONNECTED');
    for (const read of reads) await read.then(() => undefined, (e: NodeJS.ErrnoException) => assert.equal(e.code, 'DPMS_DISCONNECTED'));
    await rejectsWith(c.write(0, 0, Buffer.alloc(1), s.rkey), 'DPMS_DISCONNECTED');
    assert.equal(reasons.length, 2);
    assert.match(reasons[0], /closed/);
    await until(() => s.events.some((e) => e.type === 'close' && /disconnected by the server/.test(e.reason)), 'the close event');
  } finally {
    s.close();
  }
});

test('a served mapping cannot be closed (DPMS_BUSY) until server.close(); close is idempotent', async () => {
  const mapping = openPool(poolPath('busy'), { createSizeBytes: 1 << 20 });
  const server = serve('tcp', { host: HOST, port: 0, secret: SECRET, nodeId: 1, regions: [mapping, mapping], onEvent: () => undefined });
  assertCode(() => mapping.close(), 'DPMS_BUSY');
  const c = await connect('tcp', { host: HOST, port: server.port, secret: SECRET });
  assert.equal(c.regions.length, 2);
  const closed: string[] = [];
  c.onClose((r) => closed.push(r));
  server.close();
  server.close();
  await until(() => closed.length === 1, 'the client to see the server go');
  await rejectsWith(c.read(0, 0, 1, server.regions[0].rkey), 'DPMS_DISCONNECTED');
  assert.equal(server.stats().connectionsOpen, 0);
  mapping.close();
  assert.equal(mapping.buffer.length, 0);
});

test('local argument errors throw DPMS_INVALID_ARGUMENT synchronously', async () => {
  const s = startServer();
  try {
    const c = await s.connect();
    assertCode(() => c.read(0, -1, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.read(0, 0, (16 << 20) + 1, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.read(0, 0.5, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.read(70000, 0, 8, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.read(0, 0, 8, 2 ** 32), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.write(0, 0, 'text' as unknown as Uint8Array, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.write(0, 0, new Uint16Array(4) as unknown as Uint8Array, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.compareAndSwap(0, 0, -1n, 0n, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.compareAndSwap(0, 0, 1 as unknown as bigint, 0n, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.fetchAndAdd(0, 0, 2n ** 64n, s.rkey), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => c.onClose('nope' as unknown as () => void), 'DPMS_INVALID_ARGUMENT');
    assertCode(() => connect('tcp', { host: HOST, port: s.server.port, secret: Buffer.alloc(4) }), 'DPMS_INVALID_ARGUMENT');
    assertCode(
      () => serve('tcp', { host: HOST, port: 0, secret: SECRET, nodeId: 1, regions: [{} as PmMapping], onEvent: () => undefined }),
      'DPMS_INVALID_ARGUMENT',
    );
    // Still usable afterwards.
    assert.equal((await c.read(0, 0, 8, s.rkey)).length, 8);
    c.close();
    await rejectsWith(c.read(0, 0, 8, s.rkey), 'DPMS_DISCONNECTED');
  } finally {
    s.close();
  }
});

test('server.close() and closed connections leave the process free to exit', async () => {
  const script = `
    const native = require(${JSON.stringify(path.join(__dirname, '..', '..', 'native', 'index.js'))});
    const file = ${JSON.stringify(poolPath('exit'))};
    (async () => {
      const m = native.openPool(file, { createSizeBytes: 1 << 20 });
      const secret = Buffer.alloc(32, 3);
      const s = native.serve('tcp', { host: '127.0.0.1', port: 0, secret, nodeId: 1, regions: [m], onEvent: () => {} });
      const a = await native.connect('tcp', { host: '127.0.0.1', port: s.port, secret });
      const b = await native.connect('tcp', { host: '127.0.0.1', port: s.port, secret });
      await a.write(0, 0, Buffer.from('x'), s.regions[0].rkey);
      await b.read(0, 0, 1, s.regions[0].rkey);
      a.close();      // b is left open: the server closing must not leave it holding the loop
      s.close();
      m.close();
      require('fs').rmSync(file);
      console.log('done');
    })();`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(null);
    }, 10000);
    child.on('exit', (exitCode) => {
      clearTimeout(timer);
      resolve(exitCode);
    });
  });
  assert.equal(code, 0, 'the child exited on its own');
  assert.match(output, /done/);
});

test('rawTcpBench times every round trip, ping-pong and pipelined', () => {
  for (const inFlight of [1, 4]) {
    const result = rawTcpBench({ requestBytes: 100, responseBytes: 3000, iterations: 200, inFlight });
    assert.equal(result.latenciesNs.length, 200);
    assert.ok(result.latenciesNs.every((ns) => ns > 0));
    assert.ok(result.totalNs >= Math.max(...result.latenciesNs));
  }
  assertCode(() => rawTcpBench({ requestBytes: 0, responseBytes: 8, iterations: 1 }), 'DPMS_INVALID_ARGUMENT');
});
