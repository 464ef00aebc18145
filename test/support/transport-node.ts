// A node for transport tests: pool files under /dev/shm (or crash-simulated regions) served with
// pdsm/transport's serve(), with every server event recorded and the message handler replaceable,
// plus the small async helpers the transport tests share (deadlines that turn a hang into a failure,
// polling). Used by test/transport/conformance.ts and the child processes it forks.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createSim, openPool, type PmMapping, type SimMapping } from '../../native';
import { connect, serve, type Connection, type ConnectTarget, type ProviderName, type Server } from '../../pdsm/transport';

let counter = 0;

export interface NodeOptions {
  readonly provider: ProviderName;
  readonly host: string;
  readonly regionSizes: readonly number[];
  /** Serve crash simulators instead of pool files (network providers only: local clients map files). */
  readonly simulated?: boolean;
  readonly maxMessageBytes?: number;
  readonly nodeId?: number;
  readonly dir?: string;
}

export type MessageHandler = (connection: number, message: Buffer, reply: (answer: Uint8Array) => void) => void;

export interface ImmediateEvent {
  readonly connection: number;
  readonly immediate: number;
  readonly length: number;
}

/** By default a node answers a message with its bytes reversed. */
export const reverseHandler: MessageHandler = (_connection, message, reply) => reply(Buffer.from(message).reverse());

export class TestNode {
  readonly server: Server;
  readonly secret = crypto.randomBytes(32);
  readonly opened: number[] = [];
  readonly closed = new Map<number, string>();
  readonly immediates: ImmediateEvent[] = [];
  onMessage: MessageHandler = reverseHandler;
  /** Called when an immediate arrives, before it is recorded (to look at the region at that instant). */
  onImmediate: ((event: ImmediateEvent) => void) | undefined;
  private readonly connections: Connection[] = [];
  private stopped = false;

  private constructor(readonly options: NodeOptions, readonly mappings: readonly PmMapping[], readonly paths: readonly string[]) {
    this.server = serve({
      provider: options.provider === 'local' ? 'tcp' : options.provider,
      host: options.host,
      port: 0,
      secret: this.secret,
      nodeId: options.nodeId ?? 7,
      regions: mappings,
      maxMessageBytes: options.maxMessageBytes,
      onMessage: (connection, message, reply) => this.onMessage(connection, message, reply),
      onOpen: (connection) => this.opened.push(connection),
      onClose: (connection, reason) => this.closed.set(connection, reason),
      onImmediate: (connection, immediate, length) => {
        const event = { connection, immediate, length };
        this.onImmediate?.(event);
        this.immediates.push(event);
      },
    });
  }

  static start(options: NodeOptions): TestNode {
    const mappings: PmMapping[] = [];
    const paths: string[] = [];
    try {
      for (const size of options.regionSizes) {
        if (options.simulated) {
          mappings.push(createSim(size));
        } else {
          const file = path.join(options.dir ?? '/dev/shm', `dpms-transport-test-${process.pid}-${Date.now()}-${counter++}.pool`);
          paths.push(file);
          mappings.push(openPool(file, { createSizeBytes: size }));
        }
      }
      return new TestNode(options, mappings, paths);
    } catch (error) {
      for (const mapping of mappings) mapping.close();
      for (const file of paths) fs.rmSync(file, { force: true });
      throw error;
    }
  }

  /** The connect target for this node (local clients get the region files). */
  target(overrides: Partial<ConnectTarget> = {}): ConnectTarget {
    return {
      provider: this.options.provider,
      host: this.options.host,
      port: this.server.port,
      secret: this.secret,
      timeoutMs: 30_000,
      maxMessageBytes: this.options.maxMessageBytes,
      localRegionPaths: this.options.provider === 'local' ? this.paths : undefined,
      ...overrides,
    };
  }

  /** Connect; the connection is closed by stop(). */
  async connect(overrides: Partial<ConnectTarget> = {}): Promise<Connection> {
    const connection = await connect(this.target(overrides));
    this.connections.push(connection);
    return connection;
  }

  sim(region: number): SimMapping {
    return this.mappings[region] as SimMapping;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const connection of this.connections) connection.close();
    this.server.close();
    for (const mapping of this.mappings) mapping.close();
    for (const file of this.paths) fs.rmSync(file, { force: true });
  }
}

/** Settle `promise` within `ms`, else fail naming what hung. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `condition` every few milliseconds until it holds, failing after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
