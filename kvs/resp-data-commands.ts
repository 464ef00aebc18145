// The string and keyspace commands of the RESP gateway (GET, SET, DEL, MGET, INCR, SCAN, KEYS ...),
// each mapped onto the KvStore API. Read-modify-write commands (SET NX/XX/GET, SETNX, INCR, APPEND,
// DEL's count) are one atomic store.update each; MSET is one atomic batch. Where dpms differs from
// Redis (no expiry, no empty keys, bounded multi-key commands) the error says so.

import { DpmsError } from '../pdsm';
import { globLiteralPrefix, globMatch, prefixUpperBound } from './glob';
import { arrayReply, bulkReply, errorReply, integerReply, NULL_BULK_REPLY, OK_REPLY } from './resp';
import {
  arityError, INT64_MAX, INT64_MIN, keysFrom, NOT_AN_INTEGER, parseRedisInteger, READ_ALL, spec, SYNTAX_ERROR, upper, WRITE_ALL,
  type CommandSpec, type GatewayClient, type GatewayContext, type KeyAccess,
} from './resp-command-spec';
import { KEEP, KV_LIMITS } from './types';

/** The iterator range for keys after `after` (exclusive) that may match `pattern`. */
function scanRange(pattern: Buffer | undefined, after: Buffer | undefined): { gt?: Buffer; gte?: Buffer; lt?: Buffer } | undefined {
  const prefix = pattern ? globLiteralPrefix(pattern) : Buffer.alloc(0);
  const lt = prefix.length > 0 ? prefixUpperBound(prefix) : undefined;
  if (after && lt && Buffer.compare(after, lt) >= 0) return undefined;
  if (after && Buffer.compare(after, prefix) >= 0) return { gt: after, lt };
  return prefix.length > 0 ? { gte: prefix, lt } : { lt };
}

/**
 * A value an update function would return must be checked before the store sees it: the store
 * validates what a function returns inside the group commit, where a refusal would fail the other
 * clients' writes committed with it, not just this command.
 */
function valueTooLarge(length: number): DpmsError | undefined {
  return length > KV_LIMITS.maxValueBytes
    ? new DpmsError('DPMS_VALUE_TOO_LARGE', `a value is at most ${KV_LIMITS.maxValueBytes} bytes (got ${length})`)
    : undefined;
}

/** DEL, EXISTS, MGET and MSET name at most maxKeysPerCommand keys (each becomes store work at once). */
function tooManyKeys(context: GatewayContext, keys: number): Buffer | undefined {
  const limit = context.limits.maxKeysPerCommand;
  return keys > limit ? errorReply(`ERR dpms takes at most ${limit} keys in one command (got ${keys}); split it`) : undefined;
}

/** MGET fetches this many keys at a time, so that the reply bound is checked as it grows. */
const MGET_STEP_KEYS = 64;

// ---- Handlers. ----

async function setCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const key = args[1]!;
  const value = args[2]!;
  let onlyIfAbsent = false;
  let onlyIfPresent = false;
  let returnOld = false;
  for (let index = 3; index < args.length; index++) {
    const option = upper(args[index]!);
    if (option === 'NX' && !onlyIfPresent) onlyIfAbsent = true;
    else if (option === 'XX' && !onlyIfAbsent) onlyIfPresent = true;
    else if (option === 'GET') returnOld = true;
    else if (option === 'NX' || option === 'XX') return errorReply(SYNTAX_ERROR);
    else if (['EX', 'PX', 'EXAT', 'PXAT', 'KEEPTTL'].includes(option)) {
      return errorReply(`ERR SET option '${option}' is not supported: dpms keys do not expire`);
    } else {
      return errorReply(`ERR syntax error: SET option '${args[index]!.toString('utf8').slice(0, 64)}' is not supported (dpms supports NX, XX and GET)`);
    }
  }
  if (!onlyIfAbsent && !onlyIfPresent && !returnOld) {
    await context.store.put(key, value);
    return OK_REPLY;
  }
  // A conditional SET reads and writes in one atomic update. The function may run more than once
  // (the store retries on conflict), so it sets both outcomes on every run.
  const tooLarge = valueTooLarge(value.length);
  if (tooLarge) throw tooLarge;
  let old: Buffer | undefined;
  let written = false;
  await context.store.update(key, (current) => {
    old = current;
    written = !(onlyIfAbsent && current !== undefined) && !(onlyIfPresent && current === undefined);
    return written ? value : KEEP;
  });
  if (returnOld) return old === undefined ? NULL_BULK_REPLY : bulkReply(old);
  return written ? OK_REPLY : NULL_BULK_REPLY;
}

async function setnxCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const tooLarge = valueTooLarge(args[2]!.length);
  if (tooLarge) throw tooLarge;
  let written = false;
  await context.store.update(args[1]!, (current) => {
    written = current === undefined;
    return written ? args[2]! : KEEP;
  });
  return integerReply(written ? 1 : 0);
}

async function delCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const refused = tooManyKeys(context, args.length - 1);
  if (refused) return refused;
  // Each distinct key is deleted by an atomic update that says whether it was there, so the count is
  // exact even with other clients deleting the same keys; the updates run concurrently (one group commit).
  const distinct = new Map<string, Buffer>();
  for (const key of args.slice(1)) distinct.set(key.toString('latin1'), key);
  const existed = await Promise.all([...distinct.values()].map(async (key) => {
    let present = false;
    await context.store.update(key, (current) => {
      present = current !== undefined;
      return present ? undefined : KEEP;
    });
    return present;
  }));
  return integerReply(existed.filter(Boolean).length);
}

async function existsCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const refused = tooManyKeys(context, args.length - 1);
  if (refused) return refused;
  // Redis counts a key named twice twice. has() does not read the values.
  const present = await Promise.all(args.slice(1).map((key) => context.store.has(key)));
  return integerReply(present.filter(Boolean).length);
}

async function mgetCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const keys = args.slice(1);
  const refused = tooManyKeys(context, keys.length);
  if (refused) return refused;
  const encode = (values: ReadonlyArray<Buffer | undefined>): Buffer[] => values.map((value) => (value === undefined ? NULL_BULK_REPLY : bulkReply(value)));
  // One getMany reads one version; only a long MGET needs a snapshot (a pin in the cluster) to give
  // one consistent view, as Redis does, across its steps.
  /** The reply's value bytes with these values added, or undefined when that passes the bound. */
  const withinBound = (values: ReadonlyArray<Buffer | undefined>, bytesBefore: number): number | undefined => {
    const bytes = values.reduce((sum, value) => sum + (value?.length ?? 0), bytesBefore);
    return bytes > context.limits.maxMgetBytes ? undefined : bytes;
  };
  const refusal = (): Buffer => errorReply(`ERR MGET reply would exceed ${context.limits.maxMgetBytes} bytes; ask for fewer keys`);
  if (keys.length <= MGET_STEP_KEYS) {
    const values = await context.store.getMany(keys);
    return withinBound(values, 0) === undefined ? refusal() : arrayReply(encode(values));
  }
  const snapshot = await context.store.snapshot();
  try {
    const replies: Buffer[] = [];
    let bytes = 0;
    for (let at = 0; at < keys.length; at += MGET_STEP_KEYS) {
      const values = await context.store.getMany(keys.slice(at, at + MGET_STEP_KEYS), { snapshot });
      const total = withinBound(values, bytes);
      if (total === undefined) return refusal();
      bytes = total;
      replies.push(...encode(values));
    }
    return arrayReply(replies);
  } finally {
    await snapshot.release();
  }
}

async function msetCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  if (args.length % 2 === 0) return arityError('mset');
  const refused = tooManyKeys(context, (args.length - 1) / 2);
  if (refused) return refused;
  // The last value of a key named twice wins, as in Redis; the batch gets each key once.
  const pairs = new Map<string, { key: Buffer; value: Buffer }>();
  for (let index = 1; index < args.length; index += 2) pairs.set(args[index]!.toString('latin1'), { key: args[index]!, value: args[index + 1]! });
  await context.store.batch([...pairs.values()].map(({ key, value }) => ({ type: 'put' as const, key, value })));
  return OK_REPLY;
}

async function incrementBy(context: GatewayContext, key: Buffer, increment: bigint): Promise<Buffer> {
  let failure: string | undefined;
  let result = 0n;
  await context.store.update(key, (current) => {
    failure = undefined;
    const old = current === undefined ? 0n : parseRedisInteger(current);
    if (old === undefined) {
      failure = NOT_AN_INTEGER;
      return KEEP;
    }
    result = old + increment;
    if (result < INT64_MIN || result > INT64_MAX) {
      failure = 'ERR increment or decrement would overflow';
      return KEEP;
    }
    return Buffer.from(result.toString());
  });
  return failure ? errorReply(failure) : integerReply(result);
}

function incrementArgument(arg: Buffer): bigint | Buffer {
  const value = parseRedisInteger(arg);
  return value === undefined ? errorReply(NOT_AN_INTEGER) : value;
}

async function appendCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  let tooLarge: DpmsError | undefined;
  const after = await context.store.update(args[1]!, (current) => {
    tooLarge = valueTooLarge((current?.length ?? 0) + args[2]!.length);
    if (tooLarge) return KEEP;
    return current ? Buffer.concat([current, args[2]!]) : args[2]!;
  });
  if (tooLarge) throw tooLarge;
  return integerReply(after?.length ?? 0);
}

async function scanCommand(context: GatewayContext, client: GatewayClient, args: readonly Buffer[]): Promise<Buffer> {
  const cursorText = args[1]!.toString('latin1');
  if (!/^[0-9]{1,20}$/.test(cursorText) || BigInt(cursorText) >= 2n ** 64n) return errorReply('ERR invalid cursor');
  const cursor = BigInt(cursorText);
  let pattern: Buffer | undefined;
  let count = 10;
  let typeFilter: string | undefined;
  for (let index = 2; index < args.length; index += 2) {
    const option = upper(args[index]!);
    const optionValue = args[index + 1];
    if (optionValue === undefined) return errorReply(SYNTAX_ERROR);
    if (option === 'MATCH') {
      pattern = optionValue;
    } else if (option === 'COUNT') {
      const parsed = parseRedisInteger(optionValue);
      if (parsed === undefined) return errorReply(NOT_AN_INTEGER);
      if (parsed < 1n) return errorReply(SYNTAX_ERROR);
      count = Number(parsed > BigInt(context.limits.maxScanCount) ? context.limits.maxScanCount : parsed);
    } else if (option === 'TYPE') {
      typeFilter = optionValue.toString('latin1').toLowerCase();
    } else {
      return errorReply(SYNTAX_ERROR);
    }
  }
  let after: Buffer | undefined;
  if (cursor !== 0n) {
    after = client.scanCursors.get(cursor);
    if (after === undefined) {
      return errorReply('ERR invalid cursor: dpms SCAN cursors belong to the connection that started the scan and expire when it holds too many');
    }
    client.scanCursors.delete(cursor);
  }
  const range = scanRange(pattern, after);
  const examined: Buffer[] = [];
  if (range) {
    const iterator = context.store.iterator({ ...range, values: false, limit: count });
    try {
      while (examined.length < count) {
        const entries = await iterator.nextv(count - examined.length);
        if (entries.length === 0) break;
        for (const [key] of entries) examined.push(key);
      }
    } finally {
      await iterator.close();
    }
  }
  // Every key is a string in dpms, so TYPE string filters nothing and any other type matches nothing.
  const keys = examined.filter((key) => (typeFilter === undefined || typeFilter === 'string') && (!pattern || globMatch(pattern, key)));
  let next = 0n;
  if (examined.length === count) {
    next = client.nextScanCursor++;
    client.scanCursors.set(next, examined[examined.length - 1]!);
    if (client.scanCursors.size > context.limits.maxScanCursors) {
      client.scanCursors.delete(client.scanCursors.keys().next().value as bigint);
    }
  }
  return arrayReply([bulkReply(next.toString()), arrayReply(keys.map(bulkReply))]);
}

async function keysCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  const pattern = args[1]!;
  const range = scanRange(pattern, undefined);
  const matches: Buffer[] = [];
  if (range) {
    const iterator = context.store.iterator({ ...range, values: false });
    try {
      for (;;) {
        const entries = await iterator.nextv(1000);
        if (entries.length === 0) break;
        for (const [key] of entries) {
          if (!globMatch(pattern, key)) continue;
          if (matches.length === context.limits.maxKeysReply) {
            return errorReply(`ERR KEYS would return more than ${context.limits.maxKeysReply} keys; use SCAN`);
          }
          matches.push(key);
        }
      }
    } finally {
      await iterator.close();
    }
  }
  return arrayReply(matches.map(bulkReply));
}

async function flushCommand(context: GatewayContext, args: readonly Buffer[]): Promise<Buffer> {
  if (args.length > 2 || (args.length === 2 && !['ASYNC', 'SYNC'].includes(upper(args[1]!)))) return errorReply(SYNTAX_ERROR);
  await context.store.clear();
  return OK_REPLY;
}

const readsKey = (args: readonly Buffer[]): KeyAccess => ({ reads: [args[1]!] });
const writesKey = (args: readonly Buffer[]): KeyAccess => ({ writes: [args[1]!] });
const readsKeys = (args: readonly Buffer[]): KeyAccess => ({ reads: keysFrom(args, 1, 1) });
const writesKeys = (args: readonly Buffer[]): KeyAccess => ({ writes: keysFrom(args, 1, 1) });

const STRING_WRITE = { flags: ['write', 'denyoom'], keys: [1, 1, 1] as const, categories: ['@write', '@string', '@slow'], group: 'string', access: writesKey };
const STRING_WRITE_FAST = { ...STRING_WRITE, flags: ['write', 'denyoom', 'fast'], categories: ['@write', '@string', '@fast'], complexity: 'O(1)' };

/** The string and keyspace commands, in the order COMMAND lists them. */
export const DATA_COMMANDS: readonly CommandSpec[] = [
  spec({
    name: 'get', arity: 2, flags: ['readonly', 'fast'], keys: [1, 1, 1], categories: ['@read', '@string', '@fast'], group: 'string', since: '1.0.0',
    summary: 'Get the value of a key', complexity: 'O(1)', access: readsKey,
    run: async (context, _client, args) => {
      const value = await context.store.get(args[1]!);
      return value === undefined ? NULL_BULK_REPLY : bulkReply(value);
    },
  }),
  spec({
    ...STRING_WRITE, name: 'set', arity: -3, since: '1.0.0', complexity: 'O(1)',
    summary: 'Set the string value of a key (options NX, XX, GET; dpms has no expiry)',
    run: (context, _client, args) => setCommand(context, args),
  }),
  spec({ ...STRING_WRITE_FAST, name: 'setnx', arity: 3, since: '1.0.0', summary: 'Set the value of a key, only if the key does not exist', run: (context, _client, args) => setnxCommand(context, args) }),
  spec({
    name: 'del', arity: -2, flags: ['write'], keys: [1, -1, 1], categories: ['@keyspace', '@write', '@slow'], group: 'generic', since: '1.0.0',
    summary: 'Delete keys', complexity: 'O(N) where N is the number of keys', access: writesKeys, run: (context, _client, args) => delCommand(context, args),
  }),
  spec({
    name: 'exists', arity: -2, flags: ['readonly', 'fast'], keys: [1, -1, 1], categories: ['@keyspace', '@read', '@fast'], group: 'generic', since: '1.0.0',
    summary: 'Determine if keys exist', complexity: 'O(N) where N is the number of keys', access: readsKeys, run: (context, _client, args) => existsCommand(context, args),
  }),
  spec({
    name: 'mget', arity: -2, flags: ['readonly', 'fast'], keys: [1, -1, 1], categories: ['@read', '@string', '@fast'], group: 'string', since: '1.0.0',
    summary: 'Get the values of all the given keys', complexity: 'O(N) where N is the number of keys', access: readsKeys,
    run: (context, _client, args) => mgetCommand(context, args),
  }),
  spec({
    ...STRING_WRITE, name: 'mset', arity: -3, keys: [1, -1, 2], since: '1.0.1', summary: 'Set multiple keys to multiple values, atomically',
    complexity: 'O(N) where N is the number of keys', access: (args) => ({ writes: keysFrom(args, 1, 2) }), run: (context, _client, args) => msetCommand(context, args),
  }),
  spec({ ...STRING_WRITE_FAST, name: 'incr', arity: 2, since: '1.0.0', summary: 'Increment the integer value of a key by one', run: (context, _client, args) => incrementBy(context, args[1]!, 1n) }),
  spec({ ...STRING_WRITE_FAST, name: 'decr', arity: 2, since: '1.0.0', summary: 'Decrement the integer value of a key by one', run: (context, _client, args) => incrementBy(context, args[1]!, -1n) }),
  spec({
    ...STRING_WRITE_FAST, name: 'incrby', arity: 3, since: '1.0.0', summary: 'Increment the integer value of a key by the given amount',
    run: (context, _client, args) => {
      const increment = incrementArgument(args[2]!);
      return typeof increment === 'bigint' ? incrementBy(context, args[1]!, increment) : increment;
    },
  }),
  spec({
    ...STRING_WRITE_FAST, name: 'decrby', arity: 3, since: '1.0.0', summary: 'Decrement the integer value of a key by the given amount',
    run: (context, _client, args) => {
      const decrement = incrementArgument(args[2]!);
      if (typeof decrement !== 'bigint') return decrement;
      if (decrement === INT64_MIN) return errorReply('ERR decrement would overflow');
      return incrementBy(context, args[1]!, -decrement);
    },
  }),
  spec({ ...STRING_WRITE, name: 'append', arity: 3, since: '2.0.0', summary: 'Append a value to a key', complexity: 'O(1)', run: (context, _client, args) => appendCommand(context, args) }),
  spec({
    name: 'strlen', arity: 2, flags: ['readonly', 'fast'], keys: [1, 1, 1], categories: ['@read', '@string', '@fast'], group: 'string', since: '2.2.0',
    summary: 'Get the length of the value stored in a key', complexity: 'O(1)', access: readsKey,
    run: async (context, _client, args) => integerReply((await context.store.get(args[1]!))?.length ?? 0),
  }),
  spec({
    name: 'scan', arity: -2, flags: ['readonly'], categories: ['@keyspace', '@read', '@slow'], group: 'generic', since: '2.8.0',
    summary: 'Incrementally iterate the keys space (in key order; cursors are per connection)', complexity: 'O(1) for every call', access: () => READ_ALL,
    run: (context, client, args) => scanCommand(context, client, args),
  }),
  spec({
    name: 'keys', arity: 2, flags: ['readonly'], categories: ['@keyspace', '@read', '@slow', '@dangerous'], group: 'generic', since: '1.0.0',
    summary: 'Find all keys matching the given pattern', complexity: 'O(N) with N being the number of keys in the database', access: () => READ_ALL,
    run: (context, _client, args) => keysCommand(context, args),
  }),
  spec({
    name: 'dbsize', arity: 1, flags: ['readonly', 'fast'], categories: ['@keyspace', '@read', '@fast'], group: 'server', since: '1.0.0',
    summary: 'Return the number of keys in the selected database', complexity: 'O(1)', access: () => READ_ALL,
    run: async (context) => integerReply(await context.store.count()),
  }),
  spec({
    name: 'flushdb', arity: -1, flags: ['write'], categories: ['@keyspace', '@write', '@slow', '@dangerous'], group: 'server', since: '1.0.0',
    summary: 'Remove all keys from the current database', access: () => WRITE_ALL, run: (context, _client, args) => flushCommand(context, args),
  }),
  spec({
    name: 'flushall', arity: -1, flags: ['write'], categories: ['@keyspace', '@write', '@slow', '@dangerous'], group: 'server', since: '1.0.0',
    summary: 'Remove all keys from all databases (dpms has one)', access: () => WRITE_ALL, run: (context, _client, args) => flushCommand(context, args),
  }),
];
