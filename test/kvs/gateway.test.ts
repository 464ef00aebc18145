// Proves the RESP gateway against real Redis clients on a real 1-node cluster: redis-cli (arguments,
// commands on stdin, --pipe mass insertion) and ioredis get Redis's replies and error texts for every
// supported command; keys and values are binary safe; a 1000-command pipeline is answered in order with
// each request seeing the writes before it, while independent writes reach the store concurrently;
// malformed or oversize frames get a protocol error and a closed connection while other clients keep
// being served; SCAN visits every key exactly once; concurrent INCRs from two clients lose nothing;
// and `dpms kv serve` serves a store as a child process and stops cleanly on SIGTERM.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { KV_LIMITS, KvStore, RespGateway } from '../../kvs';
import { ClusterClient } from '../../pdsm';
import { CLI, startCluster, type TestCluster } from '../support/cluster';
import { Random, testSeed } from '../support/random';

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run the real redis-cli (asynchronously: the gateway under test shares this event loop). */
function redisCli(port: number, args: readonly string[], input?: string | Buffer): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-cli', ['-p', String(port), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => { stdout += data.toString('latin1'); });
    child.stderr.on('data', (data: Buffer) => { stderr += data.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/** Send raw bytes, collect everything the gateway answers until it closes (or the timeout). */
function rawExchange(port: number, data: Buffer | string, timeoutMs = 10_000, halfClose = false): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ reply, closed: false });
    }, timeoutMs);
    socket.on('connect', () => (halfClose ? socket.end(data) : socket.write(data)));
    // The gateway closing its side is what ends the exchange.
    socket.on('end', () => socket.end());
    socket.on('data', (chunk: Buffer) => { reply += chunk.toString('latin1'); });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closed: true });
    });
  });
}

function multibulk(...args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes: Buffer = Buffer.isBuffer(arg) ? arg : Buffer.from(arg);
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

async function rejectsWith(promise: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    if (typeof message === 'string') assert.equal(error.message, message);
    else assert.match(error.message, message);
    return true;
  });
}

/** The store, with a count of how many writes it is running at once (to see pipelines become concurrent). */
interface StoreCounts {
  /** Writes (put, update, batch) running now, and the most that ran at once. */
  inFlight: number;
  maxInFlight: number;
  /** get() calls started. */
  gets: number;
}

function instrumented(store: KvStore): { store: KvStore; writes: StoreCounts } {
  const writes: StoreCounts = { inFlight: 0, maxInFlight: 0, gets: 0 };
  const proxy = new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property === 'get') {
        return (...args: unknown[]) => {
          writes.gets++;
          return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        };
      }
      if (property !== 'put' && property !== 'update' && property !== 'batch') return value.bind(target);
      return async (...args: unknown[]) => {
        writes.inFlight++;
        writes.maxInFlight = Math.max(writes.maxInFlight, writes.inFlight);
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } finally {
          writes.inFlight--;
        }
      };
    },
  });
  return { store: proxy, writes };
}

describe('RESP gateway', () => {
  let cluster: TestCluster;
  let client: ClusterClient;
  let store: KvStore;
  let writes: StoreCounts;
  let gateway: RespGateway;
  let port: number;
  const clients: Redis[] = [];

  const connect = (options: { retry?: boolean } = {}): Redis => {
    const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 0, retryStrategy: options.retry === false ? () => null : undefined });
    redis.on('error', () => { /* reported through the commands that fail */ });
    clients.push(redis);
    return redis;
  };

  before(async () => {
    cluster = await startCluster({ nodes: 1, sizeMb: 96 });
    client = await ClusterClient.connect({ config: cluster.config });
    ({ store, writes } = instrumented(await KvStore.open(client, 'gateway-test')));
    gateway = new RespGateway(store);
    port = await gateway.start({ port: 0 });
  });

  after(async () => {
    for (const redis of clients) redis.disconnect();
    await gateway?.close();
    await store?.close();
    await client?.close();
    await cluster?.stop();
  });

  test('redis-cli with arguments gets Redis replies and errors', async () => {
    assert.equal((await redisCli(port, ['PING'])).stdout, 'PONG\n');
    assert.equal((await redisCli(port, ['SET', 'cli:a', 'hello world'])).stdout, 'OK\n');
    assert.equal((await redisCli(port, ['GET', 'cli:a'])).stdout, 'hello world\n');
    assert.equal((await redisCli(port, ['GET', 'cli:missing'])).stdout, '\n');
    assert.equal((await redisCli(port, ['INCRBY', 'cli:n', '41'])).stdout, '41\n');
    const unknown = await redisCli(port, ['FOO', 'a', 'b']);
    assert.match(unknown.stdout, /^ERR unknown command 'FOO', with args beginning with: 'a' 'b' \n/);
    assert.match((await redisCli(port, ['GET'])).stdout, /^ERR wrong number of arguments for 'get' command\n/);
    assert.match((await redisCli(port, ['SET', 'k', 'v', 'EX', '10'])).stdout, /^ERR SET option 'EX' is not supported: dpms keys do not expire\n/);
    assert.equal((await redisCli(port, ['DEL', 'cli:a', 'cli:n', 'cli:missing'])).stdout, '2\n');
  });

  test('redis-cli reading commands from stdin, and --pipe mass insertion', async () => {
    await store.clear();
    // Without arguments redis-cli starts its interactive loop, asking COMMAND / COMMAND DOCS first.
    const interactive = await redisCli(port, [], 'SET stdin:a 1\nINCR stdin:a\nGET stdin:a\nCLIENT SETNAME tester\nCLIENT GETNAME\n');
    assert.equal(interactive.stdout, 'OK\n2\n2\nOK\ntester\n', interactive.stderr);
    assert.equal(interactive.stderr, '');
    const count = 2000;
    const protocol = Buffer.concat(Array.from({ length: count }, (_, index) => multibulk('SET', `pipe:${index}`, `value ${index}`)));
    const mass = await redisCli(port, ['--pipe'], protocol);
    assert.equal(mass.code, 0, mass.stderr);
    assert.match(mass.stdout, new RegExp(`errors: 0, replies: ${count}`));
    assert.equal(await store.count(), count + 1);
    assert.deepEqual(await store.get(Buffer.from('pipe:1234')), Buffer.from('value 1234'));
  });

  test('every string and keyspace command answers as Redis does (ioredis)', async () => {
    const redis = connect();
    await redis.flushdb();
    assert.equal(await redis.ping(), 'PONG');
    assert.equal(await redis.call('PING', 'hi'), 'hi');
    assert.equal(await redis.echo('echo me'), 'echo me');
    assert.equal(await redis.set('s', 'v1'), 'OK');
    assert.equal(await redis.get('s'), 'v1');
    assert.equal(await redis.get('nothing'), null);
    // SET NX / XX / GET, in Redis 7's combinations.
    assert.equal(await redis.call('SET', 's', 'v2', 'NX'), null);
    assert.equal(await redis.call('SET', 'new', 'n1', 'NX'), 'OK');
    assert.equal(await redis.call('SET', 'absent', 'x', 'XX'), null);
    assert.equal(await redis.exists('absent'), 0);
    assert.equal(await redis.call('SET', 's', 'v3', 'XX'), 'OK');
    assert.equal(await redis.call('SET', 's', 'v4', 'GET'), 'v3');
    assert.equal(await redis.call('SET', 'fresh', 'f', 'nx', 'get'), null);
    assert.equal(await redis.call('SET', 'fresh', 'g', 'NX', 'GET'), 'f');
    assert.equal(await redis.get('fresh'), 'f');
    await rejectsWith(redis.call('SET', 's', 'v', 'NX', 'XX'), 'ERR syntax error');
    for (const option of ['EX', 'PX', 'EXAT', 'PXAT', 'KEEPTTL']) {
      await rejectsWith(redis.call('SET', 's', 'v', option, '100'), `ERR SET option '${option}' is not supported: dpms keys do not expire`);
    }
    await rejectsWith(redis.call('SET', 's', 'v', 'BOGUS'), "ERR syntax error: SET option 'BOGUS' is not supported (dpms supports NX, XX and GET)");
    assert.equal(await redis.get('s'), 'v4');
    assert.equal(await redis.setnx('s', 'x'), 0);
    assert.equal(await redis.setnx('nx2', 'x'), 1);
    // MSET / MGET / EXISTS / DEL.
    assert.equal(await redis.mset('m1', 'a', 'm2', 'b', 'm1', 'c'), 'OK');
    assert.deepEqual(await redis.mget('m1', 'm2', 'm3'), ['c', 'b', null]);
    // A long MGET is read in steps from one snapshot.
    const names = Array.from({ length: 150 }, (_, index) => (index % 3 === 0 ? 'm2' : `absent:${index}`));
    assert.deepEqual(await redis.mget(...names), names.map((name) => (name === 'm2' ? 'b' : null)));
    await rejectsWith(redis.call('MSET', 'a', 'b', 'c'), "ERR wrong number of arguments for 'mset' command");
    assert.equal(await redis.exists('m1', 'm1', 'm3'), 2);
    assert.equal(await redis.del('m1', 'm1', 'm3', 'm2'), 2);
    assert.equal(await redis.exists('m1', 'm2'), 0);
    // Counters, with Redis's error texts.
    assert.equal(await redis.incr('c'), 1);
    assert.equal(await redis.incrby('c', 10), 11);
    assert.equal(await redis.decr('c'), 10);
    assert.equal(await redis.decrby('c', -5), 15);
    assert.equal(await redis.decrby('c', 20), -5);
    assert.equal(await redis.get('c'), '-5');
    // Integers near 2^63 lose precision as JavaScript numbers: read them as strings.
    const exact = new Redis({ port, host: '127.0.0.1', stringNumbers: true, maxRetriesPerRequest: 0 });
    clients.push(exact);
    await redis.set('c', '9223372036854775806');
    assert.equal(await exact.incr('c'), '9223372036854775807');
    await rejectsWith(redis.incr('c'), 'ERR increment or decrement would overflow');
    await redis.set('c', '-9223372036854775807');
    assert.equal(await exact.decr('c'), '-9223372036854775808');
    await rejectsWith(redis.decr('c'), 'ERR increment or decrement would overflow');
    await redis.set('c', '9223372036854775807');
    assert.equal(await redis.get('c'), '9223372036854775807');
    await rejectsWith(redis.decrby('c', '-9223372036854775808'), 'ERR decrement would overflow');
    await rejectsWith(redis.incrby('c', '1.5'), 'ERR value is not an integer or out of range');
    for (const notNumber of ['abc', ' 1', '01', '+1', '1 ', '', '99999999999999999999']) {
      await redis.set('bad', notNumber);
      await rejectsWith(redis.incr('bad'), 'ERR value is not an integer or out of range');
    }
    // APPEND / STRLEN.
    assert.equal(await redis.append('ap', 'abc'), 3);
    assert.equal(await redis.append('ap', 'de'), 5);
    assert.equal(await redis.get('ap'), 'abcde');
    assert.equal(await redis.strlen('ap'), 5);
    assert.equal(await redis.strlen('nothing'), 0);
    // KEYS, DBSIZE, FLUSHDB, FLUSHALL.
    assert.deepEqual((await redis.keys('*')).sort(), ['ap', 'bad', 'c', 'fresh', 'new', 'nx2', 's']);
    assert.deepEqual((await redis.keys('[a-c]*')).sort(), ['ap', 'bad', 'c']);
    assert.deepEqual(await redis.keys('n?2'), ['nx2']);
    assert.equal(await redis.dbsize(), 7);
    assert.equal(await redis.flushdb(), 'OK');
    assert.equal(await redis.dbsize(), 0);
    await redis.set('one', '1');
    await rejectsWith(redis.call('FLUSHALL', 'NOW'), 'ERR syntax error');
    assert.equal(await redis.call('FLUSHALL', 'ASYNC'), 'OK');
    assert.equal(await redis.dbsize(), 0);
    // Unknown commands and wrong arity, word for word as Redis 7.
    await rejectsWith(redis.call('NOSUCH', 'x', 'y'), "ERR unknown command 'NOSUCH', with args beginning with: 'x' 'y' ");
    await rejectsWith(redis.call('EXPIRE', 'k', '10'), "ERR unknown command 'EXPIRE', with args beginning with: 'k' '10' ");
    await rejectsWith(redis.call('GET', 'a', 'b'), "ERR wrong number of arguments for 'get' command");
    await rejectsWith(redis.call('INCR'), "ERR wrong number of arguments for 'incr' command");
    await rejectsWith(redis.call('PING', 'a', 'b'), "ERR wrong number of arguments for 'ping' command");
    await rejectsWith(redis.call('DEL'), "ERR wrong number of arguments for 'del' command");
  });

  test('server and connection commands: INFO, COMMAND, CLIENT, SELECT, HELLO, CONFIG, QUIT', async () => {
    const redis = connect();
    await redis.flushdb();
    await redis.mset('i1', '1', 'i2', '2');
    const info = await redis.info() as string;
    assert.match(info, /^# Server\r\n/);
    assert.match(info, /\r\nserver_name:dpms\r\n/);
    assert.match(info, /\r\nredis_version:7\.0\.0\r\n/);
    assert.match(info, /\r\ndpms_store:gateway-test\r\n/);
    assert.match(info, /\r\nconnected_clients:(\d+)\r\n/);
    assert.equal(Number(/connected_clients:(\d+)/.exec(info)![1]), gateway.connectionCount);
    assert.match(info, /# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n/);
    assert.equal(await redis.info('keyspace'), '# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n');
    assert.doesNotMatch(await redis.info('clients') as string, /Server|Keyspace/);
    assert.equal(await redis.info('nosuchsection'), '');

    const count = await redis.call('COMMAND', 'COUNT') as number;
    assert.ok(count >= 25, `COMMAND COUNT ${count}`);
    const all = await redis.call('COMMAND') as unknown[][];
    assert.equal(all.length, count);
    const [get] = await redis.call('COMMAND', 'INFO', 'get', 'nosuch') as [unknown[], unknown];
    assert.deepEqual(get.slice(0, 7), ['get', 2, ['readonly', 'fast'], 1, 1, 1, ['@read', '@string', '@fast']]);
    assert.deepEqual((await redis.call('COMMAND', 'INFO', 'nosuch') as unknown[]), [null]);
    const docs = await redis.call('COMMAND', 'DOCS', 'set') as [string, string[]];
    assert.equal(docs[0], 'set');
    assert.equal(docs[1][0], 'summary');
    assert.ok((await redis.call('COMMAND', 'LIST') as string[]).includes('scan'));
    await rejectsWith(redis.call('COMMAND', 'BOGUS'), "ERR unknown subcommand 'BOGUS'. Try COMMAND HELP.");

    assert.equal(await redis.client('GETNAME'), null);
    assert.equal(await redis.client('SETNAME', 'worker-1'), 'OK');
    assert.equal(await redis.client('GETNAME'), 'worker-1');
    await rejectsWith(redis.call('CLIENT', 'SETNAME', 'two words'), 'ERR Client names cannot contain spaces, newlines or special characters.');
    const id = await redis.client('ID') as number;
    assert.ok(Number.isInteger(id) && id > 0);
    assert.match(await redis.client('INFO') as string, new RegExp(`^id=${id} addr=127\\.0\\.0\\.1:\\d+ .*name=worker-1 .*db=0 .*cmd=client\\|info`));
    assert.match(await redis.call('CLIENT', 'LIST') as string, /name=worker-1/);
    await rejectsWith(redis.call('CLIENT', 'SETNAME'), "ERR wrong number of arguments for 'client|setname' command");
    await rejectsWith(redis.call('CLIENT', 'KILL', 'x'), "ERR unknown subcommand 'KILL'. Try CLIENT HELP.");

    assert.equal(await redis.select(0), 'OK');
    await rejectsWith(redis.select(1), 'ERR DB index is out of range');
    await rejectsWith(redis.call('SELECT', 'x'), 'ERR value is not an integer or out of range');
    const hello = await redis.call('HELLO', '2') as unknown[];
    assert.deepEqual(hello.slice(0, 6), ['server', 'redis', 'version', '7.0.0', 'proto', 2]);
    assert.deepEqual(hello.slice(6, 8), ['id', id]);
    await rejectsWith(redis.call('HELLO', '3'), 'NOPROTO unsupported protocol version');
    await rejectsWith(redis.call('HELLO', 'x'), 'ERR Protocol version is not an integer or out of range');
    await rejectsWith(redis.call('AUTH', 'secret'), /^ERR AUTH <password> called without any password configured/);
    assert.deepEqual(await redis.call('CONFIG', 'GET', 'save'), ['save', '']);
    assert.deepEqual(await redis.call('CONFIG', 'GET', 'append*'), ['appendonly', 'yes', 'appendfsync', 'always']);
    await rejectsWith(redis.call('CONFIG', 'SET', 'save', ''), 'ERR CONFIG SET is not supported by the dpms gateway');

    // QUIT: +OK after the replies before it, then the connection closes and later requests are ignored.
    const quit = await rawExchange(port, 'PING\r\nQUIT\r\nPING\r\n');
    assert.deepEqual(quit, { reply: '+PONG\r\n+OK\r\n', closed: true });
    // A client that shuts down its sending side after its requests still gets every reply.
    const halfClosed = await rawExchange(port, 'SET half closed\r\nGET half\r\nDEL half\r\n', 10_000, true);
    assert.deepEqual(halfClosed, { reply: '+OK\r\n$6\r\nclosed\r\n:1\r\n', closed: true });
  });

  test('keys and values are binary safe', async () => {
    const redis = connect();
    await redis.flushdb();
    const key = Buffer.from([0x00, 0x0d, 0x0a, 0xff, 0x20, 0x2a, 0x24]);
    const value = Buffer.alloc(256);
    for (let index = 0; index < 256; index++) value[index] = index;
    assert.equal(await redis.set(key, value), 'OK');
    assert.deepEqual(await redis.getBuffer(key), value);
    const large = Buffer.alloc(1024 * 1024 + 7, 0xa5);
    await redis.set('large', large);
    assert.deepEqual(await redis.getBuffer('large'), large);
    assert.equal(await redis.strlen('large'), large.length);
    assert.deepEqual((await redis.keysBuffer('*')).sort(Buffer.compare), [key, Buffer.from('large')].sort(Buffer.compare));
    assert.deepEqual(await redis.callBuffer('ECHO', value), value);
    await redis.set('empty value', '');
    assert.equal(await redis.get('empty value'), '');
    assert.equal(await redis.exists('empty value'), 1);
    // dpms refuses empty keys (Redis allows them); the message says why.
    await rejectsWith(redis.set('', 'x'), 'ERR empty keys are not allowed');
  });

  test('1000 pipelined commands are answered in order and see the writes before them; independent writes run concurrently', async () => {
    const redis = connect();
    await redis.flushdb();
    const pipeline = redis.pipeline();
    const expected: unknown[] = [];
    for (let index = 0; index < 250; index++) {
      pipeline.set(`p:${index}`, `v${index}`); expected.push('OK');
      pipeline.get(`p:${index}`); expected.push(`v${index}`);
      pipeline.incr('p:counter'); expected.push(index + 1);
      pipeline.append(`p:${index}`, '!'); expected.push(`v${index}!`.length);
    }
    writes.maxInFlight = 0;
    const results = await pipeline.exec();
    assert.equal(results!.length, 1000);
    results!.forEach(([error, reply], index) => {
      assert.equal(error, null, `command ${index}`);
      assert.deepEqual(reply, expected[index], `command ${index}`);
    });
    assert.equal(await redis.get('p:counter'), '250');
    assert.equal(await redis.get('p:249'), 'v249!');
    // SETs of different keys in one pipeline were in the store at the same time (group commit).
    assert.ok(writes.maxInFlight > 1, `at most ${writes.maxInFlight} write in flight`);
    // SETs of one key are one at a time, in order: the last one wins.
    const sameKey = redis.pipeline();
    for (let index = 0; index < 50; index++) sameKey.set('p:same', String(index));
    writes.maxInFlight = 0;
    await sameKey.exec();
    assert.equal(writes.maxInFlight, 1);
    assert.equal(await redis.get('p:same'), '49');
  });

  test('malformed frames get a protocol error and a closed connection; other clients are still served', async () => {
    const bystander = connect();
    await bystander.set('bystander', 'here');
    const cases: Array<[string, string]> = [
      ['*2\r\n$3\r\nGET\r\n$x\r\n', 'Protocol error: invalid bulk length'],
      ['*2\r\n$3\r\nGET\r\n$3\r\nabcdef\r\n', 'Protocol error: expected CRLF after bulk data'],
      ['*2\r\n$3\r\nGET\r\nabc\r\n', "Protocol error: expected '$', got 'a'"],
      ['*abc\r\n', 'Protocol error: invalid multibulk length'],
      ['*2\r\n$3\r\nSET\r\n$99999999999\r\n', 'Protocol error: invalid bulk length'],
      ['*99999999\r\n', 'Protocol error: invalid multibulk length'],
      ['SET "unterminated\r\n', 'Protocol error: unbalanced quotes in request'],
      [`*1\r\n$${'7'.repeat(100)}`, 'Protocol error: too big bulk count string'],
      ['\x00\xff\x13garbage'.repeat(10_000), 'Protocol error: too big inline request'],
    ];
    const before = gateway.connectionCount;
    const exchanges = await Promise.all(cases.map(([input]) => rawExchange(port, Buffer.from(`PING\r\n${input}`, 'latin1'))));
    exchanges.forEach(({ reply, closed }, index) => {
      assert.equal(reply, `+PONG\r\n-ERR ${cases[index]![1]}\r\n`, JSON.stringify(cases[index]![0]).slice(0, 80));
      assert.equal(closed, true, 'connection left open');
    });
    assert.equal(await bystander.get('bystander'), 'here');
    for (let wait = 0; gateway.connectionCount > before && wait < 100; wait++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(gateway.connectionCount, before);
    assert.ok(gateway.stats.protocolErrors >= cases.length);
  });

  test('random bytes and cut-up requests on many connections never stop the gateway', async () => {
    const seed = testSeed('gateway garbage');
    const random = new Random(seed);
    const bystander = connect();
    assert.equal(await bystander.ping(), 'PONG');
    const before = gateway.connectionCount;
    const fragments = [
      multibulk('SET', 'fuzz:a', 'x'), multibulk('GET', 'fuzz:a'), multibulk('PING'), Buffer.from('PING\r\n'), Buffer.from('*3\r\n$3\r\nSET\r\n'),
      Buffer.from('$-1\r\n'), Buffer.from('*-5\r\n'), Buffer.from('"\r\n'), Buffer.from('*1\r\n$4\r\nPI'), Buffer.from('\r\n'),
    ];
    const exchanges = Array.from({ length: 30 }, () => {
      const parts: Buffer[] = [];
      for (let count = random.int(12); count >= 0; count--) parts.push(random.chance(0.5) ? random.pick(fragments) : random.bytes(random.int(200)));
      // Half of them also hang up mid-request.
      return rawExchange(port, Buffer.concat(parts), random.chance(0.5) ? 300 : 3000);
    });
    for (const { reply } of await Promise.all(exchanges)) {
      // Whatever came back is well-formed replies, possibly ending in a protocol error.
      assert.match(reply, /^((\+[A-Z]+|-ERR [^\r\n]*|\$-1|\$1\r\nx|:\d+)\r\n)*$/, `seed ${seed}: ${JSON.stringify(reply).slice(0, 200)}`);
    }
    assert.equal(await bystander.ping(), 'PONG');
    for (let wait = 0; gateway.connectionCount > before && wait < 200; wait++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(gateway.connectionCount, before, `seed ${seed}`);
  });

  test('requests over the size limits are refused', async () => {
    const redis = connect();
    // A value just over the store's limit still arrives and is refused with the store's message; the
    // connection stays usable.
    await rejectsWith(redis.set('too big', Buffer.alloc(KV_LIMITS.maxValueBytes + 1)), `ERR a value is at most ${KV_LIMITS.maxValueBytes} bytes (got ${KV_LIMITS.maxValueBytes + 1})`);
    await rejectsWith(redis.set(Buffer.alloc(KV_LIMITS.maxKeyBytes + 1, 0x6b), 'v'), `ERR a key is at most ${KV_LIMITS.maxKeyBytes} bytes (got ${KV_LIMITS.maxKeyBytes + 1})`);
    await redis.set('grow', Buffer.alloc(KV_LIMITS.maxValueBytes - 1));
    await rejectsWith(redis.append('grow', 'xy'), `ERR a value is at most ${KV_LIMITS.maxValueBytes} bytes (got ${KV_LIMITS.maxValueBytes + 1})`);
    assert.equal(await redis.strlen('grow'), KV_LIMITS.maxValueBytes - 1);
    await redis.del('grow');
    assert.equal(await redis.ping(), 'PONG');
    // A bulk that could never be stored is refused from its header, before its bytes are buffered.
    const header = await rawExchange(port, `*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${KV_LIMITS.maxValueBytes * 4}\r\n`);
    assert.deepEqual(header, { reply: '-ERR Protocol error: invalid bulk length\r\n', closed: true });
    // A whole request over the request limit (a small one here, on a second gateway) is refused too.
    // So are commands naming too many keys, and MGETs whose values are too large together.
    const small = new RespGateway(store, { limits: { maxRequestBytes: 4096 }, maxKeysPerCommand: 3, maxMgetBytes: 1000 });
    const smallPort = await small.start({ port: 0 });
    try {
      const big = await rawExchange(smallPort, Buffer.concat([multibulk('PING'), multibulk('MSET', 'a', 'x'.repeat(3000), 'b', 'y'.repeat(3000))]));
      assert.deepEqual(big, { reply: '+PONG\r\n-ERR Protocol error: request too large (more than 4096 bytes)\r\n', closed: true });
      await redis.mset('l1', 'x'.repeat(600), 'l2', 'y'.repeat(600));
      const many = await rawExchange(smallPort, 'DEL a b c d\r\nMGET a b c d\r\nMGET l1 l2\r\nMGET l1 zz\r\nQUIT\r\n');
      assert.equal(many.reply, [
        '-ERR dpms takes at most 3 keys in one command (got 4); split it',
        '-ERR dpms takes at most 3 keys in one command (got 4); split it',
        '-ERR MGET reply would exceed 1000 bytes; ask for fewer keys',
        `*2\r\n$600\r\n${'x'.repeat(600)}\r\n$-1`,
        '+OK',
      ].map((line) => `${line}\r\n`).join(''));
    } finally {
      await small.close();
    }
  });

  test('a client that does not read its replies makes the gateway stop reading the store for it', async () => {
    const redis = connect();
    const valueBytes = 256 * 1024;
    const requests = 200;
    await redis.set('big', Buffer.alloc(valueBytes, 0x62));
    const slow = new RespGateway(store, { maxOutputBytesPerConnection: valueBytes, maxInFlightPerConnection: 2 });
    const slowPort = await slow.start({ port: 0 });
    const socket = net.connect(slowPort, '127.0.0.1');
    try {
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.pause();
      const getsBefore = writes.gets;
      socket.write(Buffer.concat(Array.from({ length: requests }, () => multibulk('GET', 'big'))));
      // Wait until the gateway has stopped making progress (the socket buffers are full).
      let last = -1;
      for (let stable = 0; stable < 5; await new Promise((resolve) => setTimeout(resolve, 100))) {
        stable = writes.gets === last ? stable + 1 : 0;
        last = writes.gets;
      }
      const started = writes.gets - getsBefore;
      assert.ok(started < requests / 2, `${started} of ${requests} GETs ran while nobody read the replies`);
      // Reading again lets every reply through, complete and in order.
      const replyBytes = `$${valueBytes}\r\n`.length + valueBytes + 2;
      let received = 0;
      await new Promise<void>((resolve) => {
        socket.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received >= requests * replyBytes) resolve();
        });
        socket.resume();
      });
      assert.equal(received, requests * replyBytes);
      assert.equal(writes.gets - getsBefore, requests);
    } finally {
      socket.destroy();
      await slow.close();
    }
  });

  test('store errors that are not the client\'s fault become -ERR with their code', async () => {
    const closedStore = await KvStore.open(client, 'gateway-test');
    const orphan = new RespGateway(closedStore);
    const orphanPort = await orphan.start({ port: 0 });
    try {
      await closedStore.close();
      const exchange = await rawExchange(orphanPort, 'GET k\r\nSET k v\r\nPING\r\nQUIT\r\n');
      assert.equal(exchange.reply, "-ERR DPMS_CLOSED: store 'gateway-test' is closed\r\n".repeat(2) + '+PONG\r\n+OK\r\n');
    } finally {
      await orphan.close();
    }
  });

  test('SCAN visits every key exactly once, with MATCH and COUNT; cursors are checked', async () => {
    const redis = connect();
    await redis.flushdb();
    const keys: string[] = [];
    for (let index = 0; index < 300; index++) keys.push(`user:${index}`, `item:${index}`);
    await redis.mset(...keys.flatMap((key) => [key, 'x']));
    const scanAll = async (...options: string[]): Promise<{ keys: string[]; calls: number }> => {
      const seen: string[] = [];
      let cursor = '0';
      let calls = 0;
      do {
        const [next, batch] = await redis.call('SCAN', cursor, ...options) as [string, string[]];
        seen.push(...batch);
        cursor = next;
        calls++;
        assert.ok(calls < 1000, 'SCAN does not end');
      } while (cursor !== '0');
      return { keys: seen, calls };
    };
    const everything = await scanAll('COUNT', '7');
    assert.equal(everything.keys.length, keys.length);
    assert.deepEqual([...everything.keys].sort(), [...keys].sort());
    assert.ok(everything.calls >= keys.length / 7, `only ${everything.calls} calls`);
    const matched = await scanAll('MATCH', 'user:1*', 'COUNT', '5');
    assert.deepEqual(matched.keys.sort(), keys.filter((key) => /^user:1/.test(key)).sort());
    const pattern = await scanAll('MATCH', '*:2?');
    assert.deepEqual(pattern.keys.sort(), keys.filter((key) => /^[a-z]+:2\d$/.test(key)).sort());
    assert.deepEqual((await scanAll('TYPE', 'hash')).keys, []);
    // ioredis's scanStream drives the same cursors.
    const streamed: string[] = [];
    for await (const batch of redis.scanStream({ match: 'item:*', count: 50 })) streamed.push(...(batch as string[]));
    assert.deepEqual(streamed.sort(), keys.filter((key) => key.startsWith('item:')).sort());
    await rejectsWith(redis.call('SCAN', 'abc'), 'ERR invalid cursor');
    await rejectsWith(redis.call('SCAN', '987654'), /^ERR invalid cursor: dpms SCAN cursors belong to the connection/);
    await rejectsWith(redis.call('SCAN', '0', 'COUNT', '0'), 'ERR syntax error');
    await rejectsWith(redis.call('SCAN', '0', 'MATCH'), 'ERR syntax error');
  });

  test('INCR from two clients at once loses no increment', async () => {
    const [first, second] = [connect(), connect()];
    await first.del('shared counter');
    const perClient = 200;
    const run = async (redis: Redis): Promise<number[]> => {
      const pipeline = redis.pipeline();
      for (let index = 0; index < perClient; index++) pipeline.incr('shared counter');
      return (await pipeline.exec())!.map(([error, value]) => {
        assert.equal(error, null);
        return value as number;
      });
    };
    const [a, b] = await Promise.all([run(first), run(second)]);
    assert.equal(await first.get('shared counter'), String(2 * perClient));
    // Every increment saw a distinct value: 1..400 exactly once between the two clients.
    assert.deepEqual([...a, ...b].sort((x, y) => x - y), Array.from({ length: 2 * perClient }, (_, index) => index + 1));
  });

  test('`dpms kv serve` serves a store as a child process and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI, 'kv', 'serve', '--config', cluster.configPath, '--store', 'served', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    try {
      const servedPort = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`kv serve did not start:\n${output}`)), 20_000);
        const onData = (data: Buffer): void => {
          output += data.toString();
          const match = /ready on port (\d+)/.exec(output);
          if (match) {
            clearTimeout(timer);
            resolve(Number(match[1]));
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        child.once('exit', (code) => reject(new Error(`kv serve exited (${code}):\n${output}`)));
      });
      assert.equal((await redisCli(servedPort, ['SET', 'from', 'redis-cli'])).stdout, 'OK\n');
      assert.equal((await redisCli(servedPort, ['GET', 'from'])).stdout, 'redis-cli\n');
      const served = await KvStore.open(client, 'served', { createIfMissing: false });
      try {
        assert.deepEqual(await served.get(Buffer.from('from')), Buffer.from('redis-cli'));
      } finally {
        await served.close();
      }
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, output);
      assert.match(output, /dpms kv gateway stopped/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
