// The pool superblock: written once, last, by format (so a pool whose format was interrupted has no
// valid superblock), and validated field by field on every open. Each failure is a typed error that
// names the field, so a damaged or foreign file is never mistaken for a pool.

import crypto from 'node:crypto';
import { crc32c } from '../native';
import { DpmsError } from './errors';
import {
  computeLayout, FORMAT_VERSION, LAYOUT_NAME, MAGIC, readU64, SB, SUPERBLOCK_BYTES, SUPERBLOCK_CHECKED_BYTES,
  SUPERBLOCK_SEED, writeU64, type FormatParameters, type Layout,
} from './layout';
import { MAX_NODE_ID } from './address';

export interface PoolInfo {
  readonly uuid: string;
  readonly nodeId: number;
  readonly version: number;
  readonly layoutName: string;
  readonly createdMs: number;
  readonly layout: Layout;
}

/** Encode a superblock for a new pool (the caller persists it after everything else). */
export function encodeSuperblock(nodeId: number, parameters: FormatParameters): { bytes: Buffer; info: PoolInfo } {
  if (!Number.isInteger(nodeId) || nodeId < 0 || nodeId > MAX_NODE_ID) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `node id ${nodeId} must be an integer in 0..${MAX_NODE_ID}`);
  }
  const layout = computeLayout(parameters);
  const bytes = Buffer.alloc(SUPERBLOCK_BYTES);
  const uuid = crypto.randomUUID();
  const createdMs = Date.now();
  MAGIC.copy(bytes, SB.magic);
  bytes.writeUInt32LE(FORMAT_VERSION, SB.version);
  bytes.writeUInt32LE(SUPERBLOCK_BYTES, SB.headerBytes);
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(bytes, SB.uuid);
  bytes.writeUInt32LE(nodeId, SB.nodeId);
  writeU64(bytes, SB.poolBytes, layout.poolBytes);
  bytes.writeUInt32LE(layout.chunkBytes, SB.chunkBytes);
  bytes.writeUInt32LE(layout.chunkCount, SB.chunkCount);
  bytes.writeUInt32LE(layout.laneCount, SB.laneCount);
  bytes.writeUInt32LE(layout.laneBytes, SB.laneBytes);
  writeU64(bytes, SB.logOffset, layout.logOffset);
  writeU64(bytes, SB.rootOffset, layout.rootOffset);
  writeU64(bytes, SB.bitmapOffset, layout.bitmapOffset);
  bytes.writeUInt32LE(layout.bitmapBytes, SB.bitmapBytes);
  bytes.writeUInt32LE(layout.chunkMetaBytes, SB.chunkMetaBytes);
  writeU64(bytes, SB.chunkMetaOffset, layout.chunkMetaOffset);
  writeU64(bytes, SB.heapOffset, layout.heapOffset);
  writeU64(bytes, SB.createdMs, createdMs);
  bytes.write(LAYOUT_NAME, SB.layoutName, 'ascii');
  bytes.writeUInt32LE(crc32c(bytes, 0, SUPERBLOCK_CHECKED_BYTES, SUPERBLOCK_SEED), SB.checksum);
  return { bytes, info: { uuid, nodeId, version: FORMAT_VERSION, layoutName: LAYOUT_NAME, createdMs, layout } };
}

export interface SuperblockExpectations {
  /** The node id the caller expects this pool to belong to. */
  readonly nodeId?: number;
  /** The size of the file or mapping that holds the pool. */
  readonly availableBytes: number;
}

/** Validate and decode a superblock; every failure is a typed DpmsError. */
export function decodeSuperblock(buffer: Buffer, expect: SuperblockExpectations): PoolInfo {
  if (buffer.length < SUPERBLOCK_BYTES || expect.availableBytes < SUPERBLOCK_BYTES) {
    throw new DpmsError('DPMS_TRUNCATED', `pool is ${Math.min(buffer.length, expect.availableBytes)} B, shorter than its superblock`);
  }
  if (!buffer.subarray(SB.magic, SB.magic + MAGIC.length).equals(MAGIC)) {
    throw new DpmsError('DPMS_BAD_MAGIC', 'not a dpms pool: bad magic in the superblock');
  }
  const version = buffer.readUInt32LE(SB.version);
  if (version !== FORMAT_VERSION) {
    throw new DpmsError('DPMS_UNSUPPORTED_VERSION', `pool format version ${version} is not supported (this dpms reads version ${FORMAT_VERSION})`);
  }
  const checksum = crc32c(buffer, 0, SUPERBLOCK_CHECKED_BYTES, SUPERBLOCK_SEED);
  if (checksum !== buffer.readUInt32LE(SB.checksum)) {
    throw new DpmsError('DPMS_CHECKSUM', 'superblock checksum mismatch: the superblock is damaged');
  }
  const corrupt = (what: string): never => {
    throw new DpmsError('DPMS_CORRUPTION', `superblock is inconsistent: ${what}`);
  };
  const layoutName = buffer.toString('ascii', SB.layoutName, SB.layoutName + 32).replace(/\0+$/, '');
  if (layoutName !== LAYOUT_NAME) corrupt(`layout '${layoutName}' is not '${LAYOUT_NAME}'`);
  if (buffer.readUInt32LE(SB.headerBytes) !== SUPERBLOCK_BYTES) corrupt('header size');
  const parameters: FormatParameters = {
    poolBytes: readU64(buffer, SB.poolBytes),
    chunkBytes: buffer.readUInt32LE(SB.chunkBytes),
    laneCount: buffer.readUInt32LE(SB.laneCount),
    laneBytes: buffer.readUInt32LE(SB.laneBytes),
  };
  let layout: Layout;
  try {
    layout = computeLayout(parameters);
  } catch (error) {
    throw new DpmsError('DPMS_CORRUPTION', `superblock parameters are invalid: ${(error as Error).message}`, { cause: error });
  }
  const stored: Array<[string, number, number]> = [
    ['chunk count', buffer.readUInt32LE(SB.chunkCount), layout.chunkCount],
    ['log offset', readU64(buffer, SB.logOffset), layout.logOffset],
    ['root offset', readU64(buffer, SB.rootOffset), layout.rootOffset],
    ['bitmap offset', readU64(buffer, SB.bitmapOffset), layout.bitmapOffset],
    ['bitmap size', buffer.readUInt32LE(SB.bitmapBytes), layout.bitmapBytes],
    ['chunk metadata size', buffer.readUInt32LE(SB.chunkMetaBytes), layout.chunkMetaBytes],
    ['chunk metadata offset', readU64(buffer, SB.chunkMetaOffset), layout.chunkMetaOffset],
    ['heap offset', readU64(buffer, SB.heapOffset), layout.heapOffset],
  ];
  for (const [name, found, expected] of stored) {
    if (found !== expected) corrupt(`${name} is ${found}, expected ${expected}`);
  }
  if (expect.availableBytes < layout.poolBytes) {
    throw new DpmsError('DPMS_TRUNCATED', `pool is ${expect.availableBytes} B but its superblock says ${layout.poolBytes} B: the file was truncated`);
  }
  const nodeId = buffer.readUInt32LE(SB.nodeId);
  if (nodeId > MAX_NODE_ID) corrupt(`node id ${nodeId}`);
  if (expect.nodeId !== undefined && expect.nodeId !== nodeId) {
    throw new DpmsError('DPMS_WRONG_NODE', `pool belongs to node ${nodeId}, not node ${expect.nodeId}`);
  }
  const uuidHex = buffer.toString('hex', SB.uuid, SB.uuid + 16);
  const uuid = `${uuidHex.slice(0, 8)}-${uuidHex.slice(8, 12)}-${uuidHex.slice(12, 16)}-${uuidHex.slice(16, 20)}-${uuidHex.slice(20)}`;
  return { uuid, nodeId, version, layoutName, createdMs: readU64(buffer, SB.createdMs), layout };
}
