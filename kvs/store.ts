// KvStore: one named key-value store of pDKVS on a dpms cluster, through the pDSM client API only.
//
// Reads (get, has, getMany, iterators) are one-sided: a 128-B READ of the store's meta record, then the
// tree nodes (cached; published nodes never change) and the value object. Writes are group-committed:
// everything this client queued while the previous commit ran becomes one pDSM transaction that locks
// the meta record, builds the next copy-on-write version of the tree in DRAM, writes the new nodes and
// values out of place into objects allocated by the same transaction (persisted before the commit
// point), retires what the new version no longer uses into a garbage batch, frees older garbage no
// snapshot can still need, and rewrites the meta record. A crash before the commit point leaves the
// old version and no allocation; after it, the new version, whole. See docs/ARCHITECTURE.md "pDKVS".

import crypto from 'node:crypto';
import { DpmsError, makeAddress, nodeOf, NULL_ADDRESS, offsetOf, readAddress, writeAddress, type ClusterClient, type ClusterTransaction, type GlobalAddress } from '../pdsm';
import {
  ANCHOR_BYTES, checkAnchor, decodeGarbageAddresses, decodeGarbageHeader, decodeMeta, encodeAnchor, encodeGarbage, encodeMeta, encodeNode, encodeValue,
  GARBAGE, META_BYTES, NO_PIN, PIN, PIN_SLOT_BYTES, PIN_SLOTS, PIN_TABLE_BYTES, ROOT_AREA, type LeafValue, type Meta,
} from './format';
import { compareKeys, Cursor, INLINE_VALUE_BYTES, lookup, NodeReader, StaleRead, TreeBuilder, type Published } from './tree';
import { KEEP, KV_LIMITS, type KvEntry, type KvIteratorOptions, type KvOpenOptions, type KvOperation, type KvRange, type KvReadOptions, type KvSnapshotHandle, type KvUpdate } from './types';

/** How often a reader starts over after meeting reclaimed memory before it gives up. */
const MAX_READ_RETRIES = 100;
/** Garbage is freed no sooner than this after it was retired, so unpinned readers rarely meet reuse. */
const GARBAGE_GRACE_MS = 1000;
/** Most objects one commit frees (bounds the redo log of the transaction). */
const MAX_FREES_PER_COMMIT = 1024;
/** Most addresses in one garbage batch object. */
const GARBAGE_BATCH_ADDRESSES = 1024;
/** A snapshot pin not renewed for this long is ignored by writers (its client died). */
const PIN_LEASE_MS = 30_000;
/** Most operations and bytes one group commit takes from the queue. */
const MAX_COMMIT_OPERATIONS = 4096;
const MAX_COMMIT_BYTES = 32 * 1024 * 1024;

type Op =
  | { readonly type: 'put'; readonly key: Buffer; readonly value: Buffer }
  | { readonly type: 'del'; readonly key: Buffer }
  | { readonly type: 'update'; readonly key: Buffer; readonly fn: KvUpdate }
  | { readonly type: 'clear'; readonly range: KvRange }
  | { readonly type: 'create'; readonly key: Buffer };

/** One caller's request: its operations commit all together or not at all. */
interface Group {
  readonly ops: readonly Op[];
  readonly bytes: number;
  /** Snapshots captured before this write was queued (they must not see it). */
  readonly after: Promise<unknown> | undefined;
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

/** A captured version: the meta record it read, and how to let go of it. */
class Snapshot implements KvSnapshotHandle {
  private released = false;
  constructor(readonly meta: Meta, private readonly onRelease: (snapshot: Snapshot) => Promise<void>) {}
  get version(): number { return this.meta.version; }
  get isReleased(): boolean { return this.released; }
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.onRelease(this);
  }
}

export class KvStore {
  private readonly reader: NodeReader;
  private readonly queue: Group[] = [];
  private committing: Promise<void> | undefined;
  private readonly captures = new Set<Promise<unknown>>();
  private readonly pins: PinSlot;
  private closed = false;

  /** Internal: use KvStore.open. */
  constructor(private readonly client: ClusterClient, readonly name: string, private readonly metaAddress: GlobalAddress, reader: NodeReader, pinTable: GlobalAddress) {
    this.reader = reader;
    this.pins = new PinSlot(client, pinTable);
  }

  /** Open the store `name` of the cluster (created on first use unless createIfMissing is false). */
  static async open(client: ClusterClient, name = 'default', options: KvOpenOptions = {}): Promise<KvStore> {
    const key = nameKey(name);
    const catalog = await Catalog.of(client);
    let metaBytes = await catalog.store.get(key);
    if (metaBytes !== undefined && options.errorIfExists) throw new DpmsError('DPMS_EXISTS', `store '${name}' already exists`);
    if (metaBytes === undefined) {
      if (options.createIfMissing === false) throw new DpmsError('DPMS_NOT_FOUND', `store '${name}' does not exist`);
      const created = await catalog.store.enqueue([{ type: 'create', key }]) as { address: GlobalAddress; created: boolean };
      if (!created.created && options.errorIfExists) throw new DpmsError('DPMS_EXISTS', `store '${name}' already exists`);
      metaBytes = Buffer.alloc(8);
      writeAddress(metaBytes, 0, created.address);
    }
    const metaAddress = readAddress(metaBytes, 0);
    const meta = await readMeta(client, metaAddress, `store '${name}'`);
    return new KvStore(client, name, metaAddress, catalog.reader, meta.pins);
  }

  /** Names of the stores in the cluster, in order. */
  static async list(client: ClusterClient): Promise<string[]> {
    const catalog = await Catalog.of(client);
    const names: string[] = [];
    const iterator = catalog.store.iterator({ values: false });
    try {
      for (let entries = await iterator.nextv(1000); entries.length > 0; entries = await iterator.nextv(1000)) {
        for (const [key] of entries) names.push(key.toString('utf8'));
      }
    } finally {
      await iterator.close();
    }
    return names;
  }

  // ---- reads: one-sided ----

  async get(key: Uint8Array, options: KvReadOptions = {}): Promise<Buffer | undefined> {
    const checked = checkKey(key);
    return this.read(options, async (meta) => {
      const value = await lookup(this.reader, meta, checked);
      return value === undefined ? undefined : Buffer.from(await this.reader.value(value));
    });
  }

  async getMany(keys: readonly Uint8Array[], options: KvReadOptions = {}): Promise<Array<Buffer | undefined>> {
    const checked = keys.map((key) => checkKey(key));
    return this.read(options, (meta) => Promise.all(checked.map(async (key) => {
      const value = await lookup(this.reader, meta, key);
      return value === undefined ? undefined : Buffer.from(await this.reader.value(value));
    })));
  }

  async has(key: Uint8Array, options: KvReadOptions = {}): Promise<boolean> {
    const checked = checkKey(key);
    return this.read(options, async (meta) => (await lookup(this.reader, meta, checked)) !== undefined);
  }

  /** Keys in the store (from the meta record, O(1)). */
  async count(options: KvReadOptions = {}): Promise<number> {
    return this.read(options, async (meta) => meta.count);
  }

  /** An iterator over a range that sees the store as it was when the iterator was created. */
  iterator(options: KvIteratorOptions = {}): KvIterator {
    this.checkOpen();
    return new KvIterator(this, this.reader, checkRange(options), options.values ?? true, options.snapshot === undefined
      ? { snapshot: this.capture(), owned: true }
      : { snapshot: Promise.resolve(this.ownSnapshot(options.snapshot)), owned: false });
  }

  /** A consistent view of the current version, readable until released. */
  async snapshot(): Promise<KvSnapshotHandle> {
    this.checkOpen();
    return this.capture();
  }

  // ---- writes: group-committed pDSM transactions ----

  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.enqueue([{ type: 'put', key: copyKey(key), value: copyValue(value) }]);
  }

  async del(key: Uint8Array): Promise<void> {
    await this.enqueue([{ type: 'del', key: copyKey(key) }]);
  }

  /** Apply every operation, atomically. */
  async batch(operations: readonly KvOperation[]): Promise<void> {
    if (!Array.isArray(operations)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'a batch is an array of operations');
    if (operations.length > KV_LIMITS.maxBatchOperations) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `a batch holds at most ${KV_LIMITS.maxBatchOperations} operations (got ${operations.length})`);
    }
    const ops: Op[] = operations.map((operation) => {
      if (operation?.type === 'put') return { type: 'put', key: copyKey(operation.key), value: copyValue(operation.value) };
      if (operation?.type === 'del') return { type: 'del', key: copyKey(operation.key) };
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `unknown batch operation type '${String((operation as { type?: unknown })?.type)}' (put, del)`);
    });
    if (ops.length > 0) await this.enqueue(ops);
  }

  /** Atomic read-modify-write of one key; returns the value after it. `fn` may run more than once. */
  async update(key: Uint8Array, fn: KvUpdate): Promise<Buffer | undefined> {
    if (typeof fn !== 'function') throw new DpmsError('DPMS_INVALID_ARGUMENT', 'update needs a function');
    return await this.enqueue([{ type: 'update', key: copyKey(key), fn }]) as Buffer | undefined;
  }

  /** Delete every key in the range (all of them when no range), atomically; returns how many. */
  async clear(range: KvRange = {}): Promise<number> {
    return await this.enqueue([{ type: 'clear', range: checkRange(range) }]) as number;
  }

  /** Wait for queued writes, let go of snapshot pins. The ClusterClient stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.committing) await this.committing;
    await this.pins.close();
  }

  // ---- internals shared with KvIterator and Catalog ----

  /** Queue a group of operations for the next commit; resolves with its result once it is durable. */
  enqueue(ops: readonly Op[]): Promise<unknown> {
    this.checkOpen();
    let bytes = 0;
    for (const op of ops) bytes += ('key' in op ? op.key.length : 0) + (op.type === 'put' ? op.value.length : 0);
    if (bytes > KV_LIMITS.maxBatchBytes) throw new DpmsError('DPMS_INVALID_ARGUMENT', `a batch holds at most ${KV_LIMITS.maxBatchBytes} bytes of keys and values (got ${bytes})`);
    const after = this.captures.size > 0 ? Promise.allSettled([...this.captures]) : undefined;
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, bytes, after, resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  async readMetaFresh(): Promise<Meta> {
    return readMeta(this.client, this.metaAddress, `store '${this.name}'`);
  }

  /** Pin the current version (writers keep everything it uses) and capture it. */
  capture(): Promise<Snapshot> {
    this.checkOpen();
    const pending = this.pins.acquire(() => this.readMetaFresh()).then((meta) => new Snapshot(meta, (snapshot) => this.pins.release(snapshot.meta.version)));
    this.captures.add(pending);
    const forget = (): void => { this.captures.delete(pending); };
    pending.then(forget, forget);
    return pending;
  }

  private ownSnapshot(handle: KvSnapshotHandle): Snapshot {
    if (!(handle instanceof Snapshot)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'the snapshot option takes a snapshot made by KvStore.snapshot()');
    if (handle.isReleased) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'that snapshot was released');
    return handle;
  }

  private async read<T>(options: KvReadOptions, body: (meta: Meta) => Promise<T>): Promise<T> {
    this.checkOpen();
    if (options.snapshot !== undefined) {
      const snapshot = this.ownSnapshot(options.snapshot);
      try {
        return await body(snapshot.meta);
      } catch (error) {
        if (error instanceof StaleRead) throw new DpmsError('DPMS_CORRUPTION', `store '${this.name}': a pinned snapshot (version ${snapshot.version}) met reclaimed memory`);
        throw error;
      }
    }
    for (let attempt = 0; ; attempt++) {
      const meta = await this.readMetaFresh();
      try {
        return await body(meta);
      } catch (error) {
        if (!(error instanceof StaleRead)) throw error;
        if (attempt >= MAX_READ_RETRIES) throw new DpmsError('DPMS_CORRUPTION', `store '${this.name}': ${MAX_READ_RETRIES} reads in a row met reclaimed memory`);
      }
    }
  }

  private async commitLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const groups: Group[] = [];
        let operations = 0;
        let bytes = 0;
        while (this.queue.length > 0 && (groups.length === 0 || (operations + this.queue[0].ops.length <= MAX_COMMIT_OPERATIONS && bytes + this.queue[0].bytes <= MAX_COMMIT_BYTES))) {
          const group = this.queue.shift()!;
          operations += group.ops.length;
          bytes += group.bytes;
          groups.push(group);
        }
        await Promise.all(groups.map((group) => group.after));
        try {
          const outcomes = await this.commit(groups);
          groups.forEach((group, i) => (outcomes[i].ok ? group.resolve(outcomes[i].value) : group.reject(outcomes[i].error)));
        } catch (error) {
          for (const group of groups) group.reject(error);
        }
      }
    } finally {
      this.committing = undefined;
    }
  }

  private async commit(groups: readonly Group[]): Promise<Array<{ ok: boolean; value?: unknown; error?: unknown }>> {
    let published: Published['nodes'] = [];
    const outcomes = await this.client.transaction(async (tx) => {
      const meta = decodeMeta(await tx.read(this.metaAddress, META_BYTES));
      if (meta === undefined) throw new DpmsError('DPMS_CORRUPTION', `store '${this.name}': the meta record does not check out`);
      const birth = meta.version + 1;
      const builder = new TreeBuilder(this.reader, meta);
      const writes: Array<Promise<void>> = [];
      let placement: number | undefined;
      const allocate = async (bytes: Buffer): Promise<GlobalAddress> => {
        const address = await tx.alloc(bytes.length, placement);
        placement ??= nodeOf(address);
        const write = this.client.writePersist(address, bytes);
        // Awaited before the commit; when the body fails first, nobody awaits it: never unhandled.
        write.catch(() => undefined);
        writes.push(write);
        return address;
      };
      const results: Array<{ ok: boolean; value?: unknown; error?: unknown }> = [];
      for (const group of groups) {
        try {
          results.push({ ok: true, value: await this.applyGroup(builder, group.ops, birth, allocate) });
        } catch (error) {
          if (!(error instanceof GroupError)) throw error;
          results.push({ ok: false, error: error.cause });
        }
      }
      if (!builder.changed) return results;
      const tree = await builder.publish(birth, (node) => allocate(encodeNode(node, birth)));
      published = tree.nodes;
      const garbage = await this.reclaim(tx, meta);
      let { head, tail } = garbage;
      const now = Date.now();
      for (let at = 0; at < builder.retired.length; at += GARBAGE_BATCH_ADDRESSES) {
        const address = await allocate(encodeGarbage(builder.retired.slice(at, at + GARBAGE_BATCH_ADDRESSES), birth, now));
        if (tail === NULL_ADDRESS) {
          head = address;
        } else {
          await tx.write(offsetAddress(tail, GARBAGE.next), addressBytes(address));
        }
        tail = address;
      }
      await Promise.all(writes);
      await tx.write(this.metaAddress, encodeMeta({
        version: birth, root: tree.root ?? { address: NULL_ADDRESS, birth: 0, length: 0 }, count: builder.count,
        garbageHead: head, garbageTail: tail, pins: meta.pins, height: builder.height,
      }));
      return results;
    });
    for (const { ref, node } of published) this.reader.remember(ref, node);
    return outcomes;
  }

  // Run one group against the version being built: compute its effect first (so a failing update leaves
  // nothing behind), then apply it. A GroupError fails only this group.
  private async applyGroup(builder: TreeBuilder, ops: readonly Op[], birth: number, allocate: (bytes: Buffer) => Promise<GlobalAddress>): Promise<unknown> {
    const effects = new Map<string, { key: Buffer; value: Buffer | undefined }>();
    const current = async (key: Buffer): Promise<Buffer | undefined> => {
      const staged = effects.get(key.toString('latin1'));
      if (staged) return staged.value;
      const value = await builder.get(key);
      return value === undefined ? undefined : Buffer.from(await this.reader.value(value));
    };
    let result: unknown;
    for (const op of ops) {
      if (op.type === 'put' || op.type === 'del') {
        effects.set(op.key.toString('latin1'), { key: op.key, value: op.type === 'put' ? op.value : undefined });
      } else if (op.type === 'update') {
        const before = await current(op.key);
        let after: Uint8Array | undefined | typeof KEEP;
        try {
          after = op.fn(before);
        } catch (error) {
          throw new GroupError(error);
        }
        if (after === KEEP) {
          result = before;
          continue;
        }
        let value: Buffer | undefined;
        try {
          value = after === undefined ? undefined : copyValue(after);
        } catch (error) {
          throw new GroupError(error);
        }
        effects.set(op.key.toString('latin1'), { key: op.key, value });
        result = value;
      } else if (op.type === 'clear') {
        const keys = await builder.keysIn((key) => rangePosition(op.range, key), op.range.reverse === true, op.range.limit ?? -1);
        for (const key of keys) effects.set(key.toString('latin1'), { key, value: undefined });
        result = keys.length;
      } else {
        const existing = await current(op.key);
        if (existing !== undefined) {
          result = { address: readAddress(existing, 0), created: false };
          continue;
        }
        const pins = await allocate(Buffer.alloc(PIN_TABLE_BYTES));
        const metaAddress = await allocate(encodeMeta(emptyMeta(pins)));
        effects.set(op.key.toString('latin1'), { key: op.key, value: addressBytes(metaAddress) });
        result = { address: metaAddress, created: true };
      }
    }
    for (const { key, value } of effects.values()) {
      if (value === undefined) {
        await builder.del(key);
      } else {
        let stored: LeafValue = value;
        if (value.length > INLINE_VALUE_BYTES) stored = { address: await allocate(encodeValue(value, birth)), birth, length: value.length };
        await builder.put(key, stored);
      }
    }
    return result;
  }

  // Free the oldest garbage batches that no pinned snapshot can need, within the per-commit bound.
  private async reclaim(tx: ClusterTransaction, meta: Meta): Promise<{ head: GlobalAddress; tail: GlobalAddress }> {
    let head = meta.garbageHead;
    if (head === NULL_ADDRESS) return { head, tail: NULL_ADDRESS };
    const now = Date.now();
    const oldestPinned = await this.pins.oldestPinned(now);
    let freed = 0;
    while (head !== NULL_ADDRESS) {
      const header = decodeGarbageHeader(await this.client.read(head, GARBAGE.addresses), head);
      if (BigInt(header.version) > oldestPinned || header.timeMs + GARBAGE_GRACE_MS > now) break;
      if (freed > 0 && freed + header.count + 1 > MAX_FREES_PER_COMMIT) break;
      const addresses = decodeGarbageAddresses(await this.client.read(head, GARBAGE.addresses + 8 * header.count), header.count);
      for (const address of addresses) await tx.free(address);
      await tx.free(head);
      freed += header.count + 1;
      head = header.next;
    }
    return { head, tail: head === NULL_ADDRESS ? NULL_ADDRESS : meta.garbageTail };
  }

  private checkOpen(): void {
    if (this.closed) throw new DpmsError('DPMS_CLOSED', `store '${this.name}' is closed`);
  }
}

/** An update function threw: only its group fails. */
class GroupError extends Error {
  constructor(override readonly cause: unknown) {
    super('update failed');
  }
}

/** Iterates a range of one snapshot, fetching leaves as it goes (KvStore.iterator). */
export class KvIterator {
  private cursor: Cursor | undefined;
  private pendingSeek: Buffer | undefined;
  private yielded = 0;
  private ended = false;
  private closed = false;

  constructor(
    private readonly store: KvStore, private readonly reader: NodeReader, private readonly range: KvRange, private readonly withValues: boolean,
    private readonly held: { snapshot: Promise<Snapshot>; owned: boolean },
  ) {
    held.snapshot.catch(() => undefined);
  }

  async next(): Promise<KvEntry | undefined> {
    const [entry] = await this.nextv(1);
    return entry;
  }

  /** Up to `size` entries; [] at the end. */
  async nextv(size: number): Promise<KvEntry[]> {
    if (this.closed) throw new DpmsError('DPMS_CLOSED', 'this iterator is closed');
    if (!Number.isInteger(size) || size < 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', `nextv takes a size >= 0 (got ${size})`);
    const snapshot = await this.held.snapshot;
    const forward = this.range.reverse !== true;
    const limit = this.range.limit === undefined || this.range.limit < 0 ? Infinity : this.range.limit;
    if (this.cursor === undefined || this.pendingSeek !== undefined) {
      this.cursor ??= new Cursor(this.reader, snapshot.meta);
      this.ended = false;
      await this.position(this.cursor, forward);
    }
    const keys: Buffer[] = [];
    const values: LeafValue[] = [];
    try {
      while (!this.ended && keys.length < size && this.yielded < limit) {
        const key = this.cursor.key;
        if (key === undefined || rangePosition(this.range, key) !== 0) {
          this.ended = true;
          break;
        }
        keys.push(key);
        values.push(this.cursor.value!);
        this.yielded++;
        await this.cursor.step(forward);
      }
      const fetched = this.withValues ? await Promise.all(values.map((value) => this.reader.value(value))) : undefined;
      return keys.map((key, i) => [Buffer.from(key), fetched === undefined ? undefined : Buffer.from(fetched[i])]);
    } catch (error) {
      if (error instanceof StaleRead) throw new DpmsError('DPMS_CORRUPTION', `iterator of store '${this.store.name}': its snapshot (version ${snapshot.version}) met reclaimed memory`);
      throw error;
    }
  }

  /** Continue from the first key >= target (forward) or <= target (reverse), within the range. */
  seek(target: Uint8Array): void {
    if (this.closed) throw new DpmsError('DPMS_CLOSED', 'this iterator is closed');
    this.pendingSeek = copyKey(target, true);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.held.owned) {
      const snapshot = await this.held.snapshot.catch(() => undefined);
      await snapshot?.release();
    }
  }

  private async position(cursor: Cursor, forward: boolean): Promise<void> {
    // Start at the range bound, or at a sought target when it lies further along.
    const range = this.range;
    let start: Buffer | undefined = forward ? (range.gte ?? range.gt) as Buffer | undefined : (range.lte ?? range.lt) as Buffer | undefined;
    let exclusive = forward ? range.gte === undefined && range.gt !== undefined : range.lte === undefined && range.lt !== undefined;
    const target = this.pendingSeek;
    this.pendingSeek = undefined;
    if (target !== undefined && (start === undefined || (forward ? Buffer.compare(target, start) > 0 : Buffer.compare(target, start) < 0))) {
      start = target;
      exclusive = false;
    }
    await cursor.seek(start, forward, exclusive);
  }
}

// ---- the catalog: store names → meta records, itself a store whose meta sits in the root area ----

class Catalog {
  private static readonly byClient = new WeakMap<ClusterClient, Promise<Catalog>>();

  private constructor(readonly store: KvStore, readonly reader: NodeReader) {}

  static of(client: ClusterClient): Promise<Catalog> {
    let pending = Catalog.byClient.get(client);
    if (!pending) {
      pending = Catalog.open(client);
      Catalog.byClient.set(client, pending);
      pending.catch(() => Catalog.byClient.delete(client));
    }
    return pending;
  }

  private static async open(client: ClusterClient): Promise<Catalog> {
    const home = Math.min(...client.nodeIds);
    const area = await client.root(home);
    const anchorAddress = area;
    const metaAddress = offsetAddress(area, ROOT_AREA.catalogMeta);
    if (!checkAnchor(await client.read(anchorAddress, ANCHOR_BYTES))) {
      // First use of the cluster: create the catalog (two clients racing are serialized by the lock).
      await client.transaction(async (tx) => {
        if (checkAnchor(await tx.read(anchorAddress, ANCHOR_BYTES))) return;
        await tx.read(metaAddress, META_BYTES);
        const pins = await tx.alloc(PIN_TABLE_BYTES, home);
        await client.writePersist(pins, Buffer.alloc(PIN_TABLE_BYTES));
        await tx.write(metaAddress, encodeMeta(emptyMeta(pins)));
        await tx.write(anchorAddress, encodeAnchor());
      });
    }
    const meta = await readMeta(client, metaAddress, 'the store catalog');
    const reader = new NodeReader(client);
    return new Catalog(new KvStore(client, '', metaAddress, reader, meta.pins), reader);
  }
}

// ---- snapshot pins: one slot per open store instance in the store's pin table ----

/**
 * This client's slot in a store's pin table. The slot holds the oldest version any of this instance's
 * snapshots reads; writers never free garbage retired after it. Taking the first pin writes 0 (pins
 * everything) before reading the meta record, so a writer that read the table earlier cannot free
 * what the new snapshot needs: that writer holds the meta lock, so the version we then read is at
 * least the one it publishes.
 */
class PinSlot {
  private slot = -1;
  private readonly token = crypto.randomBytes(8).readBigUInt64LE(0) | 1n;
  private pinnedVersion = NO_PIN;
  private expiresMs = 0n;
  private readonly versions = new Map<number, number>();
  private chain: Promise<unknown> = Promise.resolve();
  private renewal: NodeJS.Timeout | undefined;

  constructor(private readonly client: ClusterClient, private readonly table: GlobalAddress) {}

  acquire(readMeta: () => Promise<Meta>): Promise<Meta> {
    return this.serialized(async () => {
      if (this.slot < 0) await this.claim();
      if (this.versions.size === 0) await this.setVersion(0n);
      const meta = await readMeta();
      this.versions.set(meta.version, (this.versions.get(meta.version) ?? 0) + 1);
      await this.setVersion(this.oldestLocal());
      return meta;
    });
  }

  release(version: number): Promise<void> {
    return this.serialized(async () => {
      const count = this.versions.get(version) ?? 0;
      if (count <= 1) this.versions.delete(version);
      else this.versions.set(version, count - 1);
      if (this.slot >= 0) await this.setVersion(this.oldestLocal());
    });
  }

  /** The oldest version any live pin of the table holds (NO_PIN when none). */
  async oldestPinned(nowMs: number): Promise<bigint> {
    const table = await this.client.read(this.table, PIN_TABLE_BYTES);
    let oldest = NO_PIN;
    for (let slot = 0; slot < PIN_SLOTS; slot++) {
      const at = slot * PIN_SLOT_BYTES;
      if (table.readBigUInt64LE(at + PIN.owner) === 0n || table.readBigUInt64LE(at + PIN.expiresMs) <= BigInt(nowMs)) continue;
      const version = table.readBigUInt64LE(at + PIN.version);
      if (version < oldest) oldest = version;
    }
    return oldest;
  }

  async close(): Promise<void> {
    await this.serialized(async () => {
      clearInterval(this.renewal);
      if (this.slot < 0) return;
      await this.client.cas64(this.field(PIN.owner), this.token, 0n).catch(() => undefined);
      this.slot = -1;
    });
  }

  private async claim(): Promise<void> {
    const table = await this.client.read(this.table, PIN_TABLE_BYTES);
    const now = BigInt(Date.now());
    for (let slot = 0; slot < PIN_SLOTS; slot++) {
      const at = slot * PIN_SLOT_BYTES;
      const owner = table.readBigUInt64LE(at + PIN.owner);
      if (owner !== 0n && table.readBigUInt64LE(at + PIN.expiresMs) > now) continue;
      if ((await this.client.cas64(offsetAddress(this.table, at + PIN.owner), owner, this.token)) !== owner) continue;
      this.slot = slot;
      this.pinnedVersion = table.readBigUInt64LE(at + PIN.version);
      this.expiresMs = table.readBigUInt64LE(at + PIN.expiresMs);
      await this.renew();
      this.renewal = setInterval(() => { void this.serialized(() => this.renew()).catch(() => undefined); }, PIN_LEASE_MS / 3);
      this.renewal.unref();
      return;
    }
    throw new DpmsError('DPMS_BUSY', `all ${PIN_SLOTS} snapshot slots of this store are held by other clients; close some iterators and retry`);
  }

  private async renew(): Promise<void> {
    if (this.slot < 0) return;
    this.expiresMs = await this.swap(PIN.expiresMs, this.expiresMs, BigInt(Date.now() + PIN_LEASE_MS));
  }

  private async setVersion(version: bigint): Promise<void> {
    if (version === this.pinnedVersion) return;
    this.pinnedVersion = await this.swap(PIN.version, this.pinnedVersion, version);
  }

  // CAS a field of our slot from what we last wrote to `desired` (re-reading when a previous owner of an
  // expired slot wrote last); 8-B atomics, so a writer scanning the table never sees half a value.
  private async swap(field: number, expected: bigint, desired: bigint): Promise<bigint> {
    for (;;) {
      const found = await this.client.cas64(this.field(field), expected, desired);
      if (found === expected) return desired;
      expected = found;
    }
  }

  private field(field: number): GlobalAddress {
    return offsetAddress(this.table, this.slot * PIN_SLOT_BYTES + field);
  }

  private oldestLocal(): bigint {
    let oldest = Infinity;
    for (const version of this.versions.keys()) if (version < oldest) oldest = version;
    return oldest === Infinity ? NO_PIN : BigInt(oldest);
  }

  private serialized<T>(body: () => Promise<T>): Promise<T> {
    const next = this.chain.then(body, body);
    this.chain = next.catch(() => undefined);
    return next;
  }
}

// ---- helpers ----

async function readMeta(client: ClusterClient, address: GlobalAddress, what: string): Promise<Meta> {
  // A commit rewrites the record while we read it now and then: a torn copy fails its checksum; read again.
  for (let attempt = 0; attempt < MAX_READ_RETRIES; attempt++) {
    const meta = decodeMeta(await client.read(address, META_BYTES));
    if (meta !== undefined) return meta;
  }
  throw new DpmsError('DPMS_CORRUPTION', `${what}: the meta record at ${nodeOf(address)}:0x${offsetOf(address).toString(16)} does not check out (destroyed, or corrupt)`);
}

function emptyMeta(pins: GlobalAddress): Meta {
  return { version: 1, root: { address: NULL_ADDRESS, birth: 0, length: 0 }, count: 0, garbageHead: NULL_ADDRESS, garbageTail: NULL_ADDRESS, pins, height: 0 };
}

function offsetAddress(address: GlobalAddress, delta: number): GlobalAddress {
  return makeAddress(nodeOf(address), offsetOf(address) + delta);
}

function addressBytes(address: GlobalAddress): Buffer {
  const bytes = Buffer.alloc(8);
  writeAddress(bytes, 0, address);
  return bytes;
}

function nameKey(name: string): Buffer {
  if (typeof name !== 'string' || name.length === 0) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'a store name is a non-empty string');
  const key = Buffer.from(name, 'utf8');
  if (key.length > KV_LIMITS.maxNameBytes) throw new DpmsError('DPMS_INVALID_ARGUMENT', `a store name is at most ${KV_LIMITS.maxNameBytes} bytes (got ${key.length})`);
  return key;
}

function checkKey(key: Uint8Array, allowEmpty = false): Buffer {
  if (!(key instanceof Uint8Array)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'a key is a Buffer or Uint8Array');
  if (key.length === 0 && !allowEmpty) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'empty keys are not allowed');
  if (key.length > KV_LIMITS.maxKeyBytes) throw new DpmsError('DPMS_KEY_TOO_LARGE', `a key is at most ${KV_LIMITS.maxKeyBytes} bytes (got ${key.length})`);
  return Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.length);
}

function copyKey(key: Uint8Array, allowEmpty = false): Buffer {
  return Buffer.from(checkKey(key, allowEmpty));
}

function copyValue(value: Uint8Array): Buffer {
  if (!(value instanceof Uint8Array)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'a value is a Buffer or Uint8Array (an update returns bytes, undefined or KEEP)');
  if (value.length > KV_LIMITS.maxValueBytes) throw new DpmsError('DPMS_VALUE_TOO_LARGE', `a value is at most ${KV_LIMITS.maxValueBytes} bytes (got ${value.length})`);
  return Buffer.from(value);
}

/** Validate and copy a range (bounds may be empty: the empty key sorts before every key). */
function checkRange(options: KvRange): KvRange {
  const bound = (value: Uint8Array | undefined): Buffer | undefined => (value === undefined ? undefined : copyKey(value, true));
  const limit = options.limit ?? -1;
  if (typeof limit !== 'number' || Number.isNaN(limit)) throw new DpmsError('DPMS_INVALID_ARGUMENT', 'limit is a number');
  // Both bounds on one side: keep the stricter, so every bound that is given holds (AND).
  let gt = bound(options.gt);
  let gte = bound(options.gte);
  let lt = bound(options.lt);
  let lte = bound(options.lte);
  if (gt !== undefined && gte !== undefined) {
    if (compareKeys(gt, gte) >= 0) gte = undefined;
    else gt = undefined;
  }
  if (lt !== undefined && lte !== undefined) {
    if (compareKeys(lt, lte) <= 0) lte = undefined;
    else lt = undefined;
  }
  return { gt, gte, lt, lte, reverse: options.reverse === true, limit: limit < 0 || limit === Infinity ? -1 : Math.floor(limit) };
}

/** -1 when key sorts before the range, 0 inside, 1 after it. */
function rangePosition(range: KvRange, key: Buffer): -1 | 0 | 1 {
  if (range.gte !== undefined && compareKeys(key, range.gte as Buffer) < 0) return -1;
  if (range.gt !== undefined && compareKeys(key, range.gt as Buffer) <= 0) return -1;
  if (range.lte !== undefined && compareKeys(key, range.lte as Buffer) > 0) return 1;
  if (range.lt !== undefined && compareKeys(key, range.lt as Buffer) >= 0) return 1;
  return 0;
}
