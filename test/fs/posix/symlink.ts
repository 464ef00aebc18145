// symlink and readlink: targets are kept byte for byte (any text, up to 4095 bytes), what a symlink
// reports, following through directories, loops (ELOOP) and the errors.

import assert from 'node:assert/strict';
import { dir, file, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'readlink returns the target exactly as given, whether it exists or not',
    action: async ({ fs, p }) => {
      const targets = ['plain', '../up/and/down', '/absolute/path', 'with space', 'trailing/', 'dots/./../x', 'émoji-☃'];
      const back: string[] = [];
      for (const [i, target] of targets.entries()) {
        await fs.symlink(target, p(`l${i}`));
        back.push(await fs.readlink(p(`l${i}`)));
      }
      return back;
    },
    expect: { value: ['plain', '../up/and/down', '/absolute/path', 'with space', 'trailing/', 'dots/./../x', 'émoji-☃'] },
  },
  {
    name: "a symlink's lstat: type symlink, size = target length in bytes, mode 0777",
    action: async ({ fs, p }) => {
      await fs.symlink('target-☃', p('l'));
      const stats = await fs.lstat(p('l'));
      return { link: stats.isSymbolicLink(), size: stats.size, mode: stats.mode & 0o777 };
    },
    expect: { value: { link: true, size: 10, mode: 0o777 } },
  },
  {
    name: 'a symlink made by a user belongs to that user',
    as: USER,
    setup: [dir('.', { mode: 0o777 })],
    action: async ({ fs, p }) => {
      await fs.symlink('x', p('l'));
      const stats = await fs.lstat(p('l'));
      return [stats.uid, stats.gid];
    },
    expect: { value: [65534, 65534] },
  },
  {
    name: 'a target of 4095 bytes is kept; 4096 bytes is ENAMETOOLONG',
    action: async ({ fs, p }) => {
      const longest = 'a/'.repeat(2047) + 'b';
      await fs.symlink(longest, p('ok'));
      const kept = (await fs.readlink(p('ok'))) === longest;
      try {
        await fs.symlink(longest + 'c', p('too-long'));
        return { kept, tooLong: 'created' };
      } catch (error) {
        return { kept, tooLong: (error as { code?: string }).code };
      }
    },
    expect: { value: { kept: true, tooLong: 'ENAMETOOLONG' } },
  },
  {
    name: 'a path through a symlink to a directory reaches the file inside',
    setup: [dir('d'), file('d/f', 'inside'), symlink('l', 'd')],
    action: ({ fs, p }) => fs.readFile(p('l/f'), 'utf8'),
    expect: { value: 'inside' },
  },
  {
    name: 'a relative target is resolved from the directory holding the link',
    setup: [dir('d'), file('f', 'top'), symlink('d/up', '../f')],
    action: ({ fs, p }) => fs.readFile(p('d/up'), 'utf8'),
    expect: { value: 'top' },
  },
  {
    name: 'opening a symlink that points at itself is ELOOP',
    setup: [symlink('self', 'self')],
    action: ({ fs, p }) => fs.open(p('self'), 'r'),
    expect: 'ELOOP',
  },
  {
    name: 'opening one of two symlinks that point at each other is ELOOP',
    setup: [symlink('a', 'b'), symlink('b', 'a')],
    action: ({ fs, p }) => fs.readFile(p('a')),
    expect: 'ELOOP',
  },
  {
    name: 'a chain of 41 symlinks is ELOOP (Linux follows at most 40)',
    action: async ({ fs, p }) => {
      await fs.writeFile(p('end'), 'end');
      await fs.symlink('end', p('l0'));
      for (let i = 1; i <= 40; i++) await fs.symlink(`l${i - 1}`, p(`l${i}`));
      const forty = await fs.readFile(p('l39'), 'utf8');
      try {
        await fs.readFile(p('l40'));
        return { forty, fortyOne: 'read' };
      } catch (error) {
        return { forty, fortyOne: (error as { code?: string }).code };
      }
    },
    expect: { value: { forty: 'end', fortyOne: 'ELOOP' } },
  },
  {
    name: 'symlink onto an existing name is EEXIST',
    setup: [file('f')],
    action: ({ fs, p }) => fs.symlink('x', p('f')),
    expect: 'EEXIST',
  },
  {
    name: 'symlink with an empty target is ENOENT',
    action: ({ fs, p }) => fs.symlink('', p('l')),
    expect: 'ENOENT',
  },
  {
    name: 'readlink advances the atime of the symlink (relatime: atime not newer than mtime), nothing else',
    setup: [symlink('l', 'target')],
    action: ({ fs, p }) => fs.readlink(p('l')),
    expect: { value: 'target' },
    timestamps: { l: 'atime' },
  },
  {
    name: 'readlink of a regular file is EINVAL',
    setup: [file('f')],
    action: ({ fs, p }) => fs.readlink(p('f')),
    expect: 'EINVAL',
  },
  {
    name: 'readlink of a missing name is ENOENT',
    action: ({ fs, p }) => fs.readlink(p('missing')),
    expect: 'ENOENT',
  },
  {
    name: 'symlink in a directory without w is EACCES',
    as: USER,
    action: ({ fs, p }) => fs.symlink('x', p('l')),
    expect: 'EACCES',
    check: async (t) => assert.equal(await t.exists('l'), false),
  },
];
