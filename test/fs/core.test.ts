// The pDFS core without FUSE, on a real 3-node cluster: names, directories past many bucket splits,
// files across blocks and holes, truncate, links, rename's rules, xattrs, and that inode numbers of
// freed inodes are refused (ESTALE), and that files unlinked while open outlive their name only as long
// as their mount does.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FileSystem, parseOrphanName, ROOT_CALLER, RENAME_EXCHANGE, RENAME_NOREPLACE, verifyFileSystem } from '../../fs';
import { ClusterClient } from '../../pdsm';
import { startCluster, type TestCluster } from '../support/cluster';
import { Random, testSeed } from '../support/random';

const name = (text: string): Buffer => Buffer.from(text);
const errno = async (promise: Promise<unknown>): Promise<string> => {
  try {
    await promise;
  } catch (error) {
    return (error as { errno?: string }).errno ?? `not an FsError: ${String(error)}`;
  }
  return 'no error';
};

describe('pDFS core', () => {
  let cluster: TestCluster;
  let client: ClusterClient;
  let fs: FileSystem;
  before(async () => {
    cluster = await startCluster({ nodes: 3, transport: 'local', sizeMb: 64 });
    client = await ClusterClient.connect({ config: cluster.config });
    fs = await FileSystem.open(client, { create: true });
  });
  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  test('a second open finds the same file system', async () => {
    const again = await FileSystem.open(client, { create: false });
    assert.equal(again.rootIno, fs.rootIno);
    const root = await fs.stat(fs.rootIno);
    assert.equal(root.mode & 0o170000, 0o040000);
    assert.equal(root.nlink, 2);
  });

  test('create, lookup, readdir, unlink', async () => {
    const dir = await fs.mkdir(ROOT_CALLER, fs.rootIno, name('d1'), 0o755);
    const file = await fs.mknod({ uid: 1000, gid: 1000 }, dir.ino, name('f'), 0o100644, 0);
    assert.equal(file.uid, 1000);
    assert.equal((await fs.lookup(dir.ino, name('f'))).ino, file.ino);
    assert.equal(await errno(fs.lookup(dir.ino, name('g'))), 'ENOENT');
    assert.equal(await errno(fs.mknod(ROOT_CALLER, dir.ino, name('f'), 0o100644, 0)), 'EEXIST');
    assert.equal(await errno(fs.mknod(ROOT_CALLER, dir.ino, name('x'.repeat(256)), 0o100644, 0)), 'ENAMETOOLONG');
    assert.deepEqual((await fs.readdir(dir.ino)).map((e) => e.name.toString()), ['f']);
    assert.equal((await fs.stat(fs.rootIno)).nlink, 3);
    assert.equal(await errno(fs.rmdir(fs.rootIno, name('d1'))), 'ENOTEMPTY');
    await fs.unlink(dir.ino, name('f'));
    assert.equal(await errno(fs.stat(file.ino)), 'ESTALE');
    await fs.rmdir(fs.rootIno, name('d1'));
    assert.equal((await fs.stat(fs.rootIno)).nlink, 2);
  });

  test('a directory of 5,000 entries splits its buckets and finds every name', async () => {
    const dir = await fs.mkdir(ROOT_CALLER, fs.rootIno, name('big'), 0o755);
    const count = 5000;
    for (let i = 0; i < count; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => fs.mknod(ROOT_CALLER, dir.ino, name(`file-${i + j}-with-a-longer-name`), 0o100644, 0)));
    }
    const listed = await fs.readdir(dir.ino);
    assert.equal(listed.length, count);
    assert.equal(new Set(listed.map((e) => e.name.toString())).size, count);
    assert.ok((await fs.stat(dir.ino)).height >= 5, 'the table doubled');
    for (let i = 0; i < count; i += 97) assert.equal((await fs.lookup(dir.ino, name(`file-${i}-with-a-longer-name`))).nlink, 1);
    for (let i = 0; i < count; i += 2) await fs.unlink(dir.ino, name(`file-${i}-with-a-longer-name`));
    assert.equal((await fs.readdir(dir.ino)).length, count / 2);
    assert.equal((await fs.stat(dir.ino)).entries, count / 2);
  });

  test('file data: blocks, holes, reallocation, truncate, 64 GiB sparse', async () => {
    const seed = testSeed('pDFS core file data');
    const random = new Random(seed);
    const file = await fs.mknod(ROOT_CALLER, fs.rootIno, name('data'), 0o100644, 0);
    let model = Buffer.alloc(0);
    for (let i = 0; i < 60; i++) {
      const op = random.int(10);
      if (op < 7) {
        const offset = random.int(3 * 1024 * 1024);
        const bytes = Buffer.alloc(1 + random.int(300_000), random.int(256));
        await fs.write(ROOT_CALLER, file.ino, bytes, offset, false);
        if (model.length < offset + bytes.length) model = Buffer.concat([model, Buffer.alloc(offset + bytes.length - model.length)]);
        bytes.copy(model, offset);
      } else {
        const size = random.int(3 * 1024 * 1024);
        await fs.setattr(ROOT_CALLER, file.ino, { size });
        model = size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
      }
      assert.equal((await fs.stat(file.ino)).size, model.length, `seed ${seed} step ${i}`);
      const got = await fs.read(file.ino, 0, model.length + 10);
      assert.ok(got.equals(model), `seed ${seed} step ${i}: contents differ`);
    }
    const big = await fs.mknod(ROOT_CALLER, fs.rootIno, name('sparse'), 0o100644, 0);
    const at = 64 * 1024 ** 3 - 5;
    await fs.write(ROOT_CALLER, big.ino, name('hello'), at, false);
    assert.equal((await fs.stat(big.ino)).size, 64 * 1024 ** 3);
    assert.equal((await fs.read(big.ino, at - 3, 100)).toString('latin1'), '\0\0\0hello');
    assert.ok((await fs.read(big.ino, 123_456_789, 4096)).every((byte) => byte === 0));
    assert.ok((await fs.stat(big.ino)).blocks <= 1024 * 1024 + 3 * 4096, 'a sparse file owns only what was written');
    await fs.unlink(fs.rootIno, name('sparse'));
  });

  test('O_APPEND writes land at the end', async () => {
    const file = await fs.mknod(ROOT_CALLER, fs.rootIno, name('log'), 0o100644, 0);
    await Promise.all(Array.from({ length: 20 }, (_, i) => fs.write(ROOT_CALLER, file.ino, name(`line ${String(i).padStart(2, '0')}\n`), 0, true)));
    const text = (await fs.read(file.ino, 0, 1000)).toString();
    assert.equal(text.split('\n').filter(Boolean).sort().join(','), Array.from({ length: 20 }, (_, i) => `line ${String(i).padStart(2, '0')}`).join(','));
  });

  test('links, symlinks, rename rules', async () => {
    const a = await fs.mkdir(ROOT_CALLER, fs.rootIno, name('ra'), 0o755);
    const b = await fs.mkdir(ROOT_CALLER, a.ino, name('rb'), 0o755);
    const f = await fs.mknod(ROOT_CALLER, a.ino, name('f'), 0o100644, 0);
    await fs.link(f.ino, b.ino, name('f2'));
    assert.equal((await fs.stat(f.ino)).nlink, 2);
    assert.equal(await errno(fs.link(a.ino, b.ino, name('dirlink'))), 'EPERM');
    const s = await fs.symlink(ROOT_CALLER, name('../f'), b.ino, name('s'));
    assert.equal((await fs.readlink(s.ino)).toString(), '../f');
    const long = 'x/'.repeat(1000);
    const s2 = await fs.symlink(ROOT_CALLER, name(long), b.ino, name('s2'));
    assert.equal((await fs.readlink(s2.ino)).toString(), long);
    // a directory cannot move into itself or its subtree
    assert.equal(await errno(fs.rename(fs.rootIno, name('ra'), b.ino, name('x'), 0)), 'EINVAL');
    assert.equal(await errno(fs.rename(fs.rootIno, name('ra'), a.ino, name('x'), 0)), 'EINVAL');
    // rename over two names of one file does nothing
    await fs.rename(a.ino, name('f'), b.ino, name('f2'), 0);
    assert.equal((await fs.stat(f.ino)).nlink, 2);
    // file over file replaces it; the replaced file is gone
    const g = await fs.mknod(ROOT_CALLER, a.ino, name('g'), 0o100644, 0);
    await fs.rename(a.ino, name('g'), b.ino, name('f2'), 0);
    assert.equal((await fs.stat(f.ino)).nlink, 1);
    assert.equal((await fs.lookup(b.ino, name('f2'))).ino, g.ino);
    // dir over non-empty dir, dir over file, file over dir
    const c = await fs.mkdir(ROOT_CALLER, fs.rootIno, name('rc'), 0o755);
    assert.equal(await errno(fs.rename(fs.rootIno, name('rc'), fs.rootIno, name('ra'), 0)), 'ENOTEMPTY');
    assert.equal(await errno(fs.rename(fs.rootIno, name('rc'), a.ino, name('f'), 0)), 'ENOTDIR');
    assert.equal(await errno(fs.rename(a.ino, name('f'), fs.rootIno, name('rc'), 0)), 'EISDIR');
    assert.equal(await errno(fs.rename(a.ino, name('f'), b.ino, name('f2'), RENAME_NOREPLACE)), 'EEXIST');
    // dir over empty dir across parents; link counts follow
    const empty = await fs.mkdir(ROOT_CALLER, b.ino, name('empty'), 0o755);
    const rootLinks = (await fs.stat(fs.rootIno)).nlink;
    await fs.rename(fs.rootIno, name('rc'), b.ino, name('empty'), 0);
    assert.equal(await errno(fs.stat(empty.ino)), 'ESTALE');
    assert.equal((await fs.stat(fs.rootIno)).nlink, rootLinks - 1);
    assert.equal((await fs.stat(c.ino)).parent, b.ino);
    // exchange a file and a directory
    await fs.rename(a.ino, name('f'), b.ino, name('empty'), RENAME_EXCHANGE);
    assert.equal((await fs.lookup(a.ino, name('f'))).ino, c.ino);
    assert.equal((await fs.lookup(b.ino, name('empty'))).ino, f.ino);
    assert.equal((await fs.stat(c.ino)).parent, a.ino);
    assert.equal(await errno(fs.rename(a.ino, name('nope'), b.ino, name('x'), 0)), 'ENOENT');
  });

  test('setgid directories, set-id bits cleared by writes of others, xattrs', async () => {
    const dir = await fs.mkdir({ uid: 1000, gid: 50 }, fs.rootIno, name('sg'), 0o2775);
    const sub = await fs.mkdir({ uid: 1001, gid: 60 }, dir.ino, name('sub'), 0o755);
    assert.equal(sub.gid, 50);
    assert.ok(sub.mode & 0o2000);
    const file = await fs.mknod({ uid: 1001, gid: 60 }, dir.ino, name('f'), 0o106755, 0);
    assert.equal(file.gid, 50);
    await fs.write({ uid: 1002, gid: 70 }, file.ino, name('x'), 0, false);
    assert.equal((await fs.stat(file.ino)).mode & 0o6000, 0);
    await fs.setxattr(file.ino, 'user.a', name('1'), 0);
    await fs.setxattr(file.ino, 'user.b', Buffer.alloc(10_000, 7), 0);
    assert.equal(await errno(fs.setxattr(file.ino, 'user.a', name('2'), 1)), 'EEXIST');
    assert.equal(await errno(fs.setxattr(file.ino, 'user.c', name('2'), 2)), 'ENODATA');
    assert.equal(await errno(fs.setxattr(file.ino, 'system.posix_acl_access', name('2'), 0)), 'ENOTSUP');
    assert.deepEqual((await fs.listxattr(file.ino)).sort(), ['user.a', 'user.b']);
    assert.equal((await fs.getxattr(file.ino, 'user.b')).length, 10_000);
    await fs.removexattr(file.ino, 'user.a');
    assert.equal(await errno(fs.getxattr(file.ino, 'user.a')), 'ENODATA');
  });

  test('the verifier passes on everything above, and finds a planted wrong link count', async () => {
    const report = await verifyFileSystem(client);
    assert.deepEqual(report.problems, []);
    assert.ok(report.files > 2500 && report.directories >= 6, JSON.stringify(report));
    const file = await fs.lookup(fs.rootIno, name('log'));
    await fs.link(file.ino, fs.rootIno, name('log2'));
    // Plant: drop the second name's entry without fixing nlink (a bug the verifier must catch).
    await client.transaction(async (tx) => {
      const { MetaOp } = await import('../../fs/op');
      const op = new MetaOp(client, tx);
      await op.remove(await op.inode(fs.rootIno), name('log2'));
      await op.finish();
    });
    const planted = await verifyFileSystem(client);
    assert.equal(planted.problems.length, 1, planted.problems.join('\n'));
    assert.match(planted.problems[0], /nlink 2, but 1 names/);
  });
  test('a file unlinked while open is kept as open-<instance>-<ino>, and reclaimed once its mount is gone', async () => {
    const other = await ClusterClient.connect({ config: cluster.config, info: { role: 'mount', label: '/other' } });
    const otherFs = await FileSystem.open(other, { create: false });
    const file = await otherFs.mknod(ROOT_CALLER, fs.rootIno, name('held-open'), 0o100644, 0);
    await otherFs.write(ROOT_CALLER, file.ino, Buffer.alloc(100_000, 3), 0, false);
    otherFs.opened(file.ino);
    await otherFs.unlink(fs.rootIno, name('held-open'));
    const orphan = `open-${other.info.instance}-${file.ino}`;
    assert.deepEqual(parseOrphanName(orphan), { kind: 'open', ino: file.ino, instance: other.info.instance });
    assert.deepEqual(parseOrphanName(`open-${file.ino}`), { kind: 'open', ino: file.ino, instance: undefined });
    assert.equal(parseOrphanName('open-xyz-1'), undefined);
    assert.deepEqual((await fs.readdir(fs.orphanIno)).map((entry) => entry.name.toString()), [orphan]);
    // Its mount is alive: a starting mount leaves it alone, and the mount still reads it.
    assert.equal(await fs.recoverOrphans(), 0);
    assert.equal((await otherFs.read(file.ino, 0, 10)).length, 10);
    await other.close();
    assert.equal(await fs.recoverOrphans(), 1);
    assert.deepEqual(await fs.readdir(fs.orphanIno), []);
    assert.equal(await errno(fs.stat(file.ino)), 'ESTALE');
    const verified = await verifyFileSystem(client);
    assert.equal(verified.orphans, 0);
    assert.deepEqual(verified.problems.filter((problem) => problem.includes(String(file.ino)) || problem.includes('orphan')), []);
  });
});
