// readdir (opendir, readdir, releasedir): every name exactly once with its type, '.' and '..'
// included at the system call level, names as bytes, the errors, and that listing needs r.

import { dir, fifo, file, permissionMatrix, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'an empty directory lists nothing but . and ..',
    setup: [dir('d')],
    action: async ({ fs, p, sh }) => ({ node: await fs.readdir(p('d')), ls: (await sh('ls', ['-1a', p('d')])).split('\n').filter(Boolean) }),
    expect: { value: { node: [], ls: ['.', '..'] } },
  },
  {
    name: 'every name appears exactly once, with its type',
    setup: [dir('d'), file('d/f'), dir('d/sub'), symlink('d/l', 'f'), fifo('d/pipe')],
    action: async ({ fs, p }) => (await fs.readdir(p('d'), { withFileTypes: true }))
      .map((entry) => `${entry.name}:${entry.isFile() ? 'file' : entry.isDirectory() ? 'dir' : entry.isSymbolicLink() ? 'symlink' : entry.isFIFO() ? 'fifo' : '?'}`)
      .sort(),
    expect: { value: ['f:file', 'l:symlink', 'pipe:fifo', 'sub:dir'] },
  },
  {
    name: 'a directory of 300 entries lists all of them once (several readdir replies)',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'));
      const names = Array.from({ length: 300 }, (_, i) => `entry-${i}-${'n'.repeat(i % 40)}`);
      for (let i = 0; i < names.length; i += 50) await Promise.all(names.slice(i, i + 50).map((name) => fs.writeFile(p('d', name), '')));
      const listed = await fs.readdir(p('d'));
      return { count: listed.length, unique: new Set(listed).size, same: [...listed].sort().join('/') === [...names].sort().join('/') };
    },
    expect: { value: { count: 300, unique: 300, same: true } },
  },
  {
    name: 'names are bytes: a name that is not UTF-8 comes back byte for byte',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'));
      const name = Buffer.from([0x6e, 0xff, 0xfe, 0x20, 0x0a, 0x61]);
      await fs.writeFile(Buffer.concat([Buffer.from(p('d') + '/'), name]), 'x');
      const listed = await fs.readdir(p('d'), { encoding: 'buffer' });
      return listed.map((entry) => entry.toString('hex'));
    },
    expect: { value: ['6efffe200a61'] },
  },
  {
    name: 'a removed name disappears from the listing, a new one appears',
    setup: [dir('d'), file('d/a'), file('d/b')],
    action: async ({ fs, p }) => {
      await fs.unlink(p('d/a'));
      await fs.writeFile(p('d/c'), '');
      return (await fs.readdir(p('d'))).sort();
    },
    expect: { value: ['b', 'c'] },
  },
  {
    name: 'names made and removed during a listing do not make it repeat or skip the names that stay',
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d'));
      const originals = Array.from({ length: 200 }, (_, i) => `original-${i}`);
      for (let i = 0; i < originals.length; i += 50) await Promise.all(originals.slice(i, i + 50).map((name) => fs.writeFile(p('d', name), '')));
      const seen = new Map<string, number>();
      let made = 0;
      const listing = await fs.opendir(p('d'), { bufferSize: 1 });
      for await (const entry of listing) {
        seen.set(entry.name, (seen.get(entry.name) ?? 0) + 1);
        // Every step adds names (the directory grows and reorganises) and removes an original already seen.
        await Promise.all(Array.from({ length: 3 }, () => fs.writeFile(p('d', `added-${made++}`), '')));
        if (entry.name.startsWith('original-')) await fs.unlink(p('d', entry.name));
      }
      const repeated = [...seen].filter(([, count]) => count > 1).map(([name]) => name);
      const missed = originals.filter((name) => !seen.has(name));
      return { repeated, missed };
    },
    expect: { value: { repeated: [], missed: [] } },
  },
  {
    name: "reading a directory advances its atime (relatime: atime not newer than mtime), nothing else",
    setup: [dir('d'), file('d/f')],
    action: ({ fs, p }) => fs.readdir(p('d')),
    expect: { value: ['f'] },
    timestamps: { d: 'atime' },
  },
  {
    name: 'readdir of a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.readdir(p('f')),
    expect: 'ENOTDIR',
  },
  {
    name: 'readdir of a missing directory is ENOENT',
    action: ({ fs, p }) => fs.readdir(p('missing')),
    expect: 'ENOENT',
  },
  ...permissionMatrix({
    operation: 'readdir d',
    object: 'dir',
    needs: 'r',
    action: ({ fs, p }) => fs.readdir(p('d')),
  }),
  {
    name: 'readdir with r but no x lists the names (only lookups need x)',
    as: USER,
    setup: [dir('d'), file('d/e'), dir('d', { mode: 0o744 })],
    action: ({ fs, p }) => fs.readdir(p('d')),
    expect: { value: ['e'] },
  },
];
