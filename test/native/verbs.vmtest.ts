// The 'verbs' transport provider against a real RDMA device: proves data integrity of one-sided READ
// and WRITE, atomics semantics (and an exact fetch-and-add counter under several client processes),
// that remote refusals break the connection, authentication, call/reply, write-with-immediate events and
// remote persistence. It needs an RDMA device at 10.200.0.1 (RXE_VM_ADDR), so it runs inside the
// soft-RoCE VM (scripts/rxe-vm.sh), started by test/transport/verbs-vm.test.ts; its name does not end
// in .test.ts so that the host suite does not run it directly. Pools live in the guest's /dev/shm.
// Run by hand: scripts/rxe-vm.sh -- node --test dist/test/native/verbs.vmtest.js
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  connect,
  createSim,
  openPool,
  serve,
  type PmMapping,
  type ServerEvent,
  type TransportConnection,
  type TransportServer,
} from '../../native';

const host = process.env.RXE_VM_ADDR ?? '10.200.0.1';
const secret = Buffer.from('verbs-vmtest-cluster-secret-0123456789');
const poolBytes = 16 * 1024 * 1024;
const counterOffset = 4096;
// Under qemu's software CPU (and a busy host) a first connect with its per-connection MR registration
// can take seconds: give it time, so that only a real failure fails the suite.
const VM_CONNECT_MS = 30_000;

// ---- Child mode: one client process adding to the shared counter (fork of this same file) ----
if (process.env.DPMS_VERBS_CHILD === '1') {
  void (async () => {
    const port = Number(process.env.DPMS_VERBS_PORT);
    const adds = Number(process.env.DPMS_VERBS_ADDS);
    const connection = await connect('verbs', { host, port, secret, timeoutMs: VM_CONNECT_MS });
    const rkey = connection.regions[0].rkey;
    // Half awaited one at a time, half in flight together: both paths must count exactly.
    for (let i = 0; i < adds / 2; i++) await connection.fetchAndAdd(0, counterOffset, 1n, rkey);
    await Promise.all(Array.from({ length: adds / 2 }, () => connection.fetchAndAdd(0, counterOffset, 1n, rkey)));
    connection.close();
    process.exit(0);
  })().catch((error: unknown) => {
    console.error('child failed:', error);
    process.exit(1);
  });
} else {
  suite();
}

/** Assert that a promise rejects with an Error whose `code` is `code`. */
async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    assert.equal((error as NodeJS.ErrnoException).code, code, error.message);
    return true;
  });
}

function throwsWith(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof Error);
    assert.equal((error as NodeJS.ErrnoException).code, code, error.message);
    return true;
  });
}

/** A served pool plus the events its server delivered; message events are answered by `answer`. */
interface Served {
  readonly server: TransportServer;
  readonly pool: PmMapping;
  readonly events: ServerEvent[];
  answer: (payload: Buffer) => Buffer | undefined;
}

function servePool(file: string, regions?: PmMapping[], options: { handshakeTimeoutMs?: number } = {}): Served {
  fs.rmSync(file, { force: true });
  const pool = openPool(file, { createSizeBytes: poolBytes });
  const served: Served = {
    pool,
    events: [],
    answer: (payload) => Buffer.concat([Buffer.from('echo:'), payload]),
    server: undefined as unknown as TransportServer,
  };
  (served as { server: TransportServer }).server = serve('verbs', {
    host,
    port: 0,
    secret,
    nodeId: 42,
    regions: regions ?? [pool],
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    onEvent: (event) => {
      served.events.push(event);
      if (event.type === 'message') {
        const reply = served.answer(event.payload);
        if (reply !== undefined) served.server.reply(event.connection, event.requestId, reply);
      }
    },
  });
  return served;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 20000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function suite(): void {
  const seed = process.env.DPMS_SEED !== undefined ? Number(process.env.DPMS_SEED) : randomBytes(4).readUInt32LE(0) >>> 1;
  console.log(`# verbs vmtest seed ${seed} (replay with DPMS_SEED=${seed})`);
  let state = seed >>> 0;
  const random = (bound: number): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * bound);
  };
  const bytes = (length: number): Buffer => {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) out[i] = random(256);
    return out;
  };

  describe('verbs provider on rxe0', () => {
    let served: Served;
    let connection: TransportConnection;
    let rkey: number;

    before(async () => {
      served = servePool('/dev/shm/dpms-verbs-main.pool');
      connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
      rkey = connection.regions[0].rkey;
    });
    after(() => {
      connection.close();
      served.server.close();
      served.pool.close();
    });

    test('the handshake reports the node id and the region, and the server an open connection', () => {
      assert.equal(connection.nodeId, 42);
      assert.equal(connection.regions.length, 1);
      assert.equal(connection.regions[0].sizeBytes, poolBytes);
      assert.ok(served.events.some((event) => event.type === 'open'));
      assert.equal(served.server.stats().connectionsOpen, 1);
    });

    test('write then read returns the same bytes, 1 B to 4 MiB at random offsets', async () => {
      const sizes = [1, 3, 8, 63, 64, 65, 4095, 4096, 4097, 65536, 1024 * 1024 + 3, 2 * 1024 * 1024 + 17, 4 * 1024 * 1024];
      for (const size of sizes) {
        const offset = random(poolBytes - size);
        const data = bytes(size);
        await connection.write(0, offset, data, rkey);
        assert.ok(served.pool.buffer.subarray(offset, offset + size).equals(data), `server memory after a ${size}-B write at ${offset}`);
        const back = await connection.read(0, offset, size, rkey);
        assert.ok(back.equals(data), `read back ${size} B at ${offset}`);
      }
    });

    test('many small operations in flight at once all land (one turn, one posted chain)', async () => {
      const model = Buffer.from(served.pool.buffer.subarray(0, 1 << 20));
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 500; i++) {
        const offset = random((1 << 20) - 300);
        const data = bytes(1 + random(256));
        data.copy(model, offset);
        writes.push(connection.write(0, offset, data, rkey));
      }
      await Promise.all(writes);
      const reads = await Promise.all(Array.from({ length: 16 }, (_, i) => connection.read(0, i * 65536, 65536, rkey)));
      assert.ok(Buffer.concat(reads).equals(model));
    });

    test('compare-and-swap and fetch-and-add return the value found; adds wrap modulo 2^64', async () => {
      served.pool.store64(0, 5n);
      assert.equal(await connection.fetchAndAdd(0, 0, 3n, rkey), 5n);
      assert.equal(served.pool.load64(0), 8n);
      assert.equal(await connection.compareAndSwap(0, 0, 8n, 100n, rkey), 8n);
      assert.equal(served.pool.load64(0), 100n);
      assert.equal(await connection.compareAndSwap(0, 0, 8n, 1n, rkey), 100n, 'a failed CAS returns the value found');
      assert.equal(served.pool.load64(0), 100n, 'a failed CAS leaves memory alone');
      served.pool.store64(8, 2n ** 64n - 1n);
      assert.equal(await connection.fetchAndAdd(0, 8, 2n, rkey), 2n ** 64n - 1n);
      assert.equal(served.pool.load64(8), 1n);
      assert.equal(await connection.fetchAndAdd(0, 8, -1n, rkey), 1n);
      assert.equal(served.pool.load64(8), 0n);
    });

    test('fetch-and-add from several client processes at once counts exactly', async () => {
      served.pool.store64(counterOffset, 0n);
      const processes = 3;
      const adds = 100;
      const children = Array.from({ length: processes }, () =>
        fork(__filename, [], {
          env: { ...process.env, DPMS_VERBS_CHILD: '1', DPMS_VERBS_PORT: String(served.server.port), DPMS_VERBS_ADDS: String(adds) },
          stdio: 'inherit',
        }),
      );
      const ownAdds = Promise.all(Array.from({ length: adds }, () => connection.fetchAndAdd(0, counterOffset, 1n, rkey)));
      const codes = await Promise.all(children.map((child) => new Promise<number | null>((resolve) => child.on('exit', resolve))));
      await ownAdds;
      assert.deepEqual(codes, Array(processes).fill(0));
      assert.equal(served.pool.load64(counterOffset), BigInt((processes + 1) * adds));
    });

    test('call/reply: concurrent calls get their own replies; oversized payloads throw', async () => {
      const payloads = Array.from({ length: 20 }, (_, i) => bytes(1 + i * 97));
      const replies = await Promise.all(payloads.map((payload) => connection.call(payload)));
      replies.forEach((reply, i) => assert.ok(reply.equals(Buffer.concat([Buffer.from('echo:'), payloads[i]]))));
      assert.ok((await connection.call(Buffer.alloc(0))).equals(Buffer.from('echo:')));
      throwsWith(() => connection.call(Buffer.alloc(64 * 1024 + 1)), 'DPMS_INVALID_ARGUMENT');
      const messages = served.events.filter((event) => event.type === 'message');
      assert.ok(messages.length >= 21);
    });

    test('replies may come later and out of order', async () => {
      const held: Array<() => void> = [];
      served.answer = () => undefined;
      const marked = (event: ServerEvent): boolean => event.type === 'message' && event.payload.length === 2 && event.payload[0] === 0xee;
      const calls = [0, 1, 2, 3].map((i) => connection.call(Buffer.from([0xee, i])));
      await waitFor(() => served.events.filter(marked).length >= 4, 'four messages');
      for (const event of served.events.filter(marked)) {
        if (event.type !== 'message') continue;
        held.push(() => served.server.reply(event.connection, event.requestId, Buffer.from([event.payload[1] + 10])));
      }
      for (const release of held.reverse()) release();
      served.answer = (payload) => Buffer.concat([Buffer.from('echo:'), payload]);
      assert.deepEqual((await Promise.all(calls)).map((reply) => reply[0]), [10, 11, 12, 13]);
    });

    test('write-with-immediate: the event arrives after the data is in the region', async () => {
      const data = bytes(3000);
      const offset = 8192;
      const seen = new Promise<ServerEvent>((resolve) => {
        const check = setInterval(() => {
          const event = served.events.find((e) => e.type === 'immediate' && e.immediate === 0xfeedf00d);
          if (event !== undefined) {
            clearInterval(check);
            resolve(event);
          }
        }, 5);
      });
      await connection.writeWithImmediate(0, offset, data, 0xfeedf00d, rkey);
      const event = await seen;
      assert.equal(event.type === 'immediate' && event.length, 3000);
      assert.ok(served.pool.buffer.subarray(offset, offset + 3000).equals(data));
    });

    test('persist after writes resolves (read-after-write on a CPU-flushed pool)', async () => {
      const data = bytes(64);
      await Promise.all([connection.write(0, 128, data, rkey), connection.persist(0, 128, 64, rkey)]);
      assert.ok(served.pool.buffer.subarray(128, 192).equals(data));
      await connection.persist(0, 0, 0, rkey);
    });

    test('local argument errors throw DPMS_INVALID_ARGUMENT synchronously', () => {
      throwsWith(() => connection.read(0, -1, 8, rkey), 'DPMS_INVALID_ARGUMENT');
      throwsWith(() => connection.read(0.5, 0, 8, rkey), "DPMS_INVALID_ARGUMENT");
      throwsWith(() => connection.write(0, 0, 'text' as unknown as Uint8Array, rkey), 'DPMS_INVALID_ARGUMENT');
      throwsWith(() => connection.fetchAndAdd(0, 0, 1 as unknown as bigint, rkey), 'DPMS_INVALID_ARGUMENT');
      throwsWith(() => connection.compareAndSwap(0, 0, -1n, 0n, rkey), 'DPMS_INVALID_ARGUMENT');
    });
  });

  describe('verbs provider failures', () => {
    test('a wrong rkey rejects with DPMS_REMOTE_ACCESS, then everything with DPMS_DISCONNECTED', async () => {
      const served = servePool('/dev/shm/dpms-verbs-rkey.pool');
      try {
        const connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
        const closed = new Promise<string>((resolve) => connection.onClose(resolve));
        const rkey = connection.regions[0].rkey;
        const good = connection.read(0, 0, 8, rkey);
        const bad = connection.read(0, 0, 8, rkey ^ 0x5a5a00);
        const later = connection.write(0, 0, Buffer.alloc(8), rkey);
        await good;
        await rejectsWith(bad, 'DPMS_REMOTE_ACCESS');
        await rejectsWith(later, 'DPMS_DISCONNECTED');
        await rejectsWith(connection.read(0, 0, 8, rkey), 'DPMS_DISCONNECTED');
        assert.match(await closed, /remote access/);
        await waitFor(() => served.events.some((event) => event.type === 'close'), 'the server-side close');
        assert.ok(served.server.stats().accessErrors >= 1);
      } finally {
        served.server.close();
        served.pool.close();
      }
    });

    test('out of bounds, misaligned atomics and unknown regions are remote access errors', async () => {
      const served = servePool('/dev/shm/dpms-verbs-bounds.pool');
      try {
        for (const attempt of [
          (c: TransportConnection, k: number) => c.read(0, poolBytes - 4, 8, k),
          (c: TransportConnection, k: number) => c.write(0, poolBytes, Buffer.alloc(1), k),
          (c: TransportConnection, k: number) => c.fetchAndAdd(0, 4, 1n, k),
          (c: TransportConnection, k: number) => c.read(5, 0, 8, k),
          (c: TransportConnection, k: number) => c.persist(0, poolBytes - 8, 16, k),
        ]) {
          const connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
          const rkey = connection.regions[0].rkey;
          await rejectsWith(attempt(connection, rkey), 'DPMS_REMOTE_ACCESS');
          await rejectsWith(connection.read(0, 0, 8, rkey), 'DPMS_DISCONNECTED');
        }
      } finally {
        served.server.close();
        served.pool.close();
      }
    });

    test('a wrong secret is DPMS_AUTH and counts as an auth failure; no open event', async () => {
      const served = servePool('/dev/shm/dpms-verbs-auth.pool');
      try {
        await rejectsWith(connect('verbs', { host, port: served.server.port, secret: Buffer.alloc(32, 1), timeoutMs: VM_CONNECT_MS }), 'DPMS_AUTH');
        await waitFor(() => served.server.stats().authFailures === 1, 'the auth failure count');
        assert.equal(served.events.filter((event) => event.type === 'open').length, 0);
        assert.equal(served.server.stats().connectionsOpen, 0);
      } finally {
        served.server.close();
        served.pool.close();
      }
    });

    test('nothing listening is DPMS_UNREACHABLE', async () => {
      const served = servePool('/dev/shm/dpms-verbs-unreach.pool');
      const port = served.server.port;
      served.server.close();
      served.pool.close();
      await rejectsWith(connect('verbs', { host, port, secret, timeoutMs: VM_CONNECT_MS }), 'DPMS_UNREACHABLE');
    });

    test('a server that disconnects mid-flight rejects every pending operation', async () => {
      const served = servePool('/dev/shm/dpms-verbs-drop.pool');
      try {
        const connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
        const closed = new Promise<string>((resolve) => connection.onClose(resolve));
        const rkey = connection.regions[0].rkey;
        const pending = Array.from({ length: 64 }, (_, i) => connection.read(0, i * 65536, 1024 * 1024, rkey));
        const open = served.events.find((event) => event.type === 'open');
        assert.ok(open !== undefined);
        served.server.disconnect(open.connection);
        const outcomes = await Promise.allSettled(pending);
        const rejected = outcomes.filter((outcome) => outcome.status === 'rejected');
        assert.ok(rejected.length > 0, 'some operations were still pending');
        for (const outcome of rejected) {
          assert.equal((outcome.reason as NodeJS.ErrnoException).code, 'DPMS_DISCONNECTED');
        }
        await closed;
        assert.deepEqual(served.events.filter((event) => event.type === 'close').map((event) => event.type === 'close' && event.reason), ['disconnected by server']);
      } finally {
        served.server.close();
        served.pool.close();
      }
    });

    test('server.close() ends every connection once, unpins the regions and is idempotent', async () => {
      const served = servePool('/dev/shm/dpms-verbs-close.pool');
      const connections = await Promise.all([0, 1].map(() => connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS })));
      const closes = connections.map((connection) => new Promise<string>((resolve) => connection.onClose(resolve)));
      throwsWith(() => served.pool.close(), 'DPMS_BUSY');
      served.server.close();
      served.server.close();
      assert.equal(served.events.filter((event) => event.type === 'close').length, 2);
      // An idle connection does not keep the process alive; an operation does, and it learns of the end.
      for (const connection of connections) await rejectsWith(connection.read(0, 0, 8, connection.regions[0].rkey), 'DPMS_DISCONNECTED');
      assert.match(String(await Promise.all(closes)), /disconnected/);
      served.pool.close();
    });

    test('client close() rejects pending operations and is not an access error on the server', async () => {
      const served = servePool('/dev/shm/dpms-verbs-cclose.pool');
      try {
        const connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
        const pending = connection.read(0, 0, 1024 * 1024, connection.regions[0].rkey);
        connection.close();
        connection.close();
        await rejectsWith(pending, 'DPMS_DISCONNECTED');
        await waitFor(() => served.events.some((event) => event.type === 'close'), 'the server-side close');
        assert.equal(served.server.stats().accessErrors, 0);
        assert.equal(served.server.stats().connectionsOpen, 0);
      } finally {
        served.server.close();
        served.pool.close();
      }
    });

    test('a handshake that does not finish in time is dropped and counted', async () => {
      const served = servePool('/dev/shm/dpms-verbs-slow.pool', undefined, { handshakeTimeoutMs: 1 });
      try {
        await assert.rejects(connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS }));
        await waitFor(() => served.server.stats().authFailures >= 1, 'the handshake timeout count');
      } finally {
        served.server.close();
        served.pool.close();
      }
    });
  });

  describe('verbs persistence through the node CPU (flush request)', () => {
    test('writes to a crash-simulator region become persistent only with persist()', async () => {
      const sim = createSim(1 << 20);
      fs.mkdirSync('/dev/shm', { recursive: true });
      const served = servePool(path.join('/dev/shm', 'dpms-verbs-simhost.pool'), [sim]);
      try {
        const connection = await connect('verbs', { host, port: served.server.port, secret, timeoutMs: VM_CONNECT_MS });
        const rkey = connection.regions[0].rkey;
        const data = bytes(4096);
        await connection.write(0, 65536, data, rkey);
        assert.ok(sim.buffer.subarray(65536, 65536 + 4096).equals(data), 'the write reached the cache image');
        assert.ok(!sim.persistentImage().subarray(65536, 65536 + 4096).equals(data), 'but not the persistent image');
        await connection.persist(0, 65536, 4096, rkey);
        assert.ok(sim.persistentImage().subarray(65536, 65536 + 4096).equals(data), 'persist made it durable');
        assert.ok(served.server.stats().persists >= 1);
        await rejectsWith(connection.persist(0, (1 << 20) - 8, 16, rkey), 'DPMS_REMOTE_ACCESS');
        await rejectsWith(connection.read(0, 0, 8, rkey), 'DPMS_DISCONNECTED');
        connection.close();
      } finally {
        served.server.close();
        served.pool.close();
        sim.close();
      }
    });
  });
}
