// Global addresses: the one encoding of (node id, offset in that node's pool) that every layer above
// pDSM stores and passes around. An address is a JS number (exact below 2^53) so that it costs
// nothing on the hot path, and it is stored on media as a little-endian u64.
//
//   bits 40..51  node id (0..4095)
//   bits  0..39  byte offset in the node's pool (pools up to 1 TiB)
//
// The null address is 0: offset 0 of every pool is its superblock, never an object.

import { DpmsError } from './errors';

export type GlobalAddress = number & { readonly __brand: 'GlobalAddress' };

export const NODE_ID_BITS = 12;
export const OFFSET_BITS = 40;
export const MAX_NODE_ID = (1 << NODE_ID_BITS) - 1;
export const MAX_OFFSET = 2 ** OFFSET_BITS - 1;
const OFFSET_SPAN = 2 ** OFFSET_BITS;

export const NULL_ADDRESS = 0 as GlobalAddress;

export function makeAddress(nodeId: number, offset: number): GlobalAddress {
  if (!Number.isInteger(nodeId) || nodeId < 0 || nodeId > MAX_NODE_ID) {
    throw new DpmsError('DPMS_INVALID_ADDRESS', `node id ${nodeId} is outside 0..${MAX_NODE_ID}`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset > MAX_OFFSET) {
    throw new DpmsError('DPMS_INVALID_ADDRESS', `offset ${offset} is outside 0..${MAX_OFFSET}`);
  }
  return (nodeId * OFFSET_SPAN + offset) as GlobalAddress;
}

/** Check that a number read from outside (media, wire, user) is a well-formed address. */
export function toAddress(value: number | bigint): GlobalAddress {
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (typeof value === 'bigint' && BigInt(n) !== value) {
    throw new DpmsError('DPMS_INVALID_ADDRESS', `address ${value} does not fit the 52-bit encoding`);
  }
  if (!Number.isSafeInteger(n) || n < 0 || n >= (MAX_NODE_ID + 1) * OFFSET_SPAN) {
    throw new DpmsError('DPMS_INVALID_ADDRESS', `address ${String(value)} is not a valid global address`);
  }
  return n as GlobalAddress;
}

export function nodeOf(address: GlobalAddress): number {
  return Math.floor(address / OFFSET_SPAN);
}

export function offsetOf(address: GlobalAddress): number {
  return address % OFFSET_SPAN;
}

export function isNull(address: GlobalAddress): boolean {
  return address === NULL_ADDRESS;
}

/** Human form `node:0xoffset`, used by the CLI and in error messages. */
export function formatAddress(address: GlobalAddress): string {
  return isNull(address) ? 'null' : `${nodeOf(address)}:0x${offsetOf(address).toString(16)}`;
}

/** Parse `node:offset` (decimal or 0x hex offset), a plain integer, or `null` (what formatAddress prints for it). */
export function parseAddress(text: string): GlobalAddress {
  if (text.trim() === 'null') return NULL_ADDRESS;
  const match = /^(\d+):(0x[0-9a-fA-F]+|\d+)$/.exec(text.trim());
  if (match) return makeAddress(Number(match[1]), Number(match[2]));
  if (/^\d+$/.test(text.trim())) return toAddress(Number(text.trim()));
  throw new DpmsError('DPMS_INVALID_ADDRESS', `cannot parse address '${text}' (expected node:offset)`);
}

export function writeAddress(buffer: Buffer, offset: number, address: GlobalAddress): void {
  buffer.writeUInt32LE(address % 0x1_0000_0000, offset);
  buffer.writeUInt32LE(Math.floor(address / 0x1_0000_0000), offset + 4);
}

export function readAddress(buffer: Buffer, offset: number): GlobalAddress {
  return toAddress(buffer.readUInt32LE(offset) + buffer.readUInt32LE(offset + 4) * 0x1_0000_0000);
}
