// create (open with O_CREAT): the new file's mode (the umask applies), owner (the caller) and
// timestamps, O_EXCL, what an existing name does, and that creating needs w and x on the directory.

import assert from 'node:assert/strict';
import { dir, file, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'O_CREAT makes an empty regular file with the mode asked for, less the umask 022',
    action: async ({ fs, p }) => {
      await (await fs.open(p('f'), 'w', 0o666)).close();
      const stats = await fs.stat(p('f'));
      return { file: stats.isFile(), size: stats.size, mode: stats.mode & 0o7777, nlink: stats.nlink };
    },
    expect: { value: { file: true, size: 0, mode: 0o644, nlink: 1 } },
  },
  {
    name: 'a file made by a user belongs to that user and its group',
    as: USER,
    setup: [dir('d', { mode: 0o777 })],
    action: async ({ fs, p }) => {
      await fs.writeFile(p('d/f'), 'x');
      const stats = await fs.stat(p('d/f'));
      return { uid: stats.uid, gid: stats.gid };
    },
    expect: { value: { uid: 65534, gid: 65534 } },
  },
  {
    name: "create sets the file's atime = mtime = ctime, and advances the parent's mtime and ctime",
    setup: [dir('d')],
    action: ({ fs, p }) => fs.writeFile(p('d/f'), ''),
    expect: 'ok',
    timestamps: { d: 'mtime ctime' },
    check: async (t) => {
      const stats = await t.stat('d/f');
      assert.equal(stats.atimeNs, stats.mtimeNs);
      assert.equal(stats.mtimeNs, stats.ctimeNs);
      assert.ok(stats.ctimeNs > t.before('d').ctimeNs, 'the new file is newer than the parent was');
    },
  },
  {
    name: 'O_CREAT | O_EXCL on an existing file is EEXIST',
    setup: [file('f', 'keep')],
    action: ({ fs, p }) => fs.open(p('f'), 'wx'),
    expect: 'EEXIST',
    check: async (t) => assert.equal(await t.read('f'), 'keep'),
  },
  {
    name: 'O_CREAT | O_EXCL on a dangling symlink is EEXIST (the link is not followed)',
    setup: [symlink('l', 'target')],
    action: ({ fs, p }) => fs.open(p('l'), 'wx'),
    expect: 'EEXIST',
    check: async (t) => assert.equal(await t.exists('target'), false),
  },
  {
    name: '20 concurrent O_CREAT | O_EXCL of one name: exactly one wins, the others get EEXIST',
    action: async ({ fs, p }) => {
      const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => fs.open(p('f'), 'wx').then(
        async (handle) => {
          await handle.write(`winner ${i}`);
          await handle.close();
          return 'created';
        },
        (error: { code?: string }) => error.code ?? 'no code')));
      const created = outcomes.filter((outcome) => outcome === 'created').length;
      const eexist = outcomes.filter((outcome) => outcome === 'EEXIST').length;
      return { created, eexist, content: (await fs.readFile(p('f'), 'utf8')).startsWith('winner ') };
    },
    expect: { value: { created: 1, eexist: 19, content: true } },
  },
  {
    name: 'O_CREAT without O_EXCL through a dangling symlink creates the target',
    setup: [symlink('l', 'target')],
    action: ({ fs, p }) => fs.writeFile(p('l'), 'via link'),
    expect: 'ok',
    check: async (t) => assert.equal(await t.read('target'), 'via link'),
  },
  {
    name: 'O_CREAT without O_TRUNC on an existing file opens it and keeps its data',
    setup: [file('f', 'keep')],
    action: async ({ fs, p, constants }) => (await fs.open(p('f'), constants.O_CREAT | constants.O_WRONLY)).close(),
    expect: 'ok',
    check: async (t) => assert.equal(await t.read('f'), 'keep'),
  },
  {
    name: 'O_CREAT on an existing directory for writing is EISDIR',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.open(p('d'), 'w'),
    expect: 'EISDIR',
  },
  {
    name: 'create in a missing directory is ENOENT',
    action: ({ fs, p }) => fs.writeFile(p('missing/f'), ''),
    expect: 'ENOENT',
  },
  {
    name: 'create under a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.writeFile(p('f/g'), ''),
    expect: 'ENOTDIR',
  },
  {
    name: 'creating a name with a trailing slash is EISDIR',
    action: ({ fs, p }) => fs.writeFile(p('f/'), ''),
    expect: 'EISDIR',
  },
  ...permissionMatrix({
    operation: 'create d/new',
    object: 'dir',
    needs: 'wx',
    action: ({ fs, p }) => fs.writeFile(p('d', 'new'), 'x'),
    allowed: async (t) => assert.equal(await t.read('d/new'), 'x'),
  }),
];
