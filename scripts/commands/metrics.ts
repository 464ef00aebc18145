// `dpms metrics`: scrape the /metrics endpoints of a cluster's daemons and print a summary per daemon
// (operations, errors, p50/p99 latency from the histogram buckets, bytes, key gauges), or --json.
// Endpoints come from a `dpms up` state directory (--dir, default ./.dpms: state.json names every daemon's endpoint),
// from a cluster config (--config: the nodes' status tells their own endpoint and their clients'),
// or are named (--endpoint URL, repeatable). An endpoint that cannot be scraped is reported on its own
// line and the others are still shown; the exit status is then 1.

import type { Argv } from 'yargs';
import { ClusterClient, DpmsError, formatBytes, loadClusterConfig } from '../../pdsm';
import { parsePrometheusText, summarize, type DaemonSummary } from './prometheus-text';
import { EXIT, run } from './run';
import { DEFAULT_STATE_DIR, readUpState, statePaths } from './state-dir';

export interface Endpoint {
  readonly url: string;
  /** Who serves it, as the source told: "node 1", "mount /mnt", "gateway 127.0.0.1:6380 store default". */
  readonly source: string;
}

export interface ScrapeResult extends Endpoint {
  readonly ok: boolean;
  readonly error?: string;
  readonly summary?: DaemonSummary;
}

/** Largest /metrics answer read (a daemon's is a few tens of KiB). */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const MAX_ENDPOINTS = 256;

function checkUrl(url: string, what: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `${what}: '${url}' is not a URL (http://host:port/metrics)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new DpmsError('DPMS_INVALID_ARGUMENT', `${what}: '${url}' is not an http(s) URL`);
  return parsed.toString();
}

/** The endpoints `dpms up` wrote into DIR/state.json (a daemon started without metrics has none). */
export function endpointsFromStateDir(dir: string): Endpoint[] {
  const paths = statePaths(dir);
  const state = readUpState(paths);
  if (!state) throw new DpmsError('DPMS_NOT_FOUND', `no running 'dpms up' in ${paths.dir} (no state.json); start one with \`dpms up --dir ${paths.dir}\``);
  const endpoints: Endpoint[] = [];
  const add = (url: string | null, source: string): void => {
    if (url !== null) endpoints.push({ url: checkUrl(url, `${paths.state}: ${source}`), source });
  };
  for (const node of state.nodes) add(node.metrics, `node ${node.id}`);
  if (state.mount) add(state.mount.metrics, `mount ${state.mount.dir}`);
  if (state.gateway) add(state.gateway.metrics, `gateway ${state.gateway.host}:${state.gateway.port}`);
  return endpoints;
}

/** The endpoints a cluster's nodes tell: their own, and their clients' (mounts, gateways, ...). */
export async function endpointsFromCluster(configPath: string): Promise<{ endpoints: Endpoint[]; unreachable: ScrapeResult[] }> {
  const config = loadClusterConfig(configPath);
  const endpoints: Endpoint[] = [];
  const unreachable: ScrapeResult[] = [];
  let client: ClusterClient | undefined;
  try {
    client = await ClusterClient.connect({ config, lanesPerNode: 0, connectTimeoutMs: 2000, info: { role: 'cli', label: 'dpms metrics' } });
    const seen = new Set<string>();
    const add = (url: string, source: string): void => {
      if (seen.has(url)) return;
      seen.add(url);
      endpoints.push({ url, source });
    };
    for (const row of await client.status()) {
      if (!row.status) {
        unreachable.push({ url: `${row.node.host}:${row.node.port}`, source: `node ${row.node.id}`, ok: false, error: `node unreachable: ${row.error ?? 'no status'}` });
        continue;
      }
      if (row.status.metrics) add(row.status.metrics, `node ${row.node.id}`);
      for (const other of row.status.clients) {
        if (other.metrics && other.instance !== client.info.instance) add(other.metrics, `${other.role}${other.label ? ` ${other.label}` : ''}`);
      }
    }
  } catch (error) {
    for (const node of config.nodes) {
      unreachable.push({ url: `${node.host}:${node.port}`, source: `node ${node.id}`, ok: false, error: `node unreachable: ${(error as Error).message}` });
    }
  } finally {
    await client?.close();
  }
  return { endpoints, unreachable };
}

/** GET one endpoint and summarize it; never throws (the error is in the result). */
export async function scrape(endpoint: Endpoint, timeoutMs: number): Promise<ScrapeResult> {
  try {
    const response = await fetch(endpoint.url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
    if (response.status !== 200) {
      await response.body?.cancel();
      return { ...endpoint, ok: false, error: `HTTP ${response.status} ${response.statusText}` };
    }
    const declared = Number(response.headers.get('content-length') ?? 0);
    if (declared > MAX_RESPONSE_BYTES) {
      await response.body?.cancel();
      return { ...endpoint, ok: false, error: `answer of ${declared} B exceeds ${MAX_RESPONSE_BYTES} B` };
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of response.body ?? []) {
      bytes += (chunk as Uint8Array).length;
      if (bytes > MAX_RESPONSE_BYTES) return { ...endpoint, ok: false, error: `answer exceeds ${MAX_RESPONSE_BYTES} B` };
      chunks.push(Buffer.from(chunk as Uint8Array));
    }
    const summary = summarize(parsePrometheusText(Buffer.concat(chunks).toString('utf8')));
    return { ...endpoint, ok: true, summary };
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const why = (error as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms`
      : cause?.code ? `${cause.code}${cause.message ? ` (${cause.message})` : ''}` : (error as Error).message;
    return { ...endpoint, ok: false, error: `unreachable: ${why}` };
  }
}

function formatSeconds(seconds: number | undefined): string {
  if (seconds === undefined) return '-';
  if (seconds < 1e-3) return `${(seconds * 1e6).toFixed(0)} us`;
  if (seconds < 1) return `${(seconds * 1e3).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  return `${seconds.toFixed(2)} s`;
}

/** The lines one daemon's summary takes. */
export function formatSummary(result: ScrapeResult): string[] {
  if (!result.ok || !result.summary) return [`${result.source} ${result.url}: FAILED ${result.error ?? ''}`];
  const s = result.summary;
  const head = `${result.source} ${result.url}: ${s.operations} ops, ${s.errors} errors, p50 ${formatSeconds(s.p50Seconds)}, p99 ${formatSeconds(s.p99Seconds)}, ` +
    `in ${formatBytes(s.bytesIn)}, out ${formatBytes(s.bytesOut)}`;
  const g = s.gauges;
  const facts: string[] = [];
  if (g.heapUsedPercent !== undefined) facts.push(`heap ${g.heapUsedPercent}% used`);
  if (g.lanesTotal !== undefined) facts.push(`lanes ${g.lanesUsed ?? 0}/${g.lanesTotal} used`);
  if (g.clients !== undefined) facts.push(`${g.clients} client(s)`);
  if (g.inDoubt) facts.push(`${g.inDoubt} in doubt`);
  if (g.oneSidedOps !== undefined) facts.push(`${g.oneSidedOps} one-sided ops served`);
  if (g.authFailures) facts.push(`${g.authFailures} auth failures`);
  if (g.connections !== undefined) facts.push(`${g.connections} connection(s)`);
  if (g.txCommitted !== undefined) facts.push(`tx ${g.txCommitted} committed, ${g.txAborted ?? 0} aborted, ${g.txRetried ?? 0} retried`);
  if (g.residentBytes !== undefined) facts.push(`rss ${formatBytes(g.residentBytes)}`);
  const lines = [head];
  if (facts.length > 0) lines.push(`    ${facts.join(', ')}`);
  if (s.topOperations.length > 0) lines.push(`    top: ${s.topOperations.map((op) => `${op.op} ${op.count}${op.errors ? ` (${op.errors} err)` : ''} p99 ${formatSeconds(op.p99Seconds)}`).join('; ')}`);
  const codes = Object.entries(s.errorsByCode);
  if (codes.length > 0) lines.push(`    errors: ${codes.map(([code, count]) => `${code} ${count}`).join(', ')}`);
  return lines;
}

export function registerMetricsCommand(yargs: Argv): Argv {
  return yargs.command('metrics', 'scrape the /metrics endpoints of the daemons and print a summary per daemon', (y) => y
    .option('dir', { type: 'string', describe: 'a `dpms up` state directory: its state.json names every endpoint (the default, ./.dpms, when nothing else is named)' })
    .option('config', { type: 'string', describe: 'cluster config: ask the nodes for their endpoints and their clients\'' })
    .option('endpoint', { type: 'string', array: true, describe: 'a metrics URL (repeatable)' })
    .option('timeout', { type: 'number', default: 3000, describe: 'ms to wait for each endpoint' })
    .option('json', { type: 'boolean', default: false, describe: 'print the summaries as JSON' })
    .example('$0 metrics --dir .dpms', '')
    .example('$0 metrics --endpoint http://127.0.0.1:9100/metrics', ''),
  (argv) => run(async () => {
    if (!Number.isInteger(argv.timeout) || argv.timeout < 1 || argv.timeout > 600_000) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--timeout must be 1..600000 ms, got ${argv.timeout}`);
    const explicit = (argv.endpoint ?? []).map((url) => ({ url: checkUrl(url, '--endpoint'), source: 'endpoint' }));
    // Nothing named: the `dpms up` of this directory, as `dpms status` does.
    const dir = argv.dir ?? (argv.config === undefined && explicit.length === 0 ? DEFAULT_STATE_DIR : undefined);
    const endpoints: Endpoint[] = [...explicit];
    const failures: ScrapeResult[] = [];
    if (dir !== undefined) endpoints.push(...endpointsFromStateDir(dir));
    if (argv.config !== undefined) {
      const found = await endpointsFromCluster(argv.config);
      endpoints.push(...found.endpoints);
      failures.push(...found.unreachable);
    }
    const distinct = [...new Map(endpoints.map((endpoint) => [endpoint.url, endpoint])).values()];
    if (distinct.length > MAX_ENDPOINTS) throw new DpmsError('DPMS_INVALID_ARGUMENT', `${distinct.length} endpoints; at most ${MAX_ENDPOINTS} are scraped at once`);
    const results = [...await Promise.all(distinct.map((endpoint) => scrape(endpoint, argv.timeout))), ...failures];
    if (argv.json) {
      console.log(JSON.stringify(results, null, 2));
    } else if (results.length === 0) {
      console.log('no metrics endpoints found (start the daemons with --metrics-port)');
    } else {
      for (const result of results) for (const line of formatSummary(result)) console.log(line);
      const failed = results.filter((result) => !result.ok).length;
      if (failed > 0) console.log(`${failed} of ${results.length} endpoint(s) could not be scraped`);
    }
    return results.every((result) => result.ok) ? EXIT.ok : EXIT.problems;
  }));
}
