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

/**
 * Who a client is, told to every node in its hello and listed by `status` (dpms status shows the
 * cluster's clients from it; dpms check tells a live mount from a dead one by its instance).
 */
export interface ClientInfo {
  /** What kind of client: mount, gateway, cli, check, bench, app. */
  readonly role: string;
  /** Random per client object, kept across reconnects (the client id is per session): 16 hex digits. */
  readonly instance: string;
  /** Free text, e.g. the mount point or the gateway's address. */
  readonly label?: string;
  readonly pid?: number;
  readonly host?: string;
  /** Where the client serves Prometheus metrics (http://host:port/metrics), if it does. */
  readonly metrics?: string;
}

export const CLIENT_INFO_LIMITS = { role: 16, label: 512, host: 255, metrics: 300 } as const;

/** A client as a node's status lists it. */
export interface ClientSummary extends ClientInfo {
  readonly clientId: number;
  readonly lanes: number;
  readonly connectedMs: number;
}

/** A node's status lists at most this many clients (the RPC reply is bounded); `clientsOmitted` counts the rest. */
export const MAX_LISTED_CLIENTS = 64;

export type Request =
  | { readonly op: 'hello'; readonly clientId: number; readonly lanes: number; readonly info?: ClientInfo }
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
  /** The node's clients (at most MAX_LISTED_CLIENTS; the oldest first). */
  readonly clients: readonly ClientSummary[];
  readonly clientsOmitted: number;
  /** Where the node serves Prometheus metrics (http://host:port/metrics), if it does. */
  readonly metrics?: string;
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
      if (request.info !== undefined) checkClientInfo(request.info, bad);
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

const isText = (value: unknown, max: number): value is string => typeof value === 'string' && value.length <= max;

function checkClientInfo(value: unknown, bad: (field: string) => never): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad('info');
  const info = value as Record<string, unknown>;
  for (const key of Object.keys(info)) {
    if (!['role', 'instance', 'label', 'pid', 'host', 'metrics'].includes(key)) bad(`info.${key}`);
  }
  if (!isText(info.role, CLIENT_INFO_LIMITS.role) || !/^[a-z][a-z0-9-]*$/.test(info.role)) bad('info.role');
  if (typeof info.instance !== 'string' || !/^[0-9a-f]{16}$/.test(info.instance)) bad('info.instance');
  if (info.label !== undefined && !isText(info.label, CLIENT_INFO_LIMITS.label)) bad('info.label');
  if (info.pid !== undefined && !isUint(info.pid, 2 ** 31)) bad('info.pid');
  if (info.host !== undefined && !isText(info.host, CLIENT_INFO_LIMITS.host)) bad('info.host');
  if (info.metrics !== undefined && !isText(info.metrics, CLIENT_INFO_LIMITS.metrics)) bad('info.metrics');
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
