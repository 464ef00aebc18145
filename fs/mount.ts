// pDFS served over FUSE: the low-level operations of native/fuse.ts mapped onto FileSystem, and the
// life of a mount (connect, open or make the file system, finish half-done deletions, serve, unmount).
//
// Consistency between mounts (docs/ARCHITECTURE.md, "pDFS: several mounts"): every operation reads
// and writes pDSM directly, so a change is visible to every mount as soon as it returns; the kernel
// of each machine caches names and attributes for ENTRY_TIMEOUT_S / ATTR_TIMEOUT_S, and file pages
// until the next open (no keep_cache): close-to-open for data, at most one second of staleness for
// names and attributes.

import { constants, promises as fsp } from 'node:fs';
import { mountFuse, type FuseAttr, type FuseContext, type FuseDirEntry, type FuseEntry, type FuseOperations, type FuseSession } from '../native';
import { OperationMetrics, type ClusterClient, type Registry } from '../pdsm';
import { errnoName, errnoOf, fsError } from './errno';
import { FS_LIMITS, type Inode } from './format';
import { FileSystem, type Caller } from './fs';
import { isDir, isReg } from './op';

export const ENTRY_TIMEOUT_S = 1;
export const ATTR_TIMEOUT_S = 1;
const FUSE_ROOT_ID = 1;
const O_ACCMODE = 3;
// O_APPEND handles use direct I/O: through the page cache the kernel cuts an append at page
// boundaries computed from its cached size, and another mount's append could land between the pieces.
const O_APPEND = constants.O_APPEND;
const O_DIRECTORY = constants.O_DIRECTORY;
const S_IFMT = 0o170000;
/** readdir replies carry at most this many entries per call (the binding packs what fits). */
const READDIR_SLICE = 512;
/** Open handles of one mount, at most (each is a small record; the kernel has its own limits). */
const MAX_HANDLES = 1 << 20;
const READAHEAD_KB = 1024;

interface FileHandle { readonly ino: number; readonly flags: number }
interface DirHandle { readonly ino: number; entries?: FuseDirEntry[] }

export interface MountOptions {
  /** Extra -o options for libfuse (after ours). */
  readonly fuseOptions?: readonly string[];
  readonly allowOther?: boolean;
  /** Count and time every FUSE operation into this registry (dpms_mount_*). */
  readonly metrics?: Registry;
}

/** The FUSE operations, the label values of dpms_mount_operations_total. */
const FUSE_OPS: readonly (keyof FuseOperations)[] = [
  'lookup', 'getattr', 'setattr', 'readlink', 'mknod', 'mkdir', 'unlink', 'rmdir', 'symlink', 'rename', 'link', 'open', 'read', 'write',
  'flush', 'release', 'fsync', 'opendir', 'readdir', 'releasedir', 'fsyncdir', 'statfs', 'setxattr', 'getxattr', 'listxattr',
  'removexattr', 'access', 'create',
];

/** The FUSE operations of one mount of `fs`. */
export function fuseOperations(fs: FileSystem): FuseOperations {
  const files = new Map<number, FileHandle>();
  const dirs = new Map<number, DirHandle>();
  let nextHandle = 1;
  const toIno = (fuseIno: number): number => (fuseIno === FUSE_ROOT_ID ? fs.rootIno : fuseIno);
  const toFuse = (ino: number): number => (ino === fs.rootIno ? FUSE_ROOT_ID : ino);
  const caller = (ctx: FuseContext): Caller => ({ uid: ctx.uid, gid: ctx.gid });
  const attr = (inode: Inode): FuseAttr => ({
    ino: toFuse(inode.ino), mode: inode.mode, nlink: inode.nlink, uid: inode.uid, gid: inode.gid, rdev: inode.rdev,
    size: isDir(inode.mode) ? 4096 + inode.entries * 32 : inode.size, blocks: Math.ceil(inode.blocks / 512),
    atimeNs: inode.atime, mtimeNs: inode.mtime, ctimeNs: inode.ctime,
  });
  const entry = (inode: Inode): FuseEntry => ({ attr: attr(inode), generation: inode.generation });
  const handle = (): number => {
    if (files.size + dirs.size >= MAX_HANDLES) throw fsError('ENFILE', 'too many open files in this mount');
    return nextHandle++;
  };
  const file = (fh: number): FileHandle => {
    const found = files.get(fh);
    if (!found) throw fsError('EBADF', `no open file ${fh}`);
    return found;
  };
  const openFile = (ino: number, flags: number): number => {
    const fh = handle();
    files.set(fh, { ino, flags });
    fs.opened(ino);
    return fh;
  };

  return {
    async lookup(_ctx, parent, name) {
      return entry(await fs.lookup(toIno(parent), name));
    },
    async getattr(_ctx, ino) {
      return attr(await fs.stat(toIno(ino)));
    },
    async setattr(ctx, ino, changes) {
      return attr(await fs.setattr(caller(ctx), toIno(ino), changes));
    },
    async readlink(_ctx, ino) {
      return fs.readlink(toIno(ino));
    },
    async mknod(ctx, parent, name, mode, rdev) {
      return entry(await fs.mknod(caller(ctx), toIno(parent), name, mode, rdev));
    },
    async mkdir(ctx, parent, name, mode) {
      return entry(await fs.mkdir(caller(ctx), toIno(parent), name, mode));
    },
    async unlink(_ctx, parent, name) {
      await fs.unlink(toIno(parent), name);
    },
    async rmdir(_ctx, parent, name) {
      await fs.rmdir(toIno(parent), name);
    },
    async symlink(ctx, target, parent, name) {
      return entry(await fs.symlink(caller(ctx), target, toIno(parent), name));
    },
    async rename(_ctx, parent, name, newParent, newName, flags) {
      await fs.rename(toIno(parent), name, toIno(newParent), newName, flags);
    },
    async link(_ctx, ino, newParent, newName) {
      return entry(await fs.link(toIno(ino), toIno(newParent), newName));
    },
    async open(_ctx, fuseIno, flags) {
      const ino = toIno(fuseIno);
      const inode = await fs.stat(ino);
      if (isDir(inode.mode)) throw fsError('EISDIR', 'is a directory');
      if (flags & O_DIRECTORY) throw fsError('ENOTDIR', 'not a directory');
      return { fh: openFile(ino, flags), directIo: (flags & O_APPEND) !== 0 };
    },
    async read(_ctx, fuseIno, fh, size, offset) {
      const ino = toIno(fuseIno);
      if ((file(fh).flags & O_ACCMODE) === constants.O_WRONLY) throw fsError('EBADF', 'not open for reading');
      return fs.read(ino, offset, size);
    },
    async write(ctx, fuseIno, fh, data, offset) {
      const handle = file(fh);
      if ((handle.flags & O_ACCMODE) === constants.O_RDONLY) throw fsError('EBADF', 'not open for writing');
      return fs.write(caller(ctx), toIno(fuseIno), data, offset, (handle.flags & O_APPEND) !== 0);
    },
    async flush(_ctx, ino) {
      await fs.fsync(toIno(ino));
    },
    async release(_ctx, ino, fh) {
      if (!files.delete(fh)) return;
      await fs.released(toIno(ino));
    },
    async fsync(_ctx, ino) {
      await fs.fsync(toIno(ino));
    },
    async opendir(_ctx, fuseIno) {
      const ino = toIno(fuseIno);
      const inode = await fs.stat(ino);
      if (!isDir(inode.mode)) throw fsError('ENOTDIR', 'not a directory');
      const fh = handle();
      dirs.set(fh, { ino });
      return { fh };
    },
    async readdir(_ctx, fuseIno, fh, offset) {
      const dir = dirs.get(fh);
      if (!dir) throw fsError('EBADF', `no open directory ${fh}`);
      if (offset === 0 || !dir.entries) {
        // A listing is taken when reading starts (or restarts: rewinddir), so offsets stay stable.
        const ino = toIno(fuseIno);
        const inode = await fs.stat(ino);
        const listed = await fs.readdir(ino);
        const all: FuseDirEntry[] = [
          { name: Buffer.from('.'), ino: fuseIno, mode: inode.mode & S_IFMT, nextOffset: 1 },
          { name: Buffer.from('..'), ino: toFuse(inode.parent || ino), mode: 0o040000, nextOffset: 2 },
        ];
        for (const item of listed) all.push({ name: item.name, ino: toFuse(item.ino), mode: item.type << 12, nextOffset: all.length + 1 });
        dir.entries = all;
        await fs.touchAtime(inode);
      }
      return dir.entries.slice(offset, offset + READDIR_SLICE);
    },
    async releasedir(_ctx, _ino, fh) {
      dirs.delete(fh);
    },
    async fsyncdir(_ctx, ino) {
      await fs.fsync(toIno(ino));
    },
    async statfs() {
      const info = await fs.statfs();
      const bsize = 4096;
      return {
        bsize, frsize: bsize, blocks: Math.floor(info.totalBytes / bsize), bfree: Math.floor(info.freeBytes / bsize),
        bavail: Math.floor(info.freeBytes / bsize), files: info.files, ffree: info.freeFiles, favail: info.freeFiles,
        namemax: FS_LIMITS.nameBytes,
      };
    },
    async setxattr(_ctx, ino, name, value, flags) {
      await fs.setxattr(toIno(ino), name, value, flags);
    },
    async getxattr(_ctx, ino, name) {
      return fs.getxattr(toIno(ino), name);
    },
    async listxattr(ctx, ino) {
      // trusted.* names are for CAP_SYS_ADMIN only; the kernel leaves hiding them to the file system.
      const names = await fs.listxattr(toIno(ino));
      return ctx.uid === 0 ? names : names.filter((name) => !name.startsWith('trusted.'));
    },
    async removexattr(_ctx, ino, name) {
      await fs.removexattr(toIno(ino), name);
    },
    async access(ctx, ino, mask) {
      const inode = await fs.stat(toIno(ino));
      if (mask === 0 || ctx.uid === 0 && ((mask & 1) === 0 || (inode.mode & 0o111) !== 0 || isDir(inode.mode))) return;
      const bits = ctx.uid === inode.uid ? (inode.mode >> 6) & 7 : ctx.gid === inode.gid ? (inode.mode >> 3) & 7 : inode.mode & 7;
      if (ctx.uid !== 0 && (bits & mask) !== mask) throw fsError('EACCES', 'permission denied');
    },
    async create(ctx, parent, name, mode, flags) {
      const inode = await fs.mknod(caller(ctx), toIno(parent), name, mode, 0);
      if (!isReg(inode.mode)) throw fsError('EINVAL', 'create makes regular files');
      return { entry: entry(inode), open: { fh: openFile(inode.ino, flags), directIo: (flags & O_APPEND) !== 0 } };
    },
  };
}

/**
 * The same operations, each observed (count, latency, bytes read and written, errors by errno name):
 * wrapped here, at the one table the binding dispatches to, instead of in every handler.
 */
export function observedOperations(operations: FuseOperations, metrics: OperationMetrics): FuseOperations {
  const observed: Record<string, unknown> = { ...operations };
  for (const name of FUSE_OPS) {
    const handler = operations[name] as unknown as ((...args: unknown[]) => Promise<unknown>) | undefined;
    if (typeof handler !== 'function') continue;
    observed[name] = async (...args: unknown[]): Promise<unknown> => {
      const startedNs = OperationMetrics.now();
      try {
        const result = await handler.apply(operations, args);
        metrics.observeSince(name, startedNs, name === 'read' ? { bytesOut: (result as Buffer).length } : name === 'write' ? { bytesIn: result as number } : undefined);
        return result;
      } catch (error) {
        metrics.observeSince(name, startedNs, { error: errnoName(error) });
        throw error;
      }
    };
  }
  return observed as unknown as FuseOperations;
}

export interface Mounted {
  readonly fs: FileSystem;
  readonly session: FuseSession;
  /** Unmount and close the cluster connection. */
  close(): Promise<void>;
}

/**
 * The kernel reads ahead 128 KiB on a FUSE mount; sequential reads go 30-40% faster with 1 MiB (one
 * block). Best effort: /sys may be read-only (then the default stays).
 */
async function raiseReadahead(mountpoint: string): Promise<void> {
  try {
    const { dev } = await fsp.stat(mountpoint);
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | ((Math.floor(dev / 4096)) & 0xfff00);
    await fsp.writeFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, `${READAHEAD_KB}\n`);
  } catch {
    // not root, or no sysfs: keep the kernel's default
  }
}

/** Serve the cluster's file system (made on first use) at `mountpoint`, in this process. */
export async function mountFileSystem(client: ClusterClient, mountpoint: string, options: MountOptions = {}): Promise<Mounted> {
  const fs = await FileSystem.open(client, { create: true });
  await fs.recoverOrphans();
  // auto_unmount: a mount process killed -9 leaves no dead mount behind (fusermount3 detaches it).
  const fuseOptions = ['fsname=dpms', 'subtype=dpms', 'default_permissions', 'auto_unmount', ...(options.allowOther === false ? [] : ['allow_other']), ...(options.fuseOptions ?? [])];
  const operations = options.metrics ? observedOperations(fuseOperations(fs), new OperationMetrics(options.metrics, 'mount', { ops: FUSE_OPS })) : fuseOperations(fs);
  const session = await mountFuse(mountpoint, operations, {
    options: fuseOptions, entryTimeoutS: ENTRY_TIMEOUT_S, attrTimeoutS: ATTR_TIMEOUT_S, errnoOf,
  });
  await raiseReadahead(mountpoint);
  let closing: Promise<void> | undefined;
  return {
    fs,
    session,
    close: () => {
      closing ??= (async () => {
        await session.unmount();
        await fs.close();
      })();
      return closing;
    },
  };
}
