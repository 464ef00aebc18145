// rmdir: only empty directories go; '.' and '..' cannot be removed by those names; the parent's
// link count and timestamps; the errors.

import assert from 'node:assert/strict';
import { dir, file, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: "rmdir removes an empty directory and takes one from the parent's nlink",
    setup: [dir('d'), dir('d/sub')],
    action: ({ fs, p }) => fs.rmdir(p('d/sub')),
    expect: 'ok',
    timestamps: { d: 'mtime ctime' },
    check: async (t) => {
      assert.equal(await t.exists('d/sub'), false);
      assert.equal((await t.stat('d')).nlink, 2n);
    },
  },
  {
    name: 'rmdir of a directory holding a file is ENOTEMPTY',
    setup: [dir('d'), file('d/f')],
    action: ({ fs, p }) => fs.rmdir(p('d')),
    expect: 'ENOTEMPTY',
    check: async (t) => assert.ok(await t.exists('d/f')),
  },
  {
    name: 'rmdir of a directory holding only an empty directory is ENOTEMPTY',
    setup: [dir('d'), dir('d/sub')],
    action: ({ fs, p }) => fs.rmdir(p('d')),
    expect: 'ENOTEMPTY',
  },
  {
    name: "rmdir of 'd/.' is EINVAL",
    setup: [dir('d')],
    action: ({ fs, p }) => fs.rmdir(p('d/.')),
    expect: 'EINVAL',
    check: async (t) => assert.ok(await t.exists('d')),
  },
  {
    name: "rmdir of 'd/sub/..' is ENOTEMPTY (Linux)",
    setup: [dir('d'), dir('d/sub')],
    action: ({ fs, p }) => fs.rmdir(p('d/sub/..')),
    expect: 'ENOTEMPTY',
  },
  {
    name: 'rmdir of a regular file is ENOTDIR',
    setup: [file('f')],
    action: ({ fs, p }) => fs.rmdir(p('f')),
    expect: 'ENOTDIR',
  },
  {
    name: 'rmdir of a symlink to a directory is ENOTDIR',
    setup: [dir('d'), symlink('l', 'd')],
    action: ({ fs, p }) => fs.rmdir(p('l')),
    expect: 'ENOTDIR',
  },
  {
    name: 'rmdir of a missing name is ENOENT',
    action: ({ fs, p }) => fs.rmdir(p('missing')),
    expect: 'ENOENT',
  },
  {
    name: 'a removed directory that is still open lists nothing',
    setup: [dir('d')],
    action: async ({ fs, p }) => {
      const handle = await fs.opendir(p('d'));
      try {
        await fs.rmdir(p('d'));
        const names: string[] = [];
        for await (const entry of handle) names.push(entry.name);
        return names;
      } finally {
        await handle.close().catch(() => undefined);
      }
    },
    expect: { value: [] },
  },
  {
    name: 'rmdir by a user without w on the parent is EACCES',
    as: USER,
    setup: [dir('d', { owner: USER })],
    action: ({ fs, p }) => fs.rmdir(p('d')),
    expect: 'EACCES',
  },
];
