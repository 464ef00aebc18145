// `dpms bench fs`: pDFS through its FUSE mount against bindfs over tmpfs (a FUSE file system in C,
// the FUSE peer) and tmpfs itself (the kernel's limit), all measured in the same run with the same
// programs (bench-fs-targets.ts starts and stops them):
//   - fio (Debian's fio, a child process, JSON output): sequential write and read of one file in
//     1-MiB blocks, then random 4-KiB reads and writes in it; psync, one job, iodepth 1;
//   - metadata: create (open O_CREAT|O_EXCL + write 100 B + close), stat and unlink of --files small
//     files in one directory, by --concurrency worker processes (bench-fs-worker.ts).
// It prints a table per workload with a column per target, the ratios dpms/bindfs and dpms/tmpfs,
// the CPU the FUSE servers used during each workload (where the time goes), and whether the goals
// are met: sequential read and write >= 1x bindfs, every metadata phase >= 0.5x bindfs. A program
// that prints numbers; tests never assert timings.

import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DpmsError, formatBytes, isDpmsError, parseSize } from '../../pdsm';
import { fixed, formatRatio } from './bench-kv';
import { findExecutable } from './bench-kv-targets';
import {
  BINDFS_OPTIONS, FS_TARGETS, startBindfsTarget, startDpmsTarget, startTmpfsTarget, type CpuSample, type FsTarget, type FsTargetName,
} from './bench-fs-targets';
import { METADATA_PHASES, type MetadataPhase, type MetadataReply, type MetadataRequest } from './bench-fs-worker';
import { LatencyHistogram } from './latency-histogram';
import { scratchBase } from './local-cluster';
import { isMounted } from './local-mount';
import { startProgress } from './progress';
import { EXIT } from './run';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const LIMITS = {
  maxSizeBytes: 4 * GiB,
  maxRuntimeSeconds: 3600,
  maxFiles: 1_000_000,
  maxConcurrency: 64,
  /** Largest pool per node the benchmark's cluster may have. */
  maxPoolBytes: 8 * GiB,
} as const;

const DEFAULTS = { size: '256M', runtimeSeconds: 10, files: 10_000, concurrency: 1 } as const;
/** --quick: about ten seconds of measuring, for tests and a first look. */
const QUICK = { size: '32M', runtimeSeconds: 2, files: 1000 } as const;

/** What each metadata file holds. */
const FILE_BYTES = 100;
/** The file every fio job works on (relative to the target's directory). */
const FIO_FILE = 'bench.dat';
/**
 * Both FUSE targets let the kernel cache names and attributes for 1 s (libfuse's default entry and
 * attribute timeouts; dpms's ENTRY_TIMEOUT_S / ATTR_TIMEOUT_S). Each metadata phase after the first
 * starts this long after the one before, so that every stat and unlink reaches the file system.
 */
const KERNEL_CACHE_EXPIRY_MS = 1200;
/** A fio run or a metadata phase that takes longer than this (plus --runtime) is stopped: a hang is an error, not a wait. */
const STEP_TIMEOUT_MS = 30 * 60_000;
const MAX_FIO_OUTPUT_CHARS = 4 * 1024 * 1024;
const MAX_STDERR_CHARS = 64 * 1024;
const WORKER_PATH = path.join(__dirname, 'bench-fs-worker.js');

// ---- options ----

export interface RawFsBenchOptions {
  readonly size?: string;
  readonly runtime?: number;
  readonly files?: number;
  readonly concurrency?: number;
  readonly transport?: string;
  readonly targets?: string;
  readonly quick: boolean;
  readonly json: boolean;
  readonly dir?: string;
}

export interface FsBenchOptions {
  readonly sizeBytes: number;
  readonly runtimeSeconds: number;
  readonly files: number;
  readonly concurrency: number;
  readonly transport: 'local' | 'tcp';
  readonly targets: readonly FsTargetName[];
  readonly quick: boolean;
  readonly json: boolean;
  readonly dir?: string;
}

function invalid(message: string): never {
  throw new DpmsError('DPMS_INVALID_ARGUMENT', message);
}

function integerIn(name: string, value: number, low: number, high: number): number {
  if (!Number.isInteger(value) || value < low || value > high) invalid(`${name} must be an integer from ${low} to ${high} (got ${value})`);
  return value;
}

const TMPFS_MAGIC = 0x01021994;

/** Each node's pool: its third of the fio file (blocks go round-robin over the nodes) twice over, the small files, and room for the rest. */
function poolBytesFor(sizeBytes: number, files: number): number {
  const bytes = (sizeBytes * 2) / 3 + files * 4 * KiB + 256 * MiB;
  return Math.max(512 * MiB, Math.ceil(bytes / (64 * MiB)) * 64 * MiB);
}

/** Check every option; anything wrong is DPMS_INVALID_ARGUMENT (usage, exit status 2). */
export function parseFsBenchOptions(raw: RawFsBenchOptions): FsBenchOptions {
  const sizeBytes = parseSize(raw.size ?? (raw.quick ? QUICK.size : DEFAULTS.size), '--size');
  if (sizeBytes % MiB !== 0 || sizeBytes > LIMITS.maxSizeBytes) invalid(`--size must be a whole number of MiB up to ${formatBytes(LIMITS.maxSizeBytes)} (got ${formatBytes(sizeBytes)})`);
  const runtimeSeconds = integerIn('--runtime', raw.runtime ?? (raw.quick ? QUICK.runtimeSeconds : DEFAULTS.runtimeSeconds), 1, LIMITS.maxRuntimeSeconds);
  const files = integerIn('--files', raw.files ?? (raw.quick ? QUICK.files : DEFAULTS.files), 1, LIMITS.maxFiles);
  const concurrency = integerIn('--concurrency', raw.concurrency ?? DEFAULTS.concurrency, 1, LIMITS.maxConcurrency);
  const transport = raw.transport ?? 'local';
  if (transport !== 'local' && transport !== 'tcp') invalid(`--transport must be local or tcp (got '${transport}')`);
  const names = (raw.targets ?? FS_TARGETS.join(',')).split(',').map((name) => name.trim().toLowerCase()).filter((name) => name.length > 0);
  if (names.length === 0) invalid('--targets: name at least one');
  for (const name of names) if (!(FS_TARGETS as readonly string[]).includes(name)) invalid(`--targets: unknown target '${name}' (${FS_TARGETS.join(', ')})`);
  // In the order of FS_TARGETS, whatever the order given: the columns and the turns keep one order.
  const targets = FS_TARGETS.filter((name) => names.includes(name));
  if (raw.dir !== undefined) {
    let type: number;
    try {
      type = fs.statfsSync(raw.dir).type;
    } catch (error) {
      invalid(`--dir ${raw.dir}: ${(error as Error).message}`);
    }
    // The tmpfs target and bindfs's source live there: anything else would not be the kernel's limit.
    if (type !== TMPFS_MAGIC) invalid(`--dir ${raw.dir} is not on a tmpfs`);
  }
  const poolBytes = poolBytesFor(sizeBytes, files);
  if (poolBytes > LIMITS.maxPoolBytes) invalid(`--size and --files need pools of ${formatBytes(poolBytes)} per node, more than ${formatBytes(LIMITS.maxPoolBytes)}`);
  // Everything lives in memory: the file on tmpfs, bindfs's source, and the cluster's three pools.
  const memoryBytes = 2 * sizeBytes + (targets.includes('dpms') ? 3 * poolBytes : 0);
  if (memoryBytes > os.totalmem() / 2) invalid(`--size: the benchmark would put ${formatBytes(memoryBytes)} on tmpfs, more than half of this machine's memory`);
  return { sizeBytes, runtimeSeconds, files, concurrency, transport, targets, quick: raw.quick, json: raw.json, dir: raw.dir };
}

// ---- results ----

/** A target's result in one workload: measured, or why not. */
export type Cell<T> = T | { readonly skipped: string } | { readonly failed: string };

function isMeasured<T extends object>(cell: Cell<T> | undefined): cell is T {
  return cell !== undefined && !('skipped' in cell) && !('failed' in cell);
}

/** CPU the target's processes used during one workload (see CpuSample). */
interface CpuUsed {
  readonly serverCpuSeconds?: number;
  readonly nodesCpuSeconds?: number;
}

export interface FioResult {
  readonly ios: number;
  /** The time fio measured the I/Os over. */
  readonly seconds: number;
  readonly mibPerSecond: number;
  readonly iops: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
  /** fio's own user + system CPU time (system time includes the kernel's file-system work). */
  readonly fioCpuSeconds: number;
}

type FioMeasured = FioResult & CpuUsed;

interface MetadataMeasured extends CpuUsed {
  readonly operations: number;
  readonly seconds: number;
  readonly opsPerSecond: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
}

type Row<T> = Partial<Record<FsTargetName, Cell<T>>>;

interface Goal {
  readonly name: string;
  readonly goal: number;
  /** dpms / bindfs per measured quantity; absent when either was not measured. */
  readonly ratios?: Readonly<Record<string, number>>;
  readonly met?: boolean;
}

// ---- fio ----

export interface FioWorkload {
  readonly name: 'seqwrite' | 'seqread' | 'randread' | 'randwrite';
  readonly rw: 'write' | 'read' | 'randread' | 'randwrite';
  readonly direction: 'read' | 'write';
  readonly blockBytes: number;
  readonly describe: string;
}

export const FIO_WORKLOADS: readonly FioWorkload[] = [
  { name: 'seqwrite', rw: 'write', direction: 'write', blockBytes: MiB, describe: 'sequential write of a new file in 1-MiB blocks, fsync at the end' },
  { name: 'seqread', rw: 'read', direction: 'read', blockBytes: MiB, describe: 'sequential read of that file in 1-MiB blocks' },
  { name: 'randread', rw: 'randread', direction: 'read', blockBytes: 4 * KiB, describe: 'random 4-KiB reads: each block of the file once, in random order' },
  { name: 'randwrite', rw: 'randwrite', direction: 'write', blockBytes: 4 * KiB, describe: 'random 4-KiB overwrites: each block once, in random order, fsync at the end' },
];

/**
 * The command line of one fio job. Buffered I/O (direct=0), as applications do; fio drops the file's
 * cached pages before each job (invalidate=1), and neither FUSE target keeps pages across opens, so
 * every byte read on them crosses FUSE. fallocate=none: the write is plain appends on every target.
 * The random jobs make one pass over the file (fio's random map visits each block once, and its
 * fadvise RANDOM hint turns readahead off), so no read is served from a page cached earlier in the
 * job; --runtime stops a pass that takes longer. The sequential jobs always move the whole file.
 */
export function fioArgs(workload: FioWorkload, dir: string, sizeBytes: number, runtimeSeconds: number): string[] {
  const random = workload.rw.startsWith('rand');
  return [
    `--name=${workload.name}`, `--directory=${dir}`, `--filename=${FIO_FILE}`, `--rw=${workload.rw}`, `--bs=${workload.blockBytes}`,
    `--size=${sizeBytes}`, '--ioengine=psync', '--iodepth=1', '--numjobs=1', '--direct=0', '--invalidate=1', '--fallocate=none',
    `--end_fsync=${workload.direction === 'write' ? 1 : 0}`, ...(random ? [`--runtime=${runtimeSeconds}`] : []),
    '--percentile_list=50:99', '--output-format=json',
  ];
}

/** Parse fio's --output-format=json for its single job: bandwidth, IOPS and completion-latency percentiles of `direction`. */
export function parseFioJson(text: string, direction: 'read' | 'write'): FioResult {
  // fio may print notes before the JSON document.
  const start = text.indexOf('{');
  let document: unknown;
  try {
    if (start < 0) throw new Error('no JSON object');
    document = JSON.parse(text.slice(start));
  } catch (error) {
    throw new DpmsError('DPMS_PROTOCOL', `fio printed no JSON (${(error as Error).message}):\n${text.slice(0, 2000)}`);
  }
  const fail = (what: string): never => { throw new DpmsError('DPMS_PROTOCOL', `fio's JSON: ${what}`); };
  const object = (value: unknown, what: string): Record<string, unknown> =>
    (typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : fail(`${what} is not an object`));
  const number = (value: unknown, what: string): number => (typeof value === 'number' && Number.isFinite(value) ? value : fail(`${what} is not a number`));
  const jobs = object(document, 'the document').jobs;
  if (!Array.isArray(jobs) || jobs.length !== 1) fail(`expected one job, got ${Array.isArray(jobs) ? jobs.length : 'none'}`);
  const job = object((jobs as unknown[])[0], 'jobs[0]');
  const error = number(job.error, 'jobs[0].error');
  if (error !== 0) throw new DpmsError('DPMS_IO', `fio job ${String(job.jobname)} failed with error ${error} (${errnoName(error)})`);
  const stats = object(job[direction], `jobs[0].${direction}`);
  const ios = number(stats.total_ios, `${direction}.total_ios`);
  if (ios <= 0) fail(`the job did no ${direction}s`);
  const percentiles = object(object(stats.clat_ns, `${direction}.clat_ns`).percentile, `${direction}.clat_ns.percentile`);
  const percentile = (wanted: number): number => {
    const key = Object.keys(percentiles).find((name) => Number(name) === wanted);
    return key === undefined ? fail(`no ${wanted}th percentile of ${direction} completion latency`) : number(percentiles[key], `percentile ${key}`);
  };
  const runtimeMs = number(job.job_runtime, 'jobs[0].job_runtime');
  const cpuPercent = number(job.usr_cpu, 'jobs[0].usr_cpu') + number(job.sys_cpu, 'jobs[0].sys_cpu');
  const iops = number(stats.iops, `${direction}.iops`);
  if (iops <= 0) fail(`${direction}.iops is not positive`);
  return {
    ios,
    seconds: ios / iops,
    mibPerSecond: number(stats.bw_bytes, `${direction}.bw_bytes`) / MiB,
    iops,
    latencyUsP50: percentile(50) / 1000,
    latencyUsP99: percentile(99) / 1000,
    fioCpuSeconds: (cpuPercent / 100) * (runtimeMs / 1000),
  };
}

function errnoName(errno: number): string {
  return Object.entries(os.constants.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
}

// ---- child processes and Ctrl-C ----

let interrupted = false;
/** fio and the metadata workers running now: SIGTERM reaches them by PID when this process is told to stop. */
const running = new Set<ChildProcess>();

function checkInterrupted(): void {
  if (interrupted) throw new DpmsError('DPMS_CLOSED', 'interrupted');
}

function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
}

function runFio(executable: string, args: readonly string[], direction: 'read' | 'write', timeoutMs: number): Promise<FioResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(executable, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => { if (stdout.length < MAX_FIO_OUTPUT_CHARS) stdout += data.toString(); });
    child.stderr.on('data', (data: Buffer) => { stderr = (stderr + data.toString()).slice(-MAX_STDERR_CHARS); });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new DpmsError('DPMS_IO', `fio: ${error.message}`, { cause: error }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return reject(new DpmsError('DPMS_TIMEOUT', `fio did not finish within ${timeoutMs / 1000} s: ${stderr.trim()}`));
      if (code !== 0) return reject(new DpmsError('DPMS_IO', `fio exited with ${code ?? signal}: ${(stderr || stdout).trim().slice(-2000)}`));
      try {
        resolve(parseFioJson(stdout, direction));
      } catch (error) {
        reject(error);
      }
    });
  });
}

// ---- metadata ----

interface Worker {
  readonly child: ChildProcess;
  readonly stderr: () => string;
}

function nextReply(worker: Worker, timeoutMs: number): Promise<MetadataReply> {
  return new Promise((resolve, reject) => {
    const { child } = worker;
    const gone = (): DpmsError => new DpmsError('DPMS_IO', `a metadata worker exited (${child.exitCode ?? child.signalCode}): ${worker.stderr().trim()}`);
    if (child.exitCode !== null || child.signalCode !== null) return reject(gone());
    const timer = setTimeout(() => {
      done();
      reject(new DpmsError('DPMS_TIMEOUT', `a metadata worker did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const onMessage = (reply: MetadataReply): void => {
      done();
      resolve(reply);
    };
    const onExit = (): void => {
      done();
      reject(gone());
    };
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

async function startWorkers(count: number): Promise<Worker[]> {
  const workers: Worker[] = [];
  try {
    for (let i = 0; i < count; i++) {
      // 'advanced' serialization carries the latencies as a Float64Array and the clocks as bigints.
      const child = fork(WORKER_PATH, [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
      track(child);
      // A send to a worker that has died fails with an 'error' event; its 'exit' is what nextReply reports.
      child.on('error', () => {});
      let stderr = '';
      child.stderr!.on('data', (data: Buffer) => { stderr = (stderr + data.toString()).slice(-MAX_STDERR_CHARS); });
      workers.push({ child, stderr: () => stderr });
    }
    for (const worker of workers) {
      const reply = await nextReply(worker, 30_000);
      if (reply.type !== 'ready') throw new DpmsError('DPMS_PROTOCOL', `a metadata worker said '${reply.type}' instead of ready`);
    }
    return workers;
  } catch (error) {
    await stopWorkers(workers);
    throw error;
  }
}

async function stopWorkers(workers: readonly Worker[]): Promise<void> {
  await Promise.all(workers.map(async ({ child }) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // A worker exits when its channel closes; one stuck in a system call is killed.
    if (child.connected) child.disconnect();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }));
}

function cpuUsed(before: CpuSample, after: CpuSample): CpuUsed {
  const delta = (a?: number, b?: number): number | undefined => (a === undefined || b === undefined ? undefined : b - a);
  return { serverCpuSeconds: delta(before.server, after.server), nodesCpuSeconds: delta(before.nodes, after.nodes) };
}

/**
 * The run's measuring steps (a fio job or a metadata phase on one target) as one progress bar on
 * stderr. On a terminal the bar's note names the current step; otherwise the step's own log line
 * stays (CI logs then show which step is running) beside the plain progress lines.
 */
interface Steps {
  begin(what: string): void;
  end(): void;
}

function startSteps(total: number, log: (text: string) => void): Steps & { stop(): void } {
  const progress = startProgress({ label: 'bench fs', total, unit: 'steps' });
  const bar = process.stderr.isTTY === true;
  let done = 0;
  return {
    begin(what) {
      if (!bar) log(`${what} ...`);
      progress.update(done, what);
    },
    end() {
      progress.update(++done);
    },
    stop() {
      progress.stop();
    },
  };
}

async function runMetadata(target: FsTarget, options: FsBenchOptions, log: (text: string) => void, steps: Steps): Promise<Record<MetadataPhase, Cell<MetadataMeasured>>> {
  const dir = path.join(target.dir, 'metadata');
  const cells: Partial<Record<MetadataPhase, Cell<MetadataMeasured>>> = {};
  await fs.promises.mkdir(dir);
  const workers = await startWorkers(options.concurrency);
  try {
    let failedPhase: MetadataPhase | undefined;
    for (const phase of METADATA_PHASES) {
      if (failedPhase !== undefined) {
        cells[phase] = { failed: `not run: ${failedPhase} failed` };
        steps.end();
        continue;
      }
      if (target.fuse && phase !== 'create') await sleep(KERNEL_CACHE_EXPIRY_MS);
      checkInterrupted();
      steps.begin(`metadata ${phase} of ${options.files} files on ${target.name}`);
      const before = target.cpu();
      const replies = await Promise.all(workers.map((worker, index) => {
        const request: MetadataRequest = { phase, dir, files: options.files, fileBytes: FILE_BYTES, worker: index, workers: workers.length };
        worker.child.send(request);
        return nextReply(worker, STEP_TIMEOUT_MS);
      }));
      const cpu = cpuUsed(before, target.cpu());
      const failures = replies.flatMap((reply) => (reply.type === 'failed' ? [reply.message] : []));
      if (failures.length > 0) {
        failedPhase = phase;
        cells[phase] = { failed: failures[0] };
        log(`  ${target.name}: ${phase} failed: ${failures[0]}`);
        steps.end();
        continue;
      }
      const histogram = new LatencyHistogram();
      let startNs: bigint | undefined;
      let endNs: bigint | undefined;
      for (const reply of replies) {
        if (reply.type !== 'done') throw new DpmsError('DPMS_PROTOCOL', `a metadata worker said '${reply.type}' instead of done`);
        for (const latency of reply.latenciesNs) histogram.recordNs(latency);
        if (startNs === undefined || reply.startNs < startNs) startNs = reply.startNs;
        if (endNs === undefined || reply.endNs > endNs) endNs = reply.endNs;
      }
      const seconds = Math.max(1e-9, Number(endNs! - startNs!) / 1e9);
      cells[phase] = {
        operations: histogram.count,
        seconds,
        opsPerSecond: histogram.count / seconds,
        latencyUsP50: histogram.percentileNs(0.5) / 1000,
        latencyUsP99: histogram.percentileNs(0.99) / 1000,
        ...cpu,
      };
      steps.end();
    }
  } finally {
    await stopWorkers(workers);
  }
  // Whatever a failed phase left behind; async, as every call this process makes on a mount. The
  // numbers stand even if this fails: the scratch directory goes at the end anyway.
  await fs.promises.rm(dir, { recursive: true, force: true }).catch((error: Error) => log(`  ${target.name}: cannot remove ${dir}: ${error.message}`));
  return cells as Record<MetadataPhase, Cell<MetadataMeasured>>;
}

// ---- the run ----

/** A failure of one target in one workload becomes its cell; only an interruption, or a bug, ends the run. */
async function measureCell<T>(target: FsTarget, what: string, log: (text: string) => void, body: () => Promise<T>): Promise<Cell<T>> {
  try {
    return await body();
  } catch (error) {
    checkInterrupted();
    // Typed errors, and the errno of a call on a mount (ENOTCONN when its server is gone), are findings; anything else is a bug.
    const systemCode = (error as NodeJS.ErrnoException).code;
    if (!isDpmsError(error) && !(typeof systemCode === 'string' && /^E[A-Z]+$/.test(systemCode))) throw error;
    const code = isDpmsError(error) ? error.code : systemCode!;
    const message = (error as Error).message;
    log(`  ${target.name}: ${what} failed: ${message}`);
    const tail = target.outputTail();
    if (tail) log(tail);
    const firstLine = message.split('\n')[0];
    return { failed: firstLine.startsWith(code) ? firstLine : `${code}: ${firstLine}` };
  }
}

interface Results {
  readonly workloads: Record<FioWorkload['name'], Row<FioMeasured>>;
  readonly metadata: Record<MetadataPhase, Row<MetadataMeasured>>;
}

async function startTargets(options: FsBenchOptions, scratch: string, base: string, unavailable: Map<FsTargetName, string>,
  started: FsTarget[], log: (text: string) => void): Promise<void> {
  for (const name of options.targets) {
    checkInterrupted();
    if (name === 'dpms') {
      started.push(await startDpmsTarget({ scratch, base, poolBytes: poolBytesFor(options.sizeBytes, options.files), transport: options.transport, log }));
    } else if (name === 'bindfs') {
      const executable = findExecutable('bindfs');
      if (executable === undefined) unavailable.set('bindfs', 'bindfs is not installed (Debian: apt-get install bindfs)');
      else started.push(await startBindfsTarget(scratch, executable, log));
    } else {
      started.push(startTmpfsTarget(scratch));
    }
  }
}

async function runWorkloads(options: FsBenchOptions, fio: string, targets: readonly FsTarget[], unavailable: Map<FsTargetName, string>,
  log: (text: string) => void): Promise<Results> {
  const skipped = (): Row<never> => Object.fromEntries([...unavailable].map(([name, reason]) => [name, { skipped: reason }]));
  const timeoutMs = STEP_TIMEOUT_MS + options.runtimeSeconds * 1000;
  const steps = startSteps((FIO_WORKLOADS.length + METADATA_PHASES.length) * targets.length, log);
  try {
    return await runSteps(options, fio, targets, skipped, timeoutMs, log, steps);
  } finally {
    steps.stop();
  }
}

async function runSteps(options: FsBenchOptions, fio: string, targets: readonly FsTarget[], skipped: () => Row<never>, timeoutMs: number,
  log: (text: string) => void, steps: Steps): Promise<Results> {
  const workloads = {} as Record<FioWorkload['name'], Row<FioMeasured>>;
  // Targets take turns per workload, so that a noisy minute on the machine does not fall on one target.
  for (const workload of FIO_WORKLOADS) {
    const row: Row<FioMeasured> = skipped();
    for (const target of targets) {
      checkInterrupted();
      const previous = workloads.seqwrite?.[target.name];
      if (workload.name !== 'seqwrite' && previous !== undefined && !isMeasured(previous)) {
        // Every later job works on the file the sequential write makes.
        row[target.name] = { failed: 'not run: seqwrite failed' };
        steps.end();
        continue;
      }
      steps.begin(`fio ${workload.name} on ${target.name}`);
      row[target.name] = await measureCell(target, `fio ${workload.name}`, log, async () => {
        const before = target.cpu();
        const result = await runFio(fio, fioArgs(workload, target.dir, options.sizeBytes, options.runtimeSeconds), workload.direction, timeoutMs);
        checkInterrupted();
        return { ...result, ...cpuUsed(before, target.cpu()) };
      });
      steps.end();
    }
    workloads[workload.name] = row;
  }
  // The metadata phases start on an empty file system. A target that cannot remove it has failed already.
  for (const target of targets) await fs.promises.rm(path.join(target.dir, FIO_FILE), { force: true }).catch(() => {});
  const metadata = Object.fromEntries(METADATA_PHASES.map((phase) => [phase, skipped()])) as Record<MetadataPhase, Row<MetadataMeasured>>;
  for (const target of targets) {
    checkInterrupted();
    // A metadata run that fails outright (its workers did not start) still ends all of its steps.
    let ended = 0;
    const counted: Steps = { begin: (what) => steps.begin(what), end: () => { ended++; steps.end(); } };
    const outcome = await measureCell(target, 'metadata', log, () => runMetadata(target, options, log, counted));
    for (; ended < METADATA_PHASES.length; ended++) steps.end();
    for (const phase of METADATA_PHASES) metadata[phase][target.name] = isMeasured(outcome) ? outcome[phase] : outcome;
  }
  return { workloads, metadata };
}

function ratioOf<T extends object>(row: Row<T>, of: FsTargetName, value: (measured: T) => number | undefined): number | undefined {
  const dpms = row.dpms;
  const peer = row[of];
  if (!isMeasured(dpms) || !isMeasured(peer)) return undefined;
  const a = value(dpms);
  const b = value(peer);
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function goals(results: Results): Goal[] {
  const goal = (name: string, target: number, ratios: Array<[string, number | undefined]>): Goal => {
    if (ratios.some(([, ratio]) => ratio === undefined)) return { name, goal: target };
    const values = Object.fromEntries(ratios) as Record<string, number>;
    return { name, goal: target, ratios: values, met: Object.values(values).every((ratio) => ratio >= target) };
  };
  const mibPerSecond = (measured: FioMeasured): number => measured.mibPerSecond;
  return [
    goal('sequential write >= 1x bindfs', 1, [['seqwrite', ratioOf(results.workloads.seqwrite, 'bindfs', mibPerSecond)]]),
    goal('sequential read >= 1x bindfs', 1, [['seqread', ratioOf(results.workloads.seqread, 'bindfs', mibPerSecond)]]),
    goal('metadata >= 0.5x bindfs (create, stat and unlink each)', 0.5,
      METADATA_PHASES.map((phase) => [phase, ratioOf(results.metadata[phase], 'bindfs', (measured: MetadataMeasured) => measured.opsPerSecond)])),
  ];
}

// ---- output ----

function notes(options: FsBenchOptions): string[] {
  return [
    `fio ${FIO_WORKLOADS.length} jobs per target on one ${formatBytes(options.sizeBytes)} file: ioengine psync, iodepth 1, one job, buffered (direct=0), fallocate=none; ` +
      'the write jobs end with an fsync (end_fsync=1), which their time includes.',
    'Reads: fio drops the file\'s cached pages before each job (invalidate=1), and the FUSE targets do not keep pages across opens, so every byte ' +
      'read on dpms and bindfs crosses FUSE; on tmpfs the page cache is the file system, so tmpfs reads are memory copies.',
    `Random jobs: one pass over the file in random order (fio's random map: each 4-KiB block once; fadvise RANDOM: no readahead), stopped at --runtime ${options.runtimeSeconds} s, ` +
      'so no read is served from a page cached earlier in the job. Writes through FUSE are write-through (no writeback cache): every write() reaches the server.',
    `bindfs runs as \`bindfs ${BINDFS_OPTIONS.join(' ')} SOURCE DIR\` over a tmpfs directory: libfuse2, single-threaded (its default); ` +
      'big_writes lets it take writes of up to 128 KiB instead of 4 KiB.',
    `dpms: 3 \`dpms node start\` daemons with pools on tmpfs (transport ${options.transport}) and \`dpms mount --foreground\`.`,
    `metadata: ${options.concurrency} worker process${options.concurrency > 1 ? 'es' : ''} making synchronous calls, files split among them; create = open(O_CREAT|O_EXCL|O_WRONLY) + ` +
      `write ${FILE_BYTES} B + close. On the FUSE targets stat and unlink start ${KERNEL_CACHE_EXPIRY_MS / 1000} s after the phase before, once the kernel's 1-s ` +
      'entry and attribute caches have expired, so every call reaches the file system (an unlink is then a LOOKUP and an UNLINK).',
    'server CPU s: user + system CPU time of the FUSE server process during the workload (/proc/PID/stat, in 10-ms ticks): the dpms mount ' +
      'process, bindfs; server CPU %: that over the workload\'s time (100 = one core busy throughout: the server is the bottleneck). ' +
      'tmpfs has none: its work is in fio\'s system time. dpms nodes CPU s: the three node daemons together.',
  ];
}

interface Metric<T> {
  readonly label: string;
  readonly value: (measured: T) => number | undefined;
  readonly digits: number;
  /** Whether dpms/peer means anything for this metric. */
  readonly ratio: boolean;
}

const COLUMN = 12;

function printTable<T extends object>(title: string, row: Row<T>, metrics: readonly Metric<T>[], options: FsBenchOptions): void {
  const targets = FS_TARGETS.filter((name) => options.targets.includes(name));
  const peers = targets.includes('dpms') ? targets.filter((name) => name !== 'dpms') : [];
  console.log(`\n${title}`);
  console.log(`${''.padEnd(22)}${targets.map((name) => name.padStart(COLUMN)).join('')}${peers.map((peer) => `dpms/${peer}`.padStart(COLUMN + 2)).join('')}`);
  for (const metric of metrics) {
    const values = targets.map((name) => {
      const cell = row[name];
      return isMeasured(cell) ? metric.value(cell) : undefined;
    });
    if (values.every((value) => value === undefined) && targets.some((name) => isMeasured(row[name]))) continue;
    const ratios = peers.map((peer) => {
      const ratio = metric.ratio ? ratioOf(row, peer, metric.value) : undefined;
      return (ratio === undefined ? '' : `${formatRatio(ratio)}x`).padStart(COLUMN + 2);
    });
    console.log(`${metric.label.padEnd(22)}${values.map((value) => (value === undefined ? '-' : fixed(value, metric.digits)).padStart(COLUMN)).join('')}${ratios.join('')}`);
  }
  for (const name of targets) {
    const cell = row[name];
    if (cell !== undefined && 'skipped' in cell) console.log(`  ${name}: skipped: ${cell.skipped}`);
    if (cell !== undefined && 'failed' in cell) console.log(`  ${name}: failed: ${cell.failed}`);
  }
}

const CPU_METRICS = <T extends CpuUsed & { readonly seconds: number }>(): Metric<T>[] => [
  { label: 'server CPU s', value: (m) => m.serverCpuSeconds, digits: 2, ratio: true },
  // Near 100 (one core busy throughout): the server process is what limits the workload.
  { label: 'server CPU %', value: (m) => (m.serverCpuSeconds === undefined ? undefined : (100 * m.serverCpuSeconds) / m.seconds), digits: 0, ratio: false },
  { label: 'dpms nodes CPU s', value: (m) => m.nodesCpuSeconds, digits: 2, ratio: false },
];

const FIO_METRICS: readonly Metric<FioMeasured>[] = [
  { label: 'MiB/s', value: (m) => m.mibPerSecond, digits: 1, ratio: true },
  { label: 'IOPS', value: (m) => m.iops, digits: 0, ratio: true },
  { label: 'I/Os', value: (m) => m.ios, digits: 0, ratio: false },
  { label: 'clat p50 us', value: (m) => m.latencyUsP50, digits: 1, ratio: true },
  { label: 'clat p99 us', value: (m) => m.latencyUsP99, digits: 1, ratio: true },
  ...CPU_METRICS<FioMeasured>(),
  { label: 'fio CPU s', value: (m) => m.fioCpuSeconds, digits: 2, ratio: true },
];

const METADATA_METRICS: readonly Metric<MetadataMeasured>[] = [
  { label: 'ops/s', value: (m) => m.opsPerSecond, digits: 0, ratio: true },
  { label: 'p50 us', value: (m) => m.latencyUsP50, digits: 1, ratio: true },
  { label: 'p99 us', value: (m) => m.latencyUsP99, digits: 1, ratio: true },
  ...CPU_METRICS<MetadataMeasured>(),
];

function printResults(options: FsBenchOptions, results: Results, unavailable: Map<FsTargetName, string>): void {
  console.log(`\ndpms bench fs  (fio on a ${formatBytes(options.sizeBytes)} file, random jobs stopped at ${options.runtimeSeconds} s; ` +
    `${options.files} small files, ${options.concurrency} worker${options.concurrency > 1 ? 's' : ''}; ratios: dpms / peer)`);
  for (const [name, reason] of unavailable) console.log(`${name}: skipped: ${reason}`);
  for (const workload of FIO_WORKLOADS) printTable(`${workload.name}: ${workload.describe}`, results.workloads[workload.name], FIO_METRICS, options);
  for (const phase of METADATA_PHASES) {
    const what = { create: `open(O_CREAT) + write ${FILE_BYTES} B + close`, stat: 'stat', unlink: 'unlink' }[phase];
    printTable(`metadata ${phase}: ${what} of ${options.files} files in one directory`, results.metadata[phase], METADATA_METRICS, options);
  }
  console.log('\ngoals:');
  for (const goal of goals(results)) {
    if (goal.ratios === undefined) {
      console.log(`  ${goal.name}: not measured (needs dpms and bindfs)`);
      continue;
    }
    const ratios = Object.entries(goal.ratios).map(([name, ratio]) => `${Object.keys(goal.ratios!).length > 1 ? `${name} ` : ''}${formatRatio(ratio, goal.goal)}x`);
    console.log(`  ${goal.name}: ${ratios.join(', ')}: goal ${goal.met ? 'met' : 'missed'}`);
  }
  console.log('\nnotes:');
  for (const note of notes(options)) console.log(`  - ${note}`);
}

export async function benchFs(raw: RawFsBenchOptions): Promise<number> {
  const options = parseFsBenchOptions(raw);
  const fio = findExecutable('fio');
  if (fio === undefined) throw new DpmsError('DPMS_UNSUPPORTED', 'fio is not installed (Debian: apt-get install fio)');
  const log = (text: string): void => {
    if (!options.json) console.error(text);
  };
  interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    // Ctrl-C reaches the whole process group; a SIGTERM sent to this process alone is passed on.
    for (const child of running) {
      try {
        if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      } catch {
        // it has just exited
      }
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const base = scratchBase(options.dir);
  const unavailable = new Map<FsTargetName, string>();
  const targets: FsTarget[] = [];
  let scratch: string | undefined;
  let results: Results;
  let leftOver: string | undefined;
  try {
    scratch = fs.mkdtempSync(path.join(base, 'dpms-bench-fs-'));
    await startTargets(options, scratch, base, unavailable, targets, log);
    results = await runWorkloads(options, fio, targets, unavailable, log);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (targets.length > 0) log('unmounting and stopping what the benchmark started ...');
    for (const target of targets.reverse()) {
      try {
        await target.stop();
      } catch (error) {
        // Stop the others all the same; the scratch directory is then kept if something is still mounted on it.
        console.error(`dpms: stopping ${target.name}: ${(error as Error).message}`);
      }
    }
    if (scratch !== undefined) {
      // Never recurse into a mount: stop() detaches them, and anything still mounted is left for a person to look at.
      const mounted = fs.readdirSync(scratch).map((name) => path.join(scratch!, name)).filter((dir) => isMounted(dir));
      if (mounted.length > 0) {
        leftOver = `still mounted, so ${scratch} was not removed: ${mounted.join(', ')} (fusermount3 -uz DIR)`;
        console.error(`dpms: ${leftOver}`);
      } else {
        fs.rmSync(scratch, { recursive: true, force: true });
      }
    }
  }
  const failed = [...Object.values(results.workloads), ...Object.values(results.metadata)]
    .some((row) => Object.values(row).some((cell) => cell !== undefined && 'failed' in cell));
  if (options.json) {
    console.log(JSON.stringify({
      options: { ...options, json: undefined }, notes: notes(options), unavailable: Object.fromEntries(unavailable), ...results, goals: goals(results),
    }, null, 2));
  } else {
    printResults(options, results, unavailable);
  }
  return failed || leftOver !== undefined ? EXIT.failed : EXIT.ok;
}
