// read: data as written, short reads at EOF, zeros in holes, the errors of a wrong handle, and the
// atime rule of relatime (a read moves atime only when it is not newer than mtime or ctime).

import { dir, file, times, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'read returns the bytes written',
    setup: [file('f', 'the quick brown fox')],
    action: ({ fs, p }) => fs.readFile(p('f'), 'utf8'),
    expect: { value: 'the quick brown fox' },
  },
  {
    name: 'a read that straddles EOF is short; at EOF and past EOF it returns 0 bytes',
    setup: [file('f', '0123456789')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r');
      try {
        const at = async (position: number): Promise<string> => {
          const { bytesRead, buffer } = await handle.read(Buffer.alloc(8), 0, 8, position);
          return buffer.subarray(0, bytesRead).toString();
        };
        return [await at(6), await at(10), await at(11), await at(1 << 30)];
      } finally {
        await handle.close();
      }
    },
    expect: { value: ['6789', '', '', ''] },
  },
  {
    name: 'a hole reads as zeros, in the middle and across a block boundary',
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'w+');
      try {
        await handle.write('A', 0);
        await handle.write('Z', 3 * 65536 + 5);
        const { buffer } = await handle.read(Buffer.alloc(3 * 65536 + 6), 0, 3 * 65536 + 6, 0);
        const zeros = buffer.subarray(1, 3 * 65536 + 5).every((byte) => byte === 0);
        return { first: buffer.toString('latin1', 0, 1), last: buffer.toString('latin1', 3 * 65536 + 5), zeros, size: (await handle.stat()).size };
      } finally {
        await handle.close();
      }
    },
    expect: { value: { first: 'A', last: 'Z', zeros: true, size: 3 * 65536 + 6 } },
  },
  {
    name: 'a 3 MiB file reads back byte for byte',
    action: async ({ fs, p }) => {
      const data = Buffer.alloc(3 << 20);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      await fs.writeFile(p('f'), data);
      return Buffer.compare(await fs.readFile(p('f')), data);
    },
    expect: { value: 0 },
  },
  {
    name: 'read on a handle opened write-only is EBADF',
    setup: [file('f', 'abc')],
    action: async ({ fs, p, constants }) => {
      const handle = await fs.open(p('f'), constants.O_WRONLY);
      try {
        return await handle.read(Buffer.alloc(3), 0, 3, 0);
      } finally {
        await handle.close();
      }
    },
    expect: 'EBADF',
  },
  {
    name: 'read on a directory handle is EISDIR',
    setup: [dir('d')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('d'), 'r');
      try {
        return await handle.read(Buffer.alloc(3), 0, 3, 0);
      } finally {
        await handle.close();
      }
    },
    expect: 'EISDIR',
  },
  {
    name: 'relatime: a read moves an atime older than mtime, and nothing else',
    setup: [file('f', 'abc'), times('f', 1_000_000_000_000_000_000n, 1_500_000_000_000_000_000n)],
    action: ({ fs, p }) => fs.readFile(p('f'), 'utf8'),
    expect: { value: 'abc' },
    timestamps: { f: 'atime' },
  },
  {
    name: 'relatime: a read moves atime once; the next read leaves it (now newer than mtime and ctime)',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      await fs.readFile(p('f'));
      const first = (await fs.stat(p('f'), { bigint: true })).atimeNs;
      await new Promise((resolve) => setTimeout(resolve, 20));
      await fs.readFile(p('f'));
      const second = (await fs.stat(p('f'), { bigint: true })).atimeNs;
      return first === second;
    },
    expect: { value: true },
    timestamps: { f: 'atime' },
  },
  {
    name: 'relatime: a read leaves an atime that is newer than mtime and ctime and less than a day old',
    setup: [file('f', 'abc')],
    action: async ({ fs, p, py }) => {
      const future = (BigInt(Date.now()) + 3_600_000n) * 1_000_000n;
      await py('utimensat(args[0], int(args[1]), "omit")', p('f'), future.toString());
      const set = (await fs.stat(p('f'), { bigint: true })).atimeNs;
      await fs.readFile(p('f'));
      return { set: set === future, after: (await fs.stat(p('f'), { bigint: true })).atimeNs === future };
    },
    expect: { value: { set: true, after: true } },
  },
];
