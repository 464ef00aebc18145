// Typed operating errors of dpms. Every error that an outside input can cause (a pool file, an
// address, a frame, a CLI argument) is a DpmsError with a stable `code`; programmer errors are
// assertions and crash. Native errors (plain Errors with a DPMS_* code) are converted in one place,
// fromNative(), so the rest of the code only ever sees DpmsError.

export type DpmsErrorCode =
  | 'DPMS_BAD_MAGIC'
  | 'DPMS_UNSUPPORTED_VERSION'
  | 'DPMS_CHECKSUM'
  | 'DPMS_TRUNCATED'
  | 'DPMS_WRONG_NODE'
  | 'DPMS_CORRUPTION'
  | 'DPMS_EXISTS'
  | 'DPMS_NOT_FOUND'
  | 'DPMS_IO'
  | 'DPMS_CLOSED'
  | 'DPMS_OUT_OF_BOUNDS'
  | 'DPMS_MISALIGNED'
  | 'DPMS_INVALID_ARGUMENT'
  | 'DPMS_INVALID_ADDRESS'
  | 'DPMS_NO_SPACE'
  | 'DPMS_TX_TOO_LARGE'
  | 'DPMS_TX_CONFLICT'
  | 'DPMS_TX_STATE'
  | 'DPMS_TIMEOUT'
  | 'DPMS_UNSUPPORTED'
  | 'DPMS_AUTH' | 'DPMS_REMOTE_ACCESS' | 'DPMS_DISCONNECTED' | 'DPMS_PROTOCOL' | 'DPMS_UNREACHABLE' | 'DPMS_BUSY'
  // distributed pDSM (pdsm/cluster)
  | 'DPMS_IN_DOUBT' | 'DPMS_TX_ABORTED' | 'DPMS_TX_UNKNOWN' | 'DPMS_CONFIG' | 'DPMS_RPC'
  // key-value store (kvs/)
  | 'DPMS_KEY_TOO_LARGE' | 'DPMS_VALUE_TOO_LARGE'
  // file system (fs/): a POSIX error, its errno name in FsError.errno
  | 'DPMS_FS';

export class DpmsError extends Error {
  readonly code: DpmsErrorCode;

  constructor(code: DpmsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DpmsError';
    this.code = code;
  }
}

export function isDpmsError(error: unknown, code?: DpmsErrorCode): error is DpmsError {
  return error instanceof DpmsError && (code === undefined || error.code === code);
}

const nativeCodes = new Set<string>([
  'DPMS_EXISTS', 'DPMS_NOT_FOUND', 'DPMS_IO', 'DPMS_CLOSED', 'DPMS_OUT_OF_BOUNDS',
  'DPMS_MISALIGNED', 'DPMS_INVALID_ARGUMENT',
  'DPMS_AUTH', 'DPMS_REMOTE_ACCESS', 'DPMS_DISCONNECTED', 'DPMS_PROTOCOL', 'DPMS_UNREACHABLE', 'DPMS_BUSY', 'DPMS_TIMEOUT', 'DPMS_UNSUPPORTED',
]);

/** Wrap an error thrown by the native addon; anything without a known code is rethrown as is. */
export function fromNative(error: unknown, context: string): DpmsError {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && nativeCodes.has(code)) {
    return new DpmsError(code as DpmsErrorCode, `${context}: ${(error as Error).message}`, { cause: error });
  }
  throw error;
}

/** Run a native call and convert what it throws into a typed DpmsError. */
export function callNative<T>(call: () => T, context: string): T {
  try {
    return call();
  } catch (error) {
    throw fromNative(error, context);
  }
}

/** Assert an invariant; a failure is a bug in dpms, never an operating error. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`dpms assertion failed: ${message}`);
}
