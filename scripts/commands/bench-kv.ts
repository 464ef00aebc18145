// `dpms bench kv`: YCSB core workloads A (50% read / 50% update), B (95/5), C (100% read) and E (95%
// short scans / 5% inserts), Zipfian requests (ycsb.ts), against pDKVS and its peers, all measured in
// the same run with the same closed-loop harness and the same generated operations:
//   - dpms-local / dpms-tcp: KvStore in this process over the `local` / `tcp` provider, against a
//     3-node cluster of `dpms node start` daemons that this command starts (local-cluster.ts);
//   - classic-level: LevelDB in this process, in a directory on /dev/shm;
//   - gateway: the dpms RESP gateway (`dpms kv serve`, a child process) through ioredis;
//   - redis: redis-server (no persistence) through exactly the same ioredis harness;
//   - redis-benchmark: Redis's own C load generator (SET/GET, -P 1 and -P 16) against both servers.
// Per value size it prints ops/s, p50 and p99 per workload and target, and the ratios the issue sets
// goals for: dpms-local >= 1x classic-level on A, B and C; gateway >= 0.5x Redis. A program that
// prints numbers; tests never assert timings.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KV_LIMITS } from '../../kvs';
import { ClusterClient, DpmsError, formatBytes, isDpmsError, type ProviderName } from '../../pdsm';
import {
  findExecutable, openClassicLevelTarget, openDpmsTarget, openRespTarget, RESP_SCAN_WHY, startGateway, startRedisServer,
  type KvPair, type KvTarget, type ServerProcess,
} from './bench-kv-targets';
import { LatencyHistogram } from './latency-histogram';
import { scratchBase, startLocalCluster, type LocalCluster } from './local-cluster';
import { startProgress } from './progress';
import { EXIT } from './run';
import { keyName, OperationGenerator, WORKLOAD_MIXES, WORKLOADS, type WorkloadName } from './ycsb';

export const KV_TARGETS = ['dpms-local', 'dpms-tcp', 'classic-level', 'gateway', 'redis', 'redis-benchmark'] as const;
export type KvTargetName = typeof KV_TARGETS[number];
/** The targets the YCSB harness drives (redis-benchmark is its own program). */
type HarnessTarget = Exclude<KvTargetName, 'redis-benchmark'>;

const LIMITS = {
  maxRecords: 10_000_000,
  maxOperations: 100_000_000,
  maxSeconds: 3600,
  maxConcurrency: 1024,
  maxValueBytes: 1024 * 1024,
  maxValueSizes: 8,
  /** Data the benchmark may put on tmpfs: records x value size, summed over the stores that hold it at once. */
  maxDataBytes: 8 * 1024 * 1024 * 1024,
  /** Largest pool per node the benchmark's cluster may have. */
  maxPoolBytes: 8 * 1024 * 1024 * 1024,
} as const;

/** Records per load batch (one atomic batch, MSET, or LevelDB batch), fewer for large values (see loadBatchRecords). */
const LOAD_BATCH_RECORDS = 1000;
/** Most value bytes in one load batch: well inside KV_LIMITS.maxBatchBytes and Redis's request limits. */
const LOAD_BATCH_BYTES = 8 * 1024 * 1024;
/** Load batches in flight at once. */
const LOAD_CONCURRENCY = 4;
/** Operations run before each measured workload, not recorded (JIT, caches, connections): its mix without inserts. */
const WARM_UP_OPERATIONS = 1000;
/** The closed loop lets the event loop turn at least this often (see closedLoop). */
const TURN_INTERVAL_MS = 5;
/** closedLoop reports progress every this many completed operations (and at the end). */
const PROGRESS_EVERY_OPERATIONS = 64;
/** Distinct random values per value size; updates and inserts cycle through them. */
const VALUE_POOL = 1024;
/** Log lanes the benchmark's cluster clients ask each node for (the daemon grants at most 4). */
const LANES_PER_NODE = 4;
const REDIS_BENCHMARK_TIMEOUT_MS = 10 * 60_000;

export interface KvBenchOptions {
  readonly records: number;
  /** Operations per workload, or undefined when `seconds` bounds it instead. */
  readonly operations?: number;
  readonly seconds?: number;
  readonly valueSizes: readonly number[];
  readonly workloads: readonly WorkloadName[];
  readonly targets: readonly KvTargetName[];
  readonly concurrency: number;
  readonly json: boolean;
  readonly dir?: string;
  readonly seed: number;
}

export interface RawKvBenchOptions {
  readonly records: number;
  readonly ops: number;
  readonly seconds?: number;
  readonly valueSizes: string;
  readonly workloads: string;
  readonly targets: string;
  readonly concurrency: number;
  readonly json: boolean;
  readonly dir?: string;
  readonly seed: number;
}

function invalid(message: string): never {
  throw new DpmsError('DPMS_INVALID_ARGUMENT', message);
}

function integerIn(name: string, value: number, low: number, high: number): number {
  if (!Number.isInteger(value) || value < low || value > high) invalid(`${name} must be an integer from ${low} to ${high} (got ${value})`);
  return value;
}

function list(name: string, text: string): string[] {
  const items = text.split(',').map((item) => item.trim().toLowerCase()).filter((item) => item.length > 0);
  if (items.length === 0) invalid(`${name}: name at least one`);
  return [...new Set(items)];
}

/** Check every option; anything wrong is DPMS_INVALID_ARGUMENT (usage, exit status 2). */
export function parseKvBenchOptions(raw: RawKvBenchOptions): KvBenchOptions {
  const records = integerIn('--records', raw.records, 10, LIMITS.maxRecords);
  const seconds = raw.seconds === undefined ? undefined : raw.seconds;
  if (seconds !== undefined && !(Number.isFinite(seconds) && seconds > 0 && seconds <= LIMITS.maxSeconds)) invalid(`--seconds must be a number above 0 and at most ${LIMITS.maxSeconds} (got ${seconds})`);
  const operations = seconds === undefined ? integerIn('--ops', raw.ops, 100, LIMITS.maxOperations) : undefined;
  const valueSizes = list('--value-sizes', raw.valueSizes).map((text) => {
    if (!/^\d+$/.test(text)) invalid(`--value-sizes: '${text}' is not a whole number of bytes`);
    return integerIn('--value-sizes', Number(text), 1, Math.min(LIMITS.maxValueBytes, KV_LIMITS.maxValueBytes));
  });
  if (valueSizes.length > LIMITS.maxValueSizes) invalid(`--value-sizes: at most ${LIMITS.maxValueSizes} sizes`);
  const workloads = list('--workloads', raw.workloads).map((name) => {
    if (!(WORKLOADS as readonly string[]).includes(name)) invalid(`--workloads: unknown workload '${name}' (${WORKLOADS.join(', ')})`);
    return name as WorkloadName;
  });
  const targets = list('--targets', raw.targets).map((name) => {
    if (!(KV_TARGETS as readonly string[]).includes(name)) invalid(`--targets: unknown target '${name}' (${KV_TARGETS.join(', ')})`);
    return name as KvTargetName;
  });
  const concurrency = integerIn('--concurrency', raw.concurrency, 1, LIMITS.maxConcurrency);
  const seed = integerIn('--seed', raw.seed, 0, 0xffff_ffff);
  if (raw.dir !== undefined && !(fs.existsSync(raw.dir) && fs.statSync(raw.dir).isDirectory())) invalid(`--dir: ${raw.dir} is not a directory`);
  // Inserts (workload E) add up to 5% of the operations (with --seconds: assume 1M operations).
  const largestValue = Math.max(...valueSizes);
  const dataBytes = (records + (operations ?? 1_000_000) * 0.05) * (largestValue + 64) * targets.length;
  if (dataBytes > LIMITS.maxDataBytes) invalid(`--records x --value-sizes: about ${formatBytes(dataBytes)} of data across the targets, more than the ${formatBytes(LIMITS.maxDataBytes)} this benchmark puts on tmpfs`);
  const options = { records, operations, seconds, valueSizes, workloads, targets, concurrency, json: raw.json, dir: raw.dir, seed };
  if (poolBytesFor(options) > LIMITS.maxPoolBytes) invalid(`--records x --value-sizes: the cluster would need pools of ${formatBytes(poolBytesFor(options))} per node, more than ${formatBytes(LIMITS.maxPoolBytes)}`);
  return options;
}

// ---- the harness ----

export interface Row {
  readonly workload: WorkloadName | 'load';
  readonly target: HarnessTarget;
  /** Operations measured (load: records). */
  readonly operations?: number;
  readonly opsPerSecond?: number;
  readonly latencyUsP50?: number;
  readonly latencyUsP99?: number;
  /** Reads that found no value (should be 0: every read targets a loaded or acknowledged key). */
  readonly misses?: number;
  /** Why the row was not measured. */
  readonly skipped?: string;
  readonly ratio?: { readonly of: HarnessTarget; readonly value: number; readonly goal?: number; readonly met?: boolean };
}

export interface RedisBenchmarkRow {
  readonly server: 'redis' | 'gateway';
  readonly test: string;
  readonly pipeline: number;
  readonly opsPerSecond?: number;
  readonly latencyUsP50?: number;
  readonly latencyUsP99?: number;
  readonly skipped?: string;
  readonly ofRedis?: number;
}

interface Dataset {
  readonly valueSize: number;
  readonly keys: (record: number) => Buffer;
  readonly values: readonly Buffer[];
}

function makeDataset(records: number, valueSize: number, seed: number): Dataset {
  const cache: Buffer[] = [];
  for (let record = 0; record < records; record++) cache.push(Buffer.from(keyName(record)));
  const keys = (record: number): Buffer => {
    // Loaded keys are made up front; an inserted one is made when first asked for, then kept.
    let key = cache[record];
    if (key === undefined) cache[record] = key = Buffer.from(keyName(record));
    return key;
  };
  // Random (incompressible) values from a seeded stream, so that every run stores the same bytes.
  const stream = crypto.createHash('shake256', { outputLength: VALUE_POOL * valueSize });
  const bytes = stream.update(`dpms bench kv ${seed} ${valueSize}`).digest();
  const values = Array.from({ length: VALUE_POOL }, (_, i) => bytes.subarray(i * valueSize, (i + 1) * valueSize));
  return { valueSize, keys, values };
}

interface Measured {
  readonly operations: number;
  readonly opsPerSecond: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
  readonly misses: number;
}

interface Budget {
  readonly operations?: number;
  readonly seconds?: number;
}

let interrupted = false;

function checkInterrupted(): void {
  if (interrupted) throw new DpmsError('DPMS_CLOSED', 'interrupted');
}

/** A closed loop: `concurrency` workers, each issuing its next operation when the last one completes. */
async function closedLoop(concurrency: number, budget: Budget, step: (index: number) => Promise<boolean>,
  onProgress?: (completed: number, elapsedMs: number) => void): Promise<Measured> {
  const histogram = new LatencyHistogram();
  const limit = budget.operations ?? Number.MAX_SAFE_INTEGER;
  let issued = 0;
  let completed = 0;
  let misses = 0;
  const start = performance.now();
  const deadline = budget.seconds === undefined ? Infinity : start + budget.seconds * 1000;
  // An operation that completes without I/O (the local provider's loads and stores resolve at once)
  // continues in a microtask, so a loop of them never lets the event loop turn: timers would not run,
  // neither the cluster client's lease heartbeats (the nodes then drop the client) nor --seconds'.
  // So every TURN_INTERVAL_MS all workers wait for one event-loop turn together (one worker alone
  // waiting would not do: the others would keep the microtask queue busy). Outside the timed region.
  let lastTurn = performance.now();
  let turn: Promise<void> | undefined;
  const takeTurn = (): Promise<void> => (turn ??= new Promise<void>((resolve) => setImmediate(() => {
    lastTurn = performance.now();
    turn = undefined;
    resolve();
  })));
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (;;) {
      if (performance.now() - lastTurn >= TURN_INTERVAL_MS) await takeTurn();
      // Checked after the turn: other workers may have taken the last operations meanwhile.
      if (issued >= limit || interrupted || (deadline !== Infinity && performance.now() >= deadline)) break;
      const index = issued++;
      const began = performance.now();
      const hit = await step(index);
      histogram.recordNs((performance.now() - began) * 1e6);
      if (!hit) misses++;
      if (++completed % PROGRESS_EVERY_OPERATIONS === 0) onProgress?.(completed, performance.now() - start);
    }
  }));
  onProgress?.(completed, performance.now() - start);
  checkInterrupted();
  const elapsedMs = performance.now() - start;
  return {
    operations: histogram.count,
    opsPerSecond: (histogram.count / elapsedMs) * 1000,
    latencyUsP50: histogram.percentileNs(0.5) / 1000,
    latencyUsP99: histogram.percentileNs(0.99) / 1000,
    misses,
  };
}

export function loadBatchRecords(valueSize: number): number {
  return Math.max(1, Math.min(LOAD_BATCH_RECORDS, Math.floor(LOAD_BATCH_BYTES / (valueSize + 32))));
}

async function load(target: KvTarget, data: Dataset, records: number, label: string): Promise<Measured> {
  const perBatch = loadBatchRecords(data.valueSize);
  const batches = Math.ceil(records / perBatch);
  // Counted in records: completed batches x records per batch, capped at the total.
  const progress = startProgress({ label, total: records, unit: 'records' });
  let measured: Measured;
  try {
    measured = await closedLoop(LOAD_CONCURRENCY, { operations: batches }, async (batch) => {
      const pairs: KvPair[] = [];
      for (let record = batch * perBatch; record < Math.min(records, (batch + 1) * perBatch); record++) {
        pairs.push([data.keys(record), data.values[record % VALUE_POOL]]);
      }
      await target.load(pairs);
      return true;
    }, (completed) => progress.update(Math.min(records, completed * perBatch)));
  } finally {
    progress.stop();
  }
  // Report records per second; the latencies stay per batch.
  return { ...measured, operations: records, opsPerSecond: measured.opsPerSecond * (records / batches) };
}

/**
 * The bar of one workload run (stderr: a bar on a terminal, plain lines otherwise), in operations, or
 * in seconds when the budget is a time; `tick` is closedLoop's onProgress.
 */
function phaseProgress(label: string, budget: Budget): { tick: (completed: number, elapsedMs: number) => void; stop: () => void } {
  const operations = budget.operations;
  if (operations !== undefined) {
    const progress = startProgress({ label, total: operations, unit: 'ops' });
    return { tick: (completed) => progress.update(Math.min(operations, completed)), stop: () => progress.stop() };
  }
  const seconds = budget.seconds ?? 0;
  const progress = startProgress({ label, total: seconds, unit: 's' });
  return { tick: (_completed, elapsedMs) => progress.update(Math.min(seconds, Math.floor(elapsedMs / 1000))), stop: () => progress.stop() };
}

/** One workload against one target: the generator seeded alike for every target. */
async function runWorkload(target: KvTarget, workload: WorkloadName, data: Dataset, records: number, budget: Budget,
  concurrency: number, seed: number, label: string): Promise<Measured> {
  const mix = WORKLOAD_MIXES[workload];
  // The warm-up runs the workload's own mix with another seed, minus its inserts (they would take
  // the record numbers the measured run inserts): scans in their place for E.
  const warmUpMix = mix.insert === 0 ? mix : { ...mix, scan: mix.scan + mix.insert, insert: 0 };
  const warmUp = new OperationGenerator(warmUpMix, records, (seed ^ 0xa5a5_a5a5) >>> 0, WARM_UP_OPERATIONS);
  await closedLoop(concurrency, { operations: Math.min(WARM_UP_OPERATIONS, budget.operations ?? WARM_UP_OPERATIONS) },
    (index) => perform(target, warmUp, data, index));
  const generator = new OperationGenerator(mix, records, seed, budget.operations ?? 1_000_000);
  const progress = phaseProgress(label, budget);
  try {
    return await closedLoop(concurrency, budget, (index) => perform(target, generator, data, index), progress.tick);
  } finally {
    progress.stop();
  }
}

/** The generator's next operation on the target; false when a read or scan found nothing. */
async function perform(target: KvTarget, generator: OperationGenerator, data: Dataset, index: number): Promise<boolean> {
  const operation = generator.next();
  const key = data.keys(operation.record);
  switch (operation.type) {
    case 'read':
      return (await target.read(key)) !== undefined;
    case 'update':
      await target.update(key, data.values[index % VALUE_POOL]);
      return true;
    case 'insert':
      await target.insert(key, data.values[index % VALUE_POOL]);
      generator.acknowledge(operation.record);
      return true;
    case 'scan':
      return (await target.scan(key, operation.length)) > 0;
  }
}

// ---- redis-benchmark ----

interface RedisBenchmarkResult {
  readonly test: string;
  readonly opsPerSecond: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
}

/** Parse `redis-benchmark --csv`: a header row naming the columns, then one row per test. */
export function parseRedisBenchmarkCsv(text: string): RedisBenchmarkResult[] {
  const rows = text.split('\n').map((line) => line.trim()).filter((line) => line.startsWith('"'))
    .map((line) => line.split(',').map((cell) => cell.replace(/^"|"$/g, '')));
  const header = rows.find((row) => row[0] === 'test');
  if (!header) throw new DpmsError('DPMS_PROTOCOL', `redis-benchmark printed no CSV header:\n${text.slice(0, 2000)}`);
  const column = (name: string): number => {
    const index = header.indexOf(name);
    if (index < 0) throw new DpmsError('DPMS_PROTOCOL', `redis-benchmark's CSV has no '${name}' column (columns: ${header.join(', ')})`);
    return index;
  };
  const [rps, p50, p99] = [column('rps'), column('p50_latency_ms'), column('p99_latency_ms')];
  return rows.filter((row) => row !== header).map((row) => {
    const number = (index: number): number => {
      const value = Number(row[index]);
      if (!Number.isFinite(value)) throw new DpmsError('DPMS_PROTOCOL', `redis-benchmark CSV: '${row[index]}' is not a number in ${row.join(',')}`);
      return value;
    };
    return { test: row[0], opsPerSecond: number(rps), latencyUsP50: number(p50) * 1000, latencyUsP99: number(p99) * 1000 };
  });
}

function runRedisBenchmark(executable: string, port: number, args: readonly string[]): Promise<RedisBenchmarkResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(executable, ['-h', '127.0.0.1', '-p', String(port), ...args, '--csv'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => { if (stdout.length < 1_000_000) stdout += data.toString(); });
    child.stderr.on('data', (data: Buffer) => { if (stderr.length < 100_000) stderr += data.toString(); });
    const timer = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), REDIS_BENCHMARK_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new DpmsError('DPMS_IO', `redis-benchmark: ${error.message}`, { cause: error }));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new DpmsError('DPMS_IO', `redis-benchmark exited with ${code ?? signal}: ${(stderr || stdout).trim().slice(0, 2000)}`));
        return;
      }
      try {
        resolve(parseRedisBenchmarkCsv(stdout));
      } catch (error) {
        reject(error);
      }
    });
  });
}

// ---- the run ----

interface Services {
  cluster?: LocalCluster;
  localClient?: ClusterClient;
  tcpClient?: ClusterClient;
  redis?: ServerProcess;
  gateway?: ServerProcess;
  redisBenchmark?: string;
  /** For the LevelDB directories and redis-server's working directory; removed at the end. */
  scratchDir?: string;
  /** Why a target is not measured at all. */
  readonly unavailable: Map<KvTargetName, string>;
}

interface ValueSizeResult {
  readonly valueSize: number;
  readonly rows: Row[];
  readonly redisBenchmark: RedisBenchmarkRow[];
}

const MiB = 1024 * 1024;

/**
 * Each node's pool: room for every dpms store of every value size at once (a store is not necessarily
 * destroyed before the next value size's are loaded), with slack for versions not yet reclaimed.
 */
function poolBytesFor(options: KvBenchOptions): number {
  const inserts = (options.operations ?? 1_000_000) * 0.05;
  const stores = options.targets.filter((target) => target.startsWith('dpms-') || target === 'gateway').length;
  const perRecord = options.valueSizes.reduce((sum, size) => sum + size + 256, 0);
  const bytes = (options.records + inserts) * perRecord * 3 * Math.max(1, stores) / 3;
  return Math.max(512 * MiB, Math.ceil(bytes / (64 * MiB)) * 64 * MiB);
}

async function startServices(options: KvBenchOptions, base: string, log: (text: string) => void): Promise<Services> {
  const wants = (target: KvTargetName): boolean => options.targets.includes(target);
  const services: Services = { unavailable: new Map() };
  // redis-benchmark measures the gateway too, so it needs the cluster behind it.
  const needsCluster = wants('dpms-local') || wants('dpms-tcp') || wants('gateway') || wants('redis-benchmark');
  try {
    services.scratchDir = fs.mkdtempSync(path.join(base, 'dpms-bench-kv-'));
    if (needsCluster) {
      const poolBytes = poolBytesFor(options);
      log(`starting a 3-node dpms cluster (pools of ${formatBytes(poolBytes)} under ${base}) ...`);
      services.cluster = await startLocalCluster({ name: 'bench-kv', poolBytes, dir: base, transport: 'tcp' });
      log(`  node pids ${[...services.cluster.pids().values()].join(', ')}`);
      const connect = (provider: ProviderName): Promise<ClusterClient> =>
        ClusterClient.connect({ config: services.cluster!.config, provider, lanesPerNode: LANES_PER_NODE });
      if (wants('dpms-local')) services.localClient = await connect('local');
      if (wants('dpms-tcp')) services.tcpClient = await connect('tcp');
    }
    if (wants('redis') || wants('redis-benchmark')) {
      const executable = findExecutable('redis-server');
      if (executable === undefined) {
        services.unavailable.set('redis', 'redis-server is not installed (Debian: apt-get install redis-server)');
      } else {
        log('starting redis-server (--save \'\' --appendonly no) ...');
        services.redis = await startRedisServer(executable, path.join(services.scratchDir, 'redis'));
        log(`  redis-server pid ${services.redis.pid} on port ${services.redis.port}`);
      }
    }
    if (wants('gateway') || wants('redis-benchmark')) {
      try {
        log('starting the dpms RESP gateway (dpms kv serve --provider local) ...');
        services.gateway = await startGateway(services.cluster!.configPath, `bench-kv-${process.pid}-${Date.now()}-gateway`);
        log(`  gateway pid ${services.gateway.pid} on port ${services.gateway.port}`);
      } catch (error) {
        if (!isDpmsError(error)) throw error;
        const missing = /unknown (argument|command)|did you mean/i.test(error.message);
        services.unavailable.set('gateway', missing ? 'this build has no `dpms kv serve` (the RESP gateway)' : `the gateway did not start: ${error.message.split('\n').slice(0, 3).join(' ')}`);
      }
    }
    if (wants('redis-benchmark')) {
      services.redisBenchmark = findExecutable('redis-benchmark');
      if (services.redisBenchmark === undefined) services.unavailable.set('redis-benchmark', 'redis-benchmark is not installed (Debian: apt-get install redis-tools)');
    }
    return services;
  } catch (error) {
    await stopServices(services);
    throw error;
  }
}

async function stopServices(services: Services): Promise<void> {
  await services.localClient?.close();
  await services.tcpClient?.close();
  await services.gateway?.stop();
  await services.redis?.stop();
  await services.cluster?.stop();
  if (services.scratchDir !== undefined) fs.rmSync(services.scratchDir, { recursive: true, force: true });
}

async function openTarget(target: HarnessTarget, services: Services, options: KvBenchOptions, valueSize: number): Promise<KvTarget> {
  const storeName = `bench-kv-${process.pid}-${Date.now()}-${valueSize}-${target}`;
  switch (target) {
    case 'dpms-local': return openDpmsTarget(services.localClient!, storeName);
    case 'dpms-tcp': return openDpmsTarget(services.tcpClient!, storeName);
    case 'classic-level': return openClassicLevelTarget(path.join(services.scratchDir!, `${storeName}.leveldb`));
    case 'gateway': return openRespTarget(services.gateway!.port, options.concurrency);
    case 'redis': return openRespTarget(services.redis!.port, options.concurrency);
  }
}

function withRatios(rows: Row[]): Row[] {
  const find = (workload: Row['workload'], target: HarnessTarget): Row | undefined =>
    rows.find((row) => row.workload === workload && row.target === target && row.opsPerSecond !== undefined);
  const ratio = (row: Row, of: HarnessTarget, goal?: number): Row => {
    const peer = find(row.workload, of);
    if (row.opsPerSecond === undefined || peer?.opsPerSecond === undefined) return row;
    const value = row.opsPerSecond / peer.opsPerSecond;
    return { ...row, ratio: { of, value, goal, met: goal === undefined ? undefined : value >= goal } };
  };
  return rows.map((row) => {
    const goalWorkload = row.workload === 'a' || row.workload === 'b' || row.workload === 'c';
    if (row.target === 'dpms-local') return ratio(row, 'classic-level', goalWorkload ? 1 : undefined);
    if (row.target === 'dpms-tcp') return ratio(row, 'classic-level');
    if (row.target === 'gateway') return ratio(row, 'redis', goalWorkload ? 0.5 : undefined);
    return row;
  });
}

async function benchValueSize(options: KvBenchOptions, services: Services, valueSize: number, log: (text: string) => void): Promise<ValueSizeResult> {
  const data = makeDataset(options.records, valueSize, options.seed);
  const harnessTargets = options.targets.filter((target): target is HarnessTarget => target !== 'redis-benchmark');
  const rows: Row[] = [];
  const open = new Map<HarnessTarget, KvTarget>();
  const budget: Budget = { operations: options.operations, seconds: options.seconds };
  try {
    for (const target of harnessTargets) {
      const reason = services.unavailable.get(target);
      if (reason !== undefined) {
        rows.push({ workload: 'load', target, skipped: reason });
        continue;
      }
      const opened = await openTarget(target, services, options, valueSize);
      open.set(target, opened);
      const measured = await load(opened, data, options.records, `value size ${valueSize} B: loading ${target}`);
      rows.push({ workload: 'load', target, ...measured });
    }
    // Targets take turns per workload, so that a noisy minute on the machine does not fall on one target.
    for (const workload of options.workloads) {
      for (const target of harnessTargets) {
        const opened = open.get(target);
        if (opened === undefined) {
          rows.push({ workload, target, skipped: services.unavailable.get(target) ?? 'not opened' });
          continue;
        }
        if (workload === 'e' && opened.scanUnsupported !== undefined) {
          rows.push({ workload, target, skipped: opened.scanUnsupported });
          continue;
        }
        const label = `value size ${valueSize} B: workload ${workload.toUpperCase()} on ${target}`;
        rows.push({ workload, target, ...await runWorkload(opened, workload, data, options.records, budget, options.concurrency, options.seed, label) });
      }
    }
  } finally {
    for (const opened of open.values()) await opened.close();
  }
  const redisBenchmark = await redisBenchmarkRows(options, services, valueSize, log);
  return { valueSize, rows: withRatios(rows), redisBenchmark };
}

async function redisBenchmarkRows(options: KvBenchOptions, services: Services, valueSize: number, log: (text: string) => void): Promise<RedisBenchmarkRow[]> {
  if (!options.targets.includes('redis-benchmark')) return [];
  const rows: RedisBenchmarkRow[] = [];
  const requests = options.operations ?? 100_000;
  for (const server of ['redis', 'gateway'] as const) {
    for (const pipeline of [1, 16]) {
      const running = server === 'redis' ? services.redis : services.gateway;
      const skipped = services.unavailable.get('redis-benchmark') ?? services.unavailable.get(server) ?? (running === undefined ? 'not started' : undefined);
      if (skipped !== undefined || running === undefined || services.redisBenchmark === undefined) {
        for (const test of ['SET', 'GET']) rows.push({ server, test, pipeline, skipped: skipped ?? 'not started' });
        continue;
      }
      log(`value size ${valueSize} B: redis-benchmark -P ${pipeline} against ${server} ...`);
      const results = await runRedisBenchmark(services.redisBenchmark, running.port, [
        '-t', 'set,get', '-n', String(requests), '-P', String(pipeline), '-c', String(options.concurrency), '-d', String(valueSize), '-r', String(options.records),
      ]);
      for (const result of results) rows.push({ server, pipeline, ...result });
    }
  }
  return rows.map((row) => {
    if (row.server !== 'gateway' || row.opsPerSecond === undefined) return row;
    const redis = rows.find((other) => other.server === 'redis' && other.test === row.test && other.pipeline === row.pipeline);
    return redis?.opsPerSecond === undefined ? row : { ...row, ofRedis: row.opsPerSecond / redis.opsPerSecond };
  });
}

// ---- output ----

const NOTES = [
  'redis-server runs with --save \'\' --appendonly no: it is NOT durable in this mode, while a dpms put is durable (persisted on its node) when it resolves.',
  'classic-level runs with its defaults (sync: false): LevelDB appends every write to its log, but does not fsync it (on tmpfs an fsync would be a no-op anyway).',
  RESP_SCAN_WHY,
];

/** Two decimals, or three where two would round a missed goal up to it (0.4993 is not 0.50). Also bench-fs.ts's. */
export function formatRatio(value: number, goal?: number): string {
  const text = value.toFixed(2);
  return goal !== undefined && value < goal && Number(text) >= goal ? value.toFixed(3) : text;
}

export function fixed(value: number | undefined, digits: number): string {
  return value === undefined ? '' : value.toFixed(digits);
}

function printValueSize(result: ValueSizeResult, options: KvBenchOptions): void {
  const budget = options.seconds === undefined ? `${options.operations} ops` : `${options.seconds} s`;
  console.log(`\nvalue size ${result.valueSize} B  (${options.records} records, ${budget} per workload, ${options.concurrency} workers; ` +
    `load in batches of ${loadBatchRecords(result.valueSize)}, ${LOAD_CONCURRENCY} in flight: ops/s = records/s, latencies per batch)`);
  console.log(`${'workload'.padEnd(9)} ${'target'.padEnd(14)} ${'ops/s'.padStart(10)} ${'p50 us'.padStart(9)} ${'p99 us'.padStart(9)}  ${'ratio'.padEnd(24)} goal`);
  for (const row of result.rows) {
    const workload = row.workload === 'load' ? 'load' : row.workload.toUpperCase();
    if (row.skipped !== undefined) {
      console.log(`${workload.padEnd(9)} ${row.target.padEnd(14)} ${'-'.padStart(10)} ${'-'.padStart(9)} ${'-'.padStart(9)}  skipped: ${row.skipped}`);
      continue;
    }
    const ratio = row.ratio === undefined ? '' : `${formatRatio(row.ratio.value, row.ratio.goal)}x ${row.ratio.of}`;
    const goal = row.ratio?.goal === undefined ? '' : `>= ${row.ratio.goal}x: goal ${row.ratio.met ? 'met' : 'missed'}`;
    const misses = row.misses ? `  (${row.misses} reads found nothing)` : '';
    console.log(`${workload.padEnd(9)} ${row.target.padEnd(14)} ${fixed(row.opsPerSecond, 0).padStart(10)} ${fixed(row.latencyUsP50, 1).padStart(9)} ${fixed(row.latencyUsP99, 1).padStart(9)}  ${ratio.padEnd(24)} ${goal}${misses}`);
  }
  if (result.redisBenchmark.length > 0) {
    console.log(`\nredis-benchmark -t set,get -c ${options.concurrency} -d ${result.valueSize} -r ${options.records} -n ${options.operations ?? 100_000}`);
    console.log(`${'server'.padEnd(9)} ${'test'.padEnd(5)} ${'pipeline'.padStart(8)} ${'ops/s'.padStart(10)} ${'p50 us'.padStart(9)} ${'p99 us'.padStart(9)}  ratio`);
    for (const row of result.redisBenchmark) {
      const prefix = `${row.server.padEnd(9)} ${row.test.padEnd(5)} ${String(row.pipeline).padStart(8)}`;
      if (row.skipped !== undefined) {
        console.log(`${prefix} ${'-'.padStart(10)} ${'-'.padStart(9)} ${'-'.padStart(9)}  skipped: ${row.skipped}`);
        continue;
      }
      const ratio = row.ofRedis === undefined ? '' : `${formatRatio(row.ofRedis, 0.5)}x redis (goal >= 0.5x: ${row.ofRedis >= 0.5 ? 'met' : 'missed'})`;
      console.log(`${prefix} ${fixed(row.opsPerSecond, 0).padStart(10)} ${fixed(row.latencyUsP50, 1).padStart(9)} ${fixed(row.latencyUsP99, 1).padStart(9)}  ${ratio}`);
    }
  }
}

export async function benchKv(raw: RawKvBenchOptions): Promise<number> {
  const options = parseKvBenchOptions(raw);
  interrupted = false;
  const base = scratchBase(options.dir);
  const log = (text: string): void => {
    if (!options.json) console.error(text);
  };
  const onSignal = (): void => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let services: Services | undefined;
  const results: ValueSizeResult[] = [];
  try {
    services = await startServices(options, base, log);
    for (const valueSize of options.valueSizes) results.push(await benchValueSize(options, services, valueSize, log));
  } catch (error) {
    // A node that went away explains itself in what it printed last.
    const cluster = services?.cluster;
    if (cluster && isDpmsError(error) && !options.json) {
      for (const node of cluster.config.nodes) console.error(`--- node ${node.id}, last output:\n${cluster.outputTail(node.id).trim().split('\n').slice(-20).join('\n')}`);
    }
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (services) {
      log('stopping the servers and the cluster ...');
      await stopServices(services);
    }
  }
  const unavailable = Object.fromEntries(services.unavailable);
  if (options.json) {
    console.log(JSON.stringify({ options: { ...options, json: undefined }, notes: NOTES, unavailable, results }, null, 2));
    return EXIT.ok;
  }
  console.log(`\ndpms bench kv  (YCSB core workloads ${options.workloads.map((name) => name.toUpperCase()).join(', ')}; Zipfian requests, theta 0.99, scrambled; seed ${options.seed})`);
  if (options.targets.some((target) => target.startsWith('dpms-'))) {
    console.log('dpms targets: KvStore in this process against 3 `dpms node start` daemons on loopback, pools on tmpfs; ' +
      `${LANES_PER_NODE} log lanes per node per client`);
  }
  for (const [target, reason] of services.unavailable) console.log(`${target}: skipped: ${reason}`);
  for (const result of results) printValueSize(result, options);
  console.log('\nnotes:');
  for (const note of NOTES) console.log(`  - ${note}`);
  return EXIT.ok;
}
