// A KvStore client in its own OS process, for the tests that kill clients and nodes under load
// (test/kvs/crash.test.ts) and run several clients against one store (test/kvs/concurrency.test.ts).
//
// Line protocol. The parent sends commands on stdin: `read <key>`, `scan`, `release`, `pin`, `stop`.
// The worker prints one line per event on stdout:
//   ready                         the store is open
//   ack <key> <seq>               the put (or the batch holding it) of that value RESOLVED: it is durable
//   fail <code> <key> <seq>       that put failed (DPMS_TX_UNKNOWN: it may or may not have happened)
//   upd <key> <number> <seq>      an update resolved; the value now holds that number
//   xfer <n>                      the n-th money transfer (an atomic batch) resolved
//   audit <sum> <entries> <bad>   an iterator summed every account of one snapshot
//   counted <n> <retries> <unknown>  the counter loop finished its increments
//   read <key> none | read <key> <writer> <seq> <number> | read <key> bad <reason>
//   entry <key> <writer> <seq> <number> <length> | entry <key> bad <reason>   (hold mode)
//   pinned | scanned <n> | released
//   stopped <json>                the worker closed its store and client and is about to exit 0
// Stdout is a pipe, and pipes are written synchronously on Linux, so an `ack` line the parent reads
// was printed after the write resolved, and a worker killed -9 loses at most lines it never printed.
//
// This file also holds what both ends share: the self-checking value format, the parent's handle on
// a worker process, and the ledger that turns a worker's lines into what must hold in the store.

import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { KvStore, type KvIterator, type KvOperation } from '../../kvs';
import { crc32c } from '../../native';
import { ClusterClient, DpmsError, isDpmsError, loadClusterConfig } from '../../pdsm';
import { Random } from '../support/random';

// ---- self-checking values -------------------------------------------------------------------------
//
//   0  u32 magic "KVCK"      12 u32 number (a counter, a version or a balance; 0 for plain puts)
//   4  u32 writer            16 u32 total length in bytes
//   8  u32 seq               20 u32 crc32c of the key
//  24  pseudo-random payload, a function of (writer, seq, number, key crc)
//  length-4  u32 crc32c of everything before it
// A torn value (bytes of two writes, a short read, a value under the wrong key) fails one of these.

const VALUE_MAGIC = 0x4b43564b;
const VALUE = { magic: 0, writer: 4, seq: 8, number: 12, length: 16, keyCrc: 20, payload: 24 } as const;
export const MIN_VALUE_BYTES = VALUE.payload + 4;
/** Largest value the store keeps inline in its leaves (kvs/tree.ts INLINE_VALUE_BYTES is 128). */
export const MAX_INLINE_VALUE_BYTES = 127;
export const ONE_MIB = 1024 * 1024;

export interface ValueStamp {
  readonly writer: number;
  readonly seq: number;
  readonly number: number;
}

export type ValueCheck = ({ readonly ok: true; readonly length: number } & ValueStamp) | { readonly ok: false; readonly reason: string };

function payloadSeed(stamp: ValueStamp, keyCrc: number): number {
  return (Math.imul(stamp.writer, 0x9e3779b1) ^ Math.imul(stamp.seq, 0x85ebca6b) ^ Math.imul(stamp.number, 0xc2b2ae35) ^ keyCrc) >>> 0;
}

/** mulberry32 (as test/support/random.ts), one u32 per step: fast enough for 1-MiB values. */
function fillPayload(out: Buffer, from: number, to: number, seed: number): void {
  let state = seed;
  let at = from;
  while (at < to) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const word = (t ^ (t >>> 14)) >>> 0;
    if (at + 4 <= to) {
      out.writeUInt32LE(word, at);
      at += 4;
    } else {
      for (let shift = 0; at < to; shift += 8) out[at++] = (word >>> shift) & 0xff;
    }
  }
}

function keyCrcOf(key: Buffer): number {
  return crc32c(key, 0, key.length, 0) >>> 0;
}

export function makeValue(key: Buffer, stamp: ValueStamp, lengthBytes: number): Buffer {
  if (!Number.isInteger(lengthBytes) || lengthBytes < MIN_VALUE_BYTES) throw new Error(`a checked value takes at least ${MIN_VALUE_BYTES} bytes (asked ${lengthBytes})`);
  const value = Buffer.allocUnsafe(lengthBytes);
  const keyCrc = keyCrcOf(key);
  value.writeUInt32LE(VALUE_MAGIC, VALUE.magic);
  value.writeUInt32LE(stamp.writer, VALUE.writer);
  value.writeUInt32LE(stamp.seq, VALUE.seq);
  value.writeUInt32LE(stamp.number, VALUE.number);
  value.writeUInt32LE(lengthBytes, VALUE.length);
  value.writeUInt32LE(keyCrc, VALUE.keyCrc);
  fillPayload(value, VALUE.payload, lengthBytes - 4, payloadSeed(stamp, keyCrc));
  value.writeUInt32LE(crc32c(value, 0, lengthBytes - 4, 0) >>> 0, lengthBytes - 4);
  return value;
}

/** Whether `value` is exactly a value makeValue produced for `key`, and if so its stamp. */
export function checkValue(key: Buffer, value: Buffer): ValueCheck {
  if (value.length < MIN_VALUE_BYTES) return { ok: false, reason: `short value (${value.length} B)` };
  if (value.readUInt32LE(VALUE.magic) !== VALUE_MAGIC) return { ok: false, reason: 'bad magic' };
  const length = value.readUInt32LE(VALUE.length);
  if (length !== value.length) return { ok: false, reason: `header says ${length} B, read ${value.length} B` };
  const keyCrc = keyCrcOf(key);
  if (value.readUInt32LE(VALUE.keyCrc) !== keyCrc) return { ok: false, reason: 'value of another key' };
  if ((crc32c(value, 0, length - 4, 0) >>> 0) !== value.readUInt32LE(length - 4)) return { ok: false, reason: 'checksum mismatch (torn)' };
  const stamp = { writer: value.readUInt32LE(VALUE.writer), seq: value.readUInt32LE(VALUE.seq), number: value.readUInt32LE(VALUE.number) };
  const expected = Buffer.allocUnsafe(length - 4);
  fillPayload(expected, VALUE.payload, length - 4, payloadSeed(stamp, keyCrc));
  if (expected.compare(value, VALUE.payload, length - 4, VALUE.payload, length - 4) !== 0) return { ok: false, reason: 'payload differs from its stamp' };
  return { ok: true, length, ...stamp };
}

/** Mixed sizes: mostly inline (< 128 B), many external (1-64 KiB), now and then ~1 MiB. */
export function pickValueBytes(random: Random, bigChance: number): number {
  const roll = random.next();
  if (roll < bigChance) return ONE_MIB - 2048 + random.int(4096);
  if (roll < 0.45) return 1024 + random.int(63 * 1024);
  return MIN_VALUE_BYTES + random.int(MAX_INLINE_VALUE_BYTES + 1 - MIN_VALUE_BYTES);
}

// ---- key spaces -----------------------------------------------------------------------------------

const pad = (value: number, width: number): string => String(value).padStart(width, '0');
/** Keys only worker `writer` puts (durability is checked on them). */
export const ownKey = (writer: number, i: number): string => `w${writer}/k${pad(i, 3)}`;
/** Keys every mix worker puts and deletes (only well-formedness is checked on them). */
export const sharedKey = (i: number): string => `s/k${pad(i, 3)}`;
/** Keys every peer updates (number = how many updates it has seen). */
export const versionedKey = (i: number): string => `v/k${pad(i, 3)}`;
/** Account i of peer `owner`: interleaved so that the peers' accounts share tree leaves. */
export const accountKey = (i: number, owner: number): string => `acct/${pad(i, 3)}/${owner}`;
export const ACCOUNT_RANGE = { gte: Buffer.from('acct/'), lt: Buffer.from('acct0') } as const;
export const COUNTER_KEY = 'counter';
export const sweepKey = (prefix: string, i: number): string => `${prefix}k${pad(i, 3)}`;

/** The writer id the test itself stamps values with. */
export const PARENT_WRITER = 0;

// ---- worker specs ---------------------------------------------------------------------------------

interface BaseSpec {
  readonly store: string;
  /** Writer id stamped in every value (> 0, unique per worker). */
  readonly id: number;
  readonly seed: number;
}
/** Random puts, overwrites and batches over own and shared keys, some deletes of shared keys. */
export interface MixSpec extends BaseSpec { readonly mode: 'mix'; readonly ownKeys: number; readonly sharedKeys: number; readonly loops: number; readonly bigChance: number }
/** Overwrite `prefix`k000.. round-robin with external values, forever. */
export interface SweepSpec extends BaseSpec { readonly mode: 'sweep'; readonly prefix: string; readonly keys: number; readonly loops: number }
/** Hold an iterator over `prefix` open (a snapshot pin) until told to scan it and release it. */
export interface HoldSpec extends BaseSpec { readonly mode: 'hold'; readonly prefix: string }
/** Counter increments, versioned updates, own puts, money transfers and snapshot audits at once. */
export interface PeerSpec extends BaseSpec {
  readonly mode: 'peer'; readonly ownKeys: number; readonly versionedKeys: number; readonly increments: number; readonly accounts: number;
}
export type WorkerSpec = MixSpec | SweepSpec | HoldSpec | PeerSpec;

// ---- the worker -----------------------------------------------------------------------------------

/** Longest a worker waits for its loops to finish after `stop`. */
const STOP_GRACE_MS = 20_000;

function errorCode(error: unknown): string {
  return isDpmsError(error) ? error.code : `UNTYPED:${(error as Error)?.name ?? typeof error}`;
}

class Worker {
  private seq = 0;
  private stopping = false;
  private readonly random: Random;
  private readonly loops: Array<Promise<void>> = [];
  private readonly failures = new Map<string, number>();
  private readonly firstMessages = new Map<string, string>();
  private acks = 0;
  private iterator: KvIterator | undefined;
  private transfers = 0;

  constructor(private readonly client: ClusterClient, private readonly store: KvStore, private readonly spec: WorkerSpec) {
    this.random = new Random(spec.seed);
  }

  print(line: string): void {
    process.stdout.write(`${line}\n`);
  }

  start(): void {
    const spec = this.spec;
    if (spec.mode === 'mix') {
      for (let loop = 0; loop < spec.loops; loop++) this.loops.push(this.loop(() => this.mixStep(spec)));
    } else if (spec.mode === 'sweep') {
      let next = 0;
      for (let loop = 0; loop < spec.loops; loop++) {
        this.loops.push(this.loop(() => {
          const key = sweepKey(spec.prefix, next++ % spec.keys);
          return this.write([{ key, bytes: 1024 + this.random.int(7 * 1024) }]);
        }));
      }
    } else if (spec.mode === 'hold') {
      this.loops.push(this.pin(spec));
    } else {
      // Two counter chains: their updates meet in one group commit as well as across processes.
      this.loops.push(this.counter(Math.ceil(spec.increments / 2)), this.counter(Math.floor(spec.increments / 2)));
      this.loops.push(this.loop(() => this.versionedStep(spec)));
      this.loops.push(this.loop(() => this.write([{ key: ownKey(spec.id, this.random.int(spec.ownKeys)), bytes: pickValueBytes(this.random, 0.01) }])));
      this.loops.push(this.loop(() => this.transferStep(spec)));
      this.loops.push(this.loop(() => this.audit()));
    }
  }

  async command(line: string): Promise<void> {
    const [name, argument] = line.trim().split(' ');
    if (name === 'read') {
      const key = Buffer.from(argument);
      try {
        const value = await this.store.get(key);
        if (value === undefined) return this.print(`read ${argument} none`);
        const check = checkValue(key, value);
        this.print(check.ok ? `read ${argument} ${check.writer} ${check.seq} ${check.number}` : `read ${argument} bad ${check.reason.replaceAll(' ', '_')}`);
      } catch (error) {
        this.print(`read ${argument} error ${errorCode(error)}`);
      }
    } else if (name === 'scan') {
      let count = 0;
      for (let entries = await this.iterator!.nextv(16); entries.length > 0; entries = await this.iterator!.nextv(16)) {
        for (const [key, value] of entries) this.printEntry(key, value!);
        count += entries.length;
      }
      this.print(`scanned ${count}`);
    } else if (name === 'release') {
      await this.iterator?.close();
      this.iterator = undefined;
      this.print('released');
    } else if (name === 'pin') {
      await this.pin(this.spec as HoldSpec);
    } else if (name === 'stop') {
      await this.stop();
    } else {
      throw new Error(`unknown command '${line}'`);
    }
  }

  private async stop(): Promise<void> {
    this.stopping = true;
    const finished = await Promise.race([Promise.allSettled(this.loops).then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
    await this.iterator?.close().catch(() => undefined);
    await this.store.close();
    await this.client.close();
    this.print(`stopped ${JSON.stringify({ acks: this.acks, finished, failures: Object.fromEntries(this.failures), firstMessages: Object.fromEntries(this.firstMessages) })}`);
    process.exit(0);
  }

  private async loop(step: () => Promise<void>): Promise<void> {
    while (!this.stopping) await step();
  }

  private failed(error: unknown): string {
    const code = errorCode(error);
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
    if (!this.firstMessages.has(code)) this.firstMessages.set(code, String((error as Error)?.message ?? error).slice(0, 300));
    return code;
  }

  /** Put each (key, fresh value) — one put, or one atomic batch with deletes — and report the outcome. */
  private async write(puts: ReadonlyArray<{ key: string; bytes: number }>, deletes: readonly string[] = []): Promise<void> {
    const stamped = puts.map(({ key, bytes }) => {
      const seq = ++this.seq;
      return { key, seq, value: makeValue(Buffer.from(key), { writer: this.spec.id, seq, number: 0 }, bytes) };
    });
    try {
      if (stamped.length === 1 && deletes.length === 0) {
        await this.store.put(Buffer.from(stamped[0].key), stamped[0].value);
      } else if (stamped.length === 0 && deletes.length === 1) {
        await this.store.del(Buffer.from(deletes[0]));
      } else {
        const operations: KvOperation[] = stamped.map(({ key, value }) => ({ type: 'put', key: Buffer.from(key), value }));
        for (const key of deletes) operations.splice(this.random.int(operations.length + 1), 0, { type: 'del', key: Buffer.from(key) });
        await this.store.batch(operations);
      }
      for (const { key, seq } of stamped) this.print(`ack ${key} ${seq}`);
      this.acks += stamped.length;
    } catch (error) {
      const code = this.failed(error);
      for (const { key, seq } of stamped) this.print(`fail ${code} ${key} ${seq}`);
      if (stamped.length === 0) this.print(`fail ${code} - 0`);
      await sleep(20 + this.random.int(80));
    }
  }

  private mixStep(spec: MixSpec): Promise<void> {
    const roll = this.random.next();
    const own = (): string => ownKey(spec.id, this.random.int(spec.ownKeys));
    const shared = (): string => sharedKey(this.random.int(spec.sharedKeys));
    if (roll < 0.45) return this.write([{ key: own(), bytes: pickValueBytes(this.random, spec.bigChance) }]);
    if (roll < 0.7) return this.write([{ key: shared(), bytes: pickValueBytes(this.random, spec.bigChance) }]);
    if (roll < 0.93) {
      // A batch over both key spaces; a key appears once (the store applies the last write of a key).
      const keys = new Set<string>();
      const size = 2 + this.random.int(7);
      while (keys.size < size) keys.add(this.random.chance(0.5) ? own() : shared());
      const puts = [...keys].map((key) => ({ key, bytes: pickValueBytes(this.random, 0) }));
      const deletes = this.random.chance(0.3) ? [shared()].filter((key) => !keys.has(key)) : [];
      return this.write(puts, deletes);
    }
    return this.write([], [shared()]);
  }

  // ---- hold ----

  private async pin(spec: HoldSpec): Promise<void> {
    this.iterator = this.store.iterator({ gte: Buffer.from(spec.prefix), lt: Buffer.from(`${spec.prefix}\xff`, 'latin1') });
    // The first entry: the snapshot is pinned once the iterator has read through it.
    for (const [key, value] of await this.iterator.nextv(1)) this.printEntry(key, value!);
    this.print('pinned');
  }

  private printEntry(key: Buffer, value: Buffer): void {
    const check = checkValue(key, value);
    this.print(check.ok ? `entry ${key.toString('latin1')} ${check.writer} ${check.seq} ${check.number} ${check.length}` : `entry ${key.toString('latin1')} bad ${check.reason.replaceAll(' ', '_')}`);
  }

  // ---- peer ----

  /** A value of `key` holding `number`, stamped by this worker; malformed current values fail the update. */
  private restamp(key: Buffer, current: Buffer | undefined, delta: number, bytes: number): Buffer {
    let number = 0;
    if (current !== undefined) {
      const check = checkValue(key, current);
      if (!check.ok) throw new DpmsError('DPMS_CORRUPTION', `${key.toString()} holds a malformed value: ${check.reason}`);
      number = check.number;
    }
    return makeValue(key, { writer: this.spec.id, seq: ++this.seq, number: number + delta }, bytes);
  }

  /** `count` increments of the shared counter; a definite failure is retried, an unknown outcome is reported. */
  private async counter(count: number): Promise<void> {
    const key = Buffer.from(COUNTER_KEY);
    let retries = 0;
    let unknown = 0;
    for (let done = 0; done < count && !this.stopping;) {
      try {
        await this.store.update(key, (current) => this.restamp(key, current, 1, MIN_VALUE_BYTES + 8));
        done++;
      } catch (error) {
        const code = this.failed(error);
        this.print(`fail ${code} ${COUNTER_KEY} 0`);
        if (code === 'DPMS_TX_UNKNOWN') {
          unknown++;
          done++;
        } else {
          retries++;
        }
      }
    }
    this.print(`counted ${count} ${retries} ${unknown}`);
  }

  private async versionedStep(spec: PeerSpec): Promise<void> {
    const name = versionedKey(this.random.int(spec.versionedKeys));
    const key = Buffer.from(name);
    const bytes = pickValueBytes(this.random, 0);
    try {
      const after = await this.store.update(key, (current) => this.restamp(key, current, 1, bytes));
      const check = checkValue(key, after!);
      this.print(check.ok ? `upd ${name} ${check.number} ${check.seq}` : `upd ${name} bad ${check.reason.replaceAll(' ', '_')}`);
    } catch (error) {
      this.print(`fail ${this.failed(error)} ${name} 0`);
    }
  }

  private async transferStep(spec: PeerSpec): Promise<void> {
    const from = this.random.int(spec.accounts);
    const to = (from + 1 + this.random.int(spec.accounts - 1)) % spec.accounts;
    const fromKey = Buffer.from(accountKey(from, spec.id));
    const toKey = Buffer.from(accountKey(to, spec.id));
    try {
      // Only this loop writes this worker's accounts, so read-then-batch loses no update; the batch
      // makes the two writes one step for every reader.
      const [fromValue, toValue] = await this.store.getMany([fromKey, toKey]);
      const a = checkValue(fromKey, fromValue ?? Buffer.alloc(0));
      const b = checkValue(toKey, toValue ?? Buffer.alloc(0));
      if (!a.ok || !b.ok) throw new DpmsError('DPMS_CORRUPTION', `account read back malformed: ${a.ok ? '' : a.reason} ${b.ok ? '' : b.reason}`);
      const amount = Math.min(a.number, 1 + this.random.int(20));
      const bytes = (): number => (this.random.chance(0.3) ? 200 + this.random.int(2000) : MIN_VALUE_BYTES + this.random.int(64));
      await this.store.batch([
        { type: 'put', key: fromKey, value: makeValue(fromKey, { writer: spec.id, seq: ++this.seq, number: a.number - amount }, bytes()) },
        { type: 'put', key: toKey, value: makeValue(toKey, { writer: spec.id, seq: ++this.seq, number: b.number + amount }, bytes()) },
      ]);
      this.print(`xfer ${++this.transfers}`);
    } catch (error) {
      this.print(`fail ${this.failed(error)} ${accountKey(from, spec.id)} 0`);
      await sleep(20);
    }
  }

  /** Sum every account in one iterator's snapshot, read slowly so that transfers commit meanwhile. */
  private async audit(): Promise<void> {
    const iterator = this.store.iterator(ACCOUNT_RANGE);
    let sum = 0;
    let entries = 0;
    let bad = 0;
    try {
      for (let batch = await iterator.nextv(3); batch.length > 0; batch = await iterator.nextv(3)) {
        for (const [key, value] of batch) {
          const check = checkValue(key, value!);
          entries++;
          if (check.ok) sum += check.number;
          else bad++;
        }
        await sleep(2);
      }
      this.print(`audit ${sum} ${entries} ${bad}`);
    } catch (error) {
      this.print(`fail ${this.failed(error)} audit 0`);
    } finally {
      await iterator.close();
    }
    await sleep(10);
  }
}

async function main(): Promise<void> {
  const [configPath, specText] = process.argv.slice(2);
  const spec = JSON.parse(specText) as WorkerSpec;
  const client = await ClusterClient.connect({ config: loadClusterConfig(configPath) });
  const store = await KvStore.open(client, spec.store);
  const worker = new Worker(client, store, spec);
  // Commands run one at a time, in order.
  let commands: Promise<void> = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    commands = commands.then(() => worker.command(line)).catch((error: unknown) => {
      console.error(error);
      process.exit(2);
    });
  });
  // The parent went away: nothing will stop us otherwise.
  lines.on('close', () => process.exit(3));
  worker.start();
  worker.print('ready');
}

// ---- the parent's side ----------------------------------------------------------------------------

const WORKER = path.join(__dirname, 'kv-worker.js');

/** One worker process: its lines as they come, commands to it, stop and kill. */
export class WorkerProcess {
  readonly history: string[][] = [];
  private readonly listeners = new Set<(fields: string[]) => void>();
  private stderrText = '';
  private readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(configPath: string, readonly spec: WorkerSpec) {
    this.child = spawn(process.execPath, [WORKER, configPath, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const fields = line.split(' ');
      this.history.push(fields);
      for (const listener of this.listeners) listener(fields);
    });
    this.child.stderr!.on('data', (data: Buffer) => {
      if (this.stderrText.length < 20_000) this.stderrText += data.toString();
    });
    this.child.stdin!.on('error', () => undefined);
  }

  get pid(): number | undefined { return this.child.pid; }
  get stderr(): string { return this.stderrText; }
  get running(): boolean { return this.child.exitCode === null && this.child.signalCode === null; }

  /** Call `listener` with every line from now on (and, with replay, every line so far). */
  onLine(listener: (fields: string[]) => void, replay = false): void {
    if (replay) for (const fields of this.history) listener(fields);
    this.listeners.add(listener);
  }

  send(command: string): void {
    this.child.stdin!.write(`${command}\n`);
  }

  /** The first line (already seen or to come) that `predicate` accepts. */
  waitFor(predicate: (fields: string[]) => boolean, what: string, timeoutMs = 20_000): Promise<string[]> {
    const seen = this.history.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`worker ${this.spec.id}: no '${what}' within ${timeoutMs} ms (running ${this.running}); stderr:\n${this.stderrText}`));
      }, timeoutMs);
      const listener = (fields: string[]): void => {
        if (!predicate(fields)) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(fields);
      };
      this.listeners.add(listener);
      void this.exited.then(({ code, signal }) => {
        if (!this.listeners.has(listener)) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        reject(new Error(`worker ${this.spec.id} exited (${code ?? signal}) before '${what}'; stderr:\n${this.stderrText}`));
      });
    });
  }

  /** Ask the worker to finish and exit; returns its final report. */
  async stop(timeoutMs = STOP_GRACE_MS + 10_000): Promise<{ acks: number; finished: boolean; failures: Record<string, number>; firstMessages: Record<string, string> }> {
    this.send('stop');
    const line = await this.waitFor((fields) => fields[0] === 'stopped', 'stopped', timeoutMs);
    const { code } = await this.exited;
    if (code !== 0) throw new Error(`worker ${this.spec.id} exited with ${code}; stderr:\n${this.stderrText}`);
    return JSON.parse(line.slice(1).join(' '));
  }

  /** SIGKILL (by PID) and wait until it is gone. */
  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** What the workers' lines say must hold in the store. */
export class Ledger {
  /** key → writer → highest acknowledged seq. */
  private readonly acked = new Map<string, Map<number, number>>();
  /** `${writer} ${key} ${seq}` of puts that definitely did not happen (failed with a code other than DPMS_TX_UNKNOWN). */
  private readonly definitelyFailed = new Set<string>();
  /** Failures by code, over every worker. */
  readonly failures = new Map<string, number>();
  acks = 0;

  /** Feed every line of `worker` (past and future) into the ledger. */
  follow(worker: WorkerProcess): void {
    worker.onLine((fields) => this.observe(worker.spec.id, fields), true);
  }

  observe(writer: number, fields: readonly string[]): void {
    if (fields[0] === 'ack') {
      const [, key, seqText] = fields;
      const seq = Number(seqText);
      let byWriter = this.acked.get(key);
      if (!byWriter) this.acked.set(key, (byWriter = new Map()));
      if (seq > (byWriter.get(writer) ?? 0)) byWriter.set(writer, seq);
      this.acks++;
    } else if (fields[0] === 'fail') {
      const [, code, key, seq] = fields;
      this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
      if (code !== 'DPMS_TX_UNKNOWN') this.definitelyFailed.add(`${writer} ${key} ${seq}`);
    }
  }

  lastAck(key: string, writer: number): number | undefined {
    return this.acked.get(key)?.get(writer);
  }

  failedForSure(key: string, stamp: ValueStamp): boolean {
    return this.definitelyFailed.has(`${stamp.writer} ${key} ${stamp.seq}`);
  }

  ackedKeys(): string[] {
    return [...this.acked.keys()];
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
