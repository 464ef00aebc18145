// rename: what may replace what, the no-ops, moving into oneself, '..' and link counts when a
// directory changes parents, the timestamps, RENAME_NOREPLACE / RENAME_EXCHANGE, and EXDEV.

import assert from 'node:assert/strict';
import { dir, file, hardlink, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'rename gives a file a new name: same inode, the old name is gone',
    setup: [file('a', 'abc')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'ok',
    check: async (t) => {
      assert.equal((await t.stat('b')).ino, t.before('a').ino);
      assert.equal(await t.exists('a'), false);
    },
  },
  {
    name: 'rename over an existing file replaces it; the replaced inode loses its last link but stays readable while open',
    setup: [file('a', 'new'), file('b', 'old')],
    action: async ({ fs, p }) => {
      const replaced = await fs.open(p('b'), 'r');
      try {
        await fs.rename(p('a'), p('b'));
        const { bytesRead, buffer } = await replaced.read(Buffer.alloc(10), 0, 10, 0);
        return {
          nlinkOfReplaced: (await replaced.stat()).nlink,
          replacedStillReads: buffer.subarray(0, bytesRead).toString(),
          content: await fs.readFile(p('b'), 'utf8'),
          names: (await fs.readdir(p('.'))).sort(),
        };
      } finally {
        await replaced.close();
      }
    },
    expect: { value: { nlinkOfReplaced: 0, replacedStillReads: 'old', content: 'new', names: ['b'] } },
  },
  {
    name: 'renames of 10 files onto one name at once all succeed; the name holds one of them and nothing else is left',
    setup: [file('f0', '0'), file('f1', '1'), file('f2', '2'), file('f3', '3'), file('f4', '4'), file('f5', '5'), file('f6', '6'), file('f7', '7'), file('f8', '8'), file('f9', '9')],
    action: async ({ fs, p }) => {
      await Promise.all(Array.from({ length: 10 }, (_, i) => fs.rename(p(`f${i}`), p('target'))));
      const content = await fs.readFile(p('target'), 'utf8');
      return { names: await fs.readdir(p('.')), oneOfThem: /^\d$/.test(content), nlink: (await fs.stat(p('target'))).nlink };
    },
    expect: { value: { names: ['target'], oneOfThem: true, nlink: 1 } },
  },
  {
    name: "rename of a directory over an empty directory replaces it and the parent's nlink drops by one",
    setup: [dir('a'), file('a/inside'), dir('b')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'ok',
    check: async (t) => {
      assert.deepEqual(await t.exists('b/inside'), true);
      assert.equal(await t.exists('a'), false);
      assert.equal((await t.stat('.')).nlink, t.before('.').nlink - 1n);
    },
  },
  {
    name: 'rename of a directory over a non-empty directory is ENOTEMPTY',
    setup: [dir('a'), dir('b'), file('b/f')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'ENOTEMPTY',
    check: async (t) => assert.ok(await t.exists('a')),
  },
  {
    name: 'rename of a directory over a file is ENOTDIR',
    setup: [dir('a'), file('b')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'ENOTDIR',
  },
  {
    name: 'rename of a file over a directory is EISDIR',
    setup: [file('a'), dir('b')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'EISDIR',
  },
  {
    name: 'rename between two hard links of one inode does nothing: both names stay',
    setup: [file('a', 'abc'), hardlink('b', 'a')],
    action: ({ fs, p }) => fs.rename(p('a'), p('b')),
    expect: 'ok',
    check: async (t) => {
      assert.equal((await t.stat('a')).nlink, 2n);
      assert.equal((await t.stat('b')).ino, (await t.stat('a')).ino);
    },
  },
  {
    name: 'rename of a name to itself does nothing',
    setup: [file('a', 'abc')],
    action: ({ fs, p }) => fs.rename(p('a'), p('a')),
    expect: 'ok',
    check: async (t) => assert.equal(await t.read('a'), 'abc'),
  },
  {
    name: 'rename of a directory into its own subdirectory is EINVAL',
    setup: [dir('d'), dir('d/sub')],
    action: ({ fs, p }) => fs.rename(p('d'), p('d/sub/d')),
    expect: 'EINVAL',
    check: async (t) => assert.ok(await t.exists('d/sub')),
  },
  {
    name: 'rename of a directory to a name inside itself is EINVAL',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.rename(p('d'), p('d/x')),
    expect: 'EINVAL',
  },
  {
    name: 'rename of a directory over one of its ancestors is ENOTEMPTY',
    setup: [dir('d'), dir('d/sub')],
    action: ({ fs, p }) => fs.rename(p('d/sub'), p('d')),
    expect: 'ENOTEMPTY',
  },
  {
    name: "rename of 'd/.' is EBUSY (Linux)",
    setup: [dir('d')],
    action: ({ fs, p }) => fs.rename(p('d/.'), p('e')),
    expect: 'EBUSY',
  },
  {
    name: 'rename of a missing name is ENOENT',
    action: ({ fs, p }) => fs.rename(p('missing'), p('b')),
    expect: 'ENOENT',
  },
  {
    name: 'rename into a missing directory is ENOENT',
    setup: [file('a')],
    action: ({ fs, p }) => fs.rename(p('a'), p('missing/a')),
    expect: 'ENOENT',
    check: async (t) => assert.ok(await t.exists('a')),
  },
  {
    name: 'rename of a regular file named with a trailing slash is ENOTDIR',
    setup: [file('a')],
    action: ({ fs, p }) => fs.rename(p('a/'), p('b')),
    expect: 'ENOTDIR',
  },
  {
    name: "a directory moved to another parent: its '..' follows, the old parent's nlink drops, the new one's grows",
    setup: [dir('d1'), dir('d2'), dir('d1/sub'), file('d1/sub/f', 'abc')],
    action: ({ fs, p }) => fs.rename(p('d1/sub'), p('d2/sub')),
    expect: 'ok',
    check: async (t) => {
      assert.equal((await t.stat('d2/sub/..')).ino, (await t.stat('d2')).ino);
      assert.equal((await t.stat('d1')).nlink, 2n);
      assert.equal((await t.stat('d2')).nlink, 3n);
      assert.equal(await t.read('d2/sub/f'), 'abc');
    },
  },
  {
    name: 'a file moved to another directory: its ctime and both parents\' mtime and ctime advance',
    setup: [dir('d1'), dir('d2'), file('d1/f', 'abc')],
    action: ({ fs, p }) => fs.rename(p('d1/f'), p('d2/f')),
    expect: 'ok',
    timestamps: { 'd1/f -> d2/f': 'ctime', d1: 'mtime ctime', d2: 'mtime ctime' },
  },
  {
    name: 'a symlink is renamed itself, not its target',
    setup: [file('f', 'abc'), symlink('l', 'f')],
    action: ({ fs, p }) => fs.rename(p('l'), p('m')),
    expect: 'ok',
    check: async (t) => {
      assert.ok((await t.stat('m')).isSymbolicLink());
      assert.equal(await t.read('f'), 'abc');
    },
  },
  {
    name: 'moving a directory to another parent needs w on the directory itself (its .. changes): EACCES',
    as: USER,
    setup: [dir('.', { mode: 0o777 }), dir('d1', { owner: USER, mode: 0o777 }), dir('d2', { owner: USER, mode: 0o777 }), dir('d1/sub', { owner: USER, mode: 0o555 })],
    action: ({ fs, p }) => fs.rename(p('d1/sub'), p('d2/sub')),
    expect: 'EACCES',
  },
  {
    name: 'renaming a directory within its parent does not need w on it',
    as: USER,
    setup: [dir('.', { mode: 0o777 }), dir('d1', { owner: USER, mode: 0o777 }), dir('d1/sub', { owner: USER, mode: 0o555 })],
    action: ({ fs, p }) => fs.rename(p('d1/sub'), p('d1/renamed')),
    expect: 'ok',
  },
  {
    name: 'rename to a directory on another file system is EXDEV',
    setup: [file('f', 'abc')],
    action: ({ fs, p, elsewhere }) => fs.rename(p('f'), `${elsewhere}/moved-${Date.now()}`),
    expect: 'EXDEV',
    check: async (t) => assert.equal(await t.read('f'), 'abc'),
  },
  {
    name: 'RENAME_NOREPLACE onto an existing name is EEXIST and changes nothing',
    setup: [file('a', 'A'), file('b', 'B')],
    action: ({ py, p }) => py('renameat2(args[0], args[1], 1)', p('a'), p('b')),
    expect: 'EEXIST',
    check: async (t) => assert.deepEqual([await t.read('a'), await t.read('b')], ['A', 'B']),
  },
  {
    name: 'RENAME_NOREPLACE onto a free name renames',
    setup: [file('a', 'A')],
    action: ({ py, p }) => py('renameat2(args[0], args[1], 1)', p('a'), p('b')),
    expect: 'ok',
    check: async (t) => assert.equal(await t.read('b'), 'A'),
  },
  {
    name: "RENAME_EXCHANGE swaps a file and a directory across parents (and the directory's '..')",
    setup: [dir('d1'), dir('d2'), file('d1/x', 'file'), dir('d2/y'), file('d2/y/inside')],
    action: ({ py, p }) => py('renameat2(args[0], args[1], 2)', p('d1/x'), p('d2/y')),
    expect: 'ok',
    check: async (t) => {
      assert.equal(await t.read('d2/y'), 'file');
      assert.ok(await t.exists('d1/x/inside'));
      assert.equal((await t.stat('d1/x/..')).ino, (await t.stat('d1')).ino);
      assert.equal((await t.stat('d1')).nlink, 3n);
      assert.equal((await t.stat('d2')).nlink, 2n);
    },
  },
  {
    name: 'RENAME_EXCHANGE with a missing name is ENOENT',
    setup: [file('a')],
    action: ({ py, p }) => py('renameat2(args[0], args[1], 2)', p('a'), p('b')),
    expect: 'ENOENT',
  },
];
