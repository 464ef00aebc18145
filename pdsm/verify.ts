// The read-only verifier of a pool image: the allocator's invariants (no chunk in two runs, headers
// intact, bitmaps within their chunks, free chunks empty) and the state of the log lanes. It reads
// only, so `dpms check` runs it on a recovered copy and never writes the pool; the crash tests run
// it after every recovery.

import { makeAddress, type GlobalAddress } from './address';
import { decodeChunkHeader, isChunkAllocated, smallChunkShape } from './allocator';
import { CHUNK, chunkDataAt, chunkMetaAt, ChunkKind, type Layout } from './layout';
import { inspectLane } from './log';
import type { PoolInfo } from './superblock';

export interface VerifyReport {
  readonly clean: boolean;
  readonly errors: string[];
  readonly chunksUsed: number;
  readonly chunksFree: number;
  /** Allocated chunks that hold no object (kept for reuse; not a leak). */
  readonly emptyChunks: number;
  readonly objects: number;
  readonly objectBytes: number;
  /** Lanes holding a committed log that recovery would replay. */
  readonly pendingLogs: number;
  /** Lanes holding a torn log that recovery would discard. */
  readonly tornLogs: number;
}

export interface LiveObject {
  readonly address: GlobalAddress;
  readonly sizeBytes: number;
}

/** Verify the allocator and log of a pool image; `onObject` sees every live object. */
export function verifyPool(image: Buffer, info: PoolInfo, onObject?: (object: LiveObject) => void): VerifyReport {
  const layout: Layout = info.layout;
  const errors: string[] = [];
  const fail = (message: string): void => {
    if (errors.length < 100) errors.push(message);
  };
  let chunksUsed = 0;
  let emptyChunks = 0;
  let objects = 0;
  let objectBytes = 0;
  let pendingLogs = 0;
  let tornLogs = 0;
  for (let lane = 0; lane < layout.laneCount; lane++) {
    try {
      const state = inspectLane(image, layout, lane).state;
      if (state === 'committed') pendingLogs++;
      if (state === 'torn') tornLogs++;
    } catch (error) {
      fail(`log lane ${lane}: ${(error as Error).message}`);
    }
  }
  const bitmapWords = (meta: number, count: number): number[] => {
    const words: number[] = [];
    for (let i = 0; i < Math.ceil(count / 32); i++) words.push(image.readUInt32LE(meta + CHUNK.bitmap + i * 4));
    return words;
  };
  const allBitsWords = (layout.chunkMetaBytes - CHUNK.bitmap) / 4;
  const bitmapIsZeroFrom = (meta: number, fromBit: number): boolean => {
    for (let word = Math.floor(fromBit / 32); word < allBitsWords; word++) {
      let value = image.readUInt32LE(meta + CHUNK.bitmap + word * 4);
      if (word === Math.floor(fromBit / 32) && fromBit % 32 !== 0) value &= ~((1 << (fromBit % 32)) - 1);
      if (value !== 0) return false;
    }
    return true;
  };
  let expectTailsOf = -1;
  let tailsLeft = 0;
  for (let chunk = 0; chunk < layout.chunkCount; chunk++) {
    const meta = chunkMetaAt(layout, chunk);
    const allocated = isChunkAllocated(image, layout, chunk);
    if (tailsLeft > 0) {
      tailsLeft--;
      const header = allocated ? decodeChunkHeader(image, layout, chunk) : undefined;
      if (!allocated || !header || header.kind !== ChunkKind.HugeTail || header.runChunks !== expectTailsOf) {
        fail(`chunk ${chunk} should be a tail of the run at chunk ${expectTailsOf}`);
      }
      if (allocated) chunksUsed++;
      if (!bitmapIsZeroFrom(meta, 0)) fail(`chunk ${chunk} (run tail) has object bits set`);
      continue;
    }
    if (!allocated) {
      if (!bitmapIsZeroFrom(meta, 0)) fail(`free chunk ${chunk} has object bits set`);
      continue;
    }
    chunksUsed++;
    const header = decodeChunkHeader(image, layout, chunk);
    if (!header) {
      fail(`chunk ${chunk} is allocated but its header is damaged`);
      continue;
    }
    let count: number;
    let size: number;
    if (header.kind === ChunkKind.Small) {
      if (header.classIndex >= layout.sizeClasses.length) {
        fail(`chunk ${chunk} has size class ${header.classIndex} (only ${layout.sizeClasses.length} exist)`);
        continue;
      }
      const shape = smallChunkShape(layout, header.classIndex);
      if (header.objectBytes !== shape.objectBytes || header.objectCount !== shape.objectCount || header.runChunks !== 1) {
        fail(`chunk ${chunk} header does not match size class ${header.classIndex}`);
        continue;
      }
      count = shape.objectCount;
      size = shape.objectBytes;
    } else if (header.kind === ChunkKind.HugeHead) {
      const run = header.runChunks;
      if (run < 1 || chunk + run > layout.chunkCount || header.objectBytes !== run * layout.chunkBytes || header.objectCount !== 1) {
        fail(`chunk ${chunk} heads an impossible run of ${run} chunks`);
        continue;
      }
      count = 1;
      size = header.objectBytes;
      expectTailsOf = chunk;
      tailsLeft = run - 1;
    } else {
      fail(`chunk ${chunk} is a ${header.kind === ChunkKind.HugeTail ? 'run tail without a head' : `chunk of unknown kind ${header.kind}`}`);
      continue;
    }
    if (!bitmapIsZeroFrom(meta, count)) fail(`chunk ${chunk} has object bits beyond its ${count} slots`);
    let live = 0;
    const words = bitmapWords(meta, count);
    for (let slot = 0; slot < count; slot++) {
      if ((words[slot >>> 5] >>> (slot & 31)) & 1) {
        live++;
        onObject?.({ address: makeAddress(info.nodeId, chunkDataAt(layout, chunk) + slot * size), sizeBytes: size });
      }
    }
    if (live === 0) emptyChunks++;
    objects += live;
    objectBytes += live * size;
  }
  if (tailsLeft > 0) fail(`the run at chunk ${expectTailsOf} runs past the heap`);
  return {
    clean: errors.length === 0, errors, chunksUsed, chunksFree: layout.chunkCount - chunksUsed, emptyChunks,
    objects, objectBytes, pendingLogs, tornLogs,
  };
}
