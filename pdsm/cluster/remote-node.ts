// A client's view of one node: its connection, its pool layout, the log lanes it granted this
// client, and the chunks this client owns there (level-2 allocation runs here, in the client, with
// one-sided reads and atomics; level 1 is an RPC to the node).

import type { GlobalAddress } from '../address';
import { decodeChunkHeaderAt, type ChunkHeader } from '../allocator';
import { DpmsError } from '../errors';
import { CHUNK, CHUNK_HEADER_BYTES, chunkDataAt, chunkMetaAt, ChunkKind, computeLayout, heapEnd, type Layout } from '../layout';
import { checkDataRange } from '../node';
import type { RecordBuilder } from '../log';
import type { Connection } from '../transport';
import type { NodeConfig } from './config';
import { decodeReply, encodeMessage, REGION, type ChunkGrant, type HelloReply, type Request } from './protocol';

export interface LaneSlot {
  readonly lane: number;
  generation: number;
  decision: bigint;
  busy: boolean;
}

interface OwnedChunk {
  readonly chunk: number;
  readonly classIndex: number;
  readonly objectBytes: number;
  readonly objectCount: number;
  /** Mirror of the bitmap on media (others may clear bits: refreshed when the chunk looks full). */
  readonly persisted: Uint32Array;
  /** Slots handed to transactions of this client that have not ended. */
  readonly reserved: Uint32Array;
}

/** An object allocated by a transaction, until it ends. */
export interface RemoteReservation {
  readonly chunk: number;
  readonly slot: number;
  readonly offset: number;
  readonly sizeBytes: number;
  readonly huge: boolean;
}

const LANE_WAIT_MS = 10_000;

export class RemoteNode {
  readonly layout: Layout;
  readonly lanes: LaneSlot[];
  private readonly laneWaiters: Array<(lane: LaneSlot) => void> = [];
  private readonly owned = new Map<number, OwnedChunk[]>();
  private readonly ownedByIndex = new Map<number, OwnedChunk>();

  constructor(readonly config: NodeConfig, readonly connection: Connection, hello: HelloReply) {
    this.layout = computeLayout(hello.format);
    this.lanes = hello.lanes.map((grant) => ({ lane: grant.lane, generation: grant.generation, decision: BigInt(grant.decision), busy: false }));
  }

  get nodeId(): number { return this.config.id; }

  async call<T>(request: Request): Promise<T> {
    return decodeReply<T>(await this.connection.call(encodeMessage(request)), `node ${this.nodeId} ${request.op}`);
  }

  /** Throw unless [offset, offset+length) lies in the root area or the heap. */
  checkDataRange(offset: number, length: number, address: GlobalAddress): void {
    checkDataRange(this.layout, offset, length, () => `[${address}, +${length}) on node ${this.nodeId}`);
  }

  // ---- lanes ----

  acquireLane(): Promise<LaneSlot> {
    const free = this.lanes.find((lane) => !lane.busy);
    if (free) {
      free.busy = true;
      return Promise.resolve(free);
    }
    if (this.lanes.length === 0) return Promise.reject(new DpmsError('DPMS_BUSY', `node ${this.nodeId} granted this client no log lane`));
    return new Promise((resolve, reject) => {
      const waiter = (lane: LaneSlot): void => {
        clearTimeout(timer);
        resolve(lane);
      };
      const timer = setTimeout(() => {
        this.laneWaiters.splice(this.laneWaiters.indexOf(waiter), 1);
        reject(new DpmsError('DPMS_TIMEOUT', `no free log lane on node ${this.nodeId} within ${LANE_WAIT_MS} ms`));
      }, LANE_WAIT_MS);
      this.laneWaiters.push(waiter);
    });
  }

  releaseLane(lane: LaneSlot): void {
    const waiter = this.laneWaiters.shift();
    if (waiter) waiter(lane);
    else lane.busy = false;
  }

  // ---- level-2 allocation ----

  private classFor(sizeBytes: number): number {
    const classes = this.layout.sizeClasses;
    for (let i = 0; i < classes.length; i++) if (classes[i] >= sizeBytes) return i;
    return -1;
  }

  /** Reserve an object and append the record that allocates it when the transaction commits. */
  async reserve(sizeBytes: number, builder: RecordBuilder): Promise<RemoteReservation> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `allocation size ${sizeBytes} must be a positive integer`);
    }
    const classIndex = this.classFor(sizeBytes);
    if (classIndex < 0) {
      const runChunks = Math.ceil(sizeBytes / this.layout.chunkBytes);
      const grant = await this.call<{ chunk: ChunkGrant }>({ op: 'allocChunk', runChunks });
      builder.setBits32(chunkMetaAt(this.layout, grant.chunk.chunk) + CHUNK.bitmap, 1);
      return { chunk: grant.chunk.chunk, slot: 0, offset: chunkDataAt(this.layout, grant.chunk.chunk), sizeBytes: grant.chunk.objectBytes, huge: true };
    }
    let found = this.findSlot(classIndex);
    if (!found) {
      await this.refresh(classIndex);
      found = this.findSlot(classIndex);
    }
    if (!found) {
      const grant = await this.call<{ chunk: ChunkGrant }>({ op: 'allocChunk', classIndex });
      const owned = await this.adopt(grant.chunk);
      found = this.findSlot(classIndex) ?? undefined;
      if (!found) throw new DpmsError('DPMS_CORRUPTION', `node ${this.nodeId} granted chunk ${owned.chunk} with no free slot`);
    }
    const { owned, slot } = found;
    owned.reserved[slot >>> 5] |= 1 << (slot & 31);
    builder.setBits32(this.bitmapWordOffset(owned.chunk, slot), 1 << (slot & 31));
    return { chunk: owned.chunk, slot, offset: chunkDataAt(this.layout, owned.chunk) + slot * owned.objectBytes, sizeBytes: owned.objectBytes, huge: false };
  }

  /** The live object at `offset`: read its chunk header and bitmap word from the node. */
  async lookup(offset: number): Promise<{ header: ChunkHeader; chunk: number; slot: number } | undefined> {
    const layout = this.layout;
    if (!Number.isSafeInteger(offset) || offset < layout.heapOffset || offset >= heapEnd(layout)) return undefined;
    const chunk = Math.floor((offset - layout.heapOffset) / layout.chunkBytes);
    const meta = await this.connection.read(REGION.pool, chunkMetaAt(layout, chunk), CHUNK_HEADER_BYTES);
    const header = decodeChunkHeaderAt(meta, 0, chunk);
    if (!header || (header.kind !== ChunkKind.Small && header.kind !== ChunkKind.HugeHead)) return undefined;
    const relative = offset - chunkDataAt(layout, chunk);
    if (relative % header.objectBytes !== 0) return undefined;
    const slot = relative / header.objectBytes;
    if (slot >= header.objectCount) return undefined;
    const word = await this.connection.read(REGION.pool, this.bitmapWordOffset(chunk, slot), 4);
    if (((word.readUInt32LE(0) >>> (slot & 31)) & 1) === 0) return undefined;
    return { header, chunk, slot };
  }

  bitmapWordOffset(chunk: number, slot: number): number {
    return chunkMetaAt(this.layout, chunk) + CHUNK.bitmap + (slot >>> 5) * 4;
  }

  /** A transaction ended: its reservations became objects (committed) or are given back. */
  settleReservations(reservations: readonly RemoteReservation[], committed: boolean): void {
    for (const reservation of reservations) {
      const owned = this.ownedByIndex.get(reservation.chunk);
      if (!owned) continue;
      const bit = 1 << (reservation.slot & 31);
      owned.reserved[reservation.slot >>> 5] &= ~bit;
      if (committed) owned.persisted[reservation.slot >>> 5] |= bit;
    }
  }

  /** An object in a chunk this client owns was freed by a committed transaction of its own. */
  noteFreed(chunk: number, slot: number): void {
    const owned = this.ownedByIndex.get(chunk);
    if (owned) owned.persisted[slot >>> 5] &= ~(1 << (slot & 31));
  }

  private findSlot(classIndex: number): { owned: OwnedChunk; slot: number } | undefined {
    for (const owned of this.owned.get(classIndex) ?? []) {
      const words = Math.ceil(owned.objectCount / 32);
      for (let word = 0; word < words; word++) {
        let free = ~(owned.persisted[word] | owned.reserved[word]);
        const valid = owned.objectCount - word * 32;
        if (valid < 32) free &= (1 << valid) - 1;
        if (free !== 0) return { owned, slot: word * 32 + (31 - Math.clz32(free & -free)) };
      }
    }
    return undefined;
  }

  /** Re-read the bitmaps of this client's chunks of a class: other clients may have freed objects in them. */
  private async refresh(classIndex: number): Promise<void> {
    await Promise.all((this.owned.get(classIndex) ?? []).map(async (owned) => {
      const bytes = await this.connection.read(REGION.pool, chunkMetaAt(this.layout, owned.chunk) + CHUNK.bitmap, owned.persisted.length * 4);
      for (let word = 0; word < owned.persisted.length; word++) owned.persisted[word] = bytes.readUInt32LE(word * 4);
    }));
  }

  private async adopt(grant: ChunkGrant): Promise<OwnedChunk> {
    const words = Math.ceil(grant.objectCount / 32);
    const owned: OwnedChunk = {
      chunk: grant.chunk, classIndex: grant.classIndex, objectBytes: grant.objectBytes, objectCount: grant.objectCount,
      persisted: new Uint32Array(words), reserved: new Uint32Array(words),
    };
    const bytes = await this.connection.read(REGION.pool, chunkMetaAt(this.layout, grant.chunk) + CHUNK.bitmap, words * 4);
    for (let word = 0; word < words; word++) owned.persisted[word] = bytes.readUInt32LE(word * 4);
    const list = this.owned.get(grant.classIndex) ?? [];
    list.push(owned);
    this.owned.set(grant.classIndex, list);
    this.ownedByIndex.set(grant.chunk, owned);
    return owned;
  }
}
