// The public face of pDSM: everything fs/, kvs/ and scripts/ may use. Internals stay private.

export {
  formatAddress, isNull, makeAddress, nodeOf, NULL_ADDRESS, offsetOf, parseAddress, readAddress, toAddress,
  writeAddress, type GlobalAddress,
} from './address';
export { DpmsError, isDpmsError, type DpmsErrorCode } from './errors';
export { DEFAULTS as FORMAT_DEFAULTS, FORMAT_VERSION, readU64, ROOT_BYTES, writeU64, type Layout } from './layout';
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
export { formatBytes, parseSize } from './units';
// Distributed pDSM: the transport, cluster configuration, node daemon and cluster client.
export { connect, serve, type Connection, type ProviderName, type Server } from './transport';
export { loadClusterConfig, parseClusterConfig, nodeConfig, type ClusterConfig, type NodeConfig } from './cluster/config';
export { NodeDaemon, type DaemonOptions } from './cluster/daemon';
export { ClusterClient, type ClientCounters, type ClusterClientOptions } from './cluster/client';
export { ClusterTransaction } from './cluster/dtx';
export type { ClientInfo, ClientSummary, NodeStatus } from './cluster/protocol';
export { createLogger, silentLogger, LOG_LEVELS, type Logger, type LogLevel } from './logger';
export {
  collectedCounter, collectedGauge, createMetricsRegistry, infoGauge, LATENCY_BUCKETS_S, MAX_LABEL_VALUES, metricsUrl, OperationMetrics,
  PROMETHEUS_CONTENT_TYPE, Registry, registerClientMetrics, serveMetrics, type MetricsServer, type MetricsServerOptions, type ObserveOptions,
} from './metrics';
