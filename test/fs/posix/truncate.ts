// truncate and ftruncate: growing reads as zeros, shrinking drops the tail (and a later grow does
// not bring it back), the errors, the timestamps, and that truncate needs w on the file.

import assert from 'node:assert/strict';
import { dir, file, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'truncate grows a file with zeros',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      await fs.truncate(p('f'), 100_000);
      const data = await fs.readFile(p('f'));
      return { size: data.length, head: data.toString('latin1', 0, 3), zeros: data.subarray(3).every((byte) => byte === 0) };
    },
    expect: { value: { size: 100_000, head: 'abc', zeros: true } },
  },
  {
    name: 'truncate shrinks a file; growing it again shows zeros, not the old tail',
    setup: [file('f', 'abcdefgh')],
    action: async ({ fs, p }) => {
      await fs.truncate(p('f'), 3);
      const short = await fs.readFile(p('f'), 'utf8');
      await fs.truncate(p('f'), 6);
      return { short, regrown: (await fs.readFile(p('f'))).toString('hex') };
    },
    expect: { value: { short: 'abc', regrown: '616263000000' } },
  },
  {
    name: 'truncate to 0 empties a file of several blocks',
    setup: [file('f', Buffer.alloc(300_000, 1))],
    action: async ({ fs, p }) => {
      await fs.truncate(p('f'), 0);
      return (await fs.stat(p('f'))).size;
    },
    expect: { value: 0 },
  },
  {
    name: 'a sparse file of 5 GiB (past 32 bits) reads zeros at its end',
    setup: [file('f', 'head')],
    action: async ({ fs, p }) => {
      await fs.truncate(p('f'), 5 * 2 ** 30);
      const handle = await fs.open(p('f'), 'r');
      try {
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(8), 0, 8, 5 * 2 ** 30 - 4);
        return { size: (await handle.stat()).size, bytesRead, zeros: buffer.subarray(0, bytesRead).every((byte) => byte === 0) };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { size: 5 * 2 ** 30, bytesRead: 4, zeros: true } },
  },
  {
    name: 'ftruncate grows and shrinks through an open handle',
    setup: [file('f', 'abcdef')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.truncate(2);
        const shrunk = (await handle.stat()).size;
        await handle.truncate(4);
        const { buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
        return { shrunk, grown: buffer.toString('hex') };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { shrunk: 2, grown: '61620000' } },
  },
  {
    name: 'ftruncate on a handle opened read-only is EINVAL',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r');
      try {
        await handle.truncate(1);
      } finally {
        await handle.close();
      }
    },
    expect: 'EINVAL',
    check: async (t) => assert.equal(await t.read('f'), 'abc'),
  },
  {
    name: 'truncate to a negative length is EINVAL',
    setup: [file('f', 'abc')],
    action: ({ py, p }) => py('os.truncate(args[0], -1)', p('f')),
    expect: 'EINVAL',
  },
  {
    name: 'truncate of a directory is EISDIR',
    setup: [dir('d')],
    action: ({ fs, p }) => fs.truncate(p('d'), 0),
    expect: 'EISDIR',
  },
  {
    name: 'truncate of a missing file is ENOENT',
    action: ({ fs, p }) => fs.truncate(p('missing'), 0),
    expect: 'ENOENT',
  },
  {
    name: 'truncate that changes the size advances mtime and ctime, not atime',
    setup: [file('f', 'abcdef')],
    action: ({ fs, p }) => fs.truncate(p('f'), 2),
    expect: 'ok',
    timestamps: { f: 'mtime ctime' },
  },
  {
    name: 'truncate by a user with w on the file (not the owner) is allowed',
    as: USER,
    setup: [file('f', 'abcdef', { mode: 0o646 })],
    action: ({ fs, p }) => fs.truncate(p('f'), 1),
    expect: 'ok',
    check: async (t) => assert.equal(await t.read('f'), 'a'),
  },
  {
    name: 'truncate by the owner without w for the owner (r--rw-rw-) is EACCES',
    as: USER,
    setup: [file('f', 'abcdef', { mode: 0o466, owner: USER, group: 0 })],
    action: ({ fs, p }) => fs.truncate(p('f'), 1),
    expect: 'EACCES',
    check: async (t) => assert.equal((await t.stat('f')).size, 6n),
  },
];
