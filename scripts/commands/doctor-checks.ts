// The checks behind `dpms doctor` (doctor.ts prints them): each looks at one thing dpms needs from the
// machine (Node, the addon, FUSE, libpmem and where pools would live, RDMA devices, memory for the pools,
// the gateway port) and returns a result with a plain-words message and, when something is off, the fix.
// Checks never throw: a check that fails unexpectedly becomes a `fail` result that says so, so one odd
// machine detail never hides the rest of the report. Nothing here changes the machine except a small
// temporary file in the pool directory, removed before the check returns.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pmemInfo, rdmaDevices, type PmemInfo, type RdmaDevice } from '../../native';
import { formatBytes, loadClusterConfig, parseSize, type ClusterConfig } from '../../pdsm';
import { findExecutable } from './bench-kv-targets';
import { UP_DEFAULTS } from './state-dir';

/**
 * ok: fine. note: worth knowing, nothing to fix for development (emulated PM, a port in use).
 * warn: a feature is unavailable or degraded (no RDMA device) but dpms runs. fail: dpms cannot run.
 */
export type CheckStatus = 'ok' | 'note' | 'warn' | 'fail';

export interface CheckResult {
  /** Short stable name: node, addon, fuse-device, fuse-kernel, fusermount, fuse-conf, libpmem, pool-dir, rdma, rdma-device, memory, port, dir, config. */
  readonly check: string;
  readonly status: CheckStatus;
  readonly message: string;
  /** What to do about it (absent when there is nothing to do). */
  readonly fix?: string;
  /** Raw facts behind the message, for --json. */
  readonly details?: unknown;
}

export interface DoctorOptions {
  /** A `dpms up` state directory: its cluster.yaml decides the pool directory, sizes and node ports. */
  readonly dir?: string;
}

/** What `dpms up` starts when it makes a cluster (keep in step with scripts/commands/up.ts). */

const MIN_NODE_MAJOR = 20;
/** The temporary file pmemInfo maps in the pool directory: big enough for libpmem, small enough to never matter. */
const PROBE_BYTES = 2 * 1024 * 1024;
/** Bounds on what is read from /proc and sysfs files (they are small; a bound keeps a weird file harmless). */
const MAX_TEXT_BYTES = 1024 * 1024;

// statfs(2) f_type values of the file systems pools are likely to sit on (linux/magic.h).
const FS_TYPES: Readonly<Record<number, string>> = {
  0x01021994: 'tmpfs', 0x858458f6: 'ramfs', 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs',
  0x794c7630: 'overlay', 0x6969: 'nfs', 0x01021997: '9p', 0x65735546: 'fuse',
};

function readText(file: string): string | undefined {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(MAX_TEXT_BYTES);
      const length = fs.readSync(fd, buffer, 0, buffer.length, null);
      return buffer.subarray(0, length).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

const isRoot = (): boolean => process.getuid?.() === 0;

// ---- Node and the addon ----

function checkNode(): CheckResult {
  const major = Number(process.versions.node.split('.')[0]);
  if (major >= MIN_NODE_MAJOR) return { check: 'node', status: 'ok', message: `Node ${process.version} (dpms needs >= ${MIN_NODE_MAJOR})` };
  return { check: 'node', status: 'fail', message: `Node ${process.version} is too old: dpms needs Node >= ${MIN_NODE_MAJOR}`, fix: `install Node ${MIN_NODE_MAJOR} or newer (e.g. from nodesource or nvm)` };
}

function checkAddon(): CheckResult {
  // native/index.ts loaded the addon when this module was imported; require's cache says from where.
  const loaded = Object.keys(require.cache).find((file) => file.endsWith(`${path.sep}dpms_native.node`));
  return { check: 'addon', status: 'ok', message: `native addon loaded from ${loaded ?? '(unknown path)'}`, details: { path: loaded } };
}

// ---- FUSE ----

function checkFuseDevice(): CheckResult {
  if (!fs.existsSync('/dev/fuse')) {
    return { check: 'fuse-device', status: 'fail', message: '/dev/fuse does not exist: the file system cannot be mounted', fix: 'load the fuse module (modprobe fuse); in a container, run it with --device /dev/fuse' };
  }
  try {
    fs.closeSync(fs.openSync('/dev/fuse', fs.constants.O_RDWR));
    return { check: 'fuse-device', status: 'ok', message: '/dev/fuse exists and opens read-write' };
  } catch (error) {
    return { check: 'fuse-device', status: 'fail', message: `/dev/fuse cannot be opened read-write: ${(error as Error).message}`, fix: 'make /dev/fuse mode 0666 (chmod 666 /dev/fuse) or run dpms as root' };
  }
}

function checkFuseKernel(): CheckResult {
  const filesystems = readText('/proc/filesystems');
  if (filesystems === undefined) return { check: 'fuse-kernel', status: 'warn', message: 'cannot read /proc/filesystems to see whether the kernel has FUSE' };
  if (/^\s*nodev\s+fuse\s*$/m.test(filesystems)) return { check: 'fuse-kernel', status: 'ok', message: 'the kernel has the fuse file system type' };
  return { check: 'fuse-kernel', status: 'fail', message: 'the kernel has no fuse file system type (not in /proc/filesystems)', fix: 'modprobe fuse (or use a kernel built with CONFIG_FUSE_FS)' };
}

function checkFusermount(): CheckResult {
  const found = findExecutable('fusermount3');
  if (found === undefined) {
    // Root mounts without it, but unmounting (dpms umount, auto_unmount after a crash) runs it.
    return {
      check: 'fusermount', status: isRoot() ? 'warn' : 'fail',
      message: isRoot() ? 'fusermount3 is not on PATH: mounts work as root, but dpms umount and the clean-up of a crashed mount need it' : 'fusermount3 is not on PATH: a non-root user cannot mount',
      fix: 'install Debian\'s fuse3 package (apt-get install fuse3; not the conflicting "fuse")',
    };
  }
  const stat = fs.statSync(found);
  const setuidRoot = (stat.mode & 0o4000) !== 0 && stat.uid === 0;
  if (setuidRoot || isRoot()) {
    return { check: 'fusermount', status: 'ok', message: `${found}${setuidRoot ? ' (setuid root)' : ''}${isRoot() ? '; running as root' : ''}`, details: { path: found, setuidRoot } };
  }
  return { check: 'fusermount', status: 'fail', message: `${found} is not setuid root, so a non-root user cannot mount`, fix: `chown root ${found} && chmod u+s ${found} (reinstall fuse3), or run dpms as root`, details: { path: found, setuidRoot } };
}

function checkFuseConf(): CheckResult {
  // Mounts use allow_other (so the gateway, tests and other users see the files); for a non-root user
  // fusermount3 refuses that option unless /etc/fuse.conf allows it.
  if (isRoot()) return { check: 'fuse-conf', status: 'ok', message: 'running as root: allow_other needs no /etc/fuse.conf entry' };
  const conf = readText('/etc/fuse.conf');
  if (conf !== undefined && /^\s*user_allow_other\b/m.test(conf)) return { check: 'fuse-conf', status: 'ok', message: '/etc/fuse.conf has user_allow_other (mounts use allow_other)' };
  return { check: 'fuse-conf', status: 'fail', message: `${conf === undefined ? '/etc/fuse.conf is missing' : '/etc/fuse.conf lacks user_allow_other'}: a non-root mount with allow_other (what dpms mount uses) is refused`, fix: 'echo user_allow_other >> /etc/fuse.conf (as root)' };
}

// ---- libpmem and the pool directory ----

/** Where pools would live: the directories of the config's pools, else /dev/shm, else the temp directory. */
function defaultPoolDir(): string {
  try {
    if (fs.statSync('/dev/shm').isDirectory()) return '/dev/shm';
  } catch {
    // no /dev/shm
  }
  return os.tmpdir();
}

interface MountFacts {
  readonly mountPoint: string;
  readonly fsType: string;
  readonly options: readonly string[];
}

/** The /proc/mounts entry whose mount point holds `dir` (the longest matching prefix). */
function mountOf(dir: string): MountFacts | undefined {
  const text = readText('/proc/mounts');
  if (text === undefined) return undefined;
  let real = dir;
  try {
    real = fs.realpathSync(dir);
  } catch {
    // keep the path as given
  }
  let best: MountFacts | undefined;
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4) continue;
    // /proc/mounts escapes space, tab, newline and backslash as octal.
    const mountPoint = fields[1].replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    const inside = mountPoint === '/' || real === mountPoint || real.startsWith(`${mountPoint}/`);
    if (inside && (best === undefined || mountPoint.length >= best.mountPoint.length)) {
      best = { mountPoint, fsType: fields[2], options: fields[3].split(',') };
    }
  }
  return best;
}

/** The nearest existing directory at or above `dir` (a configured pool directory may not exist yet). */
function existingAncestor(dir: string): string {
  let current = path.resolve(dir);
  while (!fs.existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

function checkLibpmem(info: PmemInfo): CheckResult {
  const version = info.libpmemVersion;
  const packaged = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'libpmem1'], { encoding: 'utf8', timeout: 5000 });
  const packageVersion = packaged.status === 0 && packaged.stdout.trim() !== '' ? packaged.stdout.trim() : undefined;
  const described = `libpmem API ${version.major}.${version.minor}${packageVersion ? ` (Debian package libpmem1 ${packageVersion})` : ''}`;
  if (version.check !== null) {
    return { check: 'libpmem', status: 'fail', message: `${described}: the loaded library refuses the version the addon was built for: ${version.check}`, fix: 'rebuild the addon against the installed libpmem (npm run build:native)', details: version };
  }
  return { check: 'libpmem', status: 'ok', message: `${described} loads and maps files`, details: { ...version, packageVersion } };
}

/** libpmem's verdict on a probe file in the pool directory and the file system under it (plus the libpmem check itself when asked). */
function checkPoolDir(poolDir: string, withLibpmem: boolean): CheckResult[] {
  const dir = existingAncestor(poolDir);
  const where = dir === path.resolve(poolDir) ? dir : `${dir} (${poolDir} does not exist yet)`;
  const probe = path.join(dir, `.dpms-doctor-${process.pid}.probe`);
  try {
    fs.writeFileSync(probe, Buffer.alloc(PROBE_BYTES), { flag: 'wx', mode: 0o600 });
  } catch (error) {
    return [{ check: 'pool-dir', status: 'fail', message: `cannot create a file in the pool directory ${where}: ${(error as Error).message}`, fix: 'choose a writable directory for the pools (the pool: paths in cluster.yaml), or fix its permissions' }];
  }
  try {
    const info = pmemInfo(probe);
    const results = withLibpmem ? [checkLibpmem(info)] : [];
    const mount = mountOf(dir);
    let fsType = mount?.fsType;
    try {
      fsType ??= FS_TYPES[fs.statfsSync(dir).type] ?? `f_type 0x${fs.statfsSync(dir).type.toString(16)}`;
    } catch {
      fsType ??= 'unknown';
    }
    const dax = mount?.options.some((option) => option === 'dax' || option === 'dax=always') ?? false;
    const details = { poolDir, probedDir: dir, fsType, mountPoint: mount?.mountPoint, mountOptions: mount?.options, dax, ...info };
    const mountedAt = mount !== undefined && mount.mountPoint !== dir ? ` mounted at ${mount.mountPoint}` : '';
    const on = `${where} is on ${fsType}${mountedAt}${mount !== undefined ? (dax ? ' with dax' : ' without dax') : ''}`;
    if (info.isPmem) {
      results.push({ check: 'pool-dir', status: 'ok', message: `real PM (DAX): ${on}; libpmem maps it as persistent memory, so CPU cache flushes make writes durable${info.hasAutoFlush ? ' (eADR: the platform flushes caches on power loss)' : ''}`, details });
    } else if (dax) {
      results.push({ check: 'pool-dir', status: 'warn', message: `${on}, but libpmem does not take it for persistent memory (is_pmem=0): pools there are persisted with msync`, fix: 'check that the device is real PM (ndctl list) in fsdax mode and the file system supports DAX', details });
    } else if (fsType === 'tmpfs' || fsType === 'ramfs') {
      results.push({ check: 'pool-dir', status: 'note', message: `emulated PM: ${on}, i.e. in DRAM; fine for development, not durable across power loss or reboot`, fix: 'for durable pools, put them on a DAX file system on real PM (mount -o dax /dev/pmemN DIR) and set the pool: paths in cluster.yaml', details });
    } else {
      results.push({ check: 'pool-dir', status: 'note', message: `emulated PM: ${on}, i.e. page-cache files: every persist is an msync to the disk (slow); durable, but not PM`, fix: 'use /dev/shm for speed in development, or a DAX file system on real PM for durable, fast pools', details });
    }
    return results;
  } finally {
    fs.rmSync(probe, { force: true });
  }
}

// ---- RDMA ----

/** Facts that explain why there is no device and whether soft-RoCE could be added. */
function rdmaKernelFacts(): { release: string; sysfs: boolean; sysfsDevices: string[]; rxeLoaded: boolean; rxeModule?: string; modulesDir: boolean } {
  const release = os.release();
  const sysfs = fs.existsSync('/sys/class/infiniband');
  let sysfsDevices: string[] = [];
  try {
    sysfsDevices = fs.readdirSync('/sys/class/infiniband');
  } catch {
    // absent
  }
  const rxeLoaded = fs.existsSync('/sys/module/rdma_rxe') || /^rdma_rxe\s/m.test(readText('/proc/modules') ?? '');
  const modulesDir = fs.existsSync(path.join('/lib/modules', release));
  let rxeModule: string | undefined;
  if (modulesDir) {
    const modinfo = spawnSync('modinfo', ['-n', 'rdma_rxe'], { encoding: 'utf8', timeout: 5000 });
    if (modinfo.status === 0 && modinfo.stdout.trim() !== '') rxeModule = modinfo.stdout.trim();
    else if (/rdma_rxe\.ko/.test(readText(path.join('/lib/modules', release, 'modules.builtin')) ?? '')) rxeModule = '(built in)';
  }
  return { release, sysfs, sysfsDevices, rxeLoaded, rxeModule, modulesDir };
}

/** A network interface to suggest for `rdma link add` (the first non-loopback one with an address). */
function suggestedInterface(): string {
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    if (addresses?.some((address) => !address.internal)) return name;
  }
  return 'IFACE';
}

function checkRdma(): CheckResult[] {
  const devices = rdmaDevices();
  if (devices.length === 0) {
    const facts = rdmaKernelFacts();
    const iface = suggestedInterface();
    const addLink = `rdma link add rxe0 type rxe netdev ${iface}`;
    let situation: string;
    let fix: string;
    if (facts.sysfsDevices.length > 0) {
      situation = `the kernel has ${facts.sysfsDevices.join(', ')} but libibverbs finds no device: its user-space provider is missing`;
      fix = 'install the providers: apt-get install ibverbs-providers rdma-core';
    } else if (facts.rxeLoaded) {
      situation = 'the rdma_rxe module is loaded but no soft-RoCE link exists';
      fix = `add one: ${addLink}`;
    } else if (facts.rxeModule !== undefined) {
      situation = `this kernel, ${facts.release}, has the rdma_rxe module (${facts.rxeModule}), not loaded`;
      fix = `install an RDMA NIC, or add soft-RoCE: modprobe rdma_rxe && ${addLink}`;
    } else {
      situation = `this kernel, ${facts.release}, has no RDMA support${facts.sysfs ? '' : ' (/sys/class/infiniband is absent)'} and no rdma_rxe module (${facts.modulesDir ? 'modinfo rdma_rxe finds none' : `/lib/modules/${facts.release} does not exist`}), so soft-RoCE cannot be added here`;
      fix = `install an RDMA NIC, or run a kernel with rdma_rxe and add soft-RoCE: modprobe rdma_rxe && ${addLink}; scripts/rxe-vm.sh runs the verbs tests in a VM that has one`;
    }
    return [{
      check: 'rdma', status: 'warn',
      message: `no RDMA device: the verbs transport cannot run here; the tcp and local transports work. ${situation[0].toUpperCase()}${situation.slice(1)}`,
      fix, details: { devices: [], ...facts },
    }];
  }
  return [
    { check: 'rdma', status: 'ok', message: `${devices.length} RDMA device(s): ${devices.map((device) => device.name).join(', ')}` },
    ...devices.map(describeDevice),
  ];
}

function describeDevice(device: RdmaDevice): CheckResult {
  const head = `${device.name} (${device.transport}, GUID ${device.nodeGuid}${device.fwVersion ? `, fw ${device.fwVersion}` : ''})`;
  if (device.error !== undefined) {
    return { check: 'rdma-device', status: 'warn', message: `${head}: ${device.error}`, fix: 'check permissions on /dev/infiniband/* (or run as root) and the device driver (dmesg)', details: device };
  }
  if (device.ports.length === 0) return { check: 'rdma-device', status: 'warn', message: `${head}: no ports`, details: device };
  const inactive: string[] = [];
  const ports = device.ports.map((port) => {
    if (port.error !== undefined) {
      inactive.push(`port ${port.port}`);
      return `port ${port.port}: ${port.error}`;
    }
    if (port.state !== 'ACTIVE') inactive.push(`port ${port.port}`);
    const gids = (port.gids ?? []).map((gid) => `${gid.index} ${gid.gid}${gid.type ? ` ${gid.type}` : ''}${gid.netdev ? ` on ${gid.netdev}` : ''}`);
    const layer = port.linkLayer === 'Ethernet' ? 'Ethernet (RoCE)' : port.linkLayer;
    return `port ${port.port} ${port.state} (${port.physState}), ${layer}, MTU ${port.activeMtu}${port.linkLayer === 'InfiniBand' ? `, LID ${port.lid}` : ''}, GIDs: ${gids.length > 0 ? gids.join('; ') : 'none'}`;
  });
  const message = `${head}: ${ports.join(' | ')}`;
  if (inactive.length > 0) {
    return { check: 'rdma-device', status: 'warn', message, fix: `bring ${inactive.join(', ')} of ${device.name} up: check the cable / switch (IB needs a subnet manager: opensm), or the netdev under a RoCE port (ip link set IFACE up)`, details: device };
  }
  return { check: 'rdma-device', status: 'ok', message, details: device };
}

// ---- memory for the pools ----

function memAvailableBytes(): number | undefined {
  const match = /^MemAvailable:\s+(\d+)\s+kB$/m.exec(readText('/proc/meminfo') ?? '');
  return match ? Number(match[1]) * 1024 : undefined;
}

interface PoolPlan {
  /** Where the pools are (or would be) and how big. */
  readonly pools: readonly { readonly path?: string; readonly sizeBytes: number }[];
  /** Where the plan came from, for the message. */
  readonly source: string;
}

/** Bytes a pool still has to take: its size minus what an existing file already holds. */
function bytesStillNeeded(pool: { path?: string; sizeBytes: number }): number {
  if (pool.path === undefined) return pool.sizeBytes;
  try {
    const stat = fs.statSync(pool.path);
    return Math.max(0, pool.sizeBytes - Math.min(pool.sizeBytes, stat.blocks * 512));
  } catch {
    return pool.sizeBytes;
  }
}

function checkMemory(plan: PoolPlan, poolDir: string): CheckResult {
  const total = plan.pools.reduce((sum, pool) => sum + pool.sizeBytes, 0);
  const needed = plan.pools.reduce((sum, pool) => sum + bytesStillNeeded(pool), 0);
  const dir = existingAncestor(poolDir);
  const stat = fs.statfsSync(dir);
  const freeBytes = stat.bavail * stat.bsize;
  const available = memAvailableBytes();
  const fsType = mountOf(dir)?.fsType ?? FS_TYPES[stat.type];
  // tmpfs pages are memory: the pools must fit both the file system's limit and the free memory.
  const inMemory = fsType === 'tmpfs' || fsType === 'ramfs';
  const limit = inMemory && available !== undefined ? Math.min(freeBytes, available) : freeBytes;
  const sizes = plan.pools.length > 0 && plan.pools.every((pool) => pool.sizeBytes === plan.pools[0].sizeBytes)
    ? `${plan.pools.length} x ${formatBytes(plan.pools[0].sizeBytes)}` : plan.pools.map((pool) => formatBytes(pool.sizeBytes)).join(' + ');
  const what = `pools need ${formatBytes(total)} (${sizes}, ${plan.source})${needed < total ? `, ${formatBytes(needed)} of it not yet allocated` : ''}`;
  const has = `${dir} (${fsType ?? 'unknown'}) has ${formatBytes(freeBytes)} free${available !== undefined ? `, MemAvailable ${formatBytes(available)}` : ''}`;
  const details = { totalBytes: total, neededBytes: needed, poolDirFreeBytes: freeBytes, memAvailableBytes: available, limitBytes: limit, pools: plan.pools };
  const fix = 'free memory or disk space, or use smaller pools (the size: of each node in cluster.yaml)';
  if (needed > limit) return { check: 'memory', status: 'fail', message: `${what}, but ${has}: they do not fit`, fix, details };
  if (limit < 2 * needed) return { check: 'memory', status: 'warn', message: `${what}; ${has}: less than twice what they need`, fix, details };
  return { check: 'memory', status: 'ok', message: `${what}; ${has}`, details };
}

// ---- ports ----

/** Whether host:port can be listened on: undefined when free, else the error code (EADDRINUSE, EADDRNOTAVAIL, ...). */
function listenError(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}

async function checkPort(what: string, host: string, port: number, runningPid?: number): Promise<CheckResult> {
  const error = await listenError(host, port);
  const details = { host, port, inUse: error === 'EADDRINUSE', error };
  if (error === undefined) return { check: 'port', status: 'ok', message: `${host}:${port} (${what}) is free`, details };
  if (error === 'EADDRNOTAVAIL') return { check: 'port', status: 'note', message: `${host}:${port} (${what}): ${host} is not an address of this machine (a node that runs elsewhere?)`, details };
  if (error !== 'EADDRINUSE') return { check: 'port', status: 'warn', message: `${host}:${port} (${what}) cannot be listened on: ${error}`, fix: 'choose another port or host', details };
  const by = runningPid !== undefined ? ` by the running dpms up (pid ${runningPid})` : '';
  return {
    check: 'port', status: 'note', message: `${host}:${port} (${what}) is in use${by}`,
    fix: runningPid !== undefined ? undefined : `stop what listens there (ss -ltnp 'sport = :${port}'), or choose another port`,
    details,
  };
}

// ---- the state directory ----

interface DirFacts {
  readonly results: CheckResult[];
  readonly config?: ClusterConfig;
  readonly runningPid?: number;
  readonly gatewayPort?: number;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What --dir D says: a directory that does not exist yet is fine (dpms up creates it) and is checked
 * with dpms up's defaults; a D/cluster.yaml that does not load is a failure, as dpms up would fail too.
 */
function inspectDir(dir: string): DirFacts {
  const abs = path.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    return { results: [{ check: 'dir', status: 'note', message: `${abs} does not exist yet: \`dpms up --dir ${dir}\` creates it; checked with dpms up's defaults` }] };
  }
  if (!stat.isDirectory()) {
    return { results: [{ check: 'dir', status: 'fail', message: `${abs} is not a directory`, fix: 'give --dir a directory (dpms up keeps its state there)' }] };
  }
  const configPath = path.join(abs, 'cluster.yaml');
  if (!fs.existsSync(configPath)) {
    return { results: [{ check: 'dir', status: 'note', message: `${abs} has no cluster.yaml yet (dpms up makes it); checked with dpms up's defaults` }] };
  }
  let config: ClusterConfig;
  try {
    config = loadClusterConfig(configPath);
  } catch (error) {
    return { results: [{ check: 'config', status: 'fail', message: `${configPath} does not load: ${(error as Error).message}`, fix: `fix the file, or move ${abs} away so that dpms up makes a new one` }] };
  }
  let runningPid: number | undefined;
  let gatewayPort: number | undefined;
  const stateText = readText(path.join(abs, 'state.json'));
  if (stateText !== undefined) {
    try {
      const state = JSON.parse(stateText) as { pid?: unknown; gateway?: { port?: unknown } | null };
      if (typeof state.pid === 'number' && isAlive(state.pid)) runningPid = state.pid;
      if (typeof state.gateway?.port === 'number') gatewayPort = state.gateway.port;
    } catch {
      // a torn state.json says nothing; dpms status reports on it
    }
  }
  const running = runningPid !== undefined ? `; dpms up is running from it (pid ${runningPid})` : '';
  return {
    results: [{ check: 'config', status: 'ok', message: `${configPath}: cluster ${config.name}, ${config.nodes.length} node(s)${running}` }],
    config, runningPid, gatewayPort,
  };
}

// ---- all of them ----

/** Run one check; an unexpected exception becomes a failure that says which check broke. */
async function guarded(name: string, body: () => CheckResult | CheckResult[] | Promise<CheckResult | CheckResult[]>): Promise<CheckResult[]> {
  try {
    const result = await body();
    return Array.isArray(result) ? result : [result];
  } catch (error) {
    return [{ check: name, status: 'fail', message: `the check itself failed: ${(error as Error).message}`, fix: 'report this as a dpms bug, with the output of dpms doctor --json' }];
  }
}

export async function runDoctorChecks(options: DoctorOptions = {}): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const dirFacts: DirFacts = options.dir !== undefined ? inspectDir(options.dir) : { results: [] };
  results.push(...dirFacts.results);
  results.push(...await guarded('node', checkNode));
  results.push(...await guarded('addon', checkAddon));
  results.push(...await guarded('fuse-device', checkFuseDevice));
  results.push(...await guarded('fuse-kernel', checkFuseKernel));
  results.push(...await guarded('fusermount', checkFusermount));
  results.push(...await guarded('fuse-conf', checkFuseConf));

  const config = dirFacts.config;
  const poolDirs = config ? [...new Set(config.nodes.map((node) => path.dirname(node.pool)))] : [defaultPoolDir()];
  // libpmem is reported once, from the probe in the first pool directory.
  for (const [index, poolDir] of poolDirs.entries()) results.push(...await guarded('pool-dir', () => checkPoolDir(poolDir, index === 0)));

  results.push(...await guarded('rdma', checkRdma));

  for (const poolDir of poolDirs) {
    const plan: PoolPlan = config
      ? { pools: config.nodes.filter((node) => path.dirname(node.pool) === poolDir).map((node) => ({ path: node.pool, sizeBytes: node.sizeBytes })), source: 'cluster.yaml' }
      : { pools: Array.from({ length: UP_DEFAULTS.nodes }, () => ({ sizeBytes: parseSize(UP_DEFAULTS.poolSize, 'pool size') })), source: 'the dpms up default' };
    results.push(...await guarded('memory', () => checkMemory(plan, poolDir)));
  }

  results.push(...await guarded('port', () => checkPort('gateway default', '127.0.0.1', dirFacts.gatewayPort ?? UP_DEFAULTS.gatewayPort, dirFacts.runningPid)));
  for (const node of config?.nodes ?? []) {
    results.push(...await guarded('port', () => checkPort(`node ${node.id}`, node.host, node.port, dirFacts.runningPid)));
  }
  return results;
}
