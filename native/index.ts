// The typed face of the C++ addon (native/src/*.cc): persistent-memory mappings through PMDK's
// libpmem, the crash simulator that stands in for PM in crash tests, checksums, the native
// measurement loops used by `dpms bench`, the transport providers, and the libfuse3 binding
// (native/fuse.ts, re-exported here). Everything above native/ reaches the addon through this file
// only. Errors thrown by the addon are plain Errors whose `code` is a stable DPMS_* string;
// pdsm/errors.ts turns them into typed DpmsErrors.

import { rawAddon } from './addon';

export {
  mountFuse,
  type FuseAttr,
  type FuseContext,
  type FuseDirEntry,
  type FuseEntry,
  type FuseMountOptions,
  type FuseOpenReply,
  type FuseOperations,
  type FuseSession,
  type FuseSetattr,
  type FuseStatfs,
} from './fuse';

/** How a mapping makes stores durable. */
export type FlushMode =
  /** CPU cache flush (CLWB/CLFLUSHOPT) + SFENCE: real PM (DAX), or a file on tmpfs where memory is the medium. */
  | 'cpu'
  /** msync(2): a file on a block-backed file system without DAX. */
  | 'msync'
  /** the crash simulator: flushes are recorded, drains move flushed lines to the persistent image. */
  | 'sim';

/** One mapped pool: real PM through libpmem, or the crash simulator's volatile cache image. */
export interface PmMapping {
  /** Zero-copy view of the whole mapping. Detached (length 0) after close(). */
  readonly buffer: Buffer;
  readonly sizeBytes: number;
  /** libpmem's is_pmem for the mapping (false in simulation). */
  readonly isPmem: boolean;
  readonly flushMode: FlushMode;
  /** Write back the cache lines covering [offset, offset+length) without waiting. */
  flush(offset: number, length: number): void;
  /** Wait until every earlier flush is durable (a store fence). */
  drain(): void;
  /** flush + drain of one range. */
  persist(offset: number, length: number): void;
  /** Copy src[srcOffset, srcOffset+length) to the mapping at dstOffset, flush it, and drain. */
  memcpyPersist(dstOffset: number, src: Uint8Array, srcOffset?: number, length?: number): void;
  /** Copy and flush without draining, so that several copies share one drain. */
  memcpyFlush(dstOffset: number, src: Uint8Array, srcOffset?: number, length?: number): void;
  /** 8-byte atomics at an 8-byte-aligned offset: the operations RDMA atomics map to. They do not persist. */
  load64(offset: number): bigint;
  store64(offset: number, value: bigint): void;
  /** Compare-and-swap; returns the value found (equal to expected when it succeeded). */
  cas64(offset: number, expected: bigint, desired: bigint): bigint;
  /** Fetch-and-add (wrapping modulo 2^64); returns the value before the add. */
  faa64(offset: number, delta: bigint): bigint;
  /** Unmap now. The buffer is detached; later calls throw DPMS_CLOSED. Idempotent. */
  close(): void;
}

export interface SimStats {
  readonly flushes: number;
  readonly drains: number;
  /** Lines flushed but not yet drained. */
  readonly pendingLines: number;
}

/**
 * The crash simulator (in the spirit of PMDK's pmreorder). Stores land in a volatile cache image
 * (`buffer`); flush snapshots a line, drain moves the snapshots to the persistent image. A crash keeps
 * the persistent image plus a seeded random subset of what was in flight (flushed-but-not-drained
 * snapshots and dirty cache lines), each line written back whole or torn at 8-byte granularity.
 */
export interface SimMapping extends PmMapping {
  readonly flushMode: 'sim';
  readonly stats: SimStats;
  /** Crash in place: the cache and persistent images both become a crash image; pending flushes are dropped. */
  crash(seed: number): void;
  /** A crash image as a new Buffer, leaving the simulation running undisturbed. */
  crashImage(seed: number): Buffer;
  /** A copy of the persistent image (what survives a crash that evicts nothing). */
  persistentImage(): Buffer;
}

export interface OpenPoolOptions {
  /** Create the file (it must not exist) with this size. Without it the file must exist; its size is used. */
  readonly createSizeBytes?: number;
}

// ---- Transport providers (tcp.cc, verbs.cc) ----
//
// Both network providers have the same shape. A server serves registered regions (PmMappings, each
// with a random 32-bit rkey) to authenticated clients: one-sided operations are executed without any
// JavaScript on the serving side (tcp: by the addon's serving thread; verbs: by the RDMA device),
// two-sided messages (SEND/RECV) and connection events reach JavaScript through onEvent, on the main
// thread. A client runs on the caller's event loop (no thread hop): operations posted in one turn of
// the loop leave together (one writev / one ibv_post_send chain), many may be in flight, and each
// settles its own promise. A remote access error (bad rkey, out of bounds, misaligned atomic) rejects
// that operation with DPMS_REMOTE_ACCESS and breaks the connection, as an RC queue pair goes to the
// error state: every other pending and later operation rejects with DPMS_DISCONNECTED.

export type NetworkProvider = 'tcp' | 'verbs';

/** A region as the client sees it after the handshake. */
export interface RemoteRegion {
  readonly sizeBytes: number;
  readonly rkey: number;
}

export interface ServerStats {
  readonly connectionsOpen: number;
  readonly connectionsAccepted: number;
  /** Handshakes that failed: wrong proof, timeout, or a frame before authentication. */
  readonly authFailures: number;
  /** Malformed, truncated, oversized or unknown frames (each closed its connection). */
  readonly badFrames: number;
  /** Remote access errors: bad rkey, out of bounds, misaligned atomic (each closed its connection). */
  readonly accessErrors: number;
  readonly reads: number;
  readonly writes: number;
  readonly atomics: number;
  readonly persists: number;
  readonly messages: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

export type ServerEvent =
  | { readonly type: 'open'; readonly connection: number; readonly peer: string }
  /** A two-sided message (SEND) that wants a reply: answer with server.reply(connection, requestId, ...). */
  | { readonly type: 'message'; readonly connection: number; readonly requestId: number; readonly payload: Buffer }
  /** A WRITE-with-immediate landed (its data is already in the region): the 32-bit immediate and the data length. */
  | { readonly type: 'immediate'; readonly connection: number; readonly immediate: number; readonly length: number }
  | { readonly type: 'close'; readonly connection: number; readonly reason: string };

export interface ServeOptions {
  /** Address to listen on (tcp: any host/IP; verbs: an IP address of an RDMA device, e.g. 10.200.0.1). */
  readonly host: string;
  /** 0 picks a free port (see server.port). */
  readonly port: number;
  /** The cluster secret (16 to 1024 bytes). */
  readonly secret: Uint8Array;
  readonly nodeId: number;
  /** Registered regions, in order: the client addresses them by index. Pinned while served. */
  readonly regions: readonly PmMapping[];
  /** Largest two-sided message either way (default 64 KiB, at most 16 MiB). */
  readonly maxMessageBytes?: number;
  /** A client that has not authenticated within this time is dropped (default 5000). */
  readonly handshakeTimeoutMs?: number;
  readonly onEvent: (event: ServerEvent) => void;
}

export interface TransportServer {
  readonly port: number;
  readonly regions: readonly RemoteRegion[];
  /** Answer a message. Ignored when the connection is gone. */
  reply(connection: number, requestId: number, payload: Uint8Array): void;
  /** Drop a client at once (fencing: it can do nothing more here). */
  disconnect(connection: number): void;
  stats(): ServerStats;
  /** Stop serving: closes every connection, stops the thread, unpins the regions. Idempotent. */
  close(): void;
}

export interface ConnectOptions {
  readonly host: string;
  readonly port: number;
  readonly secret: Uint8Array;
  /** Connect + handshake deadline (default 5000). */
  readonly timeoutMs?: number;
  /** Largest two-sided message either way (default 64 KiB, at most 16 MiB). */
  readonly maxMessageBytes?: number;
}

/**
 * One authenticated connection. `rkey` arguments are the key presented to the server; callers pass
 * regions[region].rkey (tests pass wrong ones). Offsets are not checked on this side.
 */
export interface TransportConnection {
  readonly nodeId: number;
  readonly regions: readonly RemoteRegion[];
  read(region: number, offset: number, length: number, rkey: number): Promise<Buffer>;
  /**
   * A READ into the caller's memory, as an RDMA READ lands in a registered buffer: the payload is
   * received straight into target[targetOffset, targetOffset+length), which the connection keeps
   * referenced until the promise settles; no Buffer is allocated per operation. A range outside the
   * target throws DPMS_OUT_OF_BOUNDS synchronously; a target whose ArrayBuffer is detached or shrunk
   * while the READ is in flight rejects that operation with DPMS_OUT_OF_BOUNDS (the data is dropped,
   * the connection stays usable). Otherwise as read. The tcp provider always has it; verbs may not yet
   * (callers fall back to read + copy).
   */
  readInto?(region: number, offset: number, target: Uint8Array, targetOffset: number, length: number, rkey: number): Promise<void>;
  write(region: number, offset: number, data: Uint8Array, rkey: number): Promise<void>;
  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number, rkey: number): Promise<void>;
  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint, rkey: number): Promise<bigint>;
  fetchAndAdd(region: number, offset: number, delta: bigint, rkey: number): Promise<bigint>;
  /** Remote persistence: resolves once every earlier write to [offset, offset+length) is durable. */
  persist(region: number, offset: number, length: number, rkey: number): Promise<void>;
  /** Two-sided RPC: SEND payload, resolve with the server's reply. */
  call(payload: Uint8Array): Promise<Buffer>;
  /** Called once when the connection ends for any reason other than close(). */
  onClose(listener: (reason: string) => void): void;
  /** Close now; pending operations reject with DPMS_DISCONNECTED. Idempotent. */
  close(): void;
}

interface Addon {
  tcpServe?(options: ServeOptions): TransportServer;
  tcpConnect?(options: ConnectOptions): Promise<TransportConnection>;
  verbsServe?(options: ServeOptions): TransportServer;
  verbsConnect?(options: ConnectOptions): Promise<TransportConnection>;
  openPool(filePath: string, options: OpenPoolOptions): PmMapping;
  createSim(sizeOrImage: number | Uint8Array): SimMapping;
  crc32c(data: Uint8Array, offset: number, length: number, seed: number, forceSoftware?: boolean): number;
  benchStoreFlushFence(mapping: PmMapping, offset: number, storeBytes: number, iterations: number): number;
  benchMemcpyPersist(mapping: PmMapping, offset: number, chunkBytes: number, totalBytes: number): number;
  lockFile(filePath: string): number;
  unlockFile(fd: number): void;
}

const addon = rawAddon as Addon;

function providerFunction<K extends keyof Addon>(name: K): NonNullable<Addon[K]> {
  const fn = addon[name];
  if (typeof fn !== 'function') {
    throw Object.assign(new Error(`this build of the addon has no ${String(name)}`), { code: 'DPMS_UNSUPPORTED' });
  }
  return (fn as (...args: unknown[]) => unknown).bind(addon) as NonNullable<Addon[K]>;
}

/** Serve regions over a network provider (see "Transport providers" above). */
export function serve(provider: NetworkProvider, options: ServeOptions): TransportServer {
  return provider === 'tcp' ? providerFunction('tcpServe')(options) : providerFunction('verbsServe')(options);
}

/** Connect and authenticate to a server of the same provider. */
export function connect(provider: NetworkProvider, options: ConnectOptions): Promise<TransportConnection> {
  return provider === 'tcp' ? providerFunction('tcpConnect')(options) : providerFunction('verbsConnect')(options);
}

/** Map a pool file with pmem_map_file. */
export function openPool(filePath: string, options: OpenPoolOptions = {}): PmMapping {
  return addon.openPool(filePath, options);
}

/** A crash simulator of `sizeOrImage` zeroed bytes, or starting from a copy of an image. */
export function createSim(sizeOrImage: number | Uint8Array): SimMapping {
  return addon.createSim(sizeOrImage);
}

/**
 * CRC-32C (Castagnoli) of data[offset, offset+length), continuing from `seed` (hardware-accelerated).
 * `forceSoftware` selects the portable table implementation; it exists so tests can check that both agree.
 */
export function crc32c(data: Uint8Array, offset: number, length: number, seed: number, forceSoftware = false): number {
  return addon.crc32c(data, offset, length, seed, forceSoftware);
}

/** Nanoseconds for `iterations` of: store `storeBytes` at offset, flush, fence (the machine's persist limit). */
export function benchStoreFlushFence(mapping: PmMapping, offset: number, storeBytes: number, iterations: number): number {
  return addon.benchStoreFlushFence(mapping, offset, storeBytes, iterations);
}

/** Nanoseconds to copy-and-persist `totalBytes` in `chunkBytes` pieces into [offset, offset+chunkBytes). */
export function benchMemcpyPersist(mapping: PmMapping, offset: number, chunkBytes: number, totalBytes: number): number {
  return addon.benchMemcpyPersist(mapping, offset, chunkBytes, totalBytes);
}

// ---- Raw TCP baseline (bench) ----

export interface RawTcpBenchOptions {
  /** Bytes the client sends per round trip (1 B .. 64 MiB). */
  readonly requestBytes: number;
  /** Bytes the server answers each request with (1 B .. 64 MiB). */
  readonly responseBytes: number;
  /** Round trips to time (1 .. 10^7). */
  readonly iterations: number;
  /** Requests kept outstanding (1 .. 1024, default 1). */
  readonly inFlight?: number;
}

export interface RawTcpBenchResult {
  /** Wall time of the whole run. */
  readonly totalNs: number;
  /** Per round trip, from the request's first byte sent to its response's last byte received. */
  readonly latenciesNs: Float64Array;
}

/**
 * The plain-TCP limit the tcp provider is compared with (`dpms bench transport`): a native loopback
 * echo pair (server thread + client loop, TCP_NODELAY) with nothing of ours in between. 8 B / 8 B
 * gives the raw round trip; 1 MiB / 8 B write bandwidth; 16 B / 1 MiB read bandwidth. Blocks the
 * calling thread for the run.
 */
export function rawTcpBench(options: RawTcpBenchOptions): RawTcpBenchResult {
  const fn = (addon as unknown as { rawTcpBench?: (o: RawTcpBenchOptions) => RawTcpBenchResult }).rawTcpBench;
  if (typeof fn !== 'function') {
    throw Object.assign(new Error('this build of the addon has no rawTcpBench'), { code: 'DPMS_UNSUPPORTED' });
  }
  return fn(options);
}

/** An exclusive advisory lock (flock) held by this process until release() or its death. */
export interface FileLock {
  readonly path: string;
  release(): void;
}

/**
 * Lock a file (created if missing) without waiting: the lock, or undefined when another process (or
 * another lock in this one) holds it. The kernel releases it when the process dies.
 */
export function lockFile(filePath: string): FileLock | undefined {
  const fd = addon.lockFile(filePath);
  if (fd < 0) return undefined;
  let held = true;
  return {
    path: filePath,
    release() {
      if (!held) return;
      held = false;
      addon.unlockFile(fd);
    },
  };
}

// ---- Environment facts (`dpms doctor`, native/src/sysinfo.cc) ----

/** One GID table entry of a port (only non-zero entries are listed, at most 16). */
export interface RdmaGid {
  readonly index: number;
  /** Eight colon-separated groups of four hex digits, as ibv_devinfo -v prints it. */
  readonly gid: string;
  /** From sysfs gid_attrs, when the kernel has it: "RoCE v2", "IB/RoCE v1". */
  readonly type?: string;
  /** The network interface a RoCE GID belongs to (sysfs gid_attrs/ndevs). */
  readonly netdev?: string;
}

export interface RdmaPort {
  /** 1-based port number. */
  readonly port: number;
  /** "ACTIVE", "DOWN", "INIT", "ARMED", ... (absent when the port could not be queried). */
  readonly state?: string;
  /** "LINK_UP", "POLLING", "DISABLED", ... */
  readonly physState?: string;
  readonly linkLayer?: 'Ethernet' | 'InfiniBand';
  /** Active MTU in bytes (256 .. 4096). */
  readonly activeMtu?: number;
  /** InfiniBand local id (0 on RoCE). */
  readonly lid?: number;
  readonly gids?: readonly RdmaGid[];
  /** Why the port could not be queried. */
  readonly error?: string;
}

export interface RdmaDevice {
  readonly name: string;
  readonly nodeGuid: string;
  /** "InfiniBand" (also RoCE), "iWARP", ... */
  readonly transport: string;
  readonly nodeType: string;
  readonly fwVersion?: string;
  readonly ports: readonly RdmaPort[];
  /** Why the device could not be opened or queried (the rest of the entry is what was known). */
  readonly error?: string;
}

export interface PmemInfo {
  /** libpmem takes the mapping for real persistent memory (DAX), so CPU flushes make stores durable. */
  readonly isPmem: boolean;
  readonly mappedBytes: number;
  /** The platform flushes CPU caches on power loss (eADR). */
  readonly hasAutoFlush: boolean;
  /** The libpmem API version the addon was compiled against; `check` is pmem_check_version's complaint, null when the loaded library accepts it. */
  readonly libpmemVersion: { readonly major: number; readonly minor: number; readonly check: string | null };
}

interface SysInfoAddon {
  rdmaDevices?(): RdmaDevice[];
  pmemInfo?(filePath: string): PmemInfo;
}

function sysInfoFunction<K extends keyof SysInfoAddon>(name: K): NonNullable<SysInfoAddon[K]> {
  const fn = (rawAddon as SysInfoAddon)[name];
  if (typeof fn !== 'function') {
    throw Object.assign(new Error(`this build of the addon has no ${name} (rebuild it: npm run build:native)`), { code: 'DPMS_UNSUPPORTED' });
  }
  return fn as NonNullable<SysInfoAddon[K]>;
}

/**
 * The RDMA devices libibverbs finds, with their ports and GIDs. An empty list when there is none (also
 * when the kernel has no RDMA support at all); a device that cannot be opened has an `error`.
 */
export function rdmaDevices(): RdmaDevice[] {
  return sysInfoFunction('rdmaDevices')();
}

/** What libpmem makes of an existing file (mapped and unmapped again): real PM or not, and its version. */
export function pmemInfo(filePath: string): PmemInfo {
  return sysInfoFunction('pmemInfo')(filePath);
}
