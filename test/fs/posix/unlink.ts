// unlink: the name goes, the inode lives while it is open or has other names, the errors, the
// timestamps, and that removing a name needs w and x on its directory (not any bit on the file).

import assert from 'node:assert/strict';
import { dir, file, hardlink, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'unlink removes the name',
    setup: [file('f', 'abc')],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
    check: async (t) => assert.equal(await t.exists('f'), false),
  },
  {
    name: 'unlink of a missing name is ENOENT',
    action: ({ fs, p }) => fs.unlink(p('missing')),
    expect: 'ENOENT',
  },
  {
    name: 'unlink of a directory is EISDIR (Linux)',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.unlink(p('d')),
    expect: 'EISDIR',
  },
  {
    name: 'unlink of a name under a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.unlink(p('f/x')),
    expect: 'ENOTDIR',
  },
  {
    name: 'unlink of a symlink removes the link, not its target',
    setup: [file('f', 'abc'), symlink('l', 'f')],
    action: ({ fs, p }) => fs.unlink(p('l')),
    expect: 'ok',
    check: async (t) => {
      assert.equal(await t.exists('l'), false);
      assert.equal(await t.read('f'), 'abc');
    },
  },
  {
    name: 'an unlinked file stays readable and writable through a handle opened before',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await fs.unlink(p('f'));
        await handle.write('def', 3);
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(10), 0, 10, 0);
        return buffer.subarray(0, bytesRead).toString();
      } finally {
        await handle.close();
      }
    },
    expect: { value: 'abcdef' },
    check: async (t) => assert.equal(await t.exists('f'), false),
  },
  {
    name: 'a name unlinked and made again is a new file; a handle on the old one still reads the old data',
    setup: [file('f', 'old data')],
    action: async ({ fs, p }) => {
      const old = await fs.open(p('f'), 'r');
      try {
        const oldIno = (await old.stat()).ino;
        await fs.unlink(p('f'));
        await fs.writeFile(p('f'), 'new');
        const { bytesRead, buffer } = await old.read(Buffer.alloc(20), 0, 20, 0);
        return { oldData: buffer.subarray(0, bytesRead).toString(), newData: await fs.readFile(p('f'), 'utf8'), newInode: (await fs.stat(p('f'))).ino !== oldIno };
      } finally {
        await old.close();
      }
    },
    expect: { value: { oldData: 'old data', newData: 'new', newInode: true } },
  },
  {
    name: "unlink advances the directory's mtime and ctime, and the ctime of a file that keeps another name",
    setup: [file('f', 'abc'), hardlink('g', 'f')],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
    timestamps: { '.': 'mtime ctime', g: 'ctime' },
  },
  {
    name: 'unlink of a file whose mode is 000 is allowed: only the directory counts',
    as: USER,
    setup: [dir('.', { mode: 0o777 }), file('f', 'abc', { mode: 0 })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
  },
  ...permissionMatrix({
    operation: 'unlink d/e',
    object: 'dir',
    needs: 'wx',
    action: ({ fs, p }) => fs.unlink(p('d', 'e')),
    allowed: async (t) => assert.equal(await t.exists('d/e'), false),
  }),
];
