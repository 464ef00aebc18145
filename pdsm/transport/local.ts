// The 'local' provider: a same-host shortcut for one-machine clusters and tests. The client maps
// the node's region files itself (openPool, MAP_SHARED), so one-sided operations are plain loads,
// stores and CPU atomics on the very pages the node serves: cas64/faa64 are real cross-process
// atomics, and persist is the client's own flush + fence (on tmpfs/DAX the cache lines are the
// machine's, so a flush from any process makes them durable; with msync the file's pages are
// written back whichever mapping asks). Everything that must reach the node's JavaScript goes
// through a tcp connection to the node, which also authenticates the client and announces the
// regions (sizes and rkeys): two-sided calls, and writeWithImmediate (its data is written by the
// node's serving thread, which then raises onImmediate, so the data is visible first).
//
// Semantics match the network providers: operations take effect in the order posted (while a
// tcp-routed operation is in flight, later ones wait behind it), a remote access error on the
// unchecked path rejects with DPMS_REMOTE_ACCESS and breaks the connection, and when the message
// connection drops (server.disconnect, server.close, network) every later operation rejects with
// DPMS_DISCONNECTED. Unlike RDMA, the node cannot fence a local client at the memory: an operation
// issued before the client hears of the drop still lands. docs/TRANSPORT.md says more.

import { openPool, type PmMapping } from '../../native';
import { callNative, DpmsError, fromNative } from '../errors';
import {
  bigintError, dataError, disconnected, immediateError, messageError, rangeError, restOf, targetError, transferError, wordError,
} from './checks';
import { connectNetwork, type NetworkConnection } from './network';
import type { Connection, ConnectTarget, RegionInfo, UncheckedAccess } from './types';

/** Connect to a node on this host: authenticate over tcp, then map its region files. */
export async function connectLocal(target: ConnectTarget): Promise<LocalConnection> {
  const paths = target.localRegionPaths;
  if (!Array.isArray(paths) || paths.length === 0 || paths.some((item) => typeof item !== 'string')) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', 'the local provider needs localRegionPaths: the node\'s region files, in region order');
  }
  const messages = await connectNetwork('tcp', target);
  const mappings: PmMapping[] = [];
  try {
    if (paths.length !== messages.regions.length) {
      throw new DpmsError('DPMS_PROTOCOL', `${paths.length} local region files given, but the node serves ${messages.regions.length} regions`);
    }
    for (const file of paths) mappings.push(callNative(() => openPool(file), `cannot map local region ${file}`));
    mappings.forEach((mapping, index) => {
      if (mapping.sizeBytes !== messages.regions[index].sizeBytes) {
        throw new DpmsError('DPMS_PROTOCOL', `local region file ${paths[index]} is ${mapping.sizeBytes} B, ` +
          `but the node's region ${index} is ${messages.regions[index].sizeBytes} B: not the file the node serves`);
      }
    });
  } catch (error) {
    for (const mapping of mappings) mapping.close();
    messages.close();
    throw error;
  }
  return new LocalConnection(messages, mappings);
}

const resolvedVoid = Promise.resolve();

export class LocalConnection implements Connection {
  readonly provider = 'local' as const;
  readonly nodeId: number;
  readonly regions: readonly RegionInfo[];
  readonly unchecked: UncheckedAccess;
  private open = true;
  private readonly buffers: Buffer[];
  private readonly listeners: Array<(reason: string) => void> = [];
  // Set while an operation routed over tcp (or queued behind one) is in flight: later operations
  // chain on it, so that they take effect in the order they were posted.
  private tail: Promise<unknown> | undefined;
  private queued = 0;
  private readonly dequeued = (): void => {
    if (--this.queued === 0) this.tail = undefined;
  };

  constructor(private readonly messages: NetworkConnection, private readonly mappings: readonly PmMapping[]) {
    this.nodeId = messages.nodeId;
    this.regions = messages.regions;
    this.buffers = mappings.map((mapping) => mapping.buffer);
    this.unchecked = new UncheckedLocalAccess(this);
    messages.onClose((reason) => this.fail(reason));
  }

  get isOpen(): boolean {
    return this.open;
  }

  read(region: number, offset: number, length: number): Promise<Buffer> {
    const problem = transferError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.readNow(region, offset, length));
    return this.readNow(region, offset, length);
  }

  readInto(region: number, offset: number, target: Uint8Array, targetOffset = 0, length = restOf(target, targetOffset)): Promise<void> {
    const problem = targetError(target, targetOffset, length) ?? transferError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.readIntoNow(region, offset, target, targetOffset, length));
    return this.readIntoNow(region, offset, target, targetOffset, length);
  }

  write(region: number, offset: number, data: Uint8Array): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.writeNow(region, offset, data, false));
    return this.writeNow(region, offset, data, false);
  }

  writePersist(region: number, offset: number, data: Uint8Array): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.writeNow(region, offset, data, true));
    return this.writeNow(region, offset, data, true);
  }

  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length) ?? immediateError(immediate);
    if (problem !== undefined) return Promise.reject(problem);
    const send = (): Promise<void> => (this.open
      ? this.messages.writeWithImmediate(region, offset, data, immediate)
      : Promise.reject(disconnected('writeWithImmediate')));
    if (this.tail !== undefined) return this.enqueue(send);
    // Later operations must not overtake this one, which the node's serving thread carries out.
    const sent = send();
    this.queued++;
    this.tail = sent.then(this.dequeued, this.dequeued);
    return sent;
  }

  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint): Promise<bigint> {
    const problem = wordError(this.regions, region, offset) ?? bigintError(expected, 'expected') ?? bigintError(desired, 'desired');
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.atomicNow(region, offset, expected, desired, true));
    return this.atomicNow(region, offset, expected, desired, true);
  }

  fetchAndAdd(region: number, offset: number, delta: bigint): Promise<bigint> {
    const problem = wordError(this.regions, region, offset) ?? bigintError(delta, 'delta');
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.atomicNow(region, offset, delta, 0n, false));
    return this.atomicNow(region, offset, delta, 0n, false);
  }

  persist(region: number, offset: number, length: number): Promise<void> {
    const problem = rangeError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.persistNow(region, offset, length));
    return this.persistNow(region, offset, length);
  }

  // A message does not hold later operations back (on every provider the node may see later
  // one-sided operations before its JavaScript handles the message), but it must not overtake
  // earlier ones that are still queued.
  call(message: Uint8Array): Promise<Buffer> {
    const problem = messageError(message, this.messages.maxMessageBytes);
    if (problem !== undefined) return Promise.reject(problem);
    if (this.tail !== undefined) return this.enqueue(() => this.messages.call(message));
    return this.messages.call(message);
  }

  onClose(listener: (reason: string) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.release();
  }

  /** Break the connection (a remote access error, or the message connection dropped). */
  fail(reason: string): void {
    if (!this.open) return;
    this.open = false;
    this.release();
    for (const listener of this.listeners.splice(0)) listener(reason);
  }

  private release(): void {
    this.messages.close();
    for (const mapping of this.mappings) mapping.close();
  }

  private enqueue<T>(run: () => Promise<T>): Promise<T> {
    const result = this.tail!.then(run, run);
    this.queued++;
    this.tail = result.then(this.dequeued, this.dequeued);
    return result;
  }

  private readNow(region: number, offset: number, length: number): Promise<Buffer> {
    if (!this.open) return Promise.reject(disconnected('read'));
    const out = Buffer.allocUnsafe(length);
    this.buffers[region].copy(out, 0, offset, offset + length);
    return Promise.resolve(out);
  }

  private readIntoNow(region: number, offset: number, target: Uint8Array, targetOffset: number, length: number): Promise<void> {
    if (!this.open) return Promise.reject(disconnected('readInto'));
    // Queued behind a tcp-routed operation, the target may have been detached or shrunk meanwhile.
    const problem = targetError(target, targetOffset, length);
    if (problem !== undefined) return Promise.reject(problem);
    this.buffers[region].copy(target, targetOffset, offset, offset + length);
    return resolvedVoid;
  }

  private writeNow(region: number, offset: number, data: Uint8Array, persist: boolean): Promise<void> {
    if (!this.open) return Promise.reject(disconnected(persist ? 'writePersist' : 'write'));
    if (!persist) {
      this.buffers[region].set(data, offset);
      return resolvedVoid;
    }
    if (data.length === 0) return resolvedVoid;
    try {
      this.mappings[region].memcpyPersist(offset, data);
      return resolvedVoid;
    } catch (error) {
      return Promise.reject(error).catch(localFailed);
    }
  }

  private atomicNow(region: number, offset: number, first: bigint, desired: bigint, cas: boolean): Promise<bigint> {
    if (!this.open) return Promise.reject(disconnected(cas ? 'compareAndSwap' : 'fetchAndAdd'));
    try {
      const mapping = this.mappings[region];
      return Promise.resolve(cas
        ? mapping.cas64(offset, BigInt.asUintN(64, first), BigInt.asUintN(64, desired))
        : mapping.faa64(offset, BigInt.asUintN(64, first)));
    } catch (error) {
      return Promise.reject(error).catch(localFailed);
    }
  }

  private persistNow(region: number, offset: number, length: number): Promise<void> {
    if (!this.open) return Promise.reject(disconnected('persist'));
    if (length === 0) return resolvedVoid;
    try {
      this.mappings[region].persist(offset, length);
      return resolvedVoid;
    } catch (error) {
      return Promise.reject(error).catch(localFailed);
    }
  }
}

function localFailed(error: unknown): never {
  throw fromNative(error, 'local transport');
}

/**
 * The local stand-in for the node's own checks: a wrong rkey, a range outside the region or a
 * misaligned atomic is DPMS_REMOTE_ACCESS and breaks the connection, as the node (or NIC) would.
 */
class UncheckedLocalAccess implements UncheckedAccess {
  constructor(private readonly connection: LocalConnection) {}

  read(region: number, offset: number, length: number, rkey: number): Promise<Buffer> {
    return this.refused(region, offset, length, rkey, false) ?? this.connection.read(region, offset, length);
  }

  readInto(region: number, offset: number, target: Uint8Array, targetOffset: number, length: number, rkey: number): Promise<void> {
    const problem = targetError(target, targetOffset, length);
    if (problem !== undefined) return Promise.reject(problem);
    return this.refused(region, offset, length, rkey, false) ?? this.connection.readInto(region, offset, target, targetOffset, length);
  }

  write(region: number, offset: number, data: Uint8Array, rkey: number): Promise<void> {
    return this.refused(region, offset, lengthOf(data), rkey, false) ?? this.connection.write(region, offset, data);
  }

  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number, rkey: number): Promise<void> {
    return this.refused(region, offset, lengthOf(data), rkey, false) ??
      this.connection.writeWithImmediate(region, offset, data, immediate);
  }

  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint, rkey: number): Promise<bigint> {
    return this.refused(region, offset, 8, rkey, true) ?? this.connection.compareAndSwap(region, offset, expected, desired);
  }

  fetchAndAdd(region: number, offset: number, delta: bigint, rkey: number): Promise<bigint> {
    return this.refused(region, offset, 8, rkey, true) ?? this.connection.fetchAndAdd(region, offset, delta);
  }

  persist(region: number, offset: number, length: number, rkey: number): Promise<void> {
    return this.refused(region, offset, length, rkey, false) ?? this.connection.persist(region, offset, length);
  }

  /** A rejection when the node would refuse the access (the connection then breaks); else undefined. */
  private refused(region: number, offset: number, length: number, rkey: number, atomic: boolean): Promise<never> | undefined {
    if (!this.connection.isOpen) return Promise.reject(disconnected('unchecked access'));
    // Arguments of the wrong type are refused by the checked path with DPMS_INVALID_ARGUMENT, as the
    // addon refuses them locally; only well-formed requests reach "the node".
    if (typeof region !== 'number' || typeof offset !== 'number' || typeof length !== 'number' || typeof rkey !== 'number') {
      return undefined;
    }
    const info = this.connection.regions[region];
    let reason: string | undefined;
    if (info === undefined) reason = `region ${region} does not exist`;
    else if (rkey !== info.rkey) reason = `wrong rkey for region ${region}`;
    else if (offset < 0 || length < 0 || offset + length > info.sizeBytes) reason = `[${offset}, ${offset + length}) is outside region ${region}`;
    else if (atomic && offset % 8 !== 0) reason = `misaligned atomic at ${offset}`;
    if (reason === undefined) return undefined;
    this.connection.fail(`remote access error: ${reason}`);
    return Promise.reject(new DpmsError('DPMS_REMOTE_ACCESS', `the node refused the access: ${reason}`));
  }
}

function lengthOf(data: Uint8Array): number {
  return data instanceof Uint8Array ? data.length : 0;
}
