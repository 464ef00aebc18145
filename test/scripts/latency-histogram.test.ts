// Proves the benchmarks' latency histogram keeps percentiles within its 1/128 resolution over a wide
// range of values (exactly for small ones), counts every value, and survives extremes and reset.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyHistogram } from '../../scripts/commands/latency-histogram';

test('percentiles are within 1% of the exact ones over six orders of magnitude', () => {
  const histogram = new LatencyHistogram();
  const values: number[] = [];
  let state = 12345;
  for (let i = 0; i < 50_000; i++) {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    const value = Math.floor(100 * Math.pow(10, (state / 2 ** 32) * 6)); // 100 ns .. 100 ms, log-uniform
    values.push(value);
    histogram.recordNs(value);
  }
  values.sort((a, b) => a - b);
  assert.equal(histogram.count, values.length);
  for (const fraction of [0.01, 0.5, 0.9, 0.99, 0.999, 1]) {
    const exact = values[Math.ceil(values.length * fraction) - 1];
    const estimate = histogram.percentileNs(fraction);
    assert.ok(Math.abs(estimate - exact) <= exact / 100, `p${fraction * 100}: ${estimate} vs exact ${exact}`);
  }
});

test('small values are exact; empty, huge, negative values and reset', () => {
  const histogram = new LatencyHistogram();
  assert.equal(histogram.percentileNs(0.5), 0);
  for (let value = 0; value < 100; value++) histogram.recordNs(value);
  assert.equal(histogram.percentileNs(0.5), 49);
  assert.equal(histogram.percentileNs(1), 99);
  histogram.recordNs(-3);
  histogram.recordNs(2 ** 50);
  assert.equal(histogram.count, 102);
  assert.equal(histogram.percentileNs(1), 2 ** 50, 'the largest value is kept as the maximum');
  histogram.reset();
  assert.equal(histogram.count, 0);
  assert.equal(histogram.percentileNs(0.99), 0);
});
