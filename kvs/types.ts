// The public types of pDKVS (the key-value store on pDSM): what the Level adapter, the RESP gateway,
// the CLI and the benchmark program against. Keys and values are byte strings; keys are ordered
// bytewise (as Buffer.compare orders them).

/** Limits every input is checked against (DPMS_KEY_TOO_LARGE / DPMS_VALUE_TOO_LARGE / DPMS_INVALID_ARGUMENT). */
export const KV_LIMITS = {
  /** Largest key, in bytes. Empty keys are refused. */
  maxKeyBytes: 2048,
  /** Largest value, in bytes (empty values are allowed). */
  maxValueBytes: 8 * 1024 * 1024,
  /** Most operations in one atomic batch. */
  maxBatchOperations: 10_000,
  /** Most bytes (keys plus values) in one atomic batch. */
  maxBatchBytes: 64 * 1024 * 1024,
  /** Longest store name, in bytes of UTF-8. */
  maxNameBytes: 200,
} as const;

export type KvOperation =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array };

/** A key range, as abstract-level spells it: bounds are optional and combine. */
export interface KvRange {
  readonly gt?: Uint8Array;
  readonly gte?: Uint8Array;
  readonly lt?: Uint8Array;
  readonly lte?: Uint8Array;
  readonly reverse?: boolean;
  /** At most this many entries (-1 or undefined: no limit). */
  readonly limit?: number;
}

/** A consistent, read-only view of the store as of one committed version. */
export interface KvSnapshotHandle {
  /** The store version this snapshot sees. */
  readonly version: number;
  /** Let the store reclaim what only this snapshot still used. Idempotent. */
  release(): Promise<void>;
}

export interface KvReadOptions {
  /** Read as of this snapshot instead of the latest committed version. */
  readonly snapshot?: KvSnapshotHandle;
}

export interface KvIteratorOptions extends KvRange, KvReadOptions {
  /** Fetch values (default true); a keys-only iterator never reads value objects. */
  readonly values?: boolean;
}

export interface KvOpenOptions {
  /** Create the store when it does not exist (default true). */
  readonly createIfMissing?: boolean;
  /** Fail with DPMS_EXISTS when the store exists (default false). */
  readonly errorIfExists?: boolean;
}

/** An entry an iterator yields: the value is undefined for keys-only iterators. */
export type KvEntry = [key: Buffer, value: Buffer | undefined];

/**
 * An atomic read-modify-write: given the current value (undefined when absent), return the new value,
 * `undefined` to delete the key, or KEEP to leave it as it is. It runs inside the commit, so no other
 * writer can come between the read and the write; it may throw (a DpmsError) to fail only this update.
 */
export const KEEP: unique symbol = Symbol('keep');
export type KvUpdate = (current: Buffer | undefined) => Uint8Array | undefined | typeof KEEP;
