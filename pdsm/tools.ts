// Whole-pool operations behind the CLI: format a pool file, inspect it, and check it. Inspect and
// check never write the pool: they read the file, and check recovers a private copy in the crash
// simulator's memory before verifying it, so it judges exactly what an open would see.

import fs from 'node:fs';
import { DpmsError } from './errors';
import { inspectLane, type LaneState } from './log';
import { PoolNode, type FormatOptions } from './node';
import { createPoolFile, createSimPm, openPoolFile, type PmOps } from './pmem';
import { decodeSuperblock, type PoolInfo } from './superblock';
import { verifyPool, type VerifyReport } from './verify';

export interface FormatFileOptions extends FormatOptions {
  readonly sizeBytes: number;
  /** Replace an existing file. */
  readonly force?: boolean;
  /**
   * Told how much of the file's space is allocated so far. Given, the file is allocated by writing
   * zeros in slices (what takes the time: ~1 s per 4 GiB on tmpfs) instead of libpmem's one
   * posix_fallocate, so that a progress bar moves honestly; the result is the same zeroed file.
   */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** The slice in which formatPoolFile allocates a file when it reports progress. */
const ALLOCATE_SLICE_BYTES = 16 * 1024 * 1024;

function allocateInSlices(filePath: string, sizeBytes: number, onProgress: (doneBytes: number, totalBytes: number) => void): void {
  let fd: number;
  try {
    fd = fs.openSync(filePath, 'wx', 0o600);
  } catch (error) {
    throw new DpmsError('DPMS_IO', `cannot create pool ${filePath}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const zeros = Buffer.alloc(Math.min(ALLOCATE_SLICE_BYTES, sizeBytes));
    onProgress(0, sizeBytes);
    for (let done = 0; done < sizeBytes;) {
      const length = Math.min(zeros.length, sizeBytes - done);
      done += fs.writeSync(fd, zeros, 0, length, done);
      onProgress(done, sizeBytes);
    }
  } catch (error) {
    fs.closeSync(fd);
    fs.rmSync(filePath, { force: true });
    const noSpace = (error as NodeJS.ErrnoException).code === 'ENOSPC';
    throw new DpmsError(noSpace ? 'DPMS_NO_SPACE' : 'DPMS_IO', `cannot allocate ${sizeBytes} B for pool ${filePath}: ${(error as Error).message}`, { cause: error });
  }
  fs.closeSync(fd);
}

/** Create and format a pool file; refuses to overwrite an existing file unless forced. */
export function formatPoolFile(filePath: string, options: FormatFileOptions): PoolInfo & { isPmem: boolean; flushMode: string } {
  if (fs.existsSync(filePath)) {
    if (!options.force) {
      throw new DpmsError('DPMS_EXISTS', `${filePath} already exists; use --force to overwrite it (its data will be lost)`);
    }
    fs.rmSync(filePath);
  }
  let pm: PmOps;
  if (options.onProgress) {
    allocateInSlices(filePath, options.sizeBytes, options.onProgress);
    try {
      pm = openPoolFile(filePath);
    } catch (error) {
      fs.rmSync(filePath, { force: true });
      throw error;
    }
  } else {
    pm = createPoolFile(filePath, options.sizeBytes);
  }
  let result: PoolInfo & { isPmem: boolean; flushMode: string };
  try {
    const info = PoolNode.format(pm, options);
    result = { ...info, isPmem: pm.isPmem, flushMode: pm.flushMode };
  } catch (error) {
    pm.close();
    fs.rmSync(filePath, { force: true });
    throw error;
  }
  pm.close();
  return result;
}

function readPoolImage(filePath: string): Buffer {
  try {
    return fs.readFileSync(filePath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DpmsError('DPMS_NOT_FOUND', `pool ${filePath} does not exist`, { cause: error });
    throw new DpmsError('DPMS_IO', `cannot read pool ${filePath}: ${(error as Error).message}`, { cause: error });
  }
}

export interface InspectReport {
  readonly info: PoolInfo;
  readonly fileBytes: number;
  readonly lanes: LaneState[];
  /** Allocator state as on media (before any recovery). */
  readonly usage: VerifyReport;
}

/** Superblock, log lanes and usage of a pool file, read-only. */
export function inspectPoolFile(filePath: string): InspectReport {
  const image = readPoolImage(filePath);
  const info = decodeSuperblock(image, { availableBytes: image.length });
  const lanes: LaneState[] = [];
  for (let lane = 0; lane < info.layout.laneCount; lane++) lanes.push(inspectLane(image, info.layout, lane));
  return { info, fileBytes: image.length, lanes, usage: verifyPool(image, info) };
}

export interface CheckReport extends VerifyReport {
  readonly info: PoolInfo;
  /** What recovery would do at the next open. */
  readonly replayed: number;
  readonly discarded: number;
  /** Prepared logs of distributed transactions that the node daemon resolves with their coordinators. */
  readonly inDoubt: number;
}

/** Recover a private copy of the pool and verify it; the file is never written. */
export function checkPoolFile(filePath: string, expectNodeId?: number): CheckReport {
  const image = readPoolImage(filePath);
  const info = decodeSuperblock(image, { availableBytes: image.length, nodeId: expectNodeId });
  const pending = verifyPool(image, info);
  const copy = createSimPm(image.subarray(0, info.layout.poolBytes));
  try {
    let node: PoolNode;
    try {
      node = PoolNode.open(copy, { allowInDoubt: true });
    } catch (error) {
      if (!(error instanceof DpmsError)) throw error;
      return {
        ...pending, clean: false, errors: [`recovery failed: ${error.message}`, ...pending.errors], info, replayed: 0, discarded: 0, inDoubt: 0,
      };
    }
    const report = verifyPool(copy.buffer, info);
    return {
      ...report, pendingLogs: pending.pendingLogs, tornLogs: pending.tornLogs, info,
      replayed: node.recovery.replayed, discarded: node.recovery.discarded, inDoubt: node.recovery.inDoubt.length,
    };
  } finally {
    copy.close();
  }
}
