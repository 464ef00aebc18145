// `dpms bench transport`: latency and throughput of pdsm/transport's providers against a node served
// in this process (the serving side is native: tcp's serving thread, or the RDMA device), next to
// peers measured in the same run: the addon's raw loopback TCP round trip (rawTcpBench, when the
// addon has it) and node's own `net` ping-pong with its echo server on a worker thread. It prints
// the ratios the tcp provider is held to: 8-B READ p50 within 1.5x of the raw round trip, 1-MiB
// READ bandwidth at least 0.8x of raw. That bandwidth is measured with readInto into a ring of
// preallocated 1-MiB targets (one per slot), as RDMA READs land in registered memory and as the raw
// peer receives into one buffer; the fresh-Buffer-per-read rows are printed beside it (their cost is
// mostly V8 collecting a 1-MiB ArrayBuffer per read). A program that prints numbers; tests never
// assert timings.

import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import * as native from '../../native';
import { createPoolFile, isDpmsError, type PmOps } from '../../pdsm';
import { connect, serve, type Connection, type ProviderName, type Server } from '../../pdsm/transport';
import { startProgress, type Progress } from './progress';
import { EXIT } from './run';

const MiB = 1024 * 1024;
const IN_FLIGHT = [1, 16] as const;
const POOL_BYTES = 40 * MiB;
const READ_INTO = 'read 1 MiB into buffer';

export interface TransportBenchOptions {
  readonly providers: readonly ProviderName[];
  readonly host: string;
  readonly iterations: number;
  readonly dir?: string;
  readonly json: boolean;
}

export interface Measurement {
  readonly name: string;
  readonly inFlight: number;
  readonly operations: number;
  readonly opsPerSecond: number;
  readonly latencyUsP50: number;
  readonly latencyUsP99: number;
  /** For transfers: payload bytes per second / 1e9. */
  readonly bandwidthGBps?: number;
}

type ProviderResult = { readonly available: true; readonly rows: Measurement[] } | { readonly available: false; readonly reason: string };

function sizeLabel(bytes: number): string {
  return bytes === MiB ? '1 MiB' : `${bytes} B`;
}

function summarize(name: string, inFlight: number, latenciesMs: Float64Array, elapsedMs: number, bytesPerOp?: number): Measurement {
  latenciesMs.sort();
  const at = (fraction: number): number => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(latenciesMs.length * fraction))];
  const opsPerSecond = (latenciesMs.length / elapsedMs) * 1000;
  return {
    name, inFlight, operations: latenciesMs.length, opsPerSecond,
    latencyUsP50: at(0.5) * 1000, latencyUsP99: at(0.99) * 1000,
    bandwidthGBps: bytesPerOp === undefined ? undefined : (opsPerSecond * bytesPerOp) / 1e9,
  };
}

/** `count` operations, `inFlight` at a time, after a short warm-up; op(i) gets the worker's slot. */
async function measure(name: string, inFlight: number, count: number, op: (slot: number) => Promise<unknown>, bytesPerOp?: number): Promise<Measurement> {
  const warmUp = Math.min(200, count);
  await Promise.all(Array.from({ length: inFlight }, async (_, slot) => {
    for (let i = slot; i < warmUp; i += inFlight) await op(slot);
  }));
  const latencies = new Float64Array(count);
  let issued = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async (_, slot) => {
    while (issued < count) {
      const index = issued++;
      const began = performance.now();
      await op(slot);
      latencies[index] = performance.now() - began;
    }
  }));
  return summarize(name, inFlight, latencies, performance.now() - start, bytesPerOp);
}

/** Rows benchConnection measures (a progress bar's total). */
const CONNECTION_ROWS = 6;

async function benchConnection(connection: Connection, iterations: number, bulkIterations: number, progress: Progress): Promise<Measurement[]> {
  const rows: Measurement[] = [];
  const push = (row: Measurement): void => {
    rows.push(row);
    progress.increment(1, `${row.name}, ${row.inFlight} in flight`);
  };
  const small = Buffer.alloc(64, 0x5a);
  const bulk = Buffer.alloc(MiB, 0xc3);
  // One preallocated target per slot: each slot has one READ in flight at a time.
  const targets = Array.from({ length: Math.max(...IN_FLIGHT) }, () => Buffer.alloc(MiB));
  for (const inFlight of IN_FLIGHT) {
    push(await measure('read 8 B', inFlight, iterations, (slot) => connection.read(0, slot * 64, 8)));
    push(await measure('write 64 B + persist', inFlight, iterations, (slot) => connection.writePersist(0, slot * 64, small)));
    push(await measure('CAS', inFlight, iterations, (slot) => connection.compareAndSwap(0, slot * 64, 0n, 0n)));
    push(await measure('read 1 MiB', inFlight, bulkIterations, (slot) => connection.read(0, MiB + slot * MiB, MiB), MiB));
    push(await measure(READ_INTO, inFlight, bulkIterations,
      (slot) => connection.readInto(0, MiB + slot * MiB, targets[slot], 0, MiB), MiB));
    push(await measure('write 1 MiB', inFlight, bulkIterations, (slot) => connection.write(0, MiB + slot * MiB, bulk), MiB));
  }
  return rows;
}

async function benchProvider(provider: ProviderName, host: string, poolPath: string, mapping: PmOps,
  iterations: number, bulkIterations: number, progress: Progress): Promise<ProviderResult> {
  const secret = crypto.randomBytes(32);
  let server: Server;
  try {
    server = serve({
      provider: provider === 'local' ? 'tcp' : provider, host, port: 0, secret, nodeId: 0, regions: [mapping],
      onMessage: (_connection, message, reply) => reply(message),
    });
  } catch (error) {
    if (isDpmsError(error)) return { available: false, reason: `${error.code}: ${error.message}` };
    throw error;
  }
  let connection: Connection | undefined;
  try {
    // verbs registers the pool per connection: slow under the soft-RoCE VM's CPU emulation.
    connection = await connect({ provider, host, port: server.port, secret, timeoutMs: 60_000, localRegionPaths: provider === 'local' ? [poolPath] : undefined });
    return { available: true, rows: await benchConnection(connection, iterations, bulkIterations, progress) };
  } catch (error) {
    if (isDpmsError(error) && connection === undefined) return { available: false, reason: `${error.code}: ${error.message}` };
    throw error;
  } finally {
    connection?.close();
    server.close();
  }
}

// ---- references measured in the same run ----

interface RawTcpBenchOptions {
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly iterations: number;
  readonly inFlight: number;
}

interface RawTcpBenchResult {
  readonly totalNs: number;
  readonly latenciesNs: Float64Array;
}

/** The addon's raw loopback TCP round trip (tcp_bench.cc), when this build has it. */
function rawTcp(options: RawTcpBenchOptions): Measurement | undefined {
  const rawTcpBench = (native as unknown as { rawTcpBench?: (options: RawTcpBenchOptions) => RawTcpBenchResult }).rawTcpBench;
  if (typeof rawTcpBench !== 'function') return undefined;
  rawTcpBench({ ...options, iterations: Math.min(200, options.iterations) }); // warm-up
  const result = rawTcpBench(options);
  const latenciesMs = Float64Array.from(result.latenciesNs, (ns) => ns / 1e6);
  return summarize(`tcp ${sizeLabel(options.requestBytes)} -> ${sizeLabel(options.responseBytes)}`,
    options.inFlight, latenciesMs, result.totalNs / 1e6, options.responseBytes >= MiB ? options.responseBytes : undefined);
}

// An echo server for node's own ping-pong, on a worker thread so that it has an event loop of its
// own (as the tcp provider's serving thread does). A request starts with its own length and the
// length of the response it wants, both u32 little-endian.
const ECHO_SERVER = `
const { parentPort } = require('node:worker_threads');
const net = require('node:net');
const zeros = Buffer.alloc(${4 * MiB});
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  let pending = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    while (pending.length - at >= 8 && pending.length - at >= pending.readUInt32LE(at)) {
      const responseBytes = pending.readUInt32LE(at + 4);
      at += pending.readUInt32LE(at);
      socket.write(zeros.subarray(0, responseBytes));
    }
    pending = pending.subarray(at);
  });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

async function netPingPong(port: number, requestBytes: number, responseBytes: number, iterations: number, inFlight: number): Promise<Measurement> {
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const request = Buffer.alloc(requestBytes);
  request.writeUInt32LE(requestBytes, 0);
  request.writeUInt32LE(responseBytes, 4);
  try {
    const run = (count: number): Promise<{ latencies: Float64Array; elapsedMs: number }> => new Promise((resolve) => {
      const latencies = new Float64Array(count);
      const starts: number[] = [];
      let issued = 0;
      let completed = 0;
      let received = 0;
      const start = performance.now();
      const issue = (): void => {
        issued++;
        starts.push(performance.now());
        socket.write(request);
      };
      const onData = (chunk: Buffer): void => {
        received += chunk.length;
        while (received >= responseBytes) {
          received -= responseBytes;
          latencies[completed++] = performance.now() - starts.shift()!;
          if (issued < count) issue();
          if (completed === count) {
            socket.off('data', onData);
            resolve({ latencies, elapsedMs: performance.now() - start });
            return;
          }
        }
      };
      socket.on('data', onData);
      for (let i = 0; i < Math.min(inFlight, count); i++) issue();
    });
    await run(Math.min(200, iterations));
    const { latencies, elapsedMs } = await run(iterations);
    return summarize(`node net ${sizeLabel(requestBytes)} -> ${sizeLabel(responseBytes)}`, inFlight, latencies, elapsedMs, responseBytes >= MiB ? responseBytes : undefined);
  } finally {
    socket.destroy();
  }
}

async function nodeNetReference(iterations: number, bulkIterations: number, progress: Progress): Promise<Measurement[]> {
  const worker = new Worker(ECHO_SERVER, { eval: true });
  try {
    const port = await new Promise<number>((resolve, reject) => worker.once('message', resolve).once('error', reject));
    const rows: Measurement[] = [];
    for (const inFlight of IN_FLIGHT) {
      rows.push(await netPingPong(port, 32, 24, iterations, inFlight));
      progress.increment(1, `node net, ${inFlight} in flight`);
      rows.push(await netPingPong(port, 32, MiB, bulkIterations, inFlight));
      progress.increment(1, `node net bulk, ${inFlight} in flight`);
    }
    return rows;
  } finally {
    await worker.terminate();
  }
}

// ---- the command ----

function formatRow(label: string, row: Measurement): string {
  const bandwidth = row.bandwidthGBps === undefined ? '' : row.bandwidthGBps.toFixed(2);
  return `${label.padEnd(9)} ${row.name.padEnd(24)} ${String(row.inFlight).padStart(9)} ${row.opsPerSecond.toFixed(0).padStart(10)} ` +
    `${row.latencyUsP50.toFixed(1).padStart(9)} ${row.latencyUsP99.toFixed(1).padStart(9)} ${bandwidth.padStart(7)}`;
}

function find(rows: readonly Measurement[] | undefined, name: string, inFlight: number): Measurement | undefined {
  return rows?.find((row) => row.name === name && row.inFlight === inFlight);
}

export async function benchTransport(options: TransportBenchOptions): Promise<number> {
  if (!Number.isInteger(options.iterations) || options.iterations < 10) {
    console.error('dpms: --iterations must be an integer of at least 10');
    return EXIT.usage;
  }
  const iterations = options.iterations;
  // Enough 1-MiB operations that a GC pause or a scheduling hiccup does not decide the ratio.
  const bulkIterations = Math.max(64, Math.floor(iterations / 10));
  const base = options.dir ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
  const poolPath = path.join(base, `dpms-bench-transport-${process.pid}.pool`);
  fs.rmSync(poolPath, { force: true });
  const providers: Partial<Record<ProviderName, ProviderResult>> = {};
  let mapping: PmOps | undefined;
  try {
    mapping = createPoolFile(poolPath, POOL_BYTES);
    mapping.buffer.fill(0); // touch every page now, not during the first measurement
    for (const provider of options.providers) {
      // A bar per provider (stderr), in measured rows; an unavailable provider stops it short.
      const progress = startProgress({ label: `measuring ${provider}`, total: CONNECTION_ROWS * IN_FLIGHT.length, unit: 'rows' });
      try {
        const result = await benchProvider(provider, options.host, poolPath, mapping, iterations, bulkIterations, progress);
        if (!result.available) progress.update(0, 'unavailable (see the table)');
        providers[provider] = result;
      } finally {
        progress.stop();
      }
    }
  } finally {
    mapping?.close();
    fs.rmSync(poolPath, { force: true });
  }

  const references = startProgress({ label: 'measuring the references', total: 2 + 2 * IN_FLIGHT.length, unit: 'rows' });
  let rawLatency: Measurement | undefined;
  let rawBulk: Measurement | undefined;
  let nodeNet: Measurement[];
  try {
    // Frame-sized peers: a tcp READ request is a 32-B header, its 8-B answer a 16-B header + 8 B.
    rawLatency = rawTcp({ requestBytes: 32, responseBytes: 24, iterations, inFlight: 1 });
    references.increment(1, 'raw tcp round trip');
    rawBulk = rawTcp({ requestBytes: 32, responseBytes: MiB, iterations: bulkIterations, inFlight: 16 });
    references.increment(1, 'raw tcp bulk');
    nodeNet = await nodeNetReference(iterations, bulkIterations, references);
  } finally {
    references.stop();
  }

  const tcpRows = providers.tcp?.available ? providers.tcp.rows : undefined;
  const tcpRead = find(tcpRows, 'read 8 B', 1);
  const tcpBulk = find(tcpRows, READ_INTO, 16);
  const tcpBulkFresh = find(tcpRows, 'read 1 MiB', 16);
  const rawLatencyUs = rawLatency?.latencyUsP50 ?? find(nodeNet, 'node net 32 B -> 24 B', 1)?.latencyUsP50;
  const rawBulkGBps = rawBulk?.bandwidthGBps ?? find(nodeNet, 'node net 32 B -> 1 MiB', 16)?.bandwidthGBps;
  const peer = rawLatency !== undefined ? 'raw tcp (native)' : 'node net (no native rawTcpBench in this build)';
  const ratios = {
    peer,
    readLatencyTimesRaw: tcpRead && rawLatencyUs ? tcpRead.latencyUsP50 / rawLatencyUs : undefined,
    readLatencyGoal: 1.5,
    /** READs into caller buffers (readInto), 16 in flight: the goal's measure. */
    bandwidthOfRaw: tcpBulk?.bandwidthGBps && rawBulkGBps ? tcpBulk.bandwidthGBps / rawBulkGBps : undefined,
    bandwidthGoal: 0.8,
    /** READs that each return a fresh Buffer, 16 in flight: for comparison. */
    freshBufferBandwidthOfRaw: tcpBulkFresh?.bandwidthGBps && rawBulkGBps ? tcpBulkFresh.bandwidthGBps / rawBulkGBps : undefined,
  };

  if (options.json) {
    console.log(JSON.stringify({ iterations, bulkIterations, host: options.host, providers, reference: { rawTcp: { latency: rawLatency, bulk: rawBulk }, nodeNet }, ratios }, null, 2));
    return EXIT.ok;
  }
  console.log(`\ndpms bench transport  (${iterations} ops per small-op row, ${bulkIterations} per 1-MiB row; node on ${options.host}, served in this process)\n`);
  console.log(`${'provider'.padEnd(9)} ${'operation'.padEnd(24)} ${'in flight'.padStart(9)} ${'ops/s'.padStart(10)} ${'p50 us'.padStart(9)} ${'p99 us'.padStart(9)} ${'GB/s'.padStart(7)}`);
  for (const [provider, result] of Object.entries(providers)) {
    if (!result.available) {
      console.log(`${provider.padEnd(9)} unavailable: ${result.reason}`);
      continue;
    }
    for (const row of result.rows) console.log(formatRow(provider, row));
  }
  for (const row of [rawLatency, rawBulk]) if (row !== undefined) console.log(formatRow('raw', row));
  for (const row of nodeNet) console.log(formatRow('reference', row));
  const verdict = (value: number | undefined, goal: number, atMost: boolean): string => (value === undefined
    ? 'not measured'
    : `${value.toFixed(2)}x (goal ${atMost ? '<=' : '>='} ${goal}x: ${(atMost ? value <= goal : value >= goal) ? 'met' : 'missed'})`);
  console.log(`\nagainst ${peer}:`);
  console.log(`  tcp 8-B READ p50 / raw round trip p50: ${verdict(ratios.readLatencyTimesRaw, 1.5, true)}`);
  console.log('  tcp 1-MiB READ (into caller buffers, as RDMA READs land in registered memory) bandwidth (16 in flight) / raw: ' +
    verdict(ratios.bandwidthOfRaw, 0.8, false));
  const fresh = ratios.freshBufferBandwidthOfRaw;
  console.log(`  tcp 1-MiB READ (a fresh Buffer per read) bandwidth (16 in flight) / raw: ${fresh === undefined ? 'not measured' : `${fresh.toFixed(2)}x`}` +
    ' (for comparison: includes collecting a 1-MiB result per read)');
  return EXIT.ok;
}
