// `dpms status` (and `dpms cluster status`, the same code): what a cluster is doing, for an operator.
// Per node: up or down, address, transport, capacity and usage, log lanes, uptime; then the cluster's
// clients (each client connects to every node, so they are merged by instance), the mounted file
// systems and the gateways; with a state directory (--dir), also the `dpms up` supervisor and its
// children's processes. Exit status: 0 every node up, 1 some down, 3 none reachable or no cluster.

import type { Argv } from 'yargs';
import { ClusterClient, formatBytes, type ClientSummary, type NodeConfig, type NodeStatus, type ProviderName } from '../../pdsm';
import { EXIT, run } from './run';
import { DEFAULT_STATE_DIR, processAlive, resolveTarget, type Target } from './state-dir';

const CONNECT_TIMEOUT_MS = 2000;

export interface NodeReport {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly transport: string;
  readonly reachable: boolean;
  readonly status?: NodeStatus;
  readonly error?: string;
  /** Lanes in use and in all (derived from the status). */
  readonly lanes?: { readonly used: number; readonly total: number };
}

export interface ClientReport extends Omit<ClientSummary, 'clientId' | 'lanes'> {
  /** The nodes this client has a session with. */
  readonly nodes: readonly number[];
}

export interface ProcessReport {
  readonly name: string;
  readonly pid: number;
  readonly alive: boolean;
}

export interface StatusReport {
  readonly cluster: string;
  readonly config: string;
  readonly dir?: string;
  readonly nodesUp: number;
  readonly nodes: readonly NodeReport[];
  readonly clients: readonly ClientReport[];
  /** Clients some node did not list (its list is bounded). */
  readonly clientsOmitted: number;
  readonly mounts: readonly ClientReport[];
  readonly gateways: readonly ClientReport[];
  /** The `dpms up` supervisor and its children (with --dir and a state.json). */
  readonly supervisor?: { readonly pid: number; readonly alive: boolean; readonly startedAt: string; readonly children: readonly ProcessReport[] };
}

/**
 * Lanes in use and in all. The daemon counts a lane busy when a client session holds it or an
 * in-doubt or unconfirmed log sits in it, so in use = those, and all = in use + free. When the
 * node omitted clients from its bounded list, the configured lane count stands in for the total.
 */
function laneUsage(status: NodeStatus, node: NodeConfig): { used: number; total: number } {
  if (status.clientsOmitted > 0) return { used: node.lanes - status.lanesFree, total: node.lanes };
  const used = status.clients.reduce((sum, client) => sum + client.lanes, 0) + status.inDoubt + status.unconfirmed;
  return { used, total: used + status.lanesFree };
}

/** Ask every node of the target's cluster for its status and put the report together. */
export async function collectStatus(target: Target, provider?: ProviderName): Promise<StatusReport> {
  let client: ClusterClient | undefined;
  let rows: Array<{ node: NodeConfig; status?: NodeStatus; error?: string }>;
  try {
    client = await ClusterClient.connect({
      config: target.config, provider, lanesPerNode: 0, connectTimeoutMs: CONNECT_TIMEOUT_MS, info: { role: 'cli', label: 'dpms status' },
    });
    rows = await client.status();
  } catch (error) {
    // No node answered at all: the error is the first node's, so say it is about the cluster.
    rows = target.config.nodes.map((node) => ({ node, error: `no node of the cluster answered (${(error as Error).message})` }));
  } finally {
    await client?.close();
  }
  const me = client?.info.instance;
  const clients = new Map<string, { summary: ClientSummary; nodes: number[] }>();
  let clientsOmitted = 0;
  for (const { node, status } of rows) {
    if (!status) continue;
    clientsOmitted = Math.max(clientsOmitted, status.clientsOmitted);
    for (const summary of status.clients) {
      if (summary.instance === me) continue; // this command's own connection
      const known = clients.get(summary.instance);
      if (known) known.nodes.push(node.id);
      else clients.set(summary.instance, { summary, nodes: [node.id] });
    }
  }
  const clientReports: ClientReport[] = [...clients.values()].map(({ summary, nodes }) => {
    const { clientId: _clientId, lanes: _lanes, ...rest } = summary;
    return { ...rest, nodes };
  });
  const nodes: NodeReport[] = rows.map(({ node, status, error }) => ({
    id: node.id, host: node.host, port: node.port, transport: node.transport, reachable: !!status, status, error,
    lanes: status ? laneUsage(status, node) : undefined,
  }));
  const state = target.state;
  return {
    cluster: target.config.name, config: target.configPath, dir: target.dir,
    nodesUp: nodes.filter((node) => node.reachable).length, nodes,
    clients: clientReports, clientsOmitted,
    mounts: clientReports.filter((entry) => entry.role === 'mount'),
    gateways: clientReports.filter((entry) => entry.role === 'gateway'),
    supervisor: state ? {
      pid: state.pid, alive: processAlive(state.pid), startedAt: state.startedAt,
      children: [
        ...state.nodes.map((node) => ({ name: `node ${node.id}`, pid: node.pid, alive: node.pid > 0 && processAlive(node.pid) })),
        ...(state.mount ? [{ name: `mount ${state.mount.dir}`, pid: state.mount.pid, alive: processAlive(state.mount.pid) }] : []),
        ...(state.gateway ? [{ name: `gateway ${state.gateway.host}:${state.gateway.port}`, pid: state.gateway.pid, alive: processAlive(state.gateway.pid) }] : []),
      ],
    } : undefined,
  };
}

function duration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

function describeClient(entry: ClientReport): string {
  const parts = [entry.role.padEnd(8), entry.label ?? '-'];
  if (entry.pid !== undefined) parts.push(`pid ${entry.pid}`);
  if (entry.host) parts.push(`on ${entry.host}`);
  parts.push(`nodes ${entry.nodes.join(',')}`);
  if (entry.metrics) parts.push(`metrics ${entry.metrics}`);
  return parts.join('  ');
}

/** The report as lines for a person. */
export function formatStatus(report: StatusReport): string {
  const lines = [`cluster ${report.cluster}: ${report.nodesUp}/${report.nodes.length} nodes up (${report.dir ?? report.config})`];
  for (const node of report.nodes) {
    const where = `node ${node.id}  ${`${node.host}:${node.port}`.padEnd(21)} ${node.transport.padEnd(5)}`;
    if (!node.status) {
      lines.push(`  ${where} DOWN  ${node.error ?? ''}`);
      continue;
    }
    const status = node.status;
    const usedBytes = status.chunksUsed * status.chunkBytes;
    const metrics = (status as { metrics?: string }).metrics; // set by nodes that serve metrics
    lines.push(`  ${where} up ${duration(status.uptimeMs)}${metrics ? `  metrics ${metrics}` : ''}`);
    lines.push(`      heap ${formatBytes(usedBytes)} / ${formatBytes(status.heapBytes)} used (${status.chunksUsed}/${status.chunkCount} chunks, ${status.objects} objects), pool ${formatBytes(status.poolBytes)}`);
    lines.push(`      log lanes ${node.lanes!.used}/${node.lanes!.total} in use, ${status.inDoubt} in doubt, ${status.unconfirmed} unconfirmed; ` +
      `${status.sessions} session(s), auth failures ${status.transportStats.authFailures ?? 0}, bad frames ${status.transportStats.badFrames ?? 0}`);
  }
  const omitted = report.clientsOmitted > 0 ? ` (and up to ${report.clientsOmitted} more a node did not list)` : '';
  lines.push('', `clients: ${report.clients.length}${omitted}`);
  for (const entry of report.clients) lines.push(`  ${describeClient(entry)}`);
  lines.push('', `file systems mounted: ${report.mounts.length}`);
  for (const entry of report.mounts) lines.push(`  ${entry.label ?? '?'}  (pid ${entry.pid ?? '?'}${entry.host ? ` on ${entry.host}` : ''})`);
  lines.push('', `gateways: ${report.gateways.length}`);
  for (const entry of report.gateways) lines.push(`  ${entry.label ?? '?'}  (pid ${entry.pid ?? '?'}${entry.host ? ` on ${entry.host}` : ''})`);
  if (report.supervisor) {
    const supervisor = report.supervisor;
    lines.push('', `dpms up: pid ${supervisor.pid} ${supervisor.alive ? 'running' : 'NOT RUNNING (killed? dpms down cleans up)'} since ${supervisor.startedAt}`);
    for (const child of supervisor.children) lines.push(`  ${child.name.padEnd(28)} pid ${String(child.pid).padEnd(8)} ${child.alive ? 'alive' : 'GONE'}`);
  } else if (report.dir) {
    lines.push('', 'dpms up: not running from this directory (no state.json)');
  }
  return lines.join('\n');
}

/** Exit status of a report: 0 all up, 1 some down, 3 none reachable. */
export function statusExitCode(report: StatusReport): number {
  if (report.nodesUp === report.nodes.length) return EXIT.ok;
  return report.nodesUp === 0 ? EXIT.failed : EXIT.problems;
}

export async function statusCommand(options: { dir?: string; config?: string; provider?: ProviderName; json: boolean }): Promise<number> {
  const target = resolveTarget({ dir: options.dir, config: options.config });
  const report = await collectStatus(target, options.provider);
  console.log(options.json ? JSON.stringify(report, null, 2) : formatStatus(report));
  return statusExitCode(report);
}

/** The status options, shared by `dpms status` and `dpms cluster status`. */
export function statusOptions(y: Argv): Argv<{ dir?: string; config?: string; provider?: string; json: boolean }> {
  return y
    .option('dir', { type: 'string', describe: `state directory of a dpms up (default ${DEFAULT_STATE_DIR} when --config is not given)` })
    .option('config', { type: 'string', describe: 'cluster config (YAML)' })
    .option('provider', { type: 'string', choices: ['local', 'tcp', 'verbs'], describe: 'reach every node with this provider' })
    .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
    .conflicts('dir', 'config');
}

export function registerStatusCommand(parser: Argv): Argv {
  return parser.command('status', 'show a cluster: nodes, capacity and usage, log lanes, clients, mounts, gateways (exit 0 all up, 1 some down, 3 none)',
    (y) => statusOptions(y),
    (argv) => run(() => statusCommand({ dir: argv.dir, config: argv.config, provider: argv.provider as ProviderName | undefined, json: argv.json })));
}
