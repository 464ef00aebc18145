// Proves the YCSB generators of `dpms bench kv` behave as YCSB's do: Zipfian ranks stay within their
// bounds with rank 0 the most frequent and frequencies falling with rank; the scrambled generator's
// keys stay within the key space and its most frequent key is where rank 0 hashes; FNV-1a-64 matches a
// bigint reference; everything is deterministic for a seed; workload mixes and acknowledged inserts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  fnvHash64, keyName, MAX_SCAN_LENGTH, OperationGenerator, ScrambledZipfianGenerator, SeededRandom, WORKLOAD_MIXES, ZipfianGenerator,
} from '../../scripts/commands/ycsb';

/** YCSB's Utils.fnvhash64, straight from its Java in 64-bit bigint arithmetic. */
function referenceFnv(value: number): bigint {
  let hash = 0xcbf29ce484222325n;
  let rest = BigInt(value);
  for (let i = 0; i < 8; i++) {
    hash ^= rest & 0xffn;
    rest >>= 8n;
    hash = BigInt.asUintN(64, hash * 1099511628211n);
  }
  const signed = BigInt.asIntN(64, hash);
  return signed < 0n ? -signed : signed;
}

test('fnvHash64 matches the 64-bit reference for small, large and random inputs', () => {
  const random = new SeededRandom(7);
  const inputs = [0, 1, 255, 256, 65_535, 2 ** 32 - 1, 2 ** 32, 10_000_000_000, Number.MAX_SAFE_INTEGER];
  for (let i = 0; i < 2000; i++) inputs.push(Math.floor(random.nextDouble() * 2 ** 53));
  for (const input of inputs) assert.equal(fnvHash64(input), referenceFnv(input), `fnvHash64(${input})`);
  assert.ok(inputs.some((input) => referenceFnv(input) > 2n ** 62n), 'the inputs include hashes beyond a double\'s exact range');
});

test('Zipfian ranks stay in [0, items), rank 0 is the most frequent, and frequency falls with rank', () => {
  const items = 1000;
  const zipfian = new ZipfianGenerator(items, new SeededRandom(42));
  const counts = new Array<number>(items).fill(0);
  const draws = 200_000;
  for (let i = 0; i < draws; i++) {
    const rank = zipfian.next();
    assert.ok(Number.isInteger(rank) && rank >= 0 && rank < items, `rank ${rank} out of bounds`);
    counts[rank]++;
  }
  const top = counts.indexOf(Math.max(...counts));
  assert.equal(top, 0, `the most frequent rank is ${top}`);
  assert.ok(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500], `counts ${counts[0]}, ${counts[1]}, ${counts[10]}, ${counts[500]}`);
  // Zipf with theta 0.99 over 1000 items: rank 0 takes 1/zeta(1000) of the draws, about 13%.
  const share = counts[0] / draws;
  assert.ok(share > 0.11 && share < 0.15, `rank 0 share ${share}`);
});

test('the scrambled Zipfian stays in the key space and its most frequent key is where rank 0 hashes', () => {
  const count = 5000;
  const scrambled = new ScrambledZipfianGenerator(count, new SeededRandom(3));
  const counts = new Map<number, number>();
  for (let i = 0; i < 100_000; i++) {
    const key = scrambled.next();
    assert.ok(Number.isInteger(key) && key >= 0 && key < count, `key ${key} out of bounds`);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const [topKey] = [...counts].reduce((best, entry) => (entry[1] > best[1] ? entry : best));
  assert.equal(topKey, scrambled.mostPopular());
  assert.equal(scrambled.mostPopular(), Number(referenceFnv(0) % BigInt(count)));
  assert.ok(counts.size > count / 4, `only ${counts.size} distinct keys drawn: not scattered`);
});

test('generators are deterministic with a seed and differ between seeds', () => {
  const draw = (seed: number): number[] => {
    const generator = new ScrambledZipfianGenerator(100_000, new SeededRandom(seed));
    return Array.from({ length: 500 }, () => generator.next());
  };
  assert.deepEqual(draw(11), draw(11));
  assert.notDeepEqual(draw(11), draw(12));
  const operations = (seed: number) => {
    const generator = new OperationGenerator(WORKLOAD_MIXES.e, 1000, seed, 1000);
    return Array.from({ length: 300 }, () => generator.next());
  };
  assert.deepEqual(operations(5), operations(5));
});

test('keys are YCSB\'s "user" + the hashed record number, zero-padded to one length', () => {
  assert.equal(keyName(0), `user${referenceFnv(0).toString().padStart(19, '0')}`);
  const lengths = new Set(Array.from({ length: 1000 }, (_, i) => keyName(i).length));
  assert.deepEqual([...lengths], [23]);
  assert.notEqual(keyName(1), keyName(2));
});

test('workload mixes come out in their proportions; E scans 1..100 and inserts only new, acknowledged records', () => {
  const records = 10_000;
  const a = new OperationGenerator(WORKLOAD_MIXES.a, records, 1, 20_000);
  let reads = 0;
  for (let i = 0; i < 20_000; i++) {
    const operation = a.next();
    assert.ok(operation.type === 'read' || operation.type === 'update');
    assert.ok(operation.record < records);
    if (operation.type === 'read') reads++;
  }
  assert.ok(Math.abs(reads / 20_000 - 0.5) < 0.02, `A read share ${reads / 20_000}`);
  const c = new OperationGenerator(WORKLOAD_MIXES.c, records, 1, 1000);
  for (let i = 0; i < 1000; i++) assert.equal(c.next().type, 'read');

  const e = new OperationGenerator(WORKLOAD_MIXES.e, records, 9, 20_000);
  const inserted: number[] = [];
  let scans = 0;
  const lengths = new Set<number>();
  for (let i = 0; i < 20_000; i++) {
    const operation = e.next();
    if (operation.type === 'insert') {
      assert.equal(operation.record, records + inserted.length, 'inserts take the next record numbers');
      inserted.push(operation.record);
      continue;
    }
    assert.equal(operation.type, 'scan');
    scans++;
    if (operation.type === 'scan') {
      assert.ok(operation.length >= 1 && operation.length <= MAX_SCAN_LENGTH);
      lengths.add(operation.length);
    }
    assert.ok(operation.record < e.recordCount(), 'a scan starts at an existing record');
  }
  assert.ok(Math.abs(scans / 20_000 - 0.95) < 0.01, `E scan share ${scans / 20_000}`);
  assert.equal(lengths.size, MAX_SCAN_LENGTH, 'every scan length 1..100 occurs');
  // Nothing acknowledged yet: only loaded records are chosen. Acknowledge out of order.
  assert.equal(e.recordCount(), records);
  e.acknowledge(inserted[1]);
  assert.equal(e.recordCount(), records, 'a gap keeps later inserts unchosen');
  e.acknowledge(inserted[0]);
  assert.equal(e.recordCount(), records + 2);
});

test('invalid generator arguments are typed errors', () => {
  assert.throws(() => new SeededRandom(-1), { code: 'DPMS_INVALID_ARGUMENT' });
  assert.throws(() => new ZipfianGenerator(1, new SeededRandom(1)), { code: 'DPMS_INVALID_ARGUMENT' });
  assert.throws(() => new ScrambledZipfianGenerator(0, new SeededRandom(1)), { code: 'DPMS_INVALID_ARGUMENT' });
  assert.throws(() => fnvHash64(-5), { code: 'DPMS_INVALID_ARGUMENT' });
});
