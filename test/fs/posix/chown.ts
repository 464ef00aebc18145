// chown: root gives files away; an owner may only change the group, and only to one of its own
// groups; nobody else may do anything; set-id bits fall; only ctime moves; lchown on a symlink.

import assert from 'node:assert/strict';
import { dir, file, OTHER, symlink, USER, type PosixCase } from '../../support/posix';

const owner = async (t: { stat(name: string): Promise<{ uid: bigint; gid: bigint }> }, name: string): Promise<[number, number]> => {
  const stats = await t.stat(name);
  return [Number(stats.uid), Number(stats.gid)];
};

export const cases: readonly PosixCase[] = [
  {
    name: 'root gives a file to any user and group',
    setup: [file('f')],
    action: ({ fs, p }) => fs.chown(p('f'), 65533, 12345),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await owner(t, 'f'), [65533, 12345]),
  },
  {
    name: 'chown with -1 and -1 changes nothing',
    setup: [file('f', '', { owner: OTHER })],
    action: ({ fs, p }) => fs.chown(p('f'), -1, -1),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await owner(t, 'f'), [65533, 65533]),
  },
  {
    name: 'the owner may not give a file away: EPERM',
    as: USER,
    setup: [file('f', '', { owner: USER })],
    action: ({ fs, p }) => fs.chown(p('f'), 65533, -1),
    expect: 'EPERM',
    check: async (t) => assert.deepEqual(await owner(t, 'f'), [65534, 65534]),
  },
  {
    name: 'the owner may change the group to one it is in',
    as: USER,
    setup: [file('f', '', { owner: USER, group: 0 })],
    action: ({ fs, p }) => fs.chown(p('f'), -1, 65534),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await owner(t, 'f'), [65534, 65534]),
  },
  {
    name: 'the owner may not change the group to one it is not in: EPERM',
    as: USER,
    setup: [file('f', '', { owner: USER })],
    action: ({ fs, p }) => fs.chown(p('f'), -1, 0),
    expect: 'EPERM',
    check: async (t) => assert.deepEqual(await owner(t, 'f'), [65534, 65534]),
  },
  {
    name: "chown by a user of someone else's file is EPERM, even to its present owner",
    as: USER,
    setup: [file('f', '', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.chown(p('f'), 65533, 65533),
    expect: 'EPERM',
  },
  {
    name: "chgrp by a user of someone else's file is EPERM",
    as: USER,
    setup: [file('f', '', { owner: OTHER, mode: 0o666 })],
    action: ({ fs, p }) => fs.chown(p('f'), -1, 65534),
    expect: 'EPERM',
  },
  {
    name: 'chown of a regular file clears set-user-ID and set-group-ID (group-executable), even by root',
    setup: [file('f', '', { mode: 0o6755 })],
    action: ({ fs, p }) => fs.chown(p('f'), 65534, 65534),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('f')).mode) & 0o7777, 0o755),
  },
  {
    name: 'chown of a directory keeps its set-group-ID bit',
    setup: [dir('d', { mode: 0o2755 })],
    action: ({ fs, p }) => fs.chown(p('d'), 65534, 65534),
    expect: 'ok',
    check: async (t) => assert.equal(Number((await t.stat('d')).mode) & 0o7777, 0o2755),
  },
  {
    name: 'chown advances ctime only',
    setup: [file('f', 'abc')],
    action: ({ fs, p }) => fs.chown(p('f'), 65534, 65534),
    expect: 'ok',
    timestamps: { f: 'ctime' },
  },
  {
    name: 'lchown changes the owner of the symlink, not of its target',
    setup: [file('f'), symlink('l', 'f')],
    action: ({ fs, p }) => fs.lchown(p('l'), 65534, 65534),
    expect: 'ok',
    check: async (t) => {
      assert.deepEqual(await owner(t, 'l'), [65534, 65534]);
      assert.deepEqual(await owner(t, 'f'), [0, 0]);
    },
  },
  {
    name: 'chown of a missing name is ENOENT',
    action: ({ fs, p }) => fs.chown(p('missing'), 0, 0),
    expect: 'ENOENT',
  },
];
