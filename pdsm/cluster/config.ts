// The cluster configuration file (YAML): the nodes (id, address, pool, transport) and the shared
// secret every client and node proves it knows. Parsed once, validated field by field; every
// mistake is a DPMS_CONFIG error that names the field and says what is expected.
//
//   cluster: demo
//   secret: "at least 16 characters"      # or secretFile: /etc/dpms/secret
//   leaseMs: 3000                          # optional: how long a silent client keeps its locks
//   nodes:
//     - { id: 1, host: 127.0.0.1, port: 7701, pool: /dev/shm/demo-1.pool, size: 256M, transport: tcp, lanes: 32 }

import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { makeAddress } from '../address';
import { DpmsError } from '../errors';
import { LIMITS } from '../layout';
import { parseSize } from '../units';
import type { ProviderName } from '../transport';

export interface NodeConfig {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  /** The pool file; `size` is used when `dpms node start` creates it. */
  readonly pool: string;
  readonly sizeBytes: number;
  /** How clients reach the node: 'local' (same host: map the pool, messages over tcp), 'tcp' or 'verbs'. */
  readonly transport: ProviderName;
  /** Log lanes when `dpms node start` formats the pool: each client session takes up to 4 (2 by default). */
  readonly lanes: number;
}

export interface ClusterConfig {
  readonly name: string;
  readonly secret: Buffer;
  readonly leaseMs: number;
  readonly nodes: readonly NodeConfig[];
}

const PROVIDERS: readonly ProviderName[] = ['local', 'tcp', 'verbs'];
/** 32 lanes: 16 concurrent client sessions with 2 lanes each. */
const DEFAULT_LANES = 32;
const MAX_NODES = 4095;

function fail(source: string, field: string, message: string): never {
  throw new DpmsError('DPMS_CONFIG', `${source}: ${field}: ${message}`);
}

/** Parse and validate a configuration text. `baseDir` resolves relative pool and secret paths. */
export function parseClusterConfig(text: string, source = 'cluster config', baseDir = process.cwd()): ClusterConfig {
  let document: unknown;
  try {
    document = YAML.parse(text);
  } catch (error) {
    throw new DpmsError('DPMS_CONFIG', `${source}: not valid YAML: ${(error as Error).message}`, { cause: error });
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) fail(source, '(top level)', 'must be a mapping with cluster, secret and nodes');
  const root = document as Record<string, unknown>;
  for (const key of Object.keys(root)) {
    if (!['cluster', 'secret', 'secretFile', 'leaseMs', 'nodes'].includes(key)) fail(source, key, 'unknown field (expected cluster, secret, secretFile, leaseMs, nodes)');
  }
  const name = root.cluster ?? 'dpms';
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) fail(source, 'cluster', 'must be a name of 1-64 letters, digits, _ . -');

  let secret: Buffer;
  if (root.secret !== undefined && root.secretFile !== undefined) fail(source, 'secret', 'give secret or secretFile, not both');
  if (typeof root.secret === 'string') {
    secret = Buffer.from(root.secret, 'utf8');
  } else if (typeof root.secretFile === 'string') {
    const file = path.resolve(baseDir, root.secretFile);
    try {
      secret = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'utf8');
    } catch (error) {
      fail(source, 'secretFile', `cannot read ${file}: ${(error as Error).message}`);
    }
  } else {
    fail(source, 'secret', 'is required (a string of at least 16 bytes), or secretFile');
  }
  if (secret.length < 16 || secret.length > 1024) fail(source, 'secret', `must be 16 to 1024 bytes (got ${secret.length})`);

  const leaseMs = root.leaseMs ?? 3000;
  if (typeof leaseMs !== 'number' || !Number.isInteger(leaseMs) || leaseMs < 200 || leaseMs > 600_000) fail(source, 'leaseMs', 'must be an integer between 200 and 600000');

  if (!Array.isArray(root.nodes) || root.nodes.length === 0) fail(source, 'nodes', 'must be a non-empty list');
  if (root.nodes.length > MAX_NODES) fail(source, 'nodes', `at most ${MAX_NODES} nodes`);
  const nodes = root.nodes.map((entry: unknown, index: number) => parseNode(entry, `nodes[${index}]`, source, baseDir));
  const ids = new Set<number>();
  const endpoints = new Set<string>();
  const pools = new Set<string>();
  for (const node of nodes) {
    if (ids.has(node.id)) fail(source, 'nodes', `node id ${node.id} appears twice`);
    if (endpoints.has(`${node.host}:${node.port}`)) fail(source, 'nodes', `${node.host}:${node.port} is used by two nodes`);
    if (pools.has(node.pool)) fail(source, 'nodes', `pool ${node.pool} is used by two nodes`);
    ids.add(node.id);
    endpoints.add(`${node.host}:${node.port}`);
    pools.add(node.pool);
  }
  return { name, secret, leaseMs, nodes };
}

function parseNode(entry: unknown, field: string, source: string, baseDir: string): NodeConfig {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(source, field, 'must be a mapping with id, host, port, pool, size, transport');
  const node = entry as Record<string, unknown>;
  for (const key of Object.keys(node)) {
    if (!['id', 'host', 'port', 'pool', 'size', 'transport', 'lanes'].includes(key)) fail(source, `${field}.${key}`, 'unknown field (expected id, host, port, pool, size, transport, lanes)');
  }
  const id = node.id;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_NODES) fail(source, `${field}.id`, `must be an integer from 1 to ${MAX_NODES}`);
  makeAddress(id, 0); // the id must fit a global address
  const host = node.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.length === 0 || host.length > 255) fail(source, `${field}.host`, 'must be a host name or IP address');
  const port = node.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail(source, `${field}.port`, 'must be a TCP port from 1 to 65535');
  if (typeof node.pool !== 'string' || node.pool.length === 0) fail(source, `${field}.pool`, 'must be the path of the pool file');
  let sizeBytes: number;
  try {
    sizeBytes = parseSize((node.size ?? '256M') as string | number, `${field}.size`);
  } catch (error) {
    fail(source, `${field}.size`, (error as Error).message);
  }
  const transport = node.transport ?? 'tcp';
  if (typeof transport !== 'string' || !PROVIDERS.includes(transport as ProviderName)) fail(source, `${field}.transport`, `must be one of ${PROVIDERS.join(', ')}`);
  const lanes = node.lanes ?? DEFAULT_LANES;
  if (typeof lanes !== 'number' || !Number.isInteger(lanes) || lanes < 1 || lanes > LIMITS.maxLaneCount) fail(source, `${field}.lanes`, `must be an integer from 1 to ${LIMITS.maxLaneCount}`);
  return { id, host, port, pool: path.resolve(baseDir, node.pool), sizeBytes, transport: transport as ProviderName, lanes };
}

/** Read and validate a configuration file. */
export function loadClusterConfig(file: string): ClusterConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new DpmsError('DPMS_CONFIG', `cannot read cluster config ${file}: ${(error as Error).message}`, { cause: error });
  }
  return parseClusterConfig(text, file, path.dirname(path.resolve(file)));
}

/** The node's entry, or DPMS_CONFIG. */
export function nodeConfig(config: ClusterConfig, id: number): NodeConfig {
  const node = config.nodes.find((candidate) => candidate.id === id);
  if (!node) throw new DpmsError('DPMS_CONFIG', `node ${id} is not in the cluster config (nodes: ${config.nodes.map((n) => n.id).join(', ')})`);
  return node;
}

/** The node's volatile lock table lives beside its pool (recreated empty at every start). */
export const lockTablePath = (node: NodeConfig): string => `${node.pool}.locks`;
