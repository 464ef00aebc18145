// Proves DpmsLevel works as a Level user would use it on a real cluster: opened from a config path,
// puts, gets and range iterators, sublevels with encodings, explicit snapshot isolation, reopening
// sees the data, typed errors with Level codes, keys stored as KvStore sees them, and two processes
// on one store seeing each other's writes.

import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { ClusterClient } from '../../pdsm';
import { DpmsLevel, KV_LIMITS, KvStore } from '../../kvs';
import { startCluster, type TestCluster } from '../support/cluster';

const CHILD = path.join(__dirname, '..', 'support', 'level-child.js');

/** Level errors carry a code and, from the store, the DpmsError as cause. */
function levelError(code: string, causeCode?: string): (error: unknown) => true {
  return (error: unknown) => {
    const { code: actual, cause } = error as { code?: string; cause?: { code?: string } };
    assert.equal(actual, code, String(error));
    if (causeCode !== undefined) assert.equal(cause?.code, causeCode, String(cause));
    return true;
  };
}

describe('DpmsLevel on a cluster', () => {
  let cluster: TestCluster;
  let client: ClusterClient;

  before(async () => {
    cluster = await startCluster({ nodes: 2, transport: 'tcp' });
    client = await ClusterClient.connect({ config: cluster.config });
  });

  after(async () => {
    await client?.close();
    await cluster?.stop();
  });

  it('opens from a config path and reads back puts, batches and ranges in key order', async () => {
    const db = new DpmsLevel('fruit', { config: cluster.configPath });
    await db.open();
    await db.put('banana', 'yellow');
    await db.batch([
      { type: 'put', key: 'apple', value: 'red' },
      { type: 'put', key: 'cherry', value: 'dark red' },
      { type: 'put', key: 'date', value: 'brown' },
      { type: 'del', key: 'banana' },
    ]);
    await db.put('elderberry', 'black');
    assert.equal(await db.get('apple'), 'red');
    assert.equal(await db.get('banana'), undefined);
    assert.deepEqual(await db.getMany(['cherry', 'banana', 'date']), ['dark red', undefined, 'brown']);
    assert.equal(await db.has('date'), true);
    assert.deepEqual(await db.hasMany(['date', 'fig']), [true, false]);
    assert.deepEqual(await db.keys().all(), ['apple', 'cherry', 'date', 'elderberry']);
    assert.deepEqual(await db.iterator({ gt: 'apple', lte: 'date' }).all(), [['cherry', 'dark red'], ['date', 'brown']]);
    assert.deepEqual(await db.values({ reverse: true, limit: 2 }).all(), ['black', 'brown']);
    const iterator = db.iterator({ gte: 'b' });
    iterator.seek('d');
    assert.deepEqual(await iterator.next(), ['date', 'brown']);
    await iterator.close();
    await db.clear({ gte: 'cherry', lt: 'e' });
    assert.deepEqual(await db.keys().all(), ['apple', 'elderberry']);
    await db.close();
    assert.equal(db.status, 'closed');
  });

  it('keeps sublevels apart, with their own encodings, in one store', async () => {
    const db = new DpmsLevel('people', { client });
    const users = db.sublevel<string, { age: number }>('users', { valueEncoding: 'json' });
    const admins = db.sublevel('admins');
    await users.put('alice', { age: 31 });
    await users.put('bob', { age: 27 });
    await admins.put('alice', 'yes');
    await db.put('top', 'level');
    assert.deepEqual(await users.get('alice'), { age: 31 });
    assert.deepEqual(await users.keys().all(), ['alice', 'bob']);
    assert.deepEqual(await admins.iterator().all(), [['alice', 'yes']]);
    // The parent sees the prefixed keys, in order: '!admins!' < '!users!' < 'top'.
    assert.deepEqual(await db.keys().all(), ['!admins!alice', '!users!alice', '!users!bob', 'top']);
    await users.clear();
    assert.deepEqual(await db.keys().all(), ['!admins!alice', 'top']);
    await db.close();
  });

  it('reads an explicit snapshot as it was, while the latest version moves on', async () => {
    const db = new DpmsLevel('snap', { client });
    await db.open();
    await db.batch([{ type: 'put', key: 'a', value: '1' }, { type: 'put', key: 'b', value: '2' }]);
    const snapshot = db.snapshot();
    // Not awaited on purpose: a write right after snapshot() must not reach the snapshot.
    const writes = Promise.all([db.put('a', 'changed'), db.del('b'), db.put('c', 'new')]);
    await writes;
    assert.equal(await db.get('a', { snapshot }), '1');
    assert.equal(await db.get('b', { snapshot }), '2');
    assert.equal(await db.has('c', { snapshot }), false);
    assert.deepEqual(await db.iterator({ snapshot }).all(), [['a', '1'], ['b', '2']]);
    assert.deepEqual(await db.iterator().all(), [['a', 'changed'], ['c', 'new']]);
    // An iterator is its own (implicit) snapshot.
    const iterator = db.iterator();
    await db.put('d', 'after the iterator');
    assert.deepEqual(await iterator.all(), [['a', 'changed'], ['c', 'new']]);
    await snapshot.close();
    await assert.rejects(db.get('a', { snapshot }), levelError('LEVEL_SNAPSHOT_NOT_OPEN'));
    await db.close();
  });

  it('sees its data again after reopening, and maps createIfMissing/errorIfExists to Level errors', async () => {
    const first = new DpmsLevel('durable', { client });
    await first.put('kept', 'yes');
    await first.close();
    const again = new DpmsLevel('durable', { config: cluster.configPath, createIfMissing: false });
    await again.open();
    assert.equal(await again.get('kept'), 'yes');
    await again.close();
    // A shared client outlives the databases that used it.
    assert.ok((await KvStore.list(client)).includes('durable'));

    await assert.rejects(new DpmsLevel('durable', { client, errorIfExists: true }).open(), levelError('LEVEL_DATABASE_NOT_OPEN', 'DPMS_EXISTS'));
    await assert.rejects(new DpmsLevel('never-made', { client, createIfMissing: false }).open(), levelError('LEVEL_DATABASE_NOT_OPEN', 'DPMS_NOT_FOUND'));
    assert.ok(!(await KvStore.list(client)).includes('never-made'));
  });

  it('gives store limits Level error codes, with the DpmsError as cause', async () => {
    const db = new DpmsLevel<Buffer, Buffer>('limits', { client, keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await assert.rejects(db.put(Buffer.alloc(KV_LIMITS.maxKeyBytes + 1, 1), Buffer.from('v')), levelError('LEVEL_INVALID_KEY', 'DPMS_KEY_TOO_LARGE'));
    await assert.rejects(db.put(Buffer.from('k'), Buffer.alloc(KV_LIMITS.maxValueBytes + 1)), levelError('LEVEL_INVALID_VALUE', 'DPMS_VALUE_TOO_LARGE'));
    assert.equal(await db.get(Buffer.from('k')), undefined);
    await db.close();
  });

  it('stores keys as KvStore sees them, escaping only the empty key and keys that start with 00', async () => {
    const db = new DpmsLevel<Buffer, string>('bytes', { client, keyEncoding: 'buffer' });
    const keys = [Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 0]), Buffer.from([0, 1]), Buffer.from([1]), Buffer.from('text')];
    await db.batch([...keys].reverse().map((key, i) => ({ type: 'put' as const, key, value: `v${keys.length - 1 - i}` })));
    assert.deepEqual(await db.keys().all(), keys);
    assert.deepEqual(await db.values({ lte: Buffer.from([0, 1]) }).all(), ['v0', 'v1', 'v2', 'v3']);
    assert.deepEqual(await db.keys({ gt: Buffer.alloc(0), lt: Buffer.from([1]) }).all(), keys.slice(1, 4));
    await db.close();

    const store = await KvStore.open(client, 'bytes', { createIfMissing: false });
    try {
      assert.equal((await store.get(Buffer.from('text')))?.toString(), 'v5');
      assert.equal((await store.get(Buffer.from([0])))?.toString(), 'v0');
      assert.equal((await store.get(Buffer.from([0, 0, 1])))?.toString(), 'v3');
      assert.equal(await store.count(), keys.length);
    } finally {
      await store.close();
    }
  });

  it('lets two processes share one store and see each other\'s writes', async () => {
    const children = [spawnChild(cluster.configPath, 'shared'), spawnChild(cluster.configPath, 'shared')];
    try {
      const [one, two] = children;
      await Promise.all(children.map((child) => child.ready));
      assert.deepEqual(await one.ask('put from-one 1'), { ok: true });
      assert.deepEqual(await two.ask('get from-one'), { value: '1' });
      assert.deepEqual(await two.ask('put from-two 2'), { ok: true });
      assert.deepEqual(await one.ask('get from-two'), { value: '2' });
      assert.deepEqual(await one.ask('entries'), { entries: [['from-one', '1'], ['from-two', '2']] });
      // And this process, through its own client, sees both.
      const db = new DpmsLevel('shared', { client, createIfMissing: false });
      assert.deepEqual(await db.iterator().all(), [['from-one', '1'], ['from-two', '2']]);
      await db.close();
      for (const child of children) assert.deepEqual(await child.ask('close'), { ok: true });
      await Promise.all(children.map((child) => child.exited));
    } finally {
      for (const child of children) child.process.kill('SIGKILL');
    }
  });
});

interface LevelChild {
  readonly process: ChildProcessWithoutNullStreams;
  readonly ready: Promise<unknown>;
  readonly exited: Promise<unknown>;
  ask(command: string): Promise<unknown>;
}

function spawnChild(configPath: string, name: string): LevelChild {
  const child = spawn(process.execPath, [CHILD, configPath, name]);
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => { stderr += data.toString(); });
  const replies: Array<(message: unknown) => void> = [];
  const queued: unknown[] = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const message: unknown = JSON.parse(line);
    const waiter = replies.shift();
    if (waiter) waiter(message);
    else queued.push(message);
  });
  const next = (): Promise<unknown> => (queued.length > 0 ? Promise.resolve(queued.shift()) : new Promise((resolve) => replies.push(resolve)));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const withTimeout = (reply: Promise<unknown>, what: string): Promise<unknown> => Promise.race([
    reply,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`child gave no reply to ${what}; stderr:\n${stderr}`)), 20_000).unref()),
  ]);
  return {
    process: child,
    ready: withTimeout(next(), 'open').then((message) => assert.deepEqual(message, { ready: true })),
    exited,
    ask(command) {
      child.stdin.write(`${command}\n`);
      return withTimeout(next(), command);
    },
  };
}
