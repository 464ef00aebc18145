// setxattr, getxattr, listxattr, removexattr (through python3: Node has no xattr calls): values are
// bytes kept exactly up to 64 KiB, XATTR_CREATE / XATTR_REPLACE, the size query and ERANGE, the
// namespaces (user.* needs r/w on the file, trusted.* is root's), and the limits.

import { dir, file, symlink, USER, xattr, type PosixCase } from '../../support/posix';

export const cases: readonly PosixCase[] = [
  {
    name: 'a value is kept byte for byte (all 256 byte values)',
    setup: [file('f')],
    action: ({ py, p }) => py([
      'value = bytes(range(256))',
      "os.setxattr(args[0], 'user.bytes', value)",
      "result = os.getxattr(args[0], 'user.bytes') == value",
    ].join('\n'), p('f')),
    expect: { value: true },
  },
  {
    name: 'listxattr lists every name once; an empty value is a value',
    setup: [file('f'), xattr('f', 'user.a', '1'), xattr('f', 'user.b', '2')],
    action: ({ py, p }) => py([
      "os.setxattr(args[0], 'user.empty', b'')",
      "result = [sorted(os.listxattr(args[0])), os.getxattr(args[0], 'user.empty').decode()]",
    ].join('\n'), p('f')),
    expect: { value: [['user.a', 'user.b', 'user.empty'], ''] },
  },
  {
    name: 'a file without xattrs lists none',
    setup: [file('f')],
    action: ({ py, p }) => py('result = os.listxattr(args[0])', p('f')),
    expect: { value: [] },
  },
  {
    name: 'getxattr of a missing name is ENODATA',
    setup: [file('f')],
    action: ({ py, p }) => py("os.getxattr(args[0], 'user.missing')", p('f')),
    expect: 'ENODATA',
  },
  {
    name: 'removexattr removes the name; getxattr is then ENODATA',
    setup: [file('f'), xattr('f', 'user.a', '1'), xattr('f', 'user.b', '2')],
    action: ({ py, p }) => py([
      "os.removexattr(args[0], 'user.a')",
      'try:',
      "    os.getxattr(args[0], 'user.a')",
      "    gone = 'still there'",
      'except OSError as error:',
      '    gone = errno.errorcode[error.errno]',
      'result = [os.listxattr(args[0]), gone]',
    ].join('\n'), p('f')),
    expect: { value: [['user.b'], 'ENODATA'] },
  },
  {
    name: 'removexattr of a missing name is ENODATA',
    setup: [file('f')],
    action: ({ py, p }) => py("os.removexattr(args[0], 'user.missing')", p('f')),
    expect: 'ENODATA',
  },
  {
    name: 'XATTR_CREATE on an existing name is EEXIST and keeps the value',
    setup: [file('f'), xattr('f', 'user.a', 'old')],
    action: ({ py, p }) => py([
      'try:',
      "    os.setxattr(args[0], 'user.a', b'new', os.XATTR_CREATE)",
      "    outcome = 'replaced'",
      'except OSError as error:',
      '    outcome = errno.errorcode[error.errno]',
      "result = [outcome, os.getxattr(args[0], 'user.a').decode()]",
    ].join('\n'), p('f')),
    expect: { value: ['EEXIST', 'old'] },
  },
  {
    name: 'XATTR_REPLACE on a missing name is ENODATA',
    setup: [file('f')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.a', b'new', os.XATTR_REPLACE)", p('f')),
    expect: 'ENODATA',
  },
  {
    name: 'XATTR_REPLACE on an existing name replaces the value; XATTR_CREATE on a new name creates it',
    setup: [file('f'), xattr('f', 'user.a', 'old')],
    action: ({ py, p }) => py([
      "os.setxattr(args[0], 'user.a', b'new', os.XATTR_REPLACE)",
      "os.setxattr(args[0], 'user.b', b'created', os.XATTR_CREATE)",
      "result = [os.getxattr(args[0], 'user.a').decode(), os.getxattr(args[0], 'user.b').decode()]",
    ].join('\n'), p('f')),
    expect: { value: ['new', 'created'] },
  },
  {
    name: 'getxattr with size 0 returns the length; a buffer too small is ERANGE',
    setup: [file('f'), xattr('f', 'user.a', 'twelve bytes')],
    action: ({ py, p }) => py([
      'path = os.fsencode(args[0])',
      "size = libc.getxattr(path, b'user.a', None, 0)",
      'buffer = ctypes.create_string_buffer(4)',
      "short = libc.getxattr(path, b'user.a', buffer, 4)",
      'result = [size, short, errno.errorcode[ctypes.get_errno()]]',
    ].join('\n'), p('f')),
    expect: { value: [12, -1, 'ERANGE'] },
  },
  {
    name: 'listxattr with size 0 returns the length of the list; a buffer too small is ERANGE',
    setup: [file('f'), xattr('f', 'user.a', '1'), xattr('f', 'user.bb', '2')],
    action: ({ py, p }) => py([
      'path = os.fsencode(args[0])',
      'size = libc.listxattr(path, None, 0)',
      'buffer = ctypes.create_string_buffer(3)',
      'short = libc.listxattr(path, buffer, 3)',
      'result = [size, short, errno.errorcode[ctypes.get_errno()]]',
    ].join('\n'), p('f')),
    expect: { value: ['user.a\0user.bb\0'.length, -1, 'ERANGE'] },
  },
  {
    name: 'a value of 64 KiB is kept; 64 KiB + 1 is E2BIG',
    setup: [file('f')],
    action: ({ py, p }) => py([
      "big = bytes(i % 251 for i in range(65536))",
      "os.setxattr(args[0], 'user.big', big)",
      "kept = os.getxattr(args[0], 'user.big') == big",
      'try:',
      "    os.setxattr(args[0], 'user.bigger', big + b'x')",
      "    result = [kept, 'stored']",
      'except OSError as error:',
      '    result = [kept, errno.errorcode[error.errno]]',
    ].join('\n'), p('f')),
    expect: { value: [true, 'E2BIG'] },
  },
  {
    name: 'a name of 255 bytes is allowed; 256 bytes is ERANGE',
    setup: [file('f')],
    action: ({ py, p }) => py([
      "name = 'user.' + 'n' * 250",
      "os.setxattr(args[0], name, b'v')",
      "kept = os.getxattr(args[0], name) == b'v'",
      'try:',
      "    os.setxattr(args[0], name + 'n', b'v')",
      "    result = [kept, 'stored']",
      'except OSError as error:',
      '    result = [kept, errno.errorcode[error.errno]]',
    ].join('\n'), p('f')),
    expect: { value: [true, 'ERANGE'] },
  },
  {
    name: 'xattrs on a directory work like on a file',
    setup: [dir('d')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.dir', b'yes')\nresult = os.getxattr(args[0], 'user.dir').decode()", p('d')),
    expect: { value: 'yes' },
  },
  {
    name: 'xattrs move with the file when it is renamed',
    setup: [file('f'), xattr('f', 'user.a', 'travels')],
    action: async ({ py, fs, p }) => {
      await fs.rename(p('f'), p('g'));
      return py("result = os.getxattr(args[0], 'user.a').decode()", p('g'));
    },
    expect: { value: 'travels' },
  },
  {
    name: 'setxattr advances ctime, not mtime',
    setup: [file('f', 'abc')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.a', b'1')", p('f')),
    expect: 'ok',
    timestamps: { f: 'ctime' },
  },
  {
    name: 'user.* on a symlink itself is EPERM',
    setup: [file('f'), symlink('l', 'f')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.a', b'1', follow_symlinks=False)", p('l')),
    expect: 'EPERM',
  },
  {
    name: 'a name outside the known namespaces is ENOTSUP',
    setup: [file('f')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'bogus.name', b'1')", p('f')),
    expect: 'ENOTSUP',
  },
  {
    name: 'root sets and reads trusted.*',
    setup: [file('f')],
    action: ({ py, p }) => py("os.setxattr(args[0], 'trusted.a', b'root only')\nresult = os.getxattr(args[0], 'trusted.a').decode()", p('f')),
    expect: { value: 'root only' },
  },
  {
    name: 'a user cannot set trusted.*: EPERM',
    as: USER,
    setup: [file('f', '', { owner: USER })],
    action: ({ py, p }) => py("os.setxattr(args[0], 'trusted.a', b'1')", p('f')),
    expect: 'EPERM',
  },
  {
    name: 'a user cannot read trusted.*: ENODATA',
    as: USER,
    setup: [file('f', '', { owner: USER }), xattr('f', 'trusted.hidden', 'x')],
    action: ({ py, p }) => py("os.getxattr(args[0], 'trusted.hidden')", p('f')),
    expect: 'ENODATA',
  },
  {
    name: 'listxattr by a user leaves trusted.* out (root sees it)',
    as: USER,
    setup: [file('f', '', { owner: USER }), xattr('f', 'trusted.hidden', 'x'), xattr('f', 'user.shown', 'y')],
    action: ({ py, p }) => py('result = sorted(os.listxattr(args[0]))', p('f')),
    expect: { value: ['user.shown'] },
  },
  {
    name: 'a user cannot set security.* even on its own file: EPERM',
    as: USER,
    setup: [file('f', '', { owner: USER })],
    action: ({ py, p }) => py("os.setxattr(args[0], 'security.dpms-test', b'1')", p('f')),
    expect: 'EPERM',
  },
  {
    name: "a user who may write someone else's file may set user.* on it",
    as: USER,
    setup: [file('f', '', { mode: 0o666 })],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.a', b'1')", p('f')),
    expect: 'ok',
  },
  {
    name: 'a user who may not write the file cannot set user.*: EACCES',
    as: USER,
    setup: [file('f', '', { mode: 0o644 })],
    action: ({ py, p }) => py("os.setxattr(args[0], 'user.a', b'1')", p('f')),
    expect: 'EACCES',
  },
  {
    name: 'a user who may not read the file cannot get user.*: EACCES',
    as: USER,
    setup: [file('f', '', { mode: 0o600 }), xattr('f', 'user.a', '1')],
    action: ({ py, p }) => py("os.getxattr(args[0], 'user.a')", p('f')),
    expect: 'EACCES',
  },
];
