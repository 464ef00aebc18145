// ACID transactions over pDSM. Reads and writes are isolated by strict 2PL (locks.ts); writes,
// allocations and frees are buffered as redo records in DRAM and reach PM only at commit, through
// the node's redo log (log.ts), so an aborted or crashed transaction leaves no trace and a committed
// one is wholly durable. Reads see the transaction's own writes.

import { makeAddress, nodeOf, offsetOf, type GlobalAddress } from './address';
import type { Reservation, Slot } from './allocator';
import { DpmsError } from './errors';
import { overlayStagedWrites, type RecordBuilder, type StagedWrite } from './log';
import type { LockOwner, LockTable } from './locks';
import type { PoolNode } from './node';

/** What a transaction needs from the Pdsm that created it. */
export interface TxContext {
  nodeFor(address: GlobalAddress): PoolNode;
  placeAllocation(sizeBytes: number, preferredNode: number | undefined): PoolNode;
  readonly locks: LockTable;
  readonly laneTimeoutMs: number;
}

interface NodeEffects {
  readonly node: PoolNode;
  readonly builder: RecordBuilder;
  readonly allocs: Reservation[];
  readonly frees: Slot[];
  /** Objects both allocated and freed by this transaction: never visible to anyone. */
  readonly transient: Slot[];
  /** This transaction's writes on the node, in order, for read-your-writes: target offset, length, and where the bytes sit in the builder. */
  readonly writes: StagedWrite[];
}

export type TxState = 'active' | 'committing' | 'committed' | 'aborted';

export class Transaction implements LockOwner {
  readonly held = new Map<number, boolean>();
  private state: TxState = 'active';
  private readonly effects = new Map<number, NodeEffects>();

  constructor(readonly id: number, private readonly context: TxContext) {}

  get status(): TxState { return this.state; }

  /** Read `length` bytes at `address`, seeing this transaction's own writes. */
  async read(address: GlobalAddress, length: number): Promise<Buffer> {
    this.checkActive();
    const node = this.context.nodeFor(address);
    const offset = offsetOf(address);
    node.checkDataRange(offset, length);
    const waiting = this.context.locks.lockRange(this, address, length, false);
    if (waiting) await waiting;
    const result = Buffer.from(node.pm.buffer.subarray(offset, offset + length));
    const effects = this.effects.get(node.nodeId);
    if (effects) overlayStagedWrites(result, offset, effects.builder.staging, effects.writes);
    return result;
  }

  /** Write `data` at `address` when the transaction commits. */
  async write(address: GlobalAddress, data: Uint8Array): Promise<void> {
    this.checkActive();
    const node = this.context.nodeFor(address);
    const offset = offsetOf(address);
    node.checkDataRange(offset, data.length);
    const waiting = this.context.locks.lockRange(this, address, data.length, true);
    if (waiting) {
      await waiting;
      this.checkActive();
    }
    const effects = this.effectsOn(node);
    const staged = effects.builder.write(offset, data);
    effects.writes.push({ offset, length: data.length, staged });
  }

  /**
   * Allocate an object of at least sizeBytes; it exists for others once the transaction commits.
   * `nodeId` asks for a node; otherwise the placement policy chooses.
   */
  async alloc(sizeBytes: number, nodeId?: number): Promise<GlobalAddress> {
    this.checkActive();
    const node = this.context.placeAllocation(sizeBytes, nodeId);
    node.checkUsable();
    const effects = this.effectsOn(node);
    const reservation = node.allocator.reserve(sizeBytes, effects.builder);
    effects.allocs.push(reservation);
    const address = makeAddress(node.nodeId, reservation.offset);
    // Nobody else can know the address yet; the lock only keeps later frees by others ordered.
    await this.context.locks.lockRange(this, address, reservation.sizeBytes, true);
    return address;
  }

  /** Free the object at `address` when the transaction commits. */
  async free(address: GlobalAddress): Promise<void> {
    this.checkActive();
    const node = this.context.nodeFor(address);
    const offset = offsetOf(address);
    const effects = this.effects.get(node.nodeId);
    const own = effects?.allocs.findIndex((reservation) => reservation.offset === offset) ?? -1;
    if (effects && own >= 0) {
      const [reservation] = effects.allocs.splice(own, 1);
      node.allocator.unreserve(reservation, effects.builder);
      effects.transient.push(reservation);
      return;
    }
    const sizeBytes = node.allocator.objectSize(offset);
    if (sizeBytes === undefined) {
      throw new DpmsError('DPMS_INVALID_ADDRESS', `cannot free ${nodeOf(address)}:0x${offset.toString(16)}: it is not an allocated object`);
    }
    await this.context.locks.lockRange(this, address, sizeBytes, true);
    this.checkActive();
    const target = this.effectsOn(node);
    target.frees.push(node.allocator.markFree(offset, target.builder));
  }

  /** Make every write, allocation and free durable and visible, atomically. */
  async commit(): Promise<void> {
    this.checkActive();
    this.state = 'committing';
    try {
      let touched: NodeEffects | undefined;
      for (const effects of this.effects.values()) {
        if (effects.builder.isEmpty) continue;
        if (touched) {
          throw new DpmsError('DPMS_UNSUPPORTED', 'a transaction spanning several nodes needs the distributed commit protocol (not in this build)');
        }
        touched = effects;
      }
      if (touched) {
        const waiting = this.commitOn(touched);
        if (waiting) await waiting;
      }
      this.state = 'committed';
      this.recycle();
    } catch (error) {
      if (this.state === 'committing') this.rollBack();
      throw error;
    } finally {
      this.context.locks.releaseAll(this);
    }
  }

  /** Discard everything the transaction did. Idempotent after commit failure. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    this.checkActive();
    this.rollBack();
    this.context.locks.releaseAll(this);
  }

  /** Commit on one node; synchronous unless every log lane is busy (then it waits, with back-pressure). */
  private commitOn(effects: NodeEffects): Promise<void> | undefined {
    const node = effects.node;
    node.checkUsable();
    const lane = node.log.tryAcquireLane();
    if (lane === undefined) {
      return node.log.acquireLane(this.context.laneTimeoutMs).then((granted) => this.commitOnLane(effects, granted));
    }
    this.commitOnLane(effects, lane);
    return undefined;
  }

  private commitOnLane(effects: NodeEffects, lane: number): void {
    const node = effects.node;
    // A failure inside marks the log failed (the node must be reopened); the lane stays taken.
    node.log.commitOnLane(lane, effects.builder);
    node.log.releaseLane(lane);
    // Durable from here on: whatever happens to the bookkeeping below, this is not rolled back.
    this.state = 'committed';
    if (effects.allocs.length + effects.frees.length > 0) node.allocator.committed(effects.allocs, effects.frees);
    if (effects.transient.length > 0) node.allocator.cancelled(effects.transient, []);
  }

  private recycle(): void {
    for (const effects of this.effects.values()) effects.node.log.recycleBuilder(effects.builder);
    this.effects.clear();
  }

  private rollBack(): void {
    this.state = 'aborted';
    for (const effects of this.effects.values()) {
      // A node whose log failed mid-commit is dead until reopened; its DRAM state no longer matters.
      if (!effects.node.log.failed) effects.node.allocator.cancelled([...effects.allocs, ...effects.transient], effects.frees);
    }
    this.recycle();
  }

  private effectsOn(node: PoolNode): NodeEffects {
    let effects = this.effects.get(node.nodeId);
    if (!effects) {
      effects = { node, builder: node.log.newBuilder(), allocs: [], frees: [], transient: [], writes: [] };
      this.effects.set(node.nodeId, effects);
    }
    return effects;
  }

  private checkActive(): void {
    if (this.state !== 'active') {
      throw new DpmsError('DPMS_TX_STATE', `transaction ${this.id} is ${this.state}; start a new one`);
    }
  }
}
