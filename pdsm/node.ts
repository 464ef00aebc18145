// One storage node's pool: format, open (validate, recover, rebuild the allocator), and the checks
// that keep every access inside the heap. Pdsm joins PoolNodes into the global address space.

import { Allocator } from './allocator';
import { DpmsError } from './errors';
import { DEFAULTS, heapEnd, ROOT_BYTES, SUPERBLOCK_BYTES, type Layout } from './layout';
import { RedoLog, type RecoveryReport } from './log';
import type { PmOps } from './pmem';
import { decodeSuperblock, encodeSuperblock, type PoolInfo } from './superblock';

export interface FormatOptions {
  readonly nodeId: number;
  readonly chunkBytes?: number;
  readonly laneCount?: number;
  readonly laneBytes?: number;
}

export interface OpenOptions {
  /** Refuse a pool that belongs to another node. */
  readonly nodeId?: number;
  /**
   * Open even when prepared logs of distributed transactions are in doubt (the node daemon, which
   * resolves them with their coordinators). Otherwise such a pool is refused with DPMS_IN_DOUBT.
   */
  readonly allowInDoubt?: boolean;
}

/**
 * Throw DPMS_INVALID_ADDRESS unless [offset, offset+length) lies inside the root area or the heap: the
 * only places that transactions and the raw API may touch (metadata changes only through the allocator).
 * Shared by the embedded engine and the cluster client.
 */
export function checkDataRange(layout: Layout, offset: number, length: number, describe: () => string): void {
  const end = offset + length;
  const inRoot = offset >= layout.rootOffset && end <= layout.rootOffset + ROOT_BYTES;
  const inHeap = offset >= layout.heapOffset && end <= heapEnd(layout);
  if (!Number.isSafeInteger(length) || length < 0 || !(inRoot || inHeap)) {
    throw new DpmsError('DPMS_INVALID_ADDRESS',
      `${describe()} is outside its root area and heap [0x${layout.heapOffset.toString(16)}, 0x${heapEnd(layout).toString(16)})`);
  }
}

export class PoolNode {
  private constructor(
    readonly pm: PmOps,
    readonly info: PoolInfo,
    readonly log: RedoLog,
    readonly allocator: Allocator,
    readonly recovery: RecoveryReport,
  ) {}

  get nodeId(): number { return this.info.nodeId; }
  get layout(): Layout { return this.info.layout; }

  /**
   * Lay out an empty pool on `pm`. Metadata regions are zeroed and persisted first and the
   * superblock last, so an interrupted format leaves no valid pool behind.
   */
  static format(pm: PmOps, options: FormatOptions): PoolInfo {
    const { bytes, info } = encodeSuperblock(options.nodeId, {
      poolBytes: pm.sizeBytes,
      chunkBytes: options.chunkBytes ?? DEFAULTS.chunkBytes,
      laneCount: options.laneCount ?? DEFAULTS.laneCount,
      laneBytes: options.laneBytes ?? DEFAULTS.laneBytes,
    });
    const layout = info.layout;
    pm.buffer.fill(0, 0, SUPERBLOCK_BYTES);
    pm.persist(0, SUPERBLOCK_BYTES);
    pm.buffer.fill(0, layout.logOffset, layout.heapOffset);
    pm.persist(layout.logOffset, layout.heapOffset - layout.logOffset);
    pm.memcpyPersist(0, bytes);
    return info;
  }

  /** Validate the superblock, replay the redo log and rebuild the allocator. */
  static open(pm: PmOps, options: OpenOptions = {}): PoolNode {
    const info = decodeSuperblock(pm.buffer, { nodeId: options.nodeId, availableBytes: pm.sizeBytes });
    const log = new RedoLog(pm, info.layout);
    const recovery = log.recover();
    if (recovery.inDoubt.length > 0 && !options.allowInDoubt) {
      throw new DpmsError('DPMS_IN_DOUBT',
        `node ${info.nodeId} holds ${recovery.inDoubt.length} prepared distributed transaction(s) whose outcome its coordinator decides; start the node with its cluster (dpms node start) to resolve them`);
    }
    const allocator = new Allocator(pm, info.layout, log);
    allocator.load();
    return new PoolNode(pm, info, log, allocator, recovery);
  }

  /**
   * Throw unless [offset, offset+length) lies inside the root area or the heap: the only places
   * that transactions and the raw API may touch (metadata changes only through the allocator).
   */
  checkDataRange(offset: number, length: number): void {
    checkDataRange(this.layout, offset, length, () => `[0x${offset.toString(16)}, +${length}) on node ${this.nodeId}`);
  }

  /** Throw if an earlier commit failed part-way: the pool must be reopened (recovered) first. */
  checkUsable(): void {
    this.log.checkUsable();
  }

  close(): void {
    this.pm.close();
  }
}
