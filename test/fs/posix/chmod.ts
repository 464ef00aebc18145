// chmod: every one of the 12 mode bits is kept, only ctime moves, only the owner (or root) may
// change a mode, and a user outside the file's group cannot set S_ISGID on it.

import assert from 'node:assert/strict';
import { dir, file, symlink, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'chmod keeps all 12 mode bits (set-user-ID, set-group-ID, sticky, rwx × 3)',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const seen: number[] = [];
      for (const mode of [0o7777, 0o4755, 0o2710, 0o1000, 0o0421, 0]) {
        await fs.chmod(p('f'), mode);
        seen.push((await fs.stat(p('f'))).mode & 0o7777);
      }
      return seen;
    },
    expect: { value: [0o7777, 0o4755, 0o2710, 0o1000, 0o0421, 0] },
  },
  {
    name: 'chmod of a directory keeps its type and the bits asked for',
    setup: [dir('d')],
    action: async ({ fs, p }) => {
      await fs.chmod(p('d'), 0o3750);
      const stats = await fs.stat(p('d'));
      return { dir: stats.isDirectory(), mode: stats.mode & 0o7777 };
    },
    expect: { value: { dir: true, mode: 0o3750 } },
  },
  {
    name: 'chmod advances ctime only',
    setup: [file('f', 'abc')],
    action: ({ fs, p }) => fs.chmod(p('f'), 0o600),
    expect: 'ok',
    timestamps: { f: 'ctime', '.': '' },
  },
  {
    name: 'chmod through a symlink changes the target',
    setup: [file('f', '', { mode: 0o644 }), symlink('l', 'f')],
    action: ({ fs, p }) => fs.chmod(p('l'), 0o600),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o600),
  },
  {
    name: 'chmod of a missing name is ENOENT',
    action: ({ fs, p }) => fs.chmod(p('missing'), 0o600),
    expect: 'ENOENT',
  },
  {
    name: 'chmod by the owner is allowed',
    as: USER,
    setup: [file('f', '', { owner: USER, mode: 0o644 })],
    action: ({ fs, p }) => fs.chmod(p('f'), 0o600),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o600),
  },
  {
    name: 'chmod by a user who is not the owner is EPERM, even with every permission bit',
    as: USER,
    setup: [file('f', '', { mode: 0o777 })],
    action: ({ fs, p }) => fs.chmod(p('f'), 0o700),
    expect: 'EPERM',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o777),
  },
  {
    name: 'chmod g+s by an owner outside the file\'s group keeps everything but S_ISGID',
    as: USER,
    setup: [file('f', '', { owner: USER, group: 0, mode: 0o644 })],
    action: ({ fs, p }) => fs.chmod(p('f'), 0o2755),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o755),
  },
  {
    name: "chmod g+s by an owner in the file's group sets S_ISGID",
    as: USER,
    setup: [file('f', '', { owner: USER, mode: 0o644 })],
    action: ({ fs, p }) => fs.chmod(p('f'), 0o2755),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o2755),
  },
];
