// The public face of pDSM: everything fs/, kvs/ and scripts/ may use. Internals stay private.

export {
  formatAddress, isNull, makeAddress, nodeOf, NULL_ADDRESS, offsetOf, parseAddress, readAddress, toAddress,
  writeAddress, type GlobalAddress,
} from './address';
export { DpmsError, isDpmsError, type DpmsErrorCode } from './errors';
export { DEFAULTS as FORMAT_DEFAULTS, FORMAT_VERSION, ROOT_BYTES, type Layout } from './layout';
// The redo-log lane format, for tools and tests that read or craft pool images.
export { COMMIT, COMMIT_CHECKED_FROM, COMMIT_MAGIC, generationSeed, LANE, RECORD, RECORD_HEADER_BYTES, RecordOp } from './layout';
export { inspectLane, type LaneState, type RecoveryReport } from './log';
export { PoolNode, type FormatOptions, type OpenOptions } from './node';
export { Pdsm, type NodeSource, type PdsmOptions, type TransactionOptions } from './pdsm';
export { createPoolFile, createSimPm, InstrumentedPm, openPoolFile, type PersistPoint, type PmOps, type SimMapping } from './pmem';
export { decodeSuperblock, type PoolInfo } from './superblock';
export { Transaction, type TxState } from './tx';
export { verifyPool, type LiveObject, type VerifyReport } from './verify';
export { formatPoolFile, checkPoolFile, inspectPoolFile } from './tools';
