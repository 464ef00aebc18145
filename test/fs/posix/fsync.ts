// fsync, fdatasync, fsyncdir, flush and release: each succeeds on the handles it applies to, and
// what was written before close is there when the file is opened again.

import { dir, file, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'fsync and fdatasync of a file opened for writing succeed',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.write('durable', 0);
        await handle.sync();
        await handle.datasync();
      } finally {
        await handle.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: 'durable' },
  },
  {
    name: 'fsync of a file opened read-only succeeds',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
    expect: 'ok',
  },
  {
    name: 'fsync and fdatasync of a directory handle (fsyncdir) succeed',
    setup: [dir('d'), file('d/f')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('d'), 'r');
      try {
        await handle.sync();
        await handle.datasync();
      } finally {
        await handle.close();
      }
    },
    expect: 'ok',
  },
  {
    name: 'close (flush + release) of one of two handles leaves the other working',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const first = await fs.open(p('f'), 'r+');
      const second = await fs.open(p('f'), 'r+');
      await first.write('X', 0);
      await first.close();
      try {
        await second.write('Y', 1);
        const { buffer } = await second.read(Buffer.alloc(3), 0, 3, 0);
        return buffer.toString();
      } finally {
        await second.close();
      }
    },
    expect: { value: 'XYc' },
  },
  {
    name: 'data written and closed is read back by a new open (close-to-open)',
    action: async ({ fs, p }) => {
      for (let round = 0; round < 5; round++) {
        const handle = await fs.open(p('f'), 'a');
        await handle.write(`${round}`);
        await handle.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: '01234' },
  },
  {
    name: 'fsync after unlink of the name still succeeds on the open handle',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await fs.unlink(p('f'));
        await handle.write('def', 3);
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
    expect: 'ok',
  },
];
