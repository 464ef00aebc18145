// The one table that turns any error inside pDFS into the errno a FUSE caller sees.
//
// File system rules fail with FsError (a DpmsError with code DPMS_FS and a POSIX errno name); errors
// from pDSM and the transport keep their DPMS_* codes and are mapped here. Anything else (a bug) is
// EIO: the caller gets an error, the mount stays up.

import os from 'node:os';
import { DpmsError, isDpmsError, type DpmsErrorCode } from '../pdsm';

export type ErrnoName =
  | 'EPERM' | 'ENOENT' | 'EIO' | 'EBADF' | 'ENFILE' | 'EAGAIN' | 'EACCES' | 'EBUSY' | 'EEXIST' | 'EXDEV' | 'ENOTDIR'
  | 'EISDIR' | 'EINVAL' | 'EFBIG' | 'ENOSPC' | 'EMLINK' | 'ERANGE' | 'ENAMETOOLONG' | 'ENOSYS' | 'ENOTEMPTY'
  | 'ELOOP' | 'ENODATA' | 'ENOTSUP' | 'ESTALE' | 'E2BIG' | 'ETIMEDOUT' | 'EOVERFLOW' | 'ENOTCONN';

export class FsError extends DpmsError {
  constructor(readonly errno: ErrnoName, message: string, readonly detail?: DpmsErrorCode) {
    super('DPMS_FS', `${errno}: ${message}`);
    this.name = 'FsError';
  }
}

/** A POSIX failure; `detail` names the dpms condition behind it when there is one (a checksum, ...). */
export function fsError(errno: ErrnoName, detailOrMessage: DpmsErrorCode | string, message?: string): FsError {
  return message === undefined ? new FsError(errno, detailOrMessage) : new FsError(errno, message, detailOrMessage as DpmsErrorCode);
}

/** pDSM and transport conditions, as the errno a program can act on. */
const DPMS_ERRNO: Partial<Record<DpmsErrorCode, ErrnoName>> = {
  DPMS_NO_SPACE: 'ENOSPC',
  DPMS_TX_TOO_LARGE: 'EFBIG',
  DPMS_TX_CONFLICT: 'EAGAIN', // still conflicting after every retry
  DPMS_TIMEOUT: 'ETIMEDOUT',
  DPMS_BUSY: 'EBUSY',
  DPMS_INVALID_ARGUMENT: 'EINVAL',
  DPMS_KEY_TOO_LARGE: 'ENAMETOOLONG',
  DPMS_VALUE_TOO_LARGE: 'E2BIG',
  DPMS_DISCONNECTED: 'EIO',
  DPMS_UNREACHABLE: 'EIO',
  DPMS_IN_DOUBT: 'EIO',
  DPMS_CLOSED: 'ENOTCONN',
};

export function errnoName(error: unknown): ErrnoName {
  if (error instanceof FsError) return error.errno;
  if (isDpmsError(error)) return DPMS_ERRNO[error.code] ?? 'EIO';
  return 'EIO';
}

/** The positive errno number for any thrown value. */
export function errnoOf(error: unknown): number {
  const name = errnoName(error);
  const errno = (os.constants.errno as Record<string, number | undefined>)[name === 'ENOTSUP' ? 'EOPNOTSUPP' : name];
  return errno ?? os.constants.errno.EIO;
}
