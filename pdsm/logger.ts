// Structured, leveled logs for the daemons (node, mount, gateway, dpms up): one JSON object a line
// (pino), with the time, level, pid, the component and its fields (node id, mount point, ...), so a
// log can be read by people and by tools (jq, Loki, ...). The level comes from --log-level or
// DPMS_LOG_LEVEL (default info). Writes are synchronous: a daemon killed right after logging an
// error still leaves the line.

import pino from 'pino';

export type Logger = pino.Logger;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = typeof LOG_LEVELS[number];

export interface LoggerOptions {
  /** node, mount, gateway, up, ... */
  readonly component: string;
  /** Fields on every line (node: 1, mountpoint: '/mnt', ...). */
  readonly fields?: Record<string, unknown>;
  readonly level?: LogLevel;
  /** File descriptor to write to (default 1, stdout). */
  readonly fd?: number;
}

export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? (LOG_LEVELS.includes(process.env.DPMS_LOG_LEVEL as LogLevel) ? process.env.DPMS_LOG_LEVEL as LogLevel : 'info');
  return pino({
    level,
    base: { pid: process.pid, component: options.component, ...options.fields },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, pino.destination({ fd: options.fd ?? 1, sync: true }));
}

/** A logger that drops everything (library code given no logger). */
export const silentLogger: Logger = pino({ level: 'silent' });
