// The stores `dpms bench kv` (bench-kv.ts) measures, each behind one small interface so that the same
// closed-loop harness and the same generated operations drive all of them: dpms's KvStore in this
// process (over the `local` or the `tcp` provider), classic-level (LevelDB) in this process, and two
// RESP servers driven with ioredis, one connection per worker: the dpms gateway (`dpms kv serve`) and
// redis-server, both child processes that this module starts on free loopback ports and stops by PID.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import Redis from 'ioredis';
import { KvStore } from '../../kvs';
import { DpmsError, type ClusterClient } from '../../pdsm';
import { CLI_PATH, freePort } from './local-cluster';

export type KvPair = readonly [key: Buffer, value: Buffer];

/** One store under test. Every method is one YCSB operation (load: one batch of inserts). */
export interface KvTarget {
  /** Why scans are not measured on this target, when they are not. */
  readonly scanUnsupported?: string;
  load(batch: readonly KvPair[]): Promise<void>;
  /** The value, or undefined when the key is absent (counted as a miss). */
  read(key: Buffer): Promise<Buffer | undefined>;
  update(key: Buffer, value: Buffer): Promise<void>;
  insert(key: Buffer, value: Buffer): Promise<void>;
  /** Read up to `count` entries from the first key >= startKey, in key order; returns how many. */
  scan(startKey: Buffer, count: number): Promise<number>;
  /** Release the target and drop its data. */
  close(): Promise<void>;
}

/** Both in-process stores scan alike: one nextv of the scan's length from an iterator that starts at the key. */
async function scanWith(iterator: { nextv(size: number): Promise<unknown[]>; close(): Promise<void> }, count: number): Promise<number> {
  try {
    return (await iterator.nextv(count)).length;
  } finally {
    await iterator.close();
  }
}

// ---- dpms, in process ----

/** KvStore.destroy, where this build has it (the API has it; the first KvStore did not yet). */
type Destroy = (client: ClusterClient, name: string) => Promise<boolean>;
const destroyStore = (KvStore as unknown as { destroy?: Destroy }).destroy?.bind(KvStore);

/** Store names are unique per run, so a store left by an interrupted run never skews a load. */
export async function openDpmsTarget(client: ClusterClient, storeName: string): Promise<KvTarget> {
  const store = await KvStore.open(client, storeName, { errorIfExists: true });
  return {
    load: (batch) => store.batch(batch.map(([key, value]) => ({ type: 'put', key, value }))),
    read: (key) => store.get(key),
    update: (key, value) => store.put(key, value),
    insert: (key, value) => store.put(key, value),
    scan: (startKey, count) => scanWith(store.iterator({ gte: startKey, limit: count }), count),
    async close() {
      await store.close();
      // Without destroy the store stays until the benchmark's cluster is removed (the pools are sized for that).
      await destroyStore?.(client, storeName);
    },
  };
}

// ---- classic-level (LevelDB), in process ----

export async function openClassicLevelTarget(directory: string): Promise<KvTarget> {
  fs.rmSync(directory, { recursive: true, force: true });
  const db = new ClassicLevel<Buffer, Buffer>(directory, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  return {
    load: (batch) => db.batch(batch.map(([key, value]) => ({ type: 'put' as const, key, value }))),
    read: (key) => db.get(key),
    update: (key, value) => db.put(key, value),
    insert: (key, value) => db.put(key, value),
    scan: (startKey, count) => scanWith(db.iterator({ gte: startKey, limit: count }), count),
    async close() {
      await db.close();
      fs.rmSync(directory, { recursive: true, force: true });
    },
  };
}

// ---- RESP servers, through ioredis ----

/** Why workload E is not run through RESP: neither server has an ordered scan from a start key. */
export const RESP_SCAN_UNSUPPORTED = 'n/a over RESP: no ordered range read from a start key (see notes)';
export const RESP_SCAN_WHY = 'RESP targets (gateway, redis) do not run workload E: Redis has no ordered read of "the n keys from K on". ' +
  'SCAN walks a hash-table cursor in no key order and cannot start at a key, so E through it would measure something else; ' +
  'a sorted-set index (ZRANGEBYLEX + MGET) would be a different data model on one side only.';

const CONNECT_TIMEOUT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 30_000;

function connectRedis(port: number): Redis {
  return new Redis({
    host: '127.0.0.1', port, lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, commandTimeout: COMMAND_TIMEOUT_MS,
    // A benchmark should fail, not retry: an error in a row is a finding.
    maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false,
  });
}

/**
 * `connections` ioredis clients (one per worker: each keeps one request in flight, as a YCSB client
 * thread does; redis-benchmark -c does the same). Operations go round-robin, which with a closed loop
 * of as many workers as connections keeps one operation per connection in flight.
 */
export async function openRespTarget(port: number, connections: number): Promise<KvTarget> {
  const clients: Redis[] = [];
  try {
    for (let i = 0; i < connections; i++) {
      const client = connectRedis(port);
      // Errors reach the benchmark through the commands that fail; the event would only print them twice.
      client.on('error', () => {});
      clients.push(client);
      await client.connect();
    }
  } catch (error) {
    for (const client of clients) client.disconnect();
    throw new DpmsError('DPMS_UNREACHABLE', `RESP server on port ${port}: ${(error as Error).message}`, { cause: error });
  }
  // Each value size starts from an empty database. A server without FLUSHDB starts from what it has:
  // the loaded keys overwrite their own, and no read depends on a key being absent.
  const flush = async (): Promise<void> => {
    try {
      await clients[0].flushdb();
    } catch (error) {
      if (!/unknown command|ERR unknown/i.test((error as Error).message)) throw error;
    }
  };
  await flush();
  // MSET is the atomic batch the others' loads are; a server without it gets the batch as a pipeline of SETs.
  let hasMset = true;
  try {
    await clients[0].mset(Buffer.from('dpms-bench-probe'), Buffer.from('1'));
    await clients[0].del(Buffer.from('dpms-bench-probe'));
  } catch {
    hasMset = false;
  }
  let next = 0;
  const pick = (): Redis => clients[next++ % clients.length];
  return {
    scanUnsupported: RESP_SCAN_UNSUPPORTED,
    async load(batch) {
      const client = pick();
      if (hasMset) {
        await client.mset(batch.flat() as Buffer[]);
        return;
      }
      const pipeline = client.pipeline();
      for (const [key, value] of batch) pipeline.set(key, value);
      for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
    },
    read: async (key) => (await pick().getBuffer(key)) ?? undefined,
    update: async (key, value) => { await pick().set(key, value); },
    insert: async (key, value) => { await pick().set(key, value); },
    scan: () => Promise.reject(new DpmsError('DPMS_UNSUPPORTED', RESP_SCAN_UNSUPPORTED)),
    async close() {
      try {
        await flush();
      } finally {
        await Promise.all(clients.map((client) => client.quit().catch(() => client.disconnect())));
      }
    },
  };
}

// ---- server child processes ----

/** Start-up output kept for error messages. */
const MAX_OUTPUT_CHARS = 16 * 1024;
const SERVER_START_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;

export interface ServerProcess {
  readonly port: number;
  readonly pid: number;
  /** What the server printed while starting (bounded). */
  readonly output: () => string;
  /** SIGTERM by PID, SIGKILL after a grace period; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
}

/** The first executable of that name on PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
  for (const directory of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    const candidate = path.join(directory, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Spawn a RESP server and wait until it answers PING on its port. A server that exits first, or
 * does not answer in time, is an error carrying what it printed.
 */
export async function startRespServer(label: string, command: string, args: readonly string[], port: number): Promise<ServerProcess> {
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (data: Buffer): void => {
    if (output.length < MAX_OUTPUT_CHARS) output += data.toString();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exited = child.exitCode !== null;
  const exit = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    resolve();
  }));
  child.once('error', (error) => collect(Buffer.from(`${error.message}\n`)));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exited || child.pid === undefined) return;
      process.kill(child.pid, 'SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), SERVER_STOP_TIMEOUT_MS); });
      if (await Promise.race([exit, late]) === 'late' && !exited) {
        process.kill(child.pid, 'SIGKILL');
        await exit;
      }
      clearTimeout(timer);
    })();
    return stopping;
  };
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  for (;;) {
    if (exited) throw new DpmsError('DPMS_UNREACHABLE', `${label} exited while starting:\n${output.trim()}`);
    if (Date.now() > deadline) {
      await stop();
      throw new DpmsError('DPMS_TIMEOUT', `${label} did not answer PING on port ${port} within ${SERVER_START_TIMEOUT_MS} ms:\n${output.trim()}`);
    }
    const probe = connectRedis(port);
    probe.on('error', () => { /* refused until the server listens: the loop retries */ });
    try {
      await probe.connect();
      if (await probe.ping() === 'PONG') break;
    } catch {
      // not listening yet
    } finally {
      probe.disconnect();
    }
    await Promise.race([exit, new Promise((resolve) => setTimeout(resolve, 100))]);
  }
  // Drop further output instead of keeping it: a server can print for as long as it runs.
  child.stdout!.off('data', collect).resume();
  child.stderr!.off('data', collect).resume();
  return { port, pid: child.pid!, output: () => output, stop };
}

/** redis-server without persistence (--save '' --appendonly no): not durable, as the output says. */
export async function startRedisServer(executable: string, directory: string): Promise<ServerProcess> {
  const port = await freePort();
  fs.mkdirSync(directory, { recursive: true });
  return startRespServer('redis-server', executable, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', directory, '--daemonize', 'no', '--loglevel', 'warning',
  ], port);
}

/** The dpms RESP gateway, `dpms kv serve`, serving `storeName` of the benchmark's cluster over the local provider. */
export async function startGateway(configPath: string, storeName: string): Promise<ServerProcess> {
  const port = await freePort();
  return startRespServer('dpms kv serve', process.execPath,
    [CLI_PATH, 'kv', 'serve', '--config', configPath, '--store', storeName, '--port', String(port), '--provider', 'local'], port);
}
