// statfs: the numbers a df needs are there and consistent, names may be 255 bytes, and anyone may ask.

import { USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'statfs reports a block size, blocks > 0, free <= total, available <= free, free inodes <= inodes',
    action: async ({ fs, p }) => {
      const stats = await fs.statfs(p('.'));
      return {
        bsize: stats.bsize > 0,
        blocks: stats.blocks > 0,
        bfree: stats.bfree <= stats.blocks,
        bavail: stats.bavail <= stats.bfree,
        ffree: stats.ffree <= stats.files,
      };
    },
    expect: { value: { bsize: true, blocks: true, bfree: true, bavail: true, ffree: true } },
  },
  {
    name: 'statfs reports a maximum name length of 255 (stat -f -c %l)',
    action: async ({ sh, p }) => (await sh('stat', ['-f', '-c', '%l', p('.')])).trim(),
    expect: { value: '255' },
  },
  {
    name: 'free space shrinks while a 4 MiB file exists, and comes back when it is removed',
    action: async ({ fs, p }) => {
      const free = async (): Promise<number> => {
        const stats = await fs.statfs(p('.'));
        return stats.bfree * stats.bsize;
      };
      const before = await free();
      await fs.writeFile(p('big'), Buffer.alloc(4 << 20, 1));
      const during = await free();
      await fs.unlink(p('big'));
      const after = await free();
      return { shrank: during < before, cameBack: after > during };
    },
    expect: { value: { shrank: true, cameBack: true } },
  },
  {
    name: 'statfs by an unprivileged user works',
    as: USER,
    action: async ({ fs, p }) => (await fs.statfs(p('.'))).blocks > 0,
    expect: { value: true },
  },
  {
    name: 'statfs of a missing path is ENOENT',
    action: ({ fs, p }) => fs.statfs(p('missing')),
    expect: 'ENOENT',
  },
];
