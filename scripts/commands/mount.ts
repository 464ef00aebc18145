// `dpms mount` and `dpms umount`: the file system of a cluster on a directory, through FUSE.
//
// `dpms mount --config C DIR` starts the mount process in the background (its log goes to --log) and
// returns once the mount is ready, like mount(8); `--foreground` serves in this process instead (for
// tests, and for process supervisors). The mount process unmounts cleanly on SIGINT and SIGTERM and
// exits when someone unmounts the directory (`dpms umount DIR`, fusermount3 -u).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { mountFileSystem } from '../../fs';
import { ClusterClient, DpmsError, infoGauge, loadClusterConfig, registerClientMetrics, type ProviderName } from '../../pdsm';
import { daemonLogger, daemonOptions, metricsSuffix, startDaemonMetrics, type DaemonArguments } from './daemon-options';
import { EXIT, run, untilSignal } from './run';

interface MountArguments extends DaemonArguments {
  readonly dir: string;
  readonly config: string;
  readonly provider?: string;
  readonly foreground: boolean;
  readonly log?: string;
  readonly option: string[];
  readonly allowOther: boolean;
}

const READY_FD = 3;

function checkMountpoint(dir: string): string {
  const resolved = path.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(resolved);
  } catch {
    throw new DpmsError('DPMS_INVALID_ARGUMENT', `mount point ${resolved} does not exist`);
  }
  if (!stat.isDirectory()) throw new DpmsError('DPMS_INVALID_ARGUMENT', `mount point ${resolved} is not a directory`);
  return resolved;
}

/** Is `dir` a mount point of a dpms file system (per /proc/self/mounts)? */
export function isDpmsMount(dir: string): boolean {
  const target = path.resolve(dir);
  const escaped = (text: string): string => text.replace(/\\040/g, ' ').replace(/\\011/g, '\t').replace(/\\012/g, '\n').replace(/\\134/g, '\\');
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((line) => {
    const [source, mountpoint, type] = line.split(' ');
    return mountpoint !== undefined && escaped(mountpoint) === target && (type === 'fuse.dpms' || source === 'dpms');
  });
}

async function serveForeground(argv: MountArguments, mountpoint: string): Promise<number> {
  const logger = daemonLogger(argv, 'mount', { mountpoint });
  const config = loadClusterConfig(argv.config);
  const metrics = await startDaemonMetrics(argv);
  let client: ClusterClient | undefined;
  let mounted;
  try {
    client = await ClusterClient.connect({
      config, provider: argv.provider as ProviderName | undefined, connectTimeoutMs: 5000,
      info: { role: 'mount', label: mountpoint, metrics: metrics?.server.url },
    });
    if (metrics) {
      const connected = client;
      infoGauge(metrics.registry, 'dpms_mount_info', 'This mount: its mount point and cluster (always 1).', { mountpoint, cluster: config.name });
      registerClientMetrics(metrics.registry, 'mount', () => connected.counters);
    }
    mounted = await mountFileSystem(client, mountpoint, { fuseOptions: argv.option, allowOther: argv.allowOther, metrics: metrics?.registry });
  } catch (error) {
    logger.error({ err: error }, `cannot mount ${mountpoint}: ${(error as Error).message}`);
    await client?.close();
    await metrics?.server.close();
    throw error;
  }
  logger.info({ cluster: config.name, metrics: metrics?.server.url }, `mounted ${mountpoint}`);
  const ready = `dpms: mounted ${mountpoint} (pid ${process.pid})${metricsSuffix(metrics)}`;
  console.log(ready);
  // The parent of a background mount waits on fd 3 for this line.
  try {
    fs.writeSync(READY_FD, `${ready}\n`);
    fs.closeSync(READY_FD);
  } catch {
    // not started by `dpms mount` in the background
  }
  const why = await Promise.race([untilSignal().then(() => 'signal'), mounted.session.closed.then(() => 'unmounted')]);
  await mounted.close();
  await client.close();
  await metrics?.server.close();
  logger.info({ why }, `unmounted ${mountpoint}`);
  console.log(`dpms: ${mountpoint} unmounted (${why})`);
  return EXIT.ok;
}

async function startBackground(argv: MountArguments, mountpoint: string): Promise<number> {
  const log = path.resolve(argv.log ?? path.join(os.tmpdir(), `dpms-mount-${mountpoint.replace(/[^A-Za-z0-9]+/g, '_')}.log`));
  const logFd = fs.openSync(log, 'a');
  const args = [process.argv[1], 'mount', mountpoint, '--config', path.resolve(argv.config), '--foreground',
    ...(argv.provider ? ['--provider', argv.provider] : []), ...argv.option.flatMap((option) => ['-o', option]),
    ...(argv.allowOther ? [] : ['--no-allow-other']),
    ...(argv.metricsPort !== undefined ? ['--metrics-port', String(argv.metricsPort), '--metrics-host', argv.metricsHost] : []),
    ...(argv.logLevel ? ['--log-level', argv.logLevel] : [])];
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'] });
  fs.closeSync(logFd);
  const readyPipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
  const outcome = await new Promise<string | undefined>((resolve) => {
    let text = '';
    readyPipe.on('data', (chunk: Buffer) => { text += chunk.toString(); });
    readyPipe.on('end', () => resolve(text.trim() || undefined));
    child.on('exit', () => resolve(text.trim() || undefined));
  });
  if (!outcome) {
    const tail = fs.readFileSync(log, 'utf8').trim().split('\n').slice(-5).join('\n');
    console.error(`dpms: the mount process ended before the mount was ready; its log (${log}):\n${tail}`);
    return EXIT.failed;
  }
  child.unref();
  console.log(`${outcome}; log: ${log}`);
  return EXIT.ok;
}

export function registerMountCommands(parser: Argv): Argv {
  return parser
    .command('mount <dir>', 'mount the file system of a cluster (made on first mount) on DIR',
      (y) => daemonOptions(y)
        .positional('dir', { type: 'string', demandOption: true, describe: 'an existing directory' })
        .option('config', { type: 'string', demandOption: true, describe: 'cluster config (YAML)' })
        .option('provider', { type: 'string', choices: ['local', 'tcp', 'verbs'], describe: 'reach the nodes with this transport instead of the configured one' })
        .option('foreground', { alias: 'f', type: 'boolean', default: false, describe: 'serve in this process until unmounted, SIGINT or SIGTERM' })
        .option('log', { type: 'string', describe: 'log file of a background mount (default: in the temp directory)' })
        .option('option', { alias: 'o', type: 'string', array: true, default: [] as string[], describe: 'extra FUSE mount option (repeatable)' })
        .option('allow-other', { type: 'boolean', default: true, describe: 'let every user of the machine use the mount (permissions are still checked)' })
        .example('$0 mount --config cluster.yaml /mnt/dpms', ''),
      (argv) => run(async () => {
        const mountpoint = checkMountpoint(argv.dir);
        if (isDpmsMount(mountpoint)) throw new DpmsError('DPMS_BUSY', `${mountpoint} is already a dpms mount`);
        const args = argv as unknown as MountArguments;
        return argv.foreground ? serveForeground(args, mountpoint) : startBackground(args, mountpoint);
      }))
    .command('umount <dir>', 'unmount a dpms file system (the mount process exits)',
      (y) => y
        .positional('dir', { type: 'string', demandOption: true })
        .option('lazy', { alias: 'l', type: 'boolean', default: false, describe: 'detach now even when busy (also clears a mount whose process died)' }),
      (argv) => run(() => {
        const mountpoint = path.resolve(argv.dir);
        if (!isDpmsMount(mountpoint)) throw new DpmsError('DPMS_INVALID_ARGUMENT', `${mountpoint} is not a dpms mount`);
        const result = spawnSync('fusermount3', [argv.lazy ? '-uz' : '-u', mountpoint], { encoding: 'utf8' });
        if (result.error) throw new DpmsError('DPMS_UNSUPPORTED', `cannot run fusermount3 (install Debian's fuse3): ${result.error.message}`);
        if (result.status !== 0) throw new DpmsError('DPMS_BUSY', `cannot unmount ${mountpoint}: ${result.stderr.trim()} (use --lazy to detach it anyway)`);
        console.log(`dpms: unmounted ${mountpoint}`);
        return EXIT.ok;
      }));
}
