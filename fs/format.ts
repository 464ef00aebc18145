// pDFS on-media formats, declared once (docs/ARCHITECTURE.md, "pDFS", has the same tables).
//
// Every structure lives in pDSM objects and is changed only inside pDSM transactions, except the
// bytes of file data (written one-sided into blocks the file already owns, or into blocks allocated
// by the transaction that links them). Structures that mounts read one-sided, without locks
// (inodes, directory buckets), carry a magic and a CRC-32C seeded with their owner's generation, so
// a reader detects a torn read, or memory freed and reused, and starts over.

import { crc32c } from '../native';
import { readAddress, readU64, writeAddress, writeU64, type GlobalAddress } from '../pdsm';
import { fsError } from './errno';

const MAGIC_SUPER = 0x53464450; // 'PDFS'
const MAGIC_INODE = 0x31494650; // 'PFI1'
const MAGIC_TABLE = 0x31544650; // 'PFT1'
const MAGIC_BUCKET = 0x31424650; // 'PFB1'
const MAGIC_XATTR = 0x31584650; // 'PFX1'
export const FS_FORMAT_VERSION = 1;

const seedOf = (generation: number): number => generation % 0x1_0000_0000;


// ---- limits ---------------------------------------------------------------------------------------
export const FS_LIMITS = {
  nameBytes: 255,
  symlinkBytes: 4095,
  /** A file's data is cut into blocks of this size; each block is one pDSM object (or a hole). */
  blockBytes: 1024 * 1024,
  /** Map pages: 512 block pointers. Height 3 maps 512^3 MiB; we stop at 2^46 B (64 TiB) so sizes stay exact. */
  maxFileBytes: 2 ** 46,
  xattrNameBytes: 255,
  xattrValueBytes: 64 * 1024,
  xattrTotalBytes: 128 * 1024,
  maxLinks: 0xffff_fffe,
  /** Extendible hashing stops doubling here (a 32-MiB table of 4-MiB buckets... of 4-KiB buckets). */
  maxDirDepth: 22,
} as const;

// ---- inode numbers ----------------------------------------------------------------------------------
// An inode number is the inode object's address / 64 (objects are 64-B aligned) times 128, plus the
// low 7 bits of its generation: a kernel that still holds the number of a freed inode whose memory now
// holds another one is told ESTALE (127 times in 128) instead of touching the new file.
export const inoOf = (address: GlobalAddress, generation: number): number => (address / 64) * 128 + (generation % 128);
export const addressOfIno = (ino: number): GlobalAddress => (Math.floor(ino / 128) * 64) as GlobalAddress;
export const inoMatches = (ino: number, generation: number): boolean => ino % 128 === generation % 128;

// ---- file system super record: 256 B at byte 256 of the lowest node's root area ------------------
// (bytes 0..191 of the root area belong to pDKVS.)
export const SUPER_AREA_OFFSET = 256;
export const SUPER_BYTES = 256;
export const SUPER = {
  magic: 0, // u32 'PDFS'
  checksum: 4, // u32 CRC-32C of [8, 64), seed 0
  version: 8, // u32
  blockBytes: 12, // u32
  rootIno: 16, // u64
  orphanIno: 24, // u64: a hidden directory of inodes unlinked while open, and of deletions in progress
  createdNs: 32, // i64
  /** u64 generation counter, changed only by fetch-and-add (own cache line, outside the checksum). */
  generation: 64,
  /** A cache line that cross-directory directory renames write in their transaction: their lock. */
  renameLock: 128,
} as const;
const SUPER_CHECKED = 64;

export interface Super {
  readonly version: number;
  readonly blockBytes: number;
  readonly rootIno: number;
  readonly orphanIno: number;
  readonly createdNs: bigint;
}

export function encodeSuper(value: Super): Buffer {
  const bytes = Buffer.alloc(SUPER_CHECKED);
  bytes.writeUInt32LE(MAGIC_SUPER, SUPER.magic);
  bytes.writeUInt32LE(value.version, SUPER.version);
  bytes.writeUInt32LE(value.blockBytes, SUPER.blockBytes);
  writeU64(bytes, SUPER.rootIno, value.rootIno);
  writeU64(bytes, SUPER.orphanIno, value.orphanIno);
  bytes.writeBigInt64LE(value.createdNs, SUPER.createdNs);
  bytes.writeUInt32LE(crc32c(bytes, 8, SUPER_CHECKED - 8, 0), SUPER.checksum);
  return bytes;
}

/** undefined: no file system was made here yet (all zero). */
export function decodeSuper(bytes: Buffer): Super | undefined {
  const magic = bytes.readUInt32LE(SUPER.magic);
  if (magic === 0 && bytes.subarray(0, SUPER_CHECKED).every((byte) => byte === 0)) return undefined;
  if (magic !== MAGIC_SUPER) throw fsError('EIO', 'DPMS_BAD_MAGIC', 'the root area does not hold a pDFS super record');
  if (bytes.readUInt32LE(SUPER.checksum) !== crc32c(bytes, 8, SUPER_CHECKED - 8, 0)) throw fsError('EIO', 'DPMS_CHECKSUM', 'the pDFS super record fails its checksum');
  const version = bytes.readUInt32LE(SUPER.version);
  if (version !== FS_FORMAT_VERSION) throw fsError('EIO', 'DPMS_UNSUPPORTED_VERSION', `pDFS format ${version} is not supported (this build reads ${FS_FORMAT_VERSION})`);
  const blockBytes = bytes.readUInt32LE(SUPER.blockBytes);
  if (blockBytes !== FS_LIMITS.blockBytes) throw fsError('EIO', 'DPMS_CORRUPTION', `pDFS block size ${blockBytes} is not ${FS_LIMITS.blockBytes}`);
  return {
    version, blockBytes, rootIno: readU64(bytes, SUPER.rootIno), orphanIno: readU64(bytes, SUPER.orphanIno),
    createdNs: bytes.readBigInt64LE(SUPER.createdNs),
  };
}

// ---- inode: one 256-B object --------------------------------------------------------------------
export const INODE_BYTES = 256;
export const INODE = {
  magic: 0, // u32 'PFI1'
  checksum: 4, // u32 CRC-32C of [8, 256), seeded with the generation
  generation: 8, // u64 unique per inode ever made
  mode: 16, // u32 st_mode (type and permission bits)
  nlink: 20, // u32
  uid: 24, // u32
  gid: 28, // u32
  size: 32, // u64
  atime: 40, // i64 ns since the epoch
  mtime: 48, // i64
  ctime: 56, // i64
  btime: 64, // i64 birth
  rdev: 72, // u32
  height: 76, // u32 file: height of the block map; directory: global depth of the hash table
  data: 80, // u64 file: map root (height 0: block 0 itself); directory: hash table; symlink: target object (0: inline)
  parent: 88, // u64 directory: the parent's inode number (the root's is itself)
  xattr: 96, // u64 extended attributes object (0: none)
  blocks: 104, // u64 bytes of data objects the file owns (st_blocks)
  entries: 112, // u64 directory: entries (without . and ..)
  inlineLength: 120, // u32 symlink: target bytes stored inline at `inline`
  capacity: 124, // u32 file at height 0: log2 of block 0's capacity
  inline: 128, // 128 B
} as const;
export const INLINE_BYTES = INODE_BYTES - INODE.inline;

export interface Inode {
  readonly ino: number;
  readonly address: GlobalAddress;
  readonly generation: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  btime: bigint;
  rdev: number;
  height: number;
  data: GlobalAddress;
  parent: number;
  xattr: GlobalAddress;
  blocks: number;
  entries: number;
  /** File at height 0: block 0's capacity (0 when there is none). */
  capacity: number;
  inline: Buffer;
}

export function encodeInode(inode: Inode): Buffer {
  const bytes = Buffer.alloc(INODE_BYTES);
  bytes.writeUInt32LE(MAGIC_INODE, INODE.magic);
  writeU64(bytes, INODE.generation, inode.generation);
  bytes.writeUInt32LE(inode.mode, INODE.mode);
  bytes.writeUInt32LE(inode.nlink, INODE.nlink);
  bytes.writeUInt32LE(inode.uid, INODE.uid);
  bytes.writeUInt32LE(inode.gid, INODE.gid);
  writeU64(bytes, INODE.size, inode.size);
  bytes.writeBigInt64LE(inode.atime, INODE.atime);
  bytes.writeBigInt64LE(inode.mtime, INODE.mtime);
  bytes.writeBigInt64LE(inode.ctime, INODE.ctime);
  bytes.writeBigInt64LE(inode.btime, INODE.btime);
  bytes.writeUInt32LE(inode.rdev, INODE.rdev);
  bytes.writeUInt32LE(inode.height, INODE.height);
  writeAddress(bytes, INODE.data, inode.data);
  writeU64(bytes, INODE.parent, inode.parent);
  writeAddress(bytes, INODE.xattr, inode.xattr);
  writeU64(bytes, INODE.blocks, inode.blocks);
  writeU64(bytes, INODE.entries, inode.entries);
  bytes.writeUInt32LE(inode.inline.length, INODE.inlineLength);
  bytes.writeUInt32LE(inode.capacity > 0 ? Math.log2(inode.capacity) : 0, INODE.capacity);
  inode.inline.copy(bytes, INODE.inline);
  bytes.writeUInt32LE(crc32c(bytes, 8, INODE_BYTES - 8, seedOf(inode.generation)), INODE.checksum);
  return bytes;
}

/** Decode the inode numbered `ino`; undefined when the bytes are not that inode (torn, freed, reused). */
export function decodeInode(bytes: Buffer, ino: number): Inode | undefined {
  if (bytes.length < INODE_BYTES || bytes.readUInt32LE(INODE.magic) !== MAGIC_INODE) return undefined;
  const generation = readU64(bytes, INODE.generation);
  if (!inoMatches(ino, generation)) return undefined;
  if (bytes.readUInt32LE(INODE.checksum) !== crc32c(bytes, 8, INODE_BYTES - 8, seedOf(generation))) return undefined;
  const inlineLength = Math.min(bytes.readUInt32LE(INODE.inlineLength), INLINE_BYTES);
  return {
    ino, address: addressOfIno(ino), generation,
    mode: bytes.readUInt32LE(INODE.mode),
    nlink: bytes.readUInt32LE(INODE.nlink),
    uid: bytes.readUInt32LE(INODE.uid),
    gid: bytes.readUInt32LE(INODE.gid),
    size: readU64(bytes, INODE.size),
    atime: bytes.readBigInt64LE(INODE.atime),
    mtime: bytes.readBigInt64LE(INODE.mtime),
    ctime: bytes.readBigInt64LE(INODE.ctime),
    btime: bytes.readBigInt64LE(INODE.btime),
    rdev: bytes.readUInt32LE(INODE.rdev),
    height: bytes.readUInt32LE(INODE.height),
    data: readAddress(bytes, INODE.data),
    parent: readU64(bytes, INODE.parent),
    xattr: readAddress(bytes, INODE.xattr),
    blocks: readU64(bytes, INODE.blocks),
    entries: readU64(bytes, INODE.entries),
    capacity: bytes.readUInt32LE(INODE.capacity) > 0 ? 2 ** Math.min(bytes.readUInt32LE(INODE.capacity), 30) : 0,
    inline: Buffer.from(bytes.subarray(INODE.inline, INODE.inline + inlineLength)),
  };
}

// ---- directory: extendible hashing ----------------------------------------------------------------
// The directory inode points at a table of 2^depth bucket addresses (a new table object replaces the
// old one whenever a bucket splits); entry e lives in the bucket at table[hash(e) mod 2^depth]. A bucket
// with local depth d holds exactly the names whose hash has its `prefix` in the low d bits.
export const TABLE_HEADER_BYTES = 64;
export const TABLE = { magic: 0, depth: 4, dirIno: 8 } as const;

export function encodeTable(dirIno: number, buckets: readonly GlobalAddress[]): Buffer {
  const depth = Math.log2(buckets.length);
  const bytes = Buffer.alloc(TABLE_HEADER_BYTES + 8 * buckets.length);
  bytes.writeUInt32LE(MAGIC_TABLE, TABLE.magic);
  bytes.writeUInt32LE(depth, TABLE.depth);
  writeU64(bytes, TABLE.dirIno, dirIno);
  buckets.forEach((bucket, i) => writeAddress(bytes, TABLE_HEADER_BYTES + 8 * i, bucket));
  return bytes;
}

export function decodeTable(bytes: Buffer, dirIno: number, depth: number): GlobalAddress[] | undefined {
  if (bytes.readUInt32LE(TABLE.magic) !== MAGIC_TABLE || bytes.readUInt32LE(TABLE.depth) !== depth || readU64(bytes, TABLE.dirIno) !== dirIno) return undefined;
  const out: GlobalAddress[] = [];
  for (let i = 0; i < 2 ** depth; i++) out.push(readAddress(bytes, TABLE_HEADER_BYTES + 8 * i));
  return out;
}

export const BUCKET_BYTES = 4096;
export const BUCKET_HEADER_BYTES = 32;
export const BUCKET = {
  magic: 0, // u32 'PFB1'
  checksum: 4, // u32 CRC-32C of [8, used), seeded with the directory's generation
  dirIno: 8, // u64 the directory this bucket belongs to
  localDepth: 16, // u16
  count: 18, // u16 entries
  used: 20, // u32 bytes used, header included
  prefix: 24, // u32 the low localDepth bits every entry's hash has
} as const;
/** An entry: u64 inode number, u32 name hash, u8 file type (mode >> 12), u8 name length, the name. */
export const ENTRY_HEADER_BYTES = 14;

export interface DirEntry {
  readonly name: Buffer;
  readonly ino: number;
  readonly hash: number;
  /** st_mode >> 12 */
  readonly type: number;
}

export interface Bucket {
  readonly address: GlobalAddress;
  localDepth: number;
  prefix: number;
  entries: DirEntry[];
}

export const nameHash = (name: Uint8Array): number => crc32c(name, 0, name.length, 0x9e3779b9);
export const entryBytes = (name: Uint8Array): number => ENTRY_HEADER_BYTES + name.length;
export const bucketUsed = (bucket: Bucket): number => bucket.entries.reduce((sum, entry) => sum + entryBytes(entry.name), BUCKET_HEADER_BYTES);

export function encodeBucket(bucket: Bucket, dirIno: number, dirGeneration: number): Buffer {
  const used = bucketUsed(bucket);
  const bytes = Buffer.alloc(used);
  bytes.writeUInt32LE(MAGIC_BUCKET, BUCKET.magic);
  writeU64(bytes, BUCKET.dirIno, dirIno);
  bytes.writeUInt16LE(bucket.localDepth, BUCKET.localDepth);
  bytes.writeUInt16LE(bucket.entries.length, BUCKET.count);
  bytes.writeUInt32LE(used, BUCKET.used);
  bytes.writeUInt32LE(bucket.prefix, BUCKET.prefix);
  let at = BUCKET_HEADER_BYTES;
  for (const entry of bucket.entries) {
    writeU64(bytes, at, entry.ino);
    bytes.writeUInt32LE(entry.hash, at + 8);
    bytes[at + 12] = entry.type;
    bytes[at + 13] = entry.name.length;
    Buffer.from(entry.name).copy(bytes, at + ENTRY_HEADER_BYTES);
    at += entryBytes(entry.name);
  }
  bytes.writeUInt32LE(crc32c(bytes, 8, used - 8, seedOf(dirGeneration)), BUCKET.checksum);
  return bytes;
}

/** Decode a bucket of directory `dirIno`; undefined when torn, freed or someone else's. */
export function decodeBucket(bytes: Buffer, address: GlobalAddress, dirIno: number, dirGeneration: number): Bucket | undefined {
  if (bytes.length < BUCKET_HEADER_BYTES || bytes.readUInt32LE(BUCKET.magic) !== MAGIC_BUCKET || readU64(bytes, BUCKET.dirIno) !== dirIno) return undefined;
  const used = bytes.readUInt32LE(BUCKET.used);
  if (used < BUCKET_HEADER_BYTES || used > BUCKET_BYTES || used > bytes.length) return undefined;
  if (bytes.readUInt32LE(BUCKET.checksum) !== crc32c(bytes, 8, used - 8, seedOf(dirGeneration))) return undefined;
  const count = bytes.readUInt16LE(BUCKET.count);
  const entries: DirEntry[] = [];
  let at = BUCKET_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + ENTRY_HEADER_BYTES > used) return undefined;
    const length = bytes[at + 13];
    if (length === 0 || at + ENTRY_HEADER_BYTES + length > used) return undefined;
    entries.push({ ino: readU64(bytes, at), hash: bytes.readUInt32LE(at + 8), type: bytes[at + 12], name: Buffer.from(bytes.subarray(at + ENTRY_HEADER_BYTES, at + ENTRY_HEADER_BYTES + length)) });
    at += ENTRY_HEADER_BYTES + length;
  }
  if (at !== used) return undefined;
  return { address, localDepth: bytes.readUInt16LE(BUCKET.localDepth), prefix: bytes.readUInt32LE(BUCKET.prefix), entries };
}

// ---- file block map --------------------------------------------------------------------------------
// Height 0: the inode's `data` is block 0's object (files up to one block). Height h >= 1: `data` is a
// map page of 512 u64 entries, each the next level's page (or, at level 1, a block). An entry is the
// object's address in bits 0..51 and log2 of its capacity in bits 56..61 (blocks may be smaller
// than blockBytes: small files do not pay for a whole block). 0 is a hole.
export const MAP_PAGE_BYTES = 4096;
export const MAP_FANOUT = 512;

export interface BlockRef { readonly address: GlobalAddress; readonly capacity: number }

export function encodeBlockRef(bytes: Buffer, at: number, ref: BlockRef | undefined): void {
  if (!ref) {
    bytes.writeUInt32LE(0, at);
    bytes.writeUInt32LE(0, at + 4);
    return;
  }
  writeAddress(bytes, at, ref.address);
  bytes[at + 7] = Math.log2(ref.capacity);
}

export function decodeBlockRef(bytes: Buffer, at: number): BlockRef | undefined {
  const low = bytes.readUInt32LE(at);
  const high = bytes.readUInt32LE(at + 4);
  if (low === 0 && high === 0) return undefined;
  const address = (low + (high & 0xfffff) * 0x1_0000_0000) as GlobalAddress;
  const log2 = (high >>> 24) & 0x3f;
  return { address, capacity: 2 ** log2 };
}

// ---- extended attributes: one object per inode, replaced whole on change ---------------------------
//   0 u32 magic, 4 u32 CRC-32C of [8, used) seeded with the owner's generation, 8 u32 used, 12 u32 count,
//  16 entries: u8 name length, u32 value length, name, value
export const XATTR_HEADER_BYTES = 16;

export function encodeXattrs(values: ReadonlyMap<string, Buffer>, generation: number): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of values) {
    const nameBytes = Buffer.from(name, 'utf8');
    const head = Buffer.alloc(5);
    head[0] = nameBytes.length;
    head.writeUInt32LE(value.length, 1);
    parts.push(head, nameBytes, value);
  }
  const body = Buffer.concat(parts);
  const bytes = Buffer.alloc(XATTR_HEADER_BYTES + body.length);
  bytes.writeUInt32LE(MAGIC_XATTR, 0);
  bytes.writeUInt32LE(bytes.length, 8);
  bytes.writeUInt32LE(values.size, 12);
  body.copy(bytes, XATTR_HEADER_BYTES);
  bytes.writeUInt32LE(crc32c(bytes, 8, bytes.length - 8, seedOf(generation)), 4);
  return bytes;
}

export function decodeXattrs(bytes: Buffer, generation: number): Map<string, Buffer> | undefined {
  if (bytes.length < XATTR_HEADER_BYTES || bytes.readUInt32LE(0) !== MAGIC_XATTR) return undefined;
  const used = bytes.readUInt32LE(8);
  if (used < XATTR_HEADER_BYTES || used > bytes.length || bytes.readUInt32LE(4) !== crc32c(bytes, 8, used - 8, seedOf(generation))) return undefined;
  const out = new Map<string, Buffer>();
  let at = XATTR_HEADER_BYTES;
  for (let i = 0, count = bytes.readUInt32LE(12); i < count; i++) {
    if (at + 5 > used) return undefined;
    const nameLength = bytes[at];
    const valueLength = bytes.readUInt32LE(at + 1);
    if (at + 5 + nameLength + valueLength > used) return undefined;
    out.set(bytes.toString('utf8', at + 5, at + 5 + nameLength), Buffer.from(bytes.subarray(at + 5 + nameLength, at + 5 + nameLength + valueLength)));
    at += 5 + nameLength + valueLength;
  }
  return out;
}
