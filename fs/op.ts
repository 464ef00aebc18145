// One metadata operation of pDFS: a pDSM transaction plus what it has read and changed, so that an
// operation touches each inode, directory bucket and map page once and writes them back at the end.
//
// Locking rule (what makes the one-sided reads below safe): every change to an inode, to anything its
// `data` reaches (a directory's table and buckets, a file's map pages and blocks' placement) or to its
// xattrs is made by a transaction that has read the inode with tx.read, which locks it. So once an
// operation holds an inode, the structures under it are stable and are read one-sided, without locks;
// only the inode itself is read through the transaction. Structures allocated by the operation are
// written one-sided before commit (pDSM frees them if the transaction aborts); existing ones are
// changed with tx.write (redo-logged, atomic with everything else).

import { nodeOf, type ClusterClient, type ClusterTransaction, type GlobalAddress } from '../pdsm';
import { fsError } from './errno';
import {
  addressOfIno, BUCKET_BYTES, BUCKET_HEADER_BYTES, decodeBlockRef, decodeBucket, decodeInode, decodeTable, encodeBlockRef,
  encodeBucket, encodeInode, encodeTable, entryBytes, FS_LIMITS, INODE_BYTES, MAP_FANOUT, MAP_PAGE_BYTES, nameHash,
  TABLE_HEADER_BYTES, type BlockRef, type Bucket, type DirEntry, type Inode,
} from './format';

const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const isDir = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number): boolean => (mode & S_IFMT) === S_IFREG;

const mask = (depth: number): number => depth >= 32 ? 0xffff_ffff : (2 ** depth) - 1;

/** A bucket read (or made) by this operation; bytes from `dirtyFrom` on, and the header, are rewritten at the end. */
interface CachedBucket { bucket: Bucket; isNew: boolean; dirty: boolean; dirtyFrom: number }
const offsetOfEntry = (bucket: Bucket, index: number): number => {
  let at = BUCKET_HEADER_BYTES;
  for (let i = 0; i < index; i++) at += entryBytes(bucket.entries[i].name);
  return at;
};
interface DirState { table: GlobalAddress[]; tableChanged: boolean; buckets: Map<GlobalAddress, CachedBucket> }
interface CachedPage { bytes: Buffer; isNew: boolean }

export class MetaOp {
  private readonly inodes = new Map<number, Inode>();
  private readonly dirtyInodes = new Set<number>();
  private readonly dirs = new Map<number, DirState>();
  private readonly pages = new Map<GlobalAddress, CachedPage>();
  /** Objects this operation freed (so a later step of it never reads them). */
  readonly freed = new Set<GlobalAddress>();

  constructor(readonly client: ClusterClient, readonly tx: ClusterTransaction) {}

  // ---- inodes ----

  /** The inode, locked; ESTALE when the number no longer names a live inode. */
  async inode(ino: number): Promise<Inode> {
    const cached = this.inodes.get(ino);
    if (cached) return cached;
    const inode = decodeInode(await this.tx.read(addressOfIno(ino), INODE_BYTES), ino);
    if (!inode) throw fsError('ESTALE', `inode ${ino} no longer exists`);
    this.inodes.set(ino, inode);
    return inode;
  }

  /** Register an inode this operation made (its object was allocated by this transaction). */
  adopt(inode: Inode): void {
    this.inodes.set(inode.ino, inode);
    this.dirtyInodes.add(inode.ino);
  }

  changed(inode: Inode): void {
    this.dirtyInodes.add(inode.ino);
  }

  forget(inode: Inode): void {
    this.dirtyInodes.delete(inode.ino);
  }

  // ---- directories ----

  private async dir(inode: Inode): Promise<DirState> {
    let state = this.dirs.get(inode.ino);
    if (state) return state;
    let table: GlobalAddress[] = [];
    if (inode.data !== 0) {
      const bytes = await this.client.read(inode.data, TABLE_HEADER_BYTES + 8 * 2 ** inode.height);
      const decoded = decodeTable(bytes, inode.ino, inode.height);
      if (!decoded) throw fsError('EIO', 'DPMS_CORRUPTION', `directory ${inode.ino}: its hash table does not check out`);
      table = decoded;
    }
    state = { table, tableChanged: false, buckets: new Map() };
    this.dirs.set(inode.ino, state);
    return state;
  }

  private async bucket(inode: Inode, state: DirState, address: GlobalAddress): Promise<CachedBucket> {
    let cached = state.buckets.get(address);
    if (cached) return cached;
    const bucket = decodeBucket(await this.client.read(address, BUCKET_BYTES), address, inode.ino, inode.generation);
    if (!bucket) throw fsError('EIO', 'DPMS_CORRUPTION', `directory ${inode.ino}: bucket ${address} does not check out`);
    cached = { bucket, isNew: false, dirty: false, dirtyFrom: BUCKET_BYTES };
    state.buckets.set(address, cached);
    return cached;
  }

  /** The entry `name` of directory `inode` (held), or undefined. */
  async find(inode: Inode, name: Uint8Array): Promise<DirEntry | undefined> {
    const state = await this.dir(inode);
    if (state.table.length === 0) return undefined;
    const hash = nameHash(name);
    const { bucket } = await this.bucket(inode, state, state.table[hash & mask(inode.height)]);
    return bucket.entries.find((entry) => entry.hash === hash && Buffer.compare(entry.name, name) === 0);
  }

  async remove(inode: Inode, name: Uint8Array): Promise<DirEntry> {
    const state = await this.dir(inode);
    const hash = nameHash(name);
    if (state.table.length === 0) throw fsError('ENOENT', 'no such entry');
    const cached = await this.bucket(inode, state, state.table[hash & mask(inode.height)]);
    const index = cached.bucket.entries.findIndex((entry) => entry.hash === hash && Buffer.compare(entry.name, name) === 0);
    if (index < 0) throw fsError('ENOENT', 'no such entry');
    cached.dirtyFrom = Math.min(cached.dirtyFrom, offsetOfEntry(cached.bucket, index));
    const [entry] = cached.bucket.entries.splice(index, 1);
    cached.dirty = true;
    inode.entries -= 1;
    this.changed(inode);
    return entry;
  }

  /** Add an entry (the caller checked that the name is free), splitting buckets as needed. */
  async insert(inode: Inode, name: Uint8Array, ino: number, mode: number): Promise<void> {
    const state = await this.dir(inode);
    const hash = nameHash(name);
    const entry: DirEntry = { name: Buffer.from(name), ino, hash, type: (mode >>> 12) & 0xf };
    const home = nodeOf(inode.address);
    if (state.table.length === 0) {
      const address = await this.tx.alloc(BUCKET_BYTES, home);
      state.table = [address];
      state.tableChanged = true;
      inode.height = 0;
      state.buckets.set(address, { bucket: { address, localDepth: 0, prefix: 0, entries: [] }, isNew: true, dirty: true, dirtyFrom: BUCKET_HEADER_BYTES });
    }
    for (;;) {
      const cached = await this.bucket(inode, state, state.table[hash & mask(inode.height)]);
      const { bucket } = cached;
      let used = BUCKET_HEADER_BYTES;
      for (const existing of bucket.entries) used += entryBytes(existing.name);
      if (used + entryBytes(name) <= BUCKET_BYTES) {
        bucket.entries.push(entry);
        cached.dirty = true;
        cached.dirtyFrom = Math.min(cached.dirtyFrom, used);
        break;
      }
      // Split: double the table first when the bucket is as deep as the table.
      if (bucket.localDepth === inode.height) {
        if (inode.height >= FS_LIMITS.maxDirDepth) throw fsError('ENOSPC', `directory ${inode.ino} is full`);
        state.table = state.table.concat(state.table);
        inode.height += 1;
      }
      const depth = bucket.localDepth;
      const sibling: Bucket = { address: await this.tx.alloc(BUCKET_BYTES, home), localDepth: depth + 1, prefix: bucket.prefix | (2 ** depth), entries: [] };
      const bit = 2 ** depth;
      sibling.entries = bucket.entries.filter((existing) => (existing.hash & bit) !== 0);
      bucket.entries = bucket.entries.filter((existing) => (existing.hash & bit) === 0);
      bucket.localDepth = depth + 1;
      cached.dirty = true;
      cached.dirtyFrom = BUCKET_HEADER_BYTES;
      state.buckets.set(sibling.address, { bucket: sibling, isNew: true, dirty: true, dirtyFrom: BUCKET_HEADER_BYTES });
      const siblingMask = mask(depth + 1);
      for (let i = 0; i < state.table.length; i++) if ((i & siblingMask) === sibling.prefix) state.table[i] = sibling.address;
      state.tableChanged = true;
    }
    inode.entries += 1;
    this.changed(inode);
  }

  /** Every entry of a held directory (for rmdir's and rename's emptiness checks, and the verifier). */
  async entries(inode: Inode): Promise<DirEntry[]> {
    const state = await this.dir(inode);
    const out: DirEntry[] = [];
    for (const address of new Set(state.table)) out.push(...(await this.bucket(inode, state, address)).bucket.entries);
    return out;
  }

  /** Free a directory's table and buckets (it is being removed; it must be empty). */
  async dropDir(inode: Inode): Promise<void> {
    const state = await this.dir(inode);
    for (const address of new Set(state.table)) await this.free(address, true);
    if (inode.data !== 0) await this.free(inode.data, true);
    state.table = [];
    state.tableChanged = false;
    state.buckets.clear();
    inode.data = 0 as GlobalAddress;
    inode.height = 0;
  }

  // ---- file block maps ----

  private async page(address: GlobalAddress): Promise<CachedPage> {
    let page = this.pages.get(address);
    if (!page) {
      page = { bytes: await this.client.read(address, MAP_PAGE_BYTES), isNew: false };
      this.pages.set(address, page);
    }
    return page;
  }

  /** Block `index` of a held file. */
  async block(inode: Inode, index: number): Promise<BlockRef | undefined> {
    if (inode.data === 0) return undefined;
    if (inode.height === 0) return index === 0 ? { address: inode.data, capacity: inode.capacity } : undefined;
    if (index >= MAP_FANOUT ** inode.height) return undefined;
    let address = inode.data;
    for (let level = inode.height; level >= 1; level--) {
      const slot = Math.floor(index / MAP_FANOUT ** (level - 1)) % MAP_FANOUT;
      const ref = decodeBlockRef((await this.page(address)).bytes, slot * 8);
      if (!ref) return undefined;
      if (level === 1) return ref;
      address = ref.address;
    }
    return undefined;
  }

  /** Point block `index` of a held file at `ref` (undefined: a hole), growing the map as needed. */
  async setBlock(inode: Inode, index: number, ref: BlockRef | undefined): Promise<void> {
    const home = nodeOf(inode.address);
    if (inode.height === 0 && index === 0) {
      inode.data = ref?.address ?? (0 as GlobalAddress);
      inode.capacity = ref?.capacity ?? 0;
      this.changed(inode);
      return;
    }
    if (!ref && (inode.data === 0 || (inode.height === 0) || index >= MAP_FANOUT ** inode.height)) return;
    // Grow: a new root page whose first entry is the old root.
    while (inode.height === 0 || index >= MAP_FANOUT ** inode.height) {
      const address = await this.tx.alloc(MAP_PAGE_BYTES, home);
      const bytes = Buffer.alloc(MAP_PAGE_BYTES);
      if (inode.data !== 0) encodeBlockRef(bytes, 0, inode.height === 0 ? { address: inode.data, capacity: inode.capacity } : { address: inode.data, capacity: MAP_PAGE_BYTES });
      this.pages.set(address, { bytes, isNew: true });
      inode.data = address;
      inode.capacity = 0;
      inode.height += 1;
      this.changed(inode);
    }
    let address = inode.data;
    for (let level = inode.height; level >= 1; level--) {
      const slot = Math.floor(index / MAP_FANOUT ** (level - 1)) % MAP_FANOUT;
      const page = await this.page(address);
      if (level === 1) {
        encodeBlockRef(page.bytes, slot * 8, ref);
        if (!page.isNew) await this.tx.write((address + slot * 8) as GlobalAddress, page.bytes.subarray(slot * 8, slot * 8 + 8));
        return;
      }
      let child = decodeBlockRef(page.bytes, slot * 8);
      if (!child) {
        if (!ref) return;
        const childAddress = await this.tx.alloc(MAP_PAGE_BYTES, home);
        this.pages.set(childAddress, { bytes: Buffer.alloc(MAP_PAGE_BYTES), isNew: true });
        child = { address: childAddress, capacity: MAP_PAGE_BYTES };
        encodeBlockRef(page.bytes, slot * 8, child);
        if (!page.isNew) await this.tx.write((address + slot * 8) as GlobalAddress, page.bytes.subarray(slot * 8, slot * 8 + 8));
      }
      address = child.address;
    }
  }

  /**
   * The file's blocks at index >= from, highest first, at most `limit` of them; also the map pages
   * that hold only such blocks (freeable once those blocks are gone).
   */
  async blocksFrom(inode: Inode, from: number, limit: number): Promise<{ blocks: Array<{ index: number; ref: BlockRef }>; complete: boolean }> {
    const blocks: Array<{ index: number; ref: BlockRef }> = [];
    if (inode.data === 0) return { blocks, complete: true };
    if (inode.height === 0) {
      if (from === 0) blocks.push({ index: 0, ref: { address: inode.data, capacity: inode.capacity } });
      return { blocks, complete: true };
    }
    const walk = async (address: GlobalAddress, level: number, base: number): Promise<boolean> => {
      const span = MAP_FANOUT ** (level - 1);
      const { bytes } = await this.page(address);
      for (let slot = MAP_FANOUT - 1; slot >= 0; slot--) {
        const first = base + slot * span;
        if (first + span <= from) break;
        const ref = decodeBlockRef(bytes, slot * 8);
        if (!ref) continue;
        if (level === 1) {
          if (blocks.length >= limit) return false;
          blocks.push({ index: first, ref });
        } else if (!(await walk(ref.address, level - 1, first))) {
          return false;
        }
      }
      return true;
    };
    const complete = await walk(inode.data, inode.height, 0);
    return { blocks, complete };
  }

  /** After blocks >= from were cleared: free the map pages that now map nothing; collapse to height 0 when empty. */
  async pruneMap(inode: Inode, from: number): Promise<void> {
    if (inode.height === 0 || inode.data === 0) return;
    const prune = async (address: GlobalAddress, level: number, base: number): Promise<boolean> => {
      const span = MAP_FANOUT ** (level - 1);
      const page = await this.page(address);
      let empty = true;
      for (let slot = 0; slot < MAP_FANOUT; slot++) {
        const ref = decodeBlockRef(page.bytes, slot * 8);
        if (!ref) continue;
        const first = base + slot * span;
        if (level > 1 && first + span > from && (await prune(ref.address, level - 1, first))) {
          await this.free(ref.address);
          encodeBlockRef(page.bytes, slot * 8, undefined);
          if (!page.isNew) await this.tx.write((address + slot * 8) as GlobalAddress, page.bytes.subarray(slot * 8, slot * 8 + 8));
          continue;
        }
        empty = false;
      }
      return empty;
    };
    if (await prune(inode.data, inode.height, 0)) {
      await this.free(inode.data);
      inode.data = 0 as GlobalAddress;
      inode.height = 0;
      inode.capacity = 0;
      this.changed(inode);
    }
  }

  /**
   * Free an object. `scrub` first zeroes its magic and checksum in the same transaction, for the
   * structures mounts read one-sided (inodes, tables, buckets, xattrs): a stale reader then sees
   * garbage that fails validation, never a plausible old copy.
   */
  async free(address: GlobalAddress, scrub = false): Promise<void> {
    if (this.freed.has(address)) return;
    this.freed.add(address);
    if (scrub) await this.tx.write(address, Buffer.alloc(8));
    await this.tx.free(address);
  }

  // ---- the end of the operation ----

  /** Write back everything changed; the caller then commits. */
  async finish(): Promise<void> {
    for (const [ino, state] of this.dirs) {
      const inode = this.inodes.get(ino);
      if (!inode) continue;
      for (const cached of state.buckets.values()) {
        if (!cached.dirty || this.freed.has(cached.bucket.address)) continue;
        const bytes = encodeBucket(cached.bucket, inode.ino, inode.generation);
        if (cached.isNew) {
          await this.client.writePersist(cached.bucket.address, bytes);
        } else {
          // The header (count, used, checksum) and the bytes that changed: an append logs one entry.
          await this.tx.write(cached.bucket.address, bytes.subarray(0, BUCKET_HEADER_BYTES));
          if (cached.dirtyFrom < bytes.length) await this.tx.write((cached.bucket.address + cached.dirtyFrom) as GlobalAddress, bytes.subarray(cached.dirtyFrom));
        }
      }
      if (state.tableChanged) {
        const bytes = encodeTable(inode.ino, state.table);
        const address = await this.tx.alloc(bytes.length, nodeOf(inode.address));
        await this.client.writePersist(address, bytes);
        if (inode.data !== 0) await this.free(inode.data, true);
        inode.data = address;
        this.changed(inode);
      }
    }
    for (const [address, page] of this.pages) {
      if (page.isNew && !this.freed.has(address)) await this.client.writePersist(address, page.bytes);
    }
    for (const ino of this.dirtyInodes) {
      const inode = this.inodes.get(ino)!;
      await this.tx.write(inode.address, encodeInode(inode));
    }
  }
}
