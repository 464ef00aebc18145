// `dpms bench pdsm`: latency and throughput of pDSM's raw and transactional paths on a tmpfs pool,
// each printed as a ratio of the machine's own limit measured in the same run by native loops
// (64-B store + flush + fence; memcpy + persist bandwidth). `dpms bench transport` (bench-transport.ts)
// measures the transport providers against raw TCP; `dpms bench kv` (bench-kv.ts) runs YCSB workloads
// against pDKVS, LevelDB and Redis; `dpms bench fs` (bench-fs.ts) runs fio and a metadata benchmark on
// a dpms mount, bindfs and tmpfs. Programs that print numbers; tests never assert timings.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { benchMemcpyPersist, benchStoreFlushFence } from '../../native';
import { DpmsError, formatPoolFile, Pdsm, type GlobalAddress } from '../../pdsm';
import type { ProviderName } from '../../pdsm/transport';
import { benchFs } from './bench-fs';
import { FS_TARGETS } from './bench-fs-targets';
import { benchKv, KV_TARGETS } from './bench-kv';
import { benchTransport } from './bench-transport';
import { formatBytes, parseSize } from '../../pdsm';
import { startProgress } from './progress';
import { EXIT, run } from './run';

export function registerBenchCommands(yargs: Argv): Argv {
  return yargs.command('bench <target>', 'run a benchmark (targets: pdsm, transport, kv, fs)', (y) => y
    .positional('target', { type: 'string', choices: ['pdsm', 'transport', 'kv', 'fs'] as const, demandOption: true })
    .option('ops', { type: 'number', default: 100_000, describe: 'pdsm: operations per measurement; kv: operations per workload' })
    .option('dir', { type: 'string', describe: 'where to put the pools (default /dev/shm, a tmpfs; fs: must be a tmpfs)' })
    .option('size', { type: 'string', describe: 'pdsm: pool size (default 256M); fs: the fio file (default 256M, --quick 32M)' })
    .option('provider', { type: 'string', default: 'tcp,local,verbs', describe: 'transport: providers to measure, comma-separated' })
    .option('host', { type: 'string', default: '127.0.0.1', describe: 'transport: the address the node listens on (verbs: an RDMA device\'s IP)' })
    .option('iterations', { type: 'number', default: 20_000, describe: 'transport: operations per small-operation row (1-MiB rows do 1/10)' })
    .option('records', { type: 'number', default: 100_000, describe: 'kv: records loaded before the workloads' })
    .option('seconds', { type: 'number', describe: 'kv: run each workload this long instead of --ops operations' })
    .option('value-sizes', { type: 'string', default: '100,1024', describe: 'kv: value sizes in bytes, comma-separated (a table each)' })
    .option('workloads', { type: 'string', default: 'a,b,c,e', describe: 'kv: YCSB workloads, comma-separated (a, b, c, e)' })
    .option('targets', { type: 'string', describe: `what to measure, comma-separated (kv: default ${KV_TARGETS.join(',')}; fs: default ${FS_TARGETS.join(',')})` })
    .option('concurrency', { type: 'number', describe: 'kv: closed-loop workers and RESP connections (default 32); fs: metadata worker processes (default 1)' })
    .option('seed', { type: 'number', default: 1, describe: 'kv: seed of the generated operations and values' })
    .option('runtime', { type: 'number', describe: 'fs: seconds after which a random-I/O job stops (default 10, --quick 2)' })
    .option('files', { type: 'number', describe: 'fs: small files of the metadata benchmark (default 10000, --quick 1000)' })
    .option('transport', { type: 'string', choices: ['local', 'tcp'], describe: 'fs: how the dpms mount reaches the nodes (default local)' })
    .option('quick', { type: 'boolean', default: false, describe: 'fs: small sizes, about ten seconds of measuring' })
    .option('json', { type: 'boolean', default: false, describe: 'print the results as JSON' }),
  (argv) => run(() => {
    if (argv.target === 'transport') return benchTransport({ providers: parseProviders(argv.provider), host: argv.host, iterations: argv.iterations, dir: argv.dir, json: argv.json });
    if (argv.target === 'kv') {
      return benchKv({
        records: argv.records, ops: argv.ops, seconds: argv.seconds, valueSizes: argv.valueSizes, workloads: argv.workloads,
        targets: argv.targets ?? KV_TARGETS.join(','), concurrency: argv.concurrency ?? 32, seed: argv.seed, json: argv.json, dir: argv.dir,
      });
    }
    if (argv.target === 'fs') {
      return benchFs({
        size: argv.size, runtime: argv.runtime, files: argv.files, concurrency: argv.concurrency, transport: argv.transport,
        targets: argv.targets, quick: argv.quick, json: argv.json, dir: argv.dir,
      });
    }
    return benchPdsm(argv.ops, argv.dir, parseSize(argv.size ?? '256M', '--size'), argv.json);
  }));
}

function parseProviders(text: string): ProviderName[] {
  const known: readonly ProviderName[] = ['tcp', 'local', 'verbs'];
  const names = text.split(',').map((name) => name.trim()).filter((name) => name.length > 0);
  for (const name of names) {
    if (!known.includes(name as ProviderName)) throw new DpmsError('DPMS_INVALID_ARGUMENT', `--provider: unknown provider '${name}' (tcp, local, verbs)`);
  }
  if (names.length === 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', '--provider: name at least one provider');
  return [...new Set(names)] as ProviderName[];
}

interface Row {
  readonly name: string;
  readonly opsPerSecond: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
  /** Median latency over the limit's per-operation latency (lower is better). */
  readonly timesLimit: number;
  readonly bandwidthMBps?: number;
}

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

/** Run `op` `count` times after a warm-up; latencies in ns per call. */
async function measure(count: number, op: (i: number) => Promise<void> | void): Promise<{ samples: Float64Array; totalNs: number }> {
  for (let i = 0; i < Math.min(1000, count); i++) await op(i);
  const samples = new Float64Array(count);
  const start = process.hrtime.bigint();
  let last = start;
  for (let i = 0; i < count; i++) {
    await op(i);
    const now = process.hrtime.bigint();
    samples[i] = Number(now - last);
    last = now;
  }
  return { samples: samples.sort(), totalNs: Number(last - start) };
}

async function benchPdsm(ops: number, dir: string | undefined, sizeBytes: number, json: boolean): Promise<number> {
  if (!Number.isInteger(ops) || ops < 100) {
    console.error('dpms: --ops must be an integer of at least 100');
    return EXIT.usage;
  }
  const base = dir ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
  const poolPath = path.join(base, `dpms-bench-${process.pid}.pool`);
  const info = formatPoolFile(poolPath, { sizeBytes, nodeId: 0, force: true });
  const dsm = await Pdsm.open({ nodes: [{ path: poolPath, nodeId: 0 }] });
  try {
    const node = dsm.node(0);
    const pm = node.pm;
    const log = (text: string): void => {
      if (!json) console.error(text);
    };
    log(`pool ${poolPath}: ${formatBytes(info.layout.poolBytes)}, persistence ${pm.flushMode} (is_pmem=${pm.isPmem ? 1 : 0})`);

    // The machine's limits, measured natively on the same mapping.
    const scratch = info.layout.heapOffset + (info.layout.chunkCount - 17) * info.layout.chunkBytes;
    const limitIterations = Math.max(ops, 200_000);
    const limitNsPerOp = benchStoreFlushFence(pm, scratch, 64, limitIterations) / limitIterations;
    const bandwidthBytes = 512 * 1024 * 1024;
    const memcpy4kMBps = bandwidthBytes / (benchMemcpyPersist(pm, scratch, 4096, bandwidthBytes) / 1e9) / 1e6;
    const memcpy1mMBps = bandwidthBytes / (benchMemcpyPersist(pm, scratch, 1024 * 1024, bandwidthBytes) / 1e9) / 1e6;

    const rows: Row[] = [];
    const record = (name: string, result: { samples: Float64Array; totalNs: number }, bytesPerOp?: number): void => {
      const p50 = percentile(result.samples, 0.5);
      rows.push({
        name,
        opsPerSecond: (result.samples.length / result.totalNs) * 1e9,
        latencyUsP50: p50 / 1000,
        latencyUsP99: percentile(result.samples, 0.99) / 1000,
        timesLimit: p50 / limitNsPerOp,
        bandwidthMBps: bytesPerOp === undefined ? undefined : (bytesPerOp * result.samples.length) / (result.totalNs / 1e9) / 1e6,
      });
    };

    const objects: GlobalAddress[] = await dsm.transaction(async (tx) => {
      const list: GlobalAddress[] = [];
      for (let i = 0; i < 64; i++) list.push(await tx.alloc(64));
      return list;
    });
    const big = await dsm.alloc(4096);
    const small = Buffer.alloc(64, 0xab);
    const page = Buffer.alloc(4096, 0xcd);

    // A bar over the measured rows (stderr, so --json output stays clean).
    const TX_WRITES = [1, 4, 16];
    const progress = startProgress({ label: 'bench pdsm', total: 3 + TX_WRITES.length, unit: 'rows' });
    try {
      record('raw write 64 B + persist', await measure(ops, (i) => dsm.writePersist(objects[i & 63], small)), 64);
      progress.increment(1, 'raw write 64 B');
      record('raw write 4 KiB + persist', await measure(ops, () => dsm.writePersist(big, page)), 4096);
      progress.increment(1, 'raw write 4 KiB');
      for (const writes of TX_WRITES) {
        record(`tx of ${writes} x 64-B write${writes > 1 ? 's' : ''}`, await measure(ops, async (i) => {
          const tx = dsm.begin();
          for (let w = 0; w < writes; w++) await tx.write(objects[(i * writes + w) & 63], small);
          await tx.commit();
        }));
        progress.increment(1, `tx of ${writes}`);
      }
      record('alloc + free (two tx)', await measure(ops, async () => {
        const address = await dsm.alloc(64);
        await dsm.free(address);
      }));
      progress.increment(1, 'alloc + free');
    } finally {
      progress.stop();
    }

    const results = {
      pool: { path: poolPath, flushMode: pm.flushMode, isPmem: pm.isPmem },
      limit: { storeFlushFence64NsPerOp: limitNsPerOp, memcpyPersist4kMBps: memcpy4kMBps, memcpyPersist1mMBps: memcpy1mMBps },
      rows,
      goal: { oneWriteTxTimesLimit: rows.find((row) => row.name.startsWith('tx of 1 '))!.timesLimit, target: 10 },
    };
    if (json) {
      console.log(JSON.stringify(results, null, 2));
    } else {
      console.log(`\ndpms bench pdsm  (${ops} ops each; limit = native 64-B store + flush + fence: ${limitNsPerOp.toFixed(0)} ns/op = ${(1e9 / limitNsPerOp / 1e6).toFixed(2)} Mops/s)`);
      console.log(`machine memcpy+persist bandwidth: 4 KiB chunks ${memcpy4kMBps.toFixed(0)} MB/s, 1 MiB chunks ${memcpy1mMBps.toFixed(0)} MB/s\n`);
      console.log(`${'operation'.padEnd(28)} ${'ops/s'.padStart(10)} ${'p50 us'.padStart(8)} ${'p99 us'.padStart(8)} ${'x limit (p50)'.padStart(14)} ${'MB/s'.padStart(8)} ${'of memcpy+persist'.padStart(18)}`);
      for (const row of rows) {
        const bandwidth = row.bandwidthMBps === undefined ? '' : row.bandwidthMBps.toFixed(0);
        const share = row.bandwidthMBps === undefined ? '' : `${(row.bandwidthMBps / memcpy4kMBps).toFixed(2)}x`;
        console.log(`${row.name.padEnd(28)} ${row.opsPerSecond.toFixed(0).padStart(10)} ${row.latencyUsP50.toFixed(2).padStart(8)} ${row.latencyUsP99.toFixed(2).padStart(8)} ${row.timesLimit.toFixed(2).padStart(13)}x ${bandwidth.padStart(8)} ${share.padStart(18)}`);
      }
      const goal = results.goal.oneWriteTxTimesLimit;
      console.log(`\ngoal: a 1-write transaction within 10x of the raw persist limit: ${goal.toFixed(2)}x (${goal <= 10 ? 'met' : 'missed'})`);
    }
    return EXIT.ok;
  } finally {
    await dsm.close();
    fs.rmSync(poolPath, { force: true });
  }
}
