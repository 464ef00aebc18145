// utimens (utimensat, futimens): times are kept to the nanosecond, before 1970 as well; ctime moves
// to now; UTIME_OMIT leaves a time alone; and the permission rule: setting "now" needs write
// permission, setting explicit times needs ownership.

import assert from 'node:assert/strict';
import { file, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'explicit times are kept to the nanosecond (1234567890123456789 ns)',
    setup: [file('f')],
    action: async ({ py, fs, p }) => {
      await py('os.utime(args[0], ns=(1234567890123456789, 987654321987654321))', p('f'));
      const stats = await fs.stat(p('f'), { bigint: true });
      return [stats.atimeNs, stats.mtimeNs];
    },
    expect: { value: ['1234567890123456789', '987654321987654321'] },
  },
  {
    name: 'times before 1970 are kept exactly (-1.5 s and -86400.000000001 s)',
    setup: [file('f')],
    action: async ({ py, fs, p }) => {
      await py('os.utime(args[0], ns=(-1500000000, -86400000000001))', p('f'));
      const stats = await fs.stat(p('f'), { bigint: true });
      return [stats.atimeNs, stats.mtimeNs];
    },
    expect: { value: ['-1500000000', '-86400000000001'] },
  },
  {
    name: 'a time past what the file system keeps (year 2400) is kept or refused, never wrapped around',
    setup: [file('f')],
    action: async ({ py, fs, p }) => {
      const year2400 = 13_569_465_600n * 1_000_000_000n;
      try {
        await py('os.utime(args[0], ns=(int(args[1]), int(args[1])))', p('f'), year2400.toString());
      } catch (error) {
        return ['EOVERFLOW', 'EINVAL', 'ERANGE'].includes((error as { code?: string }).code ?? '') ? 'refused' : (error as { code?: string }).code;
      }
      const stats = await fs.stat(p('f'), { bigint: true });
      return stats.mtimeNs === year2400 || stats.mtimeNs >= 9_223_372_036n * 1_000_000_000n ? 'kept or clamped' : `wrapped to ${stats.mtimeNs}`;
    },
    expect: 'ok',
    check: async (t) => assert.match(String(t.value), /^(refused|kept or clamped)$/),
  },
  {
    name: 'futimens through an open handle sets the times',
    setup: [file('f')],
    action: async ({ fs, p }) => {
      const handle = await fs.open(p('f'), 'r+');
      try {
        await handle.utimes(1_000_000_000.5, 2_000_000_000.25);
      } finally {
        await handle.close();
      }
      const stats = await fs.stat(p('f'), { bigint: true });
      return [stats.atimeNs, stats.mtimeNs];
    },
    expect: { value: ['1000000000500000000', '2000000000250000000'] },
  },
  {
    name: 'setting times advances ctime to now',
    setup: [file('f')],
    action: ({ py, p }) => py('os.utime(args[0], ns=(1, 2))', p('f')),
    expect: 'ok',
    check: async (t) => assert.ok((await t.stat('f')).ctimeNs > t.before('f').ctimeNs),
  },
  {
    name: 'UTIME_OMIT leaves atime alone while mtime is set',
    setup: [file('f')],
    action: async ({ py, fs, p }) => {
      await py("utimensat(args[0], 'omit', 5000000000000000007)", p('f'));
      return (await fs.stat(p('f'), { bigint: true })).mtimeNs;
    },
    expect: { value: '5000000000000000007' },
    check: async (t) => assert.equal((await t.stat('f')).atimeNs, t.before('f').atimeNs),
  },
  {
    name: 'UTIME_NOW for both (touch) advances atime, mtime and ctime',
    setup: [file('f')],
    action: ({ py, p }) => py("utimensat(args[0], 'now', 'now')", p('f')),
    expect: 'ok',
    timestamps: { f: 'atime mtime ctime' },
  },
  {
    name: 'utimes to now by a user who may write but does not own the file is allowed',
    as: USER,
    setup: [file('f', '', { mode: 0o666 })],
    action: ({ py, p }) => py('os.utime(args[0])', p('f')),
    expect: 'ok',
    timestamps: { f: 'atime mtime ctime' },
  },
  {
    name: 'utimes to now by a user who may not write is EACCES',
    as: USER,
    setup: [file('f', '', { mode: 0o644 })],
    action: ({ py, p }) => py('os.utime(args[0])', p('f')),
    expect: 'EACCES',
  },
  {
    name: 'explicit times by a user who may write but does not own the file is EPERM',
    as: USER,
    setup: [file('f', '', { mode: 0o666 })],
    action: ({ fs, p }) => fs.utimes(p('f'), 1000, 1000),
    expect: 'EPERM',
    check: async (t) => assert.equal((await t.stat('f')).mtimeNs, t.before('f').mtimeNs),
  },
  {
    name: 'explicit times by the owner, even without write permission, are allowed',
    as: USER,
    setup: [file('f', '', { owner: USER, mode: 0o444 })],
    action: ({ fs, p }) => fs.utimes(p('f'), 1000, 2000),
    expect: 'ok',
    check: async (t) => assert.equal((await t.stat('f')).mtimeNs, 2_000_000_000_000n),
  },
];
