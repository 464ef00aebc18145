// The public face of pDKVS: the key-value store on pDSM (docs/ARCHITECTURE.md, "pDKVS").

export { KvIterator, KvStore } from './store';
export { KEEP, KV_LIMITS, type KvEntry, type KvIteratorOptions, type KvOpenOptions, type KvOperation, type KvRange, type KvReadOptions, type KvSnapshotHandle, type KvUpdate } from './types';
export { DpmsLevel, DpmsLevelError, DpmsSnapshot, type DpmsLevelOptions, type LevelErrorCode } from './level';
