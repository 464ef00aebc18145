// `dpms node start` (serve one node of a cluster until SIGINT/SIGTERM) and `dpms cluster status`
// (the report of `dpms status`, status.ts, for a cluster config or a dpms up state directory).

import type { Argv } from 'yargs';
import { loadClusterConfig, NodeDaemon, type ProviderName } from '../../pdsm';
import { clusterDemo } from './cluster-demo';
import { daemonLogger, daemonOptions, metricsSuffix, startDaemonMetrics } from './daemon-options';
import { EXIT, run, untilSignal } from './run';
import { statusCommand, statusOptions } from './status';

export function registerClusterCommands(yargs: Argv): Argv {
  return yargs
    .command('node', 'run a cluster node (dpms node start --config FILE --id N)', (nodeYargs) => nodeYargs.command('start', 'serve one node of a cluster: its pool over the configured transport, and its RPCs', (y) => daemonOptions(y
      .option('config', { type: 'string', demandOption: true, describe: 'cluster config (YAML)' })
      .option('id', { type: 'number', demandOption: true, describe: 'this node\'s id in the config' })
      .option('port', { type: 'number', describe: 'listen on this port instead of the configured one' })),
    (argv) => run(async () => {
      const config = loadClusterConfig(argv.config);
      const logger = daemonLogger(argv, 'node', { node: argv.id, cluster: config.name });
      const metrics = await startDaemonMetrics(argv);
      let daemon: NodeDaemon;
      try {
        daemon = await NodeDaemon.start({
          config, nodeId: argv.id, portOverride: argv.port, logger, metrics: metrics?.registry, metricsUrl: metrics?.server.url,
        });
      } catch (error) {
        logger.error({ err: error }, `node ${argv.id} cannot start: ${(error as Error).message}`);
        await metrics?.server.close();
        throw error;
      }
      // A plain line, whatever the log level: supervisors and tests wait for "ready on port N".
      console.log(`dpms node ${argv.id} ready on port ${daemon.port} (pid ${process.pid})${metricsSuffix(metrics)}`);
      await untilSignal();
      await daemon.stop();
      await metrics?.server.close();
      console.log(`dpms node ${argv.id} stopped`);
      return EXIT.ok;
    })).demandCommand(1, 'name a node command (start)'))
    .command('cluster', 'inspect a cluster (dpms cluster status --config FILE), or run the cluster demo', (clusterYargs) => clusterYargs.command('status',
      'show every node of a cluster (the same report as dpms status): reachability, capacity and usage, clients, mounts, gateways',
      (y) => statusOptions(y),
      (argv) => run(() => statusCommand({ dir: argv.dir, config: argv.config, provider: argv.provider as ProviderName | undefined, json: argv.json }))
    )
      .command('demo', 'start a 3-node cluster on loopback and show distributed transactions, an abort and a node crash', (y) => y
        .option('transport', { type: 'string', choices: ['tcp', 'local'], default: 'tcp' }),
      (argv) => run(() => clusterDemo(argv.transport as 'tcp' | 'local')))
      .demandCommand(1, 'name a cluster command (status, demo)'));
}
