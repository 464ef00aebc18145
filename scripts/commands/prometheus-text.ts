// A strict parser of the Prometheus text exposition format (version 0.0.4), for `dpms metrics` and the
// tests that scrape the daemons, and the summary `dpms metrics` prints from it (operations, errors,
// latency quantiles estimated from histogram buckets, bytes, key gauges).
//
// Why a parser of our own: the one npm package for it (parse-prometheus-text-format) merges the
// buckets of every label set of a histogram into one, which loses exactly the per-operation
// histograms the daemons export, and it has no types. The format is small (HELP, TYPE, samples with
// escaped label values); this parser follows the spec and rejects what does not, with the line.

import { DpmsError } from '../../pdsm';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  help: string;
  type: MetricType;
  readonly samples: Sample[];
}

export const PROMETHEUS_TEXT_LIMITS = { textBytes: 32 * 1024 * 1024, lineChars: 64 * 1024, samples: 1_000_000, labelsPerSample: 64 } as const;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const NUMBER = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)$/;
const TYPES: readonly MetricType[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

/** A float as Go's strconv.ParseFloat (Prometheus's parser) reads it: NaN and Inf in any case (prom-client writes "Nan"). */
function parseValue(text: string, fail: (why: string) => never): number {
  const special = /^([+-]?)(nan|inf|infinity)$/i.exec(text);
  if (special) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  if (!NUMBER.test(text)) fail(`'${text}' is not a number`);
  return Number(text);
}

/** The family a sample name belongs to, given the families declared so far. */
function familyOf(name: string, families: Map<string, MetricFamily>): string {
  if (families.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const family = families.get(base);
    if (family && (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket'))) return base;
  }
  return name;
}

/** Parse a whole exposition; DPMS_PROTOCOL names the first line that breaks the format. */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  if (text.length > PROMETHEUS_TEXT_LIMITS.textBytes) throw new DpmsError('DPMS_PROTOCOL', `metrics text of ${text.length} characters exceeds ${PROMETHEUS_TEXT_LIMITS.textBytes}`);
  const families = new Map<string, MetricFamily>();
  const seen = new Set<string>();
  let sampleCount = 0;
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!.endsWith('\r') ? lines[index]!.slice(0, -1) : lines[index]!;
    const fail = (why: string): never => {
      throw new DpmsError('DPMS_PROTOCOL', `metrics text line ${index + 1}: ${why}: ${JSON.stringify(line.slice(0, 200))}`);
    };
    if (line.length > PROMETHEUS_TEXT_LIMITS.lineChars) fail(`line longer than ${PROMETHEUS_TEXT_LIMITS.lineChars} characters`);
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const match = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!match) continue; // a plain comment
      const [, keyword, name, rest = ''] = match;
      if (!METRIC_NAME.test(name!)) fail(`bad metric name '${name}'`);
      let family = families.get(name!);
      if (!family) {
        family = { name: name!, help: '', type: 'untyped', samples: [] };
        families.set(name!, family);
      }
      if (keyword === 'HELP') {
        family.help = rest.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
      } else {
        const type = rest.trim() as MetricType;
        if (!TYPES.includes(type)) fail(`unknown metric type '${rest.trim()}'`);
        if (family.samples.length > 0) fail(`TYPE of ${name} after its samples`);
        family.type = type;
      }
      continue;
    }
    // name [{labels}] value [timestamp]
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) fail('a sample must start with a metric name');
    const name = nameMatch![0];
    let at = name.length;
    const labels: Record<string, string> = {};
    if (line[at] === '{') {
      at++;
      let count = 0;
      for (;;) {
        while (line[at] === ' ') at++;
        if (line[at] === '}') {
          at++;
          break;
        }
        const labelMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(at));
        if (!labelMatch) fail('bad label name');
        const labelName = labelMatch![0];
        at += labelName.length;
        while (line[at] === ' ') at++;
        if (line[at] !== '=' || line[at + 1] !== '"') fail(`label ${labelName} needs ="value"`);
        at += 2;
        let value = '';
        for (;;) {
          const char = line[at];
          if (char === undefined) fail('unterminated label value');
          if (char === '"') break;
          if (char === '\\') {
            const next = line[at + 1];
            if (next === 'n') value += '\n';
            else if (next === '\\' || next === '"') value += next;
            else fail(`bad escape \\${next ?? ''} in a label value`);
            at += 2;
          } else {
            value += char;
            at++;
          }
        }
        at++;
        if (!LABEL_NAME.test(labelName) || Object.prototype.hasOwnProperty.call(labels, labelName)) fail(`label ${labelName} repeated or invalid`);
        if (++count > PROMETHEUS_TEXT_LIMITS.labelsPerSample) fail(`more than ${PROMETHEUS_TEXT_LIMITS.labelsPerSample} labels`);
        labels[labelName] = value;
        while (line[at] === ' ') at++;
        if (line[at] === ',') at++;
        else if (line[at] !== '}') fail('labels must be separated by commas and closed by }');
      }
    }
    const fields = line.slice(at).trim().split(/\s+/);
    if (line[at] !== ' ' && line[at] !== '\t') fail('a space must separate the value');
    if (fields.length < 1 || fields.length > 2 || fields[0] === '') fail('a sample is: name{labels} value [timestamp]');
    const value = parseValue(fields[0]!, fail);
    if (fields.length === 2 && !/^-?\d+$/.test(fields[1]!)) fail(`bad timestamp '${fields[1]}'`);
    const familyName = familyOf(name, families);
    let family = families.get(familyName);
    if (!family) {
      family = { name: familyName, help: '', type: 'untyped', samples: [] };
      families.set(familyName, family);
    }
    if (family.type === 'histogram' && name === `${familyName}_bucket` && labels.le === undefined) fail('a histogram bucket needs an le label');
    const key = `${name}\u0000${Object.keys(labels).sort().map((label) => `${label}=${labels[label]}`).join('\u0000')}`;
    if (seen.has(key)) fail('the same sample twice');
    seen.add(key);
    if (++sampleCount > PROMETHEUS_TEXT_LIMITS.samples) fail(`more than ${PROMETHEUS_TEXT_LIMITS.samples} samples`);
    family.samples.push({ name, labels, value });
  }
  return families;
}

// ---- reading what the daemons export ----

/** Sum of a family's samples (optionally only those named `sampleName` and matching `where`). */
export function sumOf(families: Map<string, MetricFamily>, family: string, where: (labels: Readonly<Record<string, string>>) => boolean = () => true, sampleName = family): number {
  let total = 0;
  for (const sample of families.get(family)?.samples ?? []) if (sample.name === sampleName && where(sample.labels)) total += sample.value;
  return total;
}

/**
 * The q-quantile (0..1) of a histogram family, over every label set matching `where`, estimated as
 * Prometheus's histogram_quantile does: linear within the bucket holding the rank. Undefined when empty.
 */
export function histogramQuantile(families: Map<string, MetricFamily>, family: string, q: number, where: (labels: Readonly<Record<string, string>>) => boolean = () => true): number | undefined {
  const buckets = new Map<number, number>();
  for (const sample of families.get(family)?.samples ?? []) {
    if (sample.name !== `${family}_bucket` || !where(sample.labels)) continue;
    const le = parseValue(sample.labels.le ?? '', () => {
      throw new DpmsError('DPMS_PROTOCOL', `${family}: bad le '${sample.labels.le}'`);
    });
    buckets.set(le, (buckets.get(le) ?? 0) + sample.value);
  }
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) ?? 0;
  if (total <= 0 || bounds.length === 0) return undefined;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const bound of bounds) {
    const count = buckets.get(bound)!;
    if (count >= rank) {
      // The +Inf bucket has no width: the answer is the largest finite bound.
      if (bound === Infinity) return lowerBound;
      if (count === lowerCount) return bound;
      return lowerBound + (bound - lowerBound) * ((rank - lowerCount) / (count - lowerCount));
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

export interface OperationCount {
  readonly op: string;
  readonly count: number;
  readonly errors: number;
  readonly p99Seconds?: number;
}

export interface DaemonSummary {
  /** node, mount, gateway (from dpms_<component>_operations_total), or undefined for another exporter. */
  readonly component?: string;
  /** The labels of its dpms_<component>_info gauge (node id, mount point, address, ...). */
  readonly info: Readonly<Record<string, string>>;
  readonly operations: number;
  readonly errors: number;
  readonly errorsByCode: Readonly<Record<string, number>>;
  readonly p50Seconds?: number;
  readonly p99Seconds?: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** The busiest operations, most first. */
  readonly topOperations: readonly OperationCount[];
  /** Gauges an operator looks at first (heap used, lanes, clients, connections, transactions). */
  readonly gauges: Readonly<Record<string, number>>;
}

const TOP_OPERATIONS = 6;

/** What one daemon's metrics say, in a few numbers. */
export function summarize(families: Map<string, MetricFamily>): DaemonSummary {
  let component: string | undefined;
  for (const name of families.keys()) {
    const match = /^dpms_([a-z0-9]+)_operations_total$/.exec(name);
    if (match) {
      component = match[1];
      break;
    }
  }
  const prefix = `dpms_${component ?? 'none'}`;
  const info = { ...(families.get(`${prefix}_info`)?.samples[0]?.labels ?? {}) };
  const byOp = new Map<string, number>();
  for (const sample of families.get(`${prefix}_operations_total`)?.samples ?? []) byOp.set(sample.labels.op ?? '', (byOp.get(sample.labels.op ?? '') ?? 0) + sample.value);
  const errorsByCode: Record<string, number> = {};
  for (const sample of families.get(`${prefix}_errors_total`)?.samples ?? []) {
    const code = sample.labels.code ?? '';
    errorsByCode[code] = (errorsByCode[code] ?? 0) + sample.value;
  }
  const latency = `${prefix}_operation_seconds`;
  const topOperations = [...byOp].filter(([, count]) => count > 0).sort((a, b) => b[1] - a[1]).slice(0, TOP_OPERATIONS).map(([op, count]) => ({
    op, count, errors: sumOf(families, `${prefix}_errors_total`, (labels) => labels.op === op),
    p99Seconds: histogramQuantile(families, latency, 0.99, (labels) => labels.op === op),
  }));
  const gauges: Record<string, number> = {};
  const put = (key: string, value: number | undefined): void => {
    if (value !== undefined && Number.isFinite(value)) gauges[key] = value;
  };
  const has = (name: string): boolean => families.has(name);
  if (component === 'node') {
    const heap = sumOf(families, 'dpms_node_heap_bytes');
    if (heap > 0) put('heapUsedPercent', Math.round((sumOf(families, 'dpms_node_heap_used_bytes') / heap) * 1000) / 10);
    put('lanesUsed', sumOf(families, 'dpms_node_log_lanes', (labels) => labels.state === 'used'));
    put('lanesTotal', sumOf(families, 'dpms_node_log_lanes'));
    put('clients', sumOf(families, 'dpms_node_clients'));
    put('inDoubt', sumOf(families, 'dpms_node_in_doubt_logs'));
    put('authFailures', sumOf(families, 'dpms_node_transport_auth_failures_total'));
    put('oneSidedOps', sumOf(families, 'dpms_node_transport_operations_total', (labels) => labels.op !== 'message'));
  }
  if (component === 'gateway' && has('dpms_gateway_connections')) put('connections', sumOf(families, 'dpms_gateway_connections'));
  const pdsm = `${prefix}_pdsm_transactions_total`;
  if (has(pdsm)) {
    put('txCommitted', sumOf(families, pdsm, (labels) => labels.outcome === 'committed'));
    put('txAborted', sumOf(families, pdsm, (labels) => labels.outcome === 'aborted'));
    put('txRetried', sumOf(families, pdsm, (labels) => labels.outcome === 'retried'));
  }
  if (has('process_resident_memory_bytes')) put('residentBytes', sumOf(families, 'process_resident_memory_bytes'));
  return {
    component, info,
    operations: [...byOp.values()].reduce((a, b) => a + b, 0),
    errors: Object.values(errorsByCode).reduce((a, b) => a + b, 0),
    errorsByCode,
    p50Seconds: histogramQuantile(families, latency, 0.5),
    p99Seconds: histogramQuantile(families, latency, 0.99),
    bytesIn: sumOf(families, `${prefix}_bytes_total`, (labels) => labels.direction === 'in'),
    bytesOut: sumOf(families, `${prefix}_bytes_total`, (labels) => labels.direction === 'out'),
    topOperations, gauges,
  };
}
