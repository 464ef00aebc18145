// The state directory of `dpms up` (--dir, default ./.dpms) and how the operator commands find a
// cluster from it:
//
//   cluster.yaml   the cluster config, made by the first `dpms up` (secretFile: secret)
//   secret         the cluster secret, mode 0600
//   up.lock        flock held by the running `dpms up` supervisor (its pid written inside)
//   state.json     written by the supervisor once everything is up, removed at a clean stop
//   logs/          node-N.log, mount.log, gateway.log, up.log
//
// The pools live in /dev/shm/dpms-<8 hex of sha256(abs dir)>/ when /dev/shm exists (memory: fast,
// gone after a reboot), else in D/pools/. `resolveTarget` is how status, check, metrics and down
// turn `--dir D` or `--config C` into a config (and, for a dir, the supervisor's runtime state).

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { DpmsError, formatBytes, loadClusterConfig, parseSize, type ClusterConfig } from '../../pdsm';
import { freePort } from './local-cluster';

export const DEFAULT_STATE_DIR = '.dpms';
export const STATE_VERSION = 1;

/** Defaults that fit a small machine (3 × 256 MiB of memory); all stored in cluster.yaml at creation. */
export const UP_DEFAULTS = { nodes: 3, poolSize: '256M', transport: 'tcp', gatewayPort: 6380, mount: 'mnt' } as const;
export const MAX_UP_NODES = 16;
const MIN_POOL_BYTES = 16 * 1024 * 1024;
const MAX_POOL_BYTES = 2 ** 40;
/** state.json is small; anything bigger is not ours. */
const MAX_STATE_BYTES = 1024 * 1024;

export type UpTransport = 'tcp' | 'local';

export interface UpNodeState {
  readonly id: number;
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  readonly pool: string;
  /** http://127.0.0.1:P/metrics, or null when the node serves no metrics. */
  readonly metrics: string | null;
  readonly log: string;
}

export interface UpMountState {
  readonly dir: string;
  readonly pid: number;
  readonly metrics: string | null;
  readonly log: string;
}

export interface UpGatewayState {
  readonly host: string;
  readonly port: number;
  readonly pid: number;
  readonly metrics: string | null;
  readonly log: string;
}

/** D/state.json: what the running `dpms up` supervisor started, and where. */
export interface UpState {
  readonly version: 1;
  readonly pid: number;
  readonly startedAt: string;
  readonly dir: string;
  readonly config: string;
  readonly poolDir: string;
  readonly transport: UpTransport;
  readonly nodes: readonly UpNodeState[];
  readonly mount: UpMountState | null;
  readonly gateway: UpGatewayState | null;
}

export interface StatePaths {
  readonly dir: string;
  readonly config: string;
  readonly secret: string;
  readonly lock: string;
  readonly state: string;
  readonly logs: string;
  readonly upLog: string;
}

export function statePaths(dir: string = DEFAULT_STATE_DIR): StatePaths {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    config: path.join(abs, 'cluster.yaml'),
    secret: path.join(abs, 'secret'),
    lock: path.join(abs, 'up.lock'),
    state: path.join(abs, 'state.json'),
    logs: path.join(abs, 'logs'),
    upLog: path.join(abs, 'logs', 'up.log'),
  };
}

/** Where the pools of a state directory go: memory (/dev/shm) when the machine has it. */
export function poolDirFor(dir: string): string {
  const abs = path.resolve(dir);
  if (fs.existsSync('/dev/shm')) {
    const hash = createHash('sha256').update(abs).digest('hex').slice(0, 8);
    return path.join('/dev/shm', `dpms-${hash}`);
  }
  return path.join(abs, 'pools');
}

export function isMemoryPoolDir(poolDir: string): boolean {
  return poolDir.startsWith('/dev/shm/');
}

// ---- cluster settings ----

export interface UpSettings {
  readonly nodes: number;
  readonly poolBytes: number;
  readonly transport: UpTransport;
}

/** Validate --nodes, --pool-size and --transport as given (undefined: not given). */
export function parseUpSettings(given: { nodes?: number; poolSize?: string; transport?: string }): Partial<UpSettings> {
  const settings: { nodes?: number; poolBytes?: number; transport?: UpTransport } = {};
  if (given.nodes !== undefined) {
    if (!Number.isInteger(given.nodes) || given.nodes < 1 || given.nodes > MAX_UP_NODES) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `--nodes must be an integer from 1 to ${MAX_UP_NODES} (got ${given.nodes})`);
    }
    settings.nodes = given.nodes;
  }
  if (given.poolSize !== undefined) {
    const bytes = parseSize(given.poolSize, '--pool-size');
    const MiB = 1024 * 1024;
    if (bytes % MiB !== 0 || bytes < MIN_POOL_BYTES || bytes > MAX_POOL_BYTES) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `--pool-size must be a whole number of MiB from ${formatBytes(MIN_POOL_BYTES)} to ${formatBytes(MAX_POOL_BYTES)} (got ${given.poolSize})`);
    }
    settings.poolBytes = bytes;
  }
  if (given.transport !== undefined) {
    if (given.transport !== 'tcp' && given.transport !== 'local') throw new DpmsError('DPMS_INVALID_ARGUMENT', `--transport must be tcp or local (got ${given.transport})`);
    settings.transport = given.transport;
  }
  return settings;
}

/** The settings a cluster.yaml made by `dpms up` holds (node count, first node's pool size and transport). */
export function storedSettings(config: ClusterConfig): UpSettings {
  const first = config.nodes[0];
  return { nodes: config.nodes.length, poolBytes: first.sizeBytes, transport: first.transport === 'local' ? 'local' : 'tcp' };
}

/** Whether this process could listen on host:port now (false: EADDRINUSE or EACCES). */
export function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * Make the state directory's cluster the first time: cluster.yaml with free ports on 127.0.0.1 and
 * a random secret (mode 0600). Files are written to temporary names and renamed, so an interrupted
 * creation never leaves a half-written config behind.
 */
export async function createCluster(paths: StatePaths, settings: UpSettings, poolDir: string): Promise<void> {
  fs.mkdirSync(paths.dir, { recursive: true });
  writeFileAtomic(paths.secret, `${randomBytes(32).toString('hex')}\n`, 0o600);
  const lines = [
    `# The local cluster of \`dpms up\`, made ${new Date().toISOString()}. Edit sizes or the transport only`,
    '# before the pools are formatted; dpms up rewrites a node\'s port when another process has taken it.',
    'cluster: dpms-local',
    'secretFile: secret',
    'nodes:',
  ];
  const used = new Set<number>();
  for (let id = 1; id <= settings.nodes; id++) {
    let port = await freePort();
    while (used.has(port)) port = await freePort();
    used.add(port);
    const pool = path.join(poolDir, `node-${id}.pool`);
    lines.push(`  - { id: ${id}, host: 127.0.0.1, port: ${port}, pool: ${JSON.stringify(pool)}, size: ${settings.poolBytes / (1024 * 1024)}M, transport: ${settings.transport} }`);
  }
  writeFileAtomic(paths.config, lines.join('\n') + '\n', 0o644);
  loadClusterConfig(paths.config); // what we wrote must parse
}

/** Rewrite node ports in cluster.yaml (keeping its comments and layout); `ports` maps node id to port. */
export function rewriteNodePorts(configPath: string, ports: ReadonlyMap<number, number>): void {
  const document = YAML.parseDocument(fs.readFileSync(configPath, 'utf8'));
  const nodes = document.get('nodes') as YAML.YAMLSeq<YAML.YAMLMap> | undefined;
  if (!nodes || !YAML.isSeq(nodes)) throw new DpmsError('DPMS_CONFIG', `${configPath}: nodes is not a list`);
  for (const node of nodes.items) {
    const id = node.get('id');
    if (typeof id === 'number' && ports.has(id)) node.set('port', ports.get(id));
  }
  writeFileAtomic(configPath, document.toString(), 0o644);
  loadClusterConfig(configPath);
}

/** Write a file under a temporary name and rename it over the target (readers see old or new, never half). */
export function writeFileAtomic(filePath: string, text: string, mode: number): void {
  const temporary = `${filePath}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(temporary, text, { mode });
    fs.chmodSync(temporary, mode);
    fs.renameSync(temporary, filePath);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new DpmsError('DPMS_IO', `cannot write ${filePath}: ${(error as Error).message}`, { cause: error });
  }
}

/** Refuse (DPMS_NO_SPACE) when `bytes` would not fit in the file system holding `dir`. */
export function checkFreeSpace(dir: string, bytes: number, what: string, howToShrink: string): void {
  if (bytes <= 0) return;
  const stats = fs.statfsSync(dir);
  const freeBytes = stats.bavail * stats.bsize;
  if (bytes > freeBytes) {
    throw new DpmsError('DPMS_NO_SPACE', `${what} need ${formatBytes(bytes)} but ${dir} has only ${formatBytes(freeBytes)} free; ` +
      `free some space there, or ${howToShrink}`);
  }
}

// ---- state.json ----

export function writeUpState(paths: StatePaths, state: UpState): void {
  writeFileAtomic(paths.state, JSON.stringify(state, null, 2) + '\n', 0o644);
}

export function removeUpState(paths: StatePaths): void {
  fs.rmSync(paths.state, { force: true });
}

/** D/state.json, or undefined when there is none; DPMS_CONFIG when it is not what a supervisor writes. */
export function readUpState(paths: StatePaths): UpState | undefined {
  let text: string;
  try {
    const stat = fs.statSync(paths.state);
    if (stat.size > MAX_STATE_BYTES) throw new DpmsError('DPMS_CONFIG', `${paths.state} is ${stat.size} B, not a dpms up state file`);
    text = fs.readFileSync(paths.state, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (error instanceof DpmsError) throw error;
    throw new DpmsError('DPMS_IO', `cannot read ${paths.state}: ${(error as Error).message}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new DpmsError('DPMS_CONFIG', `${paths.state} is not JSON; if no dpms up is running from ${paths.dir}, remove it`);
  }
  const bad = (what: string): never => { throw new DpmsError('DPMS_CONFIG', `${paths.state}: ${what}; if no dpms up is running from ${paths.dir}, remove it`); };
  const record = (v: unknown, what: string): Record<string, unknown> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : bad(`${what} is not an object`));
  const isPid = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
  const isPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536;
  const text_ = (v: unknown, what: string): string => (typeof v === 'string' ? v : bad(`${what} is not a string`));
  const url = (v: unknown, what: string): string | null => (v === null || v === undefined ? null : text_(v, what));
  const root = record(value, 'the file');
  if (root.version !== STATE_VERSION) bad(`version ${String(root.version)} is not ${STATE_VERSION}`);
  if (!isPid(root.pid)) bad('pid is not a process id');
  if (!Array.isArray(root.nodes)) bad('nodes is not a list');
  const nodes = (root.nodes as unknown[]).map((entry, index) => {
    const node = record(entry, `nodes[${index}]`);
    if (!isPid(node.pid) || !isPort(node.port) || typeof node.id !== 'number') bad(`nodes[${index}] lacks id, pid or port`);
    return { id: node.id as number, pid: node.pid as number, host: text_(node.host, 'node host'), port: node.port as number, pool: text_(node.pool, 'node pool'), metrics: url(node.metrics, 'node metrics'), log: text_(node.log, 'node log') };
  });
  let mount: UpMountState | null = null;
  if (root.mount !== null && root.mount !== undefined) {
    const entry = record(root.mount, 'mount');
    if (!isPid(entry.pid)) bad('mount.pid is not a process id');
    mount = { dir: text_(entry.dir, 'mount.dir'), pid: entry.pid as number, metrics: url(entry.metrics, 'mount.metrics'), log: text_(entry.log, 'mount.log') };
  }
  let gateway: UpGatewayState | null = null;
  if (root.gateway !== null && root.gateway !== undefined) {
    const entry = record(root.gateway, 'gateway');
    if (!isPid(entry.pid) || !isPort(entry.port)) bad('gateway lacks pid or port');
    gateway = { host: text_(entry.host, 'gateway.host'), port: entry.port as number, pid: entry.pid as number, metrics: url(entry.metrics, 'gateway.metrics'), log: text_(entry.log, 'gateway.log') };
  }
  return {
    version: STATE_VERSION, pid: root.pid as number, startedAt: text_(root.startedAt, 'startedAt'), dir: text_(root.dir, 'dir'),
    config: text_(root.config, 'config'), poolDir: text_(root.poolDir, 'poolDir'), transport: root.transport === 'local' ? 'local' : 'tcp',
    nodes, mount, gateway,
  };
}

// ---- finding a cluster ----

export interface Target {
  readonly config: ClusterConfig;
  readonly configPath: string;
  /** The state directory, when the target was given as one. */
  readonly dir?: string;
  /** The supervisor's state.json, when there is one. */
  readonly state?: UpState;
}

/**
 * The cluster an operator command works on: `--config C` (a config file), or `--dir D` (default
 * ./.dpms: D/cluster.yaml, and D/state.json when a supervisor wrote one). DPMS_NOT_FOUND when the
 * directory holds no cluster, DPMS_CONFIG when its files are broken.
 */
export function resolveTarget(options: { dir?: string; config?: string }): Target {
  if (options.dir !== undefined && options.config !== undefined) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'give --dir or --config, not both');
  if (options.config !== undefined) {
    const configPath = path.resolve(options.config);
    return { config: loadClusterConfig(configPath), configPath };
  }
  const paths = statePaths(options.dir ?? DEFAULT_STATE_DIR);
  if (!fs.existsSync(paths.config)) {
    const why = fs.existsSync(paths.dir) ? `${paths.dir} holds no cluster (no cluster.yaml)` : `${paths.dir} does not exist`;
    throw new DpmsError('DPMS_NOT_FOUND', `${why}: start one with \`dpms up --dir ${paths.dir}\`, or name a cluster config with --config FILE`);
  }
  return { config: loadClusterConfig(paths.config), configPath: paths.config, dir: paths.dir, state: readUpState(paths) };
}

// ---- processes ----

/** Whether a process of that pid exists and is not a zombie (an exited child nobody reaped yet). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces and parentheses, so read after the last ')'.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: signal 0 is the best we have
  }
}

/** The command line of a live process (its arguments), or undefined. */
export function processCommandLine(pid: number): string[] | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((part) => part.length > 0);
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive and is a dpms process started with this config (so we may signal it). */
export function isOurProcess(pid: number, configPath: string): boolean {
  if (!processAlive(pid)) return false;
  const args = processCommandLine(pid);
  return args !== undefined && args.includes(configPath);
}

/** The supervisor's pid written into up.lock, if readable. */
export function lockHolderPid(paths: StatePaths): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(paths.lock, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
