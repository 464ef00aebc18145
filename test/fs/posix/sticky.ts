// Sticky directories (mode 1777, like /tmp): anyone may create, but a name may be removed or
// replaced only by the owner of the file, the owner of the directory, or root.

import assert from 'node:assert/strict';
import { dir, file, OTHER, USER, type PosixCase } from '../../support/posix';

const sticky = dir('.', { mode: 0o1777 });

export const cases: readonly PosixCase[] = [
  {
    name: 'the sticky bit shows in the mode of the directory',
    setup: [sticky],
    action: async ({ fs, p }) => (await fs.stat(p('.'))).mode & 0o7777,
    expect: { value: 0o1777 },
  },
  {
    name: "a user cannot unlink another user's file in a sticky directory: EPERM",
    as: USER,
    setup: [sticky, file('f', 'theirs', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'EPERM',
    check: async (t) => assert.equal(await t.read('f'), 'theirs'),
  },
  {
    name: "a user cannot rename another user's file in a sticky directory: EPERM",
    as: USER,
    setup: [sticky, file('f', 'theirs', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.rename(p('f'), p('g')),
    expect: 'EPERM',
  },
  {
    name: "a user cannot rename its own file over another user's file in a sticky directory: EPERM",
    as: USER,
    setup: [sticky, file('mine', 'mine', { owner: USER }), file('f', 'theirs', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.rename(p('mine'), p('f')),
    expect: 'EPERM',
    check: async (t) => assert.equal(await t.read('f'), 'theirs'),
  },
  {
    name: "a user cannot rmdir another user's empty directory in a sticky directory: EPERM",
    as: USER,
    setup: [sticky, dir('d', { owner: OTHER, mode: 0o777 })],
    action: ({ fs, p }) => fs.rmdir(p('d')),
    expect: 'EPERM',
  },
  {
    name: 'the owner of the file may unlink it',
    as: OTHER,
    setup: [sticky, file('f', 'theirs', { owner: OTHER })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
  },
  {
    name: "the owner of the directory may unlink anyone's file in it",
    as: USER,
    setup: [dir('.', { owner: USER, mode: 0o1777 }), file('f', 'theirs', { owner: OTHER })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
    check: async (t) => assert.equal(await t.exists('f'), false),
  },
  {
    name: "root may unlink anyone's file in a sticky directory",
    setup: [sticky, file('f', 'theirs', { owner: OTHER })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
  },
  {
    name: 'a user creates, renames and removes its own files in a sticky directory',
    as: USER,
    setup: [sticky],
    action: async ({ fs, p }) => {
      await fs.writeFile(p('mine'), 'x');
      await fs.rename(p('mine'), p('renamed'));
      await fs.unlink(p('renamed'));
      return fs.readdir(p('.'));
    },
    expect: { value: [] },
  },
  {
    name: "without the sticky bit (0777) a user may unlink another user's file",
    as: USER,
    setup: [dir('.', { mode: 0o777 }), file('f', 'theirs', { owner: OTHER })],
    action: ({ fs, p }) => fs.unlink(p('f')),
    expect: 'ok',
  },
];
