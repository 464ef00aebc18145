// Proves that real tools work on the mount: cp -a of a source tree (a few hundred files, nested
// directories, symlinks, a hard link, a FIFO, a sparse and a multi-block file, set modes, owners and
// nanosecond mtimes) gives a copy that diff -r, tar --compare and a stat listing find identical; tar c /
// tar x on the mount; git init/add/commit/log/status/gc/fsck on a repository in the mount; and that two
// mount processes of one cluster see each other's creates, overwrites, renames, unlinks and O_APPEND
// writes (the documented consistency: within the 1-s attribute/entry cache, data close-to-open).
//
// Runs against real `dpms mount`s of a 3-node cluster. DPMS_FS_TARGET=tmpfs runs the same steps on a
// tmpfs directory instead (the kernel's file system is the reference; the "second mount" is then the
// same directory). Every tool is a child process; this process uses only async fs calls on the mount.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { describeResult, runOk, runTool, startFsTarget, type FsTarget } from '../support/fs-target';

const REPO = path.resolve(__dirname, '..', '..', '..');
/** The repository's own sources and two dependencies: a few hundred files in nested directories. */
const SOURCES = ['pdsm', 'kvs', 'fs', 'native/src', 'scripts', 'test', 'docs', 'README.md', 'package.json', 'node_modules/yargs', 'node_modules/abstract-level'];
/** pDFS's attribute and entry cache lasts 1 s per mount; after this long the other mount must see a change. */
const CACHE_WAIT_MS = 1500;
/** diff cannot compare FIFOs or follow a dangling symlink; the stat listing and --no-dereference cover them. */
const DIFF_EXCLUDES = ['-x', 'fifo', '-x', 'dangling'];
/** Type, mode, owner, links, size (not for directories: every file system counts those differently), mtime in ns. */
const STAT_FORMAT = '%n\t%F\t%a\t%u:%g\t%h\t%s\t%.9Y\n';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function statListing(root: string): Promise<string[]> {
  const output = await runOk('find', ['.', '-exec', 'stat', '--printf', STAT_FORMAT, '{}', '+'], { cwd: root });
  return output.split('\n').filter(Boolean).map((line) => {
    const fields = line.split('\t');
    if (fields[1] === 'directory') fields[5] = '-';
    return fields.join('\t');
  }).sort();
}

/** Compares two stat listings, naming only the lines that differ (a full listing is hundreds of lines). */
function assertSameListing(actual: string[], expected: string[], what: string): void {
  const expectedSet = new Set(expected);
  const actualSet = new Set(actual);
  const missing = expected.filter((line) => !actualSet.has(line)).slice(0, 20);
  const extra = actual.filter((line) => !expectedSet.has(line)).slice(0, 20);
  assert.ok(missing.length === 0 && extra.length === 0 && actual.length === expected.length,
    `${what}: the stat listings differ (%n %F %a %u:%g %h %s %.9Y)\n  original:\n    ${missing.join('\n    ')}\n  copy:\n    ${extra.join('\n    ')}`);
}

async function diffTrees(expected: string, actual: string): Promise<void> {
  for (const args of [['-r', ...DIFF_EXCLUDES], ['-r', '--no-dereference', '-x', 'fifo']]) {
    const result = await runTool('diff', [...args, expected, actual]);
    assert.equal(result.status, 0, describeResult('diff', args, result));
    assert.equal(result.stdout.length, 0);
  }
}

async function errorCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? String(error);
  }
}

/** Builds the tree to copy on local disk (not the mount): the sources plus every kind of entry tools care about. */
async function buildTree(tree: string): Promise<void> {
  fs.mkdirSync(tree);
  const sources = SOURCES.filter((source) => fs.existsSync(path.join(REPO, source)));
  await runOk('cp', ['-a', '--parents', ...sources, tree], { cwd: REPO });
  const at = (relative: string): string => path.join(tree, relative);
  for (const dir of ['modes', 'links', 'owners', 'names', 'blobs', 'empty-dir', 'deep/a/b/c/d/e/f/g/h']) fs.mkdirSync(at(dir), { recursive: true });
  fs.writeFileSync(at('deep/a/b/c/d/e/f/g/h/leaf.txt'), 'a leaf eight directories down\n');
  fs.writeFileSync(at('modes/script.sh'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
  fs.writeFileSync(at('modes/secret'), 'only the owner\n');
  fs.chmodSync(at('modes/secret'), 0o600);
  fs.writeFileSync(at('modes/group-readable'), 'owner and group\n');
  fs.chmodSync(at('modes/group-readable'), 0o640);
  fs.writeFileSync(at('modes/read-only'), 'nobody writes this\n');
  fs.chmodSync(at('modes/read-only'), 0o444);
  fs.mkdirSync(at('modes/private'));
  fs.writeFileSync(at('modes/private/inside'), 'behind a 0700 directory\n');
  fs.chmodSync(at('modes/private'), 0o700);
  fs.mkdirSync(at('modes/sticky'));
  fs.chmodSync(at('modes/sticky'), 0o1777);
  fs.writeFileSync(at('modes/empty'), '');
  fs.symlinkSync('../README.md', at('links/to-readme'));
  fs.symlinkSync('../pdsm', at('links/to-directory'));
  fs.symlinkSync('does/not/exist', at('links/dangling'));
  fs.symlinkSync('/etc/hostname', at('links/absolute'));
  fs.linkSync(at('modes/script.sh'), at('links/hard-to-script'));
  fs.writeFileSync(at('owners/user-file'), 'belongs to 1000\n');
  fs.chownSync(at('owners/user-file'), 1000, 1000);
  fs.mkdirSync(at('owners/nobody-dir'));
  fs.writeFileSync(at('owners/nobody-dir/file'), 'belongs to nobody\n');
  fs.chownSync(at('owners/nobody-dir/file'), 65534, 65534);
  fs.chownSync(at('owners/nobody-dir'), 65534, 65534);
  fs.writeFileSync(at('names/with spaces and naïve ünïcode.txt'), 'spaces\n');
  fs.writeFileSync(at(`names/${'n'.repeat(255)}`), 'the longest name\n');
  fs.writeFileSync(at('names/-starts-with-a-dash'), 'dash\n');
  await runOk('mkfifo', [at('names/fifo')]);
  // 3 blocks and a bit of pDFS's 1-MiB blocks, and a 5-MiB hole before 3 bytes.
  fs.writeFileSync(at('blobs/multi-block.bin'), randomBytes(3 * 1024 * 1024 + 12_345));
  const sparse = fs.openSync(at('blobs/sparse.bin'), 'w');
  fs.writeSync(sparse, 'end', 5 * 1024 * 1024 + 7);
  fs.closeSync(sparse);
  // mtimes last (creating entries changes their directory's): old, with nanoseconds, on files, a symlink and directories.
  await runOk('touch', ['-d', '2001-02-03 04:05:06.123456789', at('modes/script.sh'), at('blobs/multi-block.bin')]);
  await runOk('touch', ['-h', '-d', '1999-12-31 23:59:59.5', at('links/to-readme')]);
  await runOk('touch', ['-d', '2010-10-10 10:10:10', at('deep/a/b/c'), at('empty-dir'), at('modes/private')]);
}

describe('real tools on the mount', () => {
  let target: FsTarget;
  let staging: string;
  let tree: string;
  let treeListing: string[];
  let gitEnv: NodeJS.ProcessEnv;

  before(async () => {
    staging = fs.mkdtempSync(path.join(os.tmpdir(), 'dpms-tools-'));
    tree = path.join(staging, 'tree');
    await buildTree(tree);
    treeListing = await statListing(tree);
    gitEnv = { ...process.env, HOME: staging, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', LC_ALL: 'C' };
    target = await startFsTarget();
  });
  after(async () => {
    await target?.stop();
    if (staging) fs.rmSync(staging, { recursive: true, force: true });
  });

  test('cp -a copies the tree: diff -r and the stat listing (type, mode, owner, links, size, mtime ns) match', async () => {
    assert.ok(treeListing.length > 300, `the tree has ${treeListing.length} entries`);
    await runOk('cp', ['-a', tree, target.dir]);
    const copy = path.join(target.dir, 'tree');
    await diffTrees(tree, copy);
    assertSameListing(await statListing(copy), treeListing, 'cp -a');
    assert.equal((await runOk('readlink', [path.join(copy, 'links/dangling')])).trim(), 'does/not/exist');
    // GNU tar compares mode, owner, mtime, size, contents and link targets against the original.
    await runOk('tar', ['-C', target.dir, '-cf', path.join(staging, 'from-mount.tar'), 'tree']);
    await runOk('tar', ['-C', staging, '--compare', '-f', path.join(staging, 'from-mount.tar')]);
  });

  test('tar c of the tree on the mount, tar x into the mount elsewhere: identical trees', async () => {
    const copy = path.join(target.dir, 'tree');
    // Test 1's copy, unless it did not get that far.
    if (await errorCode(fs.promises.access(copy)) !== 'no error') await runOk('cp', ['-a', tree, target.dir]);
    const archive = path.join(target.dir, 'tree.tar');
    // pax format: GNU tar's default keeps whole seconds of mtime only.
    await runOk('tar', ['--format=posix', '-C', target.dir, '-cf', archive, 'tree']);
    const listed = (await runOk('tar', ['-tf', archive])).split('\n').filter(Boolean);
    assert.equal(listed.length, treeListing.length);
    const elsewhere = path.join(target.dir, 'untarred', 'here');
    await fs.promises.mkdir(elsewhere, { recursive: true });
    await runOk('tar', ['-C', elsewhere, '-xpf', archive]);
    await diffTrees(tree, path.join(elsewhere, 'tree'));
    assertSameListing(await statListing(path.join(elsewhere, 'tree')), treeListing, 'tar x');
    await runOk('tar', ['-C', staging, '--compare', '-f', archive]);
    await runOk('rm', ['-rf', path.join(target.dir, 'untarred'), archive, copy]);
    assert.deepEqual(await fs.promises.readdir(target.dir), []);
  });

  test('git init, add, commit, log, status, gc and fsck on a repository in the mount', async () => {
    const repo = path.join(target.dir, 'repo');
    const git = (...args: string[]): Promise<string> =>
      runOk('git', ['-c', 'user.name=dpms test', '-c', 'user.email=test@dpms.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd: repo, env: gitEnv });
    await fs.promises.mkdir(repo);
    await git('init', '-q');
    const sources = SOURCES.filter((source) => fs.existsSync(path.join(REPO, source)) && !source.startsWith('node_modules'));
    await runOk('cp', ['-a', '--parents', ...sources, repo], { cwd: REPO });
    await git('add', '-A');
    await git('commit', '-q', '-m', 'first: the sources');
    const files = (await git('ls-files')).split('\n').filter(Boolean);
    assert.ok(files.length > 100, `${files.length} files committed`);
    assert.equal(await git('status', '--porcelain'), '');

    // A change, a rename and a deletion, seen by status and committed.
    await runOk('sh', ['-c', 'echo "// one more line" >> README.md'], { cwd: repo });
    await git('mv', 'package.json', 'package-renamed.json');
    await git('rm', '-q', files.find((file) => file.startsWith('docs/'))!);
    assert.deepEqual((await git('status', '--porcelain')).split('\n').filter(Boolean).map((line) => line.slice(0, 2)).sort(), [' M', 'D ', 'R '].sort());
    await git('commit', '-q', '-a', '-m', 'second: change, rename, delete');
    assert.equal((await git('log', '--oneline')).split('\n').filter(Boolean).length, 2);
    assert.equal(await git('status', '--porcelain'), '');
    assert.equal(await git('fsck', '--full', '--strict', '--no-dangling'), '');

    // gc packs the loose objects (pack files are read through mmap), then everything checks again.
    await git('gc', '--quiet', '--prune=now');
    assert.equal(await git('count-objects'), '0 objects, 0 kilobytes\n');
    assert.equal(await git('fsck', '--full', '--strict', '--no-dangling'), '');
    assert.match(await git('log', '-1', '--format=%s'), /^second: change, rename, delete$/m);
    assert.equal(await git('status', '--porcelain'), '');
    assert.equal((await git('diff', '--stat', 'HEAD~1', 'HEAD')).includes('3 files changed'), true);
    await runOk('rm', ['-rf', repo]);
  });

  test('two mounts of one cluster see each other\'s files: creates, overwrites, renames, unlinks, O_APPEND', async () => {
    const a = path.join(target.dir, 'two');
    await fs.promises.mkdir(a);
    const b = path.join(await target.secondMount(), 'two');
    const inA = (name: string): string => path.join(a, name);
    const inB = (name: string): string => path.join(b, name);
    const contents = new Map<string, Buffer>();
    const sizes = [0, 1, 4096, 100_000, 1024 * 1024 + 17, 2 * 1024 * 1024 + 4096];

    // B looks first, so it has negative entries to forget; then each mount writes its own files.
    for (let i = 0; i < sizes.length; i++) assert.equal(await errorCode(fs.promises.stat(inB(`from-a-${i}`))), 'ENOENT');
    for (let i = 0; i < sizes.length; i++) {
      contents.set(`from-a-${i}`, randomBytes(sizes[i]));
      contents.set(`from-b-${i}`, randomBytes(sizes[i]));
      await fs.promises.writeFile(inA(`from-a-${i}`), contents.get(`from-a-${i}`)!);
      await fs.promises.writeFile(inB(`from-b-${i}`), contents.get(`from-b-${i}`)!);
    }
    await sleep(CACHE_WAIT_MS);
    for (let i = 0; i < sizes.length; i++) {
      assert.ok((await fs.promises.readFile(inB(`from-a-${i}`))).equals(contents.get(`from-a-${i}`)!), `B reads from-a-${i}`);
      assert.ok((await fs.promises.readFile(inA(`from-b-${i}`))).equals(contents.get(`from-b-${i}`)!), `A reads from-b-${i}`);
      assert.equal((await fs.promises.stat(inB(`from-a-${i}`))).size, sizes[i]);
    }
    assert.deepEqual((await fs.promises.readdir(b)).sort(), [...contents.keys()].sort());
    assert.deepEqual((await fs.promises.readdir(a)).sort(), [...contents.keys()].sort());

    // Overwrites (shorter, same size, longer) in both directions, a rename and an unlink in A.
    const rewrite = async (file: string, size: number, where: (name: string) => string): Promise<void> => {
      contents.set(file, randomBytes(size));
      await fs.promises.writeFile(where(file), contents.get(file)!);
    };
    await rewrite('from-b-3', 5_000, inA);
    await rewrite('from-b-4', sizes[4], inA);
    await rewrite('from-a-2', 3 * 1024 * 1024, inB);
    await fs.promises.rename(inA('from-a-0'), inA('renamed-in-a'));
    contents.set('renamed-in-a', contents.get('from-a-0')!);
    contents.delete('from-a-0');
    await fs.promises.unlink(inA('from-a-1'));
    contents.delete('from-a-1');
    await sleep(CACHE_WAIT_MS);
    for (const name of ['from-b-3', 'from-b-4', 'renamed-in-a']) assert.ok((await fs.promises.readFile(inB(name))).equals(contents.get(name)!), `B reads the new ${name}`);
    assert.ok((await fs.promises.readFile(inA('from-a-2'))).equals(contents.get('from-a-2')!), 'A reads the new from-a-2');
    assert.equal((await fs.promises.stat(inB('from-b-3'))).size, 5_000);
    assert.equal(await errorCode(fs.promises.stat(inB('from-a-0'))), 'ENOENT', 'renamed away in A');
    assert.equal(await errorCode(fs.promises.stat(inB('from-a-1'))), 'ENOENT', 'unlinked in A');
    assert.equal(await errorCode(fs.promises.readFile(inB('from-a-1'))), 'ENOENT', 'unlinked in A');
    assert.deepEqual((await fs.promises.readdir(b)).sort(), [...contents.keys()].sort());

    // Two processes append lines through the two mounts at the same time, each with one O_APPEND descriptor.
    await fs.promises.writeFile(inA('shared.log'), '');
    await sleep(CACHE_WAIT_MS);
    const lines = 300;
    const line = (tag: string, i: number): string => `${tag} ${String(i).padStart(4, '0')} ${'.'.repeat(40)}\n`;
    const appender = [
      'const fs = require("fs");',
      'const [file, tag, count, startAt] = process.argv.slice(1);',
      // Both start together, so their appends interleave.
      'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, Number(startAt) - Date.now()));',
      'const fd = fs.openSync(file, "a");',
      `for (let i = 0; i < Number(count); i++) fs.writeSync(fd, \`\${tag} \${String(i).padStart(4, "0")} ${'.'.repeat(40)}\\n\`);`,
      'fs.closeSync(fd);',
    ].join('\n');
    const startAt = String(Date.now() + 500);
    await Promise.all([
      runOk(process.execPath, ['-e', appender, inA('shared.log'), 'A', String(lines), startAt]),
      runOk(process.execPath, ['-e', appender, inB('shared.log'), 'B', String(lines), startAt]),
    ]);
    await sleep(CACHE_WAIT_MS);
    const expectedA = Array.from({ length: lines }, (_, i) => line('A', i));
    const expectedB = Array.from({ length: lines }, (_, i) => line('B', i));
    for (const [where, file] of [['A', inA('shared.log')], ['B', inB('shared.log')]] as const) {
      const text = (await fs.promises.readFile(file)).toString('latin1');
      const got = text.split(/(?<=\n)/);
      const present = new Set(got);
      const missing = [...expectedA, ...expectedB].filter((l) => !present.has(l)).map((l) => l.slice(0, 6));
      let offset = 0;
      const torn: string[] = [];
      for (const l of got) {
        if (!/^[AB] \d{4} \.{40}\n$/.test(l) && torn.length < 5) torn.push(`at byte ${offset}: ${JSON.stringify(l)}`);
        offset += l.length;
      }
      assert.ok(missing.length === 0 && torn.length === 0 && text.length === 2 * lines * expectedA[0].length,
        `read through ${where}: ${text.length} bytes of ${2 * lines * expectedA[0].length}; lines missing: ${missing.slice(0, 10).join(', ') || 'none'}; ` +
        `torn or mixed lines:\n  ${torn.join('\n  ') || 'none'}`);
      assert.deepEqual(got.filter((l) => l.startsWith('A ')), expectedA, `read through ${where}: A's lines, in order`);
      assert.deepEqual(got.filter((l) => l.startsWith('B ')), expectedB, `read through ${where}: B's lines, in order`);
    }
    await runOk('rm', ['-rf', a]);
    await sleep(CACHE_WAIT_MS);
    assert.equal(await errorCode(fs.promises.stat(b)), 'ENOENT');
  });
});
