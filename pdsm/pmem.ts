// The persistence operations table (PMDK's pmem_ops): every store that must become durable in pDSM
// goes through a PmOps, so a real pool (libpmem), the crash simulator and, later, remote PM reached
// over a transport are interchangeable. Files here only open and wrap; policy lives in the callers.

import fs from 'node:fs';
import { createSim, openPool, type PmMapping, type SimMapping } from '../native';
import { callNative, DpmsError } from './errors';
import { SUPERBLOCK_BYTES } from './layout';

/** The operations pDSM needs from a piece of (local or remote) persistent memory. */
export type PmOps = Pick<PmMapping,
  | 'buffer' | 'sizeBytes' | 'isPmem' | 'flushMode' | 'flush' | 'drain' | 'persist'
  | 'memcpyPersist' | 'memcpyFlush' | 'load64' | 'store64' | 'cas64' | 'faa64' | 'close'>;

export type { PmMapping, SimMapping };

/** Create a new pool file of `sizeBytes` and map it; refuses an existing file. */
export function createPoolFile(filePath: string, sizeBytes: number): PmOps {
  return callNative(() => openPool(filePath, { createSizeBytes: sizeBytes }), `cannot create pool ${filePath}`);
}

/** Map an existing pool file. A file too short to hold a superblock is DPMS_TRUNCATED. */
export function openPoolFile(filePath: string): PmOps {
  let sizeBytes: number;
  try {
    const stat = fs.statSync(filePath);
    if (!stat.isFile()) throw new DpmsError('DPMS_INVALID_ARGUMENT', `${filePath} is not a regular file`);
    sizeBytes = stat.size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DpmsError('DPMS_NOT_FOUND', `pool ${filePath} does not exist`, { cause: error });
    }
    if (error instanceof DpmsError) throw error;
    throw new DpmsError('DPMS_IO', `cannot stat pool ${filePath}: ${(error as Error).message}`, { cause: error });
  }
  if (sizeBytes < SUPERBLOCK_BYTES) {
    throw new DpmsError('DPMS_TRUNCATED', `pool ${filePath} is ${sizeBytes} B, shorter than its ${SUPERBLOCK_BYTES}-B superblock`);
  }
  return callNative(() => openPool(filePath), `cannot map pool ${filePath}`);
}

/** A crash simulator of `sizeOrImage` bytes (zeroed), or starting from a copy of an image. */
export function createSimPm(sizeOrImage: number | Uint8Array): SimMapping {
  return createSim(sizeOrImage);
}

export type PersistPoint = 'flush' | 'drain';

/**
 * Wraps a PmOps and calls `hook` before every flush and every drain (including the ones inside
 * persist and the copy variants). Crash tests use it to crash at, and between, persist barriers;
 * the hook may throw to stop the workload at that instant.
 */
export class InstrumentedPm implements PmOps {
  constructor(private readonly inner: PmOps, private readonly hook: (point: PersistPoint) => void) {}

  get buffer(): Buffer { return this.inner.buffer; }
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get isPmem(): boolean { return this.inner.isPmem; }
  get flushMode() { return this.inner.flushMode; }

  flush(offset: number, length: number): void {
    this.hook('flush');
    this.inner.flush(offset, length);
  }

  drain(): void {
    this.hook('drain');
    this.inner.drain();
  }

  persist(offset: number, length: number): void {
    this.flush(offset, length);
    this.drain();
  }

  memcpyFlush(dstOffset: number, src: Uint8Array, srcOffset?: number, length?: number): void {
    this.hook('flush');
    this.inner.memcpyFlush(dstOffset, src, srcOffset, length);
  }

  memcpyPersist(dstOffset: number, src: Uint8Array, srcOffset?: number, length?: number): void {
    this.memcpyFlush(dstOffset, src, srcOffset, length);
    this.drain();
  }

  load64(offset: number): bigint { return this.inner.load64(offset); }
  store64(offset: number, value: bigint): void { this.inner.store64(offset, value); }
  cas64(offset: number, expected: bigint, desired: bigint): bigint { return this.inner.cas64(offset, expected, desired); }
  faa64(offset: number, delta: bigint): bigint { return this.inner.faa64(offset, delta); }
  close(): void { this.inner.close(); }
}
