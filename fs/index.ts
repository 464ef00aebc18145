// The public face of pDFS: the file system core, its FUSE mount, its verifier and its errno table.

export { errnoName, errnoOf, FsError, fsError, type ErrnoName } from './errno';
export { FS_LIMITS, addressOfIno, type Inode, type DirEntry } from './format';
export { FileSystem, nowNs, ROOT_CALLER, RENAME_EXCHANGE, RENAME_NOREPLACE, type Caller, type StatfsInfo } from './fs';
export { ATTR_TIMEOUT_S, ENTRY_TIMEOUT_S, fuseOperations, mountFileSystem, type Mounted, type MountOptions } from './mount';
export { verifyFileSystem, type FsVerifyReport, type FsVerifyResult, type LinkCountProblem } from './verify';
export { DEAD_CONFIRM_MS, mountLiveness, orphanName, parseOrphanName, type Liveness, type OrphanName } from './orphans';
