// Argument checks every provider runs before an operation leaves the process. Each returns a
// DpmsError (or undefined when all is well) instead of throwing, so the operation can reject its
// promise without a try/catch; the common, valid case costs a few comparisons and no allocation.
// The slow diagnosis of what exactly is wrong only runs on failure.

import { DpmsError } from '../errors';
import { DEFAULT_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES_LIMIT, type RegionInfo } from './types';

const WORD_LIMIT = 1n << 64n;
const NEGATIVE_WORD_LIMIT = -WORD_LIMIT;

/**
 * The most one read or write moves (the tcp wire's frame limit; also far below what any RDMA device
 * allows). Larger transfers are split by the caller, so that one operation never holds a connection
 * for long; persist has no such limit.
 */
export const MAX_TRANSFER_BYTES = 16 * 1024 * 1024;

/** rangeError, and at most MAX_TRANSFER_BYTES: for reads and writes. */
export function transferError(regions: readonly RegionInfo[], region: number, offset: number, length: number): DpmsError | undefined {
  if (length > MAX_TRANSFER_BYTES) {
    return new DpmsError('DPMS_INVALID_ARGUMENT', `one read or write moves at most ${MAX_TRANSFER_BYTES} B, not ${length}: split it`);
  }
  return rangeError(regions, region, offset, length);
}

/** undefined when [offset, offset+length) lies inside regions[region]. */
export function rangeError(regions: readonly RegionInfo[], region: number, offset: number, length: number): DpmsError | undefined {
  const info = regions[region];
  if (info !== undefined && Number.isInteger(region) && Number.isSafeInteger(offset) && Number.isSafeInteger(length) &&
      offset >= 0 && length >= 0 && offset + length <= info.sizeBytes) {
    return undefined;
  }
  return diagnoseRange(regions, region, offset, length);
}

// As in the addon's own checks (native/src/args.h): a value that is not a number is
// DPMS_INVALID_ARGUMENT; a number that names no valid place (negative, fractional, NaN, too far)
// is DPMS_OUT_OF_BOUNDS.
function diagnoseRange(regions: readonly RegionInfo[], region: number, offset: number, length: number): DpmsError {
  for (const [name, value] of [['region', region], ['offset', offset], ['length', length]] as const) {
    if (typeof value !== 'number') return new DpmsError('DPMS_INVALID_ARGUMENT', `${name} must be a number, got ${typeof value}`);
  }
  if (!Number.isInteger(region) || region < 0 || region >= regions.length) {
    return new DpmsError('DPMS_OUT_OF_BOUNDS', `region ${region} does not exist (the node serves ${regions.length})`);
  }
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    return new DpmsError('DPMS_OUT_OF_BOUNDS', `offset ${offset} and length ${length} must be non-negative integers`);
  }
  return new DpmsError('DPMS_OUT_OF_BOUNDS',
    `[${offset}, ${offset + length}) is outside region ${region} (${regions[region].sizeBytes} B)`);
}

/** rangeError for an 8-byte atomic, plus its alignment. */
export function wordError(regions: readonly RegionInfo[], region: number, offset: number): DpmsError | undefined {
  const problem = rangeError(regions, region, offset, 8);
  if (problem !== undefined) return problem;
  if (offset % 8 !== 0) return new DpmsError('DPMS_MISALIGNED', `an atomic needs an 8-byte aligned offset, got ${offset}`);
  return undefined;
}

/** readInto's default length: the rest of the target (never throws, whatever the arguments are). */
export function restOf(target: Uint8Array, targetOffset: number): number {
  return target instanceof Uint8Array && typeof targetOffset === 'number' ? target.length - targetOffset : 0;
}

/** undefined when target is a Uint8Array holding [targetOffset, targetOffset+length). */
export function targetError(target: Uint8Array, targetOffset: number, length: number): DpmsError | undefined {
  if (target instanceof Uint8Array && Number.isSafeInteger(targetOffset) && Number.isSafeInteger(length) &&
      targetOffset >= 0 && length >= 0 && targetOffset + length <= target.length) {
    return undefined;
  }
  if (!(target instanceof Uint8Array)) {
    return new DpmsError('DPMS_INVALID_ARGUMENT', `a read target must be a Uint8Array (or Buffer), got ${typeof target}`);
  }
  for (const [name, value] of [['targetOffset', targetOffset], ['length', length]] as const) {
    if (typeof value !== 'number') return new DpmsError('DPMS_INVALID_ARGUMENT', `${name} must be a number, got ${typeof value}`);
  }
  return new DpmsError('DPMS_OUT_OF_BOUNDS', `[${targetOffset}, ${targetOffset + length}) is outside the ${target.length}-B read target`);
}

export function dataError(data: Uint8Array): DpmsError | undefined {
  if (data instanceof Uint8Array) return undefined;
  return new DpmsError('DPMS_INVALID_ARGUMENT', `data must be a Uint8Array (or Buffer), got ${typeof data}`);
}

/** undefined when value is a BigInt in (-2^64, 2^64). */
export function bigintError(value: bigint, name: string): DpmsError | undefined {
  if (typeof value === 'bigint' && value < WORD_LIMIT && value > NEGATIVE_WORD_LIMIT) return undefined;
  return new DpmsError('DPMS_INVALID_ARGUMENT', `${name} must be a BigInt in (-2^64, 2^64), got ${String(value)}`);
}

export function immediateError(immediate: number): DpmsError | undefined {
  if (Number.isInteger(immediate) && immediate >= 0 && immediate <= 0xffffffff) return undefined;
  return new DpmsError('DPMS_INVALID_ARGUMENT', `an immediate is an unsigned 32-bit integer, got ${String(immediate)}`);
}

export function messageError(message: Uint8Array, maxMessageBytes: number): DpmsError | undefined {
  if (!(message instanceof Uint8Array)) {
    return new DpmsError('DPMS_INVALID_ARGUMENT', `a message must be a Uint8Array (or Buffer), got ${typeof message}`);
  }
  if (message.length > maxMessageBytes) {
    return new DpmsError('DPMS_INVALID_ARGUMENT', `a ${message.length}-B message is larger than the ${maxMessageBytes}-B limit`);
  }
  return undefined;
}

export function disconnected(what: string): DpmsError {
  return new DpmsError('DPMS_DISCONNECTED', `${what}: the connection is closed`);
}

/** A maxMessageBytes option: the default when absent, else an integer in [1, 16 MiB]. Throws DPMS_INVALID_ARGUMENT. */
export function checkMaxMessageBytes(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_MESSAGE_BYTES_LIMIT) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `maxMessageBytes must be an integer from 1 to ${MAX_MESSAGE_BYTES_LIMIT}, got ${String(value)}`);
  }
  return value;
}
