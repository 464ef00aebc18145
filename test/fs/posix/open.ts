// open and release: which flags a file, a directory and a symlink accept, O_TRUNC, and the
// permission each access mode needs (checked at open, not at each read or write).

import assert from 'node:assert/strict';
import { dir, file, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'open of a missing name without O_CREAT is ENOENT',
    action: ({ fs, p }) => fs.open(p('missing'), 'r'),
    expect: 'ENOENT',
  },
  {
    name: 'a directory opens read-only',
    setup: [dir('d')],
    action: async ({ fs, p }) => (await fs.open(p('d'), 'r')).close(),
    expect: 'ok',
  },
  {
    name: 'a directory opened for writing is EISDIR',
    setup: [dir('d')],
    action: async ({ fs, p, constants }) => fs.open(p('d'), constants.O_WRONLY),
    expect: 'EISDIR',
  },
  {
    name: 'a directory opened read-write is EISDIR',
    setup: [dir('d')],
    action: async ({ fs, p }) => fs.open(p('d'), 'r+'),
    expect: 'EISDIR',
  },
  {
    name: 'O_DIRECTORY on a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p, constants }) => fs.open(p('f'), constants.O_RDONLY | constants.O_DIRECTORY),
    expect: 'ENOTDIR',
  },
  {
    name: 'a regular file named with a trailing slash is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.open(p('f/'), 'r'),
    expect: 'ENOTDIR',
  },
  {
    name: 'O_NOFOLLOW on a symlink is ELOOP',
    setup: [file('f'), symlink('l', 'f')],
    action: ({ fs, p, constants }) => fs.open(p('l'), constants.O_RDONLY | constants.O_NOFOLLOW),
    expect: 'ELOOP',
  },
  {
    name: 'O_TRUNC empties the file and advances mtime and ctime',
    setup: [file('f', 'some data')],
    action: async ({ fs, p }) => (await fs.open(p('f'), 'w')).close(),
    expect: 'ok',
    timestamps: { f: 'mtime ctime' },
    check: async (t) => assert.equal((await t.stat('f')).size, 0n),
  },
  {
    name: 'O_TRUNC of an empty file still advances mtime and ctime',
    setup: [file('f')],
    action: async ({ fs, p }) => (await fs.open(p('f'), 'w')).close(),
    expect: 'ok',
    timestamps: { f: 'mtime ctime' },
  },
  {
    name: 'a handle opened before chmod 000 keeps reading and writing (permission is checked at open)',
    as: USER,
    setup: [file('f', 'abc', { owner: USER, mode: 0o600 })],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await fs.chmod(p('f'), 0);
        await handle.write('X', 0);
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(3), 0, 3, 0);
        return buffer.subarray(0, bytesRead).toString();
      } finally {
        await handle.close();
      }
    },
    expect: { value: 'Xbc' },
  },
  {
    name: 'many handles on one file open and close independently',
    setup: [file('f', 'shared')],
    action: async ({ fs, p }) => {
      const handles = await Promise.all(Array.from({ length: 20 }, () => fs.open(p('f'), 'r')));
      await Promise.all(handles.slice(0, 10).map((handle) => handle.close()));
      const texts = await Promise.all(handles.slice(10).map(async (handle) => (await handle.read(Buffer.alloc(6), 0, 6, 0)).buffer.toString()));
      await Promise.all(handles.slice(10).map((handle) => handle.close()));
      return [...new Set(texts)];
    },
    expect: { value: ['shared'] },
  },
  ...permissionMatrix({
    operation: 'open O_RDONLY',
    object: 'file',
    needs: 'r',
    action: async ({ fs, p }) => (await fs.open(p('f'), 'r')).close(),
  }),
  ...permissionMatrix({
    operation: 'open O_WRONLY',
    object: 'file',
    needs: 'w',
    action: async ({ fs, p, constants }) => (await fs.open(p('f'), constants.O_WRONLY)).close(),
  }),
  ...permissionMatrix({
    operation: 'open O_RDWR',
    object: 'file',
    needs: 'rw',
    action: async ({ fs, p }) => (await fs.open(p('f'), 'r+')).close(),
  }),
];
