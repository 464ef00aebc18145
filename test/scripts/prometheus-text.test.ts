// Proves that the Prometheus text parser of `dpms metrics` reads the format as the spec writes it
// (HELP/TYPE, escaped label values, histograms per label set, special values, timestamps), rejects
// malformed lines with the line number, that histogram quantiles are estimated as histogram_quantile
// does, and that what prom-client exports round-trips.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMetricsRegistry, OperationMetrics } from '../../pdsm';
import { histogramQuantile, parsePrometheusText, sumOf, summarize } from '../../scripts/commands/prometheus-text';

const TEXT = [
  '# HELP http_requests_total The total number of HTTP requests.',
  '# TYPE http_requests_total counter',
  'http_requests_total{method="post",code="200"} 1027 1395066363000',
  'http_requests_total{method="post",code="400"}    3 1395066363000',
  '',
  '# A plain comment',
  'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9',
  'metric_without_timestamp_and_labels 12.47',
  'something_weird{problem="division by zero"} +Inf -3982045',
  '# HELP lat_seconds Latency.',
  '# TYPE lat_seconds histogram',
  'lat_seconds_bucket{op="a",le="0.1"} 5',
  'lat_seconds_bucket{op="a",le="1"} 10',
  'lat_seconds_bucket{op="a",le="+Inf"} 10',
  'lat_seconds_sum{op="a"} 3',
  'lat_seconds_count{op="a"} 10',
  'lat_seconds_bucket{op="b",le="0.1"} 0',
  'lat_seconds_bucket{op="b",le="1"} 0',
  'lat_seconds_bucket{op="b",le="+Inf"} 10',
  'lat_seconds_sum{op="b"} 50',
  'lat_seconds_count{op="b"} 10',
  'nan_gauge NaN',
  'nan_as_prom_client_writes_it Nan',
  'minus_inf -inf',
].join('\n');

test('the spec example parses: families, types, escapes, special values, histograms per label set', () => {
  const families = parsePrometheusText(TEXT);
  const requests = families.get('http_requests_total')!;
  assert.equal(requests.type, 'counter');
  assert.equal(requests.help, 'The total number of HTTP requests.');
  assert.deepEqual(requests.samples.map((sample) => [sample.labels.code, sample.value]), [['200', 1027], ['400', 3]]);
  const weird = families.get('msdos_file_access_time_seconds')!;
  assert.equal(weird.type, 'untyped');
  assert.deepEqual(weird.samples[0]!.labels, { path: 'C:\\DIR\\FILE.TXT', error: 'Cannot find file:\n"FILE.TXT"' });
  assert.equal(families.get('something_weird')!.samples[0]!.value, Infinity);
  assert.ok(Number.isNaN(families.get('nan_gauge')!.samples[0]!.value));
  assert.ok(Number.isNaN(families.get('nan_as_prom_client_writes_it')!.samples[0]!.value));
  assert.equal(families.get('minus_inf')!.samples[0]!.value, -Infinity);
  const latency = families.get('lat_seconds')!;
  assert.equal(latency.type, 'histogram');
  assert.equal(latency.samples.length, 10);
  assert.equal(sumOf(families, 'lat_seconds', (labels) => labels.op === 'a', 'lat_seconds_count'), 10);
  assert.equal(sumOf(families, 'lat_seconds', () => true, 'lat_seconds_sum'), 53);
});

test('histogram quantiles interpolate within the bucket holding the rank, over the chosen label sets', () => {
  const families = parsePrometheusText(TEXT);
  // op a: 5 of 10 at or below 0.1, all 10 at or below 1: the median is 0.1, the 0.75 quantile halfway to 1.
  assert.equal(histogramQuantile(families, 'lat_seconds', 0.5, (labels) => labels.op === 'a'), 0.1);
  assert.ok(Math.abs(histogramQuantile(families, 'lat_seconds', 0.75, (labels) => labels.op === 'a')! - 0.55) < 1e-9);
  // op b: everything above the largest finite bound: that bound is the answer.
  assert.equal(histogramQuantile(families, 'lat_seconds', 0.5, (labels) => labels.op === 'b'), 1);
  // both together: 20 observations, 5 at or below 0.1, 10 at or below 1.
  assert.ok(Math.abs(histogramQuantile(families, 'lat_seconds', 0.25)! - 0.1) < 1e-9);
  assert.equal(histogramQuantile(families, 'nothing_here', 0.5), undefined);
});

test('malformed lines are rejected with DPMS_PROTOCOL and their line number', () => {
  const cases: Array<[string, RegExp]> = [
    ['a{b="c"', /line 1: unterminated label value|line 1: labels must/],
    ['a{b="c} 1', /line 1: unterminated label value/],
    ['a{b="c\\x"} 1', /line 1: bad escape/],
    ['a{b="1",b="2"} 1', /line 1: label b repeated/],
    ['a{1b="c"} 1', /line 1: bad label name/],
    ['a one', /line 1: 'one' is not a number/],
    ['a 1 2 3', /line 1: a sample is/],
    ['a 1 1.5', /line 1: bad timestamp/],
    ['a', /line 1: a space must separate the value|a sample is/],
    ['ok 1\n9bad 1', /line 2: a sample must start with a metric name/],
    ['# TYPE a countr', /line 1: unknown metric type/],
    ['a 1\n# TYPE a counter', /line 2: TYPE of a after its samples/],
    ['a 1\na 2', /line 2: the same sample twice/],
    ['# TYPE h histogram\nh_bucket 1', /line 2: a histogram bucket needs an le label/],
    ['a{b="c"}1', /line 1: a space must separate the value/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parsePrometheusText(text), (error: Error & { code?: string }) => error.code === 'DPMS_PROTOCOL' && message.test(error.message), text);
  }
});

test('what prom-client and OperationMetrics export parses and summarizes', async () => {
  const registry = createMetricsRegistry();
  const operations = new OperationMetrics(registry, 'demo', { ops: ['get', 'put'] });
  for (let i = 0; i < 98; i++) operations.observe('get', 0.0002, { bytesOut: 10 });
  operations.observe('put', 2, { bytesIn: 100, error: 'DPMS_NO_SPACE' });
  operations.observe('put', 2, { bytesIn: 100 });
  operations.observe('evil"name\n', 0.001);
  const families = parsePrometheusText(await registry.metrics());
  assert.ok(families.has('process_cpu_user_seconds_total'));
  const summary = summarize(families);
  assert.equal(summary.component, 'demo');
  assert.equal(summary.operations, 101);
  assert.deepEqual(summary.errorsByCode, { DPMS_NO_SPACE: 1 });
  assert.equal(summary.bytesIn, 200);
  assert.equal(summary.bytesOut, 980);
  // 98 of 101 in the (0.0001, 0.00025] bucket: the median is there; the p99 lies in (1, 2.5].
  assert.ok(summary.p50Seconds! > 0.0001 && summary.p50Seconds! <= 0.00025, String(summary.p50Seconds));
  assert.ok(summary.p99Seconds! > 1 && summary.p99Seconds! <= 2.5, String(summary.p99Seconds));
  // An undeclared operation name is counted as "unknown", not as a new label value.
  assert.equal(sumOf(families, 'dpms_demo_operations_total', (labels) => labels.op === 'unknown'), 1);
  assert.equal(summary.topOperations[0]!.op, 'get');
});
