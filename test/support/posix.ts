// The shape of the POSIX conformance tables (test/fs/posix/*.ts) and the runner that plays one case:
// a fresh directory, the setup (as root, from this process), the action (as root in this process, or
// as another user in a child: test/support/as-user.ts), then the expected result or errno, the
// timestamps that must (and must not) move, and any further checks, all as root.
//
// Actions run both here and in children, so they see the file system only through PosixContext and
// must be self-contained (see as-user.ts). Node has no xattr, mknod, renameat2 or utimensat with
// UTIME_OMIT, so PosixContext.py runs a line of python3 for those (python3 is on every machine we
// use; /usr/bin/python3 first, because a pyenv shim under /root is out of reach of other users).

import assert from 'node:assert/strict';
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';
import { runAs, runHere, type ActionResult } from './as-user';

export type Target = 'dpms' | 'tmpfs';

export interface User { readonly name: string; readonly uid: number; readonly gid: number }
export const ROOT: User = { name: 'root', uid: 0, gid: 0 };
/** The unprivileged user of the permission cases (nobody:nogroup). */
export const USER: User = { name: 'user 65534', uid: 65534, gid: 65534 };
/** A second unprivileged user, for sticky directories and ownership. */
export const OTHER: User = { name: 'user 65533', uid: 65533, gid: 65533 };

export type Errno =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EACCES' | 'EPERM' | 'ENAMETOOLONG' | 'EINVAL'
  | 'ELOOP' | 'EXDEV' | 'EBADF' | 'EBUSY' | 'ENODATA' | 'ENOTSUP' | 'ERANGE' | 'E2BIG';

/** 'ok', an errno name, or a value the action must return (compared after a JSON round trip). */
export type Expectation = 'ok' | Errno | { readonly value: unknown };

/** What an action may use; the same in this process and in a child. */
export interface PosixContext {
  readonly fs: typeof import('node:fs').promises;
  readonly constants: typeof import('node:fs').constants;
  /** The case's own fresh directory. */
  readonly dir: string;
  /** A writable directory on another file system (EXDEV). */
  readonly elsewhere: string;
  /** A path in the case's directory, joined with '/' and not normalised ('d/.' and 'f/' stay as written). */
  p(...names: string[]): string;
  /** Run a program; resolves with its stdout, rejects (code 'EXIT') when it fails. */
  sh(file: string, args: readonly string[]): Promise<string>;
  /**
   * Run python3 code with `args` (strings) in scope; resolves with what it assigns to `result`, or
   * rejects with the errno name of an OSError. In scope as well: os, stat, renameat2(old, new, flags),
   * utimensat(path, atime, mtime) with each time a number of ns, 'now' or 'omit'.
   */
  py(code: string, ...args: readonly (string | number)[]): Promise<unknown>;
}

export interface PosixContextInput { readonly dir: string; readonly elsewhere: string; readonly python: string }

const PYTHON_PRELUDE = `
import os, sys, json, errno, ctypes, stat
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def checked(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def renameat2(old, new, flags):
    checked(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags)))
class Timespec(ctypes.Structure):
    _fields_ = [('sec', ctypes.c_long), ('nsec', ctypes.c_long)]
def timespec(value):
    if value == 'omit': return Timespec(0, (1 << 30) - 2)
    if value == 'now': return Timespec(0, (1 << 30) - 1)
    return Timespec(int(value) // 10**9, int(value) % 10**9)
def utimensat(path, atime, mtime):
    checked(libc.utimensat(AT_FDCWD, os.fsencode(path), (Timespec * 2)(timespec(atime), timespec(mtime)), 0))
args = sys.argv[2:]
result = None
try:
    exec(sys.argv[1])
    print(json.dumps({'value': result}))
except OSError as error:
    print(json.dumps({'error': errno.errorcode.get(error.errno, 'E%d' % error.errno)}))
`;

/** Builds the PosixContext; shipped to children as source, so it uses nothing but its input and require. */
export const posixContext = (input: PosixContextInput & { readonly prelude: string }): PosixContext => {
  const nodeFs: typeof import('node:fs') = require('node:fs');
  const { execFile }: typeof import('node:child_process') = require('node:child_process');
  const sh = (file: string, args: readonly string[]): Promise<string> => new Promise((resolve, reject) => {
    execFile(file, [...args], { timeout: 10_000, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(new Error(`${file} ${args.join(' ')} failed: ${stderr || error.message}`), { code: 'EXIT' }));
      else resolve(stdout);
    });
  });
  return {
    fs: nodeFs.promises,
    constants: nodeFs.constants,
    dir: input.dir,
    elsewhere: input.elsewhere,
    p: (...names: string[]) => [input.dir, ...names].join('/'),
    sh,
    py: async (code: string, ...args: readonly (string | number)[]) => {
      const output = JSON.parse(await sh(input.python, ['-c', input.prelude, code, ...args.map(String)])) as { value?: unknown; error?: string };
      if (output.error) throw Object.assign(new Error(`python3: ${output.error}`), { code: output.error });
      return output.value;
    },
  };
};

// ---- setup: a small tree, described as data and created as root before the action ----

export interface Attributes { readonly mode?: number; readonly owner?: User; readonly group?: number }

export type Entry =
  | ({ readonly kind: 'file'; readonly name: string; readonly content: string | Buffer } & Attributes)
  | ({ readonly kind: 'dir'; readonly name: string } & Attributes)
  | ({ readonly kind: 'fifo'; readonly name: string } & Attributes)
  | { readonly kind: 'symlink'; readonly name: string; readonly target: string; readonly owner?: User }
  | { readonly kind: 'link'; readonly name: string; readonly existing: string }
  | { readonly kind: 'times'; readonly name: string; readonly atimeNs: bigint; readonly mtimeNs: bigint }
  | { readonly kind: 'xattr'; readonly name: string; readonly key: string; readonly value: string };

/** A regular file (mode 0644 unless given, owned by root unless given). */
export const file = (name: string, content: string | Buffer = '', attributes: Attributes = {}): Entry => ({ kind: 'file', name, content, ...attributes });
/** A directory (mode 0755 unless given); '.' is the case's own directory. */
export const dir = (name: string, attributes: Attributes = {}): Entry => ({ kind: 'dir', name, ...attributes });
export const fifo = (name: string, attributes: Attributes = {}): Entry => ({ kind: 'fifo', name, ...attributes });
export const symlink = (name: string, target: string, owner?: User): Entry => ({ kind: 'symlink', name, target, owner });
export const hardlink = (name: string, existing: string): Entry => ({ kind: 'link', name, existing });
export const times = (name: string, atimeNs: bigint, mtimeNs: bigint): Entry => ({ kind: 'times', name, atimeNs, mtimeNs });
export const xattr = (name: string, key: string, value: string): Entry => ({ kind: 'xattr', name, key, value });

// ---- cases ----

/** For each path ('name' or 'old -> new' when the action moves it): the stamps that must advance; the others must not move. */
export type TimestampRule = Readonly<Record<string, '' | 'atime' | 'mtime' | 'ctime' | 'mtime ctime' | 'atime ctime' | 'atime mtime ctime'>>;

export interface CheckContext {
  /** The action's value (after the JSON round trip). */
  readonly value: unknown;
  p(...names: string[]): string;
  /** lstat as root, with ns timestamps. */
  stat(name: string): Promise<BigIntStats>;
  /** The lstat of a setup entry (or '.') taken just after the setup. */
  before(name: string): BigIntStats;
  read(name: string): Promise<string>;
  exists(name: string): Promise<boolean>;
}

export interface PosixCase {
  /** Reads as documentation: what is done and what POSIX says happens. */
  readonly name: string;
  /** Who runs the action (root unless given). */
  readonly as?: User;
  readonly setup?: readonly Entry[];
  readonly action: (t: PosixContext) => Promise<unknown>;
  readonly expect: Expectation;
  readonly timestamps?: TimestampRule;
  readonly check?: (t: CheckContext) => Promise<void>;
  /** Only on one target, with the reason (a documented dpms choice, such as no device nodes). */
  readonly only?: { readonly target: Target; readonly why: string };
  /** Only where a kernel setting holds (a file under /proc/sys and its value), such as fs/protected_hardlinks = 1. */
  readonly requires?: { readonly sysctl: string; readonly value: string };
  /** A known dpms bug, said in full ('dpms bug: ...'): node:test reports the case as todo on dpms only, so it stays in the suite. */
  readonly todo?: string;
}

export interface Suite {
  readonly target: Target;
  /** Where the case directories go (on the target). */
  readonly root: string;
  readonly elsewhere: string;
  readonly python: string;
}

// ---- permission matrices ----

type Need = 'r' | 'w' | 'x' | 'rw' | 'wx';
const BIT: Record<string, number> = { r: 4, w: 2, x: 1 };
const CLASSES = [
  { who: 'owner', shift: 6, owner: USER, group: ROOT.gid },
  { who: 'group', shift: 3, owner: ROOT, group: USER.gid },
  { who: 'others', shift: 0, owner: ROOT, group: ROOT.gid },
] as const;

export const modeString = (mode: number): string =>
  [6, 3, 0].map((shift) => ['r', 'w', 'x'].map((letter) => (mode >> shift) & BIT[letter] ? letter : '-').join('')).join('');

/**
 * The owner/group/others × permission-bit matrix for one operation on `f` (a file holding 'abc') or
 * `d` (a directory holding the file `e`), run as USER: with only the needed bits in USER's class the
 * operation is allowed; without any one of them it is EACCES even though every other class has
 * every bit (the class that matches is the only one that counts); root ignores the bits.
 */
export function permissionMatrix(spec: {
  readonly operation: string;
  readonly object: 'file' | 'dir';
  readonly needs: Need;
  readonly action: (t: PosixContext) => Promise<unknown>;
  /** More to check after an allowed run (the effect happened). */
  readonly allowed?: (t: CheckContext) => Promise<void>;
}): PosixCase[] {
  const needBits = [...spec.needs].reduce((sum, letter) => sum | BIT[letter], 0);
  // The directory is made with its final mode after its content, so a mode without w or x does not stop the setup.
  const setup = (mode: number, owner: User, group: number): Entry[] => spec.object === 'file'
    ? [file('f', 'abc', { mode, owner, group })]
    : [dir('d'), file('d/e', 'abc'), dir('d', { mode, owner, group })];
  const noun = spec.object === 'file' ? 'the file' : 'the directory';
  const cases: PosixCase[] = [];
  for (const klass of CLASSES) {
    const granted = needBits << klass.shift;
    cases.push({
      name: `${spec.operation}: ${klass.who} of ${noun} with ${modeString(granted)} is allowed`,
      as: USER,
      setup: setup(granted, klass.owner, klass.group),
      action: spec.action,
      expect: 'ok',
      check: spec.allowed,
    });
    for (const letter of spec.needs) {
      const denied = 0o777 & ~(BIT[letter] << klass.shift);
      cases.push({
        name: `${spec.operation}: ${klass.who} of ${noun} with ${modeString(denied)} (no ${letter} for ${klass.who}) gets EACCES`,
        as: USER,
        setup: setup(denied, klass.owner, klass.group),
        action: spec.action,
        expect: 'EACCES',
      });
    }
  }
  // Root passes every check but one: executing a file needs at least one x bit somewhere.
  const rootMode = spec.object === 'file' && spec.needs.includes('x') ? 0o001 : 0;
  cases.push({
    name: `${spec.operation}: root ignores the mode bits of ${noun} (${modeString(rootMode)})`,
    setup: setup(rootMode, USER, USER.gid),
    action: spec.action,
    expect: 'ok',
    check: spec.allowed,
  });
  return cases;
}

// ---- the runner ----

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Long enough for every clock a file system may stamp with (the kernel's coarse clock ticks every
 * 1-10 ms) to move, so that "changed" and "unchanged" can be told apart. Not a timing assertion.
 */
const CLOCK_TICK_MS = 20;

const STAMPS = ['atime', 'mtime', 'ctime'] as const;

function contextInput(suite: Suite, caseDir: string): PosixContextInput & { readonly prelude: string } {
  return { dir: caseDir, elsewhere: suite.elsewhere, python: suite.python, prelude: PYTHON_PRELUDE };
}

async function applySetup(context: PosixContext, entries: readonly Entry[]): Promise<void> {
  for (const entry of entries) {
    const target = context.p(entry.name);
    switch (entry.kind) {
      case 'file':
        await fs.writeFile(target, entry.content);
        break;
      case 'dir':
        if (entry.name !== '.') await fs.mkdir(target, { recursive: true });
        break;
      case 'fifo':
        await context.py('os.mkfifo(args[0])', target);
        break;
      case 'symlink':
        await fs.symlink(entry.target, target);
        if (entry.owner) await fs.lchown(target, entry.owner.uid, entry.owner.gid);
        continue;
      case 'link':
        await fs.link(context.p(entry.existing), target);
        continue;
      case 'times':
        await context.py('os.utime(args[0], ns=(int(args[1]), int(args[2])), follow_symlinks=False)', target, entry.atimeNs.toString(), entry.mtimeNs.toString());
        continue;
      case 'xattr':
        await context.py('os.setxattr(args[0], args[1], args[2].encode())', target, entry.key, entry.value);
        continue;
    }
    // chown before chmod: chown clears the set-id bits that chmod then sets.
    if (entry.owner || entry.group !== undefined) await fs.chown(target, entry.owner?.uid ?? 0, entry.group ?? entry.owner?.gid ?? 0);
    await fs.chmod(target, entry.mode ?? (entry.kind === 'dir' ? 0o755 : 0o644));
  }
}

function expectResult(result: ActionResult, expected: Expectation, who: string): void {
  const got = result.ok ? 'ok' : result.code;
  const detail = result.ok ? `value ${JSON.stringify(result.value)}` : `${result.code}: ${result.message ?? ''}`;
  if (expected === 'ok') {
    assert.equal(got, 'ok', `expected success (${who}), got ${detail}`);
  } else if (typeof expected === 'string') {
    assert.equal(got, expected, `expected ${expected} (${who}), got ${detail}`);
  } else {
    assert.equal(got, 'ok', `expected a value (${who}), got ${detail}`);
    assert.deepEqual(result.value, JSON.parse(JSON.stringify(expected.value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))));
  }
}

/** Play one case in `caseDir` (made fresh here; it must not exist). */
export async function runCase(suite: Suite, caseDir: string, testCase: PosixCase): Promise<void> {
  await fs.mkdir(caseDir);
  const factory = { make: posixContext, input: contextInput(suite, caseDir) };
  const context = posixContext(factory.input);
  await applySetup(context, testCase.setup ?? []);

  const wantsBefore = testCase.timestamps !== undefined || testCase.check !== undefined;
  const before = new Map<string, BigIntStats>();
  if (wantsBefore) {
    const names = new Set(['.', ...(testCase.setup ?? []).map((entry) => entry.name)]);
    for (const rule of Object.keys(testCase.timestamps ?? {})) names.add(rule.split(' -> ')[0]);
    for (const name of names) {
      const stats = await fs.lstat(context.p(name), { bigint: true }).catch(() => undefined);
      if (stats) before.set(name, stats);
    }
  }
  if (testCase.timestamps) await sleep(CLOCK_TICK_MS);

  const user = testCase.as ?? ROOT;
  const result = user.uid === 0 ? await runHere(testCase.action, factory) : await runAs(user, testCase.action, factory);
  expectResult(result, testCase.expect, user.name);

  for (const [rule, changed] of Object.entries(testCase.timestamps ?? {})) {
    const [oldName, newName = oldName] = rule.split(' -> ');
    const was = before.get(oldName);
    assert.ok(was, `no stat of ${oldName} before the action`);
    const now = await fs.lstat(context.p(newName), { bigint: true });
    const mustChange = new Set(changed.split(' ').filter(Boolean));
    for (const stamp of STAMPS) {
      const key = `${stamp}Ns` as const;
      const previous: bigint = was[key];
      const current: bigint = now[key];
      if (mustChange.has(stamp)) assert.ok(current > previous, `${stamp} of ${newName} must advance: ${previous} -> ${current}`);
      else assert.equal(current, previous, `${stamp} of ${newName} must not change`);
    }
  }

  if (testCase.check) {
    await testCase.check({
      value: result.value,
      p: context.p,
      stat: (name) => fs.lstat(context.p(name), { bigint: true }),
      before: (name) => {
        const stats = before.get(name);
        assert.ok(stats, `no stat of ${name} was taken before the action`);
        return stats;
      },
      read: (name) => fs.readFile(context.p(name), 'utf8'),
      exists: (name) => fs.lstat(context.p(name)).then(() => true, () => false),
    });
  }
}
