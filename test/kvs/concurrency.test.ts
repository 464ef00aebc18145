// Proves that four client processes sharing one KvStore agree, over tcp and over the local transport:
// a write one process acknowledged is seen (or a newer one) by a read another process starts after
// that; store.update from four processes loses no increment (the counter ends at exactly 4N, every
// versioned key at the number of updates acknowledged on it); and atomic batches that move money
// between accounts keep the total in every snapshot an iterator reads while they run. Seeds printed.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KvStore } from '../../kvs';
import { ClusterClient } from '../../pdsm';
import { startCluster, type TestCluster } from '../support/cluster';
import { Random, testSeed } from '../support/random';
import { ACCOUNT_RANGE, accountKey, checkValue, COUNTER_KEY, makeValue, PARENT_WRITER, WorkerProcess } from './kv-worker';

const PEERS = 4;
const INCREMENTS = 200;
const ACCOUNTS = 6;
const INITIAL_BALANCE = 1000;
const VERSIONED_KEYS = 8;
const OWN_KEYS = 20;
/** Enough of each kind of observation for the run to mean something. */
const MIN_READS = 60;
const MIN_AUDITS = 12;
const MIN_TRANSFERS = 40;

/** The last write a worker acknowledged, as the parent learned it. */
type Acknowledged = { readonly kind: 'put'; readonly key: string; readonly seq: number } | { readonly kind: 'update'; readonly key: string; readonly number: number };

for (const transport of ['tcp', 'local'] as const) {
  describe(`four KvStore clients in four processes over ${transport}`, () => {
    let cluster: TestCluster;
    let client: ClusterClient;
    const workers: WorkerProcess[] = [];

    before(async () => {
      cluster = await startCluster({ nodes: 3, transport, leaseMs: 1500, sizeMb: 64 });
      client = await ClusterClient.connect({ config: cluster.config });
    });

    after(async () => {
      await Promise.all(workers.map((worker) => worker.kill()));
      await client?.close();
      await cluster?.stop();
    });

    it('acknowledged writes are visible to the other processes, update counters are exact, batches keep the sum in every snapshot', async () => {
      const seed = testSeed(`kvs four clients (${transport})`);
      const random = new Random(seed);
      const name = 'peers';
      const store = await KvStore.open(client, name);
      const accounts: Buffer[] = [];
      for (let owner = 1; owner <= PEERS; owner++) for (let i = 0; i < ACCOUNTS; i++) accounts.push(Buffer.from(accountKey(i, owner)));
      await store.batch(accounts.map((key, i) => ({ type: 'put' as const, key, value: makeValue(key, { writer: PARENT_WRITER, seq: i + 1, number: INITIAL_BALANCE }, 60) })));
      const total = PEERS * ACCOUNTS * INITIAL_BALANCE;

      const problems: string[] = [];
      const latest = new Map<number, Acknowledged>();
      const pending = new Map<number, { writer: number; write: Acknowledged }>();
      const updateNumbers = new Map<string, number[]>();
      let reads = 0;
      let audits = 0;
      let transfers = 0;
      let counted = 0;
      for (let id = 1; id <= PEERS; id++) {
        const worker = new WorkerProcess(cluster.configPath, {
          mode: 'peer', store: name, id, seed: seed + id, ownKeys: OWN_KEYS, versionedKeys: VERSIONED_KEYS, increments: INCREMENTS, accounts: ACCOUNTS,
        });
        workers.push(worker);
        worker.onLine((fields) => {
          const [kind, key] = fields;
          if (kind === 'ack') {
            latest.set(id, { kind: 'put', key, seq: Number(fields[2]) });
          } else if (kind === 'upd') {
            if (fields[2] === 'bad') problems.push(`worker ${id}: update of ${key} returned a malformed value (${fields[3]})`);
            latest.set(id, { kind: 'update', key, number: Number(fields[2]) });
            const numbers = updateNumbers.get(key) ?? [];
            numbers.push(Number(fields[2]));
            updateNumbers.set(key, numbers);
          } else if (kind === 'read') {
            const request = pending.get(id);
            pending.delete(id);
            if (!request || request.write.key !== key) {
              problems.push(`worker ${id}: an unrequested read reply ${fields.join(' ')}`);
              return;
            }
            reads++;
            const [, , writerText, seqText, numberText] = fields;
            const what = `worker ${id} read ${key} after worker ${request.writer} acknowledged ${JSON.stringify(request.write)}: got ${fields.slice(2).join(' ')}`;
            if (writerText === 'none' || writerText === 'bad' || writerText === 'error') {
              problems.push(what);
            } else if (request.write.kind === 'put' && (Number(writerText) !== request.writer || Number(seqText) < request.write.seq)) {
              problems.push(`${what} (an older value)`);
            } else if (request.write.kind === 'update' && Number(numberText) < request.write.number) {
              problems.push(`${what} (an older version)`);
            }
          } else if (kind === 'audit') {
            audits++;
            const [, sum, entries, bad] = fields.map(Number);
            if (sum !== total || entries !== accounts.length || bad !== 0) {
              problems.push(`worker ${id}: a snapshot shows ${entries} accounts summing to ${sum} (${bad} malformed); expected ${accounts.length} summing to ${total}`);
            }
          } else if (kind === 'xfer') {
            transfers++;
          } else if (kind === 'counted') {
            counted++;
          }
        });
      }
      await Promise.all(workers.map((worker) => worker.waitFor((fields) => fields[0] === 'ready', 'ready')));

      // Route reads: an idle worker reads the key another worker last acknowledged. The parent learned of
      // that acknowledgment before it sends the read, so the write precedes the read in real time.
      const deadline = Date.now() + 45_000;
      while (counted < 2 * PEERS || reads < MIN_READS || audits < MIN_AUDITS || transfers < MIN_TRANSFERS) {
        assert.ok(Date.now() < deadline, `the run did not finish in time: ${counted}/${2 * PEERS} counter loops, ${reads} reads, ${audits} audits, ${transfers} transfers`);
        for (let id = 1; id <= PEERS; id++) {
          if (pending.has(id)) continue;
          const writers = [...latest.keys()].filter((writer) => writer !== id);
          if (writers.length === 0) continue;
          const writer = random.pick(writers);
          const write = latest.get(writer)!;
          pending.set(id, { writer, write });
          workers[id - 1].send(`read ${write.key}`);
        }
        await sleep(5);
      }
      const reports = await Promise.all(workers.map((worker) => worker.stop()));
      for (const [i, report] of reports.entries()) {
        assert.deepEqual(report.failures, {}, `worker ${i + 1} had failures: ${JSON.stringify(report.firstMessages)}`);
      }
      console.log(`# ${transport}: ${reads} cross-process reads, ${audits} audits, ${transfers} transfers, ${[...updateNumbers.values()].reduce((sum, numbers) => sum + numbers.length, 0)} versioned updates`);
      assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problem(s)`);

      // Exact counters: the shared counter, and every versioned key (each acknowledged update added one).
      const counter = await store.get(Buffer.from(COUNTER_KEY));
      assert.ok(counter, 'the counter exists');
      const counterCheck = checkValue(Buffer.from(COUNTER_KEY), counter);
      assert.ok(counterCheck.ok, 'the counter value is well-formed');
      assert.equal(counterCheck.number, PEERS * INCREMENTS, 'no increment was lost or doubled');
      for (const [key, numbers] of updateNumbers) {
        const value = await store.get(Buffer.from(key));
        const check = checkValue(Buffer.from(key), value ?? Buffer.alloc(0));
        assert.ok(check.ok, `${key} is well-formed`);
        assert.deepEqual([...numbers].sort((a, b) => a - b), Array.from({ length: numbers.length }, (_, i) => i + 1), `${key}: each update saw the one before it`);
        assert.equal(check.number, numbers.length, `${key}: final number = updates acknowledged on it`);
      }
      // Each worker moved money only among its own accounts: every owner still holds its initial total.
      const owned = new Map<string, number>();
      const iterator = store.iterator(ACCOUNT_RANGE);
      for (let entries = await iterator.nextv(100); entries.length > 0; entries = await iterator.nextv(100)) {
        for (const [key, value] of entries) {
          const check = checkValue(key, value!);
          assert.ok(check.ok, `${key.toString()} is well-formed`);
          const owner = key.toString().split('/')[2];
          owned.set(owner, (owned.get(owner) ?? 0) + check.number);
        }
      }
      await iterator.close();
      assert.deepEqual(Object.fromEntries(owned), Object.fromEntries(Array.from({ length: PEERS }, (_, i) => [String(i + 1), ACCOUNTS * INITIAL_BALANCE])));
      await store.close();
    });
  });
}
