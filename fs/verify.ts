// The read-only verifier of a pDFS file system: walks every structure from the root (and the orphan
// directory) over pDSM and checks the invariants the operations keep (docs/ARCHITECTURE.md, "pDFS",
// "What the verifier checks"). Run it on a quiet file system (no mount changing it), e.g. after a
// crash and a restart; crash tests and `dpms check` use it (online, `dpms check` runs it again when
// it finds problems and reports only those that persist).

import type { ClusterClient, GlobalAddress } from '../pdsm';
import {
  BUCKET_BYTES, decodeBlockRef, decodeBucket, decodeInode, decodeTable, decodeXattrs, FS_LIMITS, INODE_BYTES,
  MAP_FANOUT, MAP_PAGE_BYTES, nameHash, TABLE_HEADER_BYTES, type Inode,
} from './format';
import { FileSystem } from './fs';
import { isDir, isReg, S_IFLNK } from './op';

export interface FsVerifyReport {
  readonly directories: number;
  readonly files: number;
  readonly symlinks: number;
  readonly others: number;
  readonly orphans: number;
  readonly dataBytes: number;
  readonly objects: number;
  readonly problems: string[];
  /** Link counts found wrong (also in problems): what `dpms check --repair` may set. */
  readonly linkCounts: LinkCountProblem[];
  /** The orphan directory's entries (files unlinked while open, deletions in progress). */
  readonly orphanEntries: Array<{ readonly name: string; readonly ino: number }>;
}

export interface LinkCountProblem {
  readonly ino: number;
  readonly path: string;
  readonly nlink: number;
  readonly expected: number;
}

/** The report and every object address the walk saw (for the cluster check's cross-checks). */
export interface FsVerifyResult extends FsVerifyReport {
  readonly addresses: ReadonlySet<GlobalAddress>;
}

const S_IFMT = 0o170000;
const MAX_PROBLEMS = 1000;

export async function verifyFileSystem(client: ClusterClient): Promise<FsVerifyResult> {
  const fs = await FileSystem.open(client, { create: false });
  const problems: string[] = [];
  const problem = (text: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(text);
  };
  const owned = new Map<GlobalAddress, string>();
  const own = async (address: GlobalAddress, bytes: number, what: string): Promise<void> => {
    const previous = owned.get(address);
    if (previous) return problem(`${what}: object ${address} is also ${previous}`);
    owned.set(address, what);
    const size = await client.objectSize(address);
    if (size === undefined) problem(`${what}: object ${address} is not allocated`);
    else if (size < bytes) problem(`${what}: object ${address} holds ${size} B, needs ${bytes}`);
  };
  const inodes = new Map<number, Inode>();
  const names = new Map<number, number>(); // ino -> names found
  const counts = { directories: 0, files: 0, symlinks: 0, others: 0, orphans: 0, dataBytes: 0 };
  const linkCounts: LinkCountProblem[] = [];
  const orphanEntries: Array<{ name: string; ino: number }> = [];

  const load = async (ino: number, where: string): Promise<Inode | undefined> => {
    const known = inodes.get(ino);
    if (known) return known;
    const inode = decodeInode(await client.read((Math.floor(ino / 128) * 64) as GlobalAddress, INODE_BYTES), ino);
    if (!inode) {
      problem(`${where}: inode ${ino} does not check out`);
      return undefined;
    }
    inodes.set(ino, inode);
    await own(inode.address, INODE_BYTES, `inode ${ino}`);
    if (inode.xattr !== 0) {
      await own(inode.xattr, 16, `xattrs of ${ino}`);
      const head = await client.read(inode.xattr, 16);
      const used = head.readUInt32LE(8);
      if (used > FS_LIMITS.xattrTotalBytes * 2 || !decodeXattrs(await client.read(inode.xattr, Math.max(16, used)), inode.generation)) problem(`inode ${ino}: extended attributes do not check out`);
    }
    return inode;
  };

  const checkFile = async (inode: Inode, path: string): Promise<void> => {
    let blocks = 0;
    const visit = async (address: GlobalAddress, capacity: number, level: number, base: number): Promise<void> => {
      if (level === 0) {
        await own(address, capacity, `block ${base} of ${path}`);
        blocks += capacity;
        if (base * FS_LIMITS.blockBytes >= inode.size) problem(`${path}: block ${base} lies past the end of the file (${inode.size} B)`);
        return;
      }
      await own(address, MAP_PAGE_BYTES, `map page of ${path}`);
      const page = await client.read(address, MAP_PAGE_BYTES);
      const span = MAP_FANOUT ** (level - 1);
      for (let slot = 0; slot < MAP_FANOUT; slot++) {
        const ref = decodeBlockRef(page, slot * 8);
        if (ref) await visit(ref.address, ref.capacity, level - 1, base + slot * span);
      }
    };
    if (inode.data !== 0) await visit(inode.data, inode.height === 0 ? inode.capacity : MAP_PAGE_BYTES, inode.height, 0);
    if (inode.height > 3) problem(`${path}: map height ${inode.height} is impossible`);
    if (blocks !== inode.blocks) problem(`${path}: owns ${blocks} B of blocks, its inode says ${inode.blocks}`);
    if (inode.size > FS_LIMITS.maxFileBytes) problem(`${path}: size ${inode.size} exceeds the limit`);
    counts.dataBytes += blocks;
  };

  const walk = async (dir: Inode, path: string, orphanDir: boolean): Promise<void> => {
    const table = dir.data === 0 ? [] : decodeTable(await client.read(dir.data, TABLE_HEADER_BYTES + 8 * 2 ** dir.height), dir.ino, dir.height);
    if (!table) return problem(`${path}: hash table does not check out`);
    if (dir.data !== 0) await own(dir.data, TABLE_HEADER_BYTES + 8 * 2 ** dir.height, `table of ${path}`);
    let entries = 0;
    let subdirs = 0;
    const seen = new Set<string>();
    for (const address of new Set(table)) {
      await own(address, BUCKET_BYTES, `bucket of ${path}`);
      const bucket = decodeBucket(await client.read(address, BUCKET_BYTES), address, dir.ino, dir.generation);
      if (!bucket) {
        problem(`${path}: bucket ${address} does not check out`);
        continue;
      }
      const mask = 2 ** bucket.localDepth - 1;
      if (bucket.localDepth > dir.height) problem(`${path}: bucket deeper than its table`);
      table.forEach((slot, i) => {
        if (slot === address && (i & mask) !== bucket.prefix) problem(`${path}: table slot ${i} points at the bucket of prefix ${bucket.prefix}`);
      });
      if (table.filter((slot) => slot === address).length !== 2 ** (dir.height - bucket.localDepth)) problem(`${path}: bucket ${address} is in the wrong number of table slots`);
      for (const entry of bucket.entries) {
        entries++;
        const name = entry.name.toString();
        const childPath = path === '/' ? `/${name}` : `${path}/${name}`;
        if (entry.hash !== nameHash(entry.name) || (entry.hash & mask) !== bucket.prefix) problem(`${childPath}: in the wrong bucket`);
        if (seen.has(name)) problem(`${childPath}: the name appears twice`);
        seen.add(name);
        const child = await load(entry.ino, childPath);
        if (!child) continue;
        if (entry.type !== ((child.mode >>> 12) & 0xf)) problem(`${childPath}: entry type ${entry.type} but inode type ${child.mode >>> 12}`);
        names.set(child.ino, (names.get(child.ino) ?? 0) + 1);
        if (orphanDir) {
          counts.orphans++;
          if (orphanEntries.length < MAX_PROBLEMS) orphanEntries.push({ name, ino: entry.ino });
          if (child.nlink !== 0) problem(`${childPath}: an orphan with ${child.nlink} links`);
          if (isReg(child.mode)) await checkFile(child, childPath);
          continue;
        }
        if (isDir(child.mode)) {
          subdirs++;
          counts.directories++;
          if (names.get(child.ino)! > 1) problem(`${childPath}: a directory with two names`);
          if (child.parent !== dir.ino) problem(`${childPath}: its parent is ${child.parent}, not ${dir.ino}`);
          await walk(child, childPath, false);
        } else if (names.get(child.ino) === 1) {
          if (isReg(child.mode)) {
            counts.files++;
            await checkFile(child, childPath);
          } else if ((child.mode & S_IFMT) === S_IFLNK) {
            counts.symlinks++;
            if (child.size < 1 || child.size > FS_LIMITS.symlinkBytes) problem(`${childPath}: symlink target of ${child.size} B`);
            if (child.data !== 0) await own(child.data, child.size, `target of ${childPath}`);
            else if (child.inline.length !== child.size) problem(`${childPath}: inline target of ${child.inline.length} B, size ${child.size}`);
          } else {
            counts.others++;
          }
        }
      }
    }
    if (entries !== dir.entries) problem(`${path}: ${entries} entries, its inode says ${dir.entries}`);
    if (!orphanDir && dir.nlink !== 2 + subdirs) {
      problem(`${path}: nlink ${dir.nlink}, expected ${2 + subdirs}`);
      linkCounts.push({ ino: dir.ino, path, nlink: dir.nlink, expected: 2 + subdirs });
    }
  };

  const root = await load(fs.rootIno, '/');
  if (root) {
    counts.directories++;
    if (!isDir(root.mode)) problem('/: the root is not a directory');
    else await walk(root, '/', false);
  }
  const orphans = await load(fs.orphanIno, '(orphans)');
  if (orphans) await walk(orphans, '(orphans)', true);
  for (const [ino, count] of names) {
    const inode = inodes.get(ino)!;
    if (!isDir(inode.mode) && inode.nlink !== 0 && inode.nlink !== count) {
      problem(`inode ${ino}: nlink ${inode.nlink}, but ${count} names`);
      linkCounts.push({ ino, path: `inode ${ino}`, nlink: inode.nlink, expected: count });
    }
  }
  return { ...counts, objects: owned.size, problems, linkCounts, orphanEntries, addresses: new Set(owned.keys()) };
}
