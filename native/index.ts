// The typed face of the C++ addon (native/src/*.cc): persistent-memory mappings through PMDK's
// libpmem, the crash simulator that stands in for PM in crash tests, checksums, and the native
// measurement loops used by `dpms bench`. Everything above native/ reaches the addon through this
// file only. Errors thrown by the addon are plain Errors whose `code` is a stable DPMS_* string;
// pdsm/errors.ts turns them into typed DpmsErrors.

import path from 'node:path';

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

interface Addon {
  openPool(filePath: string, options: OpenPoolOptions): PmMapping;
  createSim(sizeOrImage: number | Uint8Array): SimMapping;
  crc32c(data: Uint8Array, offset: number, length: number, seed: number, forceSoftware?: boolean): number;
  benchStoreFlushFence(mapping: PmMapping, offset: number, storeBytes: number, iterations: number): number;
  benchMemcpyPersist(mapping: PmMapping, offset: number, chunkBytes: number, totalBytes: number): number;
}

// The addon is built by node-gyp into native/build/Release; dist/native/index.js sits two levels
// below the package root, native/index.ts one.
function loadAddon(): Addon {
  const candidates = [
    path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'dpms_native.node'),
    path.join(__dirname, 'build', 'Release', 'dpms_native.node'),
  ];
  let lastError: unknown;
  for (const candidate of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(candidate) as Addon;
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`dpms native addon not found (run scripts/setup.sh or npm run build:native): ${String(lastError)}`);
}

const addon = loadAddon();

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
