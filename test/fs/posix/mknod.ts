// mknod: FIFOs (with the mkfifo command and with mknod(2)) and regular files; device nodes need
// CAP_MKNOD, and dpms makes none at all.

import assert from 'node:assert/strict';
import { dir, file, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'mkfifo makes a FIFO with the mode asked for',
    action: async ({ fs, p, sh }) => {
      await sh('mkfifo', ['-m', '0640', p('pipe')]);
      const stats = await fs.stat(p('pipe'));
      return { fifo: stats.isFIFO(), mode: stats.mode & 0o7777, size: stats.size };
    },
    expect: { value: { fifo: true, mode: 0o640, size: 0 } },
  },
  {
    name: 'a FIFO made by a user with mknod(2) belongs to that user',
    as: USER,
    setup: [dir('.', { mode: 0o777 })],
    action: async ({ py, fs, p }) => {
      await py('os.mknod(args[0], 0o600 | stat.S_IFIFO)', p('pipe'));
      const stats = await fs.stat(p('pipe'));
      return { fifo: stats.isFIFO(), uid: stats.uid, gid: stats.gid };
    },
    expect: { value: { fifo: true, uid: 65534, gid: 65534 } },
  },
  {
    name: 'data written into a FIFO comes out of it (the kernel carries it, the file system only names it)',
    action: async ({ py, p }) => py([
      'os.mkfifo(args[0])',
      'fd = os.open(args[0], os.O_RDWR)', // O_RDWR on a FIFO does not wait for a peer
      "os.write(fd, b'through the pipe')",
      'result = os.read(fd, 100).decode()',
      'os.close(fd)',
    ].join('\n'), p('pipe')),
    expect: { value: 'through the pipe' },
  },
  {
    name: 'mkfifo over an existing name is EEXIST',
    setup: [file('f')],
    action: ({ py, p }) => py('os.mkfifo(args[0])', p('f')),
    expect: 'EEXIST',
  },
  {
    name: 'mknod of a regular file makes an empty file',
    action: async ({ py, fs, p }) => {
      await py('os.mknod(args[0], 0o644 | stat.S_IFREG)', p('f'));
      const stats = await fs.stat(p('f'));
      return { file: stats.isFile(), size: stats.size };
    },
    expect: { value: { file: true, size: 0 } },
  },
  {
    name: 'mknod of a character device by a user is EPERM',
    as: USER,
    setup: [dir('.', { mode: 0o777 })],
    action: ({ py, p }) => py('os.mknod(args[0], 0o600 | stat.S_IFCHR, os.makedev(1, 3))', p('null')),
    expect: 'EPERM',
    check: async (t) => assert.equal(await t.exists('null'), false),
  },
  {
    name: 'mknod of a character device by root is EPERM on dpms (no device nodes)',
    only: { target: 'dpms', why: 'dpms keeps no device nodes; tmpfs makes them for root' },
    action: ({ py, p }) => py('os.mknod(args[0], 0o600 | stat.S_IFCHR, os.makedev(1, 3))', p('null')),
    expect: 'EPERM',
  },
  {
    name: 'mkfifo in a directory without write permission is EACCES',
    as: USER,
    action: ({ py, p }) => py('os.mkfifo(args[0])', p('pipe')),
    expect: 'EACCES',
  },
];
