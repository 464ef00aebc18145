// access: F_OK / R_OK / W_OK / X_OK for each class of user, and root's exceptions (it may read and
// write anything, search any directory, but execute only a file with some x bit).

import { dir, file, permissionMatrix, USER, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'F_OK of an existing file is allowed, of a missing one ENOENT',
    setup: [file('f', '', { mode: 0 })],
    action: async ({ fs, p, constants }) => {
      await fs.access(p('f'), constants.F_OK);
      return fs.access(p('missing'), constants.F_OK);
    },
    expect: 'ENOENT',
  },
  {
    name: 'root may read and write a file with mode 000',
    setup: [file('f', '', { mode: 0 })],
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.R_OK | constants.W_OK),
    expect: 'ok',
  },
  {
    name: 'root may not execute a file without any x bit: EACCES',
    setup: [file('f', '', { mode: 0o666 })],
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.X_OK),
    expect: 'EACCES',
  },
  {
    name: 'root may search a directory with mode 000',
    setup: [dir('d', { mode: 0 })],
    action: ({ fs, p, constants }) => fs.access(p('d'), constants.X_OK | constants.R_OK | constants.W_OK),
    expect: 'ok',
  },
  {
    name: 'F_OK by a user through a directory it may not search is EACCES',
    as: USER,
    setup: [dir('d'), file('d/f'), dir('d', { mode: 0o700 })],
    action: ({ fs, p, constants }) => fs.access(p('d/f'), constants.F_OK),
    expect: 'EACCES',
  },
  {
    name: 'R_OK | W_OK by a user with only r is EACCES',
    as: USER,
    setup: [file('f', '', { mode: 0o444 })],
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.R_OK | constants.W_OK),
    expect: 'EACCES',
  },
  ...permissionMatrix({
    operation: 'access R_OK',
    object: 'file',
    needs: 'r',
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.R_OK),
  }),
  ...permissionMatrix({
    operation: 'access W_OK',
    object: 'file',
    needs: 'w',
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.W_OK),
  }),
  ...permissionMatrix({
    operation: 'access X_OK',
    object: 'file',
    needs: 'x',
    action: ({ fs, p, constants }) => fs.access(p('f'), constants.X_OK),
  }),
];
