// pDKVS on-media formats, declared once (docs/ARCHITECTURE.md, "pDKVS", has the same tables).
//
// A store is a copy-on-write B+tree of immutable nodes in pDSM objects, published by rewriting its
// meta record in a pDSM transaction. Every structure a reader fetches with one-sided READs carries a
// magic, its birth version (the store version that wrote it) and a CRC-32C seeded with that version,
// so a reader detects a torn read, and memory that was reclaimed and reused, and starts over.

import { crc32c } from '../native';
import { DpmsError, readAddress, readU64, writeAddress, writeU64, type GlobalAddress } from '../pdsm';

const MAGIC_META = 0x314d564b; // 'KVM1'
const MAGIC_NODE = 0x314e564b; // 'KVN1'
const MAGIC_VALUE = 0x3156564b; // 'KVV1'
const MAGIC_GARBAGE = 0x3147564b; // 'KVG1'
const MAGIC_ANCHOR = 0x31414b56; // 'VKA1'

/** The seed of a checksum: the low 32 bits of the birth version, so a stale copy never checks out. */
const seedOf = (version: number): number => version % 0x1_0000_0000;

// ---- meta record: 128 B, rewritten (in a pDSM transaction) by every commit -------------------------
export const META_BYTES = 128;
export const META = {
  magic: 0, // u32
  checksum: 4, // u32 CRC-32C of [8, 128) seeded with 0
  version: 8, // u64 store version: +1 per commit
  root: 16, // u64 address of the root node (0: empty store)
  rootBirth: 24, // u64 birth version of the root node
  count: 32, // u64 keys in the store
  garbageHead: 40, // u64 oldest garbage batch (0: none)
  garbageTail: 48, // u64 newest garbage batch
  pins: 56, // u64 address of the snapshot pin table
  height: 64, // u32 levels in the tree (0 empty, 1 = root is a leaf)
  rootLength: 68, // u32 encoded bytes of the root node
} as const;

export interface Meta {
  readonly version: number;
  /** The root node (address 0: empty store). */
  readonly root: Ref;
  readonly count: number;
  readonly garbageHead: GlobalAddress;
  readonly garbageTail: GlobalAddress;
  readonly pins: GlobalAddress;
  readonly height: number;
}

export function encodeMeta(meta: Meta): Buffer {
  const bytes = Buffer.alloc(META_BYTES);
  bytes.writeUInt32LE(MAGIC_META, META.magic);
  writeU64(bytes, META.version, meta.version);
  writeAddress(bytes, META.root, meta.root.address);
  writeU64(bytes, META.rootBirth, meta.root.birth);
  bytes.writeUInt32LE(meta.root.length, META.rootLength);
  bytes.writeBigUInt64LE(BigInt(meta.count), META.count);
  writeAddress(bytes, META.garbageHead, meta.garbageHead);
  writeAddress(bytes, META.garbageTail, meta.garbageTail);
  writeAddress(bytes, META.pins, meta.pins);
  bytes.writeUInt32LE(meta.height, META.height);
  bytes.writeUInt32LE(crc32c(bytes, 8, META_BYTES - 8, 0), META.checksum);
  return bytes;
}

/** Decode a meta record; undefined when it does not check out (torn while a commit applies it). */
export function decodeMeta(bytes: Buffer): Meta | undefined {
  if (bytes.length < META_BYTES || bytes.readUInt32LE(META.magic) !== MAGIC_META) return undefined;
  if (bytes.readUInt32LE(META.checksum) !== crc32c(bytes, 8, META_BYTES - 8, 0)) return undefined;
  return {
    version: readU64(bytes, META.version),
    root: { address: readAddress(bytes, META.root), birth: readU64(bytes, META.rootBirth), length: bytes.readUInt32LE(META.rootLength) },
    count: Number(bytes.readBigUInt64LE(META.count)),
    garbageHead: readAddress(bytes, META.garbageHead),
    garbageTail: readAddress(bytes, META.garbageTail),
    pins: readAddress(bytes, META.pins),
    height: bytes.readUInt32LE(META.height),
  };
}

// ---- catalog anchor: the first 64 B of the lowest node's root area; the catalog's meta follows ------
export const ANCHOR_BYTES = 64;
/** Where pDKVS keeps its anchor and the catalog's meta in the root area (bytes 0..192 of 4 KiB). */
export const ROOT_AREA = { anchor: 0, catalogMeta: 64 } as const;

export function encodeAnchor(): Buffer {
  const bytes = Buffer.alloc(ANCHOR_BYTES);
  bytes.writeUInt32LE(MAGIC_ANCHOR, 0);
  bytes.writeUInt32LE(1, 4); // format version
  return bytes;
}

/** True when the anchor is there, false when the area is still zero; anything else is corruption. */
export function checkAnchor(bytes: Buffer): boolean {
  const magic = bytes.readUInt32LE(0);
  if (magic === 0 && bytes.every((byte) => byte === 0)) return false;
  if (magic !== MAGIC_ANCHOR) throw new DpmsError('DPMS_BAD_MAGIC', 'the root area does not hold a pDKVS anchor (this cluster was used by something else)');
  if (bytes.readUInt32LE(4) !== 1) throw new DpmsError('DPMS_UNSUPPORTED_VERSION', `pDKVS format ${bytes.readUInt32LE(4)} is not supported (this build reads 1)`);
  return true;
}

// ---- tree node: immutable once published ------------------------------------------------------------
//   0 u32 magic, 4 u32 CRC-32C of [8, bytes) seeded with birth, 8 u64 birth version,
//  16 u8 kind (1 leaf, 2 internal), 17 u8 0, 18 u16 entry count, 20 u32 encoded bytes,
//  24 entries:
//     leaf:     u16 key length, u8 value kind (0 inline, 1 external), u32 value length, key,
//               then the value (inline) or u64 value address + u64 value birth (external)
//     internal: u16 key length, key, u64 child address, u64 child birth, u32 child encoded bytes
//               (every key under child i >= key i, for i >= 1; key 0 bounds nothing)
export const NODE_HEADER_BYTES = 24;
export const NodeKind = { leaf: 1, internal: 2 } as const;

/** Where a published structure is: its address, the version that wrote it, and its length (of the value, for a value). */
export interface Ref {
  readonly address: GlobalAddress;
  readonly birth: number;
  readonly length: number;
}

export type ExternalValue = Ref;

/** A leaf's value: the bytes themselves (inline) or where they are. */
export type LeafValue = Buffer | ExternalValue;

export interface Leaf {
  readonly kind: 1;
  readonly keys: Buffer[];
  readonly values: LeafValue[];
}

export interface Internal {
  readonly kind: 2;
  readonly keys: Buffer[];
  readonly children: Ref[];
}

export type TreeNode = Leaf | Internal;

export function nodeEncodedBytes(node: TreeNode): number {
  let bytes = NODE_HEADER_BYTES;
  if (node.kind === NodeKind.leaf) {
    for (let i = 0; i < node.keys.length; i++) {
      const value = node.values[i];
      bytes += 7 + node.keys[i].length + (Buffer.isBuffer(value) ? value.length : 16);
    }
  } else {
    for (const key of node.keys) bytes += 2 + key.length + 20;
  }
  return bytes;
}

export function encodeNode(node: TreeNode, birth: number): Buffer {
  const bytes = Buffer.allocUnsafe(nodeEncodedBytes(node));
  bytes.writeUInt32LE(MAGIC_NODE, 0);
  writeU64(bytes, 8, birth);
  bytes.writeUInt8(node.kind, 16);
  bytes.writeUInt8(0, 17);
  bytes.writeUInt16LE(node.keys.length, 18);
  bytes.writeUInt32LE(bytes.length, 20);
  let at = NODE_HEADER_BYTES;
  for (let i = 0; i < node.keys.length; i++) {
    const key = node.keys[i];
    at = bytes.writeUInt16LE(key.length, at);
    if (node.kind === NodeKind.leaf) {
      const value = node.values[i];
      const inline = Buffer.isBuffer(value);
      at = bytes.writeUInt8(inline ? 0 : 1, at);
      at = bytes.writeUInt32LE(value.length, at);
      bytes.set(key, at);
      at += key.length;
      if (inline) {
        bytes.set(value, at);
        at += value.length;
      } else {
        writeAddress(bytes, at, value.address);
        writeU64(bytes, at + 8, value.birth);
        at += 16;
      }
    } else {
      bytes.set(key, at);
      at += key.length;
      writeAddress(bytes, at, node.children[i].address);
      writeU64(bytes, at + 8, node.children[i].birth);
      bytes.writeUInt32LE(node.children[i].length, at + 16);
      at += 20;
    }
  }
  bytes.writeUInt32LE(crc32c(bytes, 8, bytes.length - 8, seedOf(birth)), 4);
  return bytes;
}

/**
 * Decode a node fetched from `ref`; undefined when it does not check out (reclaimed and reused since
 * the reader found the pointer). Keys and inline values are copies, so the node may be cached.
 */
export function decodeNode(bytes: Buffer, ref: Ref): TreeNode | undefined {
  if (bytes.length < NODE_HEADER_BYTES || bytes.readUInt32LE(0) !== MAGIC_NODE) return undefined;
  if (readU64(bytes, 8) !== ref.birth) return undefined;
  const length = bytes.readUInt32LE(20);
  if (length !== bytes.length || length !== ref.length) return undefined;
  if (bytes.readUInt32LE(4) !== crc32c(bytes, 8, length - 8, seedOf(ref.birth))) return undefined;
  const kind = bytes.readUInt8(16);
  const count = bytes.readUInt16LE(18);
  const keys: Buffer[] = new Array(count);
  let at = NODE_HEADER_BYTES;
  const corrupt = (): never => {
    throw new DpmsError('DPMS_CORRUPTION', `tree node at 0x${ref.address.toString(16)} (version ${ref.birth}) checks out but its entries overrun it`);
  };
  if (kind === NodeKind.leaf) {
    const values: LeafValue[] = new Array(count);
    for (let i = 0; i < count; i++) {
      if (at + 7 > length) corrupt();
      const keyLength = bytes.readUInt16LE(at);
      const external = bytes.readUInt8(at + 2) === 1;
      const valueLength = bytes.readUInt32LE(at + 3);
      at += 7;
      if (at + keyLength + (external ? 16 : valueLength) > length) corrupt();
      keys[i] = Buffer.from(bytes.subarray(at, at + keyLength));
      at += keyLength;
      if (external) {
        values[i] = { address: readAddress(bytes, at), birth: readU64(bytes, at + 8), length: valueLength };
        at += 16;
      } else {
        values[i] = Buffer.from(bytes.subarray(at, at + valueLength));
        at += valueLength;
      }
    }
    return { kind: NodeKind.leaf, keys, values };
  }
  if (kind !== NodeKind.internal || count === 0) corrupt();
  const children: Ref[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (at + 2 > length) corrupt();
    const keyLength = bytes.readUInt16LE(at);
    at += 2;
    if (at + keyLength + 20 > length) corrupt();
    keys[i] = Buffer.from(bytes.subarray(at, at + keyLength));
    at += keyLength;
    children[i] = { address: readAddress(bytes, at), birth: readU64(bytes, at + 8), length: bytes.readUInt32LE(at + 16) };
    at += 20;
  }
  return { kind: NodeKind.internal, keys, children };
}

// ---- external value: 24-B header + the bytes --------------------------------------------------------
//   0 u32 magic, 4 u32 CRC-32C of [8, 24 + length) seeded with birth, 8 u64 birth, 16 u32 length, 20 u32 0
export const VALUE_HEADER_BYTES = 24;

export function encodeValue(value: Uint8Array, birth: number): Buffer {
  const bytes = Buffer.allocUnsafe(VALUE_HEADER_BYTES + value.length);
  bytes.writeUInt32LE(MAGIC_VALUE, 0);
  writeU64(bytes, 8, birth);
  bytes.writeUInt32LE(value.length, 16);
  bytes.writeUInt32LE(0, 20);
  bytes.set(value, VALUE_HEADER_BYTES);
  bytes.writeUInt32LE(crc32c(bytes, 8, bytes.length - 8, seedOf(birth)), 4);
  return bytes;
}

/** The value bytes (a view into `bytes`), or undefined when the object is not the one `ref` names. */
export function decodeValue(bytes: Buffer, ref: ExternalValue): Buffer | undefined {
  if (bytes.length !== VALUE_HEADER_BYTES + ref.length || bytes.readUInt32LE(0) !== MAGIC_VALUE) return undefined;
  if (readU64(bytes, 8) !== ref.birth || bytes.readUInt32LE(16) !== ref.length) return undefined;
  if (bytes.readUInt32LE(4) !== crc32c(bytes, 8, bytes.length - 8, seedOf(ref.birth))) return undefined;
  return bytes.subarray(VALUE_HEADER_BYTES);
}

// ---- garbage batch: what one commit retired, freed once no snapshot can need it ---------------------
//   0 u32 magic, 4 u32 count, 8 u64 version that retired them, 16 u64 retire time (ms since epoch),
//  24 u64 next batch (0: none; the only field ever rewritten, under the meta lock), 32 u64 addresses[count]
export const GARBAGE = { magic: 0, count: 4, version: 8, timeMs: 16, next: 24, addresses: 32 } as const;

export function encodeGarbage(addresses: readonly GlobalAddress[], version: number, timeMs: number): Buffer {
  const bytes = Buffer.alloc(GARBAGE.addresses + 8 * addresses.length);
  bytes.writeUInt32LE(MAGIC_GARBAGE, GARBAGE.magic);
  bytes.writeUInt32LE(addresses.length, GARBAGE.count);
  writeU64(bytes, GARBAGE.version, version);
  writeU64(bytes, GARBAGE.timeMs, timeMs);
  addresses.forEach((address, i) => writeAddress(bytes, GARBAGE.addresses + 8 * i, address));
  return bytes;
}

export interface GarbageHeader {
  readonly count: number;
  readonly version: number;
  readonly timeMs: number;
  readonly next: GlobalAddress;
}

export function decodeGarbageHeader(bytes: Buffer, at: GlobalAddress): GarbageHeader {
  if (bytes.readUInt32LE(GARBAGE.magic) !== MAGIC_GARBAGE) {
    throw new DpmsError('DPMS_CORRUPTION', `garbage batch at 0x${at.toString(16)} has a bad magic`);
  }
  return {
    count: bytes.readUInt32LE(GARBAGE.count),
    version: readU64(bytes, GARBAGE.version),
    timeMs: readU64(bytes, GARBAGE.timeMs),
    next: readAddress(bytes, GARBAGE.next),
  };
}

export function decodeGarbageAddresses(bytes: Buffer, count: number): GlobalAddress[] {
  const addresses: GlobalAddress[] = [];
  for (let i = 0; i < count; i++) addresses.push(readAddress(bytes, GARBAGE.addresses + 8 * i));
  return addresses;
}

// ---- snapshot pin table: PIN_SLOTS slots of 32 B ------------------------------------------------------
//   0 u64 owner token (0: free; claimed by CAS), 8 u64 oldest version the owner reads (2^64-1: none),
//  16 u64 lease expiry (ms since epoch; an expired slot is ignored and may be taken over), 24 u64 0
export const PIN_SLOTS = 64;
export const PIN_SLOT_BYTES = 32;
export const PIN_TABLE_BYTES = PIN_SLOTS * PIN_SLOT_BYTES;
export const PIN = { owner: 0, version: 8, expiresMs: 16 } as const;
export const NO_PIN = 0xffff_ffff_ffff_ffffn;
