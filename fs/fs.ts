// pDFS: a POSIX file system on pDSM (docs/ARCHITECTURE.md, "pDFS").
//
// Operations take inode numbers (the FUSE low-level API gives us parent + name, so there are no path
// walks here) and the caller's credentials. Every metadata change is one pDSM transaction (MetaOp),
// atomic across nodes; reads that change nothing (lookup, getattr, readdir, read) are one-sided READs
// validated by magic + checksum and retried when they meet a structure mid-change. File data moves
// client-active: a write puts its bytes straight into the file's block objects with one-sided WRITEs
// (persisted) inside the transaction that holds the inode and updates size and times, so a write is
// durable when it returns; fsync only has to wait for writes in flight.
//
// Permission checks with the caller's full credentials (supplementary groups included) are the
// kernel's (the mount uses default_permissions); this layer owns the rules that decide state:
// ownership of new files, setgid directories, clearing set-id bits, name limits, rename's rules.

import { nodeOf, type ClusterClient, type GlobalAddress } from '../pdsm';
import { fsError } from './errno';
import {
  addressOfIno, BUCKET_BYTES, decodeBlockRef, decodeBucket, decodeInode, decodeSuper, decodeTable, decodeXattrs,
  encodeInode, encodeSuper, encodeXattrs, FS_FORMAT_VERSION, FS_LIMITS, INLINE_BYTES, INODE_BYTES, inoOf, MAP_FANOUT,
  MAP_PAGE_BYTES, nameHash, SUPER, SUPER_AREA_OFFSET, SUPER_BYTES, TABLE_HEADER_BYTES, type BlockRef, type DirEntry,
  type Inode, type Super,
} from './format';
import { isDir, isReg, MetaOp, S_IFDIR, S_IFLNK, S_IFREG } from './op';
import { mountLiveness, orphanName, parseOrphanName } from './orphans';

export interface Caller { readonly uid: number; readonly gid: number }
export const ROOT_CALLER: Caller = { uid: 0, gid: 0 };

const S_IFMT = 0o170000;
const S_IFIFO = 0o010000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o0010;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
/** Objects one transaction frees at most; bigger truncates and deletions go in steps (each atomic). */
const FREE_BATCH = 2048;
const BLOCK = FS_LIMITS.blockBytes;
const READ_RETRIES = 20;
const MIN_TIME_NS = -(2n ** 63n);
const MAX_TIME_NS = 2n ** 63n - 1n;
/** Smallest capacity worth giving a block; then powers of two up to 64 KiB, then whole 256-KiB chunks, then a block. */
const capacityFor = (needed: number): number => {
  if (needed <= 64) return 64;
  const pow = 2 ** Math.ceil(Math.log2(needed));
  if (pow <= 64 * 1024) return pow;
  return pow <= 256 * 1024 ? 256 * 1024 : BLOCK;
};

export interface StatfsInfo { readonly totalBytes: number; readonly freeBytes: number; readonly files: number; readonly freeFiles: number }

/** ns since the epoch with ns resolution (Date.now() is ms; hrtime is ns but relative). */
const clockBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
export const nowNs = (): bigint => clockBase + process.hrtime.bigint();

function checkName(name: Uint8Array): void {
  if (name.length === 0) throw fsError('ENOENT', 'empty name');
  if (name.length > FS_LIMITS.nameBytes) throw fsError('ENAMETOOLONG', `a name is at most ${FS_LIMITS.nameBytes} bytes`);
  if (name.includes(0x2f) || name.includes(0)) throw fsError('EINVAL', 'a name cannot contain / or NUL');
  if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) throw fsError('EEXIST', '. and .. always exist');
}

/** A tiny async mutex per key: operations of this mount on the same inode queue instead of conflicting. */
class KeyedLocks {
  private readonly tails = new Map<number, Promise<void>>();

  async hold<T>(keys: readonly number[], body: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort((a, b) => a - b);
    const releases: Array<() => void> = [];
    for (const key of sorted) {
      const previous = this.tails.get(key) ?? Promise.resolve();
      let release!: () => void;
      const mine = new Promise<void>((resolve) => { release = resolve; });
      const tail = previous.then(() => mine);
      this.tails.set(key, tail);
      releases.push(() => {
        release();
        if (this.tails.get(key) === tail) this.tails.delete(key);
      });
      await previous;
    }
    try {
      return await body();
    } finally {
      for (const release of releases) release();
    }
  }
}

export class FileSystem {
  private readonly locks = new KeyedLocks();
  /** Open handles per inode in this mount: an inode unlinked while open is kept (in the orphan directory) until its last release. */
  private readonly opens = new Map<number, number>();
  private closed = false;

  private constructor(readonly client: ClusterClient, private readonly superAddress: GlobalAddress, readonly info: Super) {}

  /** Open the file system of a cluster, making it first when the cluster has none (`create`). */
  static async open(client: ClusterClient, options: { create?: boolean } = {}): Promise<FileSystem> {
    const home = Math.min(...client.nodeIds);
    const superAddress = ((await client.root(home)) + SUPER_AREA_OFFSET) as GlobalAddress;
    let info = decodeSuper(await client.read(superAddress, SUPER_BYTES));
    if (!info) {
      if (options.create === false) throw fsError('ENOENT', 'DPMS_NOT_FOUND', 'this cluster holds no pDFS file system');
      info = await client.transaction(async (tx) => {
        const existing = decodeSuper(await tx.read(superAddress, SUPER_BYTES));
        if (existing) return existing;
        const now = nowNs();
        const made: Inode[] = [];
        for (let i = 0; i < 2; i++) {
          const address = await tx.alloc(INODE_BYTES, home);
          const generation = i + 1;
          made.push(newInode(address, generation, S_IFDIR | (i === 0 ? 0o755 : 0o700), ROOT_CALLER, now));
        }
        for (const inode of made) {
          inode.nlink = 2;
          inode.parent = inode.ino;
          await tx.write(inode.address, encodeInode(inode));
        }
        const created: Super = { version: FS_FORMAT_VERSION, blockBytes: BLOCK, rootIno: made[0].ino, orphanIno: made[1].ino, createdNs: now };
        await tx.write(superAddress, encodeSuper(created));
        const counter = Buffer.alloc(8);
        counter.writeBigUInt64LE(16n);
        await tx.write((superAddress + SUPER.generation) as GlobalAddress, counter);
        return created;
      });
    }
    return new FileSystem(client, superAddress, info);
  }

  get rootIno(): number { return this.info.rootIno; }
  get orphanIno(): number { return this.info.orphanIno; }

  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- one-sided reads ----

  /** The inode, read one-sided; retried while it is mid-change; ESTALE when it is gone. */
  async stat(ino: number): Promise<Inode> {
    for (let attempt = 0; attempt < READ_RETRIES; attempt++) {
      const inode = decodeInode(await this.client.read(addressOfIno(ino), INODE_BYTES), ino);
      if (inode) return inode;
      if (attempt > 2) await new Promise((resolve) => setTimeout(resolve, attempt));
    }
    return this.client.transaction(async (tx) => new MetaOp(this.client, tx).inode(ino));
  }

  /** The entry `name` of directory `parent` and its inode. */
  async lookup(parent: number, name: Uint8Array): Promise<Inode> {
    if (name.length > FS_LIMITS.nameBytes) throw fsError('ENAMETOOLONG', `a name is at most ${FS_LIMITS.nameBytes} bytes`);
    const hash = nameHash(name);
    for (let attempt = 0; attempt < READ_RETRIES; attempt++) {
      const dir = await this.stat(parent);
      if (!isDir(dir.mode)) throw fsError('ENOTDIR', 'not a directory');
      if (dir.data === 0) throw fsError('ENOENT', 'no such entry');
      try {
        const pointer = await this.client.read((dir.data + TABLE_HEADER_BYTES + 8 * (hash & (2 ** dir.height - 1))) as GlobalAddress, 8);
        const bucketAddress = decodeBlockRef(pointer, 0)?.address;
        if (bucketAddress) {
          const bucket = decodeBucket(await this.client.read(bucketAddress, BUCKET_BYTES), bucketAddress, dir.ino, dir.generation);
          if (bucket && (hash & (2 ** bucket.localDepth - 1)) === bucket.prefix) {
            const entry = bucket.entries.find((e) => e.hash === hash && Buffer.compare(e.name, name) === 0);
            if (!entry) throw fsError('ENOENT', 'no such entry');
            try {
              return await this.stat(entry.ino);
            } catch (error) {
              // Removed between our two reads: look again.
              if ((error as { errno?: string }).errno !== 'ESTALE') throw error;
            }
          }
        }
      } catch (error) {
        if ((error as { code?: string }).code === 'DPMS_FS') throw error;
        // A pointer from a table that was replaced under us: start over.
      }
    }
    return this.client.transaction(async (tx) => {
      const op = new MetaOp(this.client, tx);
      const entry = await op.find(await op.inode(parent), name);
      if (!entry) throw fsError('ENOENT', 'no such entry');
      return op.inode(entry.ino);
    });
  }

  /** Every entry of a directory, read one-sided (consistent: retried until every bucket checks out). */
  async readdir(ino: number): Promise<DirEntry[]> {
    for (let attempt = 0; attempt < READ_RETRIES; attempt++) {
      const dir = await this.stat(ino);
      if (!isDir(dir.mode)) throw fsError('ENOTDIR', 'not a directory');
      if (dir.data === 0) return [];
      try {
        const table = decodeTable(await this.client.read(dir.data, TABLE_HEADER_BYTES + 8 * 2 ** dir.height), dir.ino, dir.height);
        if (!table) continue;
        const addresses = [...new Set(table)];
        const out: DirEntry[] = [];
        let ok = true;
        for (let i = 0; i < addresses.length && ok; i += 64) {
          const slice = addresses.slice(i, i + 64);
          const buckets = await Promise.all(slice.map(async (address) => decodeBucket(await this.client.read(address, BUCKET_BYTES), address, dir.ino, dir.generation)));
          for (const bucket of buckets) {
            if (!bucket) ok = false;
            else out.push(...bucket.entries);
          }
        }
        if (ok) return out;
      } catch (error) {
        if ((error as { code?: string }).code === 'DPMS_FS') throw error;
      }
    }
    return this.client.transaction(async (tx) => {
      const op = new MetaOp(this.client, tx);
      return op.entries(await op.inode(ino));
    });
  }

  async readlink(ino: number): Promise<Buffer> {
    const inode = await this.stat(ino);
    if ((inode.mode & S_IFMT) !== S_IFLNK) throw fsError('EINVAL', 'not a symbolic link');
    const target = inode.data === 0 ? inode.inline : await this.client.read(inode.data, inode.size);
    await this.touchAtime(inode);
    return target;
  }

  /** Up to `size` bytes from `offset`; holes read as zeros; shorter at the end of the file. */
  async read(ino: number, offset: number, size: number): Promise<Buffer> {
    const inode = await this.stat(ino);
    if (isDir(inode.mode)) throw fsError('EISDIR', 'is a directory');
    await this.touchAtime(inode);
    if (offset >= inode.size || size === 0) return Buffer.alloc(0);
    const end = Math.min(inode.size, offset + size);
    // Holes and bytes past a block's capacity read as zeros; everything else is read in place.
    const out = Buffer.allocUnsafe(end - offset);
    const pages = new Map<GlobalAddress, Promise<Buffer>>();
    const blockRef = async (index: number): Promise<BlockRef | undefined> => {
      if (inode.data === 0) return undefined;
      if (inode.height === 0) return index === 0 ? { address: inode.data, capacity: inode.capacity } : undefined;
      if (index >= MAP_FANOUT ** inode.height) return undefined;
      let address = inode.data;
      for (let level = inode.height; level >= 1; level--) {
        let page = pages.get(address);
        if (!page) {
          page = this.client.read(address, MAP_PAGE_BYTES);
          pages.set(address, page);
        }
        const ref = decodeBlockRef(await page, (Math.floor(index / MAP_FANOUT ** (level - 1)) % MAP_FANOUT) * 8);
        if (!ref || level === 1) return ref;
        address = ref.address;
      }
      return undefined;
    };
    const jobs: Array<Promise<void>> = [];
    for (let index = Math.floor(offset / BLOCK); index * BLOCK < end; index++) {
      const start = Math.max(offset, index * BLOCK);
      const stop = Math.min(end, (index + 1) * BLOCK);
      jobs.push((async () => {
        const ref = await blockRef(index);
        const from = start - index * BLOCK;
        const to = Math.max(from, Math.min(stop - index * BLOCK, ref?.capacity ?? 0));
        if (to > from) await this.client.readInto((ref!.address + from) as GlobalAddress, out, start - offset, to - from);
        if (to < stop - index * BLOCK) out.fill(0, start - offset + (to - from), stop - offset);
      })());
    }
    await Promise.all(jobs);
    return out;
  }

  async listxattr(ino: number): Promise<string[]> {
    return [...(await this.xattrs(await this.stat(ino))).keys()];
  }

  async getxattr(ino: number, name: string): Promise<Buffer> {
    checkXattrName(name);
    const value = (await this.xattrs(await this.stat(ino))).get(name);
    if (!value) throw fsError('ENODATA', 'no such attribute');
    return value;
  }

  private async xattrs(inode: Inode): Promise<Map<string, Buffer>> {
    if (inode.xattr === 0) return new Map();
    for (let attempt = 0; attempt < READ_RETRIES; attempt++) {
      const head = await this.client.read(inode.xattr, 16);
      const used = head.readUInt32LE(8);
      if (used >= 16 && used <= FS_LIMITS.xattrTotalBytes + 16 * 1024) {
        const decoded = decodeXattrs(await this.client.read(inode.xattr, used), inode.generation);
        if (decoded) return decoded;
      }
      inode = await this.stat(inode.ino);
      if (inode.xattr === 0) return new Map();
    }
    throw fsError('EIO', 'DPMS_CORRUPTION', `inode ${inode.ino}: extended attributes do not check out`);
  }

  async statfs(): Promise<StatfsInfo> {
    let totalBytes = 0;
    let freeBytes = 0;
    for (const { status } of await this.client.status()) {
      if (!status) continue;
      totalBytes += status.chunkCount * status.chunkBytes;
      freeBytes += (status.chunkCount - status.chunksUsed) * status.chunkBytes;
    }
    // Every inode is a 256-B object; report files as what the free space could hold.
    return { totalBytes, freeBytes, files: Math.floor(totalBytes / 4096), freeFiles: Math.floor(freeBytes / 4096) };
  }

  // ---- metadata operations: one transaction each ----

  private async mutate<T>(keys: readonly number[], body: (op: MetaOp) => Promise<T>): Promise<T> {
    if (this.closed) throw fsError('ENOTCONN', 'the file system is closed');
    return this.locks.hold(keys, () => this.client.transaction(async (tx) => {
      const op = new MetaOp(this.client, tx);
      const result = await body(op);
      await op.finish();
      return result;
    }));
  }

  private async generation(): Promise<number> {
    const address = (this.superAddress + SUPER.generation) as GlobalAddress;
    const value = await this.client.faa64(address, 1n);
    await this.client.persist(address, 8);
    return Number(value);
  }

  private async parentDir(op: MetaOp, parent: number): Promise<Inode> {
    const dir = await op.inode(parent);
    if (!isDir(dir.mode)) throw fsError('ENOTDIR', 'not a directory');
    if (dir.nlink === 0) throw fsError('ENOENT', 'the directory was removed');
    return dir;
  }

  /** Make a new inode named `name` in `parent`: mknod, mkdir, symlink and create. */
  private async make(caller: Caller, parent: number, name: Uint8Array, mode: number, rdev: number, target?: Buffer): Promise<Inode> {
    checkName(name);
    const type = mode & S_IFMT;
    if (![S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO].includes(type)) throw fsError('EPERM', 'only regular files, directories, symbolic links and FIFOs can be made');
    const generation = await this.generation();
    return this.mutate([parent], async (op) => {
      const dir = await this.parentDir(op, parent);
      if (await op.find(dir, name)) throw fsError('EEXIST', 'the name exists');
      if (type === S_IFDIR && dir.nlink >= FS_LIMITS.maxLinks) throw fsError('EMLINK', 'too many subdirectories');
      const now = nowNs();
      const address = await op.tx.alloc(INODE_BYTES);
      const inode = newInode(address, generation, mode, caller, now);
      inode.rdev = rdev;
      // setgid directories: new entries take the directory's group; new directories stay setgid.
      if (dir.mode & S_ISGID) {
        inode.gid = dir.gid;
        if (type === S_IFDIR) inode.mode |= S_ISGID;
      } else if (type !== S_IFDIR && caller.uid !== 0 && (inode.mode & S_ISGID) && (inode.mode & S_IXGRP) && inode.gid !== caller.gid) {
        inode.mode &= ~S_ISGID;
      }
      if (type === S_IFDIR) {
        inode.nlink = 2;
        inode.parent = dir.ino;
        dir.nlink += 1;
      }
      if (target) {
        inode.size = target.length;
        if (target.length <= INLINE_BYTES) inode.inline = Buffer.from(target);
        else {
          inode.data = await op.tx.alloc(target.length, nodeOf(address));
          await this.client.writePersist(inode.data, target);
        }
      }
      op.adopt(inode);
      await op.insert(dir, name, inode.ino, inode.mode);
      dir.mtime = dir.ctime = now;
      op.changed(dir);
      return inode;
    });
  }

  mknod(caller: Caller, parent: number, name: Uint8Array, mode: number, rdev: number): Promise<Inode> {
    return this.make(caller, parent, name, (mode & S_IFMT) === 0 ? mode | S_IFREG : mode, rdev);
  }

  mkdir(caller: Caller, parent: number, name: Uint8Array, mode: number): Promise<Inode> {
    return this.make(caller, parent, name, S_IFDIR | (mode & 0o7777), 0);
  }

  symlink(caller: Caller, target: Buffer, parent: number, name: Uint8Array): Promise<Inode> {
    if (target.length === 0) throw fsError('ENOENT', 'empty symbolic link target');
    if (target.length > FS_LIMITS.symlinkBytes) throw fsError('ENAMETOOLONG', `a symbolic link target is at most ${FS_LIMITS.symlinkBytes} bytes`);
    return this.make(caller, parent, name, S_IFLNK | 0o777, 0, target);
  }

  async link(ino: number, parent: number, name: Uint8Array): Promise<Inode> {
    checkName(name);
    return this.mutate([parent, ino], async (op) => {
      const inode = await op.inode(ino);
      if (isDir(inode.mode)) throw fsError('EPERM', 'cannot hard-link a directory');
      if (inode.nlink === 0) throw fsError('ENOENT', 'the file was removed');
      if (inode.nlink >= FS_LIMITS.maxLinks) throw fsError('EMLINK', 'too many links');
      const dir = await this.parentDir(op, parent);
      if (await op.find(dir, name)) throw fsError('EEXIST', 'the name exists');
      await op.insert(dir, name, inode.ino, inode.mode);
      const now = nowNs();
      inode.nlink += 1;
      inode.ctime = now;
      dir.mtime = dir.ctime = now;
      op.changed(inode);
      op.changed(dir);
      return inode;
    });
  }

  async unlink(parent: number, name: Uint8Array): Promise<void> {
    checkName(name);
    const pending = await this.mutate([parent], async (op) => {
      const dir = await this.parentDir(op, parent);
      const entry = await op.find(dir, name);
      if (!entry) throw fsError('ENOENT', 'no such entry');
      const inode = await op.inode(entry.ino);
      if (isDir(inode.mode)) throw fsError('EISDIR', 'is a directory (use rmdir)');
      await op.remove(dir, name);
      const now = nowNs();
      dir.mtime = dir.ctime = now;
      op.changed(dir);
      return this.dropLink(op, inode, now);
    });
    if (pending) await this.reclaim(pending);
  }

  /**
   * One name of `inode` is gone. At zero links it is freed now when it is small and not open here;
   * otherwise it goes into the orphan directory and is returned, to be freed in steps (or at release).
   */
  private async dropLink(op: MetaOp, inode: Inode, now: bigint): Promise<number | undefined> {
    inode.nlink -= 1;
    inode.ctime = now;
    op.changed(inode);
    if (inode.nlink > 0) return undefined;
    const open = (this.opens.get(inode.ino) ?? 0) > 0;
    if (!open && inode.blocks / BLOCK < FREE_BATCH / 2 && (isReg(inode.mode) ? inode.height <= 1 : true)) {
      await this.freeInode(op, inode);
      return undefined;
    }
    const orphans = await op.inode(this.orphanIno);
    // An open orphan carries its mount's client instance, so that once that mount is gone, a later mount
    // or `dpms check --repair` can tell it is no longer open anywhere and reclaim it.
    await op.insert(orphans, Buffer.from(orphanName(open ? 'open' : 'gone', inode.ino, open ? this.client.info.instance : undefined)), inode.ino, inode.mode);
    op.changed(orphans);
    return open ? undefined : inode.ino;
  }

  /** Free an inode and all it owns (it fits this transaction). */
  private async freeInode(op: MetaOp, inode: Inode): Promise<void> {
    if (isReg(inode.mode)) {
      const { blocks } = await op.blocksFrom(inode, 0, Number.MAX_SAFE_INTEGER);
      for (const { ref } of blocks) await op.free(ref.address);
      if (inode.height > 0) await op.pruneMap(inode, 0);
    } else if ((inode.mode & S_IFMT) === S_IFLNK) {
      if (inode.data !== 0) await op.free(inode.data);
    } else if (isDir(inode.mode)) {
      await op.dropDir(inode);
    }
    if (inode.xattr !== 0) await op.free(inode.xattr, true);
    op.forget(inode);
    await op.free(inode.address, true);
  }

  /** Finish deleting an orphaned inode: free its data in steps, then the inode and its orphan entry (`name`, or the names this mount writes). */
  private async reclaim(ino: number, name?: string): Promise<void> {
    for (;;) {
      const done = await this.mutate([ino], async (op) => {
        let inode: Inode;
        try {
          inode = await op.inode(ino);
        } catch {
          return true; // someone else finished it
        }
        if (inode.nlink > 0) return true;
        if (isReg(inode.mode)) {
          const { blocks, complete } = await op.blocksFrom(inode, 0, FREE_BATCH);
          if (!complete) {
            for (const { ref } of blocks) await op.free(ref.address);
            const lowest = blocks[blocks.length - 1].index;
            for (const { index } of blocks) await op.setBlock(inode, index, undefined);
            inode.blocks -= blocks.reduce((sum, { ref }) => sum + ref.capacity, 0);
            inode.size = Math.min(inode.size, lowest * BLOCK);
            await op.pruneMap(inode, lowest);
            op.changed(inode);
            return false;
          }
        }
        const orphans = await op.inode(this.orphanIno);
        const names = new Set([orphanName('gone', ino), orphanName('open', ino), orphanName('open', ino, this.client.info.instance)]);
        if (name !== undefined) names.add(name);
        for (const candidate of names) {
          const bytes = Buffer.from(candidate);
          if (await op.find(orphans, bytes)) await op.remove(orphans, bytes);
        }
        await this.freeInode(op, inode);
        return true;
      });
      if (done) return;
    }
  }

  /**
   * Finish deletions a crashed mount left half done, and reclaim files unlinked while open in mounts
   * that are gone (no node lists their client instance; fs/orphans.ts). Old-form `open-<ino>` names
   * do not say their mount: they are reclaimed only when no other mount is connected.
   */
  async recoverOrphans(): Promise<number> {
    const entries = (await this.readdir(this.orphanIno)).map((entry) => ({ entry, parsed: parseOrphanName(entry.name.toString()) }));
    const instances = entries.flatMap(({ parsed }) => (parsed?.kind === 'open' && parsed.instance !== undefined ? [parsed.instance] : []));
    const legacy = entries.some(({ parsed }) => parsed?.kind === 'open' && parsed.instance === undefined);
    const liveness = instances.length > 0 || legacy ? await mountLiveness(this.client, instances) : undefined;
    const reclaimed = await this.reclaimOrphans({
      isDead: (instance) => liveness?.isDead(instance) ?? false,
      legacyOpen: liveness !== undefined && liveness.nodesAnswered > 0 && liveness.otherMounts === 0,
    });
    return reclaimed.length;
  }

  /**
   * Reclaim every `gone-` orphan and the `open-` orphans whose mount `isDead` (old-form names when
   * `legacyOpen`); returns what was reclaimed. Each step is its own transaction that re-reads the inode.
   */
  async reclaimOrphans(options: { isDead(instance: string): boolean; legacyOpen: boolean }): Promise<Array<{ name: string; ino: number }>> {
    const reclaimed: Array<{ name: string; ino: number }> = [];
    for (const entry of await this.readdir(this.orphanIno)) {
      const name = entry.name.toString();
      const parsed = parseOrphanName(name);
      if (!parsed || parsed.ino !== entry.ino) continue;
      if (parsed.kind === 'open') {
        if (parsed.instance === undefined ? !options.legacyOpen : !options.isDead(parsed.instance)) continue;
        if ((this.opens.get(entry.ino) ?? 0) > 0) continue;
      }
      await this.reclaim(entry.ino, name);
      reclaimed.push({ name, ino: entry.ino });
    }
    return reclaimed;
  }

  /**
   * Set the link count of `ino` to `expected` if it still is `seen` (`dpms check --repair`, with no
   * mount running: a count the verifier found wrong). Re-read under the inode's lock; false when changed since.
   */
  async repairLinkCount(ino: number, seen: number, expected: number): Promise<boolean> {
    if (!Number.isSafeInteger(expected) || expected < 1) throw fsError('EINVAL', `a link count of ${expected} cannot be set`);
    return this.mutate([ino], async (op) => {
      const inode = await op.inode(ino);
      if (inode.nlink !== seen) return false;
      inode.nlink = expected;
      inode.ctime = nowNs();
      op.changed(inode);
      return true;
    });
  }

  async rmdir(parent: number, name: Uint8Array): Promise<void> {
    if (name.length === 1 && name[0] === 0x2e) throw fsError('EINVAL', 'cannot remove .');
    if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) throw fsError('ENOTEMPTY', 'cannot remove ..');
    checkName(name);
    await this.mutate([parent], async (op) => {
      const dir = await this.parentDir(op, parent);
      const entry = await op.find(dir, name);
      if (!entry) throw fsError('ENOENT', 'no such entry');
      const inode = await op.inode(entry.ino);
      if (!isDir(inode.mode)) throw fsError('ENOTDIR', 'not a directory');
      if (inode.entries > 0) throw fsError('ENOTEMPTY', 'the directory is not empty');
      await op.remove(dir, name);
      const now = nowNs();
      dir.nlink -= 1;
      dir.mtime = dir.ctime = now;
      op.changed(dir);
      inode.nlink = 0;
      await this.freeInode(op, inode);
    });
  }

  async rename(parent: number, name: Uint8Array, newParent: number, newName: Uint8Array, flags: number): Promise<void> {
    if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0 || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) throw fsError('EINVAL', 'unsupported rename flags');
    checkName(name);
    checkName(newName);
    const pending = await this.mutate([parent, newParent], async (op) => {
      const from = await this.parentDir(op, parent);
      const to = await this.parentDir(op, newParent);
      const entry = await op.find(from, name);
      if (!entry) throw fsError('ENOENT', 'no such entry');
      const target = await op.find(to, newName);
      const moving = await op.inode(entry.ino);
      const now = nowNs();
      if (flags & RENAME_EXCHANGE) {
        if (!target) throw fsError('ENOENT', 'the target does not exist');
        if (target.ino === entry.ino) return undefined;
        const other = await op.inode(target.ino);
        if (parent !== newParent) {
          if (isDir(moving.mode) || isDir(other.mode)) await this.lockDirectoryMoves(op);
          if (isDir(moving.mode)) await this.refuseCycle(op, moving.ino, newParent);
          if (isDir(other.mode)) await this.refuseCycle(op, other.ino, parent);
        }
        await op.remove(from, name);
        await op.remove(to, newName);
        await op.insert(from, name, other.ino, other.mode);
        await op.insert(to, newName, moving.ino, moving.mode);
        if (parent !== newParent) {
          for (const [inode, dir, otherDir] of [[moving, to, from], [other, from, to]] as const) {
            if (!isDir(inode.mode)) continue;
            inode.parent = dir.ino;
            dir.nlink += 1;
            otherDir.nlink -= 1;
          }
        }
        moving.ctime = other.ctime = now;
        from.mtime = from.ctime = to.mtime = to.ctime = now;
        for (const inode of [moving, other, from, to]) op.changed(inode);
        return undefined;
      }
      if (target) {
        if (flags & RENAME_NOREPLACE) throw fsError('EEXIST', 'the target exists');
        if (target.ino === entry.ino) return undefined; // two names of one file: POSIX says do nothing
      }
      const replaced = target ? await op.inode(target.ino) : undefined;
      if (replaced) {
        if (isDir(moving.mode) && !isDir(replaced.mode)) throw fsError('ENOTDIR', 'cannot replace a non-directory with a directory');
        if (!isDir(moving.mode) && isDir(replaced.mode)) throw fsError('EISDIR', 'cannot replace a directory with a non-directory');
        if (isDir(replaced.mode) && replaced.entries > 0) throw fsError('ENOTEMPTY', 'the target directory is not empty');
      }
      if (isDir(moving.mode) && parent !== newParent) {
        await this.lockDirectoryMoves(op);
        await this.refuseCycle(op, moving.ino, newParent);
      }
      await op.remove(from, name);
      let pendingIno: number | undefined;
      if (replaced) {
        await op.remove(to, newName);
        if (isDir(replaced.mode)) {
          to.nlink -= 1;
          replaced.nlink = 0;
          await this.freeInode(op, replaced);
        } else {
          pendingIno = await this.dropLink(op, replaced, now);
        }
      }
      await op.insert(to, newName, moving.ino, moving.mode);
      if (isDir(moving.mode) && parent !== newParent) {
        moving.parent = to.ino;
        from.nlink -= 1;
        to.nlink += 1;
      }
      moving.ctime = now;
      from.mtime = from.ctime = to.mtime = to.ctime = now;
      for (const inode of [moving, from, to]) op.changed(inode);
      return pendingIno;
    });
    if (pending) await this.reclaim(pending);
  }

  /** Moves of directories between parents take one lock so that two of them cannot build a cycle together. */
  private async lockDirectoryMoves(op: MetaOp): Promise<void> {
    const address = (this.superAddress + SUPER.renameLock) as GlobalAddress;
    const current = await op.tx.read(address, 8);
    const next = Buffer.alloc(8);
    next.writeBigUInt64LE(current.readBigUInt64LE(0) + 1n);
    await op.tx.write(address, next);
  }

  /** EINVAL when `dir` is `into` or one of its ancestors (a directory cannot move into itself). */
  private async refuseCycle(_op: MetaOp, dir: number, into: number): Promise<void> {
    let current = into;
    for (let depth = 0; depth < 65_536; depth++) {
      if (current === dir) throw fsError('EINVAL', 'cannot move a directory into itself');
      if (current === this.rootIno) return;
      // One-sided: parent pointers change only under the directory-move lock, which we hold.
      const inode = await this.stat(current);
      if (inode.parent === current) return;
      current = inode.parent;
    }
    throw fsError('ELOOP', 'directory tree too deep');
  }

  /** chmod, chown, truncate, utimens: one transaction. */
  async setattr(caller: Caller, ino: number, changes: {
    mode?: number; uid?: number; gid?: number; size?: number; atimeNs?: bigint | 'now'; mtimeNs?: bigint | 'now';
  }): Promise<Inode> {
    for (const time of [changes.atimeNs, changes.mtimeNs]) {
      if (typeof time === 'bigint' && (time < MIN_TIME_NS || time > MAX_TIME_NS)) throw fsError('EOVERFLOW', 'times are kept as signed 64-bit nanoseconds: 1677-09-21 to 2262-04-11');
    }
    if (changes.size !== undefined) {
      if (!Number.isSafeInteger(changes.size) || changes.size < 0) throw fsError('EINVAL', 'negative size');
      if (changes.size > FS_LIMITS.maxFileBytes) throw fsError('EFBIG', `files are at most ${FS_LIMITS.maxFileBytes} bytes`);
      await this.shrinkInSteps(ino, changes.size);
    }
    return this.mutate([ino], async (op) => {
      const inode = await op.inode(ino);
      const now = nowNs();
      if (changes.size !== undefined) {
        if (isDir(inode.mode)) throw fsError('EISDIR', 'is a directory');
        if (!isReg(inode.mode)) throw fsError('EINVAL', 'not a regular file');
        await this.resize(op, inode, changes.size);
        inode.mtime = now;
      }
      if (changes.mode !== undefined) {
        inode.mode = (inode.mode & S_IFMT) | (changes.mode & 0o7777);
      }
      if (changes.uid !== undefined || changes.gid !== undefined) {
        const uid = changes.uid ?? inode.uid;
        const gid = changes.gid ?? inode.gid;
        // chown by anyone clears set-user-ID; set-group-ID too when group-executable (Linux).
        if (!isDir(inode.mode) && (uid !== inode.uid || gid !== inode.gid || caller.uid !== 0)) {
          if (changes.mode === undefined) inode.mode &= ~(S_ISUID | ((inode.mode & S_IXGRP) ? S_ISGID : 0));
        }
        inode.uid = uid;
        inode.gid = gid;
      }
      if (changes.atimeNs !== undefined) inode.atime = changes.atimeNs === 'now' ? now : changes.atimeNs;
      if (changes.mtimeNs !== undefined) inode.mtime = changes.mtimeNs === 'now' ? now : changes.mtimeNs;
      inode.ctime = now;
      op.changed(inode);
      return inode;
    });
  }

  /** A truncate that frees more than one transaction can: free from the end in atomic steps first. */
  private async shrinkInSteps(ino: number, size: number): Promise<void> {
    for (;;) {
      const more = await this.mutate([ino], async (op) => {
        const inode = await op.inode(ino);
        if (!isReg(inode.mode) || size >= inode.size) return false;
        const from = Math.ceil(size / BLOCK);
        const { blocks, complete } = await op.blocksFrom(inode, from, FREE_BATCH);
        if (complete) return false;
        for (const { index, ref } of blocks) {
          await op.free(ref.address);
          await op.setBlock(inode, index, undefined);
          inode.blocks -= ref.capacity;
        }
        const lowest = blocks[blocks.length - 1].index;
        inode.size = Math.max(size, lowest * BLOCK);
        await op.pruneMap(inode, lowest);
        inode.mtime = inode.ctime = nowNs();
        op.changed(inode);
        return true;
      });
      if (!more) return;
    }
  }

  /** Set a held file's size: free blocks past the end, or make the new range read as zeros. */
  private async resize(op: MetaOp, inode: Inode, size: number): Promise<void> {
    if (size < inode.size) {
      const from = Math.ceil(size / BLOCK);
      const { blocks } = await op.blocksFrom(inode, from, Number.MAX_SAFE_INTEGER);
      for (const { index, ref } of blocks) {
        await op.free(ref.address);
        await op.setBlock(inode, index, undefined);
        inode.blocks -= ref.capacity;
      }
      if (blocks.length > 0) await op.pruneMap(inode, from);
    } else if (size > inode.size) {
      await this.zeroTail(op, inode, size);
    }
    inode.size = size;
    op.changed(inode);
  }

  /** Bytes past the end of a file's last block are undefined; before the size grows over them, zero them. */
  private async zeroTail(op: MetaOp, inode: Inode, newSize: number): Promise<void> {
    if (inode.size % BLOCK === 0) return;
    const index = Math.floor(inode.size / BLOCK);
    const ref = await op.block(inode, index);
    if (!ref) return;
    const from = inode.size - index * BLOCK;
    const to = Math.min(ref.capacity, newSize - index * BLOCK);
    if (to > from) await this.client.writePersist((ref.address + from) as GlobalAddress, Buffer.alloc(to - from));
  }

  // ---- open files and data ----

  opened(ino: number): void {
    this.opens.set(ino, (this.opens.get(ino) ?? 0) + 1);
  }

  async released(ino: number): Promise<void> {
    const count = (this.opens.get(ino) ?? 1) - 1;
    if (count > 0) {
      this.opens.set(ino, count);
      return;
    }
    this.opens.delete(ino);
    let inode: Inode;
    try {
      inode = await this.stat(ino);
    } catch {
      return;
    }
    if (inode.nlink === 0) await this.reclaim(ino);
  }

  /** Write `data` at `offset` (or at the end: `append`); durable when it returns. Returns the bytes written. */
  async write(caller: Caller, ino: number, data: Buffer, offset: number, append: boolean): Promise<number> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw fsError('EINVAL', 'negative offset');
    return this.mutate([ino], async (op) => {
      const inode = await op.inode(ino);
      if (isDir(inode.mode)) throw fsError('EISDIR', 'is a directory');
      if (!isReg(inode.mode)) throw fsError('EINVAL', 'not a regular file');
      const start = append ? inode.size : offset;
      const end = start + data.length;
      if (end > FS_LIMITS.maxFileBytes) throw fsError('EFBIG', `files are at most ${FS_LIMITS.maxFileBytes} bytes`);
      if (data.length === 0) return 0;
      if (start > inode.size) await this.zeroTail(op, inode, start);
      const home = nodeOf(inode.address);
      const nodes = this.client.nodeIds;
      const writes: Array<Promise<void>> = [];
      for (let index = Math.floor(start / BLOCK); index * BLOCK < end; index++) {
        const base = index * BLOCK;
        const s = Math.max(start, base) - base;
        const e = Math.min(end, base + BLOCK) - base;
        const piece = data.subarray(base + s - start, base + e - start);
        const ref = await op.block(inode, index);
        if (ref && ref.capacity >= e) {
          writes.push(this.client.writePersist((ref.address + s) as GlobalAddress, piece));
          continue;
        }
        // (Re)allocate: a bigger home for this block, holding the old bytes, zeros, and the new ones.
        const fileEnd = Math.max(inode.size, end);
        const capacity = index > 0 || fileEnd > BLOCK ? BLOCK : capacityFor(e);
        const node = nodes[(nodes.indexOf(home) + index) % nodes.length];
        const address = await op.tx.alloc(capacity, node);
        // Bytes [0, live) of the new object must be defined: the old bytes (those the write does not
        // cover), the new ones, and zeros in the gaps. A streaming append needs only the new bytes.
        const live = Math.min(capacity, Math.max(e, Math.min(BLOCK, inode.size - base)));
        const oldLive = Math.min(ref?.capacity ?? 0, Math.max(0, inode.size - base));
        const copyOld = async (from: number, to: number): Promise<void> => {
          await this.client.writePersist((address + from) as GlobalAddress, await this.client.read((ref!.address + from) as GlobalAddress, to - from));
        };
        if (ref && Math.min(oldLive, s) > 0) writes.push(copyOld(0, Math.min(oldLive, s)));
        if (ref && oldLive > e) writes.push(copyOld(e, oldLive));
        if (s > oldLive) writes.push(this.client.writePersist((address + oldLive) as GlobalAddress, Buffer.alloc(s - oldLive)));
        if (live > Math.max(e, oldLive)) writes.push(this.client.writePersist((address + Math.max(e, oldLive)) as GlobalAddress, Buffer.alloc(live - Math.max(e, oldLive))));
        writes.push(this.client.writePersist((address + s) as GlobalAddress, piece));
        if (ref) {
          await op.free(ref.address);
          inode.blocks -= ref.capacity;
        }
        await op.setBlock(inode, index, { address, capacity });
        inode.blocks += capacity;
      }
      await Promise.all(writes);
      const now = nowNs();
      inode.size = Math.max(inode.size, end);
      inode.mtime = inode.ctime = now;
      // A write by anyone but root clears set-user-ID, and set-group-ID on group-executable files.
      if (caller.uid !== 0 && (inode.mode & (S_ISUID | S_ISGID))) inode.mode &= ~(S_ISUID | ((inode.mode & S_IXGRP) ? S_ISGID : 0));
      op.changed(inode);
      return data.length;
    });
  }

  /** relatime (read, readlink, readdir use it with the inode they already hold): a read updates atime when it is older than mtime or ctime, or a day old. */
  async touchAtime(inode: Inode): Promise<void> {
    const now = nowNs();
    if (inode.atime > inode.mtime && inode.atime > inode.ctime && now - inode.atime < 86_400n * 1_000_000_000n) return;
    await this.mutate([inode.ino], async (op) => {
      const held = await op.inode(inode.ino);
      held.atime = now;
      op.changed(held);
    });
  }

  /** Every write is durable when it returns; fsync waits for this mount's operations on the inode. */
  async fsync(ino: number): Promise<void> {
    await this.locks.hold([ino], async () => undefined);
  }

  // ---- extended attributes ----

  async setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    checkXattrName(name);
    if (value.length > FS_LIMITS.xattrValueBytes) throw fsError('E2BIG', `an attribute value is at most ${FS_LIMITS.xattrValueBytes} bytes`);
    await this.changeXattrs(ino, (values) => {
      if ((flags & XATTR_CREATE) && values.has(name)) throw fsError('EEXIST', 'the attribute exists');
      if ((flags & XATTR_REPLACE) && !values.has(name)) throw fsError('ENODATA', 'no such attribute');
      values.set(name, Buffer.from(value));
    });
  }

  async removexattr(ino: number, name: string): Promise<void> {
    checkXattrName(name);
    await this.changeXattrs(ino, (values) => {
      if (!values.delete(name)) throw fsError('ENODATA', 'no such attribute');
    });
  }

  private async changeXattrs(ino: number, change: (values: Map<string, Buffer>) => void): Promise<void> {
    await this.mutate([ino], async (op) => {
      const inode = await op.inode(ino);
      const values = await this.xattrs(inode);
      change(values);
      let total = 0;
      for (const [key, value] of values) total += key.length + value.length + 5;
      if (total > FS_LIMITS.xattrTotalBytes) throw fsError('ENOSPC', `extended attributes of one file are at most ${FS_LIMITS.xattrTotalBytes} bytes`);
      if (inode.xattr !== 0) await op.free(inode.xattr, true);
      inode.xattr = 0 as GlobalAddress;
      if (values.size > 0) {
        const bytes = encodeXattrs(values, inode.generation);
        inode.xattr = await op.tx.alloc(bytes.length, nodeOf(inode.address));
        await this.client.writePersist(inode.xattr, bytes);
      }
      inode.ctime = nowNs();
      op.changed(inode);
    });
  }
}

function checkXattrName(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > FS_LIMITS.xattrNameBytes) throw fsError('ERANGE', 'attribute name length out of range');
  if (!/^(user|trusted|security)\./.test(name)) throw fsError('ENOTSUP', `attribute namespace of ${name} is not supported`);
}

function newInode(address: GlobalAddress, generation: number, mode: number, caller: Caller, now: bigint): Inode {
  return {
    ino: inoOf(address, generation), address, generation, mode, nlink: 1, uid: caller.uid, gid: caller.gid, size: 0,
    atime: now, mtime: now, ctime: now, btime: now, rdev: 0, height: 0, data: 0 as GlobalAddress, parent: 0,
    xattr: 0 as GlobalAddress, blocks: 0, entries: 0, capacity: 0, inline: Buffer.alloc(0),
  };
}
