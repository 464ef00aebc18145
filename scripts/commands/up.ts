// `dpms up` and `dpms down`: the whole system on one machine with one command.
//
// `dpms up` is a supervisor. It takes D/up.lock (one supervisor per state directory: a second one
// refuses before touching anything), makes the cluster the first time (state-dir.ts), formats
// missing pools with a progress bar, starts the node daemons, the FUSE mount and the RESP gateway
// as its children (each logging to D/logs/), writes D/state.json, prints what is where, and stays in
// the foreground until SIGINT/SIGTERM. Then it stops them in order: the mount first (it unmounts and
// flushes through the nodes), the gateway, the nodes last. A child that dies while up is logged
// loudly and restarted with backoff; the rest keeps running.
//
// The children run in their own process groups, so a Ctrl-C on the terminal reaches only the
// supervisor, which then stops them in order; with DPMS_STOP_WITH_PARENT=1 they also stop by
// themselves if the supervisor is killed (run.ts untilSignal).
//
// `dpms up --detach` starts the same supervisor in the background (output to D/logs/up.log), waits
// for its "ready" message on an extra pipe and prints the same summary. `dpms down` stops it: SIGTERM
// to the supervisor, or, when the supervisor is gone, to the children state.json names.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { lockFile, type FileLock } from '../../native';
import { createLogger, DpmsError, formatBytes, formatPoolFile, loadClusterConfig, LOG_LEVELS, type ClusterConfig, type Logger, type LogLevel, type NodeConfig } from '../../pdsm';
import { CLI_PATH, freePort } from './local-cluster';
import { forceUnmount, isMounted } from './local-mount';
import { startProgress } from './progress';
import { EXIT, run } from './run';
import {
  checkFreeSpace, createCluster, DEFAULT_STATE_DIR, isMemoryPoolDir, isOurProcess, lockHolderPid, parseUpSettings,
  poolDirFor, portIsFree, processAlive, readUpState, removeUpState, rewriteNodePorts, statePaths, storedSettings, UP_DEFAULTS,
  writeUpState, type StatePaths, type UpSettings, type UpState,
} from './state-dir';

/** How long a child may take to say it is ready (a node formats nothing: its pool is made before). */
const READY_TIMEOUT_MS = 60_000;
/** `--detach` waits this long for the supervisor to be up (formatting big pools takes a while). */
const DETACH_TIMEOUT_MS = 300_000;
const LOG_POLL_MS = 100;
/** A child that ignores SIGTERM this long is killed (the mount gets longer: it flushes open files). */
const STOP_TIMEOUT_MS = { mount: 30_000, gateway: 15_000, node: 30_000 } as const;
/** `dpms down` waits this long for the supervisor (its own stop timeouts add up to 75 s at worst). */
const DOWN_TIMEOUT_MS = 90_000;
const DOWN_REPORT_EVERY_MS = 5_000;
/** Restarts of a crashed child: at most this many within the window, with exponential backoff. */
const RESTART_LIMIT = 5;
const RESTART_WINDOW_MS = 10 * 60_000;
const RESTART_BACKOFF_MS = { first: 1_000, max: 30_000 } as const;
/** Lines of a child's log shown when it fails. */
const LOG_TAIL_LINES = 15;
/** The extra pipe a detached supervisor says "ready" on (as `dpms mount` does for background mounts). */
const READY_FD = 3;
const ENV_READY_FD = 'DPMS_UP_READY_FD';
const ENV_DETACHED = 'DPMS_UP_DETACHED';

// ---------------------------------------------------------------------------------------------
// THE ONE PLACE where `dpms up` passes the daemons' operator flags. Each daemon gets
// `--metrics-port 0` (a free port it picks itself, so no port race) and names its metrics URL in its
// ready line (", metrics http://127.0.0.1:P/metrics"), which the supervisor records in state.json.
// Set DAEMON_METRICS to false to run daemons built without these flags.
export const DAEMON_METRICS = true;
function daemonFlags(logLevel: string | undefined): string[] {
  const flags: string[] = [];
  if (DAEMON_METRICS) flags.push('--metrics-port', '0', '--metrics-host', '127.0.0.1');
  if (DAEMON_METRICS && logLevel !== undefined) flags.push('--log-level', logLevel);
  return flags;
}
const METRICS_URL = /metrics (http:\/\/\S+\/metrics)/;
// ---------------------------------------------------------------------------------------------

interface UpArguments {
  readonly dir: string;
  /** A directory, or false for --no-mount. */
  readonly mount?: string | false;
  readonly gateway: boolean;
  readonly port: number;
  readonly host: string;
  readonly nodes?: number;
  readonly poolSize?: string;
  readonly transport?: string;
  readonly detach: boolean;
  readonly logLevel?: string;
}

type ChildKind = 'node' | 'mount' | 'gateway';

/** One daemon the supervisor runs. */
interface Managed {
  readonly kind: ChildKind;
  /** "node 1", "mount", "gateway". */
  readonly name: string;
  readonly args: readonly string[];
  readonly log: string;
  /** Pulls the listening port out of the ready line (nodes, gateway). */
  readonly readyPattern?: RegExp;
  /** The metrics URL its ready line named. */
  metrics: string | null;
  child?: ChildProcess;
  /** The port its ready line named. */
  port?: number;
  restarts: number[];
  restartTimer?: NodeJS.Timeout;
}

function alreadyRunning(paths: StatePaths): DpmsError {
  const pid = readUpState(paths)?.pid ?? lockHolderPid(paths);
  return new DpmsError('DPMS_BUSY', `dpms is already running from ${paths.dir}${pid ? ` (pid ${pid})` : ''}; stop it with dpms down --dir ${paths.dir}`);
}

function tailOf(file: string, fromOffset = 0, lines = LOG_TAIL_LINES): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const start = Math.max(fromOffset, size - 64 * 1024);
      const buffer = Buffer.alloc(size - start);
      fs.readSync(fd, buffer, 0, buffer.length, start);
      return buffer.toString('utf8').trim().split('\n').slice(-lines).map((line) => `    ${line}`).join('\n');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '    (no log)';
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** What is mounted on `dir` per /proc/self/mounts: its type and source, or undefined. */
function mountAt(dir: string): { type: string; source: string } | undefined {
  const unescape = (text: string): string => text.replace(/\\(040|011|012|134)/g, (_, code: string) => String.fromCharCode(parseInt(code, 8)));
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [source, mountpoint, type] = line.split(' ');
    if (mountpoint !== undefined && unescape(mountpoint) === dir) return { type, source };
  }
  return undefined;
}

/**
 * The mount point, made if missing. Refused when something is mounted there (a stale dpms mount
 * whose server died is detached: we hold the state directory's lock, and a dead mount serves no one)
 * or when it holds files (the mount would hide them).
 */
function prepareMountpoint(dir: string, say: (line: string) => void): string {
  const abs = path.resolve(dir);
  const mounted = mountAt(abs);
  if (mounted) {
    let dead = false;
    try {
      fs.statSync(abs);
    } catch (error) {
      dead = (error as NodeJS.ErrnoException).code === 'ENOTCONN';
    }
    const ours = mounted.type === 'fuse.dpms' || mounted.source === 'dpms';
    if (!(dead && ours)) {
      throw new DpmsError('DPMS_BUSY', `${abs} is already a mount point (${mounted.type}${ours ? ', a dpms file system' : ''}); ` +
        `unmount it first (dpms umount ${abs}), or choose another directory with --mount DIR (or --no-mount)`);
    }
    say(`dpms: ${abs} holds a dead dpms mount (its process is gone); detaching it (fusermount3 -uz)`);
    forceUnmount(abs);
  }
  fs.mkdirSync(abs, { recursive: true });
  if (!fs.statSync(abs).isDirectory()) throw new DpmsError('DPMS_INVALID_ARGUMENT', `mount point ${abs} is not a directory; choose another with --mount DIR`);
  if (fs.readdirSync(abs).length > 0) {
    throw new DpmsError('DPMS_EXISTS', `mount point ${abs} is not empty (mounting would hide its files); empty it, or choose another directory with --mount DIR (or --no-mount)`);
  }
  return abs;
}

function describeSettings(settings: UpSettings): string {
  return `--nodes ${settings.nodes} --pool-size ${settings.poolBytes / (1024 * 1024)}M --transport ${settings.transport}`;
}

/**
 * Format the pools that do not exist yet, with one progress bar over all of them. formatPoolFile
 * allocates each file in slices when asked for progress (an honest bar, and a clean DPMS_NO_SPACE
 * now instead of a SIGBUS later when tmpfs runs out: every page is allocated). A pool is formatted
 * under a temporary name and renamed, so a file under a pool's real name is always a formatted
 * pool, even after an interrupted format. Existing pools are never touched.
 */
function formatPools(nodes: readonly NodeConfig[]): void {
  if (nodes.length === 0) return;
  const MiB = 1024 * 1024;
  const totalBytes = nodes.reduce((sum, node) => sum + node.sizeBytes, 0);
  const progress = startProgress({ label: `formatting ${nodes.length} pool${nodes.length > 1 ? 's' : ''}`, total: Math.ceil(totalBytes / MiB), unit: 'MiB' });
  let doneBefore = 0;
  try {
    for (const node of nodes) {
      const temporary = `${node.pool}.formatting`;
      fs.rmSync(temporary, { force: true }); // left by an interrupted format: never a pool
      formatPoolFile(temporary, {
        sizeBytes: node.sizeBytes, nodeId: node.id, laneCount: node.lanes,
        onProgress: (doneBytes) => progress.update(Math.floor((doneBefore + doneBytes) / MiB), `node ${node.id}`),
      });
      fs.renameSync(temporary, node.pool);
      doneBefore += node.sizeBytes;
    }
  } finally {
    progress.stop();
  }
}

/** The environment of a child daemon: it stops when the supervisor is gone. */
function childEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DPMS_STOP_WITH_PARENT: '1' };
  delete env[ENV_READY_FD];
  delete env[ENV_DETACHED];
  return env;
}

function exitedWithin(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.off('exit', onExit); resolve(false); }, timeoutMs);
    const onExit = (): void => { clearTimeout(timer); resolve(true); };
    child.once('exit', onExit);
  });
}

class Supervisor {
  private readonly children: Managed[] = [];
  private stopping = false;
  private interrupted = false;
  private readonly interruptWaiters: Array<() => void> = [];
  private state: UpState | undefined;
  private config!: ClusterConfig;
  private mountpoint: string | undefined;
  private readonly logger: Logger;
  private readonly logFd: number;
  private readonly detached = process.env[ENV_DETACHED] === '1';

  constructor(private readonly paths: StatePaths, private readonly argv: UpArguments, private readonly lock: FileLock) {
    // up.log gets JSON lines (like the daemons' logs); people get plain lines on the terminal. A
    // detached supervisor's stdout and stderr already go to up.log, so it writes events once.
    this.logFd = fs.openSync(paths.upLog, 'a');
    this.logger = createLogger({ component: 'up', fields: { dir: paths.dir }, fd: this.logFd, level: argv.logLevel as LogLevel | undefined });
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => this.interrupt(signal));
  }

  private say(line: string): void {
    console.error(line);
  }

  /** Something bad happened to a child: on the terminal and in up.log, whatever else goes on. */
  private loud(message: string, fields: Record<string, unknown> = {}): void {
    this.logger.error(fields, message);
    if (!this.detached) console.error(`dpms: ${message}`);
  }

  private interrupt(signal: string): void {
    if (this.interrupted) {
      this.say(`dpms: ${signal} again; still stopping (the children get SIGKILL after their time limit)`);
      return;
    }
    this.interrupted = true;
    this.logger.info({ signal }, 'stop requested');
    this.say(`\ndpms: ${signal}: stopping (mount, gateway, then nodes)...`);
    for (const wake of this.interruptWaiters.splice(0)) wake();
  }

  private untilInterrupted(): Promise<void> {
    if (this.interrupted) return Promise.resolve();
    return new Promise((resolve) => this.interruptWaiters.push(resolve));
  }

  private checkInterrupted(): void {
    if (this.interrupted) throw new DpmsError('DPMS_CLOSED', 'interrupted while starting; stopped what had started');
  }

  async run(): Promise<number> {
    this.logger.info('dpms up starting');
    try {
      await this.start();
    } catch (error) {
      this.logger.error({ err: error }, 'start failed');
      await this.stopAll();
      this.finish();
      throw error;
    }
    await this.untilInterrupted();
    await this.stopAll();
    this.finish();
    this.say(`dpms: stopped; the data stays in ${this.state?.poolDir ?? 'the pools'} (dpms up${this.dirFlag()} starts it again)`);
    return EXIT.ok;
  }

  private dirFlag(): string {
    return this.paths.dir === path.resolve(DEFAULT_STATE_DIR) ? '' : ` --dir ${this.paths.dir}`;
  }

  private finish(): void {
    removeUpState(this.paths);
    this.logger.info('dpms up stopped');
    fs.closeSync(this.logFd);
    this.lock.release();
  }

  private async start(): Promise<void> {
    const { argv, paths } = this;
    const given = parseUpSettings({ nodes: argv.nodes, poolSize: argv.poolSize, transport: argv.transport });
    // Everything that can be refused is checked before anything is made or started.
    const mountpoint = argv.mount === false ? undefined : prepareMountpoint(argv.mount ?? UP_DEFAULTS.mount, (line) => this.say(line));
    this.mountpoint = mountpoint;
    if (argv.gateway) {
      if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--port must be 0..65535 (got ${argv.port})`);
      if (argv.port !== 0 && !await portIsFree(argv.port, argv.host)) {
        throw new DpmsError('DPMS_BUSY', `port ${argv.port} on ${argv.host} is in use by another process (a Redis server? another dpms?); ` +
          `choose another with --port N, or start without the gateway (--no-gateway)`);
      }
    }

    // The cluster: made the first time, with the settings given now or the defaults.
    const existed = fs.existsSync(paths.config);
    const poolDir = poolDirFor(paths.dir);
    if (!existed) {
      const settings: UpSettings = {
        nodes: given.nodes ?? UP_DEFAULTS.nodes,
        poolBytes: given.poolBytes ?? parseUpSettings({ poolSize: UP_DEFAULTS.poolSize }).poolBytes!,
        transport: given.transport ?? UP_DEFAULTS.transport,
      };
      fs.mkdirSync(poolDir, { recursive: true, mode: 0o700 });
      checkFreeSpace(poolDir, settings.nodes * settings.poolBytes, `${settings.nodes} pools of ${formatBytes(settings.poolBytes)}`,
        'choose smaller pools (--pool-size 64M) or fewer nodes (--nodes N)');
      await createCluster(paths, settings, poolDir);
      this.say(`dpms: made a new cluster in ${paths.dir} (${describeSettings(settings)})`);
    }
    let config = loadClusterConfig(paths.config);
    if (existed) {
      const stored = storedSettings(config);
      const differs = (given.nodes !== undefined && given.nodes !== stored.nodes) || (given.poolBytes !== undefined && given.poolBytes !== stored.poolBytes) ||
        (given.transport !== undefined && given.transport !== stored.transport);
      if (differs) {
        this.say(`dpms: note: the cluster in ${paths.dir} was made with ${describeSettings(stored)} (stored in ${paths.config}); ` +
          `the flags given now are ignored. To change them, stop it and remove ${paths.dir} and its pools (losing the data).`);
      }
    }

    // Ports are not on media: a node port another process took since is replaced by a free one.
    const moved = new Map<number, number>();
    for (const node of config.nodes) {
      if (!await portIsFree(node.port, node.host)) {
        const port = await freePort();
        moved.set(node.id, port);
        this.say(`dpms: node ${node.id}'s port ${node.port} is taken by another process; using ${port} (cluster.yaml updated)`);
      }
    }
    if (moved.size > 0) {
      rewriteNodePorts(paths.config, moved);
      config = loadClusterConfig(paths.config);
    }
    this.config = config;

    // Pools: all there (used as they are), or none (new empty ones), never some.
    const missing = config.nodes.filter((node) => !fs.existsSync(node.pool));
    if (missing.length > 0 && missing.length < config.nodes.length) {
      throw new DpmsError('DPMS_NOT_FOUND', `the pools of node(s) ${missing.map((node) => node.id).join(', ')} are missing (${missing.map((node) => node.pool).join(', ')}) ` +
        `while the others hold data; restore them, or remove all the pools (${path.dirname(missing[0].pool)}) to start over with an empty cluster`);
    }
    if (missing.length > 0) {
      if (existed) {
        this.say(`dpms: the pools in ${path.dirname(missing[0].pool)} are gone${isMemoryPoolDir(missing[0].pool) ? ' (/dev/shm is memory: a reboot clears it)' : ''}; ` +
          'starting with new, empty pools');
      }
      for (const dir of new Set(missing.map((node) => path.dirname(node.pool)))) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      checkFreeSpace(path.dirname(missing[0].pool), missing.reduce((sum, node) => sum + node.sizeBytes, 0), `${missing.length} pools`,
        `make the pools smaller: edit size in ${paths.config} (or remove ${paths.dir} and run dpms up --pool-size 64M)`);
      formatPools(missing);
    }
    this.checkInterrupted();

    // The daemons: nodes first (the mount and the gateway connect to them), each ready before the next.
    fs.mkdirSync(paths.logs, { recursive: true });
    for (const node of config.nodes) {
      await this.startChild(this.manage({
        kind: 'node', name: `node ${node.id}`, log: path.join(paths.logs, `node-${node.id}.log`), readyPattern: /ready on port (\d+)/,
        args: ['node', 'start', '--config', paths.config, '--id', String(node.id), ...daemonFlags(argv.logLevel)],
        metrics: null,
      }));
    }
    if (mountpoint) {
      await this.startChild(this.manage({
        kind: 'mount', name: 'mount', log: path.join(paths.logs, 'mount.log'),
        args: ['mount', mountpoint, '--config', paths.config, '--foreground', ...daemonFlags(argv.logLevel)],
        metrics: null,
      }));
    }
    if (argv.gateway) {
      await this.startChild(this.manage({
        kind: 'gateway', name: 'gateway', log: path.join(paths.logs, 'gateway.log'), readyPattern: /ready on port (\d+)/,
        args: ['kv', 'serve', '--config', paths.config, '--port', String(argv.port), '--host', argv.host, ...daemonFlags(argv.logLevel)],
        metrics: null,
      }));
    }
    this.checkInterrupted();

    this.writeState(poolDir);
    const state = this.state!;
    this.logger.info({ state }, 'dpms up ready');
    console.log(summary(state, { detached: this.detached, dirFlag: this.dirFlag() }));
    const readyFd = process.env[ENV_READY_FD];
    if (readyFd !== undefined) {
      // `dpms up --detach` waits on this pipe; it prints the summary from the state.
      try {
        fs.writeSync(Number(readyFd), `${JSON.stringify(state)}\n`);
        fs.closeSync(Number(readyFd));
      } catch {
        // the waiting parent is gone (interrupted); running on is still right
      }
    }
  }

  private manage(spec: Omit<Managed, 'restarts'>): Managed {
    const managed: Managed = { ...spec, restarts: [] };
    this.children.push(managed);
    return managed;
  }

  private writeState(poolDir = this.state?.poolDir ?? poolDirFor(this.paths.dir)): void {
    const pidOf = (managed: Managed): number => managed.child?.pid ?? 0;
    const nodes = this.children.filter((managed) => managed.kind === 'node');
    const mount = this.children.find((managed) => managed.kind === 'mount');
    const gateway = this.children.find((managed) => managed.kind === 'gateway');
    this.state = {
      version: 1, pid: process.pid, startedAt: this.state?.startedAt ?? new Date().toISOString(), dir: this.paths.dir, config: this.paths.config,
      poolDir, transport: storedSettings(this.config).transport,
      nodes: this.config.nodes.map((node, index) => ({
        id: node.id, pid: pidOf(nodes[index]), host: node.host, port: nodes[index].port ?? node.port, pool: node.pool, metrics: nodes[index].metrics, log: nodes[index].log,
      })),
      mount: mount && this.mountpoint ? { dir: this.mountpoint, pid: pidOf(mount), metrics: mount.metrics, log: mount.log } : null,
      gateway: gateway ? { host: this.argv.host, port: gateway.port ?? this.argv.port, pid: pidOf(gateway), metrics: gateway.metrics, log: gateway.log } : null,
    };
    writeUpState(this.paths, this.state);
  }

  /** Start one child and wait until it says it is ready; on failure it is stopped and the error carries its log's tail. */
  private async startChild(managed: Managed): Promise<void> {
    this.checkInterrupted();
    fs.mkdirSync(path.dirname(managed.log), { recursive: true });
    const offset = fileSize(managed.log);
    const logFd = fs.openSync(managed.log, 'a');
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', logFd, logFd];
    if (managed.kind === 'mount') stdio.push('pipe'); // `dpms mount --foreground` writes its ready line on fd 3
    let child: ChildProcess;
    try {
      // detached: its own process group, so a Ctrl-C on the terminal reaches the supervisor only.
      child = spawn(process.execPath, [CLI_PATH, ...managed.args], { detached: true, stdio, env: childEnvironment() });
    } finally {
      fs.closeSync(logFd);
    }
    managed.child = child;
    child.on('error', (error) => this.loud(`${managed.name} could not be started: ${error.message}`));
    const exitPromise = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? `exit status ${code}`)));
    let readyText = '';
    const readyPipe = managed.kind === 'mount' ? child.stdio[READY_FD] as NodeJS.ReadableStream | null : null;
    readyPipe?.on('data', (chunk: Buffer) => { readyText += chunk.toString(); });
    readyPipe?.on('error', () => {});
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let failure: string | undefined;
    let exited: string | undefined;
    void exitPromise.then((how) => { exited = how; });
    for (;;) {
      if (managed.kind === 'mount') {
        if (readyText.includes('\n')) {
          managed.metrics = METRICS_URL.exec(readyText)?.[1] ?? null;
          break;
        }
      } else {
        const text = tailText(managed.log, offset);
        const match = managed.readyPattern!.exec(text);
        if (match) {
          managed.port = Number(match[1]);
          // The ready line is one line: the URL, if any, is on it.
          const line = text.slice(match.index).split('\n')[0];
          managed.metrics = METRICS_URL.exec(line)?.[1] ?? null;
          break;
        }
      }
      if (exited !== undefined) { failure = `exited (${exited}) while starting`; break; }
      if (this.interrupted) { failure = 'interrupted while starting'; break; }
      if (Date.now() > deadline) { failure = `did not say it was ready within ${READY_TIMEOUT_MS / 1000} s`; break; }
      await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
    }
    readyPipe?.removeAllListeners('data');
    (readyPipe as { destroy?: () => void } | null)?.destroy?.();
    if (failure !== undefined) {
      await this.stopChild(managed);
      const code = this.interrupted ? 'DPMS_CLOSED' : exited !== undefined ? 'DPMS_IO' : 'DPMS_TIMEOUT';
      throw new DpmsError(code, `${managed.name} ${failure}; the end of its log ${managed.log}:\n${tailOf(managed.log, offset)}`);
    }
    this.logger.info({ child: managed.name, childPid: child.pid, port: managed.port, metrics: managed.metrics }, 'child ready');
    this.say(`dpms: ${managed.name} ready (pid ${child.pid}${managed.port ? `, port ${managed.port}` : ''})`);
    void exitPromise.then((how) => this.onExit(managed, child, how));
  }

  /** A child ended while up: say so loudly, keep the rest running, and restart it with backoff. */
  private onExit(managed: Managed, child: ChildProcess, how: string): void {
    if (this.stopping || managed.child !== child) return;
    this.loud(`${managed.name} (pid ${child.pid}) exited unexpectedly (${how}); the rest keeps running. The end of its log ${managed.log}:\n${tailOf(managed.log)}`,
      { child: managed.name, childPid: child.pid, how });
    const now = Date.now();
    managed.restarts = managed.restarts.filter((at) => now - at < RESTART_WINDOW_MS);
    if (managed.restarts.length >= RESTART_LIMIT) {
      this.loud(`${managed.name} crashed ${RESTART_LIMIT} times in ${RESTART_WINDOW_MS / 60_000} minutes; not restarting it again (dpms status shows it down; dpms down, then dpms up, to retry)`);
      return;
    }
    const delayMs = Math.min(RESTART_BACKOFF_MS.max, RESTART_BACKOFF_MS.first * 2 ** managed.restarts.length);
    managed.restarts.push(now);
    this.say(`dpms: restarting ${managed.name} in ${delayMs / 1000} s`);
    managed.restartTimer = setTimeout(() => {
      managed.restartTimer = undefined;
      if (this.stopping) return;
      // A mount whose process died leaves a dead FUSE mount behind; detach it before mounting again.
      if (managed.kind === 'mount' && this.mountpoint) forceUnmount(this.mountpoint);
      this.startChild(managed).then(() => {
        this.writeState();
        this.logger.warn({ child: managed.name, childPid: managed.child?.pid }, 'child restarted');
      }, (error: unknown) => {
        if (this.stopping) return;
        this.loud(`restarting ${managed.name} failed: ${(error as Error).message}`);
        const next = managed.child;
        if (next) this.onExit(managed, next, 'failed to restart');
      });
    }, delayMs);
  }

  /** SIGTERM, then SIGKILL after the kind's time limit; resolves when the child has exited. */
  private async stopChild(managed: Managed): Promise<void> {
    clearTimeout(managed.restartTimer);
    const child = managed.child;
    if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    child.kill('SIGTERM');
    if (await exitedWithin(child, STOP_TIMEOUT_MS[managed.kind])) return;
    this.loud(`${managed.name} (pid ${child.pid}) did not stop within ${STOP_TIMEOUT_MS[managed.kind] / 1000} s of SIGTERM; killing it`);
    child.kill('SIGKILL');
    await exitedWithin(child, STOP_TIMEOUT_MS[managed.kind]);
  }

  /** Stop in order: the mount (it unmounts, flushing through the nodes), the gateway, then every node. */
  private async stopAll(): Promise<void> {
    this.stopping = true;
    for (const managed of this.children) clearTimeout(managed.restartTimer);
    for (const kind of ['mount', 'gateway'] as const) {
      for (const managed of this.children.filter((candidate) => candidate.kind === kind)) await this.stopChild(managed);
    }
    if (this.mountpoint && isMounted(this.mountpoint)) {
      this.loud(`${this.mountpoint} was still mounted after the mount process ended; detaching it (fusermount3 -uz)`);
      forceUnmount(this.mountpoint);
    }
    await Promise.all(this.children.filter((managed) => managed.kind === 'node').map((managed) => this.stopChild(managed)));
  }
}

/** The text of a log from `offset` on (bounded: a ready line is near the start). */
function tailText(file: string, offset: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(Math.min(256 * 1024, Math.max(0, fs.fstatSync(fd).size - offset)));
      const read = fs.readSync(fd, buffer, 0, buffer.length, offset);
      return buffer.subarray(0, read).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** What is where and how to use it, after `dpms up` (also printed by `dpms up --detach`). */
export function summary(state: UpState, options: { detached: boolean; dirFlag: string }): string {
  const lines = [`dpms is up: ${state.nodes.length} nodes, supervisor pid ${state.pid}${options.detached ? ' (in the background)' : ''}`, ''];
  const row = (what: string, text: string): void => { lines.push(`  ${what.padEnd(12)} ${text}`); };
  if (state.mount) {
    row('file system', `${state.mount.dir}`);
    row('', `try: ls ${state.mount.dir}; echo hello > ${path.join(state.mount.dir, 'hello.txt')}`);
  }
  if (state.gateway) {
    row('key-value', `${state.gateway.host}:${state.gateway.port} (Redis protocol, store 'default')`);
    row('', `try: redis-cli -p ${state.gateway.port}${state.gateway.host === '127.0.0.1' ? '' : ` -h ${state.gateway.host}`} set k v`);
  }
  row('nodes', state.nodes.map((node) => `${node.id}: ${node.host}:${node.port}`).join(', ') + ` (${state.transport})`);
  row('pools', `${state.poolDir}${isMemoryPoolDir(state.poolDir) ? ' (memory: /dev/shm does not survive a reboot)' : ''}`);
  row('logs', path.join(state.dir, 'logs'));
  const metrics = [
    ...state.nodes.filter((node) => node.metrics).map((node) => `node ${node.id} ${node.metrics}`),
    ...(state.mount?.metrics ? [`mount ${state.mount.metrics}`] : []),
    ...(state.gateway?.metrics ? [`gateway ${state.gateway.metrics}`] : []),
  ];
  if (metrics.length > 0) {
    row('metrics', metrics[0]);
    for (const more of metrics.slice(1)) row('', more);
  }
  row('status', `dpms status${options.dirFlag}`);
  row('stop', options.detached ? `dpms down${options.dirFlag}` : `Ctrl-C here, or dpms down${options.dirFlag}`);
  return lines.join('\n');
}

/** The arguments of the supervisor a `--detach` starts: the same, without --detach, with absolute paths. */
function supervisorArguments(argv: UpArguments, paths: StatePaths): string[] {
  const args = ['up', '--dir', paths.dir];
  if (argv.mount === false) args.push('--no-mount');
  else args.push('--mount', path.resolve(argv.mount ?? UP_DEFAULTS.mount));
  if (!argv.gateway) args.push('--no-gateway');
  args.push('--port', String(argv.port), '--host', argv.host);
  if (argv.nodes !== undefined) args.push('--nodes', String(argv.nodes));
  if (argv.poolSize !== undefined) args.push('--pool-size', argv.poolSize);
  if (argv.transport !== undefined) args.push('--transport', argv.transport);
  if (argv.logLevel !== undefined) args.push('--log-level', argv.logLevel);
  return args;
}

/** `dpms up --detach`: the supervisor in the background; returns once it says it is ready (or failed). */
async function detach(argv: UpArguments, paths: StatePaths): Promise<number> {
  // Fail fast, with the same message, when one is already running (the supervisor checks again).
  const probe = lockFile(paths.lock);
  if (!probe) throw alreadyRunning(paths);
  probe.release();
  const offset = fileSize(paths.upLog);
  const logFd = fs.openSync(paths.upLog, 'a');
  const env: NodeJS.ProcessEnv = { ...process.env, [ENV_READY_FD]: String(READY_FD), [ENV_DETACHED]: '1' };
  delete env.DPMS_STOP_WITH_PARENT; // the supervisor outlives this command
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [CLI_PATH, ...supervisorArguments(argv, paths)], { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'], env });
  } finally {
    fs.closeSync(logFd);
  }
  console.error(`dpms: starting in the background (pid ${child.pid}; log ${paths.upLog})...`);
  const pipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
  const stopWaiting = (): void => { child.kill('SIGTERM'); };
  process.once('SIGINT', stopWaiting);
  process.once('SIGTERM', stopWaiting);
  // Pass on what the supervisor says on its way up (a new cluster, format progress, moved ports,
  // children ready): it writes to its log, and the person waiting here wants to see it.
  let echoed = offset;
  let echoedAny = false;
  const echo = (): void => {
    const text = tailText(paths.upLog, echoed);
    const complete = text.lastIndexOf('\n') + 1;
    echoed += Buffer.byteLength(text.slice(0, complete));
    for (const line of text.slice(0, complete).split('\n')) if (/^(dpms: |formatting )/.test(line)) {
      console.error(line);
      echoedAny = true;
    }
  };
  const echoTimer = setInterval(echo, LOG_POLL_MS * 2);
  const text = await new Promise<string>((resolve) => {
    let received = '';
    const timer = setTimeout(() => { child.kill('SIGTERM'); resolve(''); }, DETACH_TIMEOUT_MS);
    const done = (): void => { clearTimeout(timer); clearInterval(echoTimer); resolve(received); };
    pipe.on('data', (chunk: Buffer) => {
      received += chunk.toString();
      if (received.includes('\n')) done();
    });
    pipe.on('error', () => done());
    pipe.on('end', done);
    child.on('exit', done);
  });
  process.off('SIGINT', stopWaiting);
  process.off('SIGTERM', stopWaiting);
  (pipe as unknown as { destroy(): void }).destroy();
  echo();
  let state: UpState | undefined;
  try {
    state = text.trim() ? JSON.parse(text.trim()) as UpState : undefined;
  } catch {
    state = undefined;
  }
  if (!state) {
    // Wait briefly for the supervisor's own clean-up and last words before showing them.
    await exitedWithin(child, 5000);
    // Its own words (plain lines, echoed above) say what went wrong; without any, show the raw tail.
    echo();
    console.error(`dpms: dpms up did not come up; its log: ${paths.upLog}${echoedAny ? '' : `\n${tailOf(paths.upLog, offset)}`}`);
    return EXIT.failed;
  }
  child.unref();
  console.log(summary(state, { detached: true, dirFlag: state.dir === path.resolve(DEFAULT_STATE_DIR) ? '' : ` --dir ${state.dir}` }));
  return EXIT.ok;
}

async function up(argv: UpArguments): Promise<number> {
  // Bad arguments are refused before the state directory is made (the supervisor checks them again).
  parseUpSettings({ nodes: argv.nodes, poolSize: argv.poolSize, transport: argv.transport });
  if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--port must be 0..65535 (got ${argv.port})`);
  const paths = statePaths(argv.dir);
  fs.mkdirSync(paths.logs, { recursive: true });
  if (argv.detach) return detach(argv, paths);
  const lock = lockFile(paths.lock);
  // Held: another supervisor runs from this directory. Nothing here touched its pools (and each
  // node's own flock on its pool is a second guard).
  if (!lock) throw alreadyRunning(paths);
  fs.writeFileSync(paths.lock, `${process.pid}\n`);
  const stale = readUpState(paths);
  if (stale) {
    // We hold the lock, so the supervisor that wrote it was killed. Its children stop by themselves
    // (DPMS_STOP_WITH_PARENT), but maybe not yet: wait for them, so that the new nodes find their
    // pools free, and detach a mount that died with them.
    console.error(`dpms: cleaning up after a dpms up that was killed (pid ${stale.pid})`);
    await stopLeftovers(stale);
    if (stale.mount && isMounted(stale.mount.dir)) forceUnmount(stale.mount.dir);
    removeUpState(paths);
  }
  return new Supervisor(paths, argv, lock).run();
}

// ---- dpms down ----

async function waitGone(pid: number, timeoutMs: number, label: string): Promise<boolean> {
  const started = Date.now();
  let reported = started;
  while (processAlive(pid)) {
    if (Date.now() - started > timeoutMs) return false;
    if (Date.now() - reported >= DOWN_REPORT_EVERY_MS) {
      reported = Date.now();
      console.error(`dpms: waiting for ${label} (pid ${pid}) to stop: ${Math.round((reported - started) / 1000)} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
  }
  return true;
}

/** Stop the children state.json names that still run (a supervisor killed with SIGKILL), mount first. */
async function stopLeftovers(state: UpState): Promise<string[]> {
  const stopped: string[] = [];
  const groups: Array<Array<{ name: string; pid: number }>> = [
    state.mount ? [{ name: 'mount', pid: state.mount.pid }] : [],
    state.gateway ? [{ name: 'gateway', pid: state.gateway.pid }] : [],
    state.nodes.map((node) => ({ name: `node ${node.id}`, pid: node.pid })),
  ];
  for (const group of groups) {
    // Only processes that are really ours: alive, and started with this directory's config.
    const ours = group.filter((entry) => isOurProcess(entry.pid, state.config));
    for (const entry of ours) process.kill(entry.pid, 'SIGTERM');
    await Promise.all(ours.map(async (entry) => {
      if (!await waitGone(entry.pid, STOP_TIMEOUT_MS.node, entry.name)) {
        console.error(`dpms: ${entry.name} (pid ${entry.pid}) ignored SIGTERM; killing it`);
        process.kill(entry.pid, 'SIGKILL');
        await waitGone(entry.pid, 5000, entry.name);
      }
      stopped.push(`${entry.name} (pid ${entry.pid})`);
    }));
  }
  return stopped;
}

async function down(dir: string): Promise<number> {
  const paths = statePaths(dir);
  if (!fs.existsSync(paths.dir)) {
    console.log(`dpms: nothing is running from ${paths.dir} (no such directory)`);
    return EXIT.ok;
  }
  const state = readUpState(paths);
  const lock = fs.existsSync(paths.lock) ? lockFile(paths.lock) : undefined;
  const supervisorRunning = fs.existsSync(paths.lock) && !lock;
  try {
    if (supervisorRunning) {
      const pid = state?.pid ?? lockHolderPid(paths);
      if (pid === undefined || !processAlive(pid)) throw new DpmsError('DPMS_BUSY', `${paths.lock} is held but names no live process; find the dpms up holding it (fuser ${paths.lock})`);
      console.error(`dpms: stopping dpms up (pid ${pid}) from ${paths.dir}...`);
      process.kill(pid, 'SIGTERM');
      if (!await waitGone(pid, DOWN_TIMEOUT_MS, 'dpms up')) {
        throw new DpmsError('DPMS_TIMEOUT', `dpms up (pid ${pid}) did not stop within ${DOWN_TIMEOUT_MS / 1000} s; see ${paths.upLog}, then run dpms down again or kill -9 ${pid}`);
      }
    }
    // A supervisor that was killed outright leaves state.json and maybe children (they stop by
    // themselves within a second, DPMS_STOP_WITH_PARENT) and a dead mount.
    const leftovers = state ? await stopLeftovers(state) : [];
    if (leftovers.length > 0) console.error(`dpms: stopped what the supervisor left running: ${leftovers.join(', ')}`);
    if (state?.mount && isMounted(state.mount.dir)) {
      console.error(`dpms: detaching the stale mount ${state.mount.dir} (fusermount3 -uz)`);
      forceUnmount(state.mount.dir);
      if (isMounted(state.mount.dir)) throw new DpmsError('DPMS_BUSY', `${state.mount.dir} is still mounted; unmount it by hand (fusermount3 -uz ${state.mount.dir})`);
    }
    removeUpState(paths);
    if (supervisorRunning) console.log(`dpms: stopped${state ? `; the data stays in ${state.poolDir}` : ''}`);
    else if (state) console.log(`dpms: dpms up (pid ${state.pid}) was not running (killed?); cleaned up what it left`);
    else console.log(`dpms: nothing is running from ${paths.dir}`);
    return EXIT.ok;
  } finally {
    lock?.release();
  }
}

export function registerUpCommands(parser: Argv): Argv {
  return parser
    .command('up', 'start a local cluster (made the first time), mount its file system and serve its key-value store, until Ctrl-C', (y) => y
      .option('dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'state directory (config, secret, logs, lock)' })
      .option('mount', { type: 'string', describe: 'mount point, made if missing (default ./mnt; --no-mount: none)' })
      .option('gateway', { type: 'boolean', default: true, describe: 'serve the key-value store over the Redis protocol (--no-gateway: do not)' })
      .option('port', { type: 'number', default: UP_DEFAULTS.gatewayPort, describe: 'gateway port (0: any free port)' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'gateway address' })
      .option('nodes', { type: 'number', describe: `nodes of a new cluster (default ${UP_DEFAULTS.nodes})` })
      .option('pool-size', { type: 'string', describe: `pool size per node of a new cluster (default ${UP_DEFAULTS.poolSize})` })
      .option('transport', { type: 'string', choices: ['tcp', 'local'], describe: `transport of a new cluster (default ${UP_DEFAULTS.transport})` })
      .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'log level of the daemons and of up.log (default: $DPMS_LOG_LEVEL, else info)' })
      .option('detach', { alias: 'd', type: 'boolean', default: false, describe: 'run in the background (stop it with dpms down)' })
      .example('$0 up', 'a 3-node cluster in ./.dpms, mounted at ./mnt, Redis protocol on 127.0.0.1:6380')
      .example('$0 up --detach --dir /tmp/d --mount /tmp/m --port 7000 --pool-size 64M', ''),
    (argv) => run(() => up(argv as unknown as UpArguments)))
    .command('down', 'stop what `dpms up --detach` started (or what a killed dpms up left behind)', (y) => y
      .option('dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'state directory of the dpms up to stop' }),
    (argv) => run(() => down(argv.dir)));
}
