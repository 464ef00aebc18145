// The POSIX conformance tables, one module per operation, in the order the suite runs them.

import type { PosixCase } from '../../support/posix';
import { cases as access } from './access';
import { cases as append } from './append';
import { cases as chmod } from './chmod';
import { cases as chown } from './chown';
import { cases as create } from './create';
import { cases as fsync } from './fsync';
import { cases as getattr } from './getattr';
import { cases as link } from './link';
import { cases as mkdir } from './mkdir';
import { cases as mknod } from './mknod';
import { cases as names } from './names';
import { cases as open } from './open';
import { cases as read } from './read';
import { cases as readdir } from './readdir';
import { cases as rename } from './rename';
import { cases as rmdir } from './rmdir';
import { cases as setgid } from './setgid';
import { cases as statfs } from './statfs';
import { cases as sticky } from './sticky';
import { cases as symlink } from './symlink';
import { cases as truncate } from './truncate';
import { cases as unlink } from './unlink';
import { cases as utimens } from './utimens';
import { cases as write } from './write';
import { cases as xattr } from './xattr';

export const TABLES: readonly { readonly operation: string; readonly cases: readonly PosixCase[] }[] = [
  { operation: 'getattr', cases: getattr },
  { operation: 'readdir', cases: readdir },
  { operation: 'create', cases: create },
  { operation: 'mknod', cases: mknod },
  { operation: 'open', cases: open },
  { operation: 'read', cases: read },
  { operation: 'write', cases: write },
  { operation: 'append', cases: append },
  { operation: 'truncate', cases: truncate },
  { operation: 'unlink', cases: unlink },
  { operation: 'mkdir', cases: mkdir },
  { operation: 'rmdir', cases: rmdir },
  { operation: 'rename', cases: rename },
  { operation: 'link', cases: link },
  { operation: 'symlink', cases: symlink },
  { operation: 'chmod', cases: chmod },
  { operation: 'chown', cases: chown },
  { operation: 'utimens', cases: utimens },
  { operation: 'statfs', cases: statfs },
  { operation: 'fsync', cases: fsync },
  { operation: 'access', cases: access },
  { operation: 'xattr', cases: xattr },
  { operation: 'sticky', cases: sticky },
  { operation: 'setgid', cases: setgid },
  { operation: 'names', cases: names },
];
