// Seeded randomness for tests: every randomized test prints its seed, and DPMS_SEED replays it.

/** mulberry32: small, fast, good enough to drive workloads; the same seed gives the same run. */
export class Random {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, bound). */
  int(bound: number): number {
    return Math.floor(this.next() * bound);
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) out[i] = this.int(256);
    return out;
  }
}

/** The seed for a test: DPMS_SEED when set (to replay a failure), else a fresh one. Printed either way. */
export function testSeed(name: string): number {
  const fromEnv = process.env.DPMS_SEED;
  const seed = fromEnv !== undefined ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
  console.log(`# ${name}: seed ${seed} (replay with DPMS_SEED=${seed})`);
  return seed;
}

/** A function returning the seeded stream's next value as a uint32 (what mulberry32 produces). */
export function uint32Stream(seed: number): () => number {
  const random = new Random(seed);
  return () => Math.floor(random.next() * 4294967296);
}
