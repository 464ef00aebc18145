// Proves KvStore's contract on a real cluster: point operations, limits with typed errors, atomic
// batches, read-modify-write, ranges and snapshots, large keys and values, reclamation of old
// versions, and a model-based randomized run against an in-memory ordered map (seed printed).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ClusterClient } from '../../pdsm';
import { KEEP, KV_LIMITS, KvStore, type KvRange } from '../../kvs';
import { startCluster, type TestCluster } from '../support/cluster';
import { code } from '../support/errors';
import { Random, testSeed } from '../support/random';

const b = (text: string): Buffer => Buffer.from(text);

/** Every entry of a range, through nextv in small steps. */
async function scan(store: KvStore, range: KvRange & { values?: boolean } = {}): Promise<Array<[string, string | undefined]>> {
  const iterator = store.iterator(range);
  const out: Array<[string, string | undefined]> = [];
  try {
    for (let entries = await iterator.nextv(7); entries.length > 0; entries = await iterator.nextv(7)) {
      for (const [key, value] of entries) out.push([key.toString('latin1'), value?.toString('latin1')]);
    }
  } finally {
    await iterator.close();
  }
  return out;
}

for (const transport of ['local', 'tcp'] as const) {
  describe(`KvStore over ${transport}`, () => {
    let cluster: TestCluster;
    let client: ClusterClient;
    let serial = 0;
    const fresh = (): Promise<KvStore> => KvStore.open(client, `s${serial++}`);

    before(async () => {
      cluster = await startCluster({ nodes: transport === 'tcp' ? 3 : 1, transport, sizeMb: 64 });
      client = await ClusterClient.connect({ config: cluster.config });
    });
    after(async () => {
      await client?.close();
      await cluster?.stop();
    });

    test('put, get, has, del, count and overwrite', async () => {
      const store = await fresh();
      assert.equal(await store.get(b('missing')), undefined);
      await store.put(b('a'), b('1'));
      await store.put(b('b'), Buffer.alloc(0));
      assert.deepEqual(await store.get(b('a')), b('1'));
      assert.deepEqual(await store.get(b('b')), Buffer.alloc(0));
      assert.equal(await store.has(b('b')), true);
      assert.equal(await store.count(), 2);
      await store.put(b('a'), b('2'));
      assert.deepEqual(await store.get(b('a')), b('2'));
      await store.del(b('a'));
      await store.del(b('never there'));
      assert.equal(await store.get(b('a')), undefined);
      assert.equal(await store.has(b('a')), false);
      assert.equal(await store.count(), 1);
      assert.deepEqual(await store.getMany([b('a'), b('b'), b('c')]), [undefined, Buffer.alloc(0), undefined]);
      await store.close();
      await assert.rejects(store.get(b('a')), code('DPMS_CLOSED'));
    });

    test('limits are typed errors; the largest key and a 1-MiB value round-trip', async () => {
      const store = await fresh();
      await assert.rejects(store.put(Buffer.alloc(0), b('x')), code('DPMS_INVALID_ARGUMENT'));
      await assert.rejects(store.put(Buffer.alloc(KV_LIMITS.maxKeyBytes + 1, 1), b('x')), code('DPMS_KEY_TOO_LARGE'));
      await assert.rejects(store.get(Buffer.alloc(KV_LIMITS.maxKeyBytes + 1, 1)), code('DPMS_KEY_TOO_LARGE'));
      await assert.rejects(store.put(b('k'), Buffer.alloc(KV_LIMITS.maxValueBytes + 1)), code('DPMS_VALUE_TOO_LARGE'));
      await assert.rejects(store.put('text' as unknown as Buffer, b('x')), code('DPMS_INVALID_ARGUMENT'));
      await assert.rejects(store.batch([{ type: 'nope' } as never]), code('DPMS_INVALID_ARGUMENT'));
      const bigKey = Buffer.alloc(KV_LIMITS.maxKeyBytes, 0x6b);
      const bigValue = new Random(7).bytes(1024 * 1024);
      await store.put(bigKey, bigValue);
      assert.deepEqual(await store.get(bigKey), bigValue);
      // Many large keys force splits of nodes whose entries are each ~2 KiB.
      for (let i = 0; i < 20; i++) await store.put(Buffer.concat([Buffer.alloc(KV_LIMITS.maxKeyBytes - 2, 0x61), Buffer.from([i, 0])]), b(`v${i}`));
      assert.equal((await scan(store, { lt: bigKey })).length, 20);
      assert.equal(await store.count(), 21);
      await store.close();
    });

    test('a batch is all or nothing, and a failing update fails only itself', async () => {
      const store = await fresh();
      await store.batch([{ type: 'put', key: b('x'), value: b('1') }, { type: 'put', key: b('y'), value: b('2') }, { type: 'del', key: b('x') }]);
      assert.deepEqual(await scan(store), [['y', '2']]);
      await assert.rejects(store.batch([{ type: 'put', key: b('z'), value: b('3') }, { type: 'put', key: Buffer.alloc(0), value: b('4') }]), code('DPMS_INVALID_ARGUMENT'));
      assert.equal(await store.get(b('z')), undefined);
      const increment = (current: Buffer | undefined): Buffer => b(String(Number(current?.toString() ?? '0') + 1));
      const results = await Promise.allSettled([
        store.update(b('n'), increment),
        store.update(b('n'), () => { throw new Error('not a number'); }),
        store.update(b('n'), increment),
        store.update(b('n'), () => KEEP),
        store.update(b('big'), () => Buffer.alloc(KV_LIMITS.maxValueBytes + 1)),
        store.update(b('text'), () => 'not bytes' as unknown as Buffer),
      ]);
      assert.deepEqual(results.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'rejected', 'rejected']);
      assert.equal((results[4] as PromiseRejectedResult).reason.code, 'DPMS_VALUE_TOO_LARGE');
      assert.deepEqual(await store.get(b('n')), b('2'));
      assert.deepEqual(await store.update(b('n'), () => undefined), undefined);
      assert.equal(await store.has(b('n')), false);
      await store.close();
    });

    test('iterators: bounds, reverse, limit, seek, keys only, and an implicit snapshot', async () => {
      const store = await fresh();
      const keys = Array.from({ length: 300 }, (_, i) => `k${String(i).padStart(4, '0')}`);
      await store.batch(keys.map((key) => ({ type: 'put' as const, key: b(key), value: b(key.toUpperCase()) })));
      assert.deepEqual((await scan(store)).map(([key]) => key), keys);
      assert.deepEqual((await scan(store, { gt: b('k0010'), lte: b('k0013') })).map(([key]) => key), ['k0011', 'k0012', 'k0013']);
      assert.deepEqual((await scan(store, { gte: b('k0010'), lt: b('k0013'), reverse: true })).map(([key]) => key), ['k0012', 'k0011', 'k0010']);
      assert.deepEqual((await scan(store, { reverse: true, limit: 2 })).map(([key]) => key), ['k0299', 'k0298']);
      assert.deepEqual(await scan(store, { gte: b('k0100'), limit: 1, values: false }), [['k0100', undefined]]);
      assert.deepEqual(await scan(store, { gt: b('z') }), []);
      // Two bounds on one side: both hold (the stricter wins), in iterators and in clear alike.
      assert.deepEqual((await scan(store, { gte: b('k0001'), gt: b('k0297') })).map(([key]) => key), ['k0298', 'k0299']);
      assert.deepEqual((await scan(store, { lte: b('k0005'), lt: b('k0002'), reverse: true })).map(([key]) => key), ['k0001', 'k0000']);
      const iterator = store.iterator({ gte: b('k0100') });
      iterator.seek(b('k0200'));
      assert.deepEqual((await iterator.next())?.[0], b('k0200'));
      iterator.seek(b('k0000')); // before the range: clamps to the lower bound
      assert.deepEqual((await iterator.next())?.[0], b('k0100'));
      await iterator.close();
      // An iterator sees the store as of its creation, however long it lives.
      const old = store.iterator({});
      await store.clear({ gte: b('k0100') });
      await store.put(b('k0000'), b('changed'));
      const seen = [];
      for (let entries = await old.nextv(50); entries.length > 0; entries = await old.nextv(50)) seen.push(...entries);
      await old.close();
      assert.equal(seen.length, 300);
      assert.deepEqual(seen[0][1], b('K0000'));
      assert.equal(await store.count(), 100);
      const explicit = await store.snapshot();
      await store.del(b('k0000'));
      assert.deepEqual(await store.get(b('k0000'), { snapshot: explicit }), b('changed'));
      assert.equal(await store.get(b('k0000')), undefined);
      await explicit.release();
      await assert.rejects(store.get(b('k0000'), { snapshot: explicit }), code('DPMS_INVALID_ARGUMENT'));
      await store.close();
    });

    test('stores are named and independent; open options', async () => {
      const name = `named-${serial++}`;
      await assert.rejects(KvStore.open(client, name, { createIfMissing: false }), code('DPMS_NOT_FOUND'));
      const one = await KvStore.open(client, name);
      await assert.rejects(KvStore.open(client, name, { errorIfExists: true }), code('DPMS_EXISTS'));
      const other = await fresh();
      await one.put(b('k'), b('one'));
      assert.equal(await other.get(b('k')), undefined);
      const again = await KvStore.open(client, name, { createIfMissing: false });
      assert.deepEqual(await again.get(b('k')), b('one'));
      assert.ok((await KvStore.list(client)).includes(name));
      await Promise.all([one.close(), other.close(), again.close()]);
    });

    test('old versions are reclaimed: overwrites do not grow the pool', async () => {
      const store = await fresh();
      const objects = async (): Promise<number> => (await client.status()).reduce((sum, entry) => sum + (entry.status?.objects ?? 0), 0);
      const value = Buffer.alloc(2000, 1);
      for (let round = 0; round < 5; round++) await Promise.all(Array.from({ length: 50 }, (_, i) => store.put(b(`key${i}`), value)));
      const first = await objects();
      for (let round = 0; round < 3; round++) {
        await new Promise((resolve) => setTimeout(resolve, 1100));
        for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 50 }, (_, k) => store.put(b(`key${k}`), value)));
      }
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await store.put(b('key0'), value);
      const last = await objects();
      assert.ok(last <= first + 120, `objects grew from ${first} to ${last} over 1,500 overwrites`);
      await store.close();
    });

    test('model-based: random operations agree with an in-memory ordered map', async () => {
      const seed = testSeed(`kvs model (${transport})`);
      const random = new Random(seed);
      const store = await fresh();
      const model = new Map<string, Buffer>();
      const randomKey = (): Buffer => b(`key${random.int(400)}`).subarray(0, 3 + random.int(4));
      const randomValue = (): Buffer => random.bytes(random.chance(0.2) ? 200 + random.int(3000) : random.int(40));
      const sorted = (): string[] => [...model.keys()].sort((x, y) => Buffer.compare(Buffer.from(x, 'latin1'), Buffer.from(y, 'latin1')));
      const steps = transport === 'tcp' ? 300 : 600;
      for (let step = 0; step < steps; step++) {
        const choice = random.int(100);
        if (choice < 40) {
          // Several concurrent puts and dels: they may land in one group commit.
          const ops = Array.from({ length: 1 + random.int(8) }, () => (random.chance(0.75)
            ? { type: 'put' as const, key: randomKey(), value: randomValue() } : { type: 'del' as const, key: randomKey() }));
          await Promise.all(ops.map((op) => (op.type === 'put' ? store.put(op.key, op.value) : store.del(op.key))));
          for (const op of ops) {
            if (op.type === 'put') model.set(op.key.toString('latin1'), op.value);
            else model.delete(op.key.toString('latin1'));
          }
        } else if (choice < 55) {
          const ops = Array.from({ length: 1 + random.int(30) }, () => (random.chance(0.7)
            ? { type: 'put' as const, key: randomKey(), value: randomValue() } : { type: 'del' as const, key: randomKey() }));
          await store.batch(ops);
          for (const op of ops) {
            if (op.type === 'put') model.set(op.key.toString('latin1'), op.value);
            else model.delete(op.key.toString('latin1'));
          }
        } else if (choice < 60) {
          const from = randomKey();
          const to = randomKey();
          const range = { gte: Buffer.compare(from, to) < 0 ? from : to, lt: Buffer.compare(from, to) < 0 ? to : from, limit: random.chance(0.5) ? random.int(20) : -1 };
          const removed = await store.clear(range);
          const doomed = sorted().filter((key) => Buffer.compare(Buffer.from(key, 'latin1'), range.gte) >= 0 && Buffer.compare(Buffer.from(key, 'latin1'), range.lt) < 0)
            .slice(0, range.limit < 0 ? undefined : range.limit);
          assert.equal(removed, doomed.length, `step ${step}: clear count`);
          for (const key of doomed) model.delete(key);
        } else if (choice < 80) {
          const key = randomKey();
          assert.deepEqual(await store.get(key), model.get(key.toString('latin1')), `step ${step}: get ${key.toString('latin1')}`);
        } else {
          const bounds: Record<string, Buffer> = {};
          if (random.chance(0.5)) bounds[random.pick(['gt', 'gte'])] = randomKey();
          if (random.chance(0.5)) bounds[random.pick(['lt', 'lte'])] = randomKey();
          const reverse = random.chance(0.4);
          const limit = random.chance(0.3) ? random.int(15) : -1;
          const inRange = (key: string): boolean => {
            const k = Buffer.from(key, 'latin1');
            return (!bounds.gt || Buffer.compare(k, bounds.gt) > 0) && (!bounds.gte || Buffer.compare(k, bounds.gte) >= 0)
              && (!bounds.lt || Buffer.compare(k, bounds.lt) < 0) && (!bounds.lte || Buffer.compare(k, bounds.lte) <= 0);
          };
          let expected = sorted().filter(inRange);
          if (reverse) expected.reverse();
          if (limit >= 0) expected = expected.slice(0, limit);
          const actual = await scan(store, { ...bounds, reverse, limit });
          assert.deepEqual(actual, expected.map((key) => [key, model.get(key)!.toString('latin1')]), `step ${step}: scan ${JSON.stringify({ bounds: Object.fromEntries(Object.entries(bounds).map(([k, v]) => [k, v.toString()])), reverse, limit })}`);
        }
        if (step % 50 === 0) assert.equal(await store.count(), model.size, `step ${step}: count`);
      }
      assert.equal(await store.count(), model.size);
      await store.close();
    });
  });
}
