// Set-group-ID directories: what is made inside takes the directory's group instead of the
// creator's, subdirectories inherit the bit, and a creator outside that group cannot hand out
// S_ISGID files.

import assert from 'node:assert/strict';
import { dir, USER, type PosixCase } from '../../support/posix';

const group = async (t: { stat(name: string): Promise<{ gid: bigint; mode: bigint }> }, name: string): Promise<[number, number]> => {
  const stats = await t.stat(name);
  return [Number(stats.gid), Number(stats.mode) & 0o7777];
};

export const cases: readonly PosixCase[] = [
  {
    name: "a file made in a set-group-ID directory takes the directory's group",
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: ({ fs, p }) => fs.writeFile(p('d/f'), ''),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await group(t, 'd/f'), [4242, 0o644]),
  },
  {
    name: 'a subdirectory made in a set-group-ID directory takes its group and the S_ISGID bit',
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: ({ fs, p }) => fs.mkdir(p('d/sub'), 0o755),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await group(t, 'd/sub'), [4242, 0o2755]),
  },
  {
    name: 'and so on down: a sub-subdirectory inherits both again',
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: async ({ fs, p }) => {
      await fs.mkdir(p('d/sub'));
      await fs.mkdir(p('d/sub/deeper'));
    },
    expect: 'ok',
    check: async (t) => assert.deepEqual(await group(t, 'd/sub/deeper'), [4242, 0o2755]),
  },
  {
    name: "without S_ISGID a new file takes the creator's group",
    as: USER,
    setup: [dir('d', { group: 4242, mode: 0o777 })],
    action: ({ fs, p }) => fs.writeFile(p('d/f'), ''),
    expect: 'ok',
    check: async (t) => assert.equal((await group(t, 'd/f'))[0], 65534),
  },
  {
    name: "a user outside the directory's group still gets the directory's group",
    as: USER,
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: async ({ fs, p }) => {
      await fs.writeFile(p('d/f'), '');
      await fs.mkdir(p('d/sub'));
    },
    expect: 'ok',
    check: async (t) => {
      assert.deepEqual(await group(t, 'd/f'), [4242, 0o644]);
      assert.deepEqual(await group(t, 'd/sub'), [4242, 0o2755]);
    },
  },
  {
    name: "a file created with S_ISGID by a user outside the group it gets loses the bit",
    as: USER,
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: async ({ fs, p }) => (await fs.open(p('d/f'), 'w', 0o2755)).close(),
    expect: 'ok',
    check: async (t) => assert.deepEqual(await group(t, 'd/f'), [4242, 0o755]),
  },
  {
    name: 'a symlink made in a set-group-ID directory takes its group too',
    setup: [dir('d', { group: 4242, mode: 0o2777 })],
    action: ({ fs, p }) => fs.symlink('target', p('d/l')),
    expect: 'ok',
    check: async (t) => assert.equal((await group(t, 'd/l'))[0], 4242),
  },
];
