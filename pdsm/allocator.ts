// The two-level allocator of one node's pool.
//
// Level 1 (chunks): the node hands out whole chunks, recorded in the persistent chunk bitmap and
// each chunk's header. A chunk is either a Small chunk carved into objects of one size class, or
// part of a Huge run (one object spanning whole chunks). Level-1 changes are small system
// transactions of their own through the redo log, so they are atomic; a chunk taken for a
// transaction that then aborts or crashes is an empty chunk, which is reused (Small) or released at
// the next open (Huge): never a leak.
//
// Level 2 (objects): each chunk's object bitmap says which slots are allocated. A transaction's
// alloc and free only reserve slots in DRAM and add SetBits32/ClearBits32 records to its own redo
// log, so objects change hands exactly when the transaction commits: after any crash there is no
// leak and no double allocation. Reserved (in-flight alloc) and freeing (in-flight free) slots are
// kept in DRAM so that concurrent transactions never hand out the same slot.
//
// Distributed pDSM (issue 3) keeps this split: level 1 becomes an RPC to the node that owns the
// pool; level 2 runs in the client that owns the chunk (CHUNK.ownerId).

import { crc32c } from '../native';
import { assert, DpmsError } from './errors';
import {
  CHUNK, CHUNK_CHECKED_BYTES, CHUNK_HEADER_BYTES, CHUNK_MAGIC, chunkDataAt, chunkMetaAt, ChunkKind, readU64,
  writeU64, type Layout,
} from './layout';
import type { RecordBuilder, RedoLog } from './log';
import type { PmOps } from './pmem';

export interface ChunkHeader {
  readonly kind: ChunkKind;
  readonly classIndex: number;
  readonly objectBytes: number;
  readonly objectCount: number;
  /** HugeHead: chunks in the run; Small: 1; HugeTail: the index of the run's head chunk. */
  readonly runChunks: number;
  readonly ownerId: number;
  readonly generation: number;
}

export function encodeChunkHeader(header: ChunkHeader, chunkIndex: number): Buffer {
  const bytes = Buffer.alloc(CHUNK_HEADER_BYTES);
  bytes.writeUInt32LE(CHUNK_MAGIC, CHUNK.magic);
  bytes.writeUInt16LE(header.kind, CHUNK.kind);
  bytes.writeUInt16LE(header.classIndex, CHUNK.classIndex);
  bytes.writeUInt32LE(header.objectBytes, CHUNK.objectBytes);
  bytes.writeUInt32LE(header.objectCount, CHUNK.objectCount);
  bytes.writeUInt32LE(header.runChunks, CHUNK.runChunks);
  bytes.writeUInt32LE(header.ownerId, CHUNK.ownerId);
  writeU64(bytes, CHUNK.generation, header.generation);
  bytes.writeUInt32LE(crc32c(bytes, 0, CHUNK_CHECKED_BYTES, chunkIndex), CHUNK.checksum);
  return bytes;
}

/** Decode a chunk header; undefined when its magic or checksum is wrong. */
export function decodeChunkHeader(image: Buffer, layout: Layout, chunkIndex: number): ChunkHeader | undefined {
  return decodeChunkHeaderAt(image, chunkMetaAt(layout, chunkIndex), chunkIndex);
}

/** Decode the chunk header at `at` in `bytes` (a pool image, or a copy read from a remote node). */
export function decodeChunkHeaderAt(bytes: Buffer, at: number, chunkIndex: number): ChunkHeader | undefined {
  if (bytes.readUInt32LE(at + CHUNK.magic) !== CHUNK_MAGIC) return undefined;
  if (crc32c(bytes, at, CHUNK_CHECKED_BYTES, chunkIndex) !== bytes.readUInt32LE(at + CHUNK.checksum)) return undefined;
  return {
    kind: bytes.readUInt16LE(at + CHUNK.kind),
    classIndex: bytes.readUInt16LE(at + CHUNK.classIndex),
    objectBytes: bytes.readUInt32LE(at + CHUNK.objectBytes),
    objectCount: bytes.readUInt32LE(at + CHUNK.objectCount),
    runChunks: bytes.readUInt32LE(at + CHUNK.runChunks),
    ownerId: bytes.readUInt32LE(at + CHUNK.ownerId),
    generation: readU64(bytes, at + CHUNK.generation),
  };
}

/** The expected header fields of a Small chunk of a class, shared with the verifier. */
export function smallChunkShape(layout: Layout, classIndex: number): { objectBytes: number; objectCount: number } {
  const objectBytes = layout.sizeClasses[classIndex];
  return { objectBytes, objectCount: Math.floor(layout.chunkBytes / objectBytes) };
}

export const isChunkAllocated = (image: Buffer, layout: Layout, chunk: number): boolean =>
  ((image.readUInt32LE(layout.bitmapOffset + (chunk >>> 5) * 4) >>> (chunk & 31)) & 1) === 1;

/** A slot: an object's place in the allocator. */
export interface Slot {
  readonly chunk: number;
  readonly slot: number;
}

/** An object allocated inside a transaction. */
export interface Reservation extends Slot {
  readonly offset: number;
  readonly sizeBytes: number;
}

interface ChunkState {
  readonly index: number;
  readonly kind: ChunkKind.Small | ChunkKind.HugeHead;
  readonly classIndex: number;
  readonly objectBytes: number;
  readonly objectCount: number;
  readonly runChunks: number;
  /** Mirror of the object bitmap on media. */
  readonly persisted: Uint32Array;
  /** Slots handed to transactions that have not committed yet. */
  readonly reserved: Uint32Array;
  /** Slots being freed by transactions that have not committed yet. */
  readonly freeing: Uint32Array;
  live: number;
  pending: number;
  hint: number;
}

export interface AllocatorStats {
  readonly chunkCount: number;
  readonly chunksUsed: number;
  readonly objects: number;
  readonly objectBytes: number;
  readonly heapBytes: number;
}

const HUGE = -1;

export class Allocator {
  /** 1 when the chunk is allocated (head, tail or small). */
  private readonly chunkUsed: Uint8Array;
  private readonly chunks: Array<ChunkState | undefined>;
  /** Per size class: Small chunks that have a slot neither persisted nor reserved. */
  private readonly available: Array<Set<number>>;
  private chunksUsed = 0;
  private objects = 0;
  private objectBytes = 0;
  private readonly systemBuilder: RecordBuilder;

  constructor(private readonly pm: PmOps, private readonly layout: Layout, private readonly log: RedoLog) {
    this.chunkUsed = new Uint8Array(layout.chunkCount);
    this.chunks = new Array<ChunkState | undefined>(layout.chunkCount);
    this.available = layout.sizeClasses.map(() => new Set<number>());
    this.systemBuilder = log.newBuilder();
  }

  /** Rebuild the DRAM state from media (after log recovery). Releases Huge runs left empty by a crash. */
  load(): void {
    const image = this.pm.buffer;
    const layout = this.layout;
    const emptyRuns: number[] = [];
    for (let chunk = 0; chunk < layout.chunkCount; chunk++) {
      if (!isChunkAllocated(image, layout, chunk)) continue;
      this.chunkUsed[chunk] = 1;
      this.chunksUsed++;
      const header = decodeChunkHeader(image, layout, chunk);
      if (!header) throw new DpmsError('DPMS_CORRUPTION', `chunk ${chunk} is allocated but its header is damaged (run dpms check)`);
      if (header.kind === ChunkKind.HugeTail) continue;
      if (header.kind !== ChunkKind.Small && header.kind !== ChunkKind.HugeHead) {
        throw new DpmsError('DPMS_CORRUPTION', `chunk ${chunk} has unknown kind ${header.kind}`);
      }
      const state = this.newState(chunk, header);
      const words = state.persisted.length;
      state.persisted.set(new Uint32Array(image.buffer.slice(image.byteOffset + chunkMetaAt(layout, chunk) + CHUNK.bitmap,
        image.byteOffset + chunkMetaAt(layout, chunk) + CHUNK.bitmap + words * 4)));
      for (let slot = 0; slot < state.objectCount; slot++) {
        if (bitIsSet(state.persisted, slot)) state.live++;
      }
      this.chunks[chunk] = state;
      this.objects += state.live;
      this.objectBytes += state.live * state.objectBytes;
      if (state.kind === ChunkKind.HugeHead) {
        if (state.live === 0) emptyRuns.push(chunk);
      } else if (state.live < state.objectCount) {
        this.available[state.classIndex].add(chunk);
      }
    }
    for (const chunk of emptyRuns) this.releaseChunk(chunk);
  }

  stats(): AllocatorStats {
    return {
      chunkCount: this.layout.chunkCount, chunksUsed: this.chunksUsed, objects: this.objects,
      objectBytes: this.objectBytes, heapBytes: this.layout.chunkCount * this.layout.chunkBytes,
    };
  }

  // ---- level 1 for remote clients (the node daemon; level 2 then runs in the client) ----

  /** The decoded header of an allocated chunk, or undefined. */
  chunkHeader(chunk: number): ChunkHeader | undefined {
    if (!Number.isInteger(chunk) || chunk < 0 || chunk >= this.layout.chunkCount || !this.chunkUsed[chunk]) return undefined;
    return decodeChunkHeader(this.pm.buffer, this.layout, chunk);
  }

  /** Allocated objects in a chunk according to its bitmap on media (clients change it with one-sided atomics). */
  mediaObjectCount(chunk: number, objectCount: number): number {
    const at = chunkMetaAt(this.layout, chunk) + CHUNK.bitmap;
    let count = 0;
    for (let word = 0; word < Math.ceil(objectCount / 32); word++) {
      let bits = this.pm.buffer.readUInt32LE(at + word * 4);
      while (bits !== 0) {
        bits &= bits - 1;
        count++;
      }
    }
    return count;
  }

  /**
   * Give a client a Small chunk of a class: an allocated chunk of that class that `reusable` allows
   * (its owner is gone) and that has free slots, re-owned; otherwise a fresh chunk. One system
   * transaction either way.
   */
  grantSmallChunk(classIndex: number, ownerId: number, reusable: (chunk: number, header: ChunkHeader) => boolean): { chunk: number; header: ChunkHeader } {
    if (!Number.isInteger(classIndex) || classIndex < 0 || classIndex >= this.layout.sizeClasses.length) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `size class ${classIndex} does not exist (0..${this.layout.sizeClasses.length - 1})`);
    }
    for (let chunk = 0; chunk < this.layout.chunkCount; chunk++) {
      const header = this.chunkUsed[chunk] ? decodeChunkHeader(this.pm.buffer, this.layout, chunk) : undefined;
      if (!header || header.kind !== ChunkKind.Small || header.classIndex !== classIndex || header.ownerId === ownerId) continue;
      if (!reusable(chunk, header) || this.mediaObjectCount(chunk, header.objectCount) >= header.objectCount) continue;
      const owned: ChunkHeader = { ...header, ownerId, generation: this.nextGeneration(chunk) };
      const builder = this.systemBuilder;
      builder.reset();
      builder.write(chunkMetaAt(this.layout, chunk), encodeChunkHeader(owned, chunk));
      this.log.commit(builder);
      return { chunk, header: owned };
    }
    const chunk = this.findFreeRun(1);
    const header: ChunkHeader = { kind: ChunkKind.Small, classIndex, ...smallChunkShape(this.layout, classIndex), runChunks: 1, ownerId, generation: this.nextGeneration(chunk) };
    this.commitLevel1([{ chunk, header }], true);
    this.chunks[chunk] = this.newState(chunk, header);
    return { chunk, header };
  }

  /** Give a client a Huge run of `runChunks` chunks (its one object is allocated by the client's transaction). */
  grantHugeRun(runChunks: number, ownerId: number): { chunk: number; header: ChunkHeader } {
    if (!Number.isInteger(runChunks) || runChunks < 1 || runChunks > this.layout.chunkCount) {
      throw new DpmsError('DPMS_NO_SPACE', `a run of ${runChunks} chunks cannot fit in this pool (${this.layout.chunkCount} chunks)`);
    }
    const state = this.grabRun(runChunks);
    const header: ChunkHeader = { ...decodeChunkHeader(this.pm.buffer, this.layout, state.index)!, ownerId };
    const builder = this.systemBuilder;
    builder.reset();
    builder.write(chunkMetaAt(this.layout, state.index), encodeChunkHeader(header, state.index));
    this.log.commit(builder);
    return { chunk: state.index, header };
  }

  /**
   * A client gives back a Small chunk or a Huge run whose bitmap on media is empty. Refused
   * (DPMS_INVALID_ARGUMENT) when it is not such a chunk or still holds objects; `busy` says whether
   * an unresolved log may still set bits in it.
   */
  releaseClientChunk(chunk: number, busy: (chunk: number) => boolean): void {
    const header = this.chunkHeader(chunk);
    if (!header || (header.kind !== ChunkKind.Small && header.kind !== ChunkKind.HugeHead)) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `chunk ${chunk} is not an allocated chunk or run head`);
    }
    if (this.mediaObjectCount(chunk, header.objectCount) > 0 || busy(chunk)) return;
    const state = this.chunks[chunk];
    if (state) {
      state.live = 0;
      state.pending = 0;
      this.releaseChunk(chunk);
    }
  }

  /** The size class for a request, or HUGE. */
  private classFor(sizeBytes: number): number {
    const classes = this.layout.sizeClasses;
    for (let i = 0; i < classes.length; i++) if (classes[i] >= sizeBytes) return i;
    return HUGE;
  }

  /**
   * Reserve an object of at least sizeBytes for a transaction and append the record that allocates
   * it at commit. May take a new chunk from level 1 (its own system transaction).
   */
  reserve(sizeBytes: number, builder: RecordBuilder): Reservation {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `allocation size ${sizeBytes} must be a positive integer`);
    }
    const classIndex = this.classFor(sizeBytes);
    let state: ChunkState;
    let slot: number;
    if (classIndex === HUGE) {
      state = this.grabRun(Math.ceil(sizeBytes / this.layout.chunkBytes));
      slot = 0;
    } else {
      const [first] = this.available[classIndex];
      state = first !== undefined ? this.chunks[first]! : this.grabSmall(classIndex);
      slot = this.findFreeSlot(state);
    }
    setBit(state.reserved, slot);
    state.pending++;
    if (state.kind === ChunkKind.Small && this.findFreeSlotOrUndefined(state) === undefined) {
      this.available[state.classIndex].delete(state.index);
    }
    builder.setBits32(this.bitmapWordOffset(state.index, slot), 1 << (slot & 31));
    return { chunk: state.index, slot, offset: this.slotOffset(state, slot), sizeBytes: state.objectBytes };
  }

  /**
   * Check that `offset` is the start of a live object that no transaction is freeing, mark it
   * freeing, and append the record that frees it at commit.
   */
  markFree(offset: number, builder: RecordBuilder): Reservation {
    const found = this.lookup(offset);
    if (!found) throw new DpmsError('DPMS_INVALID_ADDRESS', `offset 0x${offset.toString(16)} is not the start of an allocated object`);
    const { state, slot } = found;
    if (bitIsSet(state.freeing, slot)) {
      throw new DpmsError('DPMS_INVALID_ADDRESS', `object at 0x${offset.toString(16)} is already being freed`);
    }
    setBit(state.freeing, slot);
    builder.clearBits32(this.bitmapWordOffset(state.index, slot), 1 << (slot & 31));
    return { chunk: state.index, slot, offset, sizeBytes: state.objectBytes };
  }

  /**
   * Free, in the same transaction, an object that the transaction itself allocated: the clear
   * record undoes the set record at apply time; the slot is given back when the transaction ends.
   */
  unreserve(reservation: Reservation, builder: RecordBuilder): void {
    builder.clearBits32(this.bitmapWordOffset(reservation.chunk, reservation.slot), 1 << (reservation.slot & 31));
  }

  /** Usable size of the live object at offset, or undefined when there is none. */
  objectSize(offset: number): number | undefined {
    return this.lookup(offset)?.state.objectBytes;
  }

  /** The transaction committed: its reservations are now allocated, its frees free. */
  committed(allocs: readonly Slot[], frees: readonly Slot[]): void {
    for (const { chunk, slot } of allocs) {
      const state = this.chunks[chunk]!;
      clearBit(state.reserved, slot);
      state.pending--;
      setBit(state.persisted, slot);
      state.live++;
      this.objects++;
      this.objectBytes += state.objectBytes;
    }
    const touched = new Set<number>();
    for (const { chunk, slot } of frees) {
      const state = this.chunks[chunk]!;
      clearBit(state.freeing, slot);
      clearBit(state.persisted, slot);
      state.live--;
      this.objects--;
      this.objectBytes -= state.objectBytes;
      touched.add(chunk);
    }
    for (const chunk of touched) this.afterFree(chunk);
  }

  /** The transaction aborted: give its reservations back and keep its frees allocated. */
  cancelled(allocs: readonly Slot[], frees: readonly Slot[]): void {
    const touched = new Set<number>();
    for (const { chunk, slot } of allocs) {
      const state = this.chunks[chunk]!;
      clearBit(state.reserved, slot);
      state.pending--;
      touched.add(chunk);
    }
    for (const { chunk, slot } of frees) clearBit(this.chunks[chunk]!.freeing, slot);
    for (const chunk of touched) this.afterFree(chunk);
  }

  /** A slot became free in a chunk: make it available, or give the chunk back if it is empty. */
  private afterFree(chunk: number): void {
    const state = this.chunks[chunk]!;
    if (state.live > 0 || state.pending > 0) {
      if (state.kind === ChunkKind.Small) this.available[state.classIndex].add(chunk);
      return;
    }
    if (state.kind === ChunkKind.HugeHead) {
      this.releaseChunk(chunk);
      return;
    }
    // Keep one empty chunk per class to avoid churning level 1; release any other.
    const pool = this.available[state.classIndex];
    pool.add(chunk);
    for (const other of pool) {
      const otherState = this.chunks[other]!;
      if (other !== chunk && (otherState.live + otherState.pending) < otherState.objectCount) {
        pool.delete(chunk);
        this.releaseChunk(chunk);
        return;
      }
    }
  }

  private lookup(offset: number): { state: ChunkState; slot: number } | undefined {
    const layout = this.layout;
    if (!Number.isSafeInteger(offset) || offset < layout.heapOffset) return undefined;
    const chunk = Math.floor((offset - layout.heapOffset) / layout.chunkBytes);
    if (chunk >= layout.chunkCount) return undefined;
    const state = this.chunks[chunk];
    if (!state) return undefined;
    const relative = offset - chunkDataAt(layout, chunk);
    if (relative % state.objectBytes !== 0) return undefined;
    const slot = relative / state.objectBytes;
    if (slot >= state.objectCount || !bitIsSet(state.persisted, slot)) return undefined;
    return { state, slot };
  }

  private slotOffset(state: ChunkState, slot: number): number {
    return chunkDataAt(this.layout, state.index) + slot * state.objectBytes;
  }

  private bitmapWordOffset(chunk: number, slot: number): number {
    return chunkMetaAt(this.layout, chunk) + CHUNK.bitmap + (slot >>> 5) * 4;
  }

  private findFreeSlot(state: ChunkState): number {
    const slot = this.findFreeSlotOrUndefined(state);
    assert(slot !== undefined, `chunk ${state.index} listed as available but full`);
    return slot;
  }

  private findFreeSlotOrUndefined(state: ChunkState): number | undefined {
    const words = Math.ceil(state.objectCount / 32);
    for (let n = 0; n < words; n++) {
      const word = (state.hint + n) % words;
      let free = ~(state.persisted[word] | state.reserved[word]);
      const validBits = state.objectCount - word * 32;
      if (validBits < 32) free &= (1 << validBits) - 1;
      if (free !== 0) {
        state.hint = word;
        return word * 32 + (31 - Math.clz32(free & -free));
      }
    }
    return undefined;
  }

  private newState(chunk: number, header: ChunkHeader): ChunkState {
    const words = Math.ceil(Math.max(1, header.objectCount) / 32);
    return {
      index: chunk,
      kind: header.kind as ChunkKind.Small | ChunkKind.HugeHead,
      classIndex: header.classIndex,
      objectBytes: header.objectBytes,
      objectCount: header.objectCount,
      runChunks: header.runChunks,
      persisted: new Uint32Array(words),
      reserved: new Uint32Array(words),
      freeing: new Uint32Array(words),
      live: 0,
      pending: 0,
      hint: 0,
    };
  }

  private nextGeneration(chunk: number): number {
    const generation = readU64(this.pm.buffer, chunkMetaAt(this.layout, chunk) + CHUNK.generation);
    return Number.isSafeInteger(generation) && generation < 2 ** 50 ? generation + 1 : 1;
  }

  private grabSmall(classIndex: number): ChunkState {
    const chunk = this.findFreeRun(1);
    const shape = smallChunkShape(this.layout, classIndex);
    const header: ChunkHeader = { kind: ChunkKind.Small, classIndex, ...shape, runChunks: 1, ownerId: 0, generation: this.nextGeneration(chunk) };
    this.commitLevel1([{ chunk, header }], true);
    const state = this.newState(chunk, header);
    this.chunks[chunk] = state;
    this.available[classIndex].add(chunk);
    return state;
  }

  private grabRun(runChunks: number): ChunkState {
    const head = this.findFreeRun(runChunks);
    const updates: Array<{ chunk: number; header: ChunkHeader }> = [];
    const runBytes = runChunks * this.layout.chunkBytes;
    for (let i = 0; i < runChunks; i++) {
      const chunk = head + i;
      const header: ChunkHeader = i === 0
        ? { kind: ChunkKind.HugeHead, classIndex: 0, objectBytes: runBytes, objectCount: 1, runChunks, ownerId: 0, generation: this.nextGeneration(chunk) }
        : { kind: ChunkKind.HugeTail, classIndex: 0, objectBytes: 0, objectCount: 0, runChunks: head, ownerId: 0, generation: this.nextGeneration(chunk) };
      updates.push({ chunk, header });
    }
    this.commitLevel1(updates, true);
    const state = this.newState(head, updates[0].header);
    this.chunks[head] = state;
    return state;
  }

  /** Give a chunk (or a whole Huge run) back to level 1. It must hold no object. */
  private releaseChunk(chunk: number): void {
    const state = this.chunks[chunk]!;
    assert(state.live === 0 && state.pending === 0, `releasing chunk ${chunk} that still holds objects`);
    const updates: Array<{ chunk: number; header: ChunkHeader | undefined }> = [];
    for (let i = 0; i < state.runChunks; i++) updates.push({ chunk: chunk + i, header: undefined });
    this.commitLevel1(updates, false);
    this.chunks[chunk] = undefined;
    if (state.kind === ChunkKind.Small) this.available[state.classIndex].delete(chunk);
  }

  /**
   * One level-1 system transaction: set or clear chunk bits and write (or clear) headers. Object
   * bitmaps need no record: a chunk is only released when its bitmap is all zero, so a free chunk's
   * bitmap is always zero (the verifier checks it).
   */
  private commitLevel1(updates: ReadonlyArray<{ chunk: number; header: ChunkHeader | undefined }>, allocate: boolean): void {
    const builder = this.systemBuilder;
    builder.reset();
    const masks = new Map<number, number>();
    for (const { chunk, header } of updates) {
      const meta = chunkMetaAt(this.layout, chunk);
      if (header) {
        builder.write(meta, encodeChunkHeader(header, chunk));
      } else {
        // Keep the generation so that the next owner's header differs from every earlier one.
        const cleared = Buffer.alloc(CHUNK_HEADER_BYTES);
        this.pm.buffer.copy(cleared, CHUNK.generation, meta + CHUNK.generation, meta + CHUNK.generation + 8);
        builder.write(meta, cleared);
      }
      const word = this.layout.bitmapOffset + (chunk >>> 5) * 4;
      masks.set(word, ((masks.get(word) ?? 0) | (1 << (chunk & 31))) >>> 0);
    }
    for (const [word, mask] of masks) {
      if (allocate) builder.setBits32(word, mask);
      else builder.clearBits32(word, mask);
    }
    this.log.commit(builder);
    for (const { chunk } of updates) {
      this.chunkUsed[chunk] = allocate ? 1 : 0;
      this.chunksUsed += allocate ? 1 : -1;
    }
  }

  private findFreeRun(runChunks: number): number {
    const used = this.chunkUsed;
    let runStart = 0;
    let runLength = 0;
    for (let chunk = 0; chunk < used.length; chunk++) {
      if (used[chunk]) {
        runLength = 0;
        runStart = chunk + 1;
        continue;
      }
      if (++runLength === runChunks) return runStart;
    }
    throw new DpmsError('DPMS_NO_SPACE',
      `no ${runChunks === 1 ? 'free chunk' : `run of ${runChunks} free chunks`} of ${this.layout.chunkBytes} B left in the pool (${this.chunksUsed}/${this.layout.chunkCount} chunks used)`);
  }
}

function bitIsSet(words: Uint32Array, bit: number): boolean {
  return ((words[bit >>> 5] >>> (bit & 31)) & 1) === 1;
}

function setBit(words: Uint32Array, bit: number): void {
  words[bit >>> 5] |= 1 << (bit & 31);
}

function clearBit(words: Uint32Array, bit: number): void {
  words[bit >>> 5] &= ~(1 << (bit & 31));
}
