// DpmsLevel: an abstract-level (v3) database over a pDKVS store, so that code written for Level
// (level, classic-level, memory-level, sublevels, hooks, encodings) runs on a dpms cluster. It sits on
// the KvStore face of kvs/ and on the ClusterClient of pdsm/; abstract-level does argument checking,
// encodings, deferred open, sublevels and hooks, and this file only implements its private API
// (README "Private API for implementors").
//
// Level allows the empty key and KvStore refuses it, so keys are stored through an order-preserving
// escape (storeKey/levelKey below) that leaves every key not starting with 0x00 as it is.
//
// Snapshots: abstract-level wants a snapshot fixed synchronously when db.snapshot() or an iterator is
// created, while KvStore.snapshot() is a round trip. KvStore holds every write queued after a
// snapshot (or iterator) was requested until that snapshot is fixed, and a DpmsLevel sends all its
// writes through one KvStore, so requesting the snapshot synchronously is enough.

import {
  AbstractIterator,
  AbstractKeyIterator,
  AbstractLevel,
  AbstractSnapshot,
  AbstractValueIterator,
  type AbstractDatabaseOptions,
} from 'abstract-level';
import { ClusterClient, DpmsError, isDpmsError, loadClusterConfig, type ClusterConfig, type DpmsErrorCode, type ProviderName } from '../pdsm';
import { KvStore, type KvIterator } from './store';
import { KV_LIMITS, type KvEntry, type KvOperation, type KvRange, type KvSnapshotHandle } from './types';

/** The formats keys and values have in the private API: one of the three encodings declared in the manifest. */
type Format = 'buffer' | 'view' | 'utf8';
/** What the private API receives and must return, per format. */
type Data = Buffer | Uint8Array | string;

export interface DpmsLevelOptions<K, V> extends AbstractDatabaseOptions<K, V> {
  /** Use this connected client (shared, never closed by the database). */
  readonly client?: ClusterClient;
  /** Otherwise connect a client of its own (in open, closed in close) from a cluster.yaml path or a parsed config. */
  readonly config?: string | ClusterConfig;
  /** The transport provider for the own client (default: the one each node configures). */
  readonly provider?: ProviderName;
}

/** Most entries one iterator read hands back, so that nextv(1e9) cannot ask the store for everything at once. */
const MAX_ENTRIES_PER_READ = 1000;

// ---- keys: Level allows the empty key, KvStore does not --------------------------------------------
//
// storeKey() is injective and keeps bytewise order: '' -> 00, 00 x -> 00 00 x, anything else as it is.
// The empty key becomes the smallest non-empty key, keys starting with 00 sort after it and before
// every key starting with 01..ff. So ranges and seek targets map with the same function, and keys a
// Level user writes with text or most binary encodings are stored exactly as given (readable by
// `dpms kv` and the RESP gateway). A key stored raw by another client that starts with 00 but not
// 00 00 is outside the mapping; levelKey() reads it as if escaped (documented in kvs/README.md).

const ESCAPE = 0x00;
const EMPTY_KEY = Buffer.from([ESCAPE]);

function storeKey(key: Buffer): Buffer {
  if (key.length === 0) return EMPTY_KEY;
  if (key[0] !== ESCAPE) return key;
  return Buffer.concat([EMPTY_KEY, key]);
}

function levelKey(key: Buffer): Buffer {
  return key[0] === ESCAPE ? key.subarray(1) : key;
}

/** Input data (as abstract-level encoded it) to bytes, without copying views. */
function toBytes(data: Data): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Bytes from the store in the format the caller asked for. */
function fromBytes(bytes: Buffer, format: Format): Data {
  if (format === 'utf8') return bytes.toString('utf8');
  if (format === 'view') return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return bytes;
}

// ---- errors ----------------------------------------------------------------------------------------

/** Level's error codes (abstract-level README, "Errors") that store errors map to. */
export type LevelErrorCode =
  | 'LEVEL_INVALID_KEY' | 'LEVEL_INVALID_VALUE' | 'LEVEL_DATABASE_NOT_OPEN' | 'LEVEL_ITERATOR_NOT_OPEN'
  | 'LEVEL_SNAPSHOT_NOT_OPEN' | 'LEVEL_CORRUPTION' | 'LEVEL_IO_ERROR' | 'LEVEL_CONNECTION_LOST';

/** An error with a Level code; `cause` is the DpmsError from the store, so its DPMS_* code stays reachable. */
export class DpmsLevelError extends Error {
  readonly code: LevelErrorCode;

  constructor(code: LevelErrorCode, message: string, options: { cause: DpmsError }) {
    super(message, options);
    this.name = 'DpmsLevelError';
    this.code = code;
  }
}

/** Store codes that have a Level meaning; every other error (typed DpmsError) passes through as it is. */
const LEVEL_CODES: Partial<Record<DpmsErrorCode, LevelErrorCode>> = {
  DPMS_KEY_TOO_LARGE: 'LEVEL_INVALID_KEY',
  DPMS_VALUE_TOO_LARGE: 'LEVEL_INVALID_VALUE',
  DPMS_CORRUPTION: 'LEVEL_CORRUPTION',
  DPMS_CHECKSUM: 'LEVEL_CORRUPTION',
  DPMS_IO: 'LEVEL_IO_ERROR',
  DPMS_DISCONNECTED: 'LEVEL_CONNECTION_LOST',
  DPMS_UNREACHABLE: 'LEVEL_CONNECTION_LOST',
};

function toLevelError(error: unknown, closedCode: LevelErrorCode = 'LEVEL_DATABASE_NOT_OPEN'): unknown {
  if (!isDpmsError(error)) return error;
  const code = error.code === 'DPMS_CLOSED' ? closedCode : LEVEL_CODES[error.code];
  return code === undefined ? error : new DpmsLevelError(code, error.message, { cause: error });
}

/** Run a store call and give its errors Level codes. */
async function withLevelCodes<T>(call: () => Promise<T>, closedCode?: LevelErrorCode): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toLevelError(error, closedCode);
  }
}

// ---- snapshots -------------------------------------------------------------------------------------

/** The options abstract-level gives AbstractSnapshot (the owner closes the snapshot when it closes). */
interface SnapshotOptions { readonly owner: object }

// The published types declare AbstractSnapshot without its (options) constructor; this says what it is.
const SnapshotBase = AbstractSnapshot as unknown as new (options: SnapshotOptions) => AbstractSnapshot;

/** An explicit snapshot: a KvStore snapshot handle, requested at once and released on close. */
export class DpmsSnapshot extends SnapshotBase {
  private readonly handle: Promise<KvSnapshotHandle>;
  private fixed: KvSnapshotHandle | undefined;

  constructor(options: SnapshotOptions, store: KvStore) {
    super(options);
    // Requested now: KvStore makes writes queued from here on wait until this snapshot is fixed.
    this.handle = store.snapshot().then((handle) => (this.fixed = handle));
    // A failure is reported to whoever reads through the snapshot.
    this.handle.catch(() => undefined);
  }

  /** The store handle, once fixed. */
  async storeHandle(): Promise<KvSnapshotHandle> {
    return this.fixed ?? withLevelCodes(() => this.handle);
  }

  /** The store handle if already fixed, so an iterator can start without a tick. */
  get fixedHandle(): KvSnapshotHandle | undefined {
    return this.fixed;
  }

  async _close(): Promise<void> {
    const handle = await this.handle.catch(() => undefined);
    await handle?.release();
  }
}

/** The read options abstract-level passes to the private API. */
interface ReadOptions {
  readonly keyEncoding: Format;
  readonly valueEncoding: Format;
  readonly snapshot?: DpmsSnapshot;
}

async function snapshotOf(options: { readonly snapshot?: DpmsSnapshot }): Promise<KvSnapshotHandle | undefined> {
  return options.snapshot === undefined ? undefined : options.snapshot.storeHandle();
}

// ---- iterators -------------------------------------------------------------------------------------

/** The range and read options abstract-level passes to _iterator, _keys, _values and _clear. */
interface RangeOptions {
  readonly gt?: Data;
  readonly gte?: Data;
  readonly lt?: Data;
  readonly lte?: Data;
  readonly reverse: boolean;
  readonly limit: number;
  readonly keyEncoding: Format;
  readonly valueEncoding?: Format;
  readonly keys?: boolean;
  readonly values?: boolean;
  readonly snapshot?: DpmsSnapshot;
}

/** Level's range in store keys. In Level an inclusive bound overrides an exclusive one on the same side. */
function storeRange(options: RangeOptions): KvRange {
  const bound = (data: Data | undefined): Buffer | undefined => (data === undefined ? undefined : storeKey(toBytes(data)));
  return {
    ...(options.gte !== undefined ? { gte: bound(options.gte) } : { gt: bound(options.gt) }),
    ...(options.lte !== undefined ? { lte: bound(options.lte) } : { lt: bound(options.lt) }),
    reverse: options.reverse,
    limit: options.limit,
  };
}

/**
 * One KvIterator behind the three Level iterator kinds. It is created at once (so the implicit snapshot
 * is taken when the Level iterator is), except when reading an explicit snapshot that is not fixed
 * yet; then on first use, with a seek made before that applied to it. Creating it never throws: a
 * failure (a closed store, a released snapshot) is reported by the first read, after abstract-level
 * has made its own checks (a closed snapshot is LEVEL_SNAPSHOT_NOT_OPEN, not a store error).
 */
class Cursor {
  private iterator: KvIterator | undefined;
  private opening: Promise<KvIterator> | undefined;
  private pendingSeek: Buffer | undefined;

  constructor(private readonly store: KvStore, private readonly range: KvRange, private readonly values: boolean, snapshot: DpmsSnapshot | undefined) {
    const fixed = snapshot?.fixedHandle;
    if (snapshot === undefined || fixed !== undefined) {
      try {
        this.iterator = this.create(fixed);
      } catch (error) {
        this.opening = Promise.reject(error);
      }
    } else {
      this.opening = snapshot.storeHandle().then((handle) => {
        const iterator = this.create(handle);
        if (this.pendingSeek !== undefined) iterator.seek(this.pendingSeek);
        this.iterator = iterator;
        return iterator;
      });
    }
    this.opening?.catch(() => undefined);
  }

  private create(snapshot: KvSnapshotHandle | undefined): KvIterator {
    return this.store.iterator({ ...this.range, values: this.values, snapshot });
  }

  private async open(): Promise<KvIterator> {
    return this.iterator ?? (this.opening as Promise<KvIterator>);
  }

  async next(): Promise<KvEntry | undefined> {
    return withLevelCodes(async () => (await this.open()).next(), 'LEVEL_ITERATOR_NOT_OPEN');
  }

  async nextv(size: number): Promise<KvEntry[]> {
    return withLevelCodes(async () => (await this.open()).nextv(Math.min(size, MAX_ENTRIES_PER_READ)), 'LEVEL_ITERATOR_NOT_OPEN');
  }

  seek(target: Data): void {
    const key = storeKey(toBytes(target));
    if (this.iterator !== undefined) this.iterator.seek(key);
    else this.pendingSeek = key;
  }

  async close(): Promise<void> {
    const iterator = await (this.iterator ?? this.opening?.catch(() => undefined));
    await iterator?.close();
  }
}

/** abstract-level's iterator options, with the private-API fields this file reads. */
type IteratorOptions = RangeOptions & { readonly [key: symbol]: unknown };

export class DpmsIterator<K, V> extends AbstractIterator<DpmsLevel<K, V>, K, V> {
  private readonly cursor: Cursor;
  private readonly keyFormat: Format;
  private readonly valueFormat: Format;
  private readonly wantKeys: boolean;
  private readonly wantValues: boolean;

  constructor(db: DpmsLevel<K, V>, options: IteratorOptions, store: KvStore) {
    super(db, options as never);
    this.wantKeys = options.keys !== false;
    this.wantValues = options.values !== false;
    this.keyFormat = options.keyEncoding;
    this.valueFormat = options.valueEncoding ?? 'utf8';
    this.cursor = new Cursor(store, storeRange(options), this.wantValues, options.snapshot);
  }

  private entry([key, value]: KvEntry): [Data | undefined, Data | undefined] {
    return [
      this.wantKeys ? fromBytes(levelKey(key), this.keyFormat) : undefined,
      this.wantValues && value !== undefined ? fromBytes(value, this.valueFormat) : undefined,
    ];
  }

  async _next(): Promise<[Data | undefined, Data | undefined] | undefined> {
    const entry = await this.cursor.next();
    return entry === undefined ? undefined : this.entry(entry);
  }

  async _nextv(size: number): Promise<Array<[Data | undefined, Data | undefined]>> {
    return (await this.cursor.nextv(size)).map((entry) => this.entry(entry));
  }

  _seek(target: Data): void {
    this.cursor.seek(target);
  }

  async _close(): Promise<void> {
    await this.cursor.close();
  }
}

/** A keys-only iterator: it asks the store for no values (KvIteratorOptions.values false). */
export class DpmsKeyIterator<K, V> extends AbstractKeyIterator<DpmsLevel<K, V>, K> {
  private readonly cursor: Cursor;
  private readonly keyFormat: Format;

  constructor(db: DpmsLevel<K, V>, options: IteratorOptions, store: KvStore) {
    super(db, options as never);
    this.keyFormat = options.keyEncoding;
    this.cursor = new Cursor(store, storeRange(options), false, options.snapshot);
  }

  async _next(): Promise<Data | undefined> {
    const entry = await this.cursor.next();
    return entry === undefined ? undefined : fromBytes(levelKey(entry[0]), this.keyFormat);
  }

  async _nextv(size: number): Promise<Data[]> {
    return (await this.cursor.nextv(size)).map(([key]) => fromBytes(levelKey(key), this.keyFormat));
  }

  _seek(target: Data): void {
    this.cursor.seek(target);
  }

  async _close(): Promise<void> {
    await this.cursor.close();
  }
}

export class DpmsValueIterator<K, V> extends AbstractValueIterator<DpmsLevel<K, V>, K, V> {
  private readonly cursor: Cursor;
  private readonly valueFormat: Format;

  constructor(db: DpmsLevel<K, V>, options: IteratorOptions, store: KvStore) {
    super(db, options as never);
    this.valueFormat = options.valueEncoding ?? 'utf8';
    this.cursor = new Cursor(store, storeRange(options), true, options.snapshot);
  }

  private value([, value]: KvEntry): Data {
    // A values iterator always asks for values; an entry without one is a store bug.
    if (value === undefined) throw new DpmsError('DPMS_CORRUPTION', 'the store returned an entry without its value to a values iterator');
    return fromBytes(value, this.valueFormat);
  }

  async _next(): Promise<Data | undefined> {
    const entry = await this.cursor.next();
    return entry === undefined ? undefined : this.value(entry);
  }

  async _nextv(size: number): Promise<Data[]> {
    return (await this.cursor.nextv(size)).map((entry) => this.value(entry));
  }

  _seek(target: Data): void {
    this.cursor.seek(target);
  }

  async _close(): Promise<void> {
    await this.cursor.close();
  }
}

// ---- the database ----------------------------------------------------------------------------------

interface BatchOperation {
  readonly type: 'put' | 'del';
  readonly key: Data;
  readonly value?: Data;
}

/**
 * An abstract-level database whose data lives in the pDKVS store `location` of a dpms cluster. Every
 * write is durable and atomic when its promise resolves; several DpmsLevel instances, in one process
 * or many, may open the same store and see each other's writes.
 */
export class DpmsLevel<K = string, V = string> extends AbstractLevel<Data, K, V> {
  readonly location: string;
  private readonly sharedClient: ClusterClient | undefined;
  private readonly config: string | ClusterConfig | undefined;
  private readonly provider: ProviderName | undefined;
  private ownClient: ClusterClient | undefined;
  private opened: KvStore | undefined;

  constructor(location: string, options: DpmsLevelOptions<K, V> = {}) {
    const { client, config, provider, ...levelOptions } = options;
    super({
      encodings: { buffer: true, view: true, utf8: true },
      implicitSnapshots: true,
      explicitSnapshots: true,
      has: true,
      seek: true,
      permanence: true,
      createIfMissing: true,
      errorIfExists: true,
      // Flags from the abstract-leveldown manifest that IManifest no longer types; level-supports keeps
      // them, and plugins written for older Level still look for them before calling getMany/clear.
      ...({ getMany: true, clear: true } as object),
      additionalMethods: {},
    }, levelOptions);
    if (typeof location !== 'string' || location.length === 0 || Buffer.byteLength(location) > KV_LIMITS.maxNameBytes) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', `a DpmsLevel location is a store name of 1 to ${KV_LIMITS.maxNameBytes} bytes, got ${JSON.stringify(location)}`);
    }
    if ((client === undefined) === (config === undefined)) {
      throw new DpmsError('DPMS_INVALID_ARGUMENT', 'DpmsLevel needs exactly one of `client` (a connected ClusterClient) or `config` (a cluster.yaml path or ClusterConfig)');
    }
    this.location = location;
    this.sharedClient = client;
    this.config = config;
    this.provider = provider;
  }

  /** The open store; abstract-level calls the private methods only while the database is open. */
  private get store(): KvStore {
    if (this.opened === undefined) throw new DpmsError('DPMS_CLOSED', `DpmsLevel ${this.location} is not open`);
    return this.opened;
  }

  async _open(options: { createIfMissing: boolean; errorIfExists: boolean }): Promise<void> {
    let client = this.sharedClient;
    if (client === undefined) {
      const config = typeof this.config === 'string' ? loadClusterConfig(this.config) : (this.config as ClusterConfig);
      client = this.ownClient = await ClusterClient.connect({ config, provider: this.provider });
    }
    try {
      this.opened = await KvStore.open(client, this.location, { createIfMissing: options.createIfMissing, errorIfExists: options.errorIfExists });
    } catch (error) {
      await this.closeOwnClient();
      // abstract-level wraps this in LEVEL_DATABASE_NOT_OPEN; the messages say what Level users look for.
      if (isDpmsError(error, 'DPMS_NOT_FOUND')) {
        throw new DpmsError('DPMS_NOT_FOUND', `store ${this.location} does not exist (createIfMissing is false)`, { cause: error });
      }
      if (isDpmsError(error, 'DPMS_EXISTS')) {
        throw new DpmsError('DPMS_EXISTS', `store ${this.location} exists (errorIfExists is true)`, { cause: error });
      }
      throw error;
    }
  }

  async _close(): Promise<void> {
    const store = this.opened;
    this.opened = undefined;
    try {
      await store?.close();
    } finally {
      await this.closeOwnClient();
    }
  }

  private async closeOwnClient(): Promise<void> {
    const client = this.ownClient;
    this.ownClient = undefined;
    await client?.close();
  }

  async _get(key: Data, options: ReadOptions): Promise<Data | undefined> {
    const store = this.store;
    const value = await withLevelCodes(async () => store.get(storeKey(toBytes(key)), { snapshot: await snapshotOf(options) }));
    return value === undefined ? undefined : fromBytes(value, options.valueEncoding);
  }

  async _getMany(keys: Data[], options: ReadOptions): Promise<Array<Data | undefined>> {
    const store = this.store;
    const values = await withLevelCodes(async () => store.getMany(keys.map((key) => storeKey(toBytes(key))), { snapshot: await snapshotOf(options) }));
    return values.map((value) => (value === undefined ? undefined : fromBytes(value, options.valueEncoding)));
  }

  async _has(key: Data, options: ReadOptions): Promise<boolean> {
    const store = this.store;
    return withLevelCodes(async () => store.has(storeKey(toBytes(key)), { snapshot: await snapshotOf(options) }));
  }

  async _hasMany(keys: Data[], options: ReadOptions): Promise<boolean[]> {
    const store = this.store;
    // getMany reads every key at one version, as Level's implicit snapshot asks; KvStore has no hasMany,
    // so values stored out of line are fetched and dropped.
    const values = await withLevelCodes(async () => store.getMany(keys.map((key) => storeKey(toBytes(key))), { snapshot: await snapshotOf(options) }));
    return values.map((value) => value !== undefined);
  }

  async _put(key: Data, value: Data): Promise<void> {
    const store = this.store;
    await withLevelCodes(() => store.put(storeKey(toBytes(key)), toBytes(value)));
  }

  async _del(key: Data): Promise<void> {
    const store = this.store;
    await withLevelCodes(() => store.del(storeKey(toBytes(key))));
  }

  async _batch(operations: BatchOperation[]): Promise<void> {
    const store = this.store;
    const converted = operations.map((operation): KvOperation => (operation.type === 'put'
      ? { type: 'put', key: storeKey(toBytes(operation.key)), value: toBytes(operation.value as Data) }
      : { type: 'del', key: storeKey(toBytes(operation.key)) }));
    await withLevelCodes(() => store.batch(converted));
  }

  async _clear(options: RangeOptions): Promise<void> {
    const store = this.store;
    if (options.snapshot === undefined) {
      await withLevelCodes(() => store.clear(storeRange(options)));
      return;
    }
    // Clearing "from a snapshot" deletes the keys the snapshot has in the range; KvStore.clear works
    // on the latest version only, so read the keys there and delete them in bounded batches (Level
    // does not require _clear to be atomic).
    const handle = await options.snapshot.storeHandle();
    const iterator = store.iterator({ ...storeRange(options), values: false, snapshot: handle });
    try {
      for (;;) {
        const entries = await withLevelCodes(() => iterator.nextv(MAX_ENTRIES_PER_READ));
        if (entries.length === 0) break;
        await withLevelCodes(() => store.batch(entries.map(([key]): KvOperation => ({ type: 'del', key }))));
      }
    } finally {
      await iterator.close();
    }
  }

  _iterator(options: IteratorOptions): DpmsIterator<K, V> {
    return new DpmsIterator(this, options, this.store);
  }

  _keys(options: IteratorOptions): DpmsKeyIterator<K, V> {
    return new DpmsKeyIterator(this, options, this.store);
  }

  _values(options: IteratorOptions): DpmsValueIterator<K, V> {
    return new DpmsValueIterator(this, options, this.store);
  }

  _snapshot(options: SnapshotOptions): DpmsSnapshot {
    return new DpmsSnapshot(options, this.store);
  }
}
