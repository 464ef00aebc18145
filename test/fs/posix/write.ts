// write: data at any offset (gaps read as zeros), sizes, the handle's access mode, which timestamps
// move, and that a write by someone else clears the set-user-ID bit.

import assert from 'node:assert/strict';
import { file, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'a write in the middle replaces bytes and keeps the size',
    setup: [file('f', '0123456789')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.write('abc', 4);
      } finally {
        await handle.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: '0123abc789' },
  },
  {
    name: 'a write past EOF extends the file and the gap reads as zeros',
    setup: [file('f', 'ab')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.write('z', 10);
      } finally {
        await handle.close();
      }
      return (await fs.readFile(p('f'))).toString('hex');
    },
    expect: { value: '6162' + '00'.repeat(8) + '7a' },
  },
  {
    name: 'a 1 MiB write at an odd offset reads back, and the size is offset + length',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const data = Buffer.alloc(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
      const handle = await fs.open(p('f'), 'r+');
      try {
        const { bytesWritten } = await handle.write(data, 0, data.length, 12_345);
        const back = Buffer.alloc(data.length);
        await handle.read(back, 0, back.length, 12_345);
        return { bytesWritten, same: back.equals(data), size: (await handle.stat()).size };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { bytesWritten: 1 << 20, same: true, size: 12_345 + (1 << 20) } },
  },
  {
    name: 'a write at 5 GiB (past 32 bits) reads back there, and the file is sparse before it',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.write('far', 5 * 2 ** 30);
        const { buffer } = await handle.read(Buffer.alloc(5), 0, 5, 5 * 2 ** 30 - 2);
        const stats = await handle.stat();
        return { bytes: buffer.toString('hex'), size: stats.size, sparse: stats.blocks * 512 < 2 ** 30 };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { bytes: '0000666172', size: 5 * 2 ** 30 + 3, sparse: true } },
  },
  {
    name: 'write on a handle opened read-only is EBADF',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r');
      try {
        return await handle.write('x', 0);
      } finally {
        await handle.close();
      }
    },
    expect: 'EBADF',
    check: async (t) => assert.equal(await t.read('f'), 'abc'),
  },
  {
    name: 'write advances mtime and ctime, not atime',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.write('x', 1);
      } finally {
        await handle.close();
      }
    },
    expect: 'ok',
    timestamps: { f: 'mtime ctime', '.': '' },
  },
  {
    name: 'a write by a user who is not the owner clears the set-user-ID bit',
    as: USER,
    setup: [file('f', 'abc', { mode: 0o4777 })],
    action: ({ fs, p }) => fs.appendFile(p('f'), 'x'),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o777),
  },
  {
    name: 'a write of zero bytes changes nothing',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        return (await handle.write(Buffer.alloc(0), 0, 0, 100)).bytesWritten;
      } finally {
        await handle.close();
      }
    },
    expect: { value: 0 },
    check: async (t) => assert.equal((await t.stat('f')).size, 3n),
  },
];
