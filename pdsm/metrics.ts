// Prometheus metrics of the daemons (node, mount, gateway): one prom-client Registry per process,
// with the default process metrics (CPU, memory, event loop, GC), the daemon's own metrics declared
// one way (OperationMetrics: operations, latency, errors and bytes by operation; gauges and counters
// read from existing state at scrape time), and a small HTTP server for GET /metrics.
//
// Names: dpms_<component>_<what>[_unit][_total]. Label values are bounded: an operation name not
// declared is "unknown", and an error code beyond MAX_LABEL_VALUES distinct ones is "other", so that
// nothing a client sends can grow the registry without bound.
// The hot paths pay plain number increments and one histogram observation: counters are kept as
// numbers and handed to prom-client when it collects (at scrape time), not on every operation.

import http from 'node:http';
import os from 'node:os';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ClientCounters } from './cluster/client';
import { DpmsError } from './errors';

export { Registry };

/** Latency buckets in seconds: 10 us to 10 s, about three per decade. */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** Distinct values one label of one metric takes at most (the rest are counted under "other"). */
export const MAX_LABEL_VALUES = 64;
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const COMPONENT_RE = /^[a-z][a-z0-9_]*$/;

/** A registry for this process, with the default process and Node.js metrics. */
export function createMetricsRegistry(options: { readonly defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  return registry;
}

/** A label value from an open set, folded into "other" once `seen` holds MAX_LABEL_VALUES values. */
function bounded(seen: Set<string>, value: string): string {
  if (seen.has(value)) return value;
  if (seen.size >= MAX_LABEL_VALUES) return 'other';
  seen.add(value);
  return value;
}

interface OperationRecord {
  count: number;
  bytesIn: number;
  bytesOut: number;
  readonly errors: Map<string, number>;
}

export interface ObserveOptions {
  /** Bytes received from the caller (data written, request size). */
  readonly bytesIn?: number;
  /** Bytes sent to the caller (data read, reply size). */
  readonly bytesOut?: number;
  /** The operation failed with this code (DPMS code, errno name, RESP error prefix). */
  readonly error?: string;
}

/**
 * Operations of one component: dpms_<component>_operations_total{op}, _operation_seconds{op} (a
 * histogram), _errors_total{op,code} and _bytes_total{op,direction="in"|"out"}.
 */
export class OperationMetrics {
  private readonly records = new Map<string, OperationRecord>();
  private readonly known: ReadonlySet<string> | undefined;
  private readonly codes = new Set<string>();
  private readonly ops = new Set<string>();
  private readonly latency: Histogram<'op'>;

  constructor(registry: Registry, readonly component: string, options: { readonly ops?: readonly string[] } = {}) {
    if (!COMPONENT_RE.test(component)) throw new DpmsError('DPMS_INVALID_ARGUMENT', `metrics component '${component}' must match ${COMPONENT_RE}`);
    this.known = options.ops ? new Set(options.ops) : undefined;
    const prefix = `dpms_${component}`;
    const records = this.records;
    new Counter({
      name: `${prefix}_operations_total`, help: `Operations served by the ${component}, by operation.`, labelNames: ['op'], registers: [registry],
      collect() {
        this.reset();
        for (const [op, record] of records) this.inc({ op }, record.count);
      },
    });
    this.latency = new Histogram({
      name: `${prefix}_operation_seconds`, help: `Time from request to answer in the ${component}, by operation.`,
      labelNames: ['op'], buckets: [...LATENCY_BUCKETS_S], registers: [registry],
    });
    new Counter({
      name: `${prefix}_errors_total`, help: `Operations of the ${component} that failed, by operation and error code.`, labelNames: ['op', 'code'], registers: [registry],
      collect() {
        this.reset();
        for (const [op, record] of records) for (const [code, count] of record.errors) this.inc({ op, code }, count);
      },
    });
    new Counter({
      name: `${prefix}_bytes_total`, help: `Payload bytes of ${component} operations: in from the caller, out to it.`, labelNames: ['op', 'direction'], registers: [registry],
      collect() {
        this.reset();
        for (const [op, record] of records) {
          if (record.bytesIn > 0) this.inc({ op, direction: 'in' }, record.bytesIn);
          if (record.bytesOut > 0) this.inc({ op, direction: 'out' }, record.bytesOut);
        }
      },
    });
  }

  /** Record one finished operation that took `seconds`. */
  observe(op: string, seconds: number, options?: ObserveOptions): void {
    const name = this.known ? (this.known.has(op) ? op : 'unknown') : bounded(this.ops, op);
    let record = this.records.get(name);
    if (!record) {
      record = { count: 0, bytesIn: 0, bytesOut: 0, errors: new Map() };
      this.records.set(name, record);
    }
    record.count++;
    this.latency.observe({ op: name }, seconds);
    if (options) {
      if (options.bytesIn) record.bytesIn += options.bytesIn;
      if (options.bytesOut) record.bytesOut += options.bytesOut;
      if (options.error !== undefined) {
        const code = bounded(this.codes, options.error);
        record.errors.set(code, (record.errors.get(code) ?? 0) + 1);
      }
    }
  }

  /** A start time for observeSince (monotonic, ns). */
  static now(): bigint {
    return process.hrtime.bigint();
  }

  /** observe() with the time since `startedNs` (from OperationMetrics.now()). */
  observeSince(op: string, startedNs: bigint, options?: ObserveOptions): void {
    this.observe(op, Number(process.hrtime.bigint() - startedNs) / 1e9, options);
  }
}

type Samples = number | ReadonlyArray<readonly [Record<string, string>, number]>;

export interface CollectedMetric {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly string[];
  /** Read at scrape time: one value, or [labels, value] pairs. */
  readonly collect: () => Samples;
}

function setSamples(metric: { reset(): void }, samples: Samples, apply: (labels: Record<string, string> | undefined, value: number) => void): void {
  metric.reset();
  if (typeof samples === 'number') apply(undefined, samples);
  else for (const [labels, value] of samples) apply(labels, value);
}

/** A gauge whose value is read from existing state when Prometheus scrapes. */
export function collectedGauge(registry: Registry, spec: CollectedMetric): void {
  new Gauge<string>({
    name: spec.name, help: spec.help, labelNames: spec.labelNames ?? [], registers: [registry],
    collect() {
      setSamples(this, spec.collect(), (labels, value) => (labels ? this.set(labels, value) : this.set(value)));
    },
  });
}

/** A counter whose value is read at scrape time from a number that only grows (a stats field). */
export function collectedCounter(registry: Registry, spec: CollectedMetric): void {
  new Counter<string>({
    name: spec.name, help: spec.help, labelNames: spec.labelNames ?? [], registers: [registry],
    collect() {
      setSamples(this, spec.collect(), (labels, value) => {
        const safe = Number.isFinite(value) && value > 0 ? value : 0;
        if (labels) this.inc(labels, safe);
        else this.inc(safe);
      });
    },
  });
}

/** An "info" gauge (always 1) whose labels say which daemon this is. */
export function infoGauge(registry: Registry, name: string, help: string, labels: Record<string, string>): void {
  const gauge = new Gauge<string>({ name, help, labelNames: Object.keys(labels), registers: [registry] });
  gauge.set(labels, 1);
}

/** The pDSM client counters of a process (ClusterClient.counters) as dpms_<component>_pdsm_* metrics. */
export function registerClientMetrics(registry: Registry, component: string, counters: () => ClientCounters | undefined): void {
  const prefix = `dpms_${component}_pdsm`;
  const read = (pick: (c: ClientCounters) => Samples): (() => Samples) => () => {
    const current = counters();
    return current ? pick(current) : [];
  };
  collectedCounter(registry, {
    name: `${prefix}_transactions_total`, help: 'pDSM transactions of this process by outcome (retried: attempts restarted after a lock conflict).',
    labelNames: ['outcome'],
    collect: read((c) => [[{ outcome: 'committed' }, c.txCommitted], [{ outcome: 'aborted' }, c.txAborted], [{ outcome: 'retried' }, c.txRetried]]),
  });
  collectedCounter(registry, {
    name: `${prefix}_rpcs_total`, help: 'Two-sided RPCs this process sent to nodes.', collect: read((c) => c.rpcs),
  });
  collectedCounter(registry, {
    name: `${prefix}_one_sided_operations_total`, help: 'One-sided operations this process posted, by kind.', labelNames: ['op'],
    collect: read((c) => [[{ op: 'read' }, c.reads], [{ op: 'write' }, c.writes], [{ op: 'atomic' }, c.atomics], [{ op: 'persist' }, c.persists]]),
  });
  collectedCounter(registry, {
    name: `${prefix}_one_sided_bytes_total`, help: 'Bytes this process read and wrote with one-sided operations.', labelNames: ['direction'],
    collect: read((c) => [[{ direction: 'read' }, c.readBytes], [{ direction: 'write' }, c.writeBytes]]),
  });
  collectedCounter(registry, {
    name: `${prefix}_sessions_total`, help: 'Sessions this process opened with the cluster (more than one: it reconnected).', collect: read((c) => c.sessions),
  });
}

// ---- the /metrics HTTP server ----

export interface MetricsServerOptions {
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly registry: Registry;
}

export interface MetricsServer {
  /** Where Prometheus scrapes: http://host:port/metrics. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Scrapers at once; more wait in the kernel's backlog or are refused. */
const MAX_CONNECTIONS = 32;
/** A request must arrive whole within this time (slow clients cannot hold a socket). */
const REQUEST_TIMEOUT_MS = 5000;
const KEEP_ALIVE_MS = 5000;

/** The URL a scraper uses: wildcard addresses are replaced by this machine's name, IPv6 in brackets. */
export function metricsUrl(host: string, port: number): string {
  const name = host === '0.0.0.0' || host === '::' || host === '' ? os.hostname() : host;
  return `http://${name.includes(':') ? `[${name}]` : name}:${port}/metrics`;
}

/** Serve GET /metrics (Prometheus text 0.0.4); other paths 404, other methods 405. Never throws on a bad request. */
export async function serveMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const host = options.host ?? '127.0.0.1';
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `metrics port must be 0..65535, got ${options.port}`);
  }
  const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS, maxHeaderSize: 16 * 1024 }, (request, response) => {
    const answer = (status: number, body: string, headers: Record<string, string> = {}): void => {
      response.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), ...headers });
      response.end(request.method === 'HEAD' ? undefined : body);
    };
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      answer(404, 'not found: metrics are at /metrics\n');
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      // A body we do not read must not keep the connection: close it after the answer.
      answer(405, 'method not allowed: use GET\n', { Allow: 'GET, HEAD', Connection: 'close' });
      return;
    }
    options.registry.metrics().then(
      (text) => answer(200, text, { 'Content-Type': PROMETHEUS_CONTENT_TYPE }),
      (error: unknown) => answer(500, `cannot collect metrics: ${(error as Error).message}\n`),
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.maxHeadersCount = 64;
  // Malformed HTTP: answer 400 if the socket is still writable, and close it.
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((error: Error) => {
    throw new DpmsError('DPMS_IO', `cannot serve metrics on ${host}:${options.port}: ${error.message}`, { cause: error });
  });
  // After listening, an error (EMFILE on accept, ...) must not crash the daemon.
  server.on('error', () => undefined);
  const address = server.address();
  const port = address && typeof address === 'object' ? address.port : options.port;
  let closing: Promise<void> | undefined;
  return {
    url: metricsUrl(host, port),
    port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
