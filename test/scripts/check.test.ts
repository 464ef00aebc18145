// Proves that `dpms check` passes a clean 3-node cluster online (also beside busy writers) and offline
// (without changing a byte of the pools), finds an orphan of a dead mount, a planted wrong link count
// and a planted corrupt pDKVS tree node, and that `--repair` reclaims the orphan and fixes the link
// count but leaves the KV damage alone and says so.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import test from 'node:test';
import { FileSystem, ROOT_CALLER } from '../../fs';
import { encodeInode } from '../../fs/format';
import { KvStore } from '../../kvs';
import { decodeMeta, decodeNode, META_BYTES, NodeKind, ROOT_AREA, type Ref } from '../../kvs/format';
import { ClusterClient, makeAddress, nodeOf, offsetOf, readAddress, type GlobalAddress } from '../../pdsm';
import { CLI, startCluster, type TestCluster } from '../support/cluster';

interface Result { status: number | null; stdout: string; stderr: string }

/** The CLI as a child, without blocking this process (writers keep running meanwhile). */
function dpms(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

const show = (result: Result): string => `status ${result.status}\n${result.stdout}\n${result.stderr}`;
const hashPools = (cluster: TestCluster): string[] => cluster.config.nodes.map((node) => crypto.createHash('sha256').update(fs.readFileSync(node.pool)).digest('hex'));

/** A tree leaf of the store `name` (found through the catalog, as kvs/store.ts does). */
async function leafOf(client: ClusterClient, name: string): Promise<Ref> {
  const area = await client.root(Math.min(...client.nodeIds));
  const catalog = decodeMeta(await client.read(makeAddress(nodeOf(area), offsetOf(area) + ROOT_AREA.catalogMeta), META_BYTES))!;
  const catalogRoot = decodeNode(await client.read(catalog.root.address, catalog.root.length), catalog.root)!;
  assert.equal(catalogRoot.kind, NodeKind.leaf);
  const index = catalogRoot.keys.findIndex((key) => key.toString() === name);
  assert.ok(index >= 0, `store ${name} is in the catalog`);
  const meta = decodeMeta(await client.read(readAddress(catalogRoot.values[index] as Buffer, 0), META_BYTES))!;
  let ref = meta.root;
  for (;;) {
    const node = decodeNode(await client.read(ref.address, ref.length), ref)!;
    if (node.kind === NodeKind.leaf) return ref;
    ref = node.children[node.children.length - 1];
  }
}

test('dpms check: clean online and offline, planted problems found, --repair fixes what it can prove', { timeout: 170_000 }, async () => {
  const cluster = await startCluster({ nodes: 3, sizeMb: 64 });
  const config = ['--config', cluster.configPath];
  let client: ClusterClient | undefined;
  try {
    client = await ClusterClient.connect({ config: cluster.config });
    const filesystem = await FileSystem.open(client);
    const dir = await filesystem.mkdir(ROOT_CALLER, filesystem.rootIno, Buffer.from('dir'), 0o755);
    await filesystem.mkdir(ROOT_CALLER, dir.ino, Buffer.from('sub'), 0o755);
    const file = await filesystem.mknod(ROOT_CALLER, dir.ino, Buffer.from('file'), 0o644, 0);
    await filesystem.write(ROOT_CALLER, file.ino, Buffer.alloc(300_000, 7), 0, false);
    await filesystem.symlink(ROOT_CALLER, Buffer.from('dir/file'), filesystem.rootIno, Buffer.from('link'));
    const store = await KvStore.open(client, 'check');
    for (let i = 0; i < 300; i += 50) {
      await store.batch(Array.from({ length: 50 }, (_, j) => ({ type: 'put' as const, key: Buffer.from(`key-${String(i + j).padStart(4, '0')}`), value: Buffer.alloc((i + j) % 3 === 0 ? 400 : 20, i + j) })));
    }
    await store.del(Buffer.from('key-0003'));

    const clean = await dpms('check', ...config);
    assert.equal(clean.status, 0, show(clean));
    assert.match(clean.stdout, /online/);
    assert.match(clean.stdout, /pDSM node 1: clean/);
    assert.match(clean.stdout, /KV: clean; 1 store\(s\), 299 key\(s\)/);
    assert.match(clean.stdout, /FS: clean; 3 directories, 1 file\(s\), 1 symlink\(s\)/);

    // Beside a KV writer and an FS writer, the check reports nothing false.
    let writing = true;
    let writes = 0;
    const writers = Promise.all([
      (async () => { for (let i = 0; writing; i++, writes++) await store.put(Buffer.from(`busy-${i % 40}`), Buffer.alloc(i % 2 === 0 ? 300 : 10, i)); })(),
      (async () => {
        for (let i = 0; writing; i++, writes++) {
          const name = Buffer.from(`busy-${i % 5}`);
          const made = await filesystem.mknod(ROOT_CALLER, dir.ino, name, 0o644, 0);
          await filesystem.write(ROOT_CALLER, made.ino, Buffer.alloc(5000, i), 0, false);
          await filesystem.unlink(dir.ino, name);
        }
      })(),
    ]);
    const busy = await dpms('check', ...config);
    writing = false;
    await writers;
    assert.ok(writes > 0);
    assert.equal(busy.status, 0, show(busy));
    assert.match(busy.stdout, /KV: clean/);

    // A mount that dies with a file unlinked while open leaves an open-<instance>-<ino> orphan.
    const mount = await ClusterClient.connect({ config: cluster.config, info: { role: 'mount', label: '/test' } });
    const mountFs = await FileSystem.open(mount);
    const held = await mountFs.mknod(ROOT_CALLER, filesystem.rootIno, Buffer.from('held'), 0o644, 0);
    await mountFs.write(ROOT_CALLER, held.ino, Buffer.alloc(200_000, 1), 0, false);
    mountFs.opened(held.ino);
    await mountFs.unlink(filesystem.rootIno, Buffer.from('held'));
    const orphan = `open-${mount.info.instance}-${held.ino}`;
    assert.ok((await filesystem.readdir(filesystem.orphanIno)).some((entry) => entry.name.toString() === orphan));
    const live = await dpms('check', ...config);
    assert.equal(live.status, 0, `an orphan of a live mount is no problem\n${show(live)}`);
    await mount.close();
    const dead = await dpms('check', ...config);
    assert.equal(dead.status, 1, show(dead));
    assert.ok(dead.stdout.includes(`(orphans)/${orphan}: unlinked while open in a mount that is gone`), show(dead));
    const reclaimed = await dpms('check', '--repair', ...config);
    assert.equal(reclaimed.status, 0, show(reclaimed));
    assert.ok(reclaimed.stdout.includes(`repaired: FS: reclaimed orphan ${orphan} (inode ${held.ino})`), show(reclaimed));
    assert.equal((await filesystem.readdir(filesystem.orphanIno)).length, 0);

    await store.close();
    await client.close();
    client = undefined;
    for (const id of cluster.nodeIds) await cluster.stopNode(id);

    // Offline: copies are checked; the pools stay byte-identical.
    const before = hashPools(cluster);
    const offline = await dpms('check', ...config);
    assert.equal(offline.status, 0, show(offline));
    assert.match(offline.stdout, /offline/);
    assert.match(offline.stdout, /KV: clean; 1 store\(s\), 339 key\(s\)/);
    assert.match(offline.stdout, /FS: clean/);
    assert.match(offline.stdout, /leaks: none/);
    assert.deepEqual(hashPools(cluster), before, 'an offline check changed a pool');
    assert.deepEqual(fs.readdirSync(cluster.dir).filter((name) => name.includes('.locks')), [], 'lock tables left behind');

    // Plant: a wrong link count (a raw write inside a transaction) and a flipped byte in a KV tree leaf.
    for (const id of cluster.nodeIds) await cluster.start(id);
    client = await ClusterClient.connect({ config: cluster.config });
    const reopened = await FileSystem.open(client, { create: false });
    const inode = await reopened.stat(dir.ino);
    assert.equal(inode.nlink, 3);
    inode.nlink = 7;
    await client.transaction(async (tx) => { await tx.write(inode.address as GlobalAddress, encodeInode(inode)); });
    const leaf = await leafOf(client, 'check');
    await client.close();
    client = undefined;
    for (const id of cluster.nodeIds) await cluster.stopNode(id);
    const pool = cluster.config.nodes.find((node) => node.id === nodeOf(leaf.address))!.pool;
    const handle = fs.openSync(pool, 'r+');
    try {
      const byte = Buffer.alloc(1);
      fs.readSync(handle, byte, 0, 1, offsetOf(leaf.address) + 30);
      byte[0] ^= 0x5a;
      fs.writeSync(handle, byte, 0, 1, offsetOf(leaf.address) + 30);
    } finally {
      fs.closeSync(handle);
    }
    const leafText = `node ${nodeOf(leaf.address)}:0x${offsetOf(leaf.address).toString(16)}`;

    const planted = await dpms('check', ...config);
    assert.equal(planted.status, 1, show(planted));
    assert.match(planted.stdout, /FS: 1 problem\(s\)/);
    assert.ok(planted.stdout.includes('problem: /dir: nlink 7, expected 3'), show(planted));
    assert.ok(planted.stdout.includes(`${leafText} (version`) && planted.stdout.includes('does not check out'), show(planted));
    const json = await dpms('check', '--json', ...config);
    assert.equal(json.status, 1, show(json));
    const report = JSON.parse(json.stdout) as { clean: boolean; mode: string; kv: { problems: string[] }; fs: { problems: string[] } };
    assert.equal(report.clean, false);
    assert.equal(report.mode, 'offline');
    assert.equal(report.fs.problems.length, 1);
    assert.ok(report.kv.problems.length >= 1);

    const repaired = await dpms('check', '--repair', ...config);
    assert.equal(repaired.status, 1, `the KV damage remains\n${show(repaired)}`);
    assert.ok(repaired.stdout.includes(`repaired: FS: /dir (inode ${dir.ino}): nlink 7 set to the counted 3`), show(repaired));
    assert.match(repaired.stdout, /not repaired: KV: .*does not check out.*never changed/);
    assert.match(repaired.stdout, /FS: clean/);

    const after = await dpms('check', ...config);
    assert.equal(after.status, 1, show(after));
    assert.match(after.stdout, /FS: clean/);
    assert.match(after.stdout, /KV: \d+ problem\(s\)/);
  } finally {
    await client?.close();
    await cluster.stop();
  }
});

test('dpms check refuses a half-running cluster and exits 3', { timeout: 60_000 }, async () => {
  const cluster = await startCluster({ nodes: 2, sizeMb: 64 });
  try {
    await cluster.stopNode(2);
    const half = await dpms('check', '--config', cluster.configPath);
    assert.equal(half.status, 3, show(half));
    assert.match(half.stderr, /DPMS_UNREACHABLE: node\(s\) 2 do not answer while node\(s\) 1 do/);
    const usage = await dpms('check', cluster.config.nodes[0].pool, '--repair');
    assert.equal(usage.status, 2, show(usage));
  } finally {
    await cluster.stop();
  }
});
