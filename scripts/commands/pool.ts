// `dpms format` and `dpms inspect`: the single-pool commands (`dpms check POOL` is in check.ts).

import type { Argv } from 'yargs';
import { FORMAT_DEFAULTS, formatPoolFile, inspectPoolFile } from '../../pdsm';
import { formatBytes, parseSize } from '../../pdsm';
import { startProgress, type Progress } from './progress';
import { EXIT, run } from './run';

const MIB = 1024 * 1024;

export function registerPoolCommands(yargs: Argv): Argv {
  return yargs
    .command('format <pool>', 'create and format a pool file (refuses to overwrite without --force)', (y) => y
      .positional('pool', { type: 'string', demandOption: true, describe: 'pool file (use tmpfs, e.g. /dev/shm, to emulate PM)' })
      .option('size', { type: 'string', demandOption: true, describe: 'pool size, e.g. 256M', coerce: (v: string) => parseSize(v, '--size') })
      .option('node', { type: 'number', default: 0, describe: 'node id of this pool (0-4095)' })
      .option('chunk-size', { type: 'string', default: String(FORMAT_DEFAULTS.chunkBytes), describe: 'level-1 chunk size, a power of two', coerce: (v: string) => parseSize(v, '--chunk-size') })
      .option('lanes', { type: 'number', default: FORMAT_DEFAULTS.laneCount, describe: 'redo-log lanes (concurrent commits)' })
      .option('lane-size', { type: 'string', default: String(FORMAT_DEFAULTS.laneBytes), describe: 'bytes of log per lane (bounds one transaction)', coerce: (v: string) => parseSize(v, '--lane-size') })
      .option('force', { type: 'boolean', default: false, describe: 'overwrite an existing file' }),
    (argv) => run(() => {
      // The bar follows the allocation of the file, which is what takes the time (laying out the
      // metadata afterwards takes milliseconds). Bar on a terminal, plain lines otherwise, on stderr.
      // Started at the first report, so that a refusal (the file exists) prints no bar.
      let progress: Progress | undefined;
      let info: ReturnType<typeof formatPoolFile>;
      try {
        info = formatPoolFile(argv.pool, {
          sizeBytes: argv.size,
          nodeId: argv.node,
          chunkBytes: argv['chunk-size'],
          laneCount: argv.lanes,
          laneBytes: argv['lane-size'],
          force: argv.force,
          onProgress: (doneBytes, totalBytes) => {
            progress ??= startProgress({ label: `formatting ${argv.pool}`, total: Math.ceil(totalBytes / MIB), unit: 'MiB' });
            progress.update(Math.floor(doneBytes / MIB));
          },
        });
      } finally {
        progress?.stop();
      }
      const layout = info.layout;
      console.log(`formatted ${argv.pool}: node ${info.nodeId}, uuid ${info.uuid}`);
      console.log(`  size ${formatBytes(layout.poolBytes)}, heap ${layout.chunkCount} chunks x ${formatBytes(layout.chunkBytes)}, log ${layout.laneCount} lanes x ${formatBytes(layout.laneBytes)}`);
      console.log(`  persistence: ${info.flushMode === 'cpu' ? 'CPU cache flush' : 'msync'} (is_pmem=${info.isPmem ? 1 : 0})`);
      return EXIT.ok;
    }))
    .command('inspect <pool>', 'show the superblock, log lanes and usage of a pool (read-only)', (y) => y
      .positional('pool', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    (argv) => run(() => {
      const report = inspectPoolFile(argv.pool);
      if (argv.json) {
        // Decision words are u64 (BigInt): printed as decimal strings.
        console.log(JSON.stringify(report, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value), 2));
        return EXIT.ok;
      }
      const { info, usage } = report;
      const layout = info.layout;
      console.log(`pool ${argv.pool}`);
      console.log(`  format      version ${info.version}, layout ${info.layoutName}, uuid ${info.uuid}`);
      console.log(`  node        ${info.nodeId}`);
      console.log(`  created     ${new Date(info.createdMs).toISOString()}`);
      console.log(`  size        ${formatBytes(layout.poolBytes)} (file ${formatBytes(report.fileBytes)})`);
      console.log(`  regions     log @${layout.logOffset} (${layout.laneCount} x ${layout.laneBytes} B), chunk bitmap @${layout.bitmapOffset}, chunk metadata @${layout.chunkMetaOffset} (${layout.chunkMetaBytes} B each), heap @${layout.heapOffset}`);
      console.log(`  heap        ${usage.chunksUsed}/${layout.chunkCount} chunks of ${formatBytes(layout.chunkBytes)} used, ${usage.objects} objects, ${formatBytes(usage.objectBytes)}`);
      const counts = { empty: 0, void: 0, committed: 0, torn: 0 };
      for (const lane of report.lanes) counts[lane.state]++;
      console.log(`  log lanes   ${counts.empty} unused, ${counts.void} applied, ${counts.committed} committed awaiting replay, ${counts.torn} torn (discarded at open)`);
      return EXIT.ok;
    }));
}
