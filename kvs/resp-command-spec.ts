// What a command of the RESP gateway is (kvs/gateway.ts): its Redis metadata (arity, flags and key
// positions, for arity errors, COMMAND and COMMAND DOCS), which keys it reads and writes (so that the
// gateway can run a connection's pipelined commands concurrently without reordering what touches the
// same key) and its handler; the context a handler sees; and the error texts and argument parsing the
// commands share. Texts are Redis 7.0's, word for word, so that clients and scripts written for Redis
// see what they expect. The commands themselves are in resp-data-commands.ts and resp-commands.ts.

import { isDpmsError } from '../pdsm';
import { errorReply, type RespLimits } from './resp';
import type { KvStore } from './store';

/** The Redis version whose behaviour the gateway follows; reported by INFO and HELLO. */
export const REDIS_COMPATIBLE_VERSION = '7.0.0';

/** What the gateway knows about one connection, for CLIENT, SCAN cursors and INFO. */
export interface GatewayClient {
  readonly id: number;
  name: string;
  readonly remoteAddress: string;
  readonly localAddress: string;
  readonly createdMs: number;
  lastCommandMs: number;
  lastCommand: string;
  /** SCAN cursor number -> the last key that cursor examined (bounded; oldest evicted first). */
  readonly scanCursors: Map<bigint, Buffer>;
  nextScanCursor: bigint;
}

export interface GatewayStats {
  connectionsReceived: number;
  rejectedConnections: number;
  commandsProcessed: number;
  protocolErrors: number;
}

/** What the commands may see of the gateway. */
export interface GatewayContext {
  readonly store: KvStore;
  readonly port: number;
  readonly startedMs: number;
  readonly stats: GatewayStats;
  readonly limits: RespLimits & GatewayCommandLimits;
  clients(): Iterable<GatewayClient>;
  log(line: string): void;
}

export interface GatewayCommandLimits {
  readonly maxConnections: number;
  /** SCAN cursors one connection may hold open. */
  readonly maxScanCursors: number;
  /** Largest COUNT one SCAN call honours (a larger one is lowered: SCAN may always return fewer). */
  readonly maxScanCount: number;
  /** Most keys KEYS returns before failing with a hint to use SCAN. */
  readonly maxKeysReply: number;
  /** Most keys one DEL, EXISTS, MGET or MSET names. */
  readonly maxKeysPerCommand: number;
  /** Most value bytes one MGET returns. */
  readonly maxMgetBytes: number;
}

/** Which keys a command reads and writes: the gateway's per-connection ordering works on these. */
export interface KeyAccess {
  readonly reads?: readonly Buffer[];
  readonly writes?: readonly Buffer[];
  /** The command reads or writes the whole keyspace (SCAN, DBSIZE, FLUSHDB ...). */
  readonly all?: 'read' | 'write';
}

export type CommandReply = Buffer | Promise<Buffer>;

export interface CommandSpec {
  /** Lower case, as Redis names it ("client|setname" for subcommands). */
  readonly name: string;
  /** Redis convention: n > 0 exactly n arguments (with the name), n < 0 at least -n. */
  readonly arity: number;
  readonly flags: readonly string[];
  readonly keys: readonly [first: number, last: number, step: number];
  readonly categories: readonly string[];
  readonly group: string;
  readonly since: string;
  readonly summary: string;
  readonly complexity?: string;
  readonly access: (args: readonly Buffer[]) => KeyAccess;
  readonly run: (context: GatewayContext, client: GatewayClient, args: readonly Buffer[]) => CommandReply;
  readonly subcommands?: ReadonlyMap<string, CommandSpec>;
}

const NO_ACCESS: KeyAccess = {};
export const READ_ALL: KeyAccess = { all: 'read' };
export const WRITE_ALL: KeyAccess = { all: 'write' };

// ---- Error texts, exactly as Redis 7.0 words them. ----

export const SYNTAX_ERROR = 'ERR syntax error';
export const NOT_AN_INTEGER = 'ERR value is not an integer or out of range';

export function arityError(name: string): Buffer {
  return errorReply(`ERR wrong number of arguments for '${name}' command`);
}

/** Redis prints at most 128 bytes of the name and of the quoted arguments. */
export function unknownCommandError(args: readonly Buffer[]): Buffer {
  let quoted = '';
  for (let index = 1; index < args.length && quoted.length < 128; index++) {
    quoted += `'${args[index]!.toString('utf8').slice(0, 128 - quoted.length)}' `;
  }
  return errorReply(`ERR unknown command '${args[0]!.toString('utf8').slice(0, 128)}', with args beginning with: ${quoted}`);
}

function unknownSubcommandError(args: readonly Buffer[]): Buffer {
  return errorReply(`ERR unknown subcommand '${args[1]!.toString('utf8').slice(0, 128)}'. Try ${args[0]!.toString('utf8').toUpperCase()} HELP.`);
}

/** Client errors carry a message meant for the user; anything else also shows its code. */
const CLIENT_ERROR_CODES = new Set(['DPMS_KEY_TOO_LARGE', 'DPMS_VALUE_TOO_LARGE', 'DPMS_INVALID_ARGUMENT', 'DPMS_TX_TOO_LARGE']);

/** The error reply for something a command threw; never rethrows. */
export function failureReply(error: unknown, context: GatewayContext): Buffer {
  if (isDpmsError(error)) {
    return errorReply(CLIENT_ERROR_CODES.has(error.code) ? `ERR ${error.message}` : `ERR ${error.code}: ${error.message}`);
  }
  // Not an operating error: a bug. Log it with its stack and keep serving.
  context.log(`internal error in a gateway command: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
  return errorReply(`ERR internal error in the dpms gateway: ${error instanceof Error ? error.message : String(error)}`);
}

// ---- Argument helpers. ----

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;

/**
 * Redis's string2ll(): an optional '-', digits without leading zeros or '+' or blanks, at most 20
 * characters, within a signed 64-bit integer. Returns undefined for anything else.
 */
export function parseRedisInteger(bytes: Uint8Array): bigint | undefined {
  if (bytes.length === 0 || bytes.length > 20) return undefined;
  const text = Buffer.from(bytes).toString('latin1');
  if (!/^(0|-?[1-9][0-9]*)$/.test(text)) return undefined;
  const value = BigInt(text);
  return value < INT64_MIN || value > INT64_MAX ? undefined : value;
}

export function upper(arg: Buffer): string {
  return arg.toString('latin1').toUpperCase();
}

export function keysFrom(args: readonly Buffer[], first: number, step: number): Buffer[] {
  const keys: Buffer[] = [];
  for (let index = first; index < args.length; index += step) keys.push(args[index]!);
  return keys;
}

// ---- Building the table. ----

interface SpecInput extends Omit<CommandSpec, 'flags' | 'keys' | 'categories' | 'access' | 'subcommands'> {
  readonly flags?: readonly string[];
  readonly keys?: readonly [number, number, number];
  readonly categories?: readonly string[];
  readonly access?: (args: readonly Buffer[]) => KeyAccess;
  readonly subcommands?: readonly CommandSpec[];
}

/** A command spec with the defaults filled in: no flags, no keys, touches no key, no subcommands. */
export function spec(input: SpecInput): CommandSpec {
  return {
    ...input,
    flags: input.flags ?? [],
    keys: input.keys ?? [0, 0, 0],
    categories: input.categories ?? [],
    access: input.access ?? (() => NO_ACCESS),
    subcommands: input.subcommands ? new Map(input.subcommands.map((sub) => [sub.name.split('|')[1]!, sub])) : undefined,
  };
}

/** Dispatch a container command (CLIENT, COMMAND, CONFIG) to its subcommand, with Redis's errors. */
export function withSubcommands(context: GatewayContext, client: GatewayClient, args: readonly Buffer[], parent: CommandSpec): CommandReply {
  const sub = parent.subcommands!.get(args[1]!.toString('latin1').toLowerCase());
  if (!sub) return unknownSubcommandError(args);
  if ((sub.arity > 0 && args.length !== sub.arity) || args.length < -sub.arity) return arityError(sub.name);
  return sub.run(context, client, args);
}
