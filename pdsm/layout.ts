// On-media layout of a pDSM pool, declared once. docs/ARCHITECTURE.md carries the same tables; a
// change here is a format change and bumps FORMAT_VERSION.
//
//   [0, 4096)                     superblock (fields below; checksum over bytes 0..251)
//   [logOffset, +laneCount*laneSize)   redo-log lanes (one transaction commits through one lane)
//   [rootOffset, +4096)           the root area: where layers above keep their well-known pointers
//   [bitmapOffset, +bitmapBytes)  chunk bitmap: bit i set = chunk i is allocated (level 1)
//   [chunkMetaOffset, +chunkCount*chunkMetaBytes)  per-chunk metadata: header + object bitmap (level 2)
//   [heapOffset, +chunkCount*chunkSize)            the heap, in chunks
//
// Every region starts cache-line aligned, the heap page aligned. All integers are little-endian.

import { DpmsError } from './errors';

export const FORMAT_VERSION = 1;
export const MAGIC = Buffer.from('DPMSPOOL', 'ascii');
export const LAYOUT_NAME = 'dpms-pdsm';
export const CACHE_LINE = 64;
export const SUPERBLOCK_BYTES = 4096;
export const PAGE = 4096;
export const ROOT_BYTES = 4096;

/** Superblock field offsets (bytes from pool start). */
export const SB = {
  magic: 0, // 8 bytes "DPMSPOOL"
  version: 8, // u32
  headerBytes: 12, // u32, = SUPERBLOCK_BYTES
  uuid: 16, // 16 bytes, random at format
  nodeId: 32, // u32
  flags: 36, // u32, reserved (0)
  poolBytes: 40, // u64
  chunkBytes: 48, // u32
  chunkCount: 52, // u32
  laneCount: 56, // u32
  laneBytes: 60, // u32
  logOffset: 64, // u64
  bitmapOffset: 72, // u64
  bitmapBytes: 80, // u32
  chunkMetaBytes: 84, // u32, per chunk
  chunkMetaOffset: 88, // u64
  heapOffset: 96, // u64
  createdMs: 104, // u64
  layoutName: 112, // 32 bytes, NUL-padded ASCII
  rootOffset: 144, // u64
  checksum: 252, // u32 crc32c of [0, 252), seed SUPERBLOCK_SEED
} as const;
export const SUPERBLOCK_CHECKED_BYTES = 252;
export const SUPERBLOCK_SEED = 0x5eed5b10;

/** Redo-log lane layout (offsets from the lane start). */
export const LANE = {
  /** u64, atomically stored: the highest generation whose log is applied and void. */
  appliedGeneration: 0,
  /**
   * u64, the commit decision of a distributed transaction coordinated through this lane:
   * generation * 4 + Decision. Changed only by 8-byte CAS (the client's commit, a resolver's abort).
   */
  decision: 8,
  /** u64: the highest coordinator generation every participant has confirmed as resolved. */
  confirmedGeneration: 16,
  /** The commit record, one cache line. */
  commit: 64,
  /** Records start here, 8-byte aligned. */
  records: 128,
} as const;
export const COMMIT = {
  checksum: 0, // u32 crc32c over commit[4,64) then the records (one contiguous range), seeded by the generation
  magic: 4, // u32 COMMIT_MAGIC
  generation: 8, // u64
  sequence: 16, // u64, global commit order on this node
  recordsBytes: 24, // u32
  recordCount: 28, // u32
  flags: 32, // u32, CommitFlags (0: a one-node transaction, committed by this record alone)
  coordinatorNode: 36, // u16, distributed transactions: the node whose lane holds the decision
  coordinatorLane: 38, // u16
  coordinatorGeneration: 40, // u64, the coordinator lane's generation for this transaction
  clientId: 48, // u32, the client that wrote the log (for operators)
} as const;

/** COMMIT.flags bits. */
export const CommitFlags = {
  /** Part of a distributed transaction: the log is prepared, committed only if the coordinator's decision says so. */
  prepared: 1,
  /** This lane is the coordinator: its LANE.decision word decides the transaction. */
  coordinator: 2,
} as const;

/** LANE.decision states (low two bits). */
export enum Decision {
  Pending = 0,
  Committed = 1,
  Aborted = 2,
}
export const decisionWord = (generation: number, decision: Decision): bigint => BigInt(generation) * 4n + BigInt(decision);
export const decisionGeneration = (word: bigint): number => Number(word >> 2n);
export const decisionState = (word: bigint): Decision => Number(word & 3n) as Decision;
/** The checksum covers the commit record from here to the end of the records. */
export const COMMIT_CHECKED_FROM = 4;
export const COMMIT_MAGIC = 0x43585444; // "DTXC"

/** Redo record: header then data, padded to 8 bytes. */
export const RECORD = { op: 0, length: 4, offset: 8, data: 16 } as const;
export const RECORD_HEADER_BYTES = 16;
export enum RecordOp {
  /** Copy `length` bytes to `offset`. */
  Write = 1,
  /** u32 at `offset` |= mask (data: u32 mask). Idempotent, commutes with other bit records. */
  SetBits32 = 2,
  /** u32 at `offset` &= ~mask. */
  ClearBits32 = 3,
  /** No effect when applied: data is the u16 node ids of every participant (coordinator logs only). */
  Participants = 4,
}

/** Per-chunk metadata: a one-line header, then the object bitmap. */
export const CHUNK = {
  magic: 0, // u32 CHUNK_MAGIC
  kind: 4, // u16: ChunkKind
  classIndex: 6, // u16: size-class index (Small), 0 otherwise
  objectBytes: 8, // u32: object size (Small), run bytes (HugeHead)
  objectCount: 12, // u32: slots in this chunk (Small), 1 (HugeHead), 0 (HugeTail)
  runChunks: 16, // u32: chunks in the run (HugeHead), 1 (Small); HugeTail: index of its head
  ownerId: 20, // u32: the client that carves this chunk (0: the node itself)
  generation: 24, // u64: bumped on every reassignment, part of the checksum
  checksum: 60, // u32 crc32c of [0,60), seed = chunk index
  bitmap: 64, // object bitmap starts here
} as const;
export const CHUNK_HEADER_BYTES = 64;
export const CHUNK_CHECKED_BYTES = 60;
export const CHUNK_MAGIC = 0x4b4e4843; // "CHNK"
export enum ChunkKind {
  Small = 1,
  HugeHead = 2,
  HugeTail = 3,
}
export const MIN_OBJECT_BYTES = 64;

export interface FormatParameters {
  readonly poolBytes: number;
  readonly chunkBytes: number;
  readonly laneCount: number;
  readonly laneBytes: number;
}

export interface Layout extends FormatParameters {
  readonly chunkCount: number;
  readonly logOffset: number;
  readonly rootOffset: number;
  readonly bitmapOffset: number;
  readonly bitmapBytes: number;
  readonly chunkMetaOffset: number;
  readonly chunkMetaBytes: number;
  readonly heapOffset: number;
  readonly sizeClasses: readonly number[];
}

export const alignUp = (value: number, alignment: number): number => Math.ceil(value / alignment) * alignment;
const isPowerOfTwo = (value: number): boolean => Number.isInteger(value) && value > 0 && (value & (value - 1)) === 0;

/** Size classes for a chunk size: steps of 1.5x and 2x from 64 B up to a quarter chunk. */
export function sizeClassesFor(chunkBytes: number): number[] {
  const classes: number[] = [];
  for (let power = MIN_OBJECT_BYTES; power <= chunkBytes / 4; power *= 2) {
    classes.push(power);
    const between = power + power / 2;
    if (between <= chunkBytes / 4) classes.push(between);
  }
  return classes;
}

export const DEFAULTS = { chunkBytes: 256 * 1024, laneCount: 16, laneBytes: 256 * 1024 } as const;
export const LIMITS = {
  minChunkBytes: 4096,
  maxChunkBytes: 64 * 1024 * 1024,
  minLaneBytes: 4096,
  maxLaneBytes: 64 * 1024 * 1024,
  maxLaneCount: 1024,
  maxPoolBytes: 2 ** 40,
} as const;

/**
 * Compute the layout for the given parameters. Deterministic: open recomputes it from the
 * superblock's parameters and requires the stored offsets to match.
 */
export function computeLayout(parameters: FormatParameters): Layout {
  const { poolBytes, chunkBytes, laneCount, laneBytes } = parameters;
  const invalid = (message: string): never => {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', message);
  };
  if (!isPowerOfTwo(chunkBytes) || chunkBytes < LIMITS.minChunkBytes || chunkBytes > LIMITS.maxChunkBytes) {
    invalid(`chunk size ${chunkBytes} must be a power of two between ${LIMITS.minChunkBytes} and ${LIMITS.maxChunkBytes}`);
  }
  if (!Number.isInteger(laneCount) || laneCount < 1 || laneCount > LIMITS.maxLaneCount) {
    invalid(`lane count ${laneCount} must be between 1 and ${LIMITS.maxLaneCount}`);
  }
  if (!Number.isInteger(laneBytes) || laneBytes % CACHE_LINE !== 0 || laneBytes < LIMITS.minLaneBytes || laneBytes > LIMITS.maxLaneBytes) {
    invalid(`lane size ${laneBytes} must be a multiple of 64 between ${LIMITS.minLaneBytes} and ${LIMITS.maxLaneBytes}`);
  }
  if (!Number.isSafeInteger(poolBytes) || poolBytes <= 0 || poolBytes > LIMITS.maxPoolBytes) {
    invalid(`pool size ${poolBytes} must be a positive integer up to 1 TiB`);
  }
  const logOffset = SUPERBLOCK_BYTES;
  const rootOffset = alignUp(logOffset + laneCount * laneBytes, CACHE_LINE);
  const bitmapOffset = rootOffset + ROOT_BYTES;
  const chunkMetaBytes = CHUNK_HEADER_BYTES + alignUp(chunkBytes / MIN_OBJECT_BYTES / 8, CACHE_LINE);
  // Solve for the largest chunk count whose metadata and chunks fit after the log.
  const afterLog = poolBytes - bitmapOffset;
  let chunkCount = Math.max(0, Math.floor(afterLog / (chunkBytes + chunkMetaBytes + 1)));
  const regionsFor = (count: number) => {
    const bitmapBytes = alignUp(Math.ceil(count / 32) * 4, CACHE_LINE);
    const chunkMetaOffset = bitmapOffset + bitmapBytes;
    const heapOffset = alignUp(chunkMetaOffset + count * chunkMetaBytes, PAGE);
    return { bitmapBytes, chunkMetaOffset, heapOffset, end: heapOffset + count * chunkBytes };
  };
  while (chunkCount > 0 && regionsFor(chunkCount).end > poolBytes) chunkCount--;
  if (chunkCount < 1) {
    invalid(`pool size ${poolBytes} is too small for ${laneCount} lanes of ${laneBytes} B and one ${chunkBytes}-B chunk`);
  }
  const regions = regionsFor(chunkCount);
  return {
    poolBytes, chunkBytes, laneCount, laneBytes, chunkCount,
    logOffset, rootOffset, bitmapOffset, bitmapBytes: regions.bitmapBytes,
    chunkMetaOffset: regions.chunkMetaOffset, chunkMetaBytes, heapOffset: regions.heapOffset,
    sizeClasses: sizeClassesFor(chunkBytes),
  };
}

export const laneOffset = (layout: Layout, lane: number): number => layout.logOffset + lane * layout.laneBytes;
export const chunkMetaAt = (layout: Layout, chunk: number): number => layout.chunkMetaOffset + chunk * layout.chunkMetaBytes;
export const chunkDataAt = (layout: Layout, chunk: number): number => layout.heapOffset + chunk * layout.chunkBytes;
export const heapEnd = (layout: Layout): number => layout.heapOffset + layout.chunkCount * layout.chunkBytes;

/** Seed for log checksums: both halves of the 64-bit generation, so a stale record never verifies. */
export function generationSeed(generation: number): number {
  return ((generation >>> 0) ^ Math.floor(generation / 0x1_0000_0000) ^ 0x2c1b3c6d) >>> 0;
}

/** u64 fields are kept below 2^53 so that they are plain numbers in JavaScript. */
export function readU64(buffer: Buffer, offset: number): number {
  return buffer.readUInt32LE(offset) + buffer.readUInt32LE(offset + 4) * 0x1_0000_0000;
}

export function writeU64(buffer: Buffer, offset: number, value: number): void {
  buffer.writeUInt32LE(value >>> 0, offset);
  buffer.writeUInt32LE(Math.floor(value / 0x1_0000_0000), offset + 4);
}
