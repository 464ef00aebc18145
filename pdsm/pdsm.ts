// Pdsm: the persistent distributed shared memory as the layers above see it. It joins node pools
// into one global address space and offers both of TH-DPMS's interfaces: ACID transactions
// (begin / transaction) and a raw API (read, write, persist, 8-byte atomics) whose durability the
// caller controls. Every method is async so that remote nodes (issue 3) fit behind the same face.

import { makeAddress, nodeOf, offsetOf, type GlobalAddress } from './address';
import { callNative, DpmsError } from './errors';
import { LockTable } from './locks';
import { PoolNode, type OpenOptions } from './node';
import { openPoolFile, type PmOps } from './pmem';
import { retryOnConflict } from './retry';
import { Transaction, type TxContext } from './tx';

export type NodeSource = { readonly path: string; readonly nodeId?: number } | { readonly pm: PmOps; readonly nodeId?: number };

export interface PdsmOptions {
  readonly nodes: readonly NodeSource[];
  /** How long a transaction waits for a lock before DPMS_TIMEOUT. */
  readonly lockTimeoutMs?: number;
  /** How long a commit waits for a free log lane before DPMS_TIMEOUT (back-pressure). */
  readonly laneTimeoutMs?: number;
}

export interface TransactionOptions {
  /** Retries after DPMS_TX_CONFLICT before giving up. */
  readonly maxRetries?: number;
}

export class Pdsm implements TxContext {
  readonly locks: LockTable;
  readonly laneTimeoutMs: number;
  private readonly nodes = new Map<number, PoolNode>();
  private nextTxId = 1;
  private nextPlacement = 0;
  private closed = false;

  private constructor(nodes: readonly PoolNode[], options: PdsmOptions) {
    for (const node of nodes) {
      if (this.nodes.has(node.nodeId)) {
        throw new DpmsError('DPMS_INVALID_ARGUMENT', `two pools claim node id ${node.nodeId}`);
      }
      this.nodes.set(node.nodeId, node);
    }
    this.locks = new LockTable(options.lockTimeoutMs ?? 10_000);
    this.laneTimeoutMs = options.laneTimeoutMs ?? 10_000;
  }

  /** Open (and recover) every node's pool. A pool given by path is mapped and closed with the Pdsm. */
  static async open(options: PdsmOptions): Promise<Pdsm> {
    if (options.nodes.length === 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'pdsm needs at least one node');
    const opened: PoolNode[] = [];
    try {
      for (const source of options.nodes) {
        const pm = 'pm' in source ? source.pm : openPoolFile(source.path);
        const openOptions: OpenOptions = { nodeId: source.nodeId };
        try {
          opened.push(PoolNode.open(pm, openOptions));
        } catch (error) {
          if (!('pm' in source)) pm.close();
          throw error;
        }
      }
    } catch (error) {
      for (const node of opened) node.close();
      throw error;
    }
    return new Pdsm(opened, options);
  }

  /** The nodes, by id (for status and tools). */
  get nodeIds(): number[] { return [...this.nodes.keys()]; }

  node(nodeId: number): PoolNode {
    const node = this.nodes.get(nodeId);
    if (!node) throw new DpmsError('DPMS_INVALID_ADDRESS', `node ${nodeId} is not part of this pDSM`);
    return node;
  }

  nodeFor(address: GlobalAddress): PoolNode {
    this.checkOpen();
    return this.node(nodeOf(address));
  }

  /**
   * Placement: an explicit node when asked; otherwise round-robin over the nodes with room, so
   * that data spreads over the cluster.
   */
  placeAllocation(_sizeBytes: number, preferredNode: number | undefined): PoolNode {
    this.checkOpen();
    if (preferredNode !== undefined) return this.node(preferredNode);
    const nodes = [...this.nodes.values()];
    const node = nodes[this.nextPlacement % nodes.length];
    this.nextPlacement++;
    return node;
  }

  /** Start a transaction. Commit or abort it. */
  begin(): Transaction {
    this.checkOpen();
    return new Transaction(this.nextTxId++, this);
  }

  /** Run `body` in a transaction, commit it, and retry the whole body on DPMS_TX_CONFLICT. */
  async transaction<T>(body: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    // Wait-die: back off a little so the older transaction can finish.
    return retryOnConflict(() => this.begin(), body, options.maxRetries ?? 100, () => new Promise((resolve) => setImmediate(resolve)));
  }

  // ---- raw API: direct access to the heap; durability only through persist / writePersist ----

  /** Copy `length` bytes at `address`. */
  async read(address: GlobalAddress, length: number): Promise<Buffer> {
    const { node, offset } = this.locate(address, length);
    return Buffer.from(node.pm.buffer.subarray(offset, offset + length));
  }

  /** Store bytes without making them durable (pair with persist). */
  async write(address: GlobalAddress, data: Uint8Array): Promise<void> {
    const { node, offset } = this.locate(address, data.length);
    node.pm.buffer.set(data, offset);
  }

  /** Make [address, address+length) durable. */
  async persist(address: GlobalAddress, length: number): Promise<void> {
    const { node, offset } = this.locate(address, length);
    callNative(() => node.pm.persist(offset, length), 'persist');
  }

  /** Store bytes and make them durable before returning. */
  async writePersist(address: GlobalAddress, data: Uint8Array): Promise<void> {
    const { node, offset } = this.locate(address, data.length);
    callNative(() => node.pm.memcpyPersist(offset, data), 'writePersist');
  }

  async load64(address: GlobalAddress): Promise<bigint> {
    const { node, offset } = this.locate(address, 8);
    return callNative(() => node.pm.load64(offset), 'load64');
  }

  async store64(address: GlobalAddress, value: bigint): Promise<void> {
    const { node, offset } = this.locate(address, 8);
    callNative(() => node.pm.store64(offset, value), 'store64');
  }

  /** Compare-and-swap; returns the value found (the swap happened when it equals `expected`). */
  async cas64(address: GlobalAddress, expected: bigint, desired: bigint): Promise<bigint> {
    const { node, offset } = this.locate(address, 8);
    return callNative(() => node.pm.cas64(offset, expected, desired), 'cas64');
  }

  /** Fetch-and-add; returns the value before the add. */
  async faa64(address: GlobalAddress, delta: bigint): Promise<bigint> {
    const { node, offset } = this.locate(address, 8);
    return callNative(() => node.pm.faa64(offset, delta), 'faa64');
  }

  /** Allocate in a transaction of its own. */
  async alloc(sizeBytes: number, nodeId?: number): Promise<GlobalAddress> {
    return this.transaction((tx) => tx.alloc(sizeBytes, nodeId));
  }

  /** Free in a transaction of its own. */
  async free(address: GlobalAddress): Promise<void> {
    return this.transaction((tx) => tx.free(address));
  }

  /**
   * The root area of a node: ROOT_BYTES (4 KiB) at a fixed address, zero after format, read and
   * written like any other memory. Layers above keep their well-known pointers there.
   */
  root(nodeId: number): GlobalAddress {
    return makeAddress(nodeId, this.node(nodeId).layout.rootOffset);
  }

  /** Usable size of the object at address, or undefined when none is allocated there. */
  objectSize(address: GlobalAddress): number | undefined {
    return this.nodeFor(address).allocator.objectSize(offsetOf(address));
  }

  /** Unmap every pool. Transactions still open fail with DPMS_CLOSED-like errors afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const node of this.nodes.values()) node.close();
  }

  private locate(address: GlobalAddress, length: number): { node: PoolNode; offset: number } {
    const node = this.nodeFor(address);
    const offset = offsetOf(address);
    node.checkDataRange(offset, length);
    return { node, offset };
  }

  private checkOpen(): void {
    if (this.closed) throw new DpmsError('DPMS_CLOSED', 'this pdsm is closed');
  }
}

