// A fixed-size, log-linear latency histogram for benchmarks that run for a count of operations or for
// a time (HDR-histogram style): 128 linear sub-buckets per power of two, so a recorded value is kept
// within 1/128 (< 0.8%) of its true value whatever the range, in a preallocated array that never
// grows. Recording is a few integer operations and allocates nothing, so it can sit on a hot path.

const SUB_BUCKET_BITS = 7;
const SUB_BUCKETS = 1 << SUB_BUCKET_BITS;
/** Values up to 2^40 ns (~18 minutes); anything longer is counted in the last bucket. */
const MAX_EXPONENT = 40;
const BUCKET_COUNT = SUB_BUCKETS + (MAX_EXPONENT - SUB_BUCKET_BITS) * SUB_BUCKETS;

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKET_COUNT);
  private total = 0;
  private maxNs = 0;

  get count(): number {
    return this.total;
  }

  /** Record one latency in nanoseconds (fractions are dropped; negatives count as 0). */
  recordNs(latencyNs: number): void {
    const value = latencyNs > 0 ? Math.floor(latencyNs) : 0;
    this.counts[indexOf(value)]++;
    this.total++;
    if (value > this.maxNs) this.maxNs = value;
  }

  /** The latency (ns) at or below which `fraction` of the recorded values lie (0 when empty). */
  percentileNs(fraction: number): number {
    if (this.total === 0) return 0;
    const wanted = Math.max(1, Math.ceil(this.total * Math.min(1, Math.max(0, fraction))));
    let seen = 0;
    for (let index = 0; index < BUCKET_COUNT; index++) {
      seen += this.counts[index];
      // The bucket's midpoint, but never above the largest value seen (the last bucket holds every
      // value beyond the range: the largest is the only one known).
      if (seen >= wanted) return index === BUCKET_COUNT - 1 ? this.maxNs : Math.min(this.maxNs, middleOf(index));
    }
    return this.maxNs;
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.maxNs = 0;
  }
}

function indexOf(value: number): number {
  if (value < SUB_BUCKETS) return value;
  // Math.log2 of an integer can round up just below a power of two: correct it with a comparison.
  let exponent = Math.floor(Math.log2(value));
  if (2 ** exponent > value) exponent--;
  else if (2 ** (exponent + 1) <= value) exponent++;
  if (exponent >= MAX_EXPONENT) return BUCKET_COUNT - 1;
  const shift = exponent - SUB_BUCKET_BITS;
  const sub = Math.floor(value / 2 ** shift) - SUB_BUCKETS;
  return SUB_BUCKETS + shift * SUB_BUCKETS + sub;
}

function middleOf(index: number): number {
  if (index < SUB_BUCKETS) return index;
  const shift = Math.floor((index - SUB_BUCKETS) / SUB_BUCKETS);
  const sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
  const width = 2 ** shift;
  return (SUB_BUCKETS + sub) * width + (width - 1) / 2;
}
