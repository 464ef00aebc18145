// The RESP gateway: serves one KvStore to Redis clients (redis-cli, ioredis, redis-benchmark) over
// TCP, speaking RESP2 (resp.ts) and the commands of resp-data-commands.ts and resp-commands.ts.
//
// Each connection's requests are answered strictly in order, but not run one at a time: a request
// starts as soon as it is parsed unless it touches a key that an earlier, unfinished request of the
// same connection writes (or writes a key one reads, or is a whole-keyspace command), so a pipeline of
// independent SETs becomes concurrent store operations that the store group-commits, while SET k then
// GET k still reads its own write. Replies wait in a queue until every earlier one is written.
// Everything a connection holds is bounded (requests queued, requests in flight, bytes waiting in the
// socket, SCAN cursors); reading pauses when a bound is reached. Malformed input gets Redis's
// "-ERR Protocol error: ..." and the connection is closed; nothing a client sends can stop the gateway.

import net from 'node:net';
import { collectedCounter, collectedGauge, DpmsError, isDpmsError, OperationMetrics, type Registry } from '../pdsm';
import {
  arityError, failureReply, unknownCommandError,
  type CommandSpec, type GatewayClient, type GatewayCommandLimits, type GatewayContext, type GatewayStats, type KeyAccess,
} from './resp-command-spec';
import { COMMANDS } from './resp-commands';
import { errorReply, OK_REPLY, RESP_LIMITS, RespRequestParser, type RespLimits } from './resp';
import type { KvStore } from './store';
import { KV_LIMITS } from './types';

export interface RespGatewayOptions {
  /** Parser limits (request size, bulk size, array length, inline line length). */
  readonly limits?: Partial<RespLimits>;
  /** Connections served at once; more are told "max number of clients reached" (default 10000, as Redis). */
  readonly maxConnections?: number;
  /** Requests of one connection running against the store at once (default 64). */
  readonly maxInFlightPerConnection?: number;
  /** Requests of one connection parsed but not yet answered before reading pauses (default 1024). */
  readonly maxQueuedPerConnection?: number;
  /** Reply bytes waiting in one socket before the gateway stops starting requests and reading (default 8 MiB). */
  readonly maxOutputBytesPerConnection?: number;
  readonly maxScanCursorsPerConnection?: number;
  /** Largest COUNT a SCAN honours (default 10000; a larger one is lowered, SCAN may return fewer). */
  readonly maxScanCount?: number;
  /** Most keys KEYS returns (default 100000; more is an error pointing to SCAN). */
  readonly maxKeysReply?: number;
  /** Most keys one DEL, EXISTS, MGET or MSET names (default KV_LIMITS.maxBatchOperations). */
  readonly maxKeysPerCommand?: number;
  /** Most value bytes one MGET returns (default 64 MiB). */
  readonly maxMgetBytes?: number;
  /** How long close() waits for requests in flight to finish before returning (default 10 s). */
  readonly closeTimeoutMs?: number;
  /** Where the gateway reports internal errors (default: stderr). */
  readonly log?: (line: string) => void;
  /** Count and time every command into this registry (dpms_gateway_*). */
  readonly metrics?: Registry;
}

export interface RespGatewayListenOptions {
  /** 0 (the default) picks a free port; read it from the result or from `port`. */
  readonly port?: number;
  readonly host?: string;
}

const DEFAULTS = {
  maxConnections: 10_000,
  maxInFlightPerConnection: 64,
  maxQueuedPerConnection: 1024,
  maxOutputBytesPerConnection: 8 * 1024 * 1024,
  maxScanCursorsPerConnection: 256,
  maxScanCount: 10_000,
  maxKeysReply: 100_000,
  maxKeysPerCommand: KV_LIMITS.maxBatchOperations,
  maxMgetBytes: 64 * 1024 * 1024,
  closeTimeoutMs: 10_000,
} as const;

/** How long a connection we closed after an error may linger for the peer to close its side. */
const LINGER_MS = 2000;

/** One request from arrival to the moment its reply is written. */
interface Pending {
  readonly args: readonly Buffer[];
  readonly command: CommandSpec | undefined;
  readonly access: KeyAccess;
  reply: Buffer | undefined;
  /** Close the connection once this reply is written (QUIT, protocol errors). */
  readonly closeAfter: boolean;
  /** When the request was parsed (OperationMetrics.now()), for its latency; 0n when not measured. */
  readonly startedNs: bigint;
}

/** What the metrics of one gateway count, shared by its connections. */
interface GatewayObserver {
  readonly operations: OperationMetrics;
  /** Bytes read from and written to client sockets. */
  bytesIn: number;
  bytesOut: number;
}

/** The error prefix of a RESP error reply ("-WRONGTYPE Operation..." -> "WRONGTYPE"), or undefined. */
function errorPrefix(reply: Buffer): string | undefined {
  if (reply[0] !== 0x2d) return undefined;
  let end = 1;
  while (end < reply.length && end < 33 && reply[end] !== 0x20 && reply[end] !== 0x0d) end++;
  return reply.toString('latin1', 1, end) || 'ERR';
}

export class RespGateway {
  private server: net.Server | undefined;
  private readonly connections = new Set<Connection>();
  private nextClientId = 1;
  private closing = false;
  private readonly options: Required<Omit<RespGatewayOptions, 'limits' | 'log' | 'metrics'>>;
  private readonly observer: GatewayObserver | undefined;
  readonly context: GatewayContext;

  constructor(readonly store: KvStore, options: RespGatewayOptions = {}) {
    this.options = {
      maxConnections: options.maxConnections ?? DEFAULTS.maxConnections,
      maxInFlightPerConnection: options.maxInFlightPerConnection ?? DEFAULTS.maxInFlightPerConnection,
      maxQueuedPerConnection: options.maxQueuedPerConnection ?? DEFAULTS.maxQueuedPerConnection,
      maxOutputBytesPerConnection: options.maxOutputBytesPerConnection ?? DEFAULTS.maxOutputBytesPerConnection,
      maxScanCursorsPerConnection: options.maxScanCursorsPerConnection ?? DEFAULTS.maxScanCursorsPerConnection,
      maxScanCount: options.maxScanCount ?? DEFAULTS.maxScanCount,
      maxKeysReply: options.maxKeysReply ?? DEFAULTS.maxKeysReply,
      maxKeysPerCommand: options.maxKeysPerCommand ?? DEFAULTS.maxKeysPerCommand,
      maxMgetBytes: options.maxMgetBytes ?? DEFAULTS.maxMgetBytes,
      closeTimeoutMs: options.closeTimeoutMs ?? DEFAULTS.closeTimeoutMs,
    };
    for (const [name, value] of Object.entries(this.options)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new DpmsError('DPMS_INVALID_ARGUMENT', `RespGateway option ${name} must be a positive integer, got ${value}`);
    }
    const limits: RespLimits & GatewayCommandLimits = {
      ...RESP_LIMITS,
      ...options.limits,
      maxConnections: this.options.maxConnections,
      maxScanCursors: this.options.maxScanCursorsPerConnection,
      maxScanCount: this.options.maxScanCount,
      maxKeysReply: this.options.maxKeysReply,
      maxKeysPerCommand: this.options.maxKeysPerCommand,
      maxMgetBytes: this.options.maxMgetBytes,
    };
    const log = options.log ?? ((line: string) => console.error(`dpms kv gateway: ${line}`));
    const stats: GatewayStats = { connectionsReceived: 0, rejectedConnections: 0, commandsProcessed: 0, protocolErrors: 0 };
    const gateway = this;
    this.context = {
      store,
      get port() {
        return gateway.port;
      },
      startedMs: Date.now(),
      stats,
      limits,
      clients: () => [...this.connections].map((connection) => connection.client),
      log,
    };
    if (options.metrics) this.observer = this.registerMetrics(options.metrics);
  }

  private registerMetrics(registry: Registry): GatewayObserver {
    // Label values: the known command names, else "unknown" (nothing a client sends adds labels).
    const observer: GatewayObserver = { operations: new OperationMetrics(registry, 'gateway', { ops: [...COMMANDS.keys()] }), bytesIn: 0, bytesOut: 0 };
    const stats = this.context.stats;
    collectedGauge(registry, { name: 'dpms_gateway_connections', help: 'Client connections open now.', collect: () => this.connections.size });
    collectedCounter(registry, { name: 'dpms_gateway_connections_received_total', help: 'Client connections accepted.', collect: () => stats.connectionsReceived });
    collectedCounter(registry, { name: 'dpms_gateway_connections_rejected_total', help: 'Client connections refused (max clients reached, closing).', collect: () => stats.rejectedConnections });
    collectedCounter(registry, { name: 'dpms_gateway_protocol_errors_total', help: 'Malformed requests (each closed its connection).', collect: () => stats.protocolErrors });
    collectedCounter(registry, {
      name: 'dpms_gateway_network_bytes_total', help: 'Bytes read from (in) and written to (out) client sockets.', labelNames: ['direction'],
      collect: () => [[{ direction: 'in' }, observer.bytesIn], [{ direction: 'out' }, observer.bytesOut]],
    });
    return observer;
  }

  /** The port the gateway listens on (0 before start()). */
  get port(): number {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address.port : 0;
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  get stats(): Readonly<GatewayStats> {
    return { ...this.context.stats };
  }

  /** Listen; resolves with the port once connections are accepted. */
  async start(options: RespGatewayListenOptions = {}): Promise<number> {
    if (this.server || this.closing) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'RespGateway.start() may be called once');
    // Half-open: a client that sends its requests and then shuts down its side (printf ... | nc -N)
    // still gets every reply; the connection ends after the last one.
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error: NodeJS.ErrnoException) => {
      this.server = undefined;
      throw new DpmsError('DPMS_IO', `cannot listen on ${options.host ?? '127.0.0.1'}:${options.port ?? 0}: ${error.message}`, { cause: error });
    });
    server.on('error', (error) => this.context.log(`listening socket: ${error.message}`));
    return this.port;
  }

  /**
   * Stop accepting connections, close every open one, and wait (up to closeTimeoutMs) for requests
   * already running against the store to finish, so that the store can be closed afterwards.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const server = this.server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const idle = [...this.connections].map((connection) => connection.shutdown());
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.closeTimeoutMs);
      timer.unref();
    });
    await Promise.race([Promise.all([closed, ...idle]), timeout]);
    clearTimeout(timer);
  }

  private accept(socket: net.Socket): void {
    const stats = this.context.stats;
    socket.on('error', () => {
      // Resets and the like: 'close' follows, which is where the connection is forgotten.
    });
    if (this.closing || this.connections.size >= this.options.maxConnections) {
      stats.rejectedConnections++;
      socket.end(errorReply('ERR max number of clients reached'));
      return;
    }
    stats.connectionsReceived++;
    const connection = new Connection(this.nextClientId++, socket, this.context, this.options, this.observer);
    this.connections.add(connection);
    socket.once('close', () => this.connections.delete(connection));
  }
}

/** One client connection: parse, schedule, run and answer in order. */
class Connection {
  readonly client: GatewayClient;
  private readonly parser: RespRequestParser;
  /** Every request not yet answered, in arrival order. */
  private readonly replies: Pending[] = [];
  /** Requests not yet started, in arrival order (a suffix of `replies`, less those answered at once). */
  private readonly waiting: Pending[] = [];
  private inFlight = 0;
  /** Keys read and written by requests in flight (latin1 strings map bytes one to one), with counts. */
  private readonly readingKeys = new Map<string, number>();
  private readonly writingKeys = new Map<string, number>();
  private readingAll = 0;
  private writingAll = 0;
  private storeRequests = 0;
  private writeRequests = 0;
  /** No further requests are accepted: QUIT or a protocol error was seen, or the gateway is closing. */
  private closing = false;
  private ended = false;
  private readPaused = false;
  private pumping = false;
  private flushScheduled = false;
  private pumpAgain = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    id: number,
    private readonly socket: net.Socket,
    private readonly context: GatewayContext,
    private readonly options: Required<Omit<RespGatewayOptions, 'limits' | 'log' | 'metrics'>>,
    private readonly observer: GatewayObserver | undefined,
  ) {
    const now = Date.now();
    this.client = {
      id,
      name: '',
      remoteAddress: `${socket.remoteAddress}:${socket.remotePort}`,
      localAddress: `${socket.localAddress}:${socket.localPort}`,
      createdMs: now,
      lastCommandMs: now,
      lastCommand: 'NULL',
      scanCursors: new Map(),
      nextScanCursor: 1n,
    };
    this.parser = new RespRequestParser(context.limits);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.pump());
    socket.once('end', () => {
      if (this.closing) return;
      this.enqueueFinal(Buffer.alloc(0));
      this.pump();
    });
    socket.once('close', () => {
      this.closing = true;
      this.ended = true;
      this.waiting.length = 0;
      this.checkIdle();
    });
  }

  /** Close now (the gateway is stopping); resolves when no request of this connection is running. */
  shutdown(): Promise<void> {
    this.closing = true;
    this.ended = true;
    this.waiting.length = 0;
    this.socket.destroy();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.checkIdle();
    });
  }

  private checkIdle(): void {
    if (this.inFlight > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private onData(chunk: Buffer): void {
    // After QUIT or an error, whatever else arrives is read and dropped, so that the peer's unread
    // bytes do not turn our close into a reset that could destroy the reply before it is read.
    if (this.closing) return;
    if (this.observer) this.observer.bytesIn += chunk.length;
    try {
      this.parser.push(chunk, (args) => this.accept(args));
    } catch (error) {
      if (isDpmsError(error, 'DPMS_PROTOCOL')) {
        this.context.stats.protocolErrors++;
        this.enqueueFinal(errorReply(`ERR ${error.message}`));
      } else {
        this.enqueueFinal(failureReply(error, this.context));
      }
    }
    this.pump();
  }

  /** Queue the last reply of this connection; it is closed once the reply is written. */
  private enqueueFinal(reply: Buffer, request?: { readonly args: Buffer[]; readonly command: CommandSpec; readonly startedNs: bigint }): void {
    this.closing = true;
    this.replies.push({ args: request?.args ?? [], command: request?.command, access: {}, reply, closeAfter: true, startedNs: request?.startedNs ?? 0n });
  }

  private accept(args: Buffer[]): void {
    if (this.closing) return;
    this.context.stats.commandsProcessed++;
    const startedNs = this.observer ? OperationMetrics.now() : 0n;
    const name = args[0]!.toString('latin1').toLowerCase();
    const command = COMMANDS.get(name);
    this.client.lastCommandMs = Date.now();
    if (!command) {
      this.replies.push({ args, command, access: {}, reply: unknownCommandError(args), closeAfter: false, startedNs });
      return;
    }
    this.client.lastCommand = command.subcommands && args.length > 1 ? `${name}|${args[1]!.toString('latin1').toLowerCase().slice(0, 32)}` : name;
    if ((command.arity > 0 && args.length !== command.arity) || args.length < -command.arity) {
      this.replies.push({ args, command, access: {}, reply: arityError(command.name), closeAfter: false, startedNs });
      return;
    }
    if (name === 'quit') {
      this.enqueueFinal(OK_REPLY, { args, command, startedNs });
      return;
    }
    const pending: Pending = { args, command, access: command.access(args), reply: undefined, closeAfter: false, startedNs };
    this.replies.push(pending);
    this.waiting.push(pending);
  }

  /** Start what may start, write what is answered, and pause or resume reading. Re-entrant safe. */
  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        while (this.waiting.length > 0 && this.inFlight < this.options.maxInFlightPerConnection && !this.outputFull()) {
          const next = this.waiting[0]!;
          // Head-of-line: a request that must wait holds back the ones after it, which keeps the
          // order simple to reason about (a later request never overtakes a waiting one).
          if (this.conflicts(next.access)) break;
          this.waiting.shift();
          this.start(next);
        }
        this.scheduleFlush();
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
    this.updateReading();
  }

  private outputFull(): boolean {
    return this.socket.writableLength > this.options.maxOutputBytesPerConnection;
  }

  private start(pending: Pending): void {
    this.hold(pending.access, 1);
    this.inFlight++;
    let result: Buffer | Promise<Buffer>;
    try {
      result = pending.command!.run(this.context, this.client, pending.args);
    } catch (error) {
      result = failureReply(error, this.context);
    }
    if (result instanceof Promise) {
      result.then(
        (reply) => this.finish(pending, reply),
        (error: unknown) => this.finish(pending, failureReply(error, this.context)),
      );
    } else {
      this.finish(pending, result);
    }
  }

  private finish(pending: Pending, reply: Buffer): void {
    this.hold(pending.access, -1);
    this.inFlight--;
    pending.reply = reply;
    if (this.inFlight === 0) this.checkIdle();
    if (!this.ended) this.pump();
  }

  /** Would this request see or disturb a request of this connection that is still running? */
  private conflicts(access: KeyAccess): boolean {
    const reads = access.reads ?? [];
    const writes = access.writes ?? [];
    if (!access.all && reads.length === 0 && writes.length === 0) return false;
    if (this.writingAll > 0) return true;
    if (access.all === 'write') return this.storeRequests > 0;
    if (access.all === 'read') return this.writeRequests > 0;
    if (writes.length > 0 && this.readingAll > 0) return true;
    for (const key of reads) if (this.writingKeys.has(key.toString('latin1'))) return true;
    for (const key of writes) {
      const name = key.toString('latin1');
      if (this.writingKeys.has(name) || this.readingKeys.has(name)) return true;
    }
    return false;
  }

  /** Record (delta 1) or release (delta -1) what a running request touches. */
  private hold(access: KeyAccess, delta: 1 | -1): void {
    const reads = access.reads ?? [];
    const writes = access.writes ?? [];
    if (!access.all && reads.length === 0 && writes.length === 0) return;
    this.storeRequests += delta;
    if (access.all === 'read') this.readingAll += delta;
    if (access.all === 'write') this.writingAll += delta;
    if (access.all === 'write' || writes.length > 0) this.writeRequests += delta;
    for (const key of reads) count(this.readingKeys, key.toString('latin1'), delta);
    for (const key of writes) count(this.writingKeys, key.toString('latin1'), delta);
  }

  /**
   * Flush once per turn of the event loop: replies of pipelined requests finish one by one (each in
   * its own microtask), and a write per reply was a syscall per reply.
   */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Write every answered reply at the head of the queue, in one corked batch. */
  private flush(): void {
    if (this.ended || this.replies.length === 0 || this.replies[0]!.reply === undefined) return;
    this.socket.cork();
    let closeAfter = false;
    while (this.replies.length > 0 && this.replies[0]!.reply !== undefined) {
      const pending = this.replies.shift()!;
      this.socket.write(pending.reply!);
      if (this.observer) this.observe(this.observer, pending);
      if (pending.closeAfter) {
        closeAfter = true;
        break;
      }
    }
    this.socket.uncork();
    if (closeAfter) this.endAfterReply();
  }

  /** A reply is written: count its command (latency from parse to write, as the client sees it). */
  private observe(observer: GatewayObserver, pending: Pending): void {
    const reply = pending.reply!;
    observer.bytesOut += reply.length;
    // Final replies to protocol errors and end of input carry no request.
    if (pending.args.length === 0) return;
    let bytesIn = 0;
    for (const arg of pending.args) bytesIn += arg.length;
    observer.operations.observeSince(pending.command ? pending.command.name : 'unknown', pending.startedNs, { bytesIn, bytesOut: reply.length, error: errorPrefix(reply) });
  }

  private endAfterReply(): void {
    this.ended = true;
    this.replies.length = 0;
    this.waiting.length = 0;
    // Keep reading (and dropping) until the peer closes too, but not forever.
    if (this.readPaused) {
      this.socket.resume();
      this.readPaused = false;
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private updateReading(): void {
    if (this.ended) return;
    const pause = this.replies.length >= this.options.maxQueuedPerConnection || this.outputFull();
    if (pause && !this.readPaused) {
      this.socket.pause();
      this.readPaused = true;
    } else if (!pause && this.readPaused) {
      this.socket.resume();
      this.readPaused = false;
    }
  }
}

function count(map: Map<string, number>, key: string, delta: number): void {
  const next = (map.get(key) ?? 0) + delta;
  if (next === 0) map.delete(key);
  else map.set(key, next);
}
