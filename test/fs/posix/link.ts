// link: hard-link counts of files (up with link, down with unlink) and of directories (2 + one per
// subdirectory), what cannot be linked, the timestamps, EXDEV, and protected_hardlinks.

import assert from 'node:assert/strict';
import { dir, file, OTHER, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'link makes a second name for the same inode; both report nlink 2',
    setup: [file('a', 'abc')],
    action: ({ fs, p }) => fs.link(p('a'), p('b')),
    expect: 'ok',
    check: async (t) => {
      const [a, b] = [await t.stat('a'), await t.stat('b')];
      assert.equal(a.ino, b.ino);
      assert.deepEqual([a.nlink, b.nlink], [2n, 2n]);
    },
  },
  {
    name: 'nlink counts every name: 1, 2, 3 after two links, then 2, 1 as they are unlinked; the data stays',
    setup: [file('a', 'abc')],
    action: async ({ fs, p }) => {
      const counts: number[] = [(await fs.stat(p('a'))).nlink];
      await fs.link(p('a'), p('b'));
      counts.push((await fs.stat(p('a'))).nlink);
      await fs.mkdir(p('d'));
      await fs.link(p('b'), p('d/c'));
      counts.push((await fs.stat(p('d/c'))).nlink);
      await fs.unlink(p('a'));
      counts.push((await fs.stat(p('b'))).nlink);
      await fs.unlink(p('b'));
      counts.push((await fs.stat(p('d/c'))).nlink);
      return { counts, content: await fs.readFile(p('d/c'), 'utf8') };
    },
    expect: { value: { counts: [1, 2, 3, 2, 1], content: 'abc' } },
  },
  {
    name: '30 concurrent links to one file: nlink is 31, then 1 after 30 concurrent unlinks',
    setup: [file('a', 'abc')],
    action: async ({ fs, p }) => {
      const names = Array.from({ length: 30 }, (_, i) => p(`link-${i}`));
      await Promise.all(names.map((name) => fs.link(p('a'), name)));
      const linked = (await fs.stat(p('a'))).nlink;
      await Promise.all(names.map((name) => fs.unlink(name)));
      return [linked, (await fs.stat(p('a'))).nlink];
    },
    expect: { value: [31, 1] },
  },
  {
    name: 'a write through one name is seen through the other',
    setup: [file('a', 'abc')],
    action: async ({ fs, p }) => {
      await fs.link(p('a'), p('b'));
      await fs.appendFile(p('b'), 'def');
      return fs.readFile(p('a'), 'utf8');
    },
    expect: { value: 'abcdef' },
  },
  {
    name: 'a directory has nlink 2 + its subdirectories; files do not count',
    setup: [dir('d')],
    action: async ({ fs, p }) => {
      await Promise.all(['s1', 's2', 's3'].map((name) => fs.mkdir(p('d', name))));
      await Promise.all(['f1', 'f2'].map((name) => fs.writeFile(p('d', name), '')));
      const three = (await fs.stat(p('d'))).nlink;
      await fs.rmdir(p('d/s2'));
      return [three, (await fs.stat(p('d'))).nlink];
    },
    expect: { value: [5, 4] },
  },
  {
    name: 'link onto an existing name is EEXIST',
    setup: [file('a'), file('b', 'keep')],
    action: ({ fs, p }) => fs.link(p('a'), p('b')),
    expect: 'EEXIST',
    check: async (t) => assert.equal(await t.read('b'), 'keep'),
  },
  {
    name: 'link of a directory is EPERM',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.link(p('d'), p('e')),
    expect: 'EPERM',
  },
  {
    name: 'link of a missing name is ENOENT',
    action: ({ fs, p }) => fs.link(p('missing'), p('b')),
    expect: 'ENOENT',
  },
  {
    name: 'link into a missing directory is ENOENT',
    setup: [file('a')],
    action: ({ fs, p }) => fs.link(p('a'), p('missing/b')),
    expect: 'ENOENT',
  },
  {
    name: 'link of a symlink links the symlink itself (linkat without AT_SYMLINK_FOLLOW)',
    setup: [file('f'), symlink('l', 'f')],
    action: ({ fs, p }) => fs.link(p('l'), p('m')),
    expect: 'ok',
    check: async (t) => {
      const m = await t.stat('m');
      assert.ok(m.isSymbolicLink());
      assert.equal(m.nlink, 2n);
      assert.equal((await t.stat('f')).nlink, 1n);
    },
  },
  {
    name: "link advances the file's ctime and the directory's mtime and ctime, not the file's mtime",
    setup: [file('a', 'abc')],
    action: ({ fs, p }) => fs.link(p('a'), p('b')),
    expect: 'ok',
    timestamps: { a: 'ctime', '.': 'mtime ctime' },
  },
  {
    name: 'link to a directory on another file system is EXDEV',
    setup: [file('f')],
    action: ({ fs, p, elsewhere }) => fs.link(p('f'), `${elsewhere}/linked-${Date.now()}`),
    expect: 'EXDEV',
  },
  {
    name: "link by a user of someone else's file it cannot read or write is EPERM (fs.protected_hardlinks = 1)",
    as: USER,
    requires: { sysctl: 'fs/protected_hardlinks', value: '1' },
    setup: [dir('.', { mode: 0o777 }), file('f', 'secret', { owner: OTHER, mode: 0o600 })],
    action: ({ fs, p }) => fs.link(p('f'), p('mine')),
    expect: 'EPERM',
  },
  {
    name: "link by a user of someone else's file it can read and write is allowed",
    as: USER,
    setup: [dir('.', { mode: 0o777 }), file('f', 'shared', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.link(p('f'), p('mine')),
    expect: 'ok',
  },
];
