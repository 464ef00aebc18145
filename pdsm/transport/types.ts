// The shapes of pDSM's transport layer (pdsm/transport/index.ts is its face): a Connection to one
// node's registered regions, what connect() and serve() take, and the server handle. The three
// providers (local, tcp, verbs) all implement exactly these; docs/TRANSPORT.md says how.

import type { PmMapping, ServerStats } from '../../native';

export type ProviderName = 'local' | 'tcp' | 'verbs';

/** A registered region as a client sees it: its size and the key that grants access to it. */
export interface RegionInfo {
  readonly sizeBytes: number;
  readonly rkey: number;
}

/**
 * The one-sided operations with an explicit rkey and no checks on this side, so that tests reach
 * the remote side's checks (bad key, out of bounds, misaligned atomic → DPMS_REMOTE_ACCESS, and the
 * connection breaks). Nothing but tests should use it.
 */
export interface UncheckedAccess {
  read(region: number, offset: number, length: number, rkey: number): Promise<Buffer>;
  /** The target range is still checked (DPMS_OUT_OF_BOUNDS): it is this process's memory. */
  readInto(region: number, offset: number, target: Uint8Array, targetOffset: number, length: number, rkey: number): Promise<void>;
  write(region: number, offset: number, data: Uint8Array, rkey: number): Promise<void>;
  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number, rkey: number): Promise<void>;
  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint, rkey: number): Promise<bigint>;
  fetchAndAdd(region: number, offset: number, delta: bigint, rkey: number): Promise<bigint>;
  persist(region: number, offset: number, length: number, rkey: number): Promise<void>;
}

/**
 * One authenticated connection to a node. Operations on one connection take effect at the node in
 * the order they were posted. Arguments are checked here before anything is sent: a region that does
 * not exist or a range past its end is DPMS_OUT_OF_BOUNDS, an atomic off an 8-byte boundary
 * DPMS_MISALIGNED, a wrong type DPMS_INVALID_ARGUMENT; such a rejection leaves the connection
 * usable. 64-bit values are BigInts in (-2^64, 2^64), taken modulo 2^64; results are in [0, 2^64).
 */
export interface Connection {
  readonly provider: ProviderName;
  readonly nodeId: number;
  readonly regions: readonly RegionInfo[];
  /** False once the connection was closed, dropped, or broken by a remote error. */
  readonly isOpen: boolean;
  read(region: number, offset: number, length: number): Promise<Buffer>;
  /**
   * A read into the caller's memory, as an RDMA READ lands in a registered buffer: the region's
   * [offset, offset+length) arrives in target[targetOffset, targetOffset+length) and nothing else of
   * target changes; no Buffer is allocated per operation (bulk readers reuse their targets instead of
   * leaving a fresh result to the garbage collector each time). length defaults to the rest of the
   * target. A target range outside the target is DPMS_OUT_OF_BOUNDS, like a region range. Leave the
   * range alone until the promise settles: the bytes may land at any time before that.
   */
  readInto(region: number, offset: number, target: Uint8Array, targetOffset?: number, length?: number): Promise<void>;
  write(region: number, offset: number, data: Uint8Array): Promise<void>;
  /** A write whose arrival the node hears of (onImmediate, after the data is in the region). */
  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number): Promise<void>;
  /** Returns the value found: equal to `expected` exactly when the swap happened. */
  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint): Promise<bigint>;
  /** Returns the value before the add; the add wraps modulo 2^64. */
  fetchAndAdd(region: number, offset: number, delta: bigint): Promise<bigint>;
  /** Remote persistence of earlier writes to the range (provider-specific method, see docs). */
  persist(region: number, offset: number, length: number): Promise<void>;
  /** write + persist, the common case (may be one round trip less where the provider allows). */
  writePersist(region: number, offset: number, data: Uint8Array): Promise<void>;
  /** Two-sided RPC: the node's onMessage answers. At most maxMessageBytes either way. */
  call(message: Uint8Array): Promise<Buffer>;
  /** Called once if the connection ends for any reason other than close(). */
  onClose(listener: (reason: string) => void): void;
  /** Close now; pending operations reject with DPMS_DISCONNECTED. Idempotent. */
  close(): void;
  /** Tests only: the same operations with an explicit rkey and no local checks, so the remote side's checks are exercised. */
  readonly unchecked: UncheckedAccess;
}

export interface ConnectTarget {
  readonly provider: ProviderName;
  readonly host: string;
  readonly port: number;
  /** The cluster secret (16 to 1024 bytes). */
  readonly secret: Uint8Array;
  /** Connect + handshake deadline (default 5000). */
  readonly timeoutMs?: number;
  /** Largest two-sided message either way (default 64 KiB); must match the node's. */
  readonly maxMessageBytes?: number;
  /** local only: the files behind the server's regions, in region order, mapped directly. */
  readonly localRegionPaths?: readonly string[];
}

export interface ServeTarget {
  /** A node serving 'local' clients serves tcp for their messages. */
  readonly provider: 'tcp' | 'verbs';
  readonly host: string;
  /** 0 picks a free port (see Server.port). */
  readonly port: number;
  readonly secret: Uint8Array;
  readonly nodeId: number;
  /** Registered in order (clients address them by index); pinned while served. */
  readonly regions: readonly PmMapping[];
  /**
   * A two-sided message: call `reply` exactly once, now or later. A reply the provider refuses (larger
   * than the client accepts, where the provider knows that) throws DPMS_INVALID_ARGUMENT and leaves the
   * message unanswered; a handler that throws drops the client (its call fails DPMS_DISCONNECTED).
   */
  onMessage(connection: number, message: Buffer, reply: (answer: Uint8Array) => void): void;
  onOpen?(connection: number, peer: string): void;
  /** Exactly once for every connection that was opened. */
  onClose?(connection: number, reason: string): void;
  /** A WRITE-with-immediate landed; its data is already in the region. */
  onImmediate?(connection: number, immediate: number, length: number): void;
  /** Largest two-sided message either way (default 64 KiB, at most 16 MiB). */
  readonly maxMessageBytes?: number;
  /** A client that has not authenticated within this time is dropped (default 5000). */
  readonly handshakeTimeoutMs?: number;
}

export interface Server {
  readonly port: number;
  /** rkey is 0 where each connection gets keys of its own (verbs registers the regions per connection). */
  readonly regions: readonly RegionInfo[];
  stats(): ServerStats;
  /** Drop one client at once (fencing: it can do nothing more here). */
  disconnect(connection: number): void;
  /** Stop serving: every connection closes, the regions are unpinned. Idempotent. */
  close(): void;
}

export type { ServerStats };

/** The default and the ceiling of maxMessageBytes (the native providers' limits). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024;
export const MAX_MESSAGE_BYTES_LIMIT = 16 * 1024 * 1024;
