// A pDSM client of a cluster: connects to every node named in the cluster config, proves the secret,
// opens a session (client id, log lanes, lease), and offers the same two interfaces as the embedded
// Pdsm: transactions (ClusterTransaction) and the raw API (one-sided read/write/persist/atomics).
//
// Sessions are all-or-nothing per client: when any connection drops, or a commit cannot finish, the
// client ends its sessions on every node (the nodes then settle whatever it left, as for a crashed
// client) and opens new ones, under a new client id, on next use.

import crypto from 'node:crypto';
import os from 'node:os';
import { makeAddress, nodeOf, offsetOf, type GlobalAddress } from '../address';
import { DpmsError } from '../errors';
import { retryOnConflict } from '../retry';
import { connect, type Connection, type ProviderName } from '../transport';
import { lockTablePath, type ClusterConfig, type NodeConfig } from './config';
import { ClusterTransaction } from './dtx';
import { decodeReply, encodeMessage, REGION, type ClientInfo, type HelloReply, type NodeStatus } from './protocol';
import { RemoteNode } from './remote-node';

export interface ClusterClientOptions {
  readonly config: ClusterConfig;
  /** Reach every node with this provider instead of the configured one. */
  readonly provider?: ProviderName;
  /** Log lanes to ask each node for (concurrent commits per node). */
  readonly lanesPerNode?: number;
  readonly connectTimeoutMs?: number;
  /** Who this client is, as nodes list it in their status (role 'app' when not given). */
  readonly info?: Omit<ClientInfo, 'instance' | 'pid' | 'host'> & { readonly pid?: number; readonly host?: string };
}

export interface ClusterTransactionOptions {
  readonly maxRetries?: number;
}

const RECONNECT_BACKOFF_MS = 200;

/**
 * What this client did, for the metrics of the process that holds it (mount, gateway): plain numbers
 * that only grow, incremented on the existing paths and read when metrics are scraped.
 */
export interface ClientCounters {
  /** Transactions committed, failed for good (after retries, or not retryable), and attempts restarted after a conflict. */
  txCommitted: number;
  txAborted: number;
  txRetried: number;
  /** Two-sided RPCs sent (hello, heartbeat, allocChunk, status, ...). */
  rpcs: number;
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  atomics: number;
  persists: number;
  /** Sessions opened (1 + reconnects). */
  sessions: number;
}

/** A connection that counts what goes through it: one increment per operation, nothing else. */
function countingConnection(inner: Connection, counters: ClientCounters): Connection {
  return {
    provider: inner.provider,
    nodeId: inner.nodeId,
    regions: inner.regions,
    get isOpen() { return inner.isOpen; },
    read(region, offset, length) {
      counters.reads++;
      counters.readBytes += length;
      return inner.read(region, offset, length);
    },
    readInto(region, offset, target, targetOffset, length) {
      counters.reads++;
      counters.readBytes += length ?? target.length - (targetOffset ?? 0);
      return inner.readInto(region, offset, target, targetOffset, length);
    },
    write(region, offset, data) {
      counters.writes++;
      counters.writeBytes += data.length;
      return inner.write(region, offset, data);
    },
    writeWithImmediate(region, offset, data, immediate) {
      counters.writes++;
      counters.writeBytes += data.length;
      return inner.writeWithImmediate(region, offset, data, immediate);
    },
    compareAndSwap(region, offset, expected, desired) {
      counters.atomics++;
      return inner.compareAndSwap(region, offset, expected, desired);
    },
    fetchAndAdd(region, offset, delta) {
      counters.atomics++;
      return inner.fetchAndAdd(region, offset, delta);
    },
    persist(region, offset, length) {
      counters.persists++;
      return inner.persist(region, offset, length);
    },
    writePersist(region, offset, data) {
      counters.writes++;
      counters.persists++;
      counters.writeBytes += data.length;
      return inner.writePersist(region, offset, data);
    },
    call(message) {
      counters.rpcs++;
      return inner.call(message);
    },
    onClose: (listener) => inner.onClose(listener),
    close: () => inner.close(),
    unchecked: inner.unchecked,
  };
}

interface Session {
  readonly clientId: number;
  readonly nodes: Map<number, Promise<RemoteNode>>;
  heartbeat?: NodeJS.Timeout;
  lastHeartbeatMs: number;
}

export class ClusterClient {
  private session: Session | undefined;
  private serial = 1;
  private nextPlacement = 0;
  private closed = false;
  private lastFailureMs = 0;
  private lastAbandonReason = '';

  /** Who this client is; the instance stays the same across sessions (reconnects). */
  readonly info: ClientInfo;
  /** What this client did (for metrics); only grows. */
  readonly counters: ClientCounters = {
    txCommitted: 0, txAborted: 0, txRetried: 0, rpcs: 0, reads: 0, readBytes: 0, writes: 0, writeBytes: 0, atomics: 0, persists: 0, sessions: 0,
  };

  private constructor(private readonly options: ClusterClientOptions) {
    this.info = {
      role: 'app', pid: process.pid, host: os.hostname().slice(0, 255), ...options.info,
      instance: crypto.randomBytes(8).toString('hex'),
    };
  }

  /** Connect to every node; a node that cannot be reached now is retried when it is next needed. */
  static async connect(options: ClusterClientOptions): Promise<ClusterClient> {
    const client = new ClusterClient(options);
    const session = client.currentSession();
    const results = await Promise.allSettled([...session.nodes.values()]);
    if (results.every((result) => result.status === 'rejected')) {
      const reason = (results[0] as PromiseRejectedResult).reason as Error;
      client.abandon('no node reachable');
      throw reason;
    }
    return client;
  }

  get config(): ClusterConfig { return this.options.config; }
  get nodeIds(): number[] { return this.options.config.nodes.map((node) => node.id); }
  get clientId(): number { return this.currentSession().clientId; }

  /** Start a transaction. Commit or abort it. */
  begin(): ClusterTransaction {
    this.checkOpen();
    const session = this.currentSession();
    const client = this;
    return new ClusterTransaction(this.serial++, {
      clientId: session.clientId,
      nodeFor: (address) => client.nodeIn(session, nodeOf(address)),
      placeAllocation: (sizeBytes, preferred) => client.place(session, sizeBytes, preferred),
      abandon: (reason) => client.abandon(reason, session),
    });
  }

  /** Run `body` in a transaction and commit it, retrying the whole body on DPMS_TX_CONFLICT with random backoff. */
  async transaction<T>(body: (tx: ClusterTransaction) => Promise<T>, options: ClusterTransactionOptions = {}): Promise<T> {
    // No-wait locking: random exponential backoff (capped at 50 ms) keeps conflicting clients from meeting again.
    const counters = this.counters;
    let attempts = 0;
    try {
      const result = await retryOnConflict(() => {
        if (attempts++ > 0) counters.txRetried++;
        return this.begin();
      }, body, options.maxRetries ?? 200,
      (attempt) => new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** Math.min(attempt, 6)))));
      counters.txCommitted++;
      return result;
    } catch (error) {
      counters.txAborted++;
      throw error;
    }
  }

  async alloc(sizeBytes: number, nodeId?: number): Promise<GlobalAddress> {
    return this.transaction((tx) => tx.alloc(sizeBytes, nodeId));
  }

  async free(address: GlobalAddress): Promise<void> {
    return this.transaction((tx) => tx.free(address));
  }

  // ---- raw API: one-sided operations; durability only through persist / writePersist ----

  async read(address: GlobalAddress, length: number): Promise<Buffer> {
    const { node, offset } = await this.locate(address, length);
    return node.connection.read(REGION.pool, offset, length);
  }

  /** Read into `target` at `targetOffset` (no new buffer: the hot path of file reads). */
  async readInto(address: GlobalAddress, target: Uint8Array, targetOffset: number, length: number): Promise<void> {
    const { node, offset } = await this.locate(address, length);
    return node.connection.readInto(REGION.pool, offset, target, targetOffset, length);
  }

  async write(address: GlobalAddress, data: Uint8Array): Promise<void> {
    const { node, offset } = await this.locate(address, data.length);
    return node.connection.write(REGION.pool, offset, data);
  }

  async persist(address: GlobalAddress, length: number): Promise<void> {
    const { node, offset } = await this.locate(address, length);
    return node.connection.persist(REGION.pool, offset, length);
  }

  async writePersist(address: GlobalAddress, data: Uint8Array): Promise<void> {
    const { node, offset } = await this.locate(address, data.length);
    return node.connection.writePersist(REGION.pool, offset, data);
  }

  async load64(address: GlobalAddress): Promise<bigint> {
    const { node, offset } = await this.locate(address, 8);
    return (await node.connection.read(REGION.pool, offset, 8)).readBigUInt64LE(0);
  }

  async cas64(address: GlobalAddress, expected: bigint, desired: bigint): Promise<bigint> {
    const { node, offset } = await this.locate(address, 8);
    return node.connection.compareAndSwap(REGION.pool, offset, expected, desired);
  }

  async faa64(address: GlobalAddress, delta: bigint): Promise<bigint> {
    const { node, offset } = await this.locate(address, 8);
    return node.connection.fetchAndAdd(REGION.pool, offset, delta);
  }

  /** The root area of a node (4 KiB at a fixed address). */
  async root(nodeId: number): Promise<GlobalAddress> {
    const node = await this.nodeIn(this.currentSession(), nodeId);
    return makeAddress(nodeId, node.layout.rootOffset);
  }

  /** Usable size of the object at address, or undefined when none is allocated there. */
  async objectSize(address: GlobalAddress): Promise<number | undefined> {
    const node = await this.nodeIn(this.currentSession(), nodeOf(address));
    return (await node.lookup(offsetOf(address)))?.header.objectBytes;
  }

  /** Every node's status, or the error that kept us from it. */
  async status(): Promise<Array<{ node: NodeConfig; status?: NodeStatus; error?: string }>> {
    return Promise.all(this.options.config.nodes.map(async (node) => {
      try {
        const remote = await this.nodeIn(this.currentSession(), node.id);
        const reply = decodeReply<{ status: NodeStatus }>(await remote.connection.call(encodeMessage({ op: 'status' })), `node ${node.id} status`);
        return { node, status: reply.status };
      } catch (error) {
        return { node, error: `${(error as DpmsError).code ?? 'ERROR'}: ${(error as Error).message}` };
      }
    }));
  }

  /** End the sessions (the nodes free the lanes) and close every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    const session = this.session;
    this.closed = true;
    if (!session) return;
    clearInterval(session.heartbeat);
    this.session = undefined;
    await Promise.all([...session.nodes.values()].map(async (pending) => {
      try {
        const node = await pending;
        await node.call({ op: 'bye' }).catch(() => undefined);
        node.connection.close();
      } catch {
        // never connected
      }
    }));
  }

  // ---- sessions ----

  /** End every session of `session` (or the current one): the nodes settle what this client left. */
  abandon(reason: string, session = this.session): void {
    if (!session || session !== this.session) return;
    this.session = undefined;
    this.lastFailureMs = Date.now();
    clearInterval(session.heartbeat);
    this.lastAbandonReason = reason;
    for (const pending of session.nodes.values()) pending.then((node) => node.connection.close(), () => undefined);
  }

  private currentSession(): Session {
    this.checkOpen();
    if (this.session) return this.session;
    const clientId = crypto.randomInt(1, 0xffff_fffe);
    const session: Session = { clientId, nodes: new Map(), lastHeartbeatMs: Date.now() };
    this.counters.sessions++;
    for (const node of this.options.config.nodes) {
      const pending = this.openNode(session, node);
      pending.catch(() => undefined);
      session.nodes.set(node.id, pending);
    }
    session.heartbeat = setInterval(() => this.heartbeat(session), this.heartbeatIntervalMs);
    session.heartbeat.unref();
    this.session = session;
    return session;
  }

  private async openNode(session: Session, node: NodeConfig): Promise<RemoteNode> {
    const provider = this.options.provider ?? node.transport;
    const connection = countingConnection(await connect({
      provider, host: node.host, port: node.port, secret: this.options.config.secret,
      timeoutMs: this.options.connectTimeoutMs ?? 3000,
      localRegionPaths: provider === 'local' ? [node.pool, lockTablePath(node)] : undefined,
    }), this.counters);
    try {
      if (connection.nodeId !== node.id) throw new DpmsError('DPMS_CONFIG', `${node.host}:${node.port} is node ${connection.nodeId}, not node ${node.id}`);
      const hello = decodeReply<HelloReply>(await connection.call(encodeMessage({ op: 'hello', clientId: session.clientId, lanes: this.options.lanesPerNode ?? 2, info: this.info })), `node ${node.id} hello`);
      if (hello.cluster !== this.options.config.name) throw new DpmsError('DPMS_CONFIG', `node ${node.id} belongs to cluster '${hello.cluster}', not '${this.options.config.name}'`);
      const remote = new RemoteNode(node, connection, hello);
      connection.onClose((reason) => this.abandon(`lost node ${node.id}: ${reason}`, session));
      return remote;
    } catch (error) {
      connection.close();
      throw error;
    }
  }

  private get heartbeatIntervalMs(): number {
    return Math.max(50, Math.floor(this.options.config.leaseMs / 3));
  }

  private heartbeat(session: Session): void {
    session.lastHeartbeatMs = Date.now();
    for (const pending of session.nodes.values()) {
      pending.then((node) => node.call({ op: 'heartbeat' })).catch(() => undefined);
    }
  }

  private async nodeIn(session: Session, nodeId: number): Promise<RemoteNode> {
    // Over `local` a busy caller can run for seconds in microtasks alone (every operation resolves
    // at once), starving the heartbeat timer and the sockets that carry it: when one is due, send it
    // from here and give the event loop one turn so that it leaves.
    if (Date.now() - session.lastHeartbeatMs > this.heartbeatIntervalMs) {
      this.heartbeat(session);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const pending = session.nodes.get(nodeId);
    if (!pending) throw new DpmsError('DPMS_INVALID_ADDRESS', `node ${nodeId} is not part of cluster '${this.options.config.name}'`);
    if (session !== this.session) throw new DpmsError('DPMS_TX_ABORTED', `the client ended its sessions (${this.lastAbandonReason}); retry the transaction`);
    try {
      const node = await pending;
      if (!node.connection.isOpen) throw new DpmsError('DPMS_DISCONNECTED', `connection to node ${nodeId} is closed`);
      return node;
    } catch (error) {
      // Forget the failed attempt so that the next use tries again (not more often than the backoff).
      if (session.nodes.get(nodeId) === pending && Date.now() - this.lastFailureMs > RECONNECT_BACKOFF_MS) {
        this.lastFailureMs = Date.now();
        const retry = this.openNode(session, this.options.config.nodes.find((node) => node.id === nodeId)!);
        retry.catch(() => undefined);
        session.nodes.set(nodeId, retry);
      }
      throw error;
    }
  }

  private async place(session: Session, _sizeBytes: number, preferred: number | undefined): Promise<RemoteNode> {
    if (preferred !== undefined) return this.nodeIn(session, preferred);
    // Round-robin over the nodes, skipping unreachable ones (see docs: placement policy).
    const ids = this.nodeIds;
    let lastError: unknown;
    for (let i = 0; i < ids.length; i++) {
      const nodeId = ids[this.nextPlacement++ % ids.length];
      try {
        return await this.nodeIn(session, nodeId);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  private async locate(address: GlobalAddress, length: number): Promise<{ node: RemoteNode; offset: number }> {
    const node = await this.nodeIn(this.currentSession(), nodeOf(address));
    const offset = offsetOf(address);
    node.checkDataRange(offset, length, address);
    return { node, offset };
  }

  private checkOpen(): void {
    if (this.closed) throw new DpmsError('DPMS_CLOSED', 'this cluster client is closed');
  }
}
