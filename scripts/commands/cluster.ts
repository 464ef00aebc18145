// `dpms node start` (serve one node of a cluster until SIGINT/SIGTERM) and `dpms cluster status`
// (connect to every node of a cluster config and show reachability, capacity and usage).

import type { Argv } from 'yargs';
import { ClusterClient, formatBytes, loadClusterConfig, NodeDaemon, type ProviderName } from '../../pdsm';
import { clusterDemo } from './cluster-demo';
import { EXIT, run, untilSignal } from './run';

export function registerClusterCommands(yargs: Argv): Argv {
  return yargs
    .command('node', 'run a cluster node (dpms node start --config FILE --id N)', (nodeYargs) => nodeYargs.command('start', 'serve one node of a cluster: its pool over the configured transport, and its RPCs', (y) => y
      .option('config', { type: 'string', demandOption: true, describe: 'cluster config (YAML)' })
      .option('id', { type: 'number', demandOption: true, describe: 'this node\'s id in the config' })
      .option('port', { type: 'number', describe: 'listen on this port instead of the configured one' }),
    (argv) => run(async () => {
      const config = loadClusterConfig(argv.config);
      const daemon = await NodeDaemon.start({
        config, nodeId: argv.id, portOverride: argv.port,
        log: (line) => console.log(`${new Date().toISOString()} ${line}`),
      });
      console.log(`dpms node ${argv.id} ready on port ${daemon.port} (pid ${process.pid})`);
      await untilSignal();
      await daemon.stop();
      console.log(`dpms node ${argv.id} stopped`);
      return EXIT.ok;
    })).demandCommand(1, 'name a node command (start)'))
    .command('cluster', 'inspect a cluster (dpms cluster status --config FILE), or run the cluster demo', (clusterYargs) => clusterYargs.command('status', 'show every node of a cluster: reachability, capacity and usage', (y) => y
      .option('config', { type: 'string', demandOption: true, describe: 'cluster config (YAML)' })
      .option('provider', { type: 'string', choices: ['local', 'tcp', 'verbs'], describe: 'reach every node with this provider' })
      .option('json', { type: 'boolean', default: false }),
    (argv) => run(async () => {
      const config = loadClusterConfig(argv.config);
      let client: ClusterClient | undefined;
      let rows: Awaited<ReturnType<ClusterClient['status']>>;
      try {
        client = await ClusterClient.connect({ config, provider: argv.provider as ProviderName | undefined, lanesPerNode: 0, connectTimeoutMs: 2000 });
        rows = await client.status();
      } catch (error) {
        rows = config.nodes.map((node) => ({ node, error: (error as Error).message }));
      } finally {
        await client?.close();
      }
      if (argv.json) {
        console.log(JSON.stringify(rows.map(({ node, status, error }) => ({ id: node.id, host: node.host, port: node.port, transport: node.transport, reachable: !!status, status, error })), null, 2));
      } else {
        console.log(`cluster ${config.name}: ${rows.filter((row) => row.status).length}/${rows.length} nodes reachable`);
        for (const { node, status, error } of rows) {
          const where = `node ${node.id} ${node.host}:${node.port} (${node.transport})`;
          if (!status) {
            console.log(`  ${where}: UNREACHABLE ${error ?? ''}`);
            continue;
          }
          const used = status.chunksUsed * status.chunkBytes;
          console.log(`  ${where}: up ${Math.round(status.uptimeMs / 1000)} s, heap ${formatBytes(used)} / ${formatBytes(status.heapBytes)} used ` +
            `(${status.chunksUsed}/${status.chunkCount} chunks, ${status.objects} objects), ${status.sessions} client(s), ` +
            `${status.lanesFree} lanes free, ${status.inDoubt} in doubt, auth failures ${status.transportStats.authFailures ?? 0}, bad frames ${status.transportStats.badFrames ?? 0}`);
        }
      }
      return rows.every((row) => row.status) ? EXIT.ok : EXIT.problems;
    }))
      .command('demo', 'start a 3-node cluster on loopback and show distributed transactions, an abort and a node crash', (y) => y
        .option('transport', { type: 'string', choices: ['tcp', 'local'], default: 'tcp' }),
      (argv) => run(() => clusterDemo(argv.transport as 'tcp' | 'local')))
      .demandCommand(1, 'name a cluster command (status, demo)'));
}
