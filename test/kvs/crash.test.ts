// Proves that KvStore, used by client processes on a 3-node tcp cluster, keeps every acknowledged
// write, never shows a torn value and leaves pools that `dpms check` finds clean when a client or a
// node daemon is killed -9 in the middle of a put-heavy load; and that a snapshot held by another
// process stays exact while every key is overwritten, its garbage is reclaimed once it is released,
// and a killed holder stops neither writers nor (after its pin lease) reclamation. Seeds are printed.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KvStore } from '../../kvs';
import { ClusterClient } from '../../pdsm';
import { CLI, quiesce, startCluster, type TestCluster } from '../support/cluster';
import { Random, testSeed } from '../support/random';
import {
  checkValue, Ledger, makeValue, MIN_VALUE_BYTES, PARENT_WRITER, sweepKey, WorkerProcess, type WorkerSpec,
} from './kv-worker';

const LEASE_MS = 1500;
/** How long a snapshot pin outlives its holder (kvs/store.ts PIN_LEASE_MS). */
const PIN_LEASE_MS = 30_000;
/** Garbage is freed no sooner than this after it was retired (kvs/store.ts GARBAGE_GRACE_MS). */
const GARBAGE_GRACE_MS = 1000;
/**
 * What a worker may see while a node is down and restarting. DPMS_AUTH is among them because the tcp
 * transport reports a connection the peer closes or resets during the handshake as DPMS_AUTH (a node
 * refuses a wrong secret that way), and a node dying or starting up closes connections just so.
 */
const NODE_LOSS_CODES = new Set(['DPMS_DISCONNECTED', 'DPMS_TX_ABORTED', 'DPMS_TX_UNKNOWN', 'DPMS_TIMEOUT', 'DPMS_UNREACHABLE', 'DPMS_AUTH']);

const ackCount = (worker: WorkerProcess): number => worker.history.reduce((sum, fields) => sum + (fields[0] === 'ack' ? 1 : 0), 0);

async function objects(client: ClusterClient): Promise<number> {
  const rows = await client.status();
  for (const row of rows) assert.ok(row.status, `node ${row.node.id} did not answer: ${row.error}`);
  return rows.reduce((sum, row) => sum + row.status!.objects, 0);
}

/** Poll `condition`; fail on timeout, or at once when one of the `watched` workers died. */
async function until(condition: () => boolean, what: string, timeoutMs: number, watched: readonly WorkerProcess[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    const dead = watched.find((worker) => !worker.running);
    if (dead) throw new Error(`worker ${dead.spec.id} died while waiting for ${what}; its stderr:\n${dead.stderr}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Commit small puts until the cluster's objects fall to `target` (each commit frees at most 1,024
 * reclaimable objects) or five commits in a row free nothing; returns the objects left.
 */
async function reclaimWith(client: ClusterClient, kv: KvStore, target: number): Promise<number> {
  let count = await objects(client);
  for (let i = 0, idle = 0; i < 100 && idle < 5 && count > target; i++) {
    await kv.put(Buffer.from('tick'), makeValue(Buffer.from('tick'), { writer: PARENT_WRITER, seq: i, number: 0 }, 40));
    const now = await objects(client);
    idle = now < count ? 0 : idle + 1;
    count = now;
  }
  return count;
}

/** Who may have written a key, and the one writer whose acknowledged puts it must keep (if any). */
interface Expectation {
  readonly writers: ReadonlySet<number>;
  readonly owner?: number;
}

describe('KvStore under kill -9 of clients and nodes (3 tcp nodes)', () => {
  let cluster: TestCluster;
  let client: ClusterClient;
  const workers = new Set<WorkerProcess>();
  /** Left by the snapshot test for the last one: garbage a killed holder's pin keeps until its lease ends. */
  let deadPin: { store: string; killedAtMs: number; retained: number } | undefined;

  const spawnWorker = (spec: WorkerSpec): WorkerProcess => {
    const worker = new WorkerProcess(cluster.configPath, spec);
    workers.add(worker);
    return worker;
  };

  /** The put-heavy group of the kill tests: three mixed workers on own and shared keys, followed by `ledger`, ready. */
  const startMixGroup = async (store: string, ids: readonly number[], seed: number, ledger: Ledger): Promise<WorkerProcess[]> => {
    const group = ids.map((id) => spawnWorker({ mode: 'mix', store, id, seed: seed + id, ownKeys: 40, sharedKeys: 24, loops: 3, bigChance: 0.02 }));
    group.forEach((worker) => ledger.follow(worker));
    await Promise.all(group.map((worker) => worker.waitFor((fields) => fields[0] === 'ready', 'ready')));
    return group;
  };

  /**
   * Read the whole store through a fresh client: every value well-formed, written by an allowed writer,
   * never one whose put definitely failed, and never older than its owner's last acknowledged put;
   * point reads agree with the iterator, count() with the scan; then the store still takes a write.
   */
  async function verifyStore(name: string, ledger: Ledger, expect: (key: string) => Expectation | undefined): Promise<number> {
    const problems: string[] = [];
    const fresh = await ClusterClient.connect({ config: cluster.config });
    try {
      const store = await KvStore.open(fresh, name, { createIfMissing: false });
      const seen = new Map<string, Buffer>();
      const iterator = store.iterator();
      for (let entries = await iterator.nextv(64); entries.length > 0; entries = await iterator.nextv(64)) {
        for (const [key, value] of entries) seen.set(key.toString('latin1'), value!);
      }
      await iterator.close();
      for (const [key, value] of seen) {
        const expectation = expect(key);
        const check = checkValue(Buffer.from(key, 'latin1'), value);
        if (expectation === undefined) problems.push(`${key}: a key nobody wrote`);
        else if (!check.ok) problems.push(`${key}: torn value (${check.reason})`);
        else if (!expectation.writers.has(check.writer)) problems.push(`${key}: written by unknown writer ${check.writer}`);
        else if (ledger.failedForSure(key, check)) problems.push(`${key}: holds writer ${check.writer}'s seq ${check.seq}, whose put failed with a definite error`);
        else if (expectation.owner !== undefined) {
          const last = ledger.lastAck(key, expectation.owner);
          if (check.writer !== expectation.owner) problems.push(`${key}: written by ${check.writer}, but only ${expectation.owner} writes it`);
          else if (last !== undefined && check.seq < last) problems.push(`${key}: holds seq ${check.seq}, older than the acknowledged seq ${last} (lost write)`);
        }
      }
      for (const key of ledger.ackedKeys()) {
        const owner = expect(key)?.owner;
        if (owner !== undefined && ledger.lastAck(key, owner) !== undefined && !seen.has(key)) problems.push(`${key}: acknowledged seq ${ledger.lastAck(key, owner)} by ${owner}, but the key is gone`);
      }
      const keys = [...seen.keys()];
      for (let at = 0; at < keys.length; at += 50) {
        const values = await store.getMany(keys.slice(at, at + 50).map((key) => Buffer.from(key, 'latin1')));
        values.forEach((value, i) => {
          if (value === undefined || !value.equals(seen.get(keys[at + i])!)) problems.push(`${keys[at + i]}: get disagrees with the iterator`);
        });
      }
      const count = await store.count();
      if (count !== seen.size) problems.push(`count() says ${count}, the iterator saw ${seen.size}`);
      assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problem(s) in store '${name}'`);
      // A new client can still write and read the store.
      const probe = Buffer.from(`probe/${name}`);
      const value = makeValue(probe, { writer: PARENT_WRITER, seq: 1, number: 0 }, 5000);
      await store.put(probe, value);
      assert.deepEqual(await store.get(probe), value);
      await store.del(probe);
      await store.close();
      return seen.size;
    } finally {
      await fresh.close();
    }
  }

  /** Settle in-doubt transactions, stop every node, run `dpms check` on each pool, start them again. */
  async function checkPools(): Promise<void> {
    await quiesce(client);
    for (const id of cluster.nodeIds) await cluster.stopNode(id);
    for (const node of cluster.config.nodes) {
      const { code, output } = await new Promise<{ code: number; output: string }>((resolve) => {
        execFile(process.execPath, [CLI, 'check', node.pool, '--node', String(node.id)], (error, stdout, stderr) => {
          resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, output: stdout + stderr });
        });
      });
      assert.equal(code, 0, `dpms check of node ${node.id}:\n${output}`);
      assert.match(output, /: clean/);
    }
    for (const id of cluster.nodeIds) await cluster.start(id);
  }

  /** Stop workers and check that each failed only with codes the scenario allows. */
  async function stopAll(group: readonly WorkerProcess[], allowed: ReadonlySet<string>): Promise<Record<string, number>> {
    const total: Record<string, number> = {};
    for (const worker of group) assert.ok(worker.running, `worker ${worker.spec.id} died; its stderr:\n${worker.stderr}`);
    for (const report of await Promise.all(group.map((worker) => worker.stop()))) {
      assert.equal(report.finished, true, 'a worker did not finish its in-flight writes within the grace period');
      for (const [code, count] of Object.entries(report.failures)) {
        assert.ok(allowed.has(code), `unexpected failure ${code} (${count}x): ${report.firstMessages[code]}`);
        total[code] = (total[code] ?? 0) + count;
      }
    }
    return total;
  }

  before(async () => {
    cluster = await startCluster({ nodes: 3, transport: 'tcp', leaseMs: LEASE_MS, sizeMb: 128 });
    client = await ClusterClient.connect({ config: cluster.config });
  });

  after(async () => {
    await Promise.all([...workers].map((worker) => worker.kill()));
    await client?.close();
    await cluster?.stop();
  });

  it('a snapshot held by another process stays exact under overwrites; released it is reclaimed; its holder killed -9, writers go on', async () => {
    const seed = testSeed('kvs snapshot across processes');
    const random = new Random(seed);
    const name = 'snapshots';
    const prefix = 'c/';
    const keyCount = 60;
    const ledger = new Ledger();
    const kv = await KvStore.open(client, name);
    const filled = new Map<string, { seq: number; length: number }>();
    await kv.batch(Array.from({ length: keyCount }, (_, i) => {
      const key = sweepKey(prefix, i);
      const length = random.chance(0.25) ? MIN_VALUE_BYTES + random.int(90) : 1024 + random.int(15 * 1024);
      filled.set(key, { seq: i + 1, length });
      return { type: 'put' as const, key: Buffer.from(key), value: makeValue(Buffer.from(key), { writer: PARENT_WRITER, seq: i + 1, number: 0 }, length) };
    }));

    // 1. The holder pins a snapshot; a sweeper overwrites every key several times, well past the grace.
    const holder = spawnWorker({ mode: 'hold', store: name, id: 21, seed, prefix });
    await holder.waitFor((fields) => fields[0] === 'pinned', 'pinned');
    const beforeSweep = await objects(client);
    const sweeper = spawnWorker({ mode: 'sweep', store: name, id: 22, seed: seed + 1, prefix, keys: keyCount, loops: 3 });
    ledger.follow(sweeper);
    const sweepStart = Date.now();
    await until(() => ackCount(sweeper) >= keyCount * 5 && Date.now() - sweepStart > 2 * GARBAGE_GRACE_MS + 500, 'five overwrites of every key', 30_000, [holder, sweeper]);
    await stopAll([sweeper], new Set());
    const overwrites = ackCount(sweeper);
    const pinned = await objects(client);
    console.log(`# ${overwrites} overwrites under the pin: objects ${beforeSweep} -> ${pinned}`);
    // Every overwrite retired an external value the snapshot may read: the pin must keep them all.
    assert.ok(pinned - beforeSweep >= overwrites * 0.9, `the pinned snapshot's garbage was freed: objects ${beforeSweep} -> ${pinned} over ${overwrites} overwrites`);
    holder.send('scan');
    await holder.waitFor((fields) => fields[0] === 'scanned', 'scanned');
    const entries = holder.history.filter((fields) => fields[0] === 'entry');
    assert.equal(entries.length, keyCount, 'the snapshot sees every key once');
    for (const [, key, writer, seq, , length] of entries) {
      const expected = filled.get(key);
      assert.ok(expected, `the snapshot shows ${key}`);
      assert.notEqual(writer, 'bad', `${key}: torn value in the snapshot (${seq})`);
      assert.deepEqual([Number(writer), Number(seq), Number(length)], [PARENT_WRITER, expected.seq, expected.length], `${key}: the snapshot must show the value it was taken with`);
    }

    // 2. Released (by the other process), the garbage goes with the next commits after the grace.
    holder.send('release');
    await holder.waitFor((fields) => fields[0] === 'released', 'released');
    await sleep(GARBAGE_GRACE_MS + 200);
    const released = await reclaimWith(client, kv, beforeSweep);
    assert.ok(released <= beforeSweep + (pinned - beforeSweep) * 0.2, `released garbage was not reclaimed: objects ${beforeSweep} -> ${pinned} pinned -> ${released} released`);

    // 3. Pinned again and killed -9 mid-run: the writer goes on; the dead pin holds garbage until its lease ends.
    holder.send('pin');
    await holder.waitFor(() => holder.history.filter((fields) => fields[0] === 'pinned').length === 2, 'pinned again');
    const atPin = await objects(client);
    const writer = spawnWorker({ mode: 'sweep', store: name, id: 23, seed: seed + 2, prefix, keys: keyCount, loops: 3 });
    ledger.follow(writer);
    await sleep(500 + random.int(1000));
    await holder.kill();
    const killedAtMs = Date.now();
    const acksAtKill = ackCount(writer);
    await until(() => ackCount(writer) >= acksAtKill + 2 * keyCount && Date.now() - killedAtMs > GARBAGE_GRACE_MS + 500, 'writes after the holder was killed', 20_000, [writer]);
    await stopAll([writer], new Set());
    await kv.put(Buffer.from('tick'), makeValue(Buffer.from('tick'), { writer: PARENT_WRITER, seq: 9, number: 0 }, 40));
    const retained = (await objects(client)) - atPin;
    assert.ok(retained >= ackCount(writer) * 0.9, `garbage under the dead holder's pin was freed before its lease ended: ${retained} objects kept over ${ackCount(writer)} overwrites`);
    deadPin = { store: name, killedAtMs, retained };
    await kv.close();

    const keys = await verifyStore(name, ledger, (key) => {
      if (key === 'tick') return { writers: new Set([PARENT_WRITER]) };
      if (!key.startsWith(prefix)) return undefined;
      return { writers: new Set([PARENT_WRITER, 22, 23]), owner: ledger.lastAck(key, 23) !== undefined ? 23 : undefined };
    });
    assert.equal(keys, keyCount + 1);
    await checkPools();
  });

  it('a client killed -9 during a put-heavy load: acknowledged puts survive, nothing is torn, the others go on, pools check clean', async () => {
    const seed = testSeed('kvs client kill');
    const random = new Random(seed);
    const name = 'client-kill';
    const ledger = new Ledger();
    const ids = [1, 2, 3];
    const group = await startMixGroup(name, ids, seed, ledger);
    await sleep(1500 + random.int(2500));
    const victim = group[random.int(group.length)];
    await victim.kill();
    console.log(`# killed worker ${victim.spec.id} after ${ackCount(victim)} acknowledged puts`);
    const survivors = group.filter((worker) => worker !== victim);
    const atKill = survivors.map(ackCount);
    // The dead client's locks and logs are settled when its lease ends; the others must get past them.
    await until(() => survivors.every((worker, i) => ackCount(worker) >= atKill[i] + 20), 'the survivors to make progress', 20_000, survivors);
    await sleep(1000);
    const failures = await stopAll(survivors, new Set());
    console.log(`# client kill: ${ledger.acks} acknowledged puts, failures ${JSON.stringify(failures)}`);
    const keys = await verifyStore(name, ledger, (key) => {
      const own = /^w(\d+)\//.exec(key);
      if (own) return ids.includes(Number(own[1])) ? { writers: new Set([Number(own[1])]), owner: Number(own[1]) } : undefined;
      return key.startsWith('s/') ? { writers: new Set(ids) } : undefined;
    });
    assert.ok(keys > 40, `the workload wrote the store (${keys} keys)`);
    await checkPools();
  });

  it('nodes killed -9 during a put-heavy load and restarted: acknowledged puts survive, nothing is torn, writers recover, pools check clean', async () => {
    const seed = testSeed('kvs node kill');
    const random = new Random(seed);
    const name = 'node-kill';
    const ledger = new Ledger();
    const ids = [11, 12, 13];
    const group = await startMixGroup(name, ids, seed, ledger);
    // Two rounds, each on a node picked by the seed: a kill at a random moment, a random outage, a restart.
    for (let round = 0; round < 2; round++) {
      await sleep(1000 + random.int(1500));
      const victim = random.pick(cluster.nodeIds);
      await cluster.kill(victim);
      const downMs = 500 + random.int(1000);
      console.log(`# round ${round}: killed node ${victim} after ${ledger.acks} acknowledged puts; down for ${downMs} ms`);
      await sleep(downMs);
      await cluster.start(victim);
      const atRestart = group.map(ackCount);
      await until(() => group.every((worker, i) => ackCount(worker) >= atRestart[i] + 20), 'every worker to make progress after the restart', 30_000, group)
        .catch((error: Error) => {
          const states = group.map((worker, i) => `worker ${worker.spec.id}: ${ackCount(worker) - atRestart[i]} acks since the restart, last lines ${JSON.stringify(worker.history.slice(-3).map((fields) => fields.join(' ')))}`);
          throw new Error(`${error.message}\n${states.join('\n')}\nnode ${victim} output:\n${cluster.output(victim).slice(-2000)}`);
        });
    }
    await sleep(1000);
    const failures = await stopAll(group, NODE_LOSS_CODES);
    console.log(`# node kill: ${ledger.acks} acknowledged puts, failures ${JSON.stringify(failures)}`);
    const keys = await verifyStore(name, ledger, (key) => {
      const own = /^w(\d+)\//.exec(key);
      if (own) return ids.includes(Number(own[1])) ? { writers: new Set([Number(own[1])]), owner: Number(own[1]) } : undefined;
      return key.startsWith('s/') ? { writers: new Set(ids) } : undefined;
    });
    assert.ok(keys > 40, `the workload wrote the store (${keys} keys)`);
    await checkPools();
  });

  it('garbage pinned by the killed holder is reclaimed once its pin lease runs out', async (t) => {
    if (!deadPin) return t.skip('the snapshot test did not get as far as killing the holder');
    // The other tests ran meanwhile; wait for what is left of the lease (renewed at most until the kill).
    const waitMs = deadPin.killedAtMs + PIN_LEASE_MS + GARBAGE_GRACE_MS - Date.now();
    console.log(`# waiting ${Math.max(0, waitMs)} ms more for the dead holder's pin lease`);
    if (waitMs > 0) await sleep(waitMs);
    const kv = await KvStore.open(client, deadPin.store, { createIfMissing: false });
    const before = await objects(client);
    const afterReclaim = await reclaimWith(client, kv, before - deadPin.retained);
    assert.ok(before - afterReclaim >= deadPin.retained * 0.8, `the dead pin's garbage was not reclaimed: objects ${before} -> ${afterReclaim}, ${deadPin.retained} held`);
    await kv.close();
  });
});
