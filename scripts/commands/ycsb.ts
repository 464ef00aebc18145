// The YCSB core workloads' request generators, written by hand after YCSB's Java sources (there is no
// maintained npm package): a seeded random source, ZipfianGenerator (Gray et al., "Quickly Generating
// Billion-Record Synthetic Databases"), ScrambledZipfianGenerator (a Zipfian draw over 10^10 items,
// FNV-1a-64 hashed onto the key space, so the popular keys are scattered instead of clustered), YCSB's
// key names ("user" + the FNV-hashed record number), and the operation mixes of workloads A, B, C and
// E. `dpms bench kv` (bench-kv.ts) drives its targets with these; every target gets the same sequence
// for the same seed, so rows differ only in the store.

import { DpmsError } from '../../pdsm';

/** Deterministic random doubles in [0, 1) from a 32-bit seed (sfc32; 53-bit doubles from two draws). */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) throw new DpmsError('DPMS_INVALID_ARGUMENT', `seed ${seed} must be an integer from 0 to 2^32-1`);
    this.a = 0x9e37_79b9;
    this.b = 0x243f_6a88;
    this.c = seed >>> 0;
    // Mix the seed in before the first draw, as sfc32's authors recommend.
    for (let i = 0; i < 15; i++) this.next32();
  }

  next32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A double in [0, 1) with 53 random bits (the Zipfian tail needs more than 32). */
  nextDouble(): number {
    return ((this.next32() >>> 5) * 67_108_864 + (this.next32() >>> 6)) / 9_007_199_254_740_992;
  }

  /** An integer in [low, high], both inclusive. */
  nextInt(low: number, high: number): number {
    return low + Math.floor(this.nextDouble() * (high - low + 1));
  }
}

/** YCSB's default Zipfian constant. */
export const ZIPFIAN_THETA = 0.99;
/** ScrambledZipfianGenerator draws from this many items before hashing onto the key space. */
export const SCRAMBLED_ITEM_COUNT = 10_000_000_000;
/** zeta(SCRAMBLED_ITEM_COUNT, 0.99), precomputed by YCSB (summing 10^10 terms takes minutes). */
export const SCRAMBLED_ZETAN = 26.46902820178302;
/** Computing zeta sums one term per item: bound the work a caller can ask for. */
const MAX_ZETA_ITEMS = 100_000_000;

export function zeta(items: number, theta: number): number {
  if (!Number.isInteger(items) || items < 1 || items > MAX_ZETA_ITEMS) throw new DpmsError('DPMS_INVALID_ARGUMENT', `zeta: ${items} items must be an integer from 1 to ${MAX_ZETA_ITEMS}`);
  let sum = 0;
  for (let i = 0; i < items; i++) sum += 1 / Math.pow(i + 1, theta);
  return sum;
}

/** Ranks 0..items-1, rank 0 the most popular (YCSB ZipfianGenerator with base 0). */
export class ZipfianGenerator {
  private readonly alpha: number;
  private readonly eta: number;
  private readonly halfPowTheta: number;

  constructor(readonly items: number, private readonly random: SeededRandom, readonly theta = ZIPFIAN_THETA,
    private readonly zetan = zeta(items, theta)) {
    if (!(theta > 0 && theta < 1)) throw new DpmsError('DPMS_INVALID_ARGUMENT', `Zipfian theta ${theta} must be in (0, 1)`);
    if (!Number.isInteger(items) || items < 2) throw new DpmsError('DPMS_INVALID_ARGUMENT', `Zipfian over ${items} items: need an integer of at least 2`);
    const zeta2theta = 1 + Math.pow(0.5, theta);
    this.alpha = 1 / (1 - theta);
    this.eta = (1 - Math.pow(2 / items, 1 - theta)) / (1 - zeta2theta / zetan);
    this.halfPowTheta = Math.pow(0.5, theta);
  }

  next(): number {
    const u = this.random.nextDouble();
    const uz = u * this.zetan;
    if (uz < 1) return 0;
    if (uz < 1 + this.halfPowTheta) return 1;
    // u < 1 keeps the power below 1, so the rank stays below items; min() guards rounding.
    return Math.min(this.items - 1, Math.floor(this.items * Math.pow(this.eta * u - this.eta + 1, this.alpha)));
  }
}

const FNV_OFFSET_HIGH = 0xcbf2_9ce4;
const FNV_OFFSET_LOW = 0x8422_2325;
const TWO_POW_32 = 4_294_967_296;

/**
 * YCSB's Utils.fnvhash64: FNV-1a over the 8 little-endian bytes of a long, then Math.abs. Returned as
 * a bigint (it needs 63 bits). The multiply by the FNV prime (2^40 + 0x1b3) is done in 32-bit halves
 * so that only the final composition is a bigint. (Java's Math.abs leaves Long.MIN_VALUE negative;
 * here it becomes 2^63, a difference no draw can reach in practice.)
 */
export function fnvHash64(value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', `fnvHash64: ${value} must be a non-negative safe integer`);
  let high = FNV_OFFSET_HIGH;
  let low = FNV_OFFSET_LOW;
  let valueLow = value >>> 0;
  let valueHigh = Math.floor(value / TWO_POW_32);
  for (let i = 0; i < 8; i++) {
    low = (low ^ (valueLow & 0xff)) >>> 0;
    valueLow = ((valueLow >>> 8) | ((valueHigh & 0xff) << 24)) >>> 0;
    valueHigh >>>= 8;
    const product = low * 0x1b3; // < 2^41: exact in a double
    const carry = Math.floor(product / TWO_POW_32);
    high = (Math.imul(high, 0x1b3) + carry + (low << 8)) >>> 0;
    low = product >>> 0;
  }
  if (high >= 0x8000_0000) { // negative as a Java long: take the two's complement
    low = (~low + 1) >>> 0;
    high = (~high + (low === 0 ? 1 : 0)) >>> 0;
  }
  return (BigInt(high) << 32n) | BigInt(low);
}

/** YCSB ScrambledZipfianGenerator over keys min..min+count-1: Zipfian ranks hashed onto the range. */
export class ScrambledZipfianGenerator {
  private readonly zipfian: ZipfianGenerator;
  private readonly countBig: bigint;

  constructor(readonly count: number, random: SeededRandom, readonly min = 0) {
    if (!Number.isInteger(count) || count < 1) throw new DpmsError('DPMS_INVALID_ARGUMENT', `scrambled Zipfian over ${count} items: need a positive integer`);
    // YCSB: new ZipfianGenerator(0, ITEM_COUNT, 0.99, ZETAN), i.e. ITEM_COUNT + 1 items.
    this.zipfian = new ZipfianGenerator(SCRAMBLED_ITEM_COUNT + 1, random, ZIPFIAN_THETA, SCRAMBLED_ZETAN);
    this.countBig = BigInt(count);
  }

  next(): number {
    return this.min + Number(fnvHash64(this.zipfian.next()) % this.countBig);
  }

  /** The key that rank 0 (the most popular Zipfian rank) lands on. */
  mostPopular(): number {
    return this.min + Number(fnvHash64(0) % this.countBig);
  }
}

/** YCSB's key digits: a hashed record number has at most 19 decimal digits; padding them keeps every key 23 bytes. */
export const KEY_DIGITS = 19;

/** YCSB CoreWorkload.buildKeyName with insertorder=hashed and zeropadding=19: "user" + fnvhash64(n). */
export function keyName(recordNumber: number): string {
  return `user${fnvHash64(recordNumber).toString().padStart(KEY_DIGITS, '0')}`;
}

export type WorkloadName = 'a' | 'b' | 'c' | 'e';
export const WORKLOADS: readonly WorkloadName[] = ['a', 'b', 'c', 'e'];

export interface WorkloadMix {
  readonly name: WorkloadName;
  readonly description: string;
  readonly read: number;
  readonly update: number;
  readonly scan: number;
  readonly insert: number;
}

/** YCSB's core workloads (workloads/workloada ...), all with requestdistribution=zipfian. */
export const WORKLOAD_MIXES: Readonly<Record<WorkloadName, WorkloadMix>> = {
  a: { name: 'a', description: '50% read, 50% update', read: 0.5, update: 0.5, scan: 0, insert: 0 },
  b: { name: 'b', description: '95% read, 5% update', read: 0.95, update: 0.05, scan: 0, insert: 0 },
  c: { name: 'c', description: '100% read', read: 1, update: 0, scan: 0, insert: 0 },
  e: { name: 'e', description: '95% scan (1..100), 5% insert', read: 0, update: 0, scan: 0.95, insert: 0.05 },
};

/** Workload E's scans: uniform lengths 1..MAX_SCAN_LENGTH (YCSB maxscanlength). */
export const MAX_SCAN_LENGTH = 100;

export type Operation =
  | { readonly type: 'read'; readonly record: number }
  | { readonly type: 'update'; readonly record: number }
  | { readonly type: 'insert'; readonly record: number }
  | { readonly type: 'scan'; readonly record: number; readonly length: number };

/**
 * One workload's operation stream (YCSB CoreWorkload's transaction phase). Inserts take the next
 * record numbers after the loaded ones; reads, updates and scan starts only choose records whose
 * insert has been acknowledged (YCSB's AcknowledgedCounterGenerator), so no operation targets a key
 * that is still being written by another worker.
 */
export class OperationGenerator {
  private readonly random: SeededRandom;
  private readonly chooser: ScrambledZipfianGenerator;
  private nextInsert: number;
  private acknowledgedBelow: number;
  private readonly acknowledgedAbove = new Set<number>();

  constructor(readonly mix: WorkloadMix, readonly records: number, seed: number, expectedOperations: number) {
    if (!Number.isInteger(records) || records < 1) throw new DpmsError('DPMS_INVALID_ARGUMENT', `a workload needs at least 1 record (got ${records})`);
    this.random = new SeededRandom(seed);
    // YCSB sizes the chooser for the inserts it expects (opcount * insertproportion * 2).
    const expectedInserts = Math.ceil(expectedOperations * mix.insert * 2);
    this.chooser = new ScrambledZipfianGenerator(records + expectedInserts, new SeededRandom((seed ^ 0x5bd1_e995) >>> 0));
    this.nextInsert = records;
    this.acknowledgedBelow = records;
  }

  /** Records 0..recordCount()-1 exist (loaded or acknowledged inserts). */
  recordCount(): number {
    return this.acknowledgedBelow;
  }

  next(): Operation {
    const draw = this.random.nextDouble();
    const { mix } = this;
    if (draw < mix.read) return { type: 'read', record: this.chooseRecord() };
    if (draw < mix.read + mix.update) return { type: 'update', record: this.chooseRecord() };
    if (draw < mix.read + mix.update + mix.scan) {
      return { type: 'scan', record: this.chooseRecord(), length: this.random.nextInt(1, MAX_SCAN_LENGTH) };
    }
    return { type: 'insert', record: this.nextInsert++ };
  }

  /** Call when an insert has completed, so that later operations may choose its record. */
  acknowledge(record: number): void {
    if (record !== this.acknowledgedBelow) {
      this.acknowledgedAbove.add(record);
      return;
    }
    this.acknowledgedBelow++;
    while (this.acknowledgedAbove.delete(this.acknowledgedBelow)) this.acknowledgedBelow++;
  }

  private chooseRecord(): number {
    // YCSB's nextKeynum: redraw until the record exists. Draws beyond it are rare (the chooser is only
    // as wide as the inserts expected), but bound the loop anyway and fall back to a uniform choice.
    for (let attempt = 0; attempt < 1000; attempt++) {
      const record = this.chooser.next();
      if (record < this.acknowledgedBelow) return record;
    }
    return this.random.nextInt(0, this.acknowledgedBelow - 1);
  }
}
