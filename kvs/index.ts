// The public face of pDKVS: the key-value store on pDSM (docs/ARCHITECTURE.md, "pDKVS").

export { KvIterator, KvStore } from './store';
export { KEEP, KV_LIMITS, type KvEntry, type KvIteratorOptions, type KvOpenOptions, type KvOperation, type KvRange, type KvReadOptions, type KvSnapshotHandle, type KvUpdate } from './types';
export { DpmsLevel, DpmsLevelError, DpmsSnapshot, type DpmsLevelOptions, type LevelErrorCode } from './level';
// The RESP (Redis protocol) gateway, and the key-pattern helpers it and the CLI share.
export { RespGateway, type RespGatewayListenOptions, type RespGatewayOptions } from './gateway';
export { RESP_LIMITS, type RespLimits } from './resp';
export { globMatch, prefixUpperBound } from './glob';
// The verifier `dpms check` runs over every store.
export { verifyKvStores, type KvVerifyOptions, type KvVerifyReport, type KvVerifyResult } from './verify';
