// O_APPEND: every write goes to the current end of file, whatever the handle's position or the
// offset asked for, so two handles appending in turn never overwrite each other.

import { file, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'two O_APPEND handles writing in turn keep every write, in order',
    setup: [file('f', 'start;')],
    action: async ({ fs, p }) => {
      const [a, b] = [await fs.open(p('f'), 'a'), await fs.open(p('f'), 'a')];
      try {
        for (let i = 0; i < 5; i++) {
          await a.write(`a${i};`);
          await b.write(`b${i};`);
        }
      } finally {
        await a.close();
        await b.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: 'start;a0;b0;a1;b1;a2;b2;a3;b3;a4;b4;' },
  },
  {
    name: 'an O_APPEND write at an explicit offset still appends (Linux pwrite with O_APPEND)',
    setup: [file('f', 'abc')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'a');
      try {
        await handle.write('XY', 0);
      } finally {
        await handle.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: 'abcXY' },
  },
  {
    name: 'an O_APPEND handle appends after data another handle wrote since it was opened',
    setup: [file('f', '1')],
    action: async ({ fs, p }) => {
      const appender = await fs.open(p('f'), 'a');
      try {
        await fs.appendFile(p('f'), '2222');
        await appender.write('3');
      } finally {
        await appender.close();
      }
      return fs.readFile(p('f'), 'utf8');
    },
    expect: { value: '122223' },
  },
  {
    name: "'a+' reads from the start and writes at the end",
    setup: [file('f', 'head')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'a+');
      try {
        await handle.write('tail');
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(20), 0, 20, 0);
        return buffer.subarray(0, bytesRead).toString();
      } finally {
        await handle.close();
      }
    },
    expect: { value: 'headtail' },
  },
  {
    name: 'many concurrent O_APPEND writers lose no write',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const handles = await Promise.all(Array.from({ length: 4 }, () => fs.open(p('f'), 'a')));
      try {
        await Promise.all(handles.map(async (handle, h) => {
          for (let i = 0; i < 25; i++) await handle.write(`${h}:${String(i).padStart(2, '0')};`);
        }));
      } finally {
        await Promise.all(handles.map((handle) => handle.close()));
      }
      const records = (await fs.readFile(p('f'), 'utf8')).split(';').filter(Boolean);
      return { count: records.length, unique: new Set(records).size, wellFormed: records.every((record) => /^\d:\d\d$/.test(record)) };
    },
    expect: { value: { count: 100, unique: 100, wellFormed: true } },
  },
];
