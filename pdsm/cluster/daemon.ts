// The node daemon (`dpms node start`): serves one node's pool to the cluster and runs the work that
// needs the node's CPU. The data path is one-sided: clients read, write and CAS the pool and the lock
// table through the transport without this code running. What runs here is the control plane:
//   - sessions: a client says hello, gets log lanes, and keeps a lease alive (heartbeats); a session
//     ends when its connection drops or its lease runs out (then the connection is cut: a fence);
//   - level-1 allocation: chunks granted to clients (and chunks of dead clients handed on);
//   - recovery: at start (redo logs replayed by PoolNode.open, in-doubt participants held), and when
//     a client dies: its lanes are settled (committed logs applied, uncommitted ones voided,
//     distributed ones decided with their coordinator) before its locks are cleared;
//   - the coordinator side of distributed transactions: decisions by CAS, and pushing outcomes to
//     participants until each confirms.

import fs from 'node:fs';
import { createPoolFile, openPoolFile, type PmOps } from '../pmem';
import { DpmsError, isDpmsError } from '../errors';
import { CommitFlags, Decision, decisionGeneration, RECORD, RECORD_HEADER_BYTES, RecordOp, readU64, LANE, laneOffset } from '../layout';
import { inspectLane, participantsOf, type LaneState } from '../log';
import { silentLogger, type Logger } from '../logger';
import { collectedCounter, collectedGauge, infoGauge, OperationMetrics, MAX_LABEL_VALUES, type Registry } from '../metrics';
import { PoolNode } from '../node';
import { lockFile, openPool, type FileLock, type PmMapping } from '../../native';
import { connect, serve, type Connection, type Server } from '../transport';
import { lockTablePath, nodeConfig, type ClusterConfig, type NodeConfig } from './config';
import {
  decodeReply, decodeRequest, encodeMessage, LOCK_TABLE_BYTES, LOCK_WORDS, lockOffsets, lockTag, NODE_HOLDER_ID,
  MAX_LISTED_CLIENTS, tagClientId, type ChunkGrant, type ClientInfo, type HelloReply, type LaneGrant, type NodeStatus, type Request,
} from './protocol';

export interface DaemonOptions {
  readonly config: ClusterConfig;
  readonly nodeId: number;
  /** Port to listen on instead of the configured one (0: any; tests). */
  readonly portOverride?: number;
  /** Structured log (start, stop, recovery, expired leases, failures); none when not given. */
  readonly logger?: Logger;
  /** Where the node's metrics go (served by the caller on /metrics); none when not given. */
  readonly metrics?: Registry;
  /** The URL the metrics are served at, told to clients in status. */
  readonly metricsUrl?: string;
}

/** The RPC operations, the label values of dpms_node_operations_total (anything else is "unknown"). */
const RPC_OPS: readonly Request['op'][] = ['hello', 'heartbeat', 'bye', 'allocChunk', 'releaseChunk', 'decision', 'resolve', 'status'];
/** How long one status snapshot serves scrapes (every gauge of a scrape reads the same one). */
const SNAPSHOT_MS = 100;

interface Session {
  readonly connection: number;
  readonly clientId: number;
  readonly lanes: number[];
  readonly info: ClientInfo;
  readonly connectedMs: number;
  lastSeenMs: number;
}

/** A prepared log here whose outcome its coordinator decides. */
interface InDoubt {
  readonly lane: number;
  readonly state: LaneState;
  /** The client whose locks protect the log's targets (NODE_HOLDER_ID after a restart). */
  readonly holderId: number;
  /** Lock words this node took itself (after a restart), released once resolved. */
  readonly heldLocks: number[];
}

/** A coordinator lane whose decision not every participant has confirmed yet. */
interface Unconfirmed {
  readonly lane: number;
  readonly generation: number;
  readonly committed: boolean;
  readonly participants: number[];
}

const RESOLVE_INTERVAL_MS = 250;
const MAX_LANES_PER_CLIENT = 4;

export class NodeDaemon {
  private readonly sessions = new Map<number, Session>();
  private readonly clients = new Map<number, Session>();
  private readonly inDoubt: InDoubt[] = [];
  private readonly unconfirmed: Unconfirmed[] = [];
  /** Dead clients whose locks stay until their in-doubt logs here are resolved. */
  private readonly deadHolders = new Set<number>();
  private readonly peers = new Map<number, Promise<Connection>>();
  private readonly timer: NodeJS.Timeout;
  private readonly startedMs = Date.now();
  private resolving = false;
  private stopped = false;
  private readonly operations: OperationMetrics | undefined;
  private snapshot: { readonly atMs: number; readonly status: NodeStatus } | undefined;
  readonly server: Server;

  private constructor(
    readonly config: ClusterConfig,
    readonly node: NodeConfig,
    readonly pool: PoolNode,
    private readonly locks: PmMapping,
    private readonly poolLock: FileLock,
    portOverride: number | undefined,
    private readonly logger: Logger,
    metrics: Registry | undefined,
    private readonly metricsUrl: string | undefined,
  ) {
    for (const state of pool.recovery.inDoubt) {
      const heldLocks = this.lockTargets(state, lockTag(NODE_HOLDER_ID, state.lane));
      this.inDoubt.push({ lane: state.lane, state, holderId: NODE_HOLDER_ID, heldLocks });
    }
    for (let lane = 0; lane < pool.layout.laneCount; lane++) this.noteUnconfirmed(lane);
    this.server = serve({
      provider: node.transport === 'verbs' ? 'verbs' : 'tcp',
      host: node.host,
      port: portOverride ?? node.port,
      secret: config.secret,
      nodeId: node.id,
      regions: [pool.pm as PmMapping, locks],
      onMessage: (connection, message, reply) => {
        const startedNs = OperationMetrics.now();
        let op = 'invalid';
        new Promise<object>((resolve) => {
          const request = decodeRequest(message);
          op = request.op;
          resolve(this.handle(connection, request));
        }).then(
          (answer) => {
            const encoded = encodeMessage({ ok: true, ...answer });
            this.operations?.observeSince(op, startedNs, { bytesIn: message.length, bytesOut: encoded.length });
            reply(encoded);
          },
          (error: unknown) => {
            const code = isDpmsError(error) ? error.code : 'DPMS_IO';
            if (!isDpmsError(error)) this.logger.error({ err: error, op }, 'error serving a request');
            const encoded = encodeMessage({ ok: false, code, message: (error as Error).message });
            this.operations?.observeSince(op, startedNs, { bytesIn: message.length, bytesOut: encoded.length, error: code });
            reply(encoded);
          });
      },
      onClose: (connection, reason) => this.endSession(connection, reason),
    });
    this.timer = setInterval(() => this.tick(), RESOLVE_INTERVAL_MS);
    if (metrics) {
      // 'invalid': a request that could not be decoded.
      this.operations = new OperationMetrics(metrics, 'node', { ops: [...RPC_OPS, 'invalid'] });
      this.registerMetrics(metrics);
    }
    this.logger.info({
      pool: node.pool, poolBytes: pool.layout.poolBytes, transport: node.transport, host: node.host, port: this.server.port,
      recovery: { replayed: pool.recovery.replayed, discarded: pool.recovery.discarded, inDoubt: this.inDoubt.length, unconfirmed: this.unconfirmed.length },
    }, `node ${node.id} serving ${node.pool} (${pool.layout.poolBytes} B) over ${node.transport} on ${node.host}:${this.server.port}; ` +
      `recovery replayed ${pool.recovery.replayed}, discarded ${pool.recovery.discarded}, in doubt ${this.inDoubt.length}, unconfirmed ${this.unconfirmed.length}`);
  }

  /** Open (creating and formatting it if missing) the node's pool, recover it, and serve it. */
  static async start(options: DaemonOptions): Promise<NodeDaemon> {
    const node = nodeConfig(options.config, options.nodeId);
    // One process serves a pool: a second `dpms node start` (or dpms up) on it stops here instead of
    // replaying logs under the first one's feet. The kernel drops the lock when the process dies.
    const exists = fs.existsSync(node.pool);
    let pm: PmOps | undefined;
    let poolLock: FileLock | undefined;
    try {
      if (!exists) pm = createPoolFile(node.pool, node.sizeBytes);
      poolLock = lockFile(node.pool);
      if (!poolLock) throw new DpmsError('DPMS_BUSY', `pool ${node.pool} is served by another process (is node ${node.id} already running?)`);
      if (pm) PoolNode.format(pm, { nodeId: node.id, laneCount: node.lanes });
      else pm = openPoolFile(node.pool);
    } catch (error) {
      pm?.close();
      poolLock?.release();
      throw error;
    }
    let pool: PoolNode;
    try {
      pool = PoolNode.open(pm, { nodeId: node.id, allowInDoubt: true });
    } catch (error) {
      pm.close();
      poolLock.release();
      throw error;
    }
    // The lock table is volatile by design: a restart forgets every lock, because every client of
    // the node lost its session (and in-doubt ranges are re-locked by the node itself).
    const lockPath = lockTablePath(node);
    fs.rmSync(lockPath, { force: true });
    const locks = openPool(lockPath, { createSizeBytes: LOCK_TABLE_BYTES });
    try {
      return new NodeDaemon(options.config, node, pool, locks, poolLock, options.portOverride, options.logger ?? silentLogger, options.metrics, options.metricsUrl);
    } catch (error) {
      locks.close();
      pm.close();
      poolLock.release();
      throw error;
    }
  }

  get port(): number { return this.server.port; }

  /** Stop serving and unmap (the pool stays consistent: everything durable is in its logs). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.server.close();
    for (const peer of this.peers.values()) peer.then((connection) => connection.close(), () => {});
    this.locks.close();
    fs.rmSync(lockTablePath(this.node), { force: true });
    this.pool.close();
    this.poolLock.release();
    this.logger.info(`node ${this.node.id} stopped`);
  }

  status(): NodeStatus {
    const layout = this.pool.layout;
    let chunksUsed = 0;
    let objects = 0;
    for (let chunk = 0; chunk < layout.chunkCount; chunk++) {
      const header = this.pool.allocator.chunkHeader(chunk);
      if (!header) continue;
      chunksUsed += header.kind === 2 ? header.runChunks : header.kind === 1 ? 1 : 0;
      if (header.kind !== 3) objects += this.pool.allocator.mediaObjectCount(chunk, header.objectCount);
    }
    const stats = this.server.stats() as unknown as Record<string, number>;
    const clients = [...this.clients.values()].sort((a, b) => a.connectedMs - b.connectedMs);
    return {
      nodeId: this.node.id, cluster: this.config.name, transport: this.node.transport,
      poolBytes: layout.poolBytes, heapBytes: layout.chunkCount * layout.chunkBytes, chunkBytes: layout.chunkBytes,
      chunkCount: layout.chunkCount, chunksUsed, objects, sessions: this.clients.size,
      lanesFree: layout.laneCount - this.busyLaneCount(), inDoubt: this.inDoubt.length, unconfirmed: this.unconfirmed.length,
      uptimeMs: Date.now() - this.startedMs, transportStats: { ...stats },
      ...(this.metricsUrl ? { metrics: this.metricsUrl } : {}),
      clients: clients.slice(0, MAX_LISTED_CLIENTS).map((session) => ({
        ...session.info, clientId: session.clientId, lanes: session.lanes.length, connectedMs: session.connectedMs,
      })),
      clientsOmitted: Math.max(0, clients.length - MAX_LISTED_CLIENTS),
    };
  }

  // ---- requests ----

  private async handle(connection: number, request: Request): Promise<object> {
    const session = this.sessions.get(connection);
    if (session) session.lastSeenMs = Date.now();
    switch (request.op) {
      case 'hello': return this.hello(connection, request);
      case 'status': return { status: this.status() };
      case 'decision': return { committed: this.decide(request.lane, request.generation) === Decision.Committed };
      case 'resolve': return this.resolveFromCoordinator(request);
      default: break;
    }
    if (!session) throw new DpmsError('DPMS_RPC', `${request.op} needs a session: say hello first`);
    switch (request.op) {
      case 'heartbeat': return {};
      case 'bye': this.endSession(connection, undefined); return {};
      case 'allocChunk': return { chunk: this.allocChunk(session, request) };
      case 'releaseChunk':
        this.pool.allocator.releaseClientChunk(request.chunk, (chunk) => this.chunkBusy(chunk));
        return {};
    }
    throw new DpmsError('DPMS_RPC', 'unreachable');
  }

  private hello(connection: number, request: Extract<Request, { op: 'hello' }>): HelloReply {
    if (this.sessions.has(connection)) throw new DpmsError('DPMS_RPC', 'this connection already has a session');
    if (this.clients.has(request.clientId) || this.deadHolders.has(request.clientId) || this.ownsChunks(request.clientId)) {
      throw new DpmsError('DPMS_EXISTS', `client id ${request.clientId} is in use; pick another`);
    }
    const lanes = this.pool.log.grantLanes(Math.min(request.lanes, MAX_LANES_PER_CLIENT));
    if (lanes.length === 0 && request.lanes > 0) throw new DpmsError('DPMS_BUSY', `node ${this.node.id} has no free log lane`);
    const info: ClientInfo = request.info ?? { role: 'app', instance: request.clientId.toString(16).padStart(16, '0') };
    const session: Session = { connection, clientId: request.clientId, lanes, info, connectedMs: Date.now(), lastSeenMs: Date.now() };
    this.sessions.set(connection, session);
    this.clients.set(request.clientId, session);
    this.logger.debug({ clientId: request.clientId, ...info, lanes: lanes.length }, `client ${request.clientId} (${info.role}) says hello`);
    const layout = this.pool.layout;
    const grants: LaneGrant[] = lanes.map((lane) => ({
      lane,
      generation: this.pool.log.generationOf(lane),
      decision: this.pool.pm.load64(laneOffset(layout, lane) + LANE.decision).toString(),
    }));
    return {
      nodeId: this.node.id, cluster: this.config.name, leaseMs: this.config.leaseMs, lanes: grants,
      format: { poolBytes: layout.poolBytes, chunkBytes: layout.chunkBytes, laneCount: layout.laneCount, laneBytes: layout.laneBytes },
    };
  }

  private allocChunk(session: Session, request: Extract<Request, { op: 'allocChunk' }>): ChunkGrant {
    const allocator = this.pool.allocator;
    const granted = request.runChunks !== undefined
      ? allocator.grantHugeRun(request.runChunks, session.clientId)
      : allocator.grantSmallChunk(request.classIndex!, session.clientId,
        (chunk, header) => !this.clients.has(header.ownerId) && !this.deadHolders.has(header.ownerId) && !this.chunkBusy(chunk));
    const { header } = granted;
    return {
      chunk: granted.chunk, kind: header.kind, classIndex: header.classIndex, objectBytes: header.objectBytes,
      objectCount: header.objectCount, runChunks: header.runChunks, ownerId: header.ownerId,
    };
  }

  private ownsChunks(clientId: number): boolean {
    for (let chunk = 0; chunk < this.pool.layout.chunkCount; chunk++) {
      if (this.pool.allocator.chunkHeader(chunk)?.ownerId === clientId) return true;
    }
    return false;
  }

  /** A chunk that an unresolved log here may still change (its slots must not change hands yet). */
  private chunkBusy(chunk: number): boolean {
    const layout = this.pool.layout;
    const metaStart = layout.chunkMetaOffset + chunk * layout.chunkMetaBytes;
    return this.inDoubt.some(({ lane, state }) => {
      const image = this.pool.pm.buffer;
      let at = laneOffset(layout, lane) + LANE.records;
      for (let i = 0; i < state.recordCount; i++) {
        const op = image.readUInt32LE(at + RECORD.op);
        const length = image.readUInt32LE(at + RECORD.length);
        const offset = readU64(image, at + RECORD.offset);
        if (op !== RecordOp.Participants && offset >= metaStart && offset < metaStart + layout.chunkMetaBytes) return true;
        at += RECORD_HEADER_BYTES + ((length + 7) & ~7);
      }
      return false;
    });
  }

  // ---- sessions and dead clients ----

  /** End a session: after a bye (`lostReason` undefined), or because the client's connection ended or its lease ran out. */
  private endSession(connection: number, lostReason: string | undefined): void {
    const session = this.sessions.get(connection);
    if (!session) return;
    const who = { clientId: session.clientId, role: session.info.role, label: session.info.label, instance: session.info.instance };
    if (lostReason === undefined) this.logger.debug(who, `client ${session.clientId} (${session.info.role}) said bye`);
    else this.logger.warn({ ...who, reason: lostReason }, `client ${session.clientId} (${session.info.role}) is gone (${lostReason}); settling what it left`);
    this.sessions.delete(connection);
    this.clients.delete(session.clientId);
    this.deadHolders.add(session.clientId);
    for (const lane of session.lanes) {
      try {
        this.settleClientLane(lane, session.clientId);
      } catch (error) {
        this.logger.error({ lane, clientId: session.clientId, err: error }, `cannot settle lane ${lane} of client ${session.clientId}: ${(error as Error).message}`);
      }
    }
    this.releaseDeadHolders();
    this.kick();
  }

  /** Settle what a client left in one of its lanes; the lane goes back to the free list unless it must wait. */
  private settleClientLane(lane: number, clientId: number): void {
    const log = this.pool.log;
    const state = inspectLane(this.pool.pm.buffer, this.pool.layout, lane);
    if (state.state === 'committed' && (state.flags & CommitFlags.prepared) === 0) {
      log.settleLane(lane, state, true);
    } else if (state.state === 'committed' && (state.flags & CommitFlags.coordinator) !== 0) {
      const decision = log.decide(lane, state.generation, Decision.Aborted);
      log.settleLane(lane, state, decision === Decision.Committed);
    } else if (state.state === 'committed') {
      this.inDoubt.push({ lane, state, holderId: clientId, heldLocks: [] });
      return;
    } else if (state.state === 'torn') {
      log.settleLane(lane, state, false);
    }
    if (!this.noteUnconfirmed(lane)) log.returnLane(lane);
  }

  /** Track a coordinator lane whose participants have not all confirmed; true when it must wait. */
  private noteUnconfirmed(lane: number): boolean {
    const state = inspectLane(this.pool.pm.buffer, this.pool.layout, lane);
    if ((state.flags & CommitFlags.coordinator) === 0 || state.state !== 'void') return false;
    if (state.generation !== state.appliedGeneration || state.confirmedGeneration >= state.generation) return false;
    if (this.unconfirmed.some((entry) => entry.lane === lane)) return true;
    const base = laneOffset(this.pool.layout, lane);
    const participants = participantsOf(this.pool.pm.buffer, base + LANE.records, state.recordCount).filter((id) => id !== this.node.id);
    const committed = decisionGeneration(state.decision) === state.generation && Number(state.decision & 3n) === Decision.Committed;
    this.unconfirmed.push({ lane, generation: state.generation, committed, participants });
    this.pool.log.holdLane(lane);
    return true;
  }

  /** Clear the locks of dead clients that have nothing in doubt here any more. */
  private releaseDeadHolders(): void {
    for (const clientId of [...this.deadHolders]) {
      if (this.inDoubt.some((entry) => entry.holderId === clientId)) continue;
      const table = this.locks.buffer;
      for (let word = 0; word < LOCK_WORDS; word++) {
        const at = word * 8;
        // Plain reads find candidates; the CAS makes sure only a word still held by the dead client is cleared.
        if (table.readUInt32LE(at + 4) !== clientId) continue;
        const tag = this.locks.load64(at);
        if (tagClientId(tag) === clientId) this.locks.cas64(at, tag, 0n);
      }
      this.deadHolders.delete(clientId);
    }
  }

  /** Take lock words over every target of a log for the node itself; returns the words taken. */
  private lockTargets(state: LaneState, tag: bigint): number[] {
    const image = this.pool.pm.buffer;
    const taken: number[] = [];
    let at = laneOffset(this.pool.layout, state.lane) + LANE.records;
    for (let i = 0; i < state.recordCount; i++) {
      const op = image.readUInt32LE(at + RECORD.op);
      const length = image.readUInt32LE(at + RECORD.length);
      if (op === RecordOp.Write) {
        for (const word of lockOffsets(readU64(image, at + RECORD.offset), length)) {
          if (this.locks.cas64(word, 0n, tag) === 0n) taken.push(word);
        }
      }
      at += RECORD_HEADER_BYTES + ((length + 7) & ~7);
    }
    return taken;
  }

  // ---- distributed transactions ----

  /** The coordinator's answer for (lane, generation): committed, or aborted (installed if still pending). */
  private decide(lane: number, generation: number): Decision {
    if (lane >= this.pool.layout.laneCount) throw new DpmsError('DPMS_RPC', `lane ${lane} does not exist on node ${this.node.id}`);
    return this.pool.log.decide(lane, generation, Decision.Aborted);
  }

  /** A coordinator tells us the outcome of a transaction we may hold a prepared log of. */
  private resolveFromCoordinator(request: Extract<Request, { op: 'resolve' }>): object {
    for (let lane = 0; lane < this.pool.layout.laneCount; lane++) {
      const state = inspectLane(this.pool.pm.buffer, this.pool.layout, lane);
      if (state.state !== 'committed' || (state.flags & CommitFlags.prepared) === 0 || (state.flags & CommitFlags.coordinator) !== 0) continue;
      if (state.coordinatorNode !== request.coordinator || state.coordinatorLane !== request.lane || state.coordinatorGeneration !== request.generation) continue;
      this.finishInDoubt(lane, state, request.committed);
    }
    return {};
  }

  private finishInDoubt(lane: number, state: LaneState, committed: boolean): void {
    this.pool.log.settleLane(lane, state, committed);
    this.logger.info({ lane, generation: state.generation, committed }, `in-doubt log in lane ${lane} resolved: ${committed ? 'committed' : 'aborted'}`);
    const index = this.inDoubt.findIndex((entry) => entry.lane === lane);
    if (index >= 0) {
      const [entry] = this.inDoubt.splice(index, 1);
      const tag = lockTag(NODE_HOLDER_ID, lane);
      for (const word of entry.heldLocks) this.locks.cas64(word, tag, 0n);
      // A lane still granted to a live session stays with it; otherwise it is free again.
      if (![...this.clients.values()].some((session) => session.lanes.includes(lane))) this.pool.log.returnLane(lane);
      this.releaseDeadHolders();
    }
  }

  private kick(): void {
    if (!this.resolving && (this.inDoubt.length > 0 || this.unconfirmed.length > 0)) void this.resolvePending();
  }

  private tick(): void {
    const now = Date.now();
    for (const session of this.sessions.values()) {
      if (now - session.lastSeenMs > this.config.leaseMs) {
        this.logger.warn({ clientId: session.clientId, role: session.info.role, label: session.info.label },
          `client ${session.clientId}: lease expired; disconnecting it`);
        this.server.disconnect(session.connection);
        this.endSession(session.connection, 'lease expired');
      }
    }
    this.kick();
  }

  /** Ask coordinators about in-doubt logs, and tell participants about our decisions, until all settle. */
  private async resolvePending(): Promise<void> {
    this.resolving = true;
    try {
      for (const entry of [...this.inDoubt]) {
        const { state } = entry;
        let committed: boolean;
        try {
          committed = state.coordinatorNode === this.node.id
            ? this.decide(state.coordinatorLane, state.coordinatorGeneration) === Decision.Committed
            : (await this.callPeer<{ committed: boolean }>(state.coordinatorNode, { op: 'decision', lane: state.coordinatorLane, generation: state.coordinatorGeneration })).committed;
        } catch {
          continue; // the coordinator is unreachable: ask again later
        }
        if (this.stopped) return;
        const current = inspectLane(this.pool.pm.buffer, this.pool.layout, entry.lane);
        if (current.generation === state.generation && current.state === 'committed') this.finishInDoubt(entry.lane, current, committed);
        else this.inDoubt.splice(this.inDoubt.indexOf(entry), 1);
      }
      for (const entry of [...this.unconfirmed]) {
        let all = true;
        for (const participant of entry.participants) {
          try {
            await this.callPeer(participant, { op: 'resolve', coordinator: this.node.id, lane: entry.lane, generation: entry.generation, committed: entry.committed });
          } catch {
            all = false;
          }
        }
        if (this.stopped) return;
        if (!all) continue;
        this.pool.log.confirm(entry.lane, entry.generation);
        this.unconfirmed.splice(this.unconfirmed.indexOf(entry), 1);
        if (![...this.clients.values()].some((session) => session.lanes.includes(entry.lane))) this.pool.log.returnLane(entry.lane);
      }
    } finally {
      this.resolving = false;
    }
  }

  private async callPeer<T>(nodeId: number, request: Request): Promise<T> {
    let pending = this.peers.get(nodeId);
    if (!pending) {
      const peer = nodeConfig(this.config, nodeId);
      pending = connect({ provider: peer.transport === 'verbs' ? 'verbs' : 'tcp', host: peer.host, port: peer.port, secret: this.config.secret, timeoutMs: 2000 });
      this.peers.set(nodeId, pending);
      pending.then((connection) => connection.onClose(() => this.peers.delete(nodeId)), () => this.peers.delete(nodeId));
    }
    const connection = await pending;
    return decodeReply<T>(await connection.call(encodeMessage(request)), `node ${nodeId} ${request.op}`);
  }

  // ---- metrics ----

  /** The status, computed at most once per SNAPSHOT_MS for the gauges of one scrape. */
  private scrapeStatus(): NodeStatus {
    const now = Date.now();
    if (!this.snapshot || now - this.snapshot.atMs > SNAPSHOT_MS) this.snapshot = { atMs: now, status: this.status() };
    return this.snapshot.status;
  }

  /** Gauges and transport counters read from the node's state when Prometheus scrapes. */
  private registerMetrics(registry: Registry): void {
    infoGauge(registry, 'dpms_node_info', 'This node: its id, cluster and transport (always 1).',
      { node: String(this.node.id), cluster: this.config.name, transport: this.node.transport });
    const gauge = (name: string, help: string, pick: (status: NodeStatus) => number): void =>
      collectedGauge(registry, { name, help, collect: () => pick(this.scrapeStatus()) });
    gauge('dpms_node_pool_bytes', 'Size of the node\'s PM pool.', (status) => status.poolBytes);
    gauge('dpms_node_heap_bytes', 'Bytes of the pool\'s heap (chunks).', (status) => status.heapBytes);
    gauge('dpms_node_heap_used_bytes', 'Bytes of the heap in chunks granted to clients or holding objects.', (status) => status.chunksUsed * status.chunkBytes);
    collectedGauge(registry, {
      name: 'dpms_node_chunks', help: 'Heap chunks by state.', labelNames: ['state'],
      collect: () => {
        const status = this.scrapeStatus();
        return [[{ state: 'used' }, status.chunksUsed], [{ state: 'free' }, status.chunkCount - status.chunksUsed]];
      },
    });
    gauge('dpms_node_objects', 'Objects allocated in the heap.', (status) => status.objects);
    collectedGauge(registry, {
      name: 'dpms_node_log_lanes', help: 'Redo-log lanes by state (used: granted to clients, in doubt or awaiting confirmation).', labelNames: ['state'],
      collect: () => {
        const status = this.scrapeStatus();
        return [[{ state: 'used' }, this.pool.layout.laneCount - status.lanesFree], [{ state: 'free' }, status.lanesFree]];
      },
    });
    gauge('dpms_node_in_doubt_logs', 'Prepared logs here whose coordinator has not told their outcome yet.', (status) => status.inDoubt);
    gauge('dpms_node_unconfirmed_decisions', 'Coordinator decisions here not yet confirmed by every participant.', (status) => status.unconfirmed);
    collectedGauge(registry, {
      name: 'dpms_node_clients', help: 'Clients with a session here, by role.', labelNames: ['role'],
      collect: () => {
        const byRole = new Map<string, number>();
        for (const session of this.clients.values()) {
          const role = byRole.has(session.info.role) || byRole.size < MAX_LABEL_VALUES ? session.info.role : 'other';
          byRole.set(role, (byRole.get(role) ?? 0) + 1);
        }
        return [...byRole].map(([role, count]) => [{ role }, count] as const);
      },
    });
    // The transport server's own counters (the one-sided data path never reaches this code).
    const stats = (): Record<string, number> => this.server.stats() as unknown as Record<string, number>;
    collectedGauge(registry, { name: 'dpms_node_transport_connections', help: 'Transport connections open now.', collect: () => stats().connectionsOpen ?? 0 });
    const counter = (name: string, help: string, field: string): void =>
      collectedCounter(registry, { name, help, collect: () => stats()[field] ?? 0 });
    counter('dpms_node_transport_connections_accepted_total', 'Transport connections accepted.', 'connectionsAccepted');
    counter('dpms_node_transport_auth_failures_total', 'Handshakes that failed (wrong secret, timeout, frame before authentication).', 'authFailures');
    counter('dpms_node_transport_bad_frames_total', 'Malformed, truncated, oversized or unknown frames (each closed its connection).', 'badFrames');
    counter('dpms_node_transport_access_errors_total', 'Remote access errors: bad key, out of bounds, misaligned atomic (each closed its connection).', 'accessErrors');
    collectedCounter(registry, {
      name: 'dpms_node_transport_operations_total', help: 'Operations the transport served, by kind (read, write, atomic, persist: one-sided; message: RPC).',
      labelNames: ['op'],
      collect: () => {
        const current = stats();
        return (['reads', 'writes', 'atomics', 'persists', 'messages'] as const).map((field) => [{ op: field.replace(/s$/, '') }, current[field] ?? 0] as const);
      },
    });
    collectedCounter(registry, {
      name: 'dpms_node_transport_bytes_total', help: 'Bytes the transport received (in) and sent (out).', labelNames: ['direction'],
      collect: () => {
        const current = stats();
        return [[{ direction: 'in' }, current.bytesIn ?? 0], [{ direction: 'out' }, current.bytesOut ?? 0]];
      },
    });
  }

  private busyLaneCount(): number {
    let busy = 0;
    for (const session of this.clients.values()) busy += session.lanes.length;
    return busy + this.inDoubt.length + this.unconfirmed.length;
  }
}
