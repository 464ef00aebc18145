// The Connection of the network providers (tcp, verbs): a thin checked layer over the addon's
// TransportConnection. It checks arguments against the regions the node announced (nothing bad is
// ever sent), passes the region's rkey, and turns native errors into DpmsErrors. This is the hot
// path: no closures or allocations per operation beyond the promise the addon returns and one
// .catch that converts its rejection with a handler shared by every operation of that kind.

import { connect as nativeConnect, type NetworkProvider, type TransportConnection } from '../../native';
import { DpmsError, fromNative } from '../errors';
import {
  bigintError, checkMaxMessageBytes, dataError, immediateError, messageError, rangeError, restOf, targetError, transferError,
  wordError,
} from './checks';
import type { Connection, ConnectTarget, RegionInfo, UncheckedAccess } from './types';

function converter(context: string): (error: unknown) => never {
  return (error: unknown) => {
    throw fromNative(error, context);
  };
}

// One handler per operation kind, made once.
const readFailed = converter('transport read');
const readIntoFailed = converter('transport readInto');
const writeFailed = converter('transport write');
const immediateFailed = converter('transport writeWithImmediate');
const casFailed = converter('transport compareAndSwap');
const faaFailed = converter('transport fetchAndAdd');
const persistFailed = converter('transport persist');
const writePersistFailed = converter('transport writePersist');
const callFailed = converter('transport call');
const nothing = (): void => undefined;

/** The rejection for something the addon threw synchronously (argument errors, a closed connection). */
function rejected<T>(error: unknown, failed: (error: unknown) => never): Promise<T> {
  return Promise.reject(error).catch(failed);
}

/** Connect and authenticate over tcp or verbs. */
export async function connectNetwork(provider: NetworkProvider, target: ConnectTarget): Promise<NetworkConnection> {
  const maxMessageBytes = checkMaxMessageBytes(target.maxMessageBytes);
  let inner: TransportConnection;
  try {
    inner = await nativeConnect(provider, {
      host: target.host, port: target.port, secret: target.secret, timeoutMs: target.timeoutMs, maxMessageBytes,
    });
  } catch (error) {
    throw fromNative(error, `cannot connect to ${provider}://${target.host}:${target.port}`);
  }
  return new NetworkConnection(provider, inner, maxMessageBytes);
}

export class NetworkConnection implements Connection {
  readonly nodeId: number;
  readonly regions: readonly RegionInfo[];
  readonly unchecked: UncheckedAccess;
  private open = true;
  private readonly listeners: Array<(reason: string) => void> = [];

  constructor(readonly provider: NetworkProvider, private readonly inner: TransportConnection, readonly maxMessageBytes: number) {
    this.nodeId = inner.nodeId;
    this.regions = Object.freeze(inner.regions.map((region) => Object.freeze({ sizeBytes: region.sizeBytes, rkey: region.rkey })));
    this.unchecked = new UncheckedNetworkAccess(inner);
    inner.onClose((reason) => this.ended(reason));
  }

  get isOpen(): boolean {
    return this.open;
  }

  read(region: number, offset: number, length: number): Promise<Buffer> {
    const problem = transferError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.read(region, offset, length, this.regions[region].rkey).catch(readFailed);
    } catch (error) {
      return rejected(error, readFailed);
    }
  }

  // The addon receives the payload straight into target (tcp); a provider without a native readInto
  // (verbs, until it registers targets) reads and copies.
  readInto(region: number, offset: number, target: Uint8Array, targetOffset = 0, length = restOf(target, targetOffset)): Promise<void> {
    const problem = targetError(target, targetOffset, length) ?? transferError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    return startReadInto(this.inner, region, offset, target, targetOffset, length, this.regions[region].rkey);
  }

  write(region: number, offset: number, data: Uint8Array): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length);
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.write(region, offset, data, this.regions[region].rkey).catch(writeFailed);
    } catch (error) {
      return rejected(error, writeFailed);
    }
  }

  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length) ?? immediateError(immediate);
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.writeWithImmediate(region, offset, data, immediate, this.regions[region].rkey).catch(immediateFailed);
    } catch (error) {
      return rejected(error, immediateFailed);
    }
  }

  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint): Promise<bigint> {
    const problem = wordError(this.regions, region, offset) ?? bigintError(expected, 'expected') ?? bigintError(desired, 'desired');
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.compareAndSwap(region, offset, BigInt.asUintN(64, expected), BigInt.asUintN(64, desired),
        this.regions[region].rkey).catch(casFailed);
    } catch (error) {
      return rejected(error, casFailed);
    }
  }

  fetchAndAdd(region: number, offset: number, delta: bigint): Promise<bigint> {
    const problem = wordError(this.regions, region, offset) ?? bigintError(delta, 'delta');
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.fetchAndAdd(region, offset, BigInt.asUintN(64, delta), this.regions[region].rkey).catch(faaFailed);
    } catch (error) {
      return rejected(error, faaFailed);
    }
  }

  persist(region: number, offset: number, length: number): Promise<void> {
    const problem = rangeError(this.regions, region, offset, length);
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.persist(region, offset, length, this.regions[region].rkey).catch(persistFailed);
    } catch (error) {
      return rejected(error, persistFailed);
    }
  }

  // The write and the persist are posted together, without waiting for the write's completion:
  // the node executes one connection's operations in order, and persist covers every earlier write
  // on the connection, so one round trip suffices. Promise.all reports the write's own error
  // (it settles first) rather than the DPMS_DISCONNECTED the persist would see after it.
  writePersist(region: number, offset: number, data: Uint8Array): Promise<void> {
    const problem = dataError(data) ?? transferError(this.regions, region, offset, data.length);
    if (problem !== undefined) return Promise.reject(problem);
    const rkey = this.regions[region].rkey;
    try {
      const written = this.inner.write(region, offset, data, rkey);
      let persisted: Promise<void>;
      try {
        persisted = this.inner.persist(region, offset, data.length, rkey);
      } catch (error) {
        written.catch(nothing);
        throw error;
      }
      return Promise.all([written, persisted]).then(nothing, writePersistFailed);
    } catch (error) {
      return rejected(error, writePersistFailed);
    }
  }

  call(message: Uint8Array): Promise<Buffer> {
    const problem = messageError(message, this.maxMessageBytes);
    if (problem !== undefined) return Promise.reject(problem);
    try {
      return this.inner.call(message).catch(callFailed);
    } catch (error) {
      return rejected(error, callFailed);
    }
  }

  onClose(listener: (reason: string) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    this.open = false;
    this.inner.close();
  }

  private ended(reason: string): void {
    if (!this.open) return;
    this.open = false;
    for (const listener of this.listeners.splice(0)) listener(reason);
  }
}

/** The unchecked path: straight to the addon with the caller's rkey (tests of the remote side's checks). */
class UncheckedNetworkAccess implements UncheckedAccess {
  constructor(private readonly inner: TransportConnection) {}

  read(region: number, offset: number, length: number, rkey: number): Promise<Buffer> {
    return settle(() => this.inner.read(region, offset, length, rkey), readFailed);
  }

  readInto(region: number, offset: number, target: Uint8Array, targetOffset: number, length: number, rkey: number): Promise<void> {
    const problem = targetError(target, targetOffset, length);
    if (problem !== undefined) return Promise.reject(problem);
    return startReadInto(this.inner, region, offset, target, targetOffset, length, rkey);
  }

  write(region: number, offset: number, data: Uint8Array, rkey: number): Promise<void> {
    return settle(() => this.inner.write(region, offset, data, rkey), writeFailed);
  }

  writeWithImmediate(region: number, offset: number, data: Uint8Array, immediate: number, rkey: number): Promise<void> {
    return settle(() => this.inner.writeWithImmediate(region, offset, data, immediate, rkey), immediateFailed);
  }

  compareAndSwap(region: number, offset: number, expected: bigint, desired: bigint, rkey: number): Promise<bigint> {
    return settle(() => this.inner.compareAndSwap(region, offset, expected, desired, rkey), casFailed);
  }

  fetchAndAdd(region: number, offset: number, delta: bigint, rkey: number): Promise<bigint> {
    return settle(() => this.inner.fetchAndAdd(region, offset, delta, rkey), faaFailed);
  }

  persist(region: number, offset: number, length: number, rkey: number): Promise<void> {
    return settle(() => this.inner.persist(region, offset, length, rkey), persistFailed);
  }
}

/** readInto with checked arguments: the addon's own when it has one, else read + copy. */
function startReadInto(inner: TransportConnection, region: number, offset: number, target: Uint8Array, targetOffset: number,
  length: number, rkey: number): Promise<void> {
  try {
    if (inner.readInto !== undefined) return inner.readInto(region, offset, target, targetOffset, length, rkey).catch(readIntoFailed);
    return inner.read(region, offset, length, rkey).then((data) => {
      // The target may have been detached or shrunk meanwhile (as the native readInto checks).
      if (targetOffset + length > target.length) {
        throw new DpmsError('DPMS_OUT_OF_BOUNDS', 'transport readInto: the target no longer holds the range; the data was dropped');
      }
      target.set(data, targetOffset);
    }, readIntoFailed);
  } catch (error) {
    return rejected(error, readIntoFailed);
  }
}

function settle<T>(start: () => Promise<T>, failed: (error: unknown) => never): Promise<T> {
  try {
    return start().catch(failed);
  } catch (error) {
    return rejected(error, failed);
  }
}
