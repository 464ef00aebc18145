// The typed face of the libfuse3 low-level binding (native/src/fuse.cc, fuse_loop.cc): mountFuse serves
// a FUSE mount from JavaScript. Requests are inode-based; each handler gets the caller's context (uid,
// gid, pid, umask), timestamps are signed nanoseconds, readdir pages by offsets. Every request is
// answered exactly once: the handler's value, or the errno that `errnoOf` gives for what it threw
// (EIO when errnoOf fails or gives no valid errno, or when the value is malformed), or ENOSYS when the
// handler is missing. An exception never escapes into the event loop, where it would kill the process
// under a live mount. Inode numbers are JS numbers (< 2^53); FUSE_ROOT_ID = 1 is the root directory.
// Names and symlink targets are Buffers (file names are bytes, not necessarily UTF-8).
//
// What the kernel sends, as set up in init (fuse_loop.cc): no writeback cache (a write reaches `write`
// before write(2) returns); writes of up to 1 MiB (max_write; the kernel may cap it lower); reads may
// come in parallel (async_read). open(O_TRUNC) arrives as setattr({ size: 0 }) before open, and the
// kernel clears suid/sgid itself through setattr({ mode }) (no atomic_o_trunc, no handle_killpriv).
// setattr's `mode` holds the permission bits (07777) only. With default_permissions the kernel checks
// permissions itself and never sends `access`. Handlers left out of `operations` get libfuse's
// defaults: open/opendir succeed with fh 0, release/releasedir succeed, forget is dropped, statfs
// reports an empty file system; the others answer ENOSYS (which the kernel remembers for flush, fsync,
// access, the xattr calls and create).
//
// Lifetime: the mount keeps the event loop alive until it ends. It ends by unmount(), by an external
// `fusermount3 -u` (closed resolves), or at process exit (an 'exit' listener unmounts every live mount,
// also after an uncaught exception). A lazy external unmount (-z) with files still open ends the
// session only when the last of them is closed. Requests still pending when the session ends are
// dropped (their callers got ENOTCONN/ECONNABORTED from the kernel); a handler's late answer is ignored.

import os from 'node:os';
import path from 'node:path';

import { rawAddon } from './addon';

export interface FuseContext { readonly uid: number; readonly gid: number; readonly pid: number; readonly umask: number }

export interface FuseAttr {
  readonly ino: number; readonly mode: number; readonly nlink: number; readonly uid: number; readonly gid: number;
  readonly rdev: number; readonly size: number; readonly blocks: number; // 512-B units
  readonly atimeNs: bigint; readonly mtimeNs: bigint; readonly ctimeNs: bigint; // ns since the epoch (signed)
}

export interface FuseEntry { readonly attr: FuseAttr; readonly generation: number }

export interface FuseSetattr {
  readonly mode?: number; readonly uid?: number; readonly gid?: number; readonly size?: number;
  readonly atimeNs?: bigint | 'now'; readonly mtimeNs?: bigint | 'now';
  readonly fh?: number; // set when the kernel sent a file handle (ftruncate, futimens)
}

export interface FuseOpenReply { readonly fh: number; readonly directIo?: boolean; readonly keepCache?: boolean; readonly nonseekable?: boolean }

export interface FuseDirEntry { readonly name: Buffer; readonly ino: number; readonly mode: number /* type bits suffice */; readonly nextOffset: number }

export interface FuseStatfs {
  readonly bsize: number; readonly frsize: number; readonly blocks: number; readonly bfree: number; readonly bavail: number;
  readonly files: number; readonly ffree: number; readonly favail: number; readonly namemax: number;
}

/** Every method may throw or reject; the error is turned into an errno by `errnoOf` (mountFuse option). */
export interface FuseOperations {
  init?(): void;
  lookup(ctx: FuseContext, parent: number, name: Buffer): Promise<FuseEntry>;
  forget?(ino: number, nlookup: number): void;                         // no reply needed
  getattr(ctx: FuseContext, ino: number, fh: number | undefined): Promise<FuseAttr>;
  setattr(ctx: FuseContext, ino: number, changes: FuseSetattr): Promise<FuseAttr>;
  readlink(ctx: FuseContext, ino: number): Promise<Buffer>;
  mknod(ctx: FuseContext, parent: number, name: Buffer, mode: number, rdev: number): Promise<FuseEntry>;
  mkdir(ctx: FuseContext, parent: number, name: Buffer, mode: number): Promise<FuseEntry>;
  unlink(ctx: FuseContext, parent: number, name: Buffer): Promise<void>;
  rmdir(ctx: FuseContext, parent: number, name: Buffer): Promise<void>;
  symlink(ctx: FuseContext, target: Buffer, parent: number, name: Buffer): Promise<FuseEntry>;
  rename(ctx: FuseContext, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void>;
  link(ctx: FuseContext, ino: number, newParent: number, newName: Buffer): Promise<FuseEntry>;
  open(ctx: FuseContext, ino: number, flags: number): Promise<FuseOpenReply>;
  read(ctx: FuseContext, ino: number, fh: number, size: number, offset: number): Promise<Buffer>;   // shorter = EOF
  write(ctx: FuseContext, ino: number, fh: number, data: Buffer, offset: number, flags: number): Promise<number>;
  flush(ctx: FuseContext, ino: number, fh: number): Promise<void>;
  release(ctx: FuseContext, ino: number, fh: number, flags: number): Promise<void>;
  fsync(ctx: FuseContext, ino: number, fh: number, datasync: boolean): Promise<void>;
  opendir(ctx: FuseContext, ino: number, flags: number): Promise<FuseOpenReply>;
  /** Entries from `offset` (0 = start; then an entry's nextOffset). Return as many as convenient (the binding packs what fits in the kernel's buffer and the kernel asks again from the last packed entry's nextOffset); [] = end. */
  readdir(ctx: FuseContext, ino: number, fh: number, offset: number): Promise<FuseDirEntry[]>;
  releasedir(ctx: FuseContext, ino: number, fh: number): Promise<void>;
  fsyncdir(ctx: FuseContext, ino: number, fh: number, datasync: boolean): Promise<void>;
  statfs(ctx: FuseContext, ino: number): Promise<FuseStatfs>;
  setxattr(ctx: FuseContext, ino: number, name: string, value: Buffer, flags: number): Promise<void>;
  /** size 0 = the caller asks for the length only (reply with the value anyway; the binding replies fuse_reply_xattr(len)); a value longer than size → the binding replies ERANGE. */
  getxattr(ctx: FuseContext, ino: number, name: string, size: number): Promise<Buffer>;
  /** NUL-separated list semantics handled by the binding: return the names. */
  listxattr(ctx: FuseContext, ino: number, size: number): Promise<string[]>;
  removexattr(ctx: FuseContext, ino: number, name: string): Promise<void>;
  access(ctx: FuseContext, ino: number, mask: number): Promise<void>;
  create(ctx: FuseContext, parent: number, name: Buffer, mode: number, flags: number): Promise<{ entry: FuseEntry; open: FuseOpenReply }>;
}

export interface FuseMountOptions {
  /** -o options passed to libfuse (fsname, subtype, default_permissions, allow_other, max_write, ...). */
  readonly options: readonly string[];
  /** Seconds the kernel may cache names and attributes (entry_timeout / attr_timeout of each reply). */
  readonly entryTimeoutS: number;
  readonly attrTimeoutS: number;
  /** Map any thrown value to a positive errno (the one errno table lives in fs/errno.ts). */
  readonly errnoOf: (error: unknown) => number;
}

export interface FuseSession {
  readonly mountpoint: string;
  /** Resolves when the kernel connection ends (fusermount -u, or unmount()). */
  readonly closed: Promise<void>;
  /** Unmount (fuse_session_exit + fuse_session_unmount), wait for the loop thread, destroy the session. Idempotent. */
  unmount(): Promise<void>;
}

// ---- The binding ----

/** Operation numbers shared with native/src/fuse_loop.h (fuse::Op): keep both lists in step. */
const Op = {
  init: 0, lookup: 1, forget: 2, getattr: 3, setattr: 4, readlink: 5, mknod: 6, mkdir: 7, unlink: 8, rmdir: 9,
  symlink: 10, rename: 11, link: 12, open: 13, read: 14, write: 15, flush: 16, release: 17, fsync: 18,
  opendir: 19, readdir: 20, releasedir: 21, fsyncdir: 22, statfs: 23, setxattr: 24, getxattr: 25,
  listxattr: 26, removexattr: 27, access: 28, create: 29, end: 30,
} as const;

type RequestOp = Exclude<keyof typeof Op, 'init' | 'forget' | 'end'>;

/** The session handle made by the addon's fuseMount (fuse.cc, FuseHandle). Each reply returns false when the request is no longer pending. */
interface NativeFuseSession {
  replyErr(id: number, errno: number): boolean;
  replyOk(id: number): boolean;
  replyEntry(id: number, entry: FuseEntry): boolean;
  replyCreate(id: number, entry: FuseEntry, open: FuseOpenReply): boolean;
  replyAttr(id: number, attr: FuseAttr): boolean;
  replyOpen(id: number, open: FuseOpenReply): boolean;
  replyWrite(id: number, count: number): boolean;
  replyBuf(id: number, data: Uint8Array): boolean;
  replyXattr(id: number, value: Uint8Array): boolean;
  replyNames(id: number, names: readonly string[]): boolean;
  replyReaddir(id: number, entries: readonly FuseDirEntry[]): boolean;
  replyStatfs(id: number, statfs: FuseStatfs): boolean;
  /** Ask the loop thread to end; the END event follows. */
  unmount(): void;
  /** End everything now (process exit); no END event follows. */
  unmountSync(): void;
}

/** Called by the addon with (op, id, uid, gid, pid, umask, ...the op's arguments, see fuse.cc AppendArguments). */
type Dispatch = (op: number, id: number, uid: number, gid: number, pid: number, umask: number,
  a?: unknown, b?: unknown, c?: unknown, d?: unknown, e?: unknown) => void;

interface FuseAddon {
  fuseMount(mountpoint: string, options: readonly string[],
    config: { readonly entryTimeoutS: number; readonly attrTimeoutS: number; readonly implemented: number },
    dispatch: Dispatch): NativeFuseSession;
}

const { ENOSYS, EIO } = os.constants.errno;
const MAX_ERRNO = 511; // the kernel rejects a reply whose error is -512 or lower

// One 'exit' listener for every live mount: a process that exits (process.exit, an uncaught exception,
// the end of the event loop) unmounts instead of leaving a dead mount behind.
const liveSessions = new Set<NativeFuseSession>();
let exitHookInstalled = false;

function unmountAllAtExit(): void {
  for (const session of liveSessions) {
    try {
      session.unmountSync();
    } catch {
      // Nothing more can be done at exit.
    }
  }
  liveSessions.clear();
}

const warnedOps = new Set<string>();

/** Turns dispatched requests into handler calls and handler results into exactly one reply each. */
class RequestServer {
  constructor(
    private readonly native: NativeFuseSession,
    private readonly operations: FuseOperations,
    private readonly errnoOf: (error: unknown) => number,
  ) {}

  request(op: number, id: number, ctx: FuseContext, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown): void {
    const ops = this.operations;
    const native = this.native;
    const n = (value: unknown) => value as number;
    const buffer = (value: unknown) => value as Buffer;
    const ok = () => native.replyOk(id);
    switch (op) {
      case Op.lookup: return this.serve(id, 'lookup', () => ops.lookup(ctx, n(a), buffer(b)), (entry) => native.replyEntry(id, entry));
      case Op.getattr: return this.serve(id, 'getattr', () => ops.getattr(ctx, n(a), b as number | undefined), (attr) => native.replyAttr(id, attr));
      case Op.setattr: return this.serve(id, 'setattr', () => ops.setattr(ctx, n(a), b as FuseSetattr), (attr) => native.replyAttr(id, attr));
      case Op.readlink: return this.serve(id, 'readlink', () => ops.readlink(ctx, n(a)), (target) => native.replyBuf(id, target));
      case Op.mknod: return this.serve(id, 'mknod', () => ops.mknod(ctx, n(a), buffer(b), n(c), n(d)), (entry) => native.replyEntry(id, entry));
      case Op.mkdir: return this.serve(id, 'mkdir', () => ops.mkdir(ctx, n(a), buffer(b), n(c)), (entry) => native.replyEntry(id, entry));
      case Op.unlink: return this.serve(id, 'unlink', () => ops.unlink(ctx, n(a), buffer(b)), ok);
      case Op.rmdir: return this.serve(id, 'rmdir', () => ops.rmdir(ctx, n(a), buffer(b)), ok);
      case Op.symlink: return this.serve(id, 'symlink', () => ops.symlink(ctx, buffer(a), n(b), buffer(c)), (entry) => native.replyEntry(id, entry));
      case Op.rename: return this.serve(id, 'rename', () => ops.rename(ctx, n(a), buffer(b), n(c), buffer(d), n(e)), ok);
      case Op.link: return this.serve(id, 'link', () => ops.link(ctx, n(a), n(b), buffer(c)), (entry) => native.replyEntry(id, entry));
      case Op.open: return this.serve(id, 'open', () => ops.open(ctx, n(a), n(b)), (open) => native.replyOpen(id, open));
      case Op.read: return this.serve(id, 'read', () => ops.read(ctx, n(a), n(b), n(c), n(d)), (data) => native.replyBuf(id, data));
      case Op.write: return this.serve(id, 'write', () => ops.write(ctx, n(a), n(b), buffer(c), n(d), n(e)), (count) => native.replyWrite(id, count));
      case Op.flush: return this.serve(id, 'flush', () => ops.flush(ctx, n(a), n(b)), ok);
      case Op.release: return this.serve(id, 'release', () => ops.release(ctx, n(a), n(b), n(c)), ok);
      case Op.fsync: return this.serve(id, 'fsync', () => ops.fsync(ctx, n(a), n(b), c as boolean), ok);
      case Op.opendir: return this.serve(id, 'opendir', () => ops.opendir(ctx, n(a), n(b)), (open) => native.replyOpen(id, open));
      case Op.readdir: return this.serve(id, 'readdir', () => ops.readdir(ctx, n(a), n(b), n(c)), (entries) => native.replyReaddir(id, entries));
      case Op.releasedir: return this.serve(id, 'releasedir', () => ops.releasedir(ctx, n(a), n(b)), ok);
      case Op.fsyncdir: return this.serve(id, 'fsyncdir', () => ops.fsyncdir(ctx, n(a), n(b), c as boolean), ok);
      case Op.statfs: return this.serve(id, 'statfs', () => ops.statfs(ctx, n(a)), (statfs) => native.replyStatfs(id, statfs));
      case Op.setxattr: return this.serve(id, 'setxattr', () => ops.setxattr(ctx, n(a), b as string, buffer(c), n(d)), ok);
      case Op.getxattr: return this.serve(id, 'getxattr', () => ops.getxattr(ctx, n(a), b as string, n(c)), (value) => native.replyXattr(id, value));
      case Op.listxattr: return this.serve(id, 'listxattr', () => ops.listxattr(ctx, n(a), n(b)), (names) => native.replyNames(id, names));
      case Op.removexattr: return this.serve(id, 'removexattr', () => ops.removexattr(ctx, n(a), b as string), ok);
      case Op.access: return this.serve(id, 'access', () => ops.access(ctx, n(a), n(b)), ok);
      case Op.create: return this.serve(id, 'create', () => ops.create(ctx, n(a), buffer(b), n(c), n(d)),
        (created) => native.replyCreate(id, created.entry, created.open));
      default: this.replyErrno(id, ENOSYS);
    }
  }

  init(): void {
    try {
      this.operations.init?.();
    } catch (error) {
      warn('init', error);
    }
  }

  forget(ino: number, nlookup: number): void {
    try {
      this.operations.forget?.(ino, nlookup);
    } catch (error) {
      warn('forget', error);
    }
  }

  // Call the handler and answer once: its value through `reply`, or an errno. A malformed value makes the
  // addon throw before answering, and the request is answered EIO instead.
  private serve<T>(id: number, name: RequestOp, call: () => Promise<T>, reply: (value: T) => boolean): void {
    if (typeof (this.operations as unknown as Record<string, unknown>)[name] !== 'function') {
      this.replyErrno(id, ENOSYS);
      return;
    }
    let result: Promise<T>;
    try {
      result = Promise.resolve(call());
    } catch (error) {
      this.fail(id, error);
      return;
    }
    result.then(
      (value) => {
        try {
          reply(value);
        } catch (error) {
          warn(name, error);
          this.replyErrno(id, EIO);
        }
      },
      (error: unknown) => this.fail(id, error),
    );
  }

  private fail(id: number, error: unknown): void {
    let errno = EIO;
    try {
      const mapped = this.errnoOf(error);
      if (Number.isInteger(mapped) && mapped >= 1 && mapped <= MAX_ERRNO) errno = mapped;
    } catch {
      // A failing errnoOf must not leave the caller hanging: EIO.
    }
    this.replyErrno(id, errno);
  }

  private replyErrno(id: number, errno: number): void {
    try {
      this.native.replyErr(id, errno);
    } catch {
      // Only a bad id or errno throws, and both are ours and valid.
    }
  }
}

/** A handler produced a value the binding cannot send (or init/forget threw): say so once per operation. */
function warn(name: string, error: unknown): void {
  if (warnedOps.has(name)) return;
  warnedOps.add(name);
  const message = error instanceof Error ? error.message : String(error);
  process.emitWarning(`FUSE ${name} handler: ${message} (answered EIO; further ones are not reported)`, { code: 'DPMS_FUSE_BAD_REPLY' });
}

function fuseAddon(): FuseAddon {
  const fuseMount = (rawAddon as Partial<FuseAddon>).fuseMount;
  if (typeof fuseMount !== 'function') {
    throw Object.assign(new Error('this build of the addon has no FUSE binding (rebuild with libfuse3-dev installed)'), { code: 'DPMS_UNSUPPORTED' });
  }
  return rawAddon as FuseAddon;
}

/**
 * Mount a file system served by `operations` on `mountpoint` (an existing directory). Resolves once the
 * kernel's INIT has been answered. Throws DPMS_INVALID_ARGUMENT (TypeError) for options libfuse refuses
 * and DPMS_IO when the mount itself fails, with libfuse's message.
 */
export async function mountFuse(mountpoint: string, operations: FuseOperations, options: FuseMountOptions): Promise<FuseSession> {
  const addon = fuseAddon();
  if (typeof options.errnoOf !== 'function') {
    throw Object.assign(new TypeError('errnoOf must be a function'), { code: 'DPMS_INVALID_ARGUMENT' });
  }
  const resolved = path.resolve(mountpoint); // libfuse keeps the path for unmounting; cwd may change
  let implemented = 0;
  for (const [name, op] of Object.entries(Op)) {
    if (typeof (operations as unknown as Record<string, unknown>)[name] === 'function') implemented |= 1 << op;
  }

  let ended = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => { resolveClosed = resolve; });
  let resolveReady!: () => void;
  const ready = new Promise<void>((resolve) => { resolveReady = resolve; });
  const holder: { native?: NativeFuseSession; server?: RequestServer } = {};
  const end = (): void => {
    if (ended) return;
    ended = true;
    if (holder.native !== undefined) liveSessions.delete(holder.native);
    resolveReady();
    resolveClosed();
  };
  const dispatch: Dispatch = (op, id, uid, gid, pid, umask, a, b, c, d, e) => {
    try {
      if (op === Op.end) return end();
      const server = holder.server;
      if (server === undefined) return; // cannot happen: the loop starts inside fuseMount, events come later
      if (op === Op.init) {
        server.init();
        return resolveReady();
      }
      if (op === Op.forget) return server.forget(a as number, b as number);
      server.request(op, id, { uid, gid, pid, umask }, a, b, c, d, e);
    } catch {
      // request() answers its own failures; this only guards the addon's callback from an exception.
    }
  };

  const native = addon.fuseMount(resolved, options.options,
    { entryTimeoutS: options.entryTimeoutS, attrTimeoutS: options.attrTimeoutS, implemented }, dispatch);
  holder.native = native;
  holder.server = new RequestServer(native, operations, options.errnoOf);
  liveSessions.add(native);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', unmountAllAtExit);
  }
  await ready;

  return {
    mountpoint: resolved,
    closed,
    unmount: async () => {
      if (!ended) native.unmount();
      await closed;
    },
  };
}
