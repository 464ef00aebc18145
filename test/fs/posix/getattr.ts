// getattr (stat, lstat, fstat) and lookup: what a stat reports for each kind of file, the errors of
// path resolution, and that looking a name up needs search (x) permission on its directory.

import assert from 'node:assert/strict';
import { dir, file, fifo, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'stat of a regular file: type, size, one link, owner and mode as made',
    setup: [file('f', 'hello', { mode: 0o640, owner: USER })],
    action: async ({ fs, p }) => {
      const stats = await fs.stat(p('f'));
      return { file: stats.isFile(), size: stats.size, nlink: stats.nlink, uid: stats.uid, gid: stats.gid, mode: stats.mode & 0o7777 };
    },
    expect: { value: { file: true, size: 5, nlink: 1, uid: 65534, gid: 65534, mode: 0o640 } },
  },
  {
    name: 'stat of a directory: type, size and st_blocks are numbers, nlink 2 when empty',
    setup: [dir('d', { mode: 0o750 })],
    action: async ({ fs, p }) => {
      const stats = await fs.stat(p('d'));
      return { dir: stats.isDirectory(), nlink: stats.nlink, mode: stats.mode & 0o7777, blocks: Number.isInteger(stats.blocks) };
    },
    expect: { value: { dir: true, nlink: 2, mode: 0o750, blocks: true } },
  },
  {
    name: 'st_blocks counts 512-byte units that cover the data',
    setup: [file('f', Buffer.alloc(10_000, 7))],
    action: async ({ fs, p }) => {
      const stats = await fs.stat(p('f'));
      return stats.blocks * 512 >= 10_000;
    },
    expect: { value: true },
  },
  {
    name: 'lstat of a symlink describes the link; stat follows it',
    setup: [file('f', 'abc'), symlink('l', 'f')],
    action: async ({ fs, p }) => {
      const link = await fs.lstat(p('l'));
      const target = await fs.stat(p('l'));
      const direct = await fs.stat(p('f'));
      return { link: link.isSymbolicLink(), linkSize: link.size, followed: target.isFile() && target.ino === direct.ino };
    },
    expect: { value: { link: true, linkSize: 1, followed: true } },
  },
  {
    name: 'stat of a dangling symlink is ENOENT (lstat still works)',
    setup: [symlink('l', 'missing')],
    action: ({ fs, p }) => fs.stat(p('l')),
    expect: 'ENOENT',
    check: async (t) => assert.ok((await t.stat('l')).isSymbolicLink()),
  },
  {
    name: 'stat of a missing name is ENOENT',
    action: ({ fs, p }) => fs.stat(p('missing')),
    expect: 'ENOENT',
  },
  {
    name: 'stat of a name under a missing directory is ENOENT',
    action: ({ fs, p }) => fs.stat(p('missing', 'f')),
    expect: 'ENOENT',
  },
  {
    name: 'stat through a regular file as if it were a directory is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.stat(p('f', 'x')),
    expect: 'ENOTDIR',
  },
  {
    name: 'stat of a regular file with a trailing slash is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.stat(p('f/')),
    expect: 'ENOTDIR',
  },
  {
    name: 'stat of a FIFO reports a FIFO',
    setup: [fifo('pipe')],
    action: async ({ fs, p }) => (await fs.stat(p('pipe'))).isFIFO(),
    expect: { value: true },
  },
  {
    name: 'an inode number is stable and distinct: two stats agree, two files differ',
    setup: [file('a'), file('b')],
    action: async ({ fs, p }) => {
      const [a1, a2, b] = [await fs.stat(p('a')), await fs.stat(p('a')), await fs.stat(p('b'))];
      return { same: a1.ino === a2.ino, distinct: a1.ino !== b.ino, device: a1.dev === b.dev };
    },
    expect: { value: { same: true, distinct: true, device: true } },
  },
  {
    name: 'fstat of an open file still works after its name is unlinked, with nlink 0',
    setup: [file('f', 'data')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r');
      try {
        await fs.unlink(p('f'));
        const stats = await handle.stat();
        const content = (await handle.read(Buffer.alloc(10), 0, 10, 0)).bytesRead;
        return { nlink: stats.nlink, size: stats.size, content };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { nlink: 0, size: 4, content: 4 } },
  },
  {
    name: "'..' of a subdirectory is its parent and '.' is itself",
    setup: [dir('d'), dir('d/e')],
    action: async ({ fs, p }) => {
      const [d, e, dot, dotdot] = await Promise.all([fs.stat(p('d')), fs.stat(p('d/e')), fs.stat(p('d/e/.')), fs.stat(p('d/e/..'))]);
      return { dot: dot.ino === e.ino, dotdot: dotdot.ino === d.ino };
    },
    expect: { value: { dot: true, dotdot: true } },
  },
  ...permissionMatrix({
    operation: 'lookup (stat d/e)',
    object: 'dir',
    needs: 'x',
    action: ({ fs, p }) => fs.stat(p('d', 'e')),
  }),
  {
    name: 'lookup through a directory without x for anyone is EACCES even when the file is readable',
    as: USER,
    setup: [dir('d'), file('d/e', 'abc', { mode: 0o644 }), dir('d', { mode: 0o666 })],
    action: ({ fs, p }) => fs.readFile(p('d', 'e'), 'utf8'),
    expect: 'EACCES',
  },
];
