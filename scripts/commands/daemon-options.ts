// What every daemon command (dpms node start, mount --foreground, kv serve) takes and does the same
// way: --metrics-port/--metrics-host (a Prometheus /metrics endpoint, none when the port is absent)
// and --log-level (structured JSON log lines on stdout, pdsm/logger.ts).

import type { Argv } from 'yargs';
import { createLogger, createMetricsRegistry, DpmsError, LOG_LEVELS, serveMetrics, type Logger, type LogLevel, type MetricsServer, type Registry } from '../../pdsm';

export interface DaemonArguments {
  readonly metricsPort?: number;
  readonly metricsHost: string;
  readonly logLevel?: string;
}

export const daemonOptions = <T>(y: Argv<T>) => y
  .option('metrics-port', { type: 'number', describe: 'serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port; absent: no metrics)' })
  .option('metrics-host', { type: 'string', default: '127.0.0.1', describe: 'address the metrics endpoint listens on' })
  .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'log level of the JSON log lines on stdout (default: $DPMS_LOG_LEVEL, else info)' });

/** The daemon's logger at the level asked for. */
export function daemonLogger(argv: DaemonArguments, component: string, fields: Record<string, unknown>): Logger {
  return createLogger({ component, fields, level: argv.logLevel as LogLevel | undefined });
}

export interface DaemonMetrics {
  readonly registry: Registry;
  readonly server: MetricsServer;
}

/** Start the metrics endpoint when --metrics-port was given (before the daemon, so that it can tell its URL). */
export async function startDaemonMetrics(argv: DaemonArguments): Promise<DaemonMetrics | undefined> {
  if (argv.metricsPort === undefined) return undefined;
  if (!Number.isInteger(argv.metricsPort) || argv.metricsPort < 0 || argv.metricsPort > 65535) {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `--metrics-port must be 0..65535, got ${argv.metricsPort}`);
  }
  const registry = createMetricsRegistry();
  const server = await serveMetrics({ host: argv.metricsHost, port: argv.metricsPort, registry });
  return { registry, server };
}

/** What a ready line says after the port: ", metrics URL" when there is an endpoint. */
export function metricsSuffix(metrics: DaemonMetrics | undefined): string {
  return metrics ? `, metrics ${metrics.server.url}` : '';
}
