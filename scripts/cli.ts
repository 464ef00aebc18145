#!/usr/bin/env node
// The dpms command line: runs the whole system on one machine (dpms up, down, status), formats,
// inspects, checks and benchmarks pools, runs cluster nodes and shows their status, serves and edits
// the key-value store (dpms kv), mounts the file system (dpms mount, umount), and runs the demo.
// Bad arguments print usage and exit with status 2; typed errors print their code and exit 3.

import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { registerBenchCommands } from './commands/bench';
import { registerCheckCommand } from './commands/check';
import { registerClusterCommands } from './commands/cluster';
import { registerDemoCommand } from './commands/demo';
import { registerDoctorCommand } from './commands/doctor';
import { registerKvCommands } from './commands/kv';
import { registerMetricsCommand } from './commands/metrics';
import { registerMountCommands } from './commands/mount';
import { registerPoolCommands } from './commands/pool';
import { registerStatusCommand } from './commands/status';
import { registerUpCommands } from './commands/up';
import { EXIT } from './commands/run';
import { isDpmsError } from '../pdsm';

async function main(): Promise<void> {
  let parser = yargs(hideBin(process.argv))
    .scriptName('dpms')
    .usage('$0 <command> [options]\n\ndpms: a distributed persistent-memory storage system (pDSM, pDFS, pDKVS).');
  parser = registerUpCommands(parser);
  parser = registerStatusCommand(parser);
  parser = registerPoolCommands(parser);
  parser = registerCheckCommand(parser);
  parser = registerDemoCommand(parser);
  parser = registerBenchCommands(parser);
  parser = registerClusterCommands(parser);
  parser = registerKvCommands(parser);
  parser = registerMountCommands(parser);
  parser = registerDoctorCommand(parser);
  parser = registerMetricsCommand(parser);
  await parser
    .demandCommand(1, 'name a command')
    .strict()
    .recommendCommands()
    .fail((message, error, instance) => {
      // Bad arguments, including values rejected while parsing (sizes), get usage text and status 2.
      if (error && !isDpmsError(error, 'DPMS_INVALID_ARGUMENT') && error.name !== 'YError') throw error;
      instance.showHelp('error');
      console.error(`\ndpms: ${error ? error.message : message}`);
      process.exit(EXIT.usage);
    })
    .help()
    .version()
    .parseAsync();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(70);
});
