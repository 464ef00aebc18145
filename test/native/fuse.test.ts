// Proves the libfuse3 low-level binding end to end against the kernel: an in-memory file system written
// against FuseOperations is mounted and driven only through async fs.promises calls and child processes
// (lookup, getattr, mkdir, create, write, read, readdir paging over 1500 entries, rename, link, unlink,
// rmdir, symlink/readlink, mknod, setattr with signed nanosecond timestamps and ftruncate's fh, xattrs
// with the size probe and ERANGE, statfs), that the writes the kernel sends are larger than libfuse2's
// 128 KiB, that a thrown or rejected handler error reaches the caller as its errno (EIO when unknown,
// when errnoOf fails, or when the value is malformed), that the caller's uid/gid/pid/umask reach the
// handler (a file created by uid 65534 is owned by 65534), and the session's lifecycle: a request still
// pending at unmount does not hang or crash anything, an external `fusermount3 -uz` resolves `closed`
// and a later unmount() is harmless, unmount() twice is harmless, a process that dies of an uncaught
// exception or process.exit and a terminated worker leave no mount behind, and bad options or
// mountpoints throw.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';

import {
  mountFuse,
  type FuseAttr,
  type FuseContext,
  type FuseDirEntry,
  type FuseEntry,
  type FuseOpenReply,
  type FuseOperations,
  type FuseSession,
  type FuseSetattr,
  type FuseStatfs,
} from '../../native/index';

const execFileAsync = promisify(execFile);
const errnos = os.constants.errno;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const NOBODY = 65534;
const BIG_DIR_ENTRIES = 1500;

class FsFailure extends Error {
  constructor(readonly code: string, readonly breaksErrnoOf = false) {
    super(code);
  }
}

const fail = (code: string): never => {
  throw new FsFailure(code);
};

/** The test's errno table: FsFailure codes by name, anything else EIO; a marked error makes it throw. */
function errnoOf(error: unknown): number {
  if (error instanceof FsFailure) {
    if (error.breaksErrnoOf) throw new Error('errnoOf cannot map this');
    return (errnos as Record<string, number>)[error.code] ?? errnos.EIO;
  }
  return errnos.EIO;
}

interface MemNode {
  readonly ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  data: Buffer; // capacity; `size` bytes are the file
  size: number;
  target?: Buffer;
  entries?: Map<string, number>; // latin1 keys: file names are bytes
  parent: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  xattrs: Map<string, Buffer>;
}

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n;
const key = (name: Buffer): string => name.toString('latin1');

/** A small in-memory file system written against the binding's interface, recording what it was asked. */
class MemFs implements FuseOperations {
  readonly nodes = new Map<number, MemNode>();
  readonly writeSizes: number[] = [];
  readonly readdirOffsets: number[] = [];
  readonly setattrs: FuseSetattr[] = [];
  readonly creators: Array<{ name: string; ctx: FuseContext }> = [];
  readonly calls = new Map<string, number>();
  initCalls = 0;
  private nextIno = 2;
  private nextFh = 1;
  /** Per name: a hook run by lookup before it answers (hangs, failures). */
  readonly lookupHooks = new Map<string, () => Promise<void>>();

  constructor() {
    this.nodes.set(1, this.makeNode(1, S_IFDIR | 0o755, 0, 0, 1));
  }

  private count(op: string): void {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
  }

  private makeNode(ino: number, mode: number, uid: number, gid: number, parent: number): MemNode {
    const t = nowNs();
    const isDir = (mode & S_IFMT) === S_IFDIR;
    return {
      ino, mode, nlink: isDir ? 2 : 1, uid, gid, rdev: 0, data: Buffer.alloc(0), size: 0, parent,
      entries: isDir ? new Map() : undefined, atimeNs: t, mtimeNs: t, ctimeNs: t, xattrs: new Map(),
    };
  }

  node(ino: number): MemNode {
    return this.nodes.get(ino) ?? fail('ENOENT');
  }

  dir(ino: number): MemNode & { entries: Map<string, number> } {
    const node = this.node(ino);
    if (node.entries === undefined) fail('ENOTDIR');
    return node as MemNode & { entries: Map<string, number> };
  }

  attr(node: MemNode): FuseAttr {
    return {
      ino: node.ino, mode: node.mode, nlink: node.nlink, uid: node.uid, gid: node.gid, rdev: node.rdev,
      size: node.size, blocks: Math.ceil(node.size / 512), atimeNs: node.atimeNs, mtimeNs: node.mtimeNs, ctimeNs: node.ctimeNs,
    };
  }

  entry(node: MemNode): FuseEntry {
    return { attr: this.attr(node), generation: 0 };
  }

  /** Add a child directly (bulk set-up of the big directory without going through the kernel). */
  addChild(parent: number, name: string, mode: number, ctx: FuseContext = { uid: 0, gid: 0, pid: 0, umask: 0 }): MemNode {
    const dir = this.dir(parent);
    if (dir.entries.has(key(Buffer.from(name)))) fail('EEXIST');
    const node = this.makeNode(this.nextIno++, mode, ctx.uid, ctx.gid, parent);
    this.nodes.set(node.ino, node);
    dir.entries.set(key(Buffer.from(name)), node.ino);
    if ((mode & S_IFMT) === S_IFDIR) dir.nlink++;
    dir.mtimeNs = dir.ctimeNs = nowNs();
    return node;
  }

  child(parent: number, name: Buffer): MemNode {
    const ino = this.dir(parent).entries.get(key(name));
    return ino === undefined ? fail('ENOENT') : this.node(ino);
  }

  init(): void {
    this.initCalls++;
  }

  async lookup(_ctx: FuseContext, parent: number, name: Buffer): Promise<FuseEntry> {
    this.count('lookup');
    const hook = this.lookupHooks.get(name.toString());
    if (hook !== undefined) await hook();
    const node = this.child(parent, name);
    if (name.toString() === 'bad-attr') return { attr: { ...this.attr(node), size: -1 }, generation: 0 };
    return this.entry(node);
  }

  forget(): void {
    this.count('forget');
  }

  async getattr(_ctx: FuseContext, ino: number): Promise<FuseAttr> {
    this.count('getattr');
    return this.attr(this.node(ino));
  }

  async setattr(_ctx: FuseContext, ino: number, changes: FuseSetattr): Promise<FuseAttr> {
    this.setattrs.push(changes);
    const node = this.node(ino);
    if (changes.mode !== undefined) node.mode = (node.mode & S_IFMT) | changes.mode;
    if (changes.uid !== undefined) node.uid = changes.uid;
    if (changes.gid !== undefined) node.gid = changes.gid;
    if (changes.size !== undefined) this.resize(node, changes.size);
    if (changes.atimeNs !== undefined) node.atimeNs = changes.atimeNs === 'now' ? nowNs() : changes.atimeNs;
    if (changes.mtimeNs !== undefined) node.mtimeNs = changes.mtimeNs === 'now' ? nowNs() : changes.mtimeNs;
    node.ctimeNs = nowNs();
    return this.attr(node);
  }

  async readlink(_ctx: FuseContext, ino: number): Promise<Buffer> {
    const node = this.node(ino);
    if (node.xattrs.has('user.malformed')) return Buffer.from('a\0b');
    return node.target ?? fail('EINVAL');
  }

  async mknod(ctx: FuseContext, parent: number, name: Buffer, mode: number, rdev: number): Promise<FuseEntry> {
    this.creators.push({ name: name.toString(), ctx });
    const node = this.addChild(parent, name.toString('latin1'), mode, ctx);
    node.rdev = rdev;
    return this.entry(node);
  }

  // Not async: a synchronous throw must be answered like a rejection.
  mkdir(ctx: FuseContext, parent: number, name: Buffer, mode: number): Promise<FuseEntry> {
    if (name.toString() === 'sync-throw') throw new FsFailure('EMLINK');
    return Promise.resolve(this.entry(this.addChild(parent, name.toString('latin1'), S_IFDIR | (mode & 0o7777), ctx)));
  }

  async unlink(_ctx: FuseContext, parent: number, name: Buffer): Promise<void> {
    if (name.toString() === 'rejects-unknown') throw new Error('an error errnoOf does not know');
    if (name.toString() === 'breaks-errno-of') throw new FsFailure('EPERM', true);
    const node = this.child(parent, name);
    if (node.entries !== undefined) fail('EISDIR');
    this.dir(parent).entries.delete(key(name));
    node.nlink--;
    node.ctimeNs = nowNs();
  }

  async rmdir(_ctx: FuseContext, parent: number, name: Buffer): Promise<void> {
    const node = this.child(parent, name);
    if (node.entries === undefined) fail('ENOTDIR');
    if (node.entries!.size > 0) fail('ENOTEMPTY');
    const dir = this.dir(parent);
    dir.entries.delete(key(name));
    dir.nlink--;
  }

  async symlink(ctx: FuseContext, target: Buffer, parent: number, name: Buffer): Promise<FuseEntry> {
    const node = this.addChild(parent, name.toString('latin1'), S_IFLNK | 0o777, ctx);
    node.target = Buffer.from(target);
    node.size = target.length;
    return this.entry(node);
  }

  async rename(_ctx: FuseContext, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    const RENAME_NOREPLACE = 1;
    if ((flags & ~RENAME_NOREPLACE) !== 0) fail('EINVAL');
    const node = this.child(parent, name);
    const target = this.dir(newParent);
    const existing = target.entries.get(key(newName));
    if (existing !== undefined) {
      if ((flags & RENAME_NOREPLACE) !== 0) fail('EEXIST');
      const replaced = this.node(existing);
      if (replaced.entries !== undefined && replaced.entries.size > 0) fail('ENOTEMPTY');
      replaced.nlink--;
    }
    this.dir(parent).entries.delete(key(name));
    target.entries.set(key(newName), node.ino);
    node.parent = newParent;
    node.ctimeNs = nowNs();
  }

  async link(_ctx: FuseContext, ino: number, newParent: number, newName: Buffer): Promise<FuseEntry> {
    const node = this.node(ino);
    const dir = this.dir(newParent);
    if (dir.entries.has(key(newName))) fail('EEXIST');
    dir.entries.set(key(newName), ino);
    node.nlink++;
    return this.entry(node);
  }

  async open(): Promise<FuseOpenReply> {
    return { fh: this.nextFh++ };
  }

  async read(_ctx: FuseContext, ino: number, _fh: number, size: number, offset: number): Promise<Buffer> {
    const node = this.node(ino);
    if (node.xattrs.has('user.malformed')) return 42 as unknown as Buffer; // what a buggy handler might do
    return node.data.subarray(Math.min(offset, node.size), Math.min(offset + size, node.size));
  }

  async write(_ctx: FuseContext, ino: number, _fh: number, data: Buffer, offset: number): Promise<number> {
    this.writeSizes.push(data.length);
    const node = this.node(ino);
    const end = offset + data.length;
    if (end > node.data.length) {
      const grown = Buffer.alloc(Math.max(end, node.data.length * 2));
      node.data.copy(grown, 0, 0, node.size);
      node.data = grown;
    }
    data.copy(node.data, offset);
    node.size = Math.max(node.size, end);
    node.mtimeNs = node.ctimeNs = nowNs();
    return data.length;
  }

  private resize(node: MemNode, size: number): void {
    if (size > node.data.length) {
      const grown = Buffer.alloc(size);
      node.data.copy(grown, 0, 0, node.size);
      node.data = grown;
    } else {
      node.data.fill(0, size, node.size);
    }
    node.size = size;
    node.mtimeNs = nowNs();
  }

  async flush(): Promise<void> {
    this.count('flush');
  }

  async release(): Promise<void> {
    this.count('release');
  }

  async fsync(): Promise<void> {
    this.count('fsync');
  }

  async opendir(): Promise<FuseOpenReply> {
    return { fh: this.nextFh++ };
  }

  async readdir(_ctx: FuseContext, ino: number, _fh: number, offset: number): Promise<FuseDirEntry[]> {
    this.readdirOffsets.push(offset);
    const dir = this.dir(ino);
    if (dir.xattrs.has('user.malformed')) return [{ name: Buffer.from('x'), ino: 5, mode: S_IFREG, nextOffset: 0 }];
    const all: FuseDirEntry[] = [
      { name: Buffer.from('.'), ino: dir.ino, mode: S_IFDIR, nextOffset: 1 },
      { name: Buffer.from('..'), ino: dir.parent, mode: S_IFDIR, nextOffset: 2 },
    ];
    for (const [name, childIno] of dir.entries) {
      all.push({ name: Buffer.from(name, 'latin1'), ino: childIno, mode: this.node(childIno).mode, nextOffset: all.length + 1 });
    }
    return all.slice(offset);
  }

  async releasedir(): Promise<void> {
    this.count('releasedir');
  }

  async fsyncdir(): Promise<void> {
    this.count('fsyncdir');
  }

  async statfs(): Promise<FuseStatfs> {
    return { bsize: 4096, frsize: 4096, blocks: 1_000_000, bfree: 750_000, bavail: 700_000, files: 50_000, ffree: 40_000, favail: 40_000, namemax: 255 };
  }

  async setxattr(_ctx: FuseContext, ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    const XATTR_CREATE = 1;
    const XATTR_REPLACE = 2;
    const node = this.node(ino);
    if ((flags & XATTR_CREATE) !== 0 && node.xattrs.has(name)) fail('EEXIST');
    if ((flags & XATTR_REPLACE) !== 0 && !node.xattrs.has(name)) fail('ENODATA');
    node.xattrs.set(name, Buffer.from(value));
  }

  async getxattr(_ctx: FuseContext, ino: number, name: string): Promise<Buffer> {
    return this.node(ino).xattrs.get(name) ?? fail('ENODATA');
  }

  async listxattr(_ctx: FuseContext, ino: number): Promise<string[]> {
    return [...this.node(ino).xattrs.keys()];
  }

  async removexattr(_ctx: FuseContext, ino: number, name: string): Promise<void> {
    if (!this.node(ino).xattrs.delete(name)) fail('ENODATA');
  }

  async access(): Promise<void> {
    this.count('access');
  }

  async create(ctx: FuseContext, parent: number, name: Buffer, mode: number): Promise<{ entry: FuseEntry; open: FuseOpenReply }> {
    this.creators.push({ name: name.toString(), ctx });
    const node = this.addChild(parent, name.toString('latin1'), S_IFREG | (mode & 0o7777), ctx);
    return { entry: this.entry(node), open: { fh: this.nextFh++ } };
  }
}

// ---- Harness ----

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-fuse-test-'));
fs.chmodSync(workDir, 0o755); // uid 65534 must reach the mount
const sessions: FuseSession[] = [];
const memfs = new MemFs();
const mnt = path.join(workDir, 'main');
let session: FuseSession;
const warnings: Error[] = [];
const onWarning = (warning: Error): void => {
  warnings.push(warning);
};

function mountedPaths(): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' ')[4] ?? '');
}

async function mountOn(name: string, operations: FuseOperations, extraOptions: string[] = []): Promise<FuseSession> {
  const dir = path.join(workDir, name);
  fs.mkdirSync(dir);
  const mounted = await mountFuse(dir, operations, {
    options: ['fsname=dpms-test', 'subtype=dpms', 'default_permissions', 'allow_other', ...extraOptions],
    entryTimeoutS: 0,
    attrTimeoutS: 0,
    errnoOf,
  });
  sessions.push(mounted);
  return mounted;
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: NodeJS.ErrnoException) => {
    assert.equal(error.code, code, `expected ${code}, got ${String(error)}`);
    return true;
  });
}

/** Run a program to completion; resolves with its exit code, stdout and stderr. */
function run(file: string, args: string[], options: { uid?: number; gid?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string; pid: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, pid: child.pid ?? -1 }));
  });
}

before(async () => {
  process.on('warning', onWarning);
  session = await mountOn('main', memfs);
});

after(async () => {
  process.off('warning', onWarning);
  for (const s of sessions) {
    try {
      await s.unmount();
    } catch {
      // fall through to fusermount3
    }
  }
  const stillMounted = mountedPaths().filter((p) => p.startsWith(workDir));
  for (const p of stillMounted) await execFileAsync('fusermount3', ['-uz', p]).catch(() => undefined);
  // Only remove the directory when nothing of ours is mounted below it (rm would walk into a mount).
  if (mountedPaths().every((p) => !p.startsWith(workDir))) fs.rmSync(workDir, { recursive: true, force: true });
});

// ---- The file system through the kernel ----

test('mount: init ran, the mount is listed with our fsname, the root is a directory', async () => {
  assert.equal(memfs.initCalls, 1);
  assert.ok(mountedPaths().includes(mnt));
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((line) => line.split(' ')[4] === mnt) ?? '';
  assert.match(mountinfo, / - fuse\.dpms dpms-test /);
  const st = await fs.promises.stat(mnt);
  assert.ok(st.isDirectory());
  assert.equal(st.ino, 1);
});

test('mkdir, create, write and read back; stat reports the size and the mode', async () => {
  await fs.promises.mkdir(path.join(mnt, 'dir'), { mode: 0o750 });
  const file = path.join(mnt, 'dir', 'hello.txt');
  const content = Buffer.from('hello, pDFS\n'.repeat(1000));
  await fs.promises.writeFile(file, content, { mode: 0o640 });
  assert.deepEqual(await fs.promises.readFile(file), content);
  const st = await fs.promises.stat(file);
  assert.equal(st.size, content.length);
  assert.equal(st.mode & 0o777, 0o640 & ~process.umask());
  assert.ok(st.isFile());
  const dirSt = await fs.promises.stat(path.join(mnt, 'dir'));
  assert.equal(dirSt.mode & 0o777, 0o750 & ~process.umask());
  const created = memfs.creators.find((c) => c.name === 'hello.txt');
  assert.equal(created?.ctx.uid, 0);
  assert.equal(created?.ctx.umask, process.umask());
  // Reading at and past the end.
  const handle = await fs.promises.open(file, 'r');
  try {
    const buffer = Buffer.alloc(100);
    const { bytesRead } = await handle.read(buffer, 0, 100, content.length - 10);
    assert.equal(bytesRead, 10);
    assert.equal((await handle.read(buffer, 0, 100, content.length + 5)).bytesRead, 0);
  } finally {
    await handle.close();
  }
  assert.ok((memfs.calls.get('flush') ?? 0) > 0, 'close sends flush');
});

test(`readdir pages through ${BIG_DIR_ENTRIES} entries with offsets`, async () => {
  await fs.promises.mkdir(path.join(mnt, 'big'));
  const big = memfs.child(1, Buffer.from('big'));
  const expected: string[] = [];
  for (let i = 0; i < BIG_DIR_ENTRIES; i++) {
    const name = `entry-${String(i).padStart(5, '0')}-${'x'.repeat(i % 40)}`;
    memfs.addChild(big.ino, name, S_IFREG | 0o644);
    expected.push(name);
  }
  memfs.readdirOffsets.length = 0;
  const names = await fs.promises.readdir(path.join(mnt, 'big'));
  assert.deepEqual(names.sort(), expected.sort());
  const resumed = memfs.readdirOffsets.filter((offset) => offset > 0);
  assert.ok(resumed.length >= 2, `readdir was resumed at offsets ${memfs.readdirOffsets.join(',')}`);
  // Types come from the entries' mode bits.
  const typed = await fs.promises.readdir(path.join(mnt, 'big'), { withFileTypes: true });
  assert.ok(typed.every((dirent) => dirent.isFile()));
  assert.ok((memfs.calls.get('releasedir') ?? 0) > 0);
});

test('rename, link, unlink, rmdir', async () => {
  await fs.promises.mkdir(path.join(mnt, 'a'));
  await fs.promises.mkdir(path.join(mnt, 'b'));
  await fs.promises.writeFile(path.join(mnt, 'a', 'f'), 'data');
  await fs.promises.rename(path.join(mnt, 'a', 'f'), path.join(mnt, 'b', 'g'));
  await rejectsWithCode(fs.promises.stat(path.join(mnt, 'a', 'f')), 'ENOENT');
  assert.equal(await fs.promises.readFile(path.join(mnt, 'b', 'g'), 'utf8'), 'data');

  await fs.promises.link(path.join(mnt, 'b', 'g'), path.join(mnt, 'a', 'h'));
  assert.equal((await fs.promises.stat(path.join(mnt, 'b', 'g'))).nlink, 2);
  await fs.promises.unlink(path.join(mnt, 'b', 'g'));
  assert.equal((await fs.promises.stat(path.join(mnt, 'a', 'h'))).nlink, 1);

  await rejectsWithCode(fs.promises.rmdir(path.join(mnt, 'a')), 'ENOTEMPTY');
  await fs.promises.unlink(path.join(mnt, 'a', 'h'));
  await fs.promises.rmdir(path.join(mnt, 'a'));
  assert.deepEqual((await fs.promises.readdir(mnt)).filter((name) => name === 'a'), []);
});

test('symlink and readlink; mknod of a FIFO', async () => {
  const link = path.join(mnt, 'link');
  await fs.promises.symlink('dir/hello.txt', link);
  assert.equal(await fs.promises.readlink(link), 'dir/hello.txt');
  assert.ok((await fs.promises.lstat(link)).isSymbolicLink());
  assert.equal((await fs.promises.readFile(link)).length, 'hello, pDFS\n'.length * 1000);

  const fifo = await run('mkfifo', [path.join(mnt, 'fifo')]);
  assert.equal(fifo.code, 0, fifo.stderr);
  assert.ok((await fs.promises.stat(path.join(mnt, 'fifo'))).isFIFO());
});

test('setattr: chmod, truncate with and without a handle, nanosecond and negative timestamps, touch = now', async () => {
  const file = path.join(mnt, 'times');
  await fs.promises.writeFile(file, Buffer.alloc(10_000, 7));
  await fs.promises.chmod(file, 0o4711);
  assert.equal((await fs.promises.stat(file)).mode & 0o7777, 0o4711);
  assert.equal(memfs.setattrs.at(-1)?.mode, 0o4711);

  // truncate(2) by path (fs.promises.truncate opens the file and uses ftruncate).
  const byPath = await run('/usr/bin/python3', ['-c', 'import os, sys; os.truncate(sys.argv[1], 5000)', file]);
  assert.equal(byPath.code, 0, byPath.stderr);
  assert.equal((await fs.promises.stat(file)).size, 5000);
  assert.equal(memfs.setattrs.at(-1)?.size, 5000);
  assert.equal(memfs.setattrs.at(-1)?.fh, undefined);
  const handle = await fs.promises.open(file, 'r+');
  try {
    await handle.truncate(1234);
    const last = memfs.setattrs.at(-1);
    assert.equal(last?.size, 1234);
    assert.equal(typeof last?.fh, 'number', 'ftruncate passes the file handle');
  } finally {
    await handle.close();
  }
  assert.equal((await fs.promises.stat(file)).size, 1234);
  // open(O_TRUNC) arrives as setattr({ size: 0 }) (no atomic_o_trunc).
  await fs.promises.writeFile(file, 'abc');
  assert.ok(memfs.setattrs.some((changes) => changes.size === 0));
  assert.equal(await fs.promises.readFile(file, 'utf8'), 'abc');

  const setM = await run('touch', ['-m', '-d', '@1700000000.123456789', file]);
  assert.equal(setM.code, 0, setM.stderr);
  const setA = await run('touch', ['-a', '-d', '@-1.25', file]);
  assert.equal(setA.code, 0, setA.stderr);
  const st = await fs.promises.stat(file, { bigint: true });
  assert.equal(st.mtimeNs, 1_700_000_000_123_456_789n);
  assert.equal(st.atimeNs, -1_250_000_000n);
  assert.equal(memfs.setattrs.at(-1)?.atimeNs, -1_250_000_000n);

  const before = nowNs();
  const touchNow = await run('touch', [file]);
  assert.equal(touchNow.code, 0, touchNow.stderr);
  const last = memfs.setattrs.at(-1);
  assert.equal(last?.atimeNs, 'now');
  assert.equal(last?.mtimeNs, 'now');
  assert.ok((await fs.promises.stat(file, { bigint: true })).mtimeNs >= before - 1_000_000_000n);
});

// getxattr/listxattr through libc with explicit sizes: 0 (the length probe), too small (ERANGE), enough.
const XATTR_SCRIPT = `
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path = sys.argv[1].encode()
out = {}
def call(fn, *args):
    r = fn(path, *args)
    return r if r >= 0 else -ctypes.get_errno()
value = b'hello-xattr'
out['set'] = call(libc.setxattr, b'user.test', value, len(value), 0)
out['setCreateAgain'] = call(libc.setxattr, b'user.test', value, len(value), 1)
out['set2'] = call(libc.setxattr, b'user.other', b'x', 1, 0)
out['probe'] = call(libc.getxattr, b'user.test', None, 0)
small = ctypes.create_string_buffer(4)
out['small'] = call(libc.getxattr, b'user.test', small, 4)
buf = ctypes.create_string_buffer(64)
n = call(libc.getxattr, b'user.test', buf, 64)
out['full'] = buf.raw[:n].decode() if n >= 0 else n
out['listProbe'] = call(libc.listxattr, None, 0)
out['listSmall'] = call(libc.listxattr, small, 4)
n = call(libc.listxattr, buf, 64)
out['list'] = sorted(x.decode() for x in buf.raw[:n].split(b'\\0') if x) if n >= 0 else n
out['remove'] = call(libc.removexattr, b'user.test')
out['afterRemove'] = call(libc.getxattr, b'user.test', buf, 64)
print(json.dumps(out))
`;

test('xattrs: set, size probe, ERANGE, get, list, remove', async () => {
  const file = path.join(mnt, 'xattrs');
  await fs.promises.writeFile(file, 'x');
  const result = await run('/usr/bin/python3', ['-c', XATTR_SCRIPT, file]);
  assert.equal(result.code, 0, result.stderr);
  const out = JSON.parse(result.stdout) as Record<string, unknown>;
  assert.equal(out.set, 0);
  assert.equal(out.setCreateAgain, -errnos.EEXIST);
  assert.equal(out.probe, 'hello-xattr'.length);
  assert.equal(out.small, -errnos.ERANGE);
  assert.equal(out.full, 'hello-xattr');
  assert.equal(out.listProbe, 'user.test\0user.other\0'.length);
  assert.equal(out.listSmall, -errnos.ERANGE);
  assert.deepEqual(out.list, ['user.other', 'user.test']);
  assert.equal(out.remove, 0);
  assert.equal(out.afterRemove, -errnos.ENODATA);
});

test('statfs reports what the handler returned', async () => {
  const st = await fs.promises.statfs(mnt);
  assert.equal(st.bsize, 4096);
  assert.equal(st.blocks, 1_000_000);
  assert.equal(st.bfree, 750_000);
  assert.equal(st.bavail, 700_000);
  assert.equal(st.files, 50_000);
  assert.equal(st.ffree, 40_000);
});

test('handler errors: a thrown errno, an unknown rejection (EIO), a failing errnoOf (EIO), a malformed value (EIO)', async () => {
  await rejectsWithCode(fs.promises.mkdir(path.join(mnt, 'sync-throw')), 'EMLINK');
  for (const name of ['rejects-unknown', 'breaks-errno-of']) {
    await fs.promises.writeFile(path.join(mnt, name), '');
    await rejectsWithCode(fs.promises.unlink(path.join(mnt, name)), 'EIO');
  }
  // Values the binding refuses (checked in C++ before anything is sent): each request is answered EIO.
  const malformed = path.join(mnt, 'malformed');
  await fs.promises.writeFile(malformed, 'some data');
  const readHandle = await fs.promises.open(malformed, 'r');
  memfs.child(1, Buffer.from('malformed')).xattrs.set('user.malformed', Buffer.alloc(0));
  try {
    await rejectsWithCode(readHandle.read(Buffer.alloc(10), 0, 10, 0), 'EIO'); // read: a number, not bytes
  } finally {
    await readHandle.close();
  }
  await fs.promises.writeFile(path.join(mnt, 'bad-attr'), '');
  await rejectsWithCode(fs.promises.stat(path.join(mnt, 'bad-attr')), 'EIO'); // lookup: size -1
  await fs.promises.mkdir(path.join(mnt, 'malformed-dir'));
  memfs.child(1, Buffer.from('malformed-dir')).xattrs.set('user.malformed', Buffer.alloc(0));
  await rejectsWithCode(fs.promises.readdir(path.join(mnt, 'malformed-dir')), 'EIO'); // nextOffset 0
  await fs.promises.symlink('target', path.join(mnt, 'malformed-link'));
  memfs.child(1, Buffer.from('malformed-link')).xattrs.set('user.malformed', Buffer.alloc(0));
  await rejectsWithCode(fs.promises.readlink(path.join(mnt, 'malformed-link')), 'EIO'); // a NUL in the target
  await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
  for (const op of ['read', 'lookup', 'readdir', 'readlink']) {
    assert.ok(warnings.some((w) => (w as NodeJS.ErrnoException).code === 'DPMS_FUSE_BAD_REPLY' && w.message.startsWith(`FUSE ${op} handler`)),
      `a warning for ${op}; warnings: ${warnings.map((w) => w.message).join('; ')}`);
  }
  // The mount is still serving.
  assert.ok((await fs.promises.stat(path.join(mnt, 'dir'))).isDirectory());
});

test('request context: a file created by uid/gid 65534 is reported with that uid, gid and pid', async () => {
  const shared = path.join(mnt, 'shared');
  await fs.promises.mkdir(shared);
  await fs.promises.chmod(shared, 0o777);
  const file = path.join(shared, 'by-nobody');
  const result = await run('/bin/sh', ['-c', 'umask 027 && echo hi > "$0"', file], { uid: NOBODY, gid: NOBODY });
  assert.equal(result.code, 0, result.stderr);
  const created = memfs.creators.find((c) => c.name === 'by-nobody');
  assert.ok(created !== undefined, 'create (or mknod) saw the file');
  assert.equal(created.ctx.uid, NOBODY);
  assert.equal(created.ctx.gid, NOBODY);
  assert.equal(created.ctx.pid, result.pid);
  assert.equal(created.ctx.umask, 0o027);
  const st = await fs.promises.stat(file);
  assert.equal(st.uid, NOBODY);
  assert.equal(st.gid, NOBODY);
  assert.equal(st.mode & 0o777, 0o640);
  // default_permissions: nobody cannot write into a root-owned 0755 directory.
  const denied = await run('/bin/sh', ['-c', 'echo hi > "$0"', path.join(mnt, 'dir', 'denied')], { uid: NOBODY, gid: NOBODY });
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /Permission denied/);
});

test('big writes: a 1-MiB dd write arrives in writes larger than 128 KiB, fsync reaches the handler', async () => {
  memfs.writeSizes.length = 0;
  const file = path.join(mnt, 'big-write');
  const result = await run('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', 'count=8', 'conv=fsync', 'status=none']);
  assert.equal(result.code, 0, result.stderr);
  assert.equal((await fs.promises.stat(file)).size, 8 << 20);
  const largest = Math.max(...memfs.writeSizes);
  console.log(`# dd bs=1M count=8: ${memfs.writeSizes.length} writes, largest ${largest} bytes, sizes ${[...new Set(memfs.writeSizes)].join(',')}`);
  assert.ok(largest > 128 * 1024, `largest write ${largest}`);
  assert.ok(largest <= 1 << 20);
  assert.equal(memfs.writeSizes.reduce((sum, size) => sum + size, 0), 8 << 20);
  assert.ok((memfs.calls.get('fsync') ?? 0) > 0);
});

// ---- Session lifecycle ----

test('a request pending at unmount: the caller fails, unmount resolves, the late answer is ignored', async () => {
  const hung = new MemFs();
  hung.addChild(1, 'hang', S_IFREG | 0o644);
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  let entered!: () => void;
  const enteredLookup = new Promise<void>((resolve) => { entered = resolve; });
  hung.lookupHooks.set('hang', async () => {
    entered();
    await released;
  });
  const mounted = await mountOn('hang', hung);
  const reader = run('cat', [path.join(mounted.mountpoint, 'hang')]);
  await enteredLookup;
  await mounted.unmount();
  await mounted.closed;
  const result = await reader;
  assert.notEqual(result.code, 0, 'cat of a file whose lookup never finished fails');
  assert.ok(!mountedPaths().includes(mounted.mountpoint));
  release(); // the handler answers after the session is gone: ignored
  await new Promise((resolve) => setTimeout(resolve, 20));
  await mounted.unmount(); // and once more: harmless
});

test('an external fusermount3 -uz resolves closed; unmount() afterwards (twice) is harmless', async () => {
  const mounted = await mountOn('external', new MemFs());
  assert.ok((await fs.promises.stat(mounted.mountpoint)).isDirectory());
  await execFileAsync('fusermount3', ['-uz', mounted.mountpoint]);
  await mounted.closed;
  await Promise.all([mounted.unmount(), mounted.unmount()]);
  assert.ok(!mountedPaths().includes(mounted.mountpoint));
});

test('unmount() twice at once resolves both; the mountpoint is free again', async () => {
  const mounted = await mountOn('twice', new MemFs());
  await fs.promises.writeFile(path.join(mounted.mountpoint, 'f'), 'x');
  await Promise.all([mounted.unmount(), mounted.unmount()]);
  assert.ok(!mountedPaths().includes(mounted.mountpoint));
  assert.deepEqual(await fs.promises.readdir(mounted.mountpoint), []);
});

// Mounts a one-directory file system (root getattr only) at workerData / argv[1]; `mounted` is the promise.
const MOUNT_SCRIPT = `
const { mountFuse } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'native', 'index.js'))});
const dir = require('node:worker_threads').workerData ?? process.argv[1];
const root = { ino: 1, mode: 0o40755, nlink: 2, uid: 0, gid: 0, rdev: 0, size: 0, blocks: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n };
const mounted = mountFuse(dir, { async getattr() { return root; } }, { options: [], entryTimeoutS: 0, attrTimeoutS: 0, errnoOf: () => 5 });
`;

test('an uncaught exception or process.exit in the serving process unmounts (no dead mount)', async () => {
  for (const ending of ['throw new Error("boom")', 'process.exit(3)']) {
    const dir = path.join(workDir, `exit-${ending.startsWith('throw') ? 'throw' : 'exit'}`);
    fs.mkdirSync(dir);
    const script = `${MOUNT_SCRIPT}mounted.then(() => { console.log('mounted'); setTimeout(() => { ${ending}; }, 10); });`;
    const result = await run(process.execPath, ['-e', script, dir]);
    assert.match(result.stdout, /mounted/);
    assert.notEqual(result.code, 0);
    assert.ok(!mountedPaths().includes(dir), `${ending} left ${dir} mounted`);
    assert.ok((await fs.promises.stat(dir)).isDirectory());
  }
});

test('a mount served by a worker thread is unmounted when the worker is terminated', async () => {
  const { Worker } = await import('node:worker_threads');
  const dir = path.join(workDir, 'worker');
  fs.mkdirSync(dir);
  const worker = new Worker(`${MOUNT_SCRIPT}mounted.then(() => require('node:worker_threads').parentPort.postMessage('mounted'));`, { eval: true, workerData: dir });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  assert.ok(mountedPaths().includes(dir));
  assert.equal((await fs.promises.stat(dir)).ino, 1); // served by the worker while this thread waits
  await worker.terminate();
  assert.ok(!mountedPaths().includes(dir));
});

test('bad options and mountpoints are refused with typed errors', async () => {
  await assert.rejects(mountFuse(path.join(workDir, 'main'), new MemFs(), { options: ['no_such_option'], entryTimeoutS: 0, attrTimeoutS: 0, errnoOf }),
    (error: NodeJS.ErrnoException) => error instanceof TypeError && error.code === 'DPMS_INVALID_ARGUMENT' && /unknown option/.test(error.message));
  await assert.rejects(mountFuse(path.join(workDir, 'missing'), new MemFs(), { options: [], entryTimeoutS: 0, attrTimeoutS: 0, errnoOf }),
    (error: NodeJS.ErrnoException) => error.code === 'DPMS_IO' && /missing/.test(error.message));
  await assert.rejects(mountFuse(path.join(workDir, 'main'), new MemFs(), { options: [], entryTimeoutS: -1, attrTimeoutS: 0, errnoOf }),
    (error: NodeJS.ErrnoException) => error.code === 'DPMS_INVALID_ARGUMENT');
  assert.ok(session !== undefined);
});
