// The read-only verifier of pDKVS (`dpms check`): walks the catalog and every store it names, over
// pDSM, and checks what the store code relies on (docs/ARCHITECTURE.md, "pDKVS"): every tree node
// decodes and its checksum holds, keys are strictly ordered within and across nodes, separators bound
// their subtrees, all leaves sit at the same depth, the meta record's key count is the number of keys,
// and every object a store uses (meta record, pin table, nodes, external values, garbage batches and
// the retired objects they list) is allocated, big enough, and owned by exactly one place.
//
// Online, writers keep committing while we walk: the check pins every store at version 0 in its pin
// table (no writer frees garbage while the pin holds) and reads each meta record inside a transaction
// (after which no writer that missed the pin is still running), so what it walks stays allocated.

import crypto from 'node:crypto';
import { DpmsError, makeAddress, nodeOf, NULL_ADDRESS, offsetOf, readAddress, type ClusterClient, type GlobalAddress } from '../pdsm';
import {
  ANCHOR_BYTES, checkAnchor, decodeGarbageAddresses, decodeGarbageHeader, decodeMeta, decodeNode, decodeValue, GARBAGE, META_BYTES, NodeKind,
  PIN, PIN_SLOT_BYTES, PIN_SLOTS, PIN_TABLE_BYTES, ROOT_AREA, VALUE_HEADER_BYTES, type Meta, type Ref,
} from './format';
import { compareKeys } from './tree';
import { KV_LIMITS } from './types';

export interface KvVerifyReport {
  /** Stores named by the catalog (the catalog itself not counted). */
  readonly stores: number;
  readonly keys: number;
  readonly nodes: number;
  /** Objects owned by pDKVS (meta records, pin tables, nodes, values, garbage batches and entries). */
  readonly objects: number;
  /** Retired objects awaiting reclamation. */
  readonly garbage: number;
  readonly problems: string[];
}

export interface KvVerifyResult extends KvVerifyReport {
  /** Every object address the walk saw (for the cluster check's leak and double-ownership cross-checks). */
  readonly addresses: ReadonlySet<GlobalAddress>;
}

export interface KvVerifyOptions {
  /** Pin the stores while walking (online: writers may run). Default true. */
  readonly pin?: boolean;
}

const MAX_PROBLEMS = 1000;
/** A garbage list longer than this is taken for a cycle. */
const MAX_GARBAGE_BATCHES = 1_000_000;
/** Deeper trees than this are not built by any store (fan-out >= 2 per level, at most 2^53 keys). */
const MAX_HEIGHT = 64;
const PIN_LEASE_MS = 30_000;

const hex = (address: GlobalAddress): string => `${nodeOf(address)}:0x${offsetOf(address).toString(16)}`;
const offsetAddress = (address: GlobalAddress, delta: number): GlobalAddress => makeAddress(nodeOf(address), offsetOf(address) + delta);
const printable = (key: Buffer): string => (/^[\x20-\x7e]*$/.test(key.toString('latin1')) ? JSON.stringify(key.toString('latin1')) : `0x${key.toString('hex').slice(0, 64)}`);

/** Walk every store of the cluster; problems are reported, never thrown (except when nothing can be read). */
export async function verifyKvStores(client: ClusterClient, options: KvVerifyOptions = {}): Promise<KvVerifyResult> {
  const problems: string[] = [];
  const problem = (text: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(text);
  };
  const owned = new Map<GlobalAddress, string>();
  const counts = { stores: 0, keys: 0, nodes: 0, garbage: 0 };
  /** Claim an object for `what`; false when it cannot be read safely (not allocated, too small, owned twice). */
  const own = async (address: GlobalAddress, bytes: number, what: string): Promise<boolean> => {
    const previous = owned.get(address);
    if (previous !== undefined) {
      problem(`${what}: object ${hex(address)} is also ${previous}`);
      return false;
    }
    owned.set(address, what);
    let size: number | undefined;
    try {
      size = await client.objectSize(address);
    } catch (error) {
      problem(`${what}: object ${hex(address)} cannot be looked up: ${(error as Error).message}`);
      return false;
    }
    if (size === undefined) {
      problem(`${what}: object ${hex(address)} is not allocated`);
      return false;
    }
    if (size < bytes) {
      problem(`${what}: object ${hex(address)} holds ${size} B, needs ${bytes}`);
      return false;
    }
    return true;
  };

  const home = Math.min(...client.nodeIds);
  const area = await client.root(home);
  const anchor = await client.read(area, ANCHOR_BYTES);
  let present: boolean;
  try {
    present = checkAnchor(anchor);
  } catch (error) {
    problem(`catalog anchor at ${hex(area)}: ${(error as Error).message}`);
    return { ...counts, objects: 0, problems, addresses: new Set() };
  }
  if (!present) return { ...counts, objects: 0, problems, addresses: new Set() };

  const pins: Pin[] = [];
  const pinned = async (metaAddress: GlobalAddress, what: string): Promise<Meta | undefined> => {
    let meta = await readMeta(client, metaAddress);
    if (meta === undefined) {
      problem(`${what}: the meta record at ${hex(metaAddress)} does not check out`);
      return undefined;
    }
    if (options.pin !== false) {
      const pin = await Pin.take(client, meta.pins, what).catch((error: unknown) => {
        problem(`${what}: cannot pin it for the check (${(error as Error).message}); checked unpinned`);
        return undefined;
      });
      if (pin) {
        pins.push(pin);
        // Reading the meta record under its lock waits out any commit that read the pin table before
        // our pin: every later commit sees the pin and frees nothing, so this version stays whole.
        meta = await client.transaction(async (tx) => decodeMeta(await tx.read(metaAddress, META_BYTES)));
        if (meta === undefined) {
          problem(`${what}: the meta record at ${hex(metaAddress)} does not check out`);
          return undefined;
        }
      }
    }
    return meta;
  };

  try {
    const catalogMetaAddress = offsetAddress(area, ROOT_AREA.catalogMeta);
    const catalogMeta = await pinned(catalogMetaAddress, 'the store catalog');
    if (catalogMeta === undefined) return { ...counts, objects: owned.size, problems, addresses: new Set(owned.keys()) };
    const stores: Array<{ name: string; metaAddress: GlobalAddress }> = [];
    await checkStore(client, catalogMeta, 'the store catalog', own, problem, counts, (key, value) => {
      if (value.length !== 8) {
        problem(`the store catalog: entry ${printable(key)} holds ${value.length} B, not an 8-B meta address`);
        return;
      }
      stores.push({ name: key.toString('utf8'), metaAddress: readAddress(value, 0) });
    });
    // The catalog's keys are store names, not data: `keys` counts the stores' keys only.
    counts.keys = 0;
    // Pin every store before walking any, so that no object moves from one store to another while we walk.
    const metas: Array<{ name: string; metaAddress: GlobalAddress; meta: Meta | undefined }> = [];
    for (const store of stores) {
      const what = `store '${store.name}'`;
      if (!(await own(store.metaAddress, META_BYTES, `the meta record of ${what}`))) {
        metas.push({ ...store, meta: undefined });
        continue;
      }
      metas.push({ ...store, meta: await pinned(store.metaAddress, what) });
    }
    counts.stores = stores.length;
    for (const { name, meta } of metas) {
      if (meta !== undefined) await checkStore(client, meta, `store '${name}'`, own, problem, counts);
    }
  } finally {
    for (const pin of pins) await pin.release().catch(() => undefined);
  }
  return { ...counts, objects: owned.size, problems, addresses: new Set(owned.keys()) };
}

type Own = (address: GlobalAddress, bytes: number, what: string) => Promise<boolean>;

/** Check one store's pin table, tree and garbage list; `onEntry` sees every key and inline value (the catalog's). */
async function checkStore(
  client: ClusterClient, meta: Meta, what: string, own: Own, problem: (text: string) => void,
  counts: { keys: number; nodes: number; garbage: number }, onEntry?: (key: Buffer, value: Buffer) => void,
): Promise<void> {
  await own(meta.pins, PIN_TABLE_BYTES, `the pin table of ${what}`);
  if (meta.height === 0) {
    if (meta.root.address !== NULL_ADDRESS) problem(`${what}: height 0 but a root node at ${hex(meta.root.address)}`);
    if (meta.count !== 0) problem(`${what}: empty tree but the meta record counts ${meta.count} keys`);
  } else if (meta.height > MAX_HEIGHT) {
    problem(`${what}: height ${meta.height} is impossible`);
  } else if (meta.root.address === NULL_ADDRESS) {
    problem(`${what}: height ${meta.height} but no root node`);
  } else {
    let keys = 0;
    let unreadable = 0;
    let previous: Buffer | undefined;
    // Depth-first, left to right: keys come out in order, so "previous" checks order across leaves.
    const walk = async (ref: Ref, depth: number, lower: Buffer | undefined, upper: Buffer | undefined): Promise<void> => {
      const where = `${what}: node ${hex(ref.address)} (version ${ref.birth}, depth ${depth})`;
      if (ref.birth > meta.version) problem(`${where}: born after the store's version ${meta.version}`);
      if (!(await own(ref.address, ref.length, `a tree node of ${what}`))) {
        unreadable++;
        return;
      }
      counts.nodes++;
      let node;
      try {
        node = decodeNode(await client.read(ref.address, ref.length), ref);
      } catch (error) {
        unreadable++;
        problem(`${where}: ${(error as Error).message}`);
        return;
      }
      if (node === undefined) {
        unreadable++;
        problem(`${where}: does not check out (bad magic, birth, length or checksum)`);
        return;
      }
      if (node.kind === NodeKind.leaf) {
        if (depth !== meta.height) problem(`${where}: a leaf at depth ${depth}, the tree's height is ${meta.height}`);
        if (node.keys.length === 0) problem(`${where}: an empty leaf`);
        for (let i = 0; i < node.keys.length; i++) {
          const key = node.keys[i];
          if (key.length === 0 || key.length > KV_LIMITS.maxKeyBytes) problem(`${where}: key ${i} is ${key.length} B`);
          if (previous !== undefined && compareKeys(previous, key) >= 0) problem(`${where}: key ${printable(key)} is not after ${printable(previous)}`);
          if (lower !== undefined && compareKeys(key, lower) < 0) problem(`${where}: key ${printable(key)} lies below its separator ${printable(lower)}`);
          if (upper !== undefined && compareKeys(key, upper) >= 0) problem(`${where}: key ${printable(key)} lies at or above the next separator ${printable(upper)}`);
          previous = key;
          keys++;
          const value = node.values[i];
          if (Buffer.isBuffer(value)) {
            onEntry?.(key, value);
            continue;
          }
          if (value.length > KV_LIMITS.maxValueBytes) problem(`${where}: key ${printable(key)} has a value of ${value.length} B`);
          if (value.birth > meta.version) problem(`${where}: the value of ${printable(key)} was born after the store's version`);
          if (!(await own(value.address, VALUE_HEADER_BYTES + value.length, `the value of ${printable(key)} in ${what}`))) continue;
          const bytes = decodeValue(await client.read(value.address, VALUE_HEADER_BYTES + value.length), value);
          if (bytes === undefined) problem(`${what}: the value of ${printable(key)} at ${hex(value.address)} does not check out`);
          else onEntry?.(key, bytes);
        }
        return;
      }
      if (depth >= meta.height) problem(`${where}: an internal node at depth ${depth}, the tree's height is ${meta.height}`);
      // Key 0 of an internal node bounds nothing; key i (i >= 1) is the lowest key under child i.
      for (let i = 1; i < node.keys.length; i++) {
        const key = node.keys[i];
        if (i >= 2 && compareKeys(node.keys[i - 1], key) >= 0) problem(`${where}: separator ${i} ${printable(key)} is not after separator ${i - 1}`);
        if (lower !== undefined && compareKeys(key, lower) < 0) problem(`${where}: separator ${printable(key)} lies below the node's range`);
        if (upper !== undefined && compareKeys(key, upper) >= 0) problem(`${where}: separator ${printable(key)} lies above the node's range`);
      }
      if (depth >= meta.height) return;
      for (let i = 0; i < node.children.length; i++) {
        await walk(node.children[i], depth + 1, i === 0 ? lower : node.keys[i], i + 1 < node.keys.length ? node.keys[i + 1] : upper);
      }
    };
    await walk(meta.root, 1, undefined, undefined);
    counts.keys += keys;
    // Keys under an unreadable node cannot be counted: the count is compared only when every node was read.
    if (unreadable === 0 && keys !== meta.count) problem(`${what}: the meta record counts ${meta.count} keys, the tree holds ${keys}`);
  }

  // The garbage list: batches from head to tail (a batch's `next` past the tail belongs to later versions).
  if ((meta.garbageHead === NULL_ADDRESS) !== (meta.garbageTail === NULL_ADDRESS)) {
    problem(`${what}: garbage head ${hex(meta.garbageHead)} and tail ${hex(meta.garbageTail)} disagree`);
    return;
  }
  let at = meta.garbageHead;
  for (let batches = 0; at !== NULL_ADDRESS; batches++) {
    const where = `${what}: garbage batch ${hex(at)}`;
    if (batches >= MAX_GARBAGE_BATCHES) return problem(`${what}: the garbage list does not end (a cycle?)`);
    if (!(await own(at, GARBAGE.addresses, `a garbage batch of ${what}`))) return;
    let header;
    try {
      header = decodeGarbageHeader(await client.read(at, GARBAGE.addresses), at);
    } catch (error) {
      return problem(`${where}: ${(error as Error).message}`);
    }
    if (header.version > meta.version) problem(`${where}: retired at version ${header.version}, after the store's ${meta.version}`);
    const size = (await client.objectSize(at)) ?? 0;
    if (GARBAGE.addresses + 8 * header.count > size) return problem(`${where}: lists ${header.count} addresses, more than its ${size} B hold`);
    for (const address of decodeGarbageAddresses(await client.read(at, GARBAGE.addresses + 8 * header.count), header.count)) {
      counts.garbage++;
      await own(address, 1, `garbage of ${what} (retired at version ${header.version})`);
    }
    if (at === meta.garbageTail) return;
    at = header.next;
  }
  if (meta.garbageHead !== NULL_ADDRESS) problem(`${what}: the garbage list ends before its tail ${hex(meta.garbageTail)}`);
}

async function readMeta(client: ClusterClient, address: GlobalAddress): Promise<Meta | undefined> {
  // A commit may rewrite the record while we read it: a torn copy fails its checksum; read again.
  for (let attempt = 0; attempt < 20; attempt++) {
    const meta = decodeMeta(await client.read(address, META_BYTES));
    if (meta !== undefined) return meta;
  }
  return undefined;
}

/**
 * A slot of a store's pin table holding version 0: writers free no garbage while it is there (the
 * store's own PinSlot protocol: owner token claimed by CAS, version, lease expiry renewed while held).
 */
class Pin {
  private readonly renewal: NodeJS.Timeout;
  private expiresMs: bigint;

  private constructor(private readonly client: ClusterClient, private readonly slot: GlobalAddress, private readonly token: bigint, expiresMs: bigint) {
    this.expiresMs = expiresMs;
    this.renewal = setInterval(() => { void this.renew().catch(() => undefined); }, PIN_LEASE_MS / 3);
    this.renewal.unref();
  }

  static async take(client: ClusterClient, table: GlobalAddress, what: string): Promise<Pin> {
    const bytes = await client.read(table, PIN_TABLE_BYTES);
    const token = crypto.randomBytes(8).readBigUInt64LE(0) | 1n;
    const now = BigInt(Date.now());
    for (let slot = 0; slot < PIN_SLOTS; slot++) {
      const at = slot * PIN_SLOT_BYTES;
      const owner = bytes.readBigUInt64LE(at + PIN.owner);
      if (owner !== 0n && bytes.readBigUInt64LE(at + PIN.expiresMs) > now) continue;
      const base = offsetAddress(table, at);
      if ((await client.cas64(offsetAddress(base, PIN.owner), owner, token)) !== owner) continue;
      await swap(client, offsetAddress(base, PIN.version), bytes.readBigUInt64LE(at + PIN.version), 0n);
      const expires = BigInt(Date.now() + PIN_LEASE_MS);
      await swap(client, offsetAddress(base, PIN.expiresMs), bytes.readBigUInt64LE(at + PIN.expiresMs), expires);
      return new Pin(client, base, token, expires);
    }
    throw new DpmsError('DPMS_BUSY', `all ${PIN_SLOTS} snapshot slots of ${what} are held`);
  }

  private async renew(): Promise<void> {
    this.expiresMs = await swap(this.client, offsetAddress(this.slot, PIN.expiresMs), this.expiresMs, BigInt(Date.now() + PIN_LEASE_MS));
  }

  async release(): Promise<void> {
    clearInterval(this.renewal);
    await this.client.cas64(offsetAddress(this.slot, PIN.owner), this.token, 0n);
  }
}

/** CAS a pin field to `desired`, whatever it held (8-B atomics: scanning writers never see half a value). */
async function swap(client: ClusterClient, address: GlobalAddress, expected: bigint, desired: bigint): Promise<bigint> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const found = await client.cas64(address, expected, desired);
    if (found === expected) return desired;
    expected = found;
  }
  throw new DpmsError('DPMS_BUSY', 'a snapshot pin field keeps changing under us');
}
