// mkdir: the new directory's mode, owner and link counts, the parent's link count and timestamps,
// the errors, and that it needs w and x on the parent.

import assert from 'node:assert/strict';
import { dir, file, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'mkdir makes an empty directory with the mode asked for, less the umask 022, and nlink 2',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'), 0o777);
      const stats = await fs.stat(p('d'));
      return { dir: stats.isDirectory(), mode: stats.mode & 0o7777, nlink: stats.nlink, entries: await fs.readdir(p('d')) };
    },
    expect: { value: { dir: true, mode: 0o755, nlink: 2, entries: [] } },
  },
  {
    name: 'mkdir keeps the sticky bit it is asked for and drops the set-id bits (outside a set-group-ID directory)',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'), 0o7777);
      return (await fs.stat(p('d'))).mode & 0o7777;
    },
    expect: { value: 0o1755 },
  },
  {
    name: '10 concurrent mkdir of one name: exactly one wins, the parent gains exactly one link',
    action: async ({ fs, p }) => {
      const outcomes = await Promise.all(Array.from({ length: 10 }, () => fs.mkdir(p('d')).then(() => 'made', (error: { code?: string }) => error.code)));
      return { made: outcomes.filter((outcome) => outcome === 'made').length, eexist: outcomes.filter((outcome) => outcome === 'EEXIST').length, parentLinks: (await fs.stat(p('.'))).nlink };
    },
    expect: { value: { made: 1, eexist: 9, parentLinks: 3 } },
  },
  {
    name: "mkdir adds one to the parent's nlink and advances its mtime and ctime",
    setup: [dir('d')],
    action: ({ fs, p }) => fs.mkdir(p('d/sub')),
    expect: 'ok',
    timestamps: { d: 'mtime ctime' },
    check: async (t) => assert.equal((await t.stat('d')).nlink, 3n),
  },
  {
    name: 'a directory made by a user belongs to that user',
    as: USER,
    setup: [dir('.', { mode: 0o777 })],
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'));
      const stats = await fs.stat(p('d'));
      return { uid: stats.uid, gid: stats.gid };
    },
    expect: { value: { uid: 65534, gid: 65534 } },
  },
  {
    name: 'mkdir of an existing directory is EEXIST',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.mkdir(p('d')),
    expect: 'EEXIST',
  },
  {
    name: 'mkdir over an existing file is EEXIST',
    setup: [file('f')],
    action: ({ fs, p }) => fs.mkdir(p('f')),
    expect: 'EEXIST',
  },
  {
    name: 'mkdir over a dangling symlink is EEXIST (the link is not followed)',
    setup: [symlink('l', 'target')],
    action: ({ fs, p }) => fs.mkdir(p('l')),
    expect: 'EEXIST',
    check: async (t) => assert.equal(await t.exists('target'), false),
  },
  {
    name: 'mkdir in a missing parent is ENOENT',
    action: ({ fs, p }) => fs.mkdir(p('missing/d')),
    expect: 'ENOENT',
  },
  {
    name: 'mkdir under a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.mkdir(p('f/d')),
    expect: 'ENOTDIR',
  },
  {
    name: 'mkdir with a trailing slash makes the directory',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d/'));
      return (await fs.stat(p('d'))).isDirectory();
    },
    expect: { value: true },
  },
  ...permissionMatrix({
    operation: 'mkdir d/new',
    object: 'dir',
    needs: 'wx',
    action: ({ fs, p }) => fs.mkdir(p('d', 'new')),
    allowed: async (t) => assert.ok((await t.stat('d/new')).isDirectory()),
  }),
];
