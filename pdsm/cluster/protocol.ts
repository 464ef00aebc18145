// What clients and node daemons say to each other: the registered regions a node serves, the
// remote lock table's format, and the two-sided RPC messages (JSON, small, validated on receipt).
// One-sided operations never go through here; RPCs are the control plane: sessions, chunk
// allocation (level 1), commit decisions of distributed transactions, and status.

import { DpmsError } from '../errors';

/** Region 0: the node's PM pool. Region 1: its volatile lock table. */
export const REGION = { pool: 0, locks: 1 } as const;

/**
 * The lock table: LOCK_WORDS 8-byte words in the node's DRAM (a tmpfs file recreated empty at every
 * start), taken and released by clients with one-sided CAS / WRITE. A word guards every 64-B granule
 * of the node's pool that hashes to it (collisions only cause false conflicts). A word is 0 when free,
 * else the holder's tag: clientId << 32 | transaction serial.
 */
export const LOCK_WORDS = 1 << 17;
export const LOCK_TABLE_BYTES = LOCK_WORDS * 8;
export const LOCK_GRANULE_BYTES = 64;
/** The client id a node uses for its own holds (ranges of in-doubt transactions after a restart). */
export const NODE_HOLDER_ID = 0xffff_ffff;

export const lockTag = (clientId: number, serial: number): bigint => (BigInt(clientId >>> 0) << 32n) | BigInt(serial >>> 0);
export const tagClientId = (tag: bigint): number => Number(tag >> 32n);

/** Lock-table word offsets (bytes into region 1) covering [offset, offset+length), sorted, distinct. */
export function lockOffsets(offset: number, length: number): number[] {
  const first = Math.floor(offset / LOCK_GRANULE_BYTES);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / LOCK_GRANULE_BYTES);
  const words = new Set<number>();
  for (let granule = first; granule <= last; granule++) {
    // Fibonacci hashing spreads neighbouring granules over the table.
    words.add(((Math.imul(granule >>> 0, 0x9e3779b1) ^ Math.floor(granule / 0x1_0000_0000)) >>> 0) % LOCK_WORDS * 8);
  }
  return [...words].sort((a, b) => a - b);
}

export interface ChunkGrant {
  readonly chunk: number;
  readonly kind: number;
  readonly classIndex: number;
  readonly objectBytes: number;
  readonly objectCount: number;
  readonly runChunks: number;
  readonly ownerId: number;
}

export interface LaneGrant {
  readonly lane: number;
  /** The lane's current generation: the client's next log there uses generation + 1. */
  readonly generation: number;
  /** The lane's decision word, as a decimal string (u64). */
  readonly decision: string;
}

export type Request =
  | { readonly op: 'hello'; readonly clientId: number; readonly lanes: number }
  | { readonly op: 'heartbeat' }
  | { readonly op: 'bye' }
  | { readonly op: 'allocChunk'; readonly classIndex?: number; readonly runChunks?: number }
  | { readonly op: 'releaseChunk'; readonly chunk: number }
  | { readonly op: 'decision'; readonly lane: number; readonly generation: number }
  | { readonly op: 'resolve'; readonly coordinator: number; readonly lane: number; readonly generation: number; readonly committed: boolean }
  | { readonly op: 'status' };

export interface HelloReply {
  readonly nodeId: number;
  readonly cluster: string;
  readonly format: { readonly poolBytes: number; readonly chunkBytes: number; readonly laneCount: number; readonly laneBytes: number };
  readonly lanes: readonly LaneGrant[];
  readonly leaseMs: number;
}

export interface NodeStatus {
  readonly nodeId: number;
  readonly cluster: string;
  readonly transport: string;
  readonly poolBytes: number;
  readonly heapBytes: number;
  readonly chunkBytes: number;
  readonly chunkCount: number;
  readonly chunksUsed: number;
  readonly objects: number;
  readonly sessions: number;
  readonly lanesFree: number;
  readonly inDoubt: number;
  readonly unconfirmed: number;
  readonly uptimeMs: number;
  readonly transportStats: Readonly<Record<string, number>>;
}

/** Largest RPC message either way. */
export const MAX_RPC_BYTES = 64 * 1024;

export function encodeMessage(message: object): Buffer {
  const bytes = Buffer.from(JSON.stringify(message), 'utf8');
  if (bytes.length > MAX_RPC_BYTES) throw new DpmsError('DPMS_RPC', `RPC message of ${bytes.length} B exceeds ${MAX_RPC_BYTES} B`);
  return bytes;
}

const isUint = (value: unknown, max = Number.MAX_SAFE_INTEGER): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max;

/** Decode and validate a request; DPMS_RPC names what is wrong. */
export function decodeRequest(bytes: Buffer): Request {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new DpmsError('DPMS_RPC', 'request is not JSON');
  }
  if (typeof value !== 'object' || value === null) throw new DpmsError('DPMS_RPC', 'request is not an object');
  const request = value as Record<string, unknown>;
  const bad = (field: string): never => {
    throw new DpmsError('DPMS_RPC', `${String(request.op)}: field ${field} is missing or invalid`);
  };
  switch (request.op) {
    case 'hello':
      if (!isUint(request.clientId, 0xffff_fffe) || request.clientId === 0) bad('clientId');
      if (!isUint(request.lanes, 64)) bad('lanes');
      break;
    case 'heartbeat': case 'bye': case 'status':
      break;
    case 'allocChunk':
      if ((request.classIndex === undefined) === (request.runChunks === undefined)) bad('classIndex|runChunks');
      if (request.classIndex !== undefined && !isUint(request.classIndex, 1024)) bad('classIndex');
      if (request.runChunks !== undefined && (!isUint(request.runChunks, 2 ** 32) || request.runChunks === 0)) bad('runChunks');
      break;
    case 'releaseChunk':
      if (!isUint(request.chunk, 2 ** 32)) bad('chunk');
      break;
    case 'decision':
      if (!isUint(request.lane, 1024)) bad('lane');
      if (!isUint(request.generation)) bad('generation');
      break;
    case 'resolve':
      if (!isUint(request.coordinator, 4095)) bad('coordinator');
      if (!isUint(request.lane, 1024)) bad('lane');
      if (!isUint(request.generation)) bad('generation');
      if (typeof request.committed !== 'boolean') bad('committed');
      break;
    default:
      throw new DpmsError('DPMS_RPC', `unknown request ${JSON.stringify(request.op)}`);
  }
  return request as unknown as Request;
}

/** Decode a reply: the payload on success, the remote DpmsError otherwise. */
export function decodeReply<T>(bytes: Buffer, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new DpmsError('DPMS_RPC', `${what}: reply is not JSON`);
  }
  const reply = value as { ok?: unknown; code?: unknown; message?: unknown };
  if (typeof reply !== 'object' || reply === null) throw new DpmsError('DPMS_RPC', `${what}: reply is not an object`);
  if (reply.ok === true) return value as T;
  const code = typeof reply.code === 'string' && reply.code.startsWith('DPMS_') ? reply.code : 'DPMS_RPC';
  throw new DpmsError(code as 'DPMS_RPC', `${what}: ${typeof reply.message === 'string' ? reply.message : 'failed'}`);
}
